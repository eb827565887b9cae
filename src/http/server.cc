#include "http/server.h"

#include <fmt/format.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/resource.h>

#include <array>
#include <atomic>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "core/crypto.h"
#include "core/log.h"
#include "core/text.h"
#include "core/thread_name.h"
#include "http/json.h"
#include "pki/certificate.h"

namespace certfleet::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

// Request line plus headers; larger ones are refused (431) to bound memory per connection.
constexpr uint32_t kHeaderLimit = 16 * 1024;
// What a connection's read buffer holds before the parser takes it: the headers, and a chunk's
// size line or the trailer, which no other limit bounds (Beast reads them until their line
// ends). A body's bytes go on to the body as they come, so this bounds none.
constexpr size_t kReadBufferLimit = size_t{64} * 1024;
// What a read of a request's first bytes after a keep-alive wait takes at most.
constexpr size_t kFirstRead = 4096;
// How long a closing connection gets for the TLS close_notify exchange.
constexpr std::chrono::seconds kCloseTimeout{2};
// How long and how much of a refused body is read and dropped before closing (see Linger).
constexpr std::chrono::seconds kLingerTimeout{3};
constexpr size_t kLingerMaxBytes = size_t{64} * 1024 * 1024;
// Bytes read per call while draining a refused body.
constexpr size_t kDrainChunk = 16384;
// With threads = 0: issuing certificates holds no thread while the commit is pending, and
// the other handlers' waits on the store are short, so a few threads per core keep it busy.
constexpr int kMinAutoThreads = 4;
// Pending connections the kernel queues before accept (and while at max_connections).
constexpr int kListenBacklog = 512;
// Descriptors kept for the rest of the process (the store, files, outgoing connections) when
// max_connections is fitted under the open-file limit.
constexpr uint64_t kReservedFds = 256;
// After an accept that failed for want of descriptors or memory: the wait before the next.
constexpr std::chrono::milliseconds kAcceptRetry{100};
// TLS 1.2 suites offered: ECDHE with AES-GCM or ChaCha20-Poly1305 (Mozilla's "intermediate").
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

bool ValidRequestId(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  }
  return true;
}

// The client's certificate if it sent one that chains to a CA of `trust`; nullopt otherwise
// (none, an untrusted one, or one OpenSSL could not read).
std::optional<ClientCert> PeerCertificate(SSL* ssl, const ClientTrust& trust) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert || !trust.Verifies(ssl)) return std::nullopt;
  ClientCert out;
  out.subject = pki::SubjectText(cert);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &md_len) != 1) return std::nullopt;
  out.sha256_fingerprint = HexEncode(std::string_view(reinterpret_cast<char*>(md), md_len));
  out.serial = pki::SerialHex(X509_get0_serialNumber(cert));
  if (out.serial.empty()) return std::nullopt;
  return out;
}

// The certificates the client sent (unverified) and the connection's channel binding.
std::shared_ptr<const PeerTls> PeerTlsOf(SSL* ssl) {
  auto out = std::make_shared<PeerTls>();
  auto to_der = [](X509* cert) {
    unsigned char* der = nullptr;
    const int len = i2d_X509(cert, &der);
    std::string bytes = len > 0 ? std::string(reinterpret_cast<char*>(der), len) : std::string();
    OPENSSL_free(der);
    return bytes;
  };
  if (X509* leaf = SSL_get0_peer_certificate(ssl)) {
    out->certificates.push_back(to_der(leaf));
    // On the server's side the chain the client sent does not hold its own certificate.
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(ssl);
    for (int i = 0; chain && i < sk_X509_num(chain); ++i) out->certificates.push_back(to_der(sk_X509_value(chain, i)));
  }
  out->tls13 = SSL_version(ssl) >= TLS1_3_VERSION;
  if (out->tls13) {
    // RFC 9266: 32 bytes of the exporter with this label and no context.
    constexpr std::string_view kLabel = "EXPORTER-Channel-Binding";
    unsigned char binding[32];
    if (SSL_export_keying_material(ssl, binding, sizeof(binding), kLabel.data(), kLabel.size(), nullptr, 0, 0) == 1) {
      out->channel_binding.assign(reinterpret_cast<char*>(binding), sizeof(binding));
    }
  } else if (SSL_get_extms_support(ssl) == 1) {
    // RFC 5929 tls-unique: the first Finished message of the handshake, the client's in a
    // full handshake and the server's in a resumed one. Only with the extended master
    // secret (RFC 7627): without it a man in the middle can make two connections share it.
    unsigned char finished[EVP_MAX_MD_SIZE];
    const size_t n = SSL_session_reused(ssl) ? SSL_get_finished(ssl, finished, sizeof(finished))
                                             : SSL_get_peer_finished(ssl, finished, sizeof(finished));
    out->channel_binding.assign(reinterpret_cast<char*>(finished), std::min(n, sizeof(finished)));
  }
  return out;
}

