// CA keys in the database, on both stores: made, found again by another backend on the same
// database (another node), sealed so that another master key or a swapped row opens nothing.
#include "issuance/db_key_backend.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include "pki/key.h"
#include "testing/db.h"

namespace certfleet::issuance {
namespace {

class DbKeyBackendTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
  }
  ManualClock clock_;
  std::unique_ptr<store::Store> store_;
};

TEST_P(DbKeyBackendTest, AKeyMadeByOneNodeSignsOnAnother) {
  DbKeyBackend one(*store_, clock_, std::string(32, 'm'));
  DbKeyBackend other(*store_, clock_, std::string(32, 'm'));
  auto ref = one.Generate(pki::KeyType::kEcP256, "");
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  EXPECT_TRUE(ref->starts_with("db:"));
  auto mine = one.Get(*ref);
  auto theirs = other.Get(*ref);
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_EQ(EVP_PKEY_eq(mine->get(), theirs->get()), 1);

  pki::PkeyPtr imported = std::move(pki::GenerateKey(pki::KeyType::kRsa2048).value());
  auto put = other.Put(imported.get(), "db");
  ASSERT_TRUE(put.ok());
  EXPECT_NE(*put, *ref);
  EXPECT_EQ(EVP_PKEY_eq(one.Get(*put)->get(), imported.get()), 1);
  EXPECT_EQ(one.Generate(pki::KeyType::kEcP256, "file").error().code, ErrorCode::kInvalidArgument);
}

TEST_P(DbKeyBackendTest, AnotherMasterKeyOrARemovedKeyOpensNothing) {
  DbKeyBackend one(*store_, clock_, std::string(32, 'm'));
  auto ref = one.Generate(pki::KeyType::kEcP256, "");
  ASSERT_TRUE(ref.ok());
  DbKeyBackend stranger(*store_, clock_, std::string(32, 'x'));
  EXPECT_EQ(stranger.Get(*ref).error().code, ErrorCode::kUnavailable);
  // A row's sealed key under another reference does not open: the reference is sealed in.
  auto second = one.Generate(pki::KeyType::kEcP256, "");
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE(store_
                  ->Exec("UPDATE ca_keys SET key_sealed = (SELECT key_sealed FROM ca_keys WHERE ref = ?) WHERE ref = ?",
                         {*ref, *second})
                  .ok());
  DbKeyBackend fresh(*store_, clock_, std::string(32, 'm'));
  EXPECT_EQ(fresh.Get(*second).error().code, ErrorCode::kUnavailable);
  ASSERT_TRUE(one.Remove(*ref).ok());
  EXPECT_EQ(one.Get(*ref).error().code, ErrorCode::kUnavailable);
}

INSTANTIATE_TEST_SUITE_P(Stores, DbKeyBackendTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::issuance
