#include "pki/tls_identity.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/clock.h"

namespace certfleet::pki {
namespace {

std::string Shell(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  char buf[512];
  while (p && fgets(buf, sizeof(buf), p)) out += buf;
  *status = p ? pclose(p) : -1;
  return out;
}

TEST(TlsIdentity, OpenSslAcceptsTheServerCertificateForItsNames) {
  auto id = MakeTlsIdentity({"localhost", "127.0.0.1", "api.example.test"}, SystemClock::Instance().NowMillis(), 30);
  ASSERT_TRUE(id.ok()) << id.error().message;
  auto dir = std::filesystem::temp_directory_path() / "cf-tls-identity-test";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "ca.pem") << id->ca_pem;
  std::ofstream(dir / "server.pem") << id->server_chain_pem;
  std::ofstream(dir / "server.key") << id->server_key_pem;
  const std::string d = dir.string();
  int status = 0;
  for (const char* name : {"-verify_hostname localhost", "-verify_ip 127.0.0.1", "-verify_hostname api.example.test"}) {
    std::string out = Shell(
        "openssl verify -purpose sslserver " + std::string(name) + " -CAfile " + d + "/ca.pem " + d + "/server.pem",
        &status);
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find(": OK"), std::string::npos) << out;
  }
  std::string wrong =
      Shell("openssl verify -verify_hostname other.test -CAfile " + d + "/ca.pem " + d + "/server.pem", &status);
  EXPECT_NE(status, 0) << wrong;
  std::string match =
      Shell("openssl x509 -noout -pubkey -in " + d + "/server.pem | openssl sha256; openssl pkey -pubout -in " + d +
                "/server.key | openssl sha256",
            &status);
  auto nl = match.find('\n');
  EXPECT_EQ(match.substr(0, nl), match.substr(nl + 1, nl)) << "key does not match certificate";
}

TEST(TlsIdentity, RefusesNamesThatAreNeitherDnsNorIp) {
  EXPECT_FALSE(MakeTlsIdentity({"bad name,DNS:evil"}, 0, 30).ok());
  EXPECT_FALSE(MakeTlsIdentity({}, 0, 30).ok());
}

}  // namespace
}  // namespace certfleet::pki
