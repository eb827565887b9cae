// The device registry of W2: registering keys, finding, disabling and listing devices.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/crypto.h"
#include "store/devices_repo.h"
#include "testing/db.h"

namespace certfleet::store {
namespace {

class DevicesTest : public ::testing::TestWithParam<Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
  }
  // A device whose key is `key` (bytes, NULs included, as DER has them).
  static DeviceRecord Device(std::string id, std::string key, std::string batch = "") {
    return DeviceRecord{std::move(id), key, HexEncode(key), std::move(batch), {}, 0, 0};
  }
  DeviceUpsert Upsert(const DeviceRecord& d, int64_t now = 1000) {
    auto r = Write(*store_, [&](Tx& tx) { return UpsertDevice(tx, d, now); });
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : DeviceUpsert::kUnchanged;
  }
  DeviceRecord Get(std::string_view id) {
    auto r = Read(*store_, [&](Tx& tx) { return FindDevice(tx, id); });
    EXPECT_TRUE(r.ok() && r->has_value()) << id;
    return r.ok() && r->has_value() ? **r : DeviceRecord{};
  }
  static DeviceFilter Filter(std::optional<std::string> batch, std::optional<std::string> status,
                             std::optional<std::string> after = std::nullopt, int limit = 100) {
    return DeviceFilter{std::move(batch), std::move(status), std::move(after), limit};
  }
  std::vector<std::string> Ids(const DeviceFilter& filter) {
    auto r = Read(*store_, [&](Tx& tx) { return ListDevices(tx, filter); });
    EXPECT_TRUE(r.ok()) << r.error().message;
    std::vector<std::string> ids;
    for (const auto& d : r.ok() ? *r : std::vector<DeviceRecord>{}) ids.push_back(d.device_id);
    return ids;
  }
  std::unique_ptr<Store> store_;
};

TEST_P(DevicesTest, AHeldAuthorizerCheckKeepsADisableWaitingUntilItCommits) {
  Upsert(Device("dev-1", "key"));
  std::atomic<bool> checked{false};
  std::atomic<bool> about_to_commit{false};
  std::thread provisioning([&] {
    auto r = store_->Transact([&](Tx& tx) -> Result<void> {
      CF_RETURN_IF_ERROR(CheckDeviceForAuth(tx, "dev-1", [](const std::optional<DeviceRecord>& d) -> Result<void> {
        EXPECT_EQ(d->status, kDeviceRegistered);
        EXPECT_EQ(d->key_sha256, HexEncode("key"));
        return Ok();
      }));
      CF_RETURN_IF_ERROR(tx.FlushAll());  // the check (made at the end) is in: the row is held
      checked = true;
      // Gives the disable below every chance to run now if nothing holds it back.
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      about_to_commit = true;
      return Ok();
    });
    EXPECT_TRUE(r.ok());
  });
  while (!checked) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto disabled = Write(*store_, [](Tx& tx) { return SetDeviceStatus(tx, "dev-1", kDeviceDisabled, 2000); });
  EXPECT_TRUE(disabled.ok() && *disabled);
  EXPECT_TRUE(about_to_commit) << "the disable committed between the check and its transaction's commit";
  provisioning.join();
}

