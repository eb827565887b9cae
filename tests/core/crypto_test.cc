#include "core/crypto.h"

#include <gtest/gtest.h>

#include "core/clock.h"

namespace certfleet {
namespace {

TEST(Crypto, Sha256KnownAnswer) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Crypto, Base64UrlWithoutPadding) {
  EXPECT_EQ(Base64UrlEncode("f"), "Zg");
  EXPECT_EQ(Base64UrlEncode("fo"), "Zm8");
  EXPECT_EQ(Base64UrlEncode("foo"), "Zm9v");
  EXPECT_EQ(Base64UrlEncode("\xfb\xff"), "-_8");
}

TEST(Crypto, RandomTokensDiffer) {
  EXPECT_EQ(RandomBytes(32).size(), 32u);
  EXPECT_NE(RandomToken(16), RandomToken(16));
}

TEST(Crypto, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
}

TEST(Crypto, SealedSecretsOpenOnlyWithTheirKeyAndPurpose) {
  const std::string master(40, 'm');
  const std::string sealed = SealSecret(master, "zip-password:Warehouse_US", "correct horse battery staple");
  EXPECT_TRUE(sealed.starts_with("v1."));
  EXPECT_EQ(sealed.find("horse"), std::string::npos);
  EXPECT_NE(SealSecret(master, "zip-password:Warehouse_US", "correct horse battery staple"), sealed) << "fresh nonce";
  EXPECT_EQ(OpenSecret(master, "zip-password:Warehouse_US", sealed), "correct horse battery staple");
  EXPECT_EQ(OpenSecret(std::string(40, 'x'), "zip-password:Warehouse_US", sealed), std::nullopt) << "other key";
  EXPECT_EQ(OpenSecret(master, "zip-password:Warehouse_UK", sealed), std::nullopt) << "other purpose";
  std::string changed = sealed;
  changed[10] = changed[10] == 'A' ? 'B' : 'A';
  EXPECT_EQ(OpenSecret(master, "zip-password:Warehouse_US", changed), std::nullopt) << "changed";
  EXPECT_EQ(OpenSecret(master, "zip-password:Warehouse_US", "plain"), std::nullopt);
  EXPECT_EQ(OpenSecret(master, "p", SealSecret(master, "p", "")), "");
}

TEST(Clock, Rfc3339) {
  EXPECT_EQ(FormatRfc3339(0), "1970-01-01T00:00:00.000Z");
  EXPECT_EQ(FormatRfc3339(1'795'456'605'123), "2026-11-23T17:56:45.123Z");
}

}  // namespace
}  // namespace certfleet
