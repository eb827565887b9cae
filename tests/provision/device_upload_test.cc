// Device key uploads as operators send them: JSON arrays and CSV files with quoted PEMs.
#include "provision/device_upload.h"

#include <gtest/gtest.h>

#include <vector>

namespace certfleet::provision {
namespace {

const std::string kPem = "-----BEGIN PUBLIC KEY-----\nMFkw\nEwYH\n-----END PUBLIC KEY-----\n";

// Every row of the upload; fails the test if the upload as a whole is refused.
std::vector<UploadRow> Rows(std::string_view body, UploadFormat format) {
  std::vector<UploadRow> rows;
  Result<void> r = ForEachUploadRow(body, format, [&](const UploadRow& row) -> Result<void> {
    rows.push_back(row);
    return Ok();
  });
  EXPECT_TRUE(r.ok()) << r.error().message;
  return rows;
}

void ExpectRefused(std::string_view body, UploadFormat format, std::string_view words) {
  Result<void> r = ForEachUploadRow(body, format, [](const UploadRow&) { return Ok(); });
  ASSERT_FALSE(r.ok()) << "accepted; expected: " << words;
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
}

TEST(DeviceId, LettersDigitsAndFourMarksUpToSixtyFour) {
  for (const std::string& id : std::vector<std::string>{"dev-1", "A1:b2.c_3", "0", std::string(64, 'x')}) {
    EXPECT_TRUE(IsValidDeviceId(id)) << id;
  }
  for (const std::string& id : std::vector<std::string>{"", "-dev", ".dev", "a/b", "a b", "a'b", "a;b", "a%2e",
                                                        "d\xc3\xa4v", std::string(65, 'x')}) {
    EXPECT_FALSE(IsValidDeviceId(id)) << id;
  }
}

TEST(DeviceUpload, JsonRowsInOrderWithTheirProblems) {
  const std::string body = R"([{"device_id":"d1","public_key_pem":"P1","batch":"b"},)"
                           R"({"device_id":"d2","public_key_pem":"P2"},)"
                           R"("d3",)"
                           R"({"device_id":7,"public_key_pem":"P4"},)"
                           R"({"public_key_pem":"P5","batch":null}])";
  std::vector<UploadRow> rows = Rows(body, UploadFormat::kJson);
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0].number, 1u);
  EXPECT_EQ(rows[0].device_id, "d1");
  EXPECT_EQ(rows[0].public_key_pem, "P1");
  EXPECT_EQ(rows[0].batch, "b");
  EXPECT_EQ(rows[0].problem, "");
  EXPECT_EQ(rows[1].batch, "");
  EXPECT_EQ(rows[2].problem, "not an object");
  EXPECT_EQ(rows[3].problem, "device_id is not a string");
  EXPECT_EQ(rows[4].number, 5u);
  EXPECT_EQ(rows[4].device_id, "") << "missing: left to the caller to refuse";
  EXPECT_EQ(rows[4].problem, "");

  ExpectRefused("{\"device_id\":\"d1\"}", UploadFormat::kJson, "JSON array");
  ExpectRefused("[{\"device_id\":", UploadFormat::kJson, "malformed JSON");
}

TEST(DeviceUpload, CsvWithHeaderQuotedPemsAndCrLf) {
  std::string quoted_pem = "\"" + kPem + "\"";
  const std::string body =
      "device_id,public_key_pem,batch\r\n"
      "d1," +
      quoted_pem +
      ",factory-7\r\n"
      "\r\n"
      "d2," +
      quoted_pem +
      "\n"
      "\"d,3\",\"say \"\"hi\"\"\"\n"
      "d4\n"
      "d5,p,b,extra";
  std::vector<UploadRow> rows = Rows(body, UploadFormat::kCsv);
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0].number, 1u) << "the header is not a row";
  EXPECT_EQ(rows[0].device_id, "d1");
  EXPECT_EQ(rows[0].public_key_pem, kPem) << "line breaks inside the quotes kept";
  EXPECT_EQ(rows[0].batch, "factory-7");
  EXPECT_EQ(rows[1].device_id, "d2");
  EXPECT_EQ(rows[1].batch, "");
  EXPECT_EQ(rows[2].device_id, "d,3");
  EXPECT_EQ(rows[2].public_key_pem, "say \"hi\"");
  EXPECT_EQ(rows[3].problem, "expected device_id,public_key_pem[,batch]; found 1 fields");
  EXPECT_EQ(rows[4].problem, "expected device_id,public_key_pem[,batch]; found 4 fields");

  EXPECT_EQ(Rows("d1,p1", UploadFormat::kCsv).size(), 1u) << "no header, no final line break";
  ExpectRefused("d1,\"never closed\n", UploadFormat::kCsv, "never closed");
  ExpectRefused("d1,\"p\"x\n", UploadFormat::kCsv, "more than a comma");
}

TEST(DeviceUpload, StopsAtTheFirstErrorOfTheCaller) {
  int seen = 0;
  Result<void> r = ForEachUploadRow("a,1\nb,2\nc,3\n", UploadFormat::kCsv, [&](const UploadRow&) -> Result<void> {
    if (++seen == 2) return MakeError(ErrorCode::kUnavailable, "store down");
    return Ok();
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "store down");
  EXPECT_EQ(seen, 2);
}

}  // namespace
}  // namespace certfleet::provision
