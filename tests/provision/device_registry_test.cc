// Registering device keys through the registry: what each row does, and the audit log.
#include "provision/device_registry.h"

#include <gtest/gtest.h>

#include <array>
#include <vector>

#include "core/crypto.h"
#include "pki/csr.h"
#include "pki/key.h"
#include "store/audit_repo.h"
#include "testing/db.h"

namespace certfleet::provision {
namespace {

// A fresh key's PEM; the same index gives the same key within a test run.
std::string KeyPem(int i) {
  static std::vector<std::string> keys;
  while (static_cast<int>(keys.size()) <= i) {
    auto key = pki::GenerateKey(pki::KeyType::kEcP256);
    keys.push_back(*pki::PublicKeyToPem(key->get()));
  }
  return keys[i];
}

std::string Csv(const std::vector<std::array<std::string, 3>>& rows) {
  std::string out = "device_id,public_key_pem,batch\n";
  for (const auto& [id, pem, batch] : rows) out += id + ",\"" + pem + "\"," + batch + "\n";
  return out;
}

class DeviceRegistryTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    registry_ = std::make_unique<DeviceRegistry>(*store_, clock_);
  }
  RegisterReport Register(const std::string& body, UploadFormat format = UploadFormat::kCsv) {
    auto r = registry_->RegisterKeys(body, format, "token:ops");
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : RegisterReport{};
  }
  std::vector<store::AuditEntry> Audit() {
    return store::Read(*store_, [](store::Tx& tx) { return store::ListAudit(tx, {}); })->entries;
  }
  ManualClock clock_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<DeviceRegistry> registry_;
};

TEST_P(DeviceRegistryTest, EachRowIsRegisteredOrRefusedWithItsReason) {
  pki::PkeyPtr rsa1024(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024}));
  const std::string body = Csv({{"dev-1", KeyPem(1), "factory-7"},
                                {"dev/2", KeyPem(2), ""},
                                {"dev-3", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", ""},
                                {"dev-4", *pki::PublicKeyToPem(rsa1024.get()), ""},
                                {"dev-1", KeyPem(5), ""},
                                {"dev-6", KeyPem(6), std::string(kMaxBatchBytes + 1, 'b')},
                                {"dev-7", KeyPem(7), ""}}) +
                           "dev-8\n";
  RegisterReport report = Register(body);
  EXPECT_EQ(report.inserted, 2);
  EXPECT_EQ(report.rejected, 6);
  ASSERT_EQ(report.rejections.size(), 6u);
  const std::vector<std::pair<size_t, std::string>> expected = {
      {2, "device_id must be"},  {3, "BEGIN PUBLIC KEY"},
      {4, "RSA keys must have"}, {5, "listed twice in this upload (row 1 first)"},
      {6, "batch must be"},      {8, "expected device_id"}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(report.rejections[i].row, expected[i].first);
    EXPECT_NE(report.rejections[i].reason.find(expected[i].second), std::string::npos) << report.rejections[i].reason;
  }
  auto dev1 = registry_->Get("dev-1");
  ASSERT_TRUE(dev1.ok());
  EXPECT_EQ(dev1->batch, "factory-7");
  EXPECT_EQ(dev1->status, store::kDeviceRegistered);
  EXPECT_EQ(dev1->key_sha256, Sha256Hex(*pki::PublicKeyPemToDer(KeyPem(1))));
  EXPECT_EQ(registry_->Get("dev-4").error().code, ErrorCode::kNotFound) << "nothing of a refused row is stored";
}

TEST_P(DeviceRegistryTest, UploadingAgainChangesNothingAndANewKeyReplaces) {
  const std::string json = R"([{"device_id":"a","public_key_pem":")" + KeyPem(1) + R"("},)" +
                           R"({"device_id":"b","public_key_pem":")" + KeyPem(2) + R"("}])";
  std::string escaped;  // the PEM's line breaks as JSON escapes
  for (char c : json) escaped += c == '\n' ? std::string("\\n") : std::string(1, c);
  EXPECT_EQ(Register(escaped, UploadFormat::kJson).inserted, 2);
  RegisterReport again = Register(escaped, UploadFormat::kJson);
  EXPECT_EQ(again.unchanged, 2);
  EXPECT_EQ(again.inserted + again.replaced + again.rejected, 0);
  RegisterReport replaced = Register(Csv({{"a", KeyPem(3), ""}}));
  EXPECT_EQ(replaced.replaced, 1);
  EXPECT_EQ(registry_->Get("a")->key_sha256, Sha256Hex(*pki::PublicKeyPemToDer(KeyPem(3))));

  std::vector<store::AuditEntry> audit = Audit();
  ASSERT_EQ(audit.size(), 3u) << "one entry per transaction";
  EXPECT_EQ(audit[0].actor, "token:ops");
  EXPECT_EQ(audit[0].action, "devices.register");
  EXPECT_EQ(audit[1].details, R"({"inserted":0,"unchanged":2,"replaced":0})");
}

TEST_P(DeviceRegistryTest, LargeUploadsGoInSeveralTransactions) {
  std::string body = "device_id,public_key_pem\n";
  const size_t rows = DeviceRegistry::kRowsPerTransaction * 2 + 5;
  for (size_t i = 0; i < rows; ++i)
    body += "dev-" + std::to_string(i) + ",\"" + KeyPem(static_cast<int>(i % 3)) + "\"\n";
  RegisterReport report = Register(body);
  EXPECT_EQ(report.inserted, static_cast<int64_t>(rows));
  EXPECT_EQ(Audit().size(), 3u);
  auto page = registry_->List({.batch = std::nullopt, .status = std::nullopt, .after = "dev-1998", .limit = 2});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u) << "ids in byte order";
  EXPECT_EQ((*page)[0].device_id, "dev-1999");
  EXPECT_EQ((*page)[1].device_id, "dev-2");
}

TEST_P(DeviceRegistryTest, DisablingIsAuditedOnceAndUnknownDevicesAreNotFound) {
  Register(Csv({{"dev-1", KeyPem(1), ""}}));
  clock_.Advance(std::chrono::seconds(5));
  for (int i = 0; i < 2; ++i) {
    auto d = registry_->Disable("dev-1", "token:ops");
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->status, store::kDeviceDisabled);
  }
  std::vector<store::AuditEntry> audit = Audit();
  ASSERT_EQ(audit.size(), 2u) << "disabling twice changes state once";
  EXPECT_EQ(audit[1].action, "device.disable");
  EXPECT_EQ(audit[1].object, "device:dev-1");
  EXPECT_EQ(registry_->Disable("nobody", "token:ops").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(registry_->Get("nobody").error().code, ErrorCode::kNotFound);
}

TEST_P(DeviceRegistryTest, AnUnreadableUploadIsRefusedWhole) {
  auto r = registry_->RegisterKeys("[{\"device_id\": ", UploadFormat::kJson, "token:ops");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kInvalidArgument);
  EXPECT_TRUE(Audit().empty());
}

INSTANTIATE_TEST_SUITE_P(Drivers, DeviceRegistryTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::provision
