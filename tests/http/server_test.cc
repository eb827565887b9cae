// The HTTPS server in-process, with curl as the independent client.
#include "http/server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/json/parse.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <semaphore>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "http/json.h"
#include "pki/certificate.h"
#include "pki/key.h"
#include "pki/tls_identity.h"
#include "testing/db.h"

namespace certfleet::http {
namespace {

struct Curl {
  int status = 0;
  std::string body;
};

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    auto id = pki::MakeTlsIdentity({"localhost", "127.0.0.1"}, SystemClock::Instance().NowMillis(), 1);
    ASSERT_TRUE(id.ok());
    Write("ca.pem", id->ca_pem);
    Write("server.pem", id->server_chain_pem);
    Write("server.key", id->server_key_pem);
    MakeClientCa();

    router_.Add("GET", "/hello", {Access::kPublic}, [](Request& r) {
      return JsonResponse(200, boost::json::object{{"q", r.query.count("q") ? r.query.at("q") : ""}, {"path", r.path}});
    });
    router_.Add("POST", "/echo", {Access::kPublic, false, 64}, [](Request& r) {
      return JsonResponse(200, boost::json::object{{"bytes", r.body.size()}});
    });
    // Also on the plain HTTP listener, as CRLs, OCSP and CMP are.
    router_.Add("GET", "/signed/{name}", {.access = Access::kPublic, .plain_http = true}, [](Request& r) {
      return JsonResponse(200, boost::json::object{{"name", r.params.at("name")}});
    });
    router_.Add("GET", "/whoami", {Access::kPublic, true}, [](Request& r) {
      return JsonResponse(200, boost::json::object{{"subject", r.client_cert->subject}});
    });
    // Holds its server thread until the test lets it finish.
    router_.Add("GET", "/slow", {Access::kPublic}, [this](Request&) {
      slow_entered_.release();
      slow_release_.acquire();
      return JsonResponse(200, boost::json::object{{"slow", true}});
    });

    // Answers when the test says (AnswerLater), holding no server thread meanwhile.
    router_.AddAsync("GET", "/later", {Access::kPublic}, [this](Request& r, const Responder& respond) {
      {
        std::lock_guard lock(later_mu_);
        later_.emplace_back([respond, path = r.path] {
          respond([path] { return JsonResponse(200, boost::json::object{{"later", path}}); });
        });
      }
      later_arrived_.release();
    });

    ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.http_listen = "127.0.0.1:0";
    o.tls_cert_file = dir_ + "/server.pem";
    o.tls_key_file = dir_ + "/server.key";
    o.client_ca_file = dir_ + "/client-ca.pem";
    o.threads = 2;
    o.body_limit = 1024;
    o.shutdown_grace = std::chrono::seconds(5);
    server_ = std::make_unique<Server>(router_, metrics_, o);
    auto listening = server_->Listen();
    ASSERT_TRUE(listening.ok()) << listening.error().message;
    thread_ = std::thread([this] { server_->Run(); });
  }
  void TearDown() override {
    slow_release_.release(kMaxHeld);
    AnswerLater();
    if (server_) server_->Shutdown();
    if (thread_.joinable()) thread_.join();
  }

  // Answers the /later requests waiting so far.
  void AnswerLater() {
    std::vector<std::function<void()>> answers;
    {
      std::lock_guard lock(later_mu_);
      answers.swap(later_);
    }
    for (auto& answer : answers) answer();
  }

  // Waits until `n` more requests reached `arrived`'s route (bounded, for a broken server).
  static bool Arrived(std::counting_semaphore<>& arrived, int n = 1) {
    for (int i = 0; i < n; ++i) {
      if (!arrived.try_acquire_for(std::chrono::seconds(60))) return false;
    }
    return true;
  }

