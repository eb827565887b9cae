#include "distribution/sns.h"

#include <curl/curl.h>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <boost/json.hpp>

#include "core/crypto.h"
#include "core/log.h"
#include "core/text.h"
#include "pki/certificate.h"

namespace certfleet::distribution {
namespace {

namespace json = boost::json;

// The name AWS issues its SNS signing certificates to.
constexpr std::string_view kSigningName = "sns.amazonaws.com";
constexpr long kTimeoutSeconds = 10;
// A field of the envelope: a message is at most 256 KiB, the rest are short.
constexpr size_t kMaxField = size_t{256} * 1024;

Error Denied(const std::string& why) { return MakeError(ErrorCode::kPermissionDenied, "SNS message refused: " + why); }

size_t Collect(char* data, size_t size, size_t n, void* out) {
  auto* body = static_cast<std::string*>(out);
  if (body->size() + size * n > SnsVerifier::kMaxCertificateBytes) return 0;  // too large: the transfer fails
  body->append(data, size * n);
  return size * n;
}

// The caIssuers URL of `cert`'s Authority Information Access, if it has one.
std::optional<std::string> CaIssuersUrl(X509* cert) {
  std::optional<std::string> out;
  auto* aia = static_cast<AUTHORITY_INFO_ACCESS*>(X509_get_ext_d2i(cert, NID_info_access, nullptr, nullptr));
  for (int i = 0; aia != nullptr && i < sk_ACCESS_DESCRIPTION_num(aia) && !out; ++i) {
    const ACCESS_DESCRIPTION* ad = sk_ACCESS_DESCRIPTION_value(aia, i);
    if (OBJ_obj2nid(ad->method) == NID_ad_ca_issuers && ad->location->type == GEN_URI) {
      const ASN1_IA5STRING* uri = ad->location->d.uniformResourceIdentifier;
      out.emplace(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                  static_cast<size_t>(ASN1_STRING_length(uri)));
    }
  }
  AUTHORITY_INFO_ACCESS_free(aia);
  return out;
}

using X509Stack = std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)>;
void FreeStack(STACK_OF(X509) * s) { sk_X509_pop_free(s, X509_free); }

}  // namespace

Result<SnsMessage> ParseSnsMessage(std::string_view body) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return MakeError(ErrorCode::kInvalidArgument, "an SNS message is a JSON object");
  const json::object& o = v.get_object();
  auto field = [&o](std::string_view name, bool required) -> Result<std::optional<std::string>> {
    const json::value* f = o.if_contains(name);
    if (f == nullptr || f->is_null()) {
      if (required) return MakeError(ErrorCode::kInvalidArgument, fmt::format("the SNS message has no {}", name));
      return std::optional<std::string>();
    }
    if (!f->is_string() || f->get_string().size() > kMaxField) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("the SNS message's {} is not a string", name));
    }
    return std::optional<std::string>(std::string(f->get_string()));
  };
  SnsMessage m;
  for (auto [name, target] : {std::pair{"Type", &m.type}, std::pair{"MessageId", &m.message_id},
                              std::pair{"TopicArn", &m.topic_arn}, std::pair{"Message", &m.message},
                              std::pair{"Timestamp", &m.timestamp}, std::pair{"SignatureVersion", &m.signature_version},
                              std::pair{"Signature", &m.signature}, std::pair{"SigningCertURL", &m.signing_cert_url}}) {
    CF_ASSIGN_OR_RETURN(auto value, field(name, true));
    *target = std::move(*value);
  }
  const bool confirmation = m.type == "SubscriptionConfirmation" || m.type == "UnsubscribeConfirmation";
  if (!confirmation && m.type != "Notification") {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("unknown SNS message Type '{}'", Escaped(m.type.substr(0, 64))));
  }
  CF_ASSIGN_OR_RETURN(m.subject, field("Subject", false));
  CF_ASSIGN_OR_RETURN(m.subscribe_url, field("SubscribeURL", confirmation));
  CF_ASSIGN_OR_RETURN(m.token, field("Token", confirmation));
  return m;
}

