#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace certfleet::enroll::cmp {

// PKIBody choices (RFC 4210 5.1.2) certfleet answers or looks at.
enum Body : int {
  kIr = 0,
  kIp = 1,
  kCr = 2,
  kCp = 3,
  kP10cr = 4,
  kKur = 7,
  kKup = 8,
  kRr = 11,
  kPkiConf = 19,
  kGenm = 21,
  kError = 23,
  kCertConf = 24,
  kPollReq = 25,
  kPollRep = 26,
};

// A certificate request's template (RFC 4211 CertTemplate), as DER parts.
struct Template {
  std::string encoding;    // the whole template: what tells two requests apart
  std::string subject;     // a Name; empty when absent
  std::string public_key;  // a SubjectPublicKeyInfo; empty when absent
  std::string extensions;  // a SEQUENCE OF Extension; empty when absent
};

// What certfleet reads from a PKIMessage before OpenSSL's CMP server processes it (OpenSSL
// 3.0 has no getters for these): who sent it and how it is protected, and what it asks.
struct Request {
  int body = -1;
  std::string transaction_id;             // raw bytes; empty when absent
  std::optional<int64_t> message_time;    // ms since the epoch; absent when the header has none
  std::optional<std::string> sender_kid;  // raw bytes
  bool mac_protected = false;             // PasswordBasedMac or PBMAC1
  int64_t pbm_iterations = 0;             // PasswordBasedMac: its iterationCount
  bool implicit_confirm = false;          // generalInfo asks for implicitConfirm (no certConf follows)
  std::vector<std::string> extra_certs;   // DER, the protection certificate first (RFC 9483 3.3)
  std::optional<Template> cert_template;  // ir, cr, kur: the first request's
  std::optional<std::string> p10cr;       // p10cr: the PKCS#10 DER
  int revocation_reason = 0;              // rr: the first request's reasonCode (unspecified when absent)
  std::string cert_hash;                  // certConf: the first CertStatus's certHash
  bool cert_accepted = true;              // certConf: its status, accepted when absent
  size_t cert_statuses = 0;               // certConf: how many CertStatus it holds (none rejects all)
  // Why the message is refused though it reads: an ID longer than kMaxIdBytes (then left
  // empty), a PasswordBasedMac of more than kMaxPbmIterations; answered with a CMP error message.
  std::optional<std::string> refusal;
};

// Most PasswordBasedMac iterations verified: the sender chooses them, and OpenSSL runs up to
// 100,000 before it compares the MAC. Clients use 500 (OpenSSL) to 1,024 (EJBCA); a message
// asking more is refused unverified.
inline constexpr int64_t kMaxPbmIterations = 10000;

// Longest transactionID and senderKID taken: RFC 9483 3.1 asks 128 random bits and a key
// identifier; a longer one is refused rather than stored.
inline constexpr size_t kMaxIdBytes = 64;

// Reads a DER PKIMessage; kInvalidArgument naming what is malformed.
Result<Request> ReadRequest(std::string_view der);

}  // namespace certfleet::enroll::cmp