// The methods certfleet's routes use; any other is one metrics label and one log value.
bool KnownMethod(std::string_view method) {
  for (std::string_view m : {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}) {
    if (method == m) return true;
  }
  return false;
}

// Errors that mean the client went away or stopped sending, as opposed to sending a
// malformed request: no answer can reach it.
bool ClientGone(const beast::error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
         ec == asio::error::operation_aborted || ec == asio::ssl::error::stream_truncated || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

// Opens `acceptor` on `listen` (host:port, the value of the key `key`).
Result<void> Bind(tcp::acceptor& acceptor, std::string_view key, const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos)
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} must be host:port", key));
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  int port = 0;
  try {
    port = std::stoi(listen.substr(colon + 1));
  } catch (...) {
    port = -1;
  }
  if (port < 0 || port > 65535) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{}: bad port", key));
  beast::error_code ec;
  auto address = asio::ip::make_address(host, ec);
  if (ec) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{}: '{}' is not an IP address", key, host));
  tcp::endpoint endpoint(address, static_cast<uint16_t>(port));
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(kListenBacklog, ec);
  if (ec) return MakeError(ErrorCode::kFailedPrecondition, fmt::format("listening on {}: {}", listen, ec.message()));
  return Ok();
}

}  // namespace

struct Server::Impl {
  class SessionBase;
  template <bool kTls>
  class Session;

  // A listening socket: HTTPS (server.listen) or plain HTTP (server.http_listen).
  struct Listener {
    Listener(asio::io_context& ioc, bool tls)
        : acceptor(asio::make_strand(ioc)), retry(acceptor.get_executor()), tls(tls) {}
    tcp::acceptor acceptor;
    asio::steady_timer retry;  // on the acceptor's strand
    const bool tls;
    bool paused = false;  // at max_connections: accepting again when a session ends; guarded by mu
  };

  Impl(const Router& r, Metrics& m, ServerOptions o)
      : router(r),
        metrics(m),
        options(WithThreads(std::move(o))),
        trust(options.client_trust ? options.client_trust : std::make_shared<ClientTrust>()),
        ioc(options.threads),
        ctx(ssl::context::tls_server),
        https(ioc, true),
        control(asio::make_strand(ioc)),
        signals(control, SIGINT, SIGTERM),
        drain_timer(control),
        grace_timer(control) {}
  // Sessions still held by unfinished handlers die with `ioc`; they must not call back.
  ~Impl() { destroying = true; }

  static ServerOptions WithThreads(ServerOptions o) {
    if (o.threads <= 0)
      o.threads = std::max(kMinAutoThreads, 2 * static_cast<int>(std::thread::hardware_concurrency()));
    return o;
  }

  Result<void> Listen();
  void FitConnectionLimit();
  void Accept(Listener& listener);
  // Whether the socket's client may open another connection (server.max_connections_per_client);
  // `client` is set to its address when counted. Closes the socket when not.
  bool Admit(tcp::socket& socket, std::string& client);
  // Counted in `sessions` until it ends, and against its client's connections (Admit) if
  // `client` is given.
  template <class S>
  void Start(const std::shared_ptr<S>& session, const std::string& client);
  void AwaitSignal();
  void Stop();
  void BeginShutdown();
  void SessionEnded(SessionBase* s);

