#include "mail/mailer.h"

#include <fmt/format.h>

#include "mail/eml/eml_mailer.h"
#include "mail/smtp/smtp_mailer.h"

namespace certfleet::mail {

Result<std::unique_ptr<Mailer>> OpenMailer(std::string_view url, const Clock& clock) {
  if (url.starts_with("file://")) {
    std::string path(url.substr(7));
    if (path.empty()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{}: file:// needs a path", url));
    return eml::OpenEmlMailer(std::move(path), clock);
  }
  if (url.starts_with("smtp://") || url.starts_with("smtps://")) {
    smtp::SmtpOptions options;
    const size_t q = url.find('?');
    options.url = std::string(url.substr(0, q));
    std::string_view query = q == std::string_view::npos ? std::string_view() : url.substr(q + 1);
    while (!query.empty()) {
      const size_t amp = query.find('&');
      const std::string_view pair = query.substr(0, amp);
      if (pair == "tls=required") {
        options.require_tls = true;
      } else if (pair.starts_with("ca=")) {
        options.ca_file = std::string(pair.substr(3));
      } else if (pair != "tls=try") {
        return MakeError(ErrorCode::kInvalidArgument, fmt::format("mail URL: unknown option {:?}", pair));
      }
      if (amp == std::string_view::npos) break;
      query.remove_prefix(amp + 1);
    }
    return smtp::OpenSmtpMailer(std::move(options), clock);
  }
  return MakeError(ErrorCode::kInvalidArgument, "mail must be file:///path or smtp(s)://[user:pass@]host:port");
}

}  // namespace certfleet::mail
