#include "core/text.h"

#include <gtest/gtest.h>

namespace certfleet {
namespace {

TEST(Text, NamesFollowTheRegistryRule) {
  EXPECT_TRUE(IsValidName("thing-01.a_b:c"));
  EXPECT_TRUE(IsValidName(std::string(kMaxNameBytes, 'a')));
  EXPECT_FALSE(IsValidName(std::string(kMaxNameBytes + 1, 'a')));
  EXPECT_FALSE(IsValidName(""));
  EXPECT_FALSE(IsValidName("../../etc/passwd"));
  EXPECT_FALSE(IsValidName(".hidden"));
  EXPECT_FALSE(IsValidName("bad cn/with slash"));
  EXPECT_FALSE(IsValidName(std::string("a\0\x1b[31mb", 8)));
  EXPECT_FALSE(IsValidName("caf\xc3\xa9"));
  EXPECT_FALSE(IsValidName("abc", 2));
}

TEST(Text, ControlCharactersAreFoundAndRefused) {
  EXPECT_FALSE(HasControlCharacter("plain text, with: punctuation & caf\xc3\xa9"));
  EXPECT_TRUE(HasControlCharacter("\x1b[2J"));
  EXPECT_TRUE(HasControlCharacter("del\x7f"));
  EXPECT_TRUE(HasControlCharacter(std::string("nul\0", 4)));
  EXPECT_TRUE(CheckPrintable("name", "ops team").ok());
  auto refused = CheckPrintable("name", "x\x1b[2J");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  EXPECT_NE(refused.error().message.find("name"), std::string::npos);
  EXPECT_FALSE(CheckPrintable("csr", "-----BEGIN-----\r\nAA\tA\n").ok());
  EXPECT_TRUE(CheckPrintable("csr", "-----BEGIN-----\r\nAA\tA\n", true).ok());
  EXPECT_FALSE(CheckPrintable("csr", "a\x1b", true).ok());
  // C1 controls in UTF-8: CSI (U+009B) and NEL (U+0085); U+00A0 and U+00E9 are printable.
  EXPECT_TRUE(
      HasControlCharacter("Acme\xc2\x9b"
                          "31mX"));
  EXPECT_FALSE(CheckPrintable("reload_command",
                              "a\xc2\x85"
                              "b",
                              true)
                   .ok());
  EXPECT_FALSE(
      HasControlCharacter("no\xc2\xa0"
                          "break caf\xc3\xa9"));
  EXPECT_EQ(Escaped("a\xc2\x9b"
                    "b"),
            "a\\xc2\\x9bb");
}

TEST(Text, InvalidUtf8IsReplacedSoEchoedTextStaysValid) {
  EXPECT_TRUE(IsValidUtf8("ascii and caf\xc3\xa9 and \xf0\x9f\x94\x92"));
  EXPECT_FALSE(IsValidUtf8("\xff\xfe"));
  EXPECT_FALSE(IsValidUtf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(IsValidUtf8("\xed\xa0\x80"));      // a surrogate
  EXPECT_FALSE(IsValidUtf8("\xf4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(IsValidUtf8("\xe2\x82"));          // cut short
  EXPECT_EQ(ToValidUtf8("id-\xff\xfe-x"), "id-\xef\xbf\xbd\xef\xbf\xbd-x");
  EXPECT_EQ(ToValidUtf8("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_TRUE(IsValidUtf8(ToValidUtf8("\xe2\x82\xc3")));
}

TEST(Text, EscapedShowsWhatWasSentHarmlessly) {
  EXPECT_EQ(Escaped(std::string("a\0\x1b[31mb", 8)), "a\\x00\\x1b[31mb");
  EXPECT_EQ(Escaped("\xff\xfe"
                    "caf\xc3\xa9"),
            "\\xff\\xfecaf\xc3\xa9");
  EXPECT_EQ(Escaped("back\\slash"), "back\\x5cslash");
  EXPECT_EQ(Escaped("../../x"), "../../x");
}

TEST(ParseDuration, ANumberAndAUnitUpToTheLimit) {
  using std::chrono::seconds;
  const seconds max(30 * 86400);
  EXPECT_EQ(*ParseDuration("ttl", "90s", max), seconds(90));
  EXPECT_EQ(*ParseDuration("ttl", "15m", max), seconds(900));
  EXPECT_EQ(*ParseDuration("ttl", "72h", max), seconds(72 * 3600));
  EXPECT_EQ(*ParseDuration("ttl", "30d", max), max);
  for (const char* bad : {"", "h", "0h", "31d", "3 days", "-1h", "1.5h", "72H", "1w", "9999999999s"}) {
    auto r = ParseDuration("ttl", bad, max);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.error().message.find("ttl must be"), std::string::npos) << r.error().message;
  }
}

}  // namespace
}  // namespace certfleet