  const Router& router;
  Metrics& metrics;
  const ServerOptions options;
  const std::shared_ptr<ClientTrust> trust;
  // Declared before `ioc` so that they outlive the sessions it destroys.
  std::atomic<bool> destroying{false};
  std::atomic<bool> draining{false};  // from the first signal on; shutting_down follows the drain
  std::atomic<bool> shutting_down{false};
  std::mutex mu;
  std::map<SessionBase*, std::weak_ptr<SessionBase>> sessions;
  size_t max_connections = 0;  // options.max_connections, fitted under the open-file limit
  // Open connections by client address (with server.max_connections_per_client), and the
  // addresses refused since they last had fewer (logged once).
  std::unordered_map<std::string, size_t> per_client;
  std::unordered_set<std::string> refused_clients;
  asio::io_context ioc;
  ssl::context ctx;
  Listener https;
  std::unique_ptr<Listener> http;  // with server.http_listen
  // Signals, Shutdown() and the shutdown's timers: one at a time.
  asio::strand<asio::io_context::executor_type> control;
  asio::signal_set signals;
  asio::steady_timer drain_timer;
  asio::steady_timer grace_timer;
};

// What the server keeps of a connection to close it at shutdown.
class Server::Impl::SessionBase {
 public:
  virtual ~SessionBase() = default;
  // Closes the connection if it is waiting for a new request (shutdown).
  virtual void CloseIfIdle() = 0;
  // The client's address, counted against server.max_connections_per_client; "" when not.
  std::string client;
};

// One connection: owns its stream (TLS, or plain TCP on server.http_listen) and lives as
// long as its pending I/O. All of its handlers run on its strand.
template <bool kTls>
class Server::Impl::Session : public SessionBase, public std::enable_shared_from_this<Session<kTls>> {
  using Stream = std::conditional_t<kTls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;
  using std::enable_shared_from_this<Session<kTls>>::shared_from_this;

 public:
  Session(Impl& server, tcp::socket socket) : server_(server), stream_(MakeStream(server, std::move(socket))) {
    beast::error_code ec;
    auto ep = beast::get_lowest_layer(stream_).socket().remote_endpoint(ec);
    if (!ec) remote_ = fmt::format("{}:{}", ep.address().to_string(), ep.port());
  }
  // Only a failing mutex could throw here, and then terminating is right.
  ~Session() override { server_.SessionEnded(this); }  // NOLINT(bugprone-exception-escape)

