// Messages as mail clients read them (Python's email package in the end-to-end tests; here
// the structure and the size bound), and the .eml outbox.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/crypto.h"
#include "mail/mailer.h"
#include "testing/db.h"

namespace certfleet::mail {
namespace {

Message Sample(size_t attachment_bytes) {
  Message m;
  m.from = "no-reply@certs.example";
  m.to = {"warehouse-us@example.com", "ops@example.com"};
  m.subject = "Warehouse_US: Gateway Certificates and Server/Endpoints Files";
  m.text = "Warehouse: Warehouse_US\nGateways: 2\n";
  m.attachments.push_back({"Warehouse_US_20251030_084628.zip", "application/zip", RandomBytes(attachment_bytes)});
  return m;
}

TEST(Render, SizeStaysWithinTheBoundAndPartsDecode) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{56}, size_t{57}, size_t{58}, size_t{1'000'003}}) {
    const Message m = Sample(n);
    auto text = Render(m, "<id@x>", 1'761'813'988'000);
    ASSERT_TRUE(text.ok()) << text.error().message;
    Message empty = m;
    empty.attachments[0].data.clear();
    EXPECT_LE(text->size(), RenderedSizeWithoutAttachments(empty) + Base64LinesSize(n)) << n;
    EXPECT_NE(text->find("Date: Thu, 30 Oct 2025 08:46:28 +0000\r\n"), std::string::npos);
    EXPECT_NE(text->find("filename=\"Warehouse_US_20251030_084628.zip\""), std::string::npos);
    // Every line is within RFC 5322's 998 characters and ends in CRLF.
    size_t start = 0;
    while (start < text->size()) {
      const size_t end = text->find("\r\n", start);
      ASSERT_NE(end, std::string::npos);
      EXPECT_LE(end - start, 998u);
      start = end + 2;
    }
  }
}

TEST(Render, RefusesHeaderInjectionAndBadAddresses) {
  Message m = Sample(10);
  m.subject = "hi\r\nBcc: victim@example.com";
  EXPECT_EQ(Render(m, "<id@x>", 0).error().code, ErrorCode::kInvalidArgument);
  m = Sample(10);
  m.to = {"a@b.c>, evil@x.y"};
  EXPECT_FALSE(Render(m, "<id@x>", 0).ok());
  m.to = {};
  EXPECT_FALSE(Render(m, "<id@x>", 0).ok());
  m = Sample(10);
  m.attachments[0].filename = "a\"b.zip";
  EXPECT_FALSE(Render(m, "<id@x>", 0).ok());
  EXPECT_TRUE(IsMailAddress("gatewaycerts@milvian.group"));
  EXPECT_FALSE(IsMailAddress("no at sign"));
}

TEST(EmlMailer, WritesOneWholeFilePerMessage) {
  const std::string dir = testing::TempDir() + "/outbox";
  ManualClock clock(1'761'813'988'000);
  auto mailer = OpenMailer("file://" + dir, clock);
  ASSERT_TRUE(mailer.ok());
  auto sent = (*mailer)->Send(Sample(1000));
  ASSERT_TRUE(sent.ok()) << sent.error().message;
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].extension(), ".eml");
  EXPECT_EQ(std::filesystem::file_size(files[0]), sent->bytes);
  std::ifstream in(files[0]);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("Message-ID: " + sent->message_id), std::string::npos);
}

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

size_t CountFiles(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (auto it = std::filesystem::directory_iterator(dir, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec)) {
    ++n;
  }
  return n;
}

// A real SMTP server (aiosmtpd) that requires STARTTLS and AUTH, with its own certificate.
class SmtpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::TempDir();
    port_ = FreePort();
    cert_ = dir_ + "/server.pem";
    const char* src = std::getenv("CERTFLEET_SOURCE_DIR");
    ASSERT_NE(src, nullptr) << "run through ctest";
    const std::string script = std::string(src) + "/tests/integration/smtp_server.py";
    const std::string port = std::to_string(port_), maildir = dir_ + "/maildir";
    std::vector<std::string> args = {"/usr/bin/python3", script, "--port", port,    "--maildir",  maildir,
                                     "--cert-out",       cert_,  "--user", "relay", "--password", "s3cret pass"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ASSERT_EQ(posix_spawn(&pid_, argv[0], nullptr, nullptr, argv.data(), environ), 0);
    for (int i = 0; i < 200 && !std::filesystem::exists(cert_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(std::filesystem::exists(cert_)) << "the SMTP server did not start";
    maildir_new_ = maildir + "/new";
  }
  void TearDown() override {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }
  std::string Url(const std::string& userinfo, const std::string& query) const {
    return "smtp://" + userinfo + "127.0.0.1:" + std::to_string(port_) + query;
  }

  std::string dir_, cert_, maildir_new_;
  int port_ = 0;
  pid_t pid_ = -1;
  ManualClock clock_{1'761'813'988'000};
};

TEST_F(SmtpServerTest, SendsOverStartTlsWithAuth) {
  auto mailer = OpenMailer(Url("relay:s3cret%20pass@", "?tls=required&ca=" + cert_), clock_);
  ASSERT_TRUE(mailer.ok());
  auto sent = (*mailer)->Send(Sample(5000));
  ASSERT_TRUE(sent.ok()) << sent.error().message;
  EXPECT_EQ(CountFiles(maildir_new_), 1u);
}

TEST_F(SmtpServerTest, RefusedCredentialsAndUntrustedCertificatesFail) {
  auto wrong = OpenMailer(Url("relay:wrong@", "?tls=required&ca=" + cert_), clock_);
  auto r = (*wrong)->Send(Sample(10));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kFailedPrecondition) << r.error().message;  // 535: permanent
  auto untrusted = OpenMailer(Url("relay:s3cret%20pass@", "?tls=required"), clock_);
  EXPECT_FALSE((*untrusted)->Send(Sample(10)).ok()) << "a certificate nobody vouches for is refused";
  auto no_auth = OpenMailer(Url("", "?tls=required&ca=" + cert_), clock_);
  EXPECT_FALSE((*no_auth)->Send(Sample(10)).ok()) << "the server requires AUTH";
  EXPECT_EQ(CountFiles(maildir_new_), 0u);
}

TEST(OpenMailer, RefusesUnknownSchemesAndOptions) {
  ManualClock clock(0);
  EXPECT_FALSE(OpenMailer("mailto:x@y", clock).ok());
  EXPECT_FALSE(OpenMailer("smtp://h:25?tls=maybe", clock).ok());
  EXPECT_TRUE(OpenMailer("smtp://user:pass@h:587?tls=required", clock).ok());
}

}  // namespace
}  // namespace certfleet::mail
