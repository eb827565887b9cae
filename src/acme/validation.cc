#include "acme/validation.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>

#include "acme/jws.h"
#include "acme/problem.h"
#include "core/crypto.h"
#include "core/text.h"

namespace certfleet::acme {
namespace {

// An http-01 answer is the key authorization, about 90 bytes: more than this is not one.
constexpr size_t kMaxHttp01Body = 1024;
constexpr std::string_view kAcmeTlsAlpn =
    "\x0a"
    "acme-tls/1";                                                      // length-prefixed, as ALPN lists are
constexpr std::string_view kAcmeIdentifierOid = "1.3.6.1.5.5.7.1.31";  // id-pe-acmeIdentifier, RFC 8737 3
constexpr size_t kSha256Bytes = 32;

Error Unreachable(std::string detail) { return Problem(ErrorCode::kUnavailable, "connection", std::move(detail)); }
Error Incorrect(std::string detail) {
  return Problem(ErrorCode::kFailedPrecondition, "incorrectResponse", std::move(detail));
}

bool IsIpv6(std::string_view address) { return address.find(':') != std::string_view::npos; }

// "host:port" for a URL or curl's resolve list, with an IPv6 address in brackets.
std::string HostPort(std::string_view host, int port) {
  return IsIpv6(host) ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

// Where a redirect of an http-01 fetch leads: its scheme, host (as an identifier) and port;
// nullopt if `location` is no URL.
struct Redirect {
  std::string scheme;
  Identifier host;
  int port = 0;
};
std::optional<Redirect> ParseRedirect(const std::string& location) {
  std::unique_ptr<CURLU, void (*)(CURLU*)> url(curl_url(), curl_url_cleanup);
  if (!url || curl_url_set(url.get(), CURLUPART_URL, location.c_str(), 0) != CURLUE_OK) return std::nullopt;
  auto part = [&](CURLUPart which, unsigned int flags) -> std::optional<std::string> {
    char* text = nullptr;
    if (curl_url_get(url.get(), which, &text, flags) != CURLUE_OK || !text) return std::nullopt;
    std::string out(text);
    curl_free(text);
    return out;
  };
  const auto scheme = part(CURLUPART_SCHEME, 0);
  auto name = part(CURLUPART_HOST, 0);
  const auto port = part(CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (!scheme || !name || !port) return std::nullopt;
  if (name->size() > 2 && name->front() == '[') *name = name->substr(1, name->size() - 2);  // an IPv6 address
  std::optional<std::string> address = CanonicalAddress(*name);
  Identifier host = address ? Identifier{"ip", *address} : Identifier{"dns", AsciiLower(*name)};
  return Redirect{*scheme, std::move(host), std::atoi(port->c_str())};
}

// A TCP connection to `address`:`port` within `timeout`, its reads and writes bounded by it too.
Result<int> Connect(const std::string& address, int port, std::chrono::seconds timeout) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (IsIpv6(address)) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, address.c_str(), &a->sin6_addr) != 1) return Unreachable("not an address: " + address);
    len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, address.c_str(), &a->sin_addr) != 1) return Unreachable("not an address: " + address);
    len = sizeof(sockaddr_in);
  }
  const int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Unreachable("no socket");
  auto fail = [&](std::string why) {
    close(fd);
    return Unreachable(fmt::format("cannot connect to {}: {}", HostPort(address, port), why));
  };
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (errno != EINPROGRESS) return fail(std::strerror(errno));
    pollfd p{fd, POLLOUT, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::chrono::milliseconds(timeout).count()));
    if (ready == 0) return fail("timed out");
    int err = 0;
    socklen_t err_len = sizeof(err);
    if (ready < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) != 0) return fail(std::strerror(errno));
    if (err != 0) return fail(std::strerror(err));
  }
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) return fail(std::strerror(errno));
  timeval tv{static_cast<time_t>(timeout.count()), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

// Closes a socket when it goes.
struct Socket {
  explicit Socket(int f) : fd(f) {}
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  ~Socket() { close(fd); }
  int fd;
};

size_t CollectBody(char* data, size_t size, size_t n, void* out) {
  auto* body = static_cast<std::string*>(out);
  if (body->size() + size * n > kMaxHttp01Body) return 0;  // curl then fails with CURLE_WRITE_ERROR
  body->append(data, size * n);
  return size * n;
}

// The value of an acmeIdentifier extension, the DER of an OCTET STRING of the SHA-256 digest.
std::string AcmeIdentifierValue(std::string_view key_authorization) {
  std::string out = {'\x04', static_cast<char>(kSha256Bytes)};
  out += Sha256(key_authorization);
  return out;
}

}  // namespace