  void Start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if constexpr (kTls) {
        beast::get_lowest_layer(self->stream_).expires_after(self->server_.options.header_timeout);
        self->stream_.async_handshake(ssl::stream_base::server,
                                      [self](beast::error_code ec) { self->OnHandshake(ec); });
      } else {
        self->ReadHeader();
      }
    });
  }

  void CloseIfIdle() override {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (self->idle_ && self->buffer_.size() == 0) beast::get_lowest_layer(self->stream_).cancel();
    });
  }

 private:
  static Stream MakeStream(Impl& server, tcp::socket socket) {
    if constexpr (kTls) {
      return Stream(std::move(socket), server.ctx);
    } else {
      return Stream(std::move(socket));
    }
  }

  void OnHandshake(beast::error_code ec) {
    if (ec) {
      log::Debug("TLS handshake failed", {{"remote", remote_}, {"error", ec.message()}});
      return;
    }
    client_cert_ = PeerCertificate(stream_.native_handle(), *server_.trust);
    peer_ = PeerTlsOf(stream_.native_handle());
    ReadHeader();
  }

  void ReadHeader() {
    if (server_.shutting_down) return Close();
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(boost::none);  // the route's limit is set once the headers say which route
    idle_ = true;
    if (first_ || buffer_.size() > 0) return ReadHeaderRest();
    // Between requests the next one's first bytes may take server.idle_timeout; from them on,
    // its headers have server.header_timeout, as a first request's do, so that a client
    // sending a byte now and then cannot hold the connection for an idle timeout each time.
    beast::get_lowest_layer(stream_).expires_after(server_.options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstRead), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->buffer_.commit(n);
      if (ec) return self->OnHeader(ec);
      self->ReadHeaderRest();
    });
  }

  // Reads the rest of a request's headers (all of them if none came yet) within header_timeout.
  void ReadHeaderRest() {
    beast::get_lowest_layer(stream_).expires_after(server_.options.header_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = shared_from_this()](beast::error_code ec, size_t) { self->OnHeader(ec); });
  }

  void OnHeader(beast::error_code ec) {
    idle_ = false;
    started_ = std::chrono::steady_clock::now();
    req_.request_id = RandomToken(9);
    if (ClientGone(ec) || ec == beast::error::timeout) return Close();
    if (ec == bhttp::error::body_limit) {
      unread_body_ = true;
      return Reply(ErrorResponse(413, "payload_too_large", "the body is larger than this route accepts"), true);
    }
    if (ec == bhttp::error::header_limit) {
      unread_body_ = true;  // the client may still be sending its headers: let it finish, then read the answer
      return Reply(ErrorResponse(431, "headers_too_large",
                                 fmt::format("the request line and headers are larger than {} bytes", kHeaderLimit)),
                   true);
    }
    if (ec) {
      unread_body_ = true;
      return Reply(ErrorResponse(400, "invalid_argument", "malformed HTTP request: " + ec.message()), true);
    }

    const auto& h = parser_->get();
    req_.method = std::string(h.method_string());
    // Refused before anything else looks at them: a method no route has, and requests whose
    // framing a proxy in front could read differently (RFC 9112 6.3: a Transfer-Encoding
    // that does not end in chunked; RFC 9112 3.2: HTTP/1.1 without exactly one Host).
    if (!KnownMethod(req_.method)) {
      unread_body_ = !parser_->is_done();
      return Reply(ErrorResponse(405, "method_not_allowed", "unknown HTTP method"), true);
    }
    if (h.find(bhttp::field::transfer_encoding) != h.end() && !parser_->chunked()) {
      unread_body_ = true;
      return Reply(ErrorResponse(400, "invalid_argument", "a Transfer-Encoding must end in chunked"), true);
    }
    if (h.count(bhttp::field::host) > 1 || (h.version() >= 11 && h.count(bhttp::field::host) == 0)) {
      unread_body_ = !parser_->is_done();
      return Reply(ErrorResponse(400, "invalid_argument", "an HTTP/1.1 request needs exactly one Host header"), true);
    }
    keep_alive_ = h.keep_alive();
    version_ = h.version();
    head_ = h.method() == bhttp::verb::head;
    req_.SetTarget(std::string_view(h.target().data(), h.target().size()));
    // No path names a control character; decoded, one could end up in an answer's header.
    if (std::any_of(req_.path.begin(), req_.path.end(),
                    [](char c) { return std::iscntrl(static_cast<unsigned char>(c)); })) {
      unread_body_ = !parser_->is_done();
      return Reply(ErrorResponse(400, "invalid_argument", "the path holds a control character"), true);
    }
    for (const auto& f : h) req_.headers.emplace_back(AsciiLower(f.name_string()), std::string(f.value()));
    // Which of two credentials counts is for no proxy and no server to guess.
    if (h.count(bhttp::field::authorization) > 1) {
      unread_body_ = !parser_->is_done();
      return Reply(ErrorResponse(400, "invalid_argument", "a request carries one Authorization header"), true);
    }
    if (auto rid = req_.Header("x-request-id"); rid && ValidRequestId(*rid)) req_.request_id = std::string(*rid);
    req_.remote_address = remote_;
    req_.client_cert = client_cert_;
    req_.peer = peer_;
    match_ = server_.router.Find(req_.method, req_.raw_path);
    // Plain HTTP serves only what needs no TLS (CRLs, OCSP, CMP): anything else is not
    // found there, whatever HTTPS would answer (an Allow header included).
    if (!kTls && !(match_.route && match_.route->options.plain_http)) {
      unread_body_ = !parser_->is_done();
      return Reply(ErrorResponse(404, "not_found", "not served over plain HTTP: use HTTPS"), unread_body_);
    }
    // Authenticated from the headers, before the body is read (or 100-continue sent): no one
    // without a token makes the server take in a route's body, up to its limit.
    if (std::optional<Response> refused = server_.router.Admit(match_, req_)) {
      unread_body_ = !parser_->is_done();
      return Reply(std::move(*refused), unread_body_);
    }
    // GET and HEAD take no body (RFC 9110 9.3.1: it has no meaning): none is read, so none
    // makes a public route take in server.body_limit bytes for nothing.
    const bool bodiless = h.method() == bhttp::verb::get || h.method() == bhttp::verb::head;
    const size_t limit = bodiless                                           ? 0
                         : match_.route && match_.route->options.body_limit ? match_.route->options.body_limit
                                                                            : server_.options.body_limit;
    if (parser_->content_length() && *parser_->content_length() > limit) {
      unread_body_ = true;
      return Reply(ErrorResponse(413, "payload_too_large", fmt::format("the body is larger than {} bytes", limit)),
                   true);
    }
    parser_->body_limit(limit);
    if (parser_->is_done()) return OnBody({});
    if (beast::iequals(h[bhttp::field::expect], "100-continue")) {
      auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_, h.version());
      bhttp::async_write(stream_, *cont, [self = shared_from_this(), cont](beast::error_code wec, size_t) {
        if (wec) return self->Close();
        self->ReadBody();
      });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    beast::get_lowest_layer(stream_).expires_after(server_.options.body_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](beast::error_code ec, size_t) { self->OnBody(ec); });
  }

  void OnBody(beast::error_code ec) {
    if (ec == bhttp::error::body_limit) {
      unread_body_ = true;
      return Reply(ErrorResponse(413, "payload_too_large", "the body is larger than this route accepts"), true);
    }
    if (ec == beast::error::timeout) {
      return Reply(ErrorResponse(408, "request_timeout", "the body did not arrive in time"), true);
    }
    if (ec && ClientGone(ec)) return Close();
    if (ec) {  // a malformed body: a bad chunk size or extension, say
      unread_body_ = true;
      return Reply(ErrorResponse(400, "invalid_argument", "malformed HTTP body: " + ec.message()), true);
    }

    auto msg = parser_->release();
    req_.body = std::move(msg.body());

    const bool async = match_.route && match_.route->async_handler;
    // An asynchronous route may wait long (a long poll): no read or write is pending meanwhile,
    // so the timeouts of reading the request must not run out under it. Reply sets the next.
    if (async) beast::get_lowest_layer(stream_).expires_never();
    std::optional<Response> res = server_.router.Run(match_, req_, async ? MakeResponder() : Responder());
    if (res) Reply(std::move(*res), false);
  }

  // Answers for an asynchronous route: the reply is made on this connection's strand, and
  // until then the server counts it as outstanding work, so a graceful shutdown waits for it.
  Responder MakeResponder() {
    auto executor = asio::prefer(stream_.get_executor(), asio::execution::outstanding_work.tracked);
    return [self = shared_from_this(), executor](MakeResponse make) {
      asio::post(executor, [self, make = std::move(make)] {
        const std::string_view route = self->match_.route ? std::string_view(self->match_.route->pattern) : "";
        self->Reply(Router::Answer(self->req_.request_id, route, make), false);
      });
    };
  }

  void Reply(Response res, bool close) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
    const std::string route = match_.route ? match_.route->pattern : "unmatched";
    // Bounded: a made-up method is one label and one log value, whatever its length.
    const std::string_view method = KnownMethod(req_.method) ? std::string_view(req_.method) : "other";
    server_.metrics.ObserveRequest(route, method, res.status, seconds);
    log::Info("request", {{"request_id", req_.request_id},
                          {"method", method},
                          {"route", route},
                          {"status", res.status},
                          {"ms", static_cast<int64_t>(seconds * 1000)},
                          {"remote", remote_},
                          {"actor", req_.principal.Actor()}});

    close = close || !keep_alive_ || server_.draining;
    auto out = std::make_shared<bhttp::response<bhttp::string_body>>(static_cast<bhttp::status>(res.status),
                                                                     version_ ? version_ : 11);
    out->set(bhttp::field::server, "certfleet");
    if (!res.content_type.empty()) out->set(bhttp::field::content_type, res.content_type);
    if (!req_.request_id.empty()) out->set("X-Request-Id", req_.request_id);
    for (const auto& [k, v] : res.headers) {
      // A value with a line break would end the header early (and a NUL cut it): never sent.
      if (v.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
        log::Warn("a header value with a control character was not sent",
                  {{"request_id", req_.request_id}, {"header", k}});
        continue;
      }
      out->insert(k, v);
    }
    out->body() = std::move(res.body);
    out->keep_alive(!close);
    out->prepare_payload();
    if (head_) out->body().clear();
    // The client has as long to take the answer as it had to send its body.
    beast::get_lowest_layer(stream_).expires_after(server_.options.body_timeout);
    bhttp::async_write(stream_, *out, [self = shared_from_this(), out, close](beast::error_code ec, size_t) {
      if (!ec && self->unread_body_) return self->Linger();
      if (ec || close) return self->Close();
      self->first_ = false;
      self->req_ = Request{};
      self->match_ = Router::Match{};
      self->head_ = false;
      self->ReadHeader();
    });
  }

  // After refusing a request whose body is still arriving, reads and drops the rest for a
  // while before closing: closing at once would reset the connection while the client is
  // still sending, and the client would never read the refusal. Our side is half-closed
  // first (RFC 9112 9.6), so that a client that has read the answer closes at once.
  void Linger() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
    beast::get_lowest_layer(stream_).expires_after(kLingerTimeout);
    drain_ = std::make_unique<std::array<char, kDrainChunk>>();
    DrainSome();
  }

  void DrainSome() {
    stream_.async_read_some(asio::buffer(*drain_), [self = shared_from_this()](beast::error_code ec, size_t n) {
      self->drained_ += n;
      if (ec || self->drained_ > kLingerMaxBytes) return self->Close();
      self->DrainSome();
    });
  }

  void Close() {
    auto close_socket = [self = shared_from_this()] {
      beast::error_code ignored;
      beast::get_lowest_layer(self->stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
      beast::get_lowest_layer(self->stream_).close();
    };
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(kCloseTimeout);
      stream_.async_shutdown([close_socket](beast::error_code) { close_socket(); });
    } else {
      close_socket();
    }
  }

  Impl& server_;
  Stream stream_;
  beast::flat_buffer buffer_{kReadBufferLimit};
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string remote_;
  std::optional<ClientCert> client_cert_;
  std::shared_ptr<const PeerTls> peer_;
  Request req_;
  Router::Match match_;
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  bool idle_ = false;
  bool first_ = true;
  bool keep_alive_ = false;
  bool head_ = false;
  bool unread_body_ = false;
  unsigned version_ = 11;
  // Only while lingering: a connection per agent must stay small.
  std::unique_ptr<std::array<char, kDrainChunk>> drain_;
  size_t drained_ = 0;
};