TEST_P(DevicesTest, ACheckThatFailsFailsItsTransactionWithItsOwnError) {
  Upsert(Device("dev-1", "key"));
  bool looked = false;
  auto r = store_->Transact([&](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(CheckDeviceForAuth(tx, "dev-1", [&](const std::optional<DeviceRecord>& d) -> Result<void> {
      looked = true;
      EXPECT_TRUE(d.has_value());
      return MakeError(ErrorCode::kPermissionDenied, "changed meanwhile");
    }));
    CF_RETURN_IF_ERROR(MarkDeviceProvisioned(tx, "dev-1", 3000));
    return Ok();
  });
  EXPECT_TRUE(looked);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied);
  EXPECT_EQ(r.error().message, "changed meanwhile");
  EXPECT_EQ(Get("dev-1").status, kDeviceRegistered) << "rolled back";
  auto missing = store_->Transact([&](Tx& tx) -> Result<void> {
    return CheckDeviceForAuth(tx, "dev-9", [](const std::optional<DeviceRecord>& d) -> Result<void> {
      return d ? Ok() : MakeError(ErrorCode::kNotFound, "no dev-9");
    });
  });
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_P(DevicesTest, RegisteringAgainReportsUnchangedOrReplaced) {
  const std::string key("\x30\x59\x00\x13", 4);
  EXPECT_EQ(Upsert(Device("dev-1", key, "b1"), 1000), DeviceUpsert::kInserted);
  EXPECT_EQ(Upsert(Device("dev-1", key, "b1"), 2000), DeviceUpsert::kUnchanged);
  DeviceRecord d = Get("dev-1");
  EXPECT_EQ(d.public_key, key) << "DER bytes round trip, NUL included";
  EXPECT_EQ(d.key_sha256, HexEncode(key));
  EXPECT_EQ(d.batch, "b1");
  EXPECT_EQ(d.status, kDeviceRegistered);
  EXPECT_EQ(d.created_at, 1000);
  EXPECT_EQ(d.updated_at, 1000) << "an unchanged registration changes nothing";

  EXPECT_EQ(Upsert(Device("dev-1", "other-key", "b1"), 3000), DeviceUpsert::kReplaced);
  EXPECT_EQ(Get("dev-1").public_key, "other-key");
  EXPECT_EQ(Upsert(Device("dev-1", "other-key", "b2"), 4000), DeviceUpsert::kReplaced) << "a new batch";
  d = Get("dev-1");
  EXPECT_EQ(d.batch, "b2");
  EXPECT_EQ(d.created_at, 1000);
  EXPECT_EQ(d.updated_at, 4000);
}

TEST_P(DevicesTest, ADisabledDeviceStaysDisabledWhenItsKeyIsReplaced) {
  Upsert(Device("dev-1", "k1"));
  auto disabled = Write(*store_, [](Tx& tx) { return SetDeviceStatus(tx, "dev-1", kDeviceDisabled, 2000); });
  ASSERT_TRUE(disabled.ok() && *disabled);
  EXPECT_EQ(Upsert(Device("dev-1", "k2")), DeviceUpsert::kReplaced);
  EXPECT_EQ(Get("dev-1").status, kDeviceDisabled);
  auto missing = Write(*store_, [](Tx& tx) { return SetDeviceStatus(tx, "nobody", kDeviceDisabled, 2000); });
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(*missing);
  auto none = Read(*store_, [](Tx& tx) { return FindDevice(tx, "nobody"); });
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
}

TEST_P(DevicesTest, ListsByBatchAndStatusInIdOrderPageByPage) {
  for (const char* id : {"c", "a", "e", "b", "d"}) Upsert(Device(id, "k", std::string(id) < "d" ? "early" : "late"));
  ASSERT_TRUE(Write(*store_, [](Tx& tx) { return SetDeviceStatus(tx, "b", kDeviceDisabled, 2000); }).ok());

  EXPECT_EQ(Ids(Filter({}, {})), (std::vector<std::string>{"a", "b", "c", "d", "e"}));
  EXPECT_EQ(Ids(Filter("early", {})), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(Ids(Filter({}, std::string(kDeviceDisabled))), (std::vector<std::string>{"b"}));
  EXPECT_EQ(Ids(Filter("early", std::string(kDeviceRegistered))), (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(Ids(Filter({}, {}, {}, 2)), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(Ids(Filter({}, {}, "b", 2)), (std::vector<std::string>{"c", "d"}));
  EXPECT_EQ(Ids(Filter({}, {}, "d", 2)), (std::vector<std::string>{"e"}));
}

INSTANTIATE_TEST_SUITE_P(Drivers, DevicesTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::store