  // After Shutdown(): true once a new connection is refused (the server stops accepting
  // as soon as one of its threads runs the shutdown it was handed).
  bool RefusesNewConnections() {
    return RefusesNewConnections([this] { return server_->port(); }) &&
           RefusesNewConnections([this] { return server_->http_port(); });
  }
  bool RefusesNewConnections(const std::function<uint16_t()>& port) {
    constexpr int kAttempts = 100'000;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
      boost::asio::io_context io;
      boost::asio::ip::tcp::socket socket(io);
      boost::system::error_code ec;
      socket.connect({boost::asio::ip::make_address("127.0.0.1"), port()}, ec);
      if (ec == boost::asio::error::connection_refused) return true;
      std::this_thread::yield();
    }
    return false;
  }

  void Write(const std::string& name, const std::string& data) { std::ofstream(dir_ + "/" + name) << data; }

  // A client CA and a client certificate it issued, made with certfleet's own PKI code
  // but checked by the server through OpenSSL's verifier.
  void MakeClientCa() {
    auto ca_key = pki::GenerateKey(pki::KeyType::kEcP256);
    pki::CertificateSpec ca_spec;
    ca_spec.common_name = "test client CA";
    ca_spec.not_after_millis = 4'000'000'000'000;
    ca_spec.is_ca = true;
    ca_spec.path_len = 0;
    auto ca = pki::SignCertificate(ca_spec, ca_key->get(), nullptr, ca_key->get());
    auto key = pki::GenerateKey(pki::KeyType::kEcP256);
    pki::CertificateSpec leaf;
    leaf.common_name = "agent-7";
    leaf.not_after_millis = 4'000'000'000'000;
    leaf.client_auth = true;
    auto cert = pki::SignCertificate(leaf, key->get(), ca->get(), ca_key->get());
    ASSERT_TRUE(cert.ok());
    Write("client-ca.pem", *pki::CertificateToPem(ca->get()));
    Write("client.pem", *pki::CertificateToPem(cert->get()));
    Write("client.key", *pki::PrivateKeyToPem(key->get()));
  }

  Curl Fetch(const std::string& args) {
    const std::string cmd = "curl -s --max-time 10 --cacert " + dir_ + "/ca.pem -w '\\n%{http_code}' " + args + " 2>&1";
    Curl out;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    while (p && fgets(buf, sizeof(buf), p)) out.body += buf;
    if (p) pclose(p);
    auto nl = out.body.rfind('\n');
    out.status = std::atoi(out.body.substr(nl + 1).c_str());
    out.body.resize(nl == std::string::npos ? 0 : nl);
    return out;
  }
  std::string Url(const std::string& path) { return "https://127.0.0.1:" + std::to_string(server_->port()) + path; }
  std::string PlainUrl(const std::string& path) {
    return "http://127.0.0.1:" + std::to_string(server_->http_port()) + path;
  }

  // Sends `bytes` as they are over TLS (openssl s_client) and returns all the server wrote
  // back before it closed the connection (or 10 s passed).
  std::string Raw(const std::string& bytes, const std::string& options = "") {
    const std::string in = dir_ + "/raw-request";
    std::ofstream(in, std::ios::binary) << bytes;
    const std::string cmd = "timeout 10 openssl s_client -quiet -connect 127.0.0.1:" + std::to_string(server_->port()) +
                            " " + options + " < " + in + " 2>/dev/null";
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    char buf[4096];
    size_t n = 0;
    while (p && (n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
    if (p) pclose(p);
    return out;
  }
  static int Responses(const std::string& raw) {
    int n = 0;
    for (size_t at = raw.find("HTTP/1.1 "); at != std::string::npos; at = raw.find("HTTP/1.1 ", at + 1)) ++n;
    return n;
  }

  std::string dir_;
  Metrics metrics_;
  Router router_{[](std::string_view) -> Result<std::optional<Principal>> { return std::optional<Principal>(); }};
  std::unique_ptr<Server> server_;
  std::thread thread_;
  static constexpr int kMaxHeld = 16;
  std::counting_semaphore<> slow_entered_{0};
  std::counting_semaphore<> slow_release_{0};
  std::counting_semaphore<> later_arrived_{0};
  std::mutex later_mu_;
  std::vector<std::function<void()>> later_;  // the /later route's answers, waiting
};

TEST_F(ServerTest, ServesOverVerifiedTlsWithDecodedQueries) {
  auto r = Fetch("'" + Url("/hello?q=a%20b+c&x") + "'");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(boost::json::parse(r.body).at("q").as_string(), "a b c");
  auto wrong_name = Fetch("--resolve wrong.test:" + std::to_string(server_->port()) +
                          ":127.0.0.1 https://wrong.test:" + std::to_string(server_->port()) + "/hello");
  EXPECT_EQ(wrong_name.status, 0) << "curl must refuse a certificate without the name";
}

// Routes match the path as sent, split at its slashes before decoding: an encoded slash stays
// in its segment (a balancer's rule on /signed/… is not passed by /signed%2F…), and a
// parameter is decoded. The absolute form of a target is taken too (RFC 9112 3.2.2).
TEST_F(ServerTest, RoutesSplitThePathBeforeDecodingItAndTakeTheAbsoluteForm) {
  std::string out = Raw("GET /signed%2Fx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(out.starts_with("HTTP/1.1 404")) << out;
  out = Raw("GET /signed/a%2Fb%20c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(out.starts_with("HTTP/1.1 200")) << out;
  EXPECT_NE(out.find("a/b c"), std::string::npos) << out;
  out = Raw("GET https://x/hello?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(out.starts_with("HTTP/1.1 200")) << out;
  out = Raw("GET /hello HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n");
  EXPECT_TRUE(out.starts_with("HTTP/1.1 400")) << "which of two credentials counts is not guessed: " << out;
}

TEST_F(ServerTest, PlainHttpServesOnlyTheRoutesThatAllowIt) {
  auto signed_answer = Fetch(PlainUrl("/signed/crl"));
  EXPECT_EQ(signed_answer.status, 200) << signed_answer.body;
  EXPECT_EQ(boost::json::parse(signed_answer.body).at("name").as_string(), "crl");
  EXPECT_EQ(Fetch(Url("/signed/crl")).status, 200) << "and over HTTPS too";
  auto https_only = Fetch(PlainUrl("/hello"));
  EXPECT_EQ(https_only.status, 404) << https_only.body;
  EXPECT_NE(https_only.body.find("use HTTPS"), std::string::npos) << https_only.body;
  // Not even a method HTTPS would name in an Allow header.
  auto method = Fetch("-i -X PUT " + PlainUrl("/hello"));
  EXPECT_EQ(method.status, 404) << method.body;
  EXPECT_EQ(method.body.find("Allow:"), std::string::npos) << method.body;
  // Refused before its body is read, and answered without a reset.
  auto body = Fetch("-X POST --data-binary @/etc/services " + PlainUrl("/echo"));
  EXPECT_EQ(body.status, 404) << body.body;
  EXPECT_EQ(Fetch(PlainUrl("/nowhere")).status, 404);
  auto kept = Fetch("-v " + PlainUrl("/signed/a") + " " + PlainUrl("/signed/b"));
  EXPECT_NE(kept.body.find("Re-using existing connection"), std::string::npos) << kept.body;
  EXPECT_EQ(Fetch("https://127.0.0.1:" + std::to_string(server_->http_port()) + "/signed/crl").status, 0)
      << "no TLS on the plain port";
}

TEST_F(ServerTest, RefusesOldTlsVersions) {
  EXPECT_EQ(Fetch("--tlsv1.1 --tls-max 1.1 " + Url("/hello")).status, 0);
  EXPECT_EQ(Fetch("--tlsv1.2 --tls-max 1.2 " + Url("/hello")).status, 200);
  EXPECT_EQ(Fetch("--tlsv1.3 " + Url("/hello")).status, 200);
}

TEST_F(ServerTest, BodyLimitsPerRoute) {
  EXPECT_EQ(Fetch("-X POST --data-binary 0123456789 " + Url("/echo")).status, 200);
  auto big = Fetch("-X POST --data-binary @/etc/services " + Url("/echo"));
  EXPECT_EQ(big.status, 413) << big.body;
  EXPECT_NE(big.body.find("payload_too_large"), std::string::npos);
  auto chunked = Fetch("-X POST -H 'Transfer-Encoding: chunked' --data-binary @/etc/services " + Url("/echo"));
  EXPECT_EQ(chunked.status, 413) << chunked.body;
  // A body far larger than socket buffers is still arriving when the refusal is sent: the
  // client reads it instead of a reset.
  Write("large", std::string(size_t{16} * 1024 * 1024, 'x'));
  auto large = Fetch("-X POST --data-binary @" + dir_ + "/large " + Url("/echo"));
  EXPECT_EQ(large.status, 413) << large.body;
}

TEST_F(ServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  auto r = Fetch("-v " + Url("/hello") + " " + Url("/hello"));
  EXPECT_NE(r.body.find("Re-using existing connection"), std::string::npos) << r.body;
}

// A kept-alive connection waits server.idle_timeout for the next request's first bytes; from
// them on its headers have server.header_timeout, so a client sending a byte now and then
// cannot hold the connection for an idle timeout each time.
TEST_F(ServerTest, KeptAliveRequestsHeadersHaveTheHeaderTimeout) {
  ServerOptions o;
  o.listen = "127.0.0.1:0";
  o.http_listen = "127.0.0.1:0";
  o.tls_cert_file = dir_ + "/server.pem";
  o.tls_key_file = dir_ + "/server.key";
  o.threads = 1;
  o.header_timeout = std::chrono::seconds(1);
  o.idle_timeout = std::chrono::seconds(300);
  Server server(router_, metrics_, o);
  ASSERT_TRUE(server.Listen().ok());
  std::thread running([&] { server.Run(); });

  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), server.http_port()});
  const int fd = socket.native_handle();
  // A broken server would keep the connection for idle_timeout: the test gives up after 60 s.
  const timeval bound{60, 0};
  ASSERT_EQ(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof(bound)), 0);
  auto send_all = [fd](const std::string& bytes) {
    return ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
  };
  // Reads until the server closes (true), or fails on the bound (false); `until` ends it sooner.
  auto receive = [fd](std::string& out, std::string_view until = {}) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0) return false;
      out.append(buf, static_cast<size_t>(n));
      if (!until.empty() && out.find(until) != std::string::npos) return true;
    }
  };
  ASSERT_TRUE(send_all("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
  std::string first;
  ASSERT_TRUE(receive(first, "\r\n\r\n"));
  EXPECT_TRUE(first.starts_with("HTTP/1.1 404")) << first;  // /hello is HTTPS only: answered, kept alive
  // The first request's answer is in, so these bytes start a read of their own.
  ASSERT_TRUE(send_all("GET /hello HTTP/1.1\r\nHo"));
  std::string rest;
  EXPECT_TRUE(receive(rest)) << "the server closes the connection within header_timeout, not idle_timeout";
  EXPECT_EQ(rest.find("HTTP/1.1"), std::string::npos) << rest;

  server.Shutdown();
  running.join();
}

TEST_F(ServerTest, ClientCertificatesAreVerifiedPerRoute) {
  EXPECT_EQ(Fetch(Url("/whoami")).status, 401);
  auto r = Fetch("--cert " + dir_ + "/client.pem --key " + dir_ + "/client.key " + Url("/whoami"));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(boost::json::parse(r.body).at("subject").as_string(), "CN=agent-7");
  // A certificate from another CA (a device's, say) is no client certificate to the routes
  // that need one, and changes nothing for the others: the handshake does not fail.
  const std::string untrusted = "--cert " + dir_ + "/server.pem --key " + dir_ + "/server.key ";
  EXPECT_EQ(Fetch(untrusted + Url("/whoami")).status, 401);
  EXPECT_EQ(Fetch(untrusted + Url("/hello")).status, 200);
}

TEST_F(ServerTest, Tls12OffersForwardSecretAeadSuitesOnly) {
  for (const char* cbc : {"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES256-SHA", "AES128-SHA256"}) {
    EXPECT_EQ(Fetch(std::string("--tlsv1.2 --tls-max 1.2 --ciphers ") + cbc + " " + Url("/hello")).status, 0) << cbc;
  }
  EXPECT_EQ(Fetch("--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-GCM-SHA256 " + Url("/hello")).status, 200);
  EXPECT_EQ(Fetch("--tlsv1.2 --tls-max 1.2 --ciphers ECDHE-ECDSA-CHACHA20-POLY1305 " + Url("/hello")).status, 200);
}

TEST_F(ServerTest, RequestsAProxyCouldFrameDifferentlyAreRefusedAndClosed) {
  // RFC 9112 6.3: a Transfer-Encoding that does not end in chunked. The body, a request of
  // its own, must not be served as a second request on the connection.
  const std::string smuggled = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string out = Raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: " +
                        std::to_string(smuggled.size()) + "\r\n\r\n" + smuggled);
  EXPECT_EQ(Responses(out), 1) << out;
  EXPECT_TRUE(out.starts_with("HTTP/1.1 400")) << out;
  out = Raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n" + smuggled);
  EXPECT_EQ(Responses(out), 1) << out;
  EXPECT_TRUE(out.starts_with("HTTP/1.1 400")) << out;
  // A chunk size that is not hex: answered, not just dropped.
  out = Raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n");
  EXPECT_TRUE(out.starts_with("HTTP/1.1 400")) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos) << out;
  // A well-formed chunked body still works.
  out =
      Raw("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3\r\nabc\r\n0\r\n\r\n");
  EXPECT_TRUE(out.starts_with("HTTP/1.1 200")) << out;
  EXPECT_NE(out.find("{\"bytes\":3}"), std::string::npos) << out;
}