Result<Validator> Validator::Make(Options options) {
  CF_ASSIGN_OR_RETURN(Resolver resolver, Resolver::Make(options.resolver));
  return Validator(std::move(options), resolver);
}

std::vector<std::string_view> ChallengeTypesFor(const Identifier& identifier, bool wildcard) {
  if (wildcard) return {"dns-01"};
  if (identifier.type == "ip") return {"http-01", "tls-alpn-01"};
  return {"http-01", "dns-01", "tls-alpn-01"};
}

std::optional<std::string> CanonicalAddress(std::string_view text) {
  const std::string s(text);
  unsigned char raw[16] = {};
  char out[INET6_ADDRSTRLEN] = {};
  for (const int family : {AF_INET, AF_INET6}) {
    if (inet_pton(family, s.c_str(), raw) == 1 && inet_ntop(family, raw, out, sizeof(out)) != nullptr) return out;
  }
  return std::nullopt;
}

std::string ReverseName(std::string_view address) {
  std::string text(address);
  unsigned char raw[16] = {};
  std::string out;
  if (inet_pton(AF_INET, text.c_str(), raw) == 1) {
    for (int i = 3; i >= 0; --i) out += fmt::format("{}.", raw[i]);
    return out + "in-addr.arpa";
  }
  if (inet_pton(AF_INET6, text.c_str(), raw) == 1) {
    constexpr std::string_view kHex = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
      out += kHex[raw[i] & 0xf];
      out += '.';
      out += kHex[raw[i] >> 4];
      out += '.';
    }
    return out + "ip6.arpa";
  }
  return text;
}

Result<void> Validator::Validate(std::string_view type, const Identifier& identifier, std::string_view token,
                                 std::string_view key_authorization, const MayReach& may_reach) const {
  if (type == "http-01") return Http01(identifier, token, key_authorization, may_reach);
  if (type == "dns-01") return Dns01(identifier, key_authorization);
  if (type == "tls-alpn-01") return TlsAlpn01(identifier, key_authorization);
  return Problem(ErrorCode::kInvalidArgument, "malformed", fmt::format("no challenge type {}", Escaped(type)));
}

Result<std::string> Validator::AddressOf(const Identifier& identifier) const {
  std::string address = identifier.value;
  if (identifier.type != "ip") {
    CF_ASSIGN_OR_RETURN(std::vector<std::string> addresses, resolver_.Addresses(identifier.value));
    address = addresses.front();
  }
  // Link-local addresses are the hosts' own (a cloud's metadata service is 169.254.169.254),
  // never a name's server; an unspecified one is this host. An IPv6 address that carries an
  // IPv4 one (IPv4-mapped ::ffff:0:0/96, which the kernel connects to over IPv4, or NAT64's
  // 64:ff9b::/96) is judged by the IPv4 address it carries.
  unsigned char raw[16] = {};
  bool link_local = false, unspecified = false;
  auto judge_ipv4 = [&](const unsigned char* v4) {
    link_local = v4[0] == 169 && v4[1] == 254;
    unspecified = (v4[0] | v4[1] | v4[2] | v4[3]) == 0;
  };
  if (inet_pton(AF_INET, address.c_str(), raw) == 1) {
    judge_ipv4(raw);
  } else if (inet_pton(AF_INET6, address.c_str(), raw) == 1) {
    static constexpr unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static constexpr unsigned char kNat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (std::memcmp(raw, kMapped, 12) == 0 || std::memcmp(raw, kNat64, 12) == 0) {
      judge_ipv4(raw + 12);
    } else {
      static constexpr unsigned char kZero[16] = {};
      link_local = raw[0] == 0xfe && (raw[1] & 0xc0) == 0x80;
      unspecified = std::memcmp(raw, kZero, 16) == 0;
    }
  }
  if (link_local || unspecified) {
    return Problem(ErrorCode::kFailedPrecondition, "rejectedIdentifier",
                   fmt::format("{} is at {}, which validation does not connect to (link-local or unspecified)",
                               Escaped(identifier.value), address));
  }
  return address;
}