Result<void> Server::Impl::Listen() {
  beast::error_code ec;
  ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                  ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  // TLS 1.2 with forward-secret AEAD suites only (TLS 1.3's suites are all AEAD): no CBC,
  // no static-RSA key exchange.
  if (SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_cipher_list(ctx.native_handle(), kTls12Ciphers) != 1) {
    return MakeError(ErrorCode::kFailedPrecondition, "OpenSSL refused the TLS protocol and cipher settings");
  }
  // Idle keep-alive connections (agents' long polls: one per host) give back OpenSSL's
  // read and write buffers, about 34 KiB each.
  SSL_CTX_set_mode(ctx.native_handle(), SSL_MODE_RELEASE_BUFFERS);
  ctx.use_certificate_chain_file(options.tls_cert_file, ec);
  if (ec)
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("server.tls_cert {}: {} (run certfleet init?)", options.tls_cert_file, ec.message()));
  ctx.use_private_key_file(options.tls_key_file, ssl::context::pem, ec);
  if (ec)
    return MakeError(ErrorCode::kFailedPrecondition,
                     fmt::format("server.tls_key {}: {}", options.tls_key_file, ec.message()));
  if (!options.client_ca_file.empty()) {
    Result<void> loaded = trust->LoadFile(options.client_ca_file);
    if (!loaded.ok()) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       fmt::format("server.client_ca {}: {}", options.client_ca_file, loaded.error().message));
    }
  }
  // Ask for a certificate without requiring one, and without failing the handshake on one
  // that does not chain to a trusted CA (a device's certificate from another CA, say): routes
  // that need a trusted one say so, and PeerCertificate gives them only one that verifies
  // against the CAs trusted when the handshake completed (they change while serving). No CA
  // list is sent, so that a client offers its certificate whichever CA issued it.
  ctx.set_verify_mode(ssl::verify_peer);
  ctx.set_verify_callback([](bool, ssl::verify_context&) { return true; });
  static const unsigned char kSessionContext[] = "certfleet";
  SSL_CTX_set_session_id_context(ctx.native_handle(), kSessionContext, sizeof(kSessionContext) - 1);

  CF_RETURN_IF_ERROR(Bind(https.acceptor, "server.listen", options.listen));
  if (!options.http_listen.empty()) {
    http = std::make_unique<Listener>(ioc, false);
    CF_RETURN_IF_ERROR(Bind(http->acceptor, "server.http_listen", options.http_listen));
  }
  FitConnectionLimit();
  return Ok();
}

