// Messages as mail clients read them (Python's email package in the end-to-end tests; here
// the structure and the size bound), and the .eml outbox.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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

TEST(OpenMailer, RefusesUnknownSchemesAndOptions) {
  ManualClock clock(0);
  EXPECT_FALSE(OpenMailer("mailto:x@y", clock).ok());
  EXPECT_FALSE(OpenMailer("smtp://h:25?tls=maybe", clock).ok());
  EXPECT_TRUE(OpenMailer("smtp://user:pass@h:587?tls=required", clock).ok());
}

}  // namespace
}  // namespace certfleet::mail
