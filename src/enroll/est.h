#pragma once

#include <string>
#include <string_view>

#include "core/result.h"
#include "enroll/profiles.h"

// The wire formats of EST (RFC 7030): base64 bodies, certs-only PKCS#7, CSR attributes and
// serverkeygen's multipart answer. No HTTP here: the routes use these.
namespace certfleet::enroll::est {

// Largest EST request body: a base64 CSR (pki::kMaxCsrBytes of DER) with line breaks.
inline constexpr size_t kMaxBodyBytes = size_t{32} * 1024;

inline constexpr std::string_view kPkcs7Type = "application/pkcs7-mime";
inline constexpr std::string_view kCertsOnlyType = "application/pkcs7-mime; smime-type=certs-only";
inline constexpr std::string_view kCsrAttrsType = "application/csrattrs";

// The DER a request body carries: base64 (line breaks and spaces ignored, as RFC 7030 sends
// it), or PEM or DER as some clients send; kInvalidArgument if it is none of them.
Result<std::string> BodyDer(std::string_view body);
// DER as an EST body: base64 in lines of 64 characters, each ended by `eol`.
std::string Base64Body(std::string_view der, std::string_view eol = "\n");
// The certificates of a PEM bundle as a certs-only PKCS#7, DER.
Result<std::string> CertsOnly(std::string_view pem);
// The CSR attributes a profile asks for (RFC 7030 4.5.2, DER): the challengePassword that
// carries the TLS channel binding, and its key type and signature algorithm.
std::string CsrAttributes(const Profile& profile);
// serverkeygen's answer (RFC 7030 4.4.2): the private key (PKCS#8, in the clear: TLS protects
// it) and the certificate, as a multipart/mixed body; `content_type` gets its media type.
Result<std::string> ServerKeygenBody(std::string_view private_key_pem, std::string_view chain_pem,
                                     std::string& content_type);

}  // namespace certfleet::enroll::est