Result<Validator::Fetched> Validator::Fetch(const std::string& url, const Identifier& host, int port) const {
  CF_ASSIGN_OR_RETURN(std::string address, AddressOf(host));
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return Unreachable("no HTTP client");
  // The name is connected to at the address found here, through the configured resolver.
  const std::string pin = fmt::format("{}:{}", HostPort(host.value, port), address);
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> resolve(
      host.type == "dns" ? curl_slist_append(nullptr, pin.c_str()) : nullptr, curl_slist_free_all);
  Fetched out;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  if (resolve) curl_easy_setopt(c, CURLOPT_RESOLVE, resolve.get());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);  // each redirect is checked first
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
  curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");  // validation reaches the identifier itself
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(std::chrono::milliseconds(options_.timeout).count()));
  curl_easy_setopt(c, CURLOPT_USERAGENT, "certfleet-acme-validation");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, CollectBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &out.body);
  const CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_WRITE_ERROR) return Incorrect(fmt::format("{} answered more than {} bytes", url, kMaxHttp01Body));
  if (rc != CURLE_OK) return Unreachable(fmt::format("fetching {}: {}", url, curl_easy_strerror(rc)));
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out.status);
  char* location = nullptr;
  if (curl_easy_getinfo(c, CURLINFO_REDIRECT_URL, &location) == CURLE_OK && location) out.location = location;
  return out;
}

Result<void> Validator::Http01(const Identifier& identifier, std::string_view token, std::string_view key_authorization,
                               const MayReach& may_reach) const {
  constexpr int kMaxRedirects = 10;
  std::string url =
      fmt::format("http://{}/.well-known/acme-challenge/{}", HostPort(identifier.value, options_.http01_port), token);
  Identifier host = identifier;
  int port = options_.http01_port;
  for (int redirects = 0;; ++redirects) {
    CF_ASSIGN_OR_RETURN(Fetched fetched, Fetch(url, host, port));
    const long status = fetched.status;
    const bool redirect = status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
    if (!redirect || fetched.location.empty()) {
      if (status != 200) {
        return Problem(ErrorCode::kFailedPrecondition, "unauthorized",
                       fmt::format("{} answered HTTP {}, not 200 with the key authorization", url, status));
      }
      // Whitespace at the end is ignored (RFC 8555 8.3).
      std::string& body = fetched.body;
      while (!body.empty() && std::isspace(static_cast<unsigned char>(body.back()))) body.pop_back();
      // What was answered is not quoted: the client reads this detail, and the fetch may have
      // been redirected to a server only certfleet reaches.
      if (body != key_authorization) {
        return Incorrect(fmt::format("{} answered {} bytes that are not the key authorization {}", url, body.size(),
                                     key_authorization));
      }
      return Ok();
    }
    auto refused = [&](std::string why) {
      return Problem(ErrorCode::kFailedPrecondition, "unauthorized",
                     fmt::format("{} redirects to {}: {}", url, Escaped(fetched.location.substr(0, 256)), why));
    };
    if (redirects == kMaxRedirects) return refused(fmt::format("more than {} redirects", kMaxRedirects));
    std::optional<Redirect> to = ParseRedirect(fetched.location);
    if (!to) return refused("not a URL");
    if (!((to->scheme == "http" && to->port == options_.http01_port) ||
          (to->scheme == "https" && to->port == options_.tlsalpn01_port))) {
      return refused(fmt::format("only http on port {} and https on port {} are followed", options_.http01_port,
                                 options_.tlsalpn01_port));
    }
    const bool same = to->host.type == identifier.type && to->host.value == identifier.value;
    if (!same && !(may_reach && may_reach(to->host))) return refused("a host this ACME profile does not issue for");
    url = fetched.location;
    host = std::move(to->host);
    port = to->port;
  }
}

Result<void> Validator::Dns01(const Identifier& identifier, std::string_view key_authorization) const {
  const std::string name = "_acme-challenge." + identifier.value;
  auto found = resolver_.Txt(name);
  if (!found.ok()) {
    // Absent records may not have reached the DNS yet: retried like an unreachable server.
    Error e = found.error();
    if (e.code == ErrorCode::kNotFound) e.code = ErrorCode::kUnavailable;
    return e;
  }
  const std::vector<std::string>& records = *found;
  const std::string expected = Base64UrlEncode(Sha256(key_authorization));
  for (const std::string& r : records) {
    if (r == expected) return Ok();
  }
  return Incorrect(
      fmt::format("no TXT record of {} is {} (found {})", name, expected, Escaped(records.front().substr(0, 128))));
}