// Each connection holds a descriptor: the soft open-file limit is raised to the hard one (a
// service manager's soft default, 1024, would cap the server far below what the machine
// allows), and max_connections is lowered under it if it does not fit.
void Server::Impl::FitConnectionLimit() {
  max_connections = options.max_connections;
  rlimit fds{};
  if (getrlimit(RLIMIT_NOFILE, &fds) != 0) return;
  if (fds.rlim_cur < fds.rlim_max) {
    rlimit raised = fds;
    raised.rlim_cur = fds.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) fds = raised;
  }
  if (fds.rlim_cur == RLIM_INFINITY) return;
  const uint64_t fit = fds.rlim_cur > 2 * kReservedFds ? fds.rlim_cur - kReservedFds : fds.rlim_cur / 2;
  if (max_connections > fit) {
    log::Warn(
        "server.max_connections lowered to fit the open-file limit",
        {{"max_connections", static_cast<int64_t>(fit)}, {"open_file_limit", static_cast<int64_t>(fds.rlim_cur)}});
    max_connections = fit;
  }
}

void Server::Impl::Accept(Listener& listener) {
  {
    // At the limit, new connections wait in the kernel's queue until a session ends.
    std::lock_guard lock(mu);
    if (sessions.size() >= max_connections) {
      if (!https.paused && !(http && http->paused)) {
        log::Warn("server.max_connections reached: new connections wait", {{"max_connections", max_connections}});
      }
      listener.paused = true;
      return;
    }
  }
  listener.acceptor.async_accept(asio::make_strand(ioc), [this, &listener](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (!listener.acceptor.is_open() || shutting_down) return;
      log::Warn("accept failed", {{"error", ec.message()}});
      // Out of descriptors or memory: accepting again at once would spin.
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space || ec == asio::error::no_memory ||
          ec.value() == ENFILE) {
        listener.retry.expires_after(kAcceptRetry);
        listener.retry.async_wait([this, &listener](beast::error_code waited) {
          if (!waited) Accept(listener);
        });
        return;
      }
    } else if (std::string client; Admit(socket, client)) {
      if (listener.tls) {
        Start(std::make_shared<Session<true>>(*this, std::move(socket)), client);
      } else {
        Start(std::make_shared<Session<false>>(*this, std::move(socket)), client);
      }
    }
    Accept(listener);
  });
}

