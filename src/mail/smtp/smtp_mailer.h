#pragma once

#include <memory>
#include <string>

#include "mail/mailer.h"

namespace certfleet::mail::smtp {

struct SmtpOptions {
  std::string url;  // smtp://[user:pass@]host:port or smtps://…, without a query
  bool require_tls = false;
  std::string ca_file;  // empty: the system's CAs
};

// Sends over SMTP with libcurl (STARTTLS when offered or required, AUTH from the URL).
std::unique_ptr<Mailer> OpenSmtpMailer(SmtpOptions options, const Clock& clock);

}  // namespace certfleet::mail::smtp
