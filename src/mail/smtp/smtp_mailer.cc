#include "mail/smtp/smtp_mailer.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace certfleet::mail::smtp {
namespace {

constexpr long kConnectTimeoutSeconds = 15;
// A whole message must be accepted within this time (10 MB over a slow link).
constexpr long kTransferTimeoutSeconds = 300;

using CurlPtr = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using SlistPtr = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

struct Upload {
  std::string_view rest;
};

size_t Feed(char* buffer, size_t size, size_t n, void* userdata) {
  auto* up = static_cast<Upload*>(userdata);
  const size_t len = std::min(size * n, up->rest.size());
  std::memcpy(buffer, up->rest.data(), len);
  up->rest.remove_prefix(len);
  return len;
}

class SmtpMailer final : public Mailer {
 public:
  SmtpMailer(SmtpOptions options, const Clock& clock) : options_(std::move(options)), clock_(clock) {}

  Result<Sent> Send(const Message& message) override {
    Sent sent{NewMessageId(Domain(message.from)), 0};
    CF_ASSIGN_OR_RETURN(std::string text, Render(message, sent.message_id, clock_.NowMillis()));
    sent.bytes = text.size();
    CurlPtr curl(curl_easy_init(), &curl_easy_cleanup);
    if (!curl) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
    curl_slist* rcpt = nullptr;
    for (const auto& to : message.to) rcpt = curl_slist_append(rcpt, ("<" + to + ">").c_str());
    SlistPtr rcpt_list(rcpt, &curl_slist_free_all);
    const std::string from = "<" + message.from + ">";
    Upload upload{text};
    char error[CURL_ERROR_SIZE] = {};
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, options_.url.c_str());
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from.c_str());
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, rcpt_list.get());
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(text.size()));
    curl_easy_setopt(c, CURLOPT_READFUNCTION, Feed);
    curl_easy_setopt(c, CURLOPT_READDATA, &upload);
    curl_easy_setopt(c, CURLOPT_USE_SSL, options_.require_tls ? CURLUSESSL_ALL : CURLUSESSL_TRY);
    if (!options_.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, kTransferTimeoutSeconds);
    const CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
      long code = 0;
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
      // 5xx replies are permanent refusals; everything else may pass on a retry.
      const ErrorCode ec = code >= 500 && code < 600 ? ErrorCode::kFailedPrecondition : ErrorCode::kUnavailable;
      return MakeError(ec, fmt::format("SMTP: {}{}", error[0] ? error : curl_easy_strerror(rc),
                                       code ? fmt::format(" (reply {})", code) : ""));
    }
    return sent;
  }

 private:
  static std::string Domain(const std::string& address) {
    const size_t at = address.find('@');
    return at == std::string::npos ? "certfleet.local" : address.substr(at + 1);
  }

  const SmtpOptions options_;
  const Clock& clock_;
};

}  // namespace

std::unique_ptr<Mailer> OpenSmtpMailer(SmtpOptions options, const Clock& clock) {
  return std::make_unique<SmtpMailer>(std::move(options), clock);
}

}  // namespace certfleet::mail::smtp