Result<void> Validator::TlsAlpn01(const Identifier& identifier, std::string_view key_authorization) const {
  CF_ASSIGN_OR_RETURN(std::string address, AddressOf(identifier));
  CF_ASSIGN_OR_RETURN(int fd, Connect(address, options_.tlsalpn01_port, options_.timeout));
  const Socket socket{fd};  // outlives the SSL, which does not close it
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  std::unique_ptr<SSL, void (*)(SSL*)> ssl(ctx ? SSL_new(ctx.get()) : nullptr, SSL_free);
  if (!ssl || SSL_set_fd(ssl.get(), fd) != 1) return Unreachable("no TLS client");
  const std::string where = HostPort(address, options_.tlsalpn01_port);
  const std::string sni = identifier.type == "ip" ? ReverseName(identifier.value) : identifier.value;
  SSL_set_min_proto_version(ssl.get(), TLS1_2_VERSION);  // RFC 8737 4: TLS 1.2 or later
  SSL_set_tlsext_host_name(ssl.get(), sni.c_str());
  SSL_set_alpn_protos(ssl.get(), reinterpret_cast<const unsigned char*>(kAcmeTlsAlpn.data()),
                      static_cast<unsigned>(kAcmeTlsAlpn.size()));
  if (SSL_connect(ssl.get()) != 1) {
    return Problem(ErrorCode::kFailedPrecondition, "tls",
                   fmt::format("the TLS handshake with {} (acme-tls/1, SNI {}) failed", where, sni));
  }
  const unsigned char* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(ssl.get(), &alpn, &alpn_len);
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_len) != kAcmeTlsAlpn.substr(1)) {
    return Problem(ErrorCode::kFailedPrecondition, "tls",
                   fmt::format("{} did not choose the acme-tls/1 protocol", where));
  }
  std::unique_ptr<X509, void (*)(X509*)> cert(SSL_get1_peer_certificate(ssl.get()), X509_free);
  SSL_shutdown(ssl.get());
  if (!cert) return Incorrect(fmt::format("{} showed no certificate", where));
  // One subjectAltName, the identifier (RFC 8737 3).
  std::unique_ptr<GENERAL_NAMES, void (*)(GENERAL_NAMES*)> names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr)),
      GENERAL_NAMES_free);
  bool named = false;
  if (names && sk_GENERAL_NAME_num(names.get()) == 1) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), 0);
    if (identifier.type == "dns" && gn->type == GEN_DNS) {
      const std::string_view dns(reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                                 static_cast<size_t>(ASN1_STRING_length(gn->d.dNSName)));
      named = AsciiLower(dns) == AsciiLower(identifier.value);
    } else if (identifier.type == "ip" && gn->type == GEN_IPADD) {
      unsigned char raw[16] = {};
      const int family = IsIpv6(identifier.value) ? AF_INET6 : AF_INET;
      const int size = family == AF_INET6 ? 16 : 4;
      named = inet_pton(family, identifier.value.c_str(), raw) == 1 && ASN1_STRING_length(gn->d.iPAddress) == size &&
              std::memcmp(ASN1_STRING_get0_data(gn->d.iPAddress), raw, static_cast<size_t>(size)) == 0;
    }
  }
  if (!named) {
    return Incorrect(
        fmt::format("the certificate of {} does not name {} as its one subjectAltName", where, identifier.value));
  }
  std::unique_ptr<ASN1_OBJECT, void (*)(ASN1_OBJECT*)> oid(OBJ_txt2obj(kAcmeIdentifierOid.data(), 1), ASN1_OBJECT_free);
  const int index = oid ? X509_get_ext_by_OBJ(cert.get(), oid.get(), -1) : -1;
  const X509_EXTENSION* ext = index >= 0 ? X509_get_ext(cert.get(), index) : nullptr;
  if (ext == nullptr || X509_EXTENSION_get_critical(ext) != 1) {
    return Incorrect(fmt::format("the certificate of {} has no critical acmeIdentifier extension", where));
  }
  const ASN1_OCTET_STRING* data = X509_EXTENSION_get_data(const_cast<X509_EXTENSION*>(ext));
  const std::string_view value(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                               static_cast<size_t>(ASN1_STRING_length(data)));
  if (value != AcmeIdentifierValue(key_authorization)) {
    return Incorrect(
        fmt::format("the acmeIdentifier of {}'s certificate is not the key authorization's digest", where));
  }
  return Ok();
}

}  // namespace certfleet::acme
