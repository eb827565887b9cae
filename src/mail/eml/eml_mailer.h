#pragma once

#include <memory>
#include <string>

#include "mail/mailer.h"

namespace certfleet::mail::eml {

// Writes each message as an .eml file into `dir` (the embedded default's outbox), named
// <epoch milliseconds>-<random>.eml; the file appears whole (written aside, then renamed).
std::unique_ptr<Mailer> OpenEmlMailer(std::string dir, const Clock& clock);

}  // namespace certfleet::mail::eml