std::string SnsStringToSign(const SnsMessage& m) {
  std::string out;
  auto add = [&out](std::string_view name, const std::string& value) {
    out.append(name).append("\n").append(value).append("\n");
  };
  add("Message", m.message);
  add("MessageId", m.message_id);
  if (m.type == "Notification") {
    if (m.subject) add("Subject", *m.subject);
  } else {
    add("SubscribeURL", m.subscribe_url.value_or(""));
  }
  add("Timestamp", m.timestamp);
  if (m.type != "Notification") add("Token", m.token.value_or(""));
  add("TopicArn", m.topic_arn);
  add("Type", m.type);
  return out;
}

bool IsSnsUrl(std::string_view url) {
  constexpr std::string_view kScheme = "https://";
  if (!url.starts_with(kScheme)) return false;
  url.remove_prefix(kScheme.size());
  const std::string_view host = url.substr(0, url.find('/'));
  // sns.<region>.amazonaws.com or .com.cn: no port, no user, nothing else.
  std::string_view rest = host;
  for (std::string_view suffix : {".amazonaws.com", ".amazonaws.com.cn"}) {
    if (host.ends_with(suffix)) rest = host.substr(0, host.size() - suffix.size());
  }
  if (rest == host || !rest.starts_with("sns.")) return false;
  const std::string_view region = rest.substr(4);
  return !region.empty() && std::all_of(region.begin(), region.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

Result<SnsMessage> SnsVerifier::Verify(std::string_view body) {
  CF_ASSIGN_OR_RETURN(SnsMessage m, ParseSnsMessage(body));
  if (options_.topics.empty()) return Denied("no topic is accepted (set distribution.sns_topics)");
  if (std::find(options_.topics.begin(), options_.topics.end(), m.topic_arn) == options_.topics.end()) {
    return Denied(fmt::format("topic {} is not one of distribution.sns_topics", Escaped(m.topic_arn.substr(0, 256))));
  }
  const std::optional<int64_t> sent = ParseRfc3339(m.timestamp);
  if (!sent) return Denied("its Timestamp is not an RFC 3339 time");
  if (m.type == "Notification" && clock_.NowMillis() - *sent > Millis(options_.max_age)) {
    return Denied(fmt::format("it was sent at {}, more than {} s ago", m.timestamp, options_.max_age.count()));
  }
  if (!IsSnsUrl(m.signing_cert_url)) return Denied("SigningCertURL is not an https://sns.<region>.amazonaws.com URL");
  const EVP_MD* md = m.signature_version == "1" ? EVP_sha1() : m.signature_version == "2" ? EVP_sha256() : nullptr;
  if (md == nullptr) return Denied("SignatureVersion must be 1 or 2");
  const std::optional<std::string> signature = Base64Decode(m.signature);
  if (!signature) return Denied("its Signature is not base64");
  CF_ASSIGN_OR_RETURN(std::shared_ptr<X509> cert, SigningCertificate(m.signing_cert_url));
  const std::string signed_text = SnsStringToSign(m);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  const bool ok =
      ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, X509_get0_pubkey(cert.get())) == 1 &&
      EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature->data()), signature->size(),
                       reinterpret_cast<const unsigned char*>(signed_text.data()), signed_text.size()) == 1;
  ERR_clear_error();
  if (!ok) return Denied("its signature does not verify with the signing certificate");
  return m;
}

Result<void> SnsVerifier::Confirm(const SnsMessage& m) {
  if (!m.subscribe_url || !IsSnsUrl(*m.subscribe_url)) {
    return Denied("SubscribeURL is not an https://sns.<region>.amazonaws.com URL");
  }
  CF_RETURN_IF_ERROR(Get(*m.subscribe_url, /*https_only=*/true));
  log::Info("SNS subscription confirmed", {{"topic", m.topic_arn}});
  return Ok();
}

Result<std::shared_ptr<X509>> SnsVerifier::SigningCertificate(const std::string& url) {
  constexpr size_t kMaxKept = 64;  // SNS rotates its certificate yearly: a few URLs at most
  auto known = [&]() -> std::optional<Result<std::shared_ptr<X509>>> {
    std::lock_guard lock(mu_);
    if (auto it = certificates_.find(url); it != certificates_.end()) return it->second;
    if (auto it = failed_.find(url); it != failed_.end() && it->second.second > clock_.NowMillis()) {
      return it->second.first;
    }
    return std::nullopt;
  };
  if (auto answer = known()) return *answer;
  std::unique_lock fetching(fetching_, std::try_to_lock);
  if (!fetching.owns_lock()) {
    return MakeError(ErrorCode::kUnavailable, "another signing certificate is being fetched: deliver again");
  }
  if (auto answer = known()) return *answer;  // fetched while this one waited for the lock
  Result<std::shared_ptr<X509>> fetched = FetchSigningCertificate(url);
  std::lock_guard lock(mu_);
  if (fetched.ok()) {
    if (certificates_.size() >= kMaxKept) certificates_.clear();
    certificates_[url] = *fetched;
  } else {
    if (failed_.size() >= kMaxKept) failed_.clear();
    failed_[url] = {fetched.error(), clock_.NowMillis() + kFailureMillis};
  }
  return fetched;
}