// A chunk's extensions and the trailer have no size of their own that the body limit counts:
// the read buffer's bound ends them (else a client could fill memory until body_timeout).
TEST_F(ServerTest, EndlessChunkExtensionsAndTrailersAreRefused) {
  const std::string endless(1024 * 1024, 'a');
  for (const std::string& body : {"1;" + endless, "0\r\nX-Trailer: " + endless}) {
    const std::string out = Raw("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body);
    EXPECT_TRUE(out.starts_with("HTTP/1.1 400")) << out.substr(0, 200);
  }
}

TEST_F(ServerTest, GetAndHeadTakeNoBody) {
  std::string out = Raw("GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nabcde");
  EXPECT_TRUE(out.starts_with("HTTP/1.1 413")) << out;
  out = Raw("GET /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\n");
  EXPECT_TRUE(out.starts_with("HTTP/1.1 413")) << out;
  EXPECT_TRUE(Raw("GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                  .starts_with("HTTP/1.1 200"));
}

TEST_F(ServerTest, Http11NeedsExactlyOneHost) {
  EXPECT_TRUE(Raw("GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 400"));
  EXPECT_TRUE(
      Raw("GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 400"));
  EXPECT_TRUE(Raw("GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").starts_with("HTTP/1.1 200"));
  EXPECT_TRUE(Raw("GET /hello HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200")) << "HTTP/1.0 has no Host rule";
}

TEST_F(ServerTest, MadeUpMethodsAreOneMetricsLabelAndRefusedFirst) {
  for (int i = 0; i < 5; ++i) {
    const std::string method = "FAKE" + std::string(static_cast<size_t>(i) * 2000, 'X');
    const std::string out = Raw(method + " /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(out.starts_with("HTTP/1.1 405")) << out.substr(0, 200);
    EXPECT_EQ(out.find("FAKE"), std::string::npos) << "the method is not echoed";
  }
  EXPECT_EQ(Raw("PROPFIND /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").substr(0, 12), "HTTP/1.1 405");
  const std::string text = metrics_.Render();
  EXPECT_EQ(text.find("FAKE"), std::string::npos) << text;
  EXPECT_EQ(text.find("PROPFIND"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(certfleet_http_requests_total{route="unmatched",method="other",status="405"} 6)"),
            std::string::npos)
      << text;
}

TEST_F(ServerTest, HeadersTooLargeAreAnsweredAfterTheClientHasSentThem) {
  // The client sends far more than the header limit in one go: the server reads on after
  // deciding, so that the client gets the 431 instead of a reset.
  std::string request = "GET /hello HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 200; ++i) request += "X-Filler-" + std::to_string(i) + ": " + std::string(1000, 'f') + "\r\n";
  request += "\r\n";
  const std::string out = Raw(request);
  EXPECT_TRUE(out.starts_with("HTTP/1.1 431")) << out.substr(0, 200);
}

TEST_F(ServerTest, ShutdownLetsInFlightRequestsFinish) {
  Curl slow;
  std::thread client([&] { slow = Fetch(Url("/slow")); });
  ASSERT_TRUE(Arrived(slow_entered_));
  server_->Shutdown();
  EXPECT_TRUE(RefusesNewConnections());
  slow_release_.release();
  thread_.join();
  client.join();
  EXPECT_EQ(slow.status, 200) << slow.body;
}

TEST_F(ServerTest, AsynchronousRoutesHoldNoThreadWhileTheyWait) {
  // Four waiting answers on a server of two threads, and other requests still go through.
  std::vector<Curl> later(4);
  std::vector<std::thread> clients;
  for (size_t i = 0; i < later.size(); ++i) clients.emplace_back([&, i] { later[i] = Fetch(Url("/later")); });
  ASSERT_TRUE(Arrived(later_arrived_, static_cast<int>(later.size())));
  EXPECT_EQ(Fetch(Url("/hello")).status, 200);
  AnswerLater();
  for (auto& c : clients) c.join();
  for (const auto& r : later) {
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_NE(r.body.find("\"later\":\"/later\""), std::string::npos) << r.body;
  }
}

TEST_F(ServerTest, ShutdownWaitsForAsynchronousAnswers) {
  Curl later;
  std::thread client([&] { later = Fetch(Url("/later")); });
  ASSERT_TRUE(Arrived(later_arrived_));
  server_->Shutdown();
  EXPECT_TRUE(RefusesNewConnections());
  AnswerLater();
  thread_.join();
  client.join();
  EXPECT_EQ(later.status, 200) << later.body;
}

TEST_F(ServerTest, MetricsCountRequestsByRouteAndStatus) {
  Fetch(Url("/hello"));
  Fetch(Url("/nowhere"));
  const std::string text = metrics_.Render();
  EXPECT_NE(text.find(R"(certfleet_http_requests_total{route="/hello",method="GET",status="200"} 1)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find(R"(certfleet_http_requests_total{route="unmatched",method="GET",status="404"} 1)"),
            std::string::npos);
  EXPECT_NE(text.find(R"(certfleet_http_request_duration_seconds_count{route="/hello"} 1)"), std::string::npos);
}

}  // namespace
}  // namespace certfleet::http