bool Server::Impl::Admit(tcp::socket& socket, std::string& client) {
  const size_t limit = options.max_connections_per_client;
  if (limit == 0) return true;
  beast::error_code ec;
  const tcp::endpoint peer = socket.remote_endpoint(ec);
  if (ec) return false;  // gone already
  std::string address = peer.address().to_string();
  std::lock_guard lock(mu);
  size_t& open = per_client[address];
  if (open >= limit) {
    if (refused_clients.insert(address).second) {
      log::Warn("server.max_connections_per_client reached: the client's new connections are closed",
                {{"client", address}, {"max_connections_per_client", limit}});
    }
    socket.close(ec);
    return false;
  }
  ++open;
  client = std::move(address);
  return true;
}

template <class S>
void Server::Impl::Start(const std::shared_ptr<S>& session, const std::string& client) {
  session->client = client;
  {
    std::lock_guard lock(mu);
    sessions[session.get()] = session;
  }
  session->Start();
}

void Server::Impl::SessionEnded(SessionBase* s) {
  if (destroying) return;
  std::lock_guard lock(mu);
  sessions.erase(s);
  if (!s->client.empty()) {
    if (auto it = per_client.find(s->client); it != per_client.end() && --it->second == 0) per_client.erase(it);
    refused_clients.erase(s->client);
  }
  for (Listener* listener : {&https, http.get()}) {
    if (listener && listener->paused && !shutting_down && sessions.size() < max_connections) {
      listener->paused = false;
      asio::post(listener->acceptor.get_executor(), [this, listener] { Accept(*listener); });
    }
  }
  if (shutting_down && sessions.empty()) {
    asio::post(control, [this] { grace_timer.cancel(); });
  }
}

void Server::Impl::AwaitSignal() {
  signals.async_wait([this](beast::error_code ec, int) {
    if (ec) return;
    Stop();
    if (!shutting_down) AwaitSignal();  // a second one ends the drain
  });
}