Result<std::shared_ptr<X509>> SnsVerifier::FetchSigningCertificate(const std::string& url) {
  CF_ASSIGN_OR_RETURN(std::string pem, Get(url, /*https_only=*/true));
  auto certs = pki::CertificatesFromPem(pem);
  if (!certs.ok()) return Denied("the signing certificate is not a PEM certificate");
  std::shared_ptr<X509> leaf(certs->front().release(), X509_free);
  X509Stack untrusted(sk_X509_new_null(), FreeStack);
  for (size_t i = 1; i < certs->size(); ++i) sk_X509_push(untrusted.get(), (*certs)[i].release());

  std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)> store(X509_STORE_new(), &X509_STORE_free);
  const bool loaded =
      store && (options_.trust_file.empty() ? X509_STORE_set_default_paths(store.get()) == 1
                                            : X509_STORE_load_file(store.get(), options_.trust_file.c_str()) == 1);
  if (!loaded) return MakeError(ErrorCode::kFailedPrecondition, "cannot read distribution.sns_trust");
  auto verify = [&]() -> int {
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)> ctx(X509_STORE_CTX_new(), &X509_STORE_CTX_free);
    if (!ctx || X509_STORE_CTX_init(ctx.get(), store.get(), leaf.get(), untrusted.get()) != 1) return -1;
    if (X509_verify_cert(ctx.get()) == 1) return X509_V_OK;
    return X509_STORE_CTX_get_error(ctx.get());
  };
  int result = verify();
  // AWS serves the certificate alone: its issuer comes from its caIssuers URL, once.
  if (result == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY || result == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT) {
    if (auto issuer_url = CaIssuersUrl(leaf.get())) {
      CF_ASSIGN_OR_RETURN(std::string got, Get(*issuer_url, /*https_only=*/false));
      const auto* der = reinterpret_cast<const unsigned char*>(got.data());
      X509* issuer = d2i_X509(nullptr, &der, static_cast<long>(got.size()));
      if (issuer == nullptr) {
        auto from_pem = pki::CertificatesFromPem(got);
        if (from_pem.ok()) issuer = from_pem->front().release();
      }
      if (issuer != nullptr) sk_X509_push(untrusted.get(), issuer);
      result = verify();
    }
  }
  ERR_clear_error();
  if (result != X509_V_OK) {
    return Denied(fmt::format("the signing certificate does not chain to a trusted CA: {}",
                              result < 0 ? "cannot verify" : X509_verify_cert_error_string(result)));
  }
  if (X509_check_host(leaf.get(), kSigningName.data(), kSigningName.size(), 0, nullptr) != 1) {
    return Denied(fmt::format("the signing certificate is not issued to {}", kSigningName));
  }
  return leaf;
}

Result<std::string> SnsVerifier::Get(const std::string& url, bool https_only) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), &curl_easy_cleanup);
  if (!curl) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
  CURL* c = curl.get();
  std::string body;
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> connect_to(nullptr, &curl_slist_free_all);
  if (!options_.connect_to.empty()) connect_to.reset(curl_slist_append(nullptr, options_.connect_to.c_str()));
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, https_only ? "https" : "http,https");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, kTimeoutSeconds);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (connect_to) curl_easy_setopt(c, CURLOPT_CONNECT_TO, connect_to.get());
  if (!options_.trust_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, options_.trust_file.c_str());
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    return MakeError(ErrorCode::kUnavailable, fmt::format("GET {}: {}", url.substr(0, 300), curl_easy_strerror(rc)));
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    return MakeError(ErrorCode::kUnavailable, fmt::format("GET {}: HTTP {}", url.substr(0, 300), status));
  }
  return body;
}

}  // namespace certfleet::distribution
