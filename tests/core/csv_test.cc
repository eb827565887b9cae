#include "core/csv.h"

#include <gtest/gtest.h>

namespace certfleet {
namespace {

std::vector<std::vector<std::string>> All(std::string_view text) {
  CsvReader reader = CsvReader::OfText(text);
  std::vector<std::vector<std::string>> out;
  std::vector<std::string> fields;
  for (;;) {
    auto more = reader.Next(fields);
    EXPECT_TRUE(more.ok()) << more.error().message;
    if (!more.ok() || !*more) return out;
    out.push_back(fields);
  }
}

TEST(Csv, QuotedFieldsHoldLineBreaksCommasAndQuotesAcrossCrlfRecords) {
  // As Espressif writes them: records end in CRLF, the PEM inside the quotes in LF.
  const std::string text =
      "MAC,cn,cert\r\n4BA2,\"a,b\",\"-----BEGIN-----\nAAA\n-----END-----\n\"\r\n\r\n\"say \"\"hi\"\"\",,x\r\n";
  auto rows = All(text);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"MAC", "cn", "cert"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"4BA2", "a,b", "-----BEGIN-----\nAAA\n-----END-----\n"}));
  EXPECT_EQ(rows[2], (std::vector<std::string>{"say \"hi\"", "", "x"}));
}

TEST(Csv, AQuoteNeverClosedIsAnErrorNotTheRestOfTheFile) {
  CsvReader reader = CsvReader::OfText("a,\"b\nc\nd\n");
  std::vector<std::string> fields;
  auto r = reader.Next(fields);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("never closed"), std::string::npos);
  // One quote, then lines without any: the reader stops after kMaxRecordBytes.
  std::string huge = "\"";
  for (int i = 0; i < 20; ++i) huge += std::string(CsvReader::kMaxRecordBytes / 10, 'x') + "\n";
  huge += "\",end\n";
  CsvReader bounded = CsvReader::OfText(huge);
  auto cut = bounded.Next(fields);
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().message.find("never closed"), std::string::npos);
  EXPECT_FALSE(CsvReader::OfText("\"a\"b,c\n").Next(fields).ok()) << "text after a closing quote";
}

}  // namespace
}  // namespace certfleet