// A signal or Shutdown(): the drain first when there is one, else (or on a second call) the shutdown.
void Server::Impl::Stop() {
  if (options.shutdown_drain.count() == 0 || draining.exchange(true)) return BeginShutdown();
  log::Info("draining: serving on while /readyz answers 503, then shutting down",
            {{"drain_seconds", options.shutdown_drain.count()}});
  drain_timer.expires_after(options.shutdown_drain);
  drain_timer.async_wait([this](beast::error_code ec) {
    if (!ec) BeginShutdown();
  });
}

void Server::Impl::BeginShutdown() {
  draining = true;
  if (shutting_down.exchange(true)) return;
  drain_timer.cancel();
  log::Info("shutting down: finishing in-flight requests", {{"grace_seconds", options.shutdown_grace.count()}});
  for (Listener* listener : {&https, http.get()}) {
    if (!listener) continue;
    asio::post(listener->acceptor.get_executor(), [listener] {
      beast::error_code ec;
      listener->acceptor.close(ec);
    });
  }
  signals.cancel();
  std::vector<std::shared_ptr<SessionBase>> live;
  {
    std::lock_guard lock(mu);
    for (auto& [ptr, weak] : sessions) {
      if (auto s = weak.lock()) live.push_back(std::move(s));
    }
  }
  for (auto& s : live) s->CloseIfIdle();
  grace_timer.expires_after(options.shutdown_grace);
  grace_timer.async_wait([this](beast::error_code ec) {
    if (ec == asio::error::operation_aborted) return;  // every connection closed in time
    log::Warn("shutdown grace period over: closing the remaining connections");
    ioc.stop();
  });
  live.clear();
  std::lock_guard lock(mu);
  if (sessions.empty()) asio::post(control, [this] { grace_timer.cancel(); });
}

ServerOptions ServerOptionsFrom(const Config& config) {
  ServerOptions o;
  o.listen = config.Get("server.listen");
  o.http_listen = config.Get("server.http_listen");
  o.tls_cert_file = config.Get("server.tls_cert");
  o.tls_key_file = config.Get("server.tls_key");
  o.client_ca_file = config.Get("server.client_ca");
  o.threads = static_cast<int>(config.GetInt("server.threads"));
  o.body_limit = static_cast<size_t>(config.GetInt("server.body_limit"));
  o.header_timeout = std::chrono::seconds(config.GetInt("server.header_timeout"));
  o.body_timeout = std::chrono::seconds(config.GetInt("server.body_timeout"));
  o.idle_timeout = std::chrono::seconds(config.GetInt("server.idle_timeout"));
  o.shutdown_grace = std::chrono::seconds(config.GetInt("server.shutdown_grace"));
  o.shutdown_drain = std::chrono::seconds(config.GetInt("server.shutdown_drain"));
  o.max_connections = static_cast<size_t>(config.GetInt("server.max_connections"));
  o.max_connections_per_client = static_cast<size_t>(config.GetInt("server.max_connections_per_client"));
  return o;
}

Server::Server(const Router& router, Metrics& metrics, ServerOptions options)
    : impl_(std::make_unique<Impl>(router, metrics, std::move(options))) {}

Server::~Server() = default;

Result<void> Server::Listen() { return impl_->Listen(); }

uint16_t Server::port() const {
  beast::error_code ec;
  return impl_->https.acceptor.local_endpoint(ec).port();
}

uint16_t Server::http_port() const {
  beast::error_code ec;
  return impl_->http ? impl_->http->acceptor.local_endpoint(ec).port() : 0;
}

void Server::Run() {
  impl_->AwaitSignal();
  impl_->Accept(impl_->https);
  if (impl_->http) impl_->Accept(*impl_->http);
  std::vector<std::thread> threads;
  for (int i = 1; i < impl_->options.threads; ++i) {
    threads.emplace_back([this] {
      NameThisThread("cf-http");
      impl_->ioc.run();
    });
  }
  impl_->ioc.run();
  for (auto& t : threads) t.join();
}

void Server::Post(std::function<void()> fn) { asio::post(impl_->ioc, std::move(fn)); }

void Server::PostAfter(std::chrono::milliseconds delay, std::function<void()> fn) {
  auto timer = std::make_shared<asio::steady_timer>(impl_->ioc, delay);
  timer->async_wait([timer, fn = std::move(fn)](const boost::system::error_code& ec) {
    if (!ec) fn();
  });
}

void Server::Shutdown() {
  asio::post(impl_->control, [this] { impl_->Stop(); });
}

bool Server::Draining() const { return impl_->draining; }

}  // namespace certfleet::http
