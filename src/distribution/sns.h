#pragma once

#include <openssl/x509.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/result.h"

namespace certfleet::distribution {

// A message Amazon SNS delivers to an HTTP(S) subscriber: the JSON envelope of a
// subscription confirmation, a notification or an unsubscribe confirmation.
struct SnsMessage {
  std::string type;  // SubscriptionConfirmation, Notification, UnsubscribeConfirmation
  std::string message_id;
  std::string topic_arn;
  std::optional<std::string> subject;  // notifications may have one
  std::string message;
  std::string timestamp;
  std::string signature_version;  // "1": SHA1withRSA, "2": SHA256withRSA
  std::string signature;          // base64
  std::string signing_cert_url;
  std::optional<std::string> subscribe_url;  // confirmations
  std::optional<std::string> token;          // confirmations
};

// The envelope of `body`; kInvalidArgument naming what is missing or wrong.
Result<SnsMessage> ParseSnsMessage(std::string_view body);
// The text SNS signs for `m`: its fields, by type, as "Name\nvalue\n" in name order.
std::string SnsStringToSign(const SnsMessage& m);
// Whether `url` is https://sns.<region>.amazonaws.com[.cn]/...: where SNS's signing
// certificates and subscription URLs are, and nowhere else.
bool IsSnsUrl(std::string_view url);

// Checks SNS messages as AWS says a subscriber must: from a topic of ours, signed (versions 1
// and 2) by the key of a signing certificate fetched from an SNS host, which chains to a
// trusted CA and is issued to sns.amazonaws.com; not older than an hour. Certificates are
// kept by URL once verified. Thread-safe.
class SnsVerifier {
 public:
  struct Options {
    std::vector<std::string> topics;  // TopicArns accepted (distribution.sns_topics); none: SNS refused
    // CAs the signing certificate and the HTTPS downloads must chain to; empty: the system's
    // (distribution.sns_trust).
    std::string trust_file;
    // "host:port:connect-host:connect-port" for downloads from SNS hosts (a mirror, tests);
    // empty: straight there (distribution.sns_connect_to).
    std::string connect_to;
    // A notification older than this is refused: SNS delivers within minutes and retries
    // for an hour at most by default, and an old message replayed changes nothing new.
    std::chrono::seconds max_age{3600};
  };

  SnsVerifier(const Clock& clock, Options options) : clock_(clock), options_(std::move(options)) {}

  // The message of `body` if it passes every check: kPermissionDenied saying which failed,
  // kUnavailable if the signing certificate cannot be fetched now. Anyone may send a message
  // naming any SNS URL, so one certificate is fetched at a time (kUnavailable meanwhile:
  // SNS delivers again) and a URL that failed is not fetched again for kFailureMillis.
  Result<SnsMessage> Verify(std::string_view body);
  // Confirms a verified SubscriptionConfirmation: GET its SubscribeURL.
  Result<void> Confirm(const SnsMessage& m);

  static constexpr size_t kMaxCertificateBytes = size_t{64} * 1024;
  static constexpr int64_t kFailureMillis = 10'000;  // below SNS's 20 s between deliveries

 private:
  Result<std::shared_ptr<X509>> SigningCertificate(const std::string& url);
  Result<std::shared_ptr<X509>> FetchSigningCertificate(const std::string& url);
  Result<std::string> Get(const std::string& url, bool https_only);

  const Clock& clock_;
  const Options options_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<X509>> certificates_;  // verified, by URL
  std::map<std::string, std::pair<Error, int64_t>> failed_;    // by URL: why, and until when
  std::mutex fetching_;                                        // held by the one fetch
};

}  // namespace certfleet::distribution
