// ACME profiles as an operator writes them and as orders meet them: names under the allowed
// suffixes only (not names that merely end in the same letters), addresses inside the CIDR
// ranges, key types, and the names and challenge types validation works with.
#include "acme/profiles.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "acme/local_nonces.h"
#include "acme/resolver.h"
#include "acme/validation.h"

namespace certfleet::acme {
namespace {

namespace json = boost::json;

Profile Parse(std::string_view text, std::string_view name = "partners") {
  auto p = ProfileFromJson(name, json::parse(text).as_object());
  EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().message);
  return p.ok() ? *p : Profile{};
}

TEST(ProfileTest, ReadsEveryFieldAndDefaults) {
  const Profile p = Parse(R"({"ca": "iot.example.com", "dns_suffixes": ["Partner.Test"], "ip_ranges": ["10.0.0.0/8"],
                              "key_types": ["ec-p256"], "validity_days": 30, "eab_required": true})");
  EXPECT_EQ(p.ca, "iot.example.com");
  EXPECT_EQ(p.dns_suffixes, std::vector<std::string>{"partner.test"});
  EXPECT_EQ(p.validity_days, 30);
  EXPECT_TRUE(p.eab_required);
  const Profile plain = Parse(R"({"ca": "iot.example.com"})");
  EXPECT_EQ(plain.validity_days, 90);
  EXPECT_FALSE(plain.eab_required);
  EXPECT_TRUE(plain.dns_suffixes.empty());
}

TEST(ProfileTest, RefusesWhatIsWrong) {
  for (const char* body : {R"({})", R"({"ca": ""})", R"({"ca": "x", "dns_suffixes": ["bad_name"]})",
                           R"({"ca": "x", "ip_ranges": ["10.0.0.0/33"]})", R"({"ca": "x", "ip_ranges": ["nope"]})",
                           R"({"ca": "x", "key_types": ["dsa-1024"]})", R"({"ca": "x", "validity_days": 0})",
                           R"({"ca": "x", "validity_days": 900})", R"({"ca": "x", "eab_required": "yes"})",
                           R"({"ca": "x", "dns_suffixes": "partner.test"})"}) {
    auto p = ProfileFromJson("partners", json::parse(body).as_object());
    EXPECT_FALSE(p.ok()) << body;
  }
  for (const char* name : {"", "Partners", "a/b", "with space"}) {
    EXPECT_FALSE(ProfileFromJson(name, json::parse(R"({"ca": "x"})").as_object()).ok()) << name;
  }
}

TEST(ProfileTest, NamesUnderASuffixOnly) {
  const Profile p = Parse(R"({"ca": "x", "dns_suffixes": ["partner.test"]})");
  EXPECT_TRUE(CheckIdentifier(p, "dns", "partner.test").ok());
  EXPECT_TRUE(CheckIdentifier(p, "dns", "a.b.partner.test").ok());
  auto refused = CheckIdentifier(p, "dns", "evilpartner.test");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().reason, "rejectedIdentifier");
  EXPECT_FALSE(CheckIdentifier(p, "dns", "partner.test.evil").ok());
  EXPECT_TRUE(CheckIdentifier(Parse(R"({"ca": "x"})"), "dns", "anything.example").ok());
  EXPECT_TRUE(CheckIdentifier(Parse(R"({"ca": "x"})"), "ip", "203.0.113.9").ok());
  // Limited to names, the profile issues for no address.
  auto address = CheckIdentifier(p, "ip", "203.0.113.9");
  ASSERT_FALSE(address.ok());
  EXPECT_EQ(address.error().reason, "rejectedIdentifier");
}

TEST(ProfileTest, AddressesInsideTheRanges) {
  const Profile p = Parse(R"({"ca": "x", "ip_ranges": ["10.20.0.0/16", "2001:db8::/32", "192.0.2.7"]})");
  EXPECT_TRUE(CheckIdentifier(p, "ip", "10.20.255.1").ok());
  EXPECT_FALSE(CheckIdentifier(p, "ip", "10.21.0.1").ok());
  EXPECT_TRUE(CheckIdentifier(p, "ip", "2001:db8:1::5").ok());
  EXPECT_FALSE(CheckIdentifier(p, "ip", "2001:db9::5").ok());
  EXPECT_TRUE(CheckIdentifier(p, "ip", "192.0.2.7").ok());
  EXPECT_FALSE(CheckIdentifier(p, "ip", "192.0.2.8").ok());
  // Limited to addresses, the profile issues for no name.
  EXPECT_FALSE(CheckIdentifier(p, "dns", "www.example.com").ok());
}

TEST(ProfileTest, KeyTypes) {
  const Profile p = Parse(R"({"ca": "x", "key_types": ["ec-p256", "ec-p384"]})");
  EXPECT_TRUE(CheckKeyType(p, "ec-p384").ok());
  auto refused = CheckKeyType(p, "rsa-2048");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().reason, "badCSR");
  EXPECT_TRUE(CheckKeyType(Parse(R"({"ca": "x"})"), "rsa-4096").ok());
}

TEST(ValidationTest, ReverseNamesForTlsAlpn) {
  EXPECT_EQ(ReverseName("192.0.2.10"), "10.2.0.192.in-addr.arpa");
  EXPECT_EQ(ReverseName("2001:db8::1"), "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
}

TEST(ValidationTest, ChallengeTypesPerIdentifier) {
  EXPECT_EQ(ChallengeTypesFor({"dns", "example.com"}, true), std::vector<std::string_view>{"dns-01"});
  EXPECT_EQ(ChallengeTypesFor({"ip", "192.0.2.1"}, false), (std::vector<std::string_view>{"http-01", "tls-alpn-01"}));
  EXPECT_EQ(ChallengeTypesFor({"dns", "example.com"}, false).size(), 3u);
}

TEST(ValidationTest, ResolverAddress) {
  EXPECT_TRUE(Resolver::Make("").ok());
  EXPECT_TRUE(Resolver::Make("127.0.0.1:5353").ok());
  EXPECT_TRUE(Resolver::Make("10.0.0.53").ok());
  EXPECT_FALSE(Resolver::Make("dns.example.com:53").ok());
  EXPECT_FALSE(Resolver::Make("127.0.0.1:0").ok());
  EXPECT_FALSE(Resolver::Make("127.0.0.1:99999").ok());
}

TEST(LocalNoncesTest, EachOnceUnexpiredAndOnlyFromThisProcess) {
  LocalNonces nonces;
  const std::string a = nonces.Make(2000);
  const std::string b = nonces.Make(2000);
  EXPECT_NE(a, b);
  EXPECT_TRUE(nonces.Use(b, 1000));
  EXPECT_FALSE(nonces.Use(b, 1000)) << "a nonce is taken once";
  EXPECT_FALSE(nonces.Use(a, 2000)) << "an expired nonce is refused";
  EXPECT_FALSE(nonces.Use(LocalNonces().Make(2000), 1000)) << "another process's nonce is refused";
  std::string forged = nonces.Make(2000);
  forged[3] = forged[3] == 'A' ? 'B' : 'A';
  EXPECT_FALSE(nonces.Use(forged, 1000));
  EXPECT_FALSE(nonces.Use("not base64url!", 1000));
}

}  // namespace
}  // namespace certfleet::acme
