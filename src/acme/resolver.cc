#include "acme/resolver.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <fmt/format.h>
#include <netdb.h>
#include <resolv.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <memory>

#include "acme/problem.h"
#include "core/text.h"

namespace certfleet::acme {
namespace {

// A DNS answer over UDP is at most 512 bytes without EDNS and glibc retries over TCP when it is
// truncated; TXT answers with a few challenge values fit well in this.
constexpr size_t kAnswerBytes = 8192;
// Seconds per try and tries per server: a validation job retries the whole lookup later, so a
// lookup gives up after about six seconds instead of glibc's default thirty.
constexpr int kRetransSeconds = 3;
constexpr int kRetries = 2;
constexpr uint16_t kDnsPort = 53;

Error DnsProblem(ErrorCode code, std::string detail) { return Problem(code, "dns", std::move(detail)); }

std::string_view TypeName(int type) {
  if (type == ns_t_txt) return "TXT";
  return type == ns_t_a ? "A" : "AAAA";
}

}  // namespace

Result<Resolver> Resolver::Make(std::string_view server) {
  if (server.empty()) return Resolver(std::nullopt);
  std::string_view host = server;
  uint16_t port = kDnsPort;
  if (const size_t colon = server.rfind(':'); colon != std::string_view::npos) {
    host = server.substr(0, colon);
    const std::string_view digits = server.substr(colon + 1);
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
    if (ec != std::errc() || end != digits.data() + digits.size() || port == 0) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("acme.resolver {}: the port is not a number from 1 to 65535", Escaped(server)));
    }
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, std::string(host).c_str(), &addr.sin_addr) != 1) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("acme.resolver {} is not IPv4:port (an address, not a name)", Escaped(server)));
  }
  return Resolver(addr);
}

Result<std::vector<std::string>> Resolver::Query(const std::string& name, int type) const {
  // One resolver state per thread, read from /etc/resolv.conf once (res_ninit per query
  // would read the file each time); `__res_state` is a function too (behind `_res`): the
  // struct needs its keyword.
  struct State {
    struct __res_state state {};
    bool ready = res_ninit(&state) == 0;
    const int system_count = state.nscount;  // the servers of /etc/resolv.conf
    const std::array<sockaddr_in, MAXNS> system_servers = std::to_array(state.nsaddr_list);
    ~State() {
      if (ready) res_nclose(&state);
    }
  };
  thread_local State per_thread;
  if (!per_thread.ready) return DnsProblem(ErrorCode::kUnavailable, "the DNS resolver cannot start");
  res_state st = &per_thread.state;
  if (server_) {
    st->nscount = 1;
    st->nsaddr_list[0] = *server_;
  } else {
    st->nscount = per_thread.system_count;
    std::copy(per_thread.system_servers.begin(), per_thread.system_servers.end(), st->nsaddr_list);
  }
  st->retrans = kRetransSeconds;
  st->retry = kRetries;
  std::array<unsigned char, kAnswerBytes> answer{};
  const int n = res_nquery(st, name.c_str(), ns_c_in, type, answer.data(), static_cast<int>(answer.size()));
  if (n < 0) {
    if (st->res_h_errno == HOST_NOT_FOUND || st->res_h_errno == NO_DATA) {
      return DnsProblem(ErrorCode::kNotFound, fmt::format("{} has no {} record", Escaped(name), TypeName(type)));
    }
    return DnsProblem(ErrorCode::kUnavailable, fmt::format("no DNS answer for {} ({})", Escaped(name), TypeName(type)));
  }
  ns_msg msg;
  if (ns_initparse(answer.data(), n, &msg) != 0) {
    return DnsProblem(ErrorCode::kUnavailable, fmt::format("the DNS answer for {} is malformed", Escaped(name)));
  }
  std::vector<std::string> out;
  for (int i = 0; i < ns_msg_count(msg, ns_s_an); ++i) {
    ns_rr rr;
    if (ns_parserr(&msg, ns_s_an, i, &rr) != 0) {
      return DnsProblem(ErrorCode::kUnavailable, fmt::format("the DNS answer for {} is malformed", Escaped(name)));
    }
    if (ns_rr_type(rr) != type) continue;  // the CNAMEs on the way
    out.emplace_back(reinterpret_cast<const char*>(ns_rr_rdata(rr)), ns_rr_rdlen(rr));
  }
  if (out.empty()) {
    return DnsProblem(ErrorCode::kNotFound, fmt::format("{} has no {} record", Escaped(name), TypeName(type)));
  }
  return out;
}

Result<std::vector<std::string>> Resolver::Txt(const std::string& name) const {
  CF_ASSIGN_OR_RETURN(std::vector<std::string> rdatas, Query(name, ns_t_txt));
  std::vector<std::string> out;
  for (const std::string& rdata : rdatas) {
    // <length><bytes>, repeated: the strings of one record, joined (RFC 1035 3.3.14).
    std::string value;
    for (size_t i = 0; i < rdata.size();) {
      const size_t len = static_cast<unsigned char>(rdata[i]);
      if (i + 1 + len > rdata.size()) {
        return DnsProblem(ErrorCode::kUnavailable, fmt::format("a TXT record of {} is malformed", Escaped(name)));
      }
      value.append(rdata, i + 1, len);
      i += 1 + len;
    }
    out.push_back(std::move(value));
  }
  return out;
}

Result<std::vector<std::string>> Resolver::Addresses(const std::string& name) const {
  std::vector<std::string> out;
  if (!server_) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int rc = getaddrinfo(name.c_str(), nullptr, &hints, &found);
    if (rc != 0) {
      return DnsProblem(rc == EAI_NONAME || rc == EAI_NODATA ? ErrorCode::kNotFound : ErrorCode::kUnavailable,
                        fmt::format("{} cannot be resolved: {}", Escaped(name), gai_strerror(rc)));
    }
    std::unique_ptr<addrinfo, void (*)(addrinfo*)> owned(found, freeaddrinfo);
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* raw = a->ai_family == AF_INET
                            ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(a->ai_addr)->sin_addr)
                            : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(a->ai_addr)->sin6_addr);
      if (inet_ntop(a->ai_family, raw, text, sizeof(text)) != nullptr) out.emplace_back(text);
    }
    return out;
  }
  for (const int type : {ns_t_a, ns_t_aaaa}) {
    auto rdatas = Query(name, type);
    if (!rdatas.ok()) {
      if (rdatas.error().code == ErrorCode::kNotFound) continue;
      return rdatas.error();
    }
    const int family = type == ns_t_a ? AF_INET : AF_INET6;
    const size_t size = type == ns_t_a ? 4 : 16;
    for (const std::string& rdata : *rdatas) {
      char text[INET6_ADDRSTRLEN] = {};
      if (rdata.size() == size && inet_ntop(family, rdata.data(), text, sizeof(text)) != nullptr) {
        out.emplace_back(text);
      }
    }
  }
  if (out.empty()) return DnsProblem(ErrorCode::kNotFound, fmt::format("{} has no address record", Escaped(name)));
  return out;
}

}  // namespace certfleet::acme
