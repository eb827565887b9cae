// The store authenticator with its cache: what a revoked, wrong or expired token gets.
#include "http/token_cache.h"

#include <gtest/gtest.h>

#include "http/api.h"
#include "store/tokens_repo.h"
#include "testing/db.h"

namespace certfleet::http {
namespace {

using namespace std::chrono_literals;

class TokenCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(store::Dialect::kSqlite);
    ASSERT_NE(store_, nullptr);
    auto made = store::InTransaction(*store_, store::TxMode::kWrite, [&](store::Tx& tx) {
      return store::CreateApiToken(tx, store::Role::kOperator, "ci", "test", clock_.NowMillis());
    });
    ASSERT_TRUE(made.ok()) << made.error().message;
    token_ = *made;
  }
  // Revokes the token in the store only, as another node would: this node's cache is not told.
  void RevokeElsewhere() {
    auto r = store::InTransaction(*store_, store::TxMode::kWrite, [&](store::Tx& tx) {
      return store::RevokeApiToken(tx, token_.record.id, clock_.NowMillis());
    });
    ASSERT_TRUE(r.ok() && *r);
  }
  bool Accepted(const Authenticator& auth, const std::string& bearer) {
    auto p = auth(bearer);
    EXPECT_TRUE(p.ok());
    return p.ok() && p->has_value();
  }

  std::unique_ptr<store::Store> store_;
  ManualClock clock_;
  store::NewToken token_;
};

TEST_F(TokenCacheTest, ARevokedTokenIsRefusedOnceItsCacheEntryExpires) {
  TokenCache cache(1000);
  Authenticator auth = MakeStoreAuthenticator(*store_, clock_, cache);
  ASSERT_TRUE(Accepted(auth, token_.bearer));
  auto p = auth(token_.bearer);
  EXPECT_EQ((*p)->token_id, token_.record.id);
  EXPECT_EQ((*p)->role, store::Role::kOperator);

  RevokeElsewhere();
  clock_.Advance(999ms);
  EXPECT_TRUE(Accepted(auth, token_.bearer)) << "within the cache time another node's revocation is not seen yet";
  clock_.Advance(1ms);
  EXPECT_FALSE(Accepted(auth, token_.bearer));
}

TEST_F(TokenCacheTest, ClearingTheCacheRefusesARevokedTokenAtOnce) {
  TokenCache cache(60'000);
  Authenticator auth = MakeStoreAuthenticator(*store_, clock_, cache);
  ASSERT_TRUE(Accepted(auth, token_.bearer));
  RevokeElsewhere();
  cache.Clear();  // what revoking through this node's API does
  EXPECT_FALSE(Accepted(auth, token_.bearer));
}

// A request that read the token as valid just before a revocation on this node cleared the
// cache must not put it back.
TEST_F(TokenCacheTest, ALookupThatBeganBeforeAClearCachesNothing) {
  TokenCache cache(60'000);
  const Principal principal{true, token_.record.id, "ci", store::Role::kOperator};
  const uint64_t began = cache.Generation();
  cache.Clear();  // the revocation, committed while the lookup was reading
  cache.Put(token_.bearer, principal, clock_.NowMillis(), began);
  EXPECT_FALSE(cache.Find(token_.bearer, clock_.NowMillis()));
  cache.Put(token_.bearer, principal, clock_.NowMillis(), cache.Generation());
  EXPECT_TRUE(cache.Find(token_.bearer, clock_.NowMillis()));
}

TEST_F(TokenCacheTest, AWrongSecretNeverMatchesACachedToken) {
  TokenCache cache(60'000);
  Authenticator auth = MakeStoreAuthenticator(*store_, clock_, cache);
  ASSERT_TRUE(Accepted(auth, token_.bearer));
  std::string wrong = token_.bearer;
  wrong.back() = wrong.back() == 'a' ? 'b' : 'a';
  EXPECT_FALSE(Accepted(auth, wrong));
  EXPECT_FALSE(Accepted(auth, token_.bearer + "x"));
}

TEST_F(TokenCacheTest, ZeroDisablesTheCache) {
  TokenCache cache(0);
  Authenticator auth = MakeStoreAuthenticator(*store_, clock_, cache);
  ASSERT_TRUE(Accepted(auth, token_.bearer));
  RevokeElsewhere();
  EXPECT_FALSE(Accepted(auth, token_.bearer));
}

}  // namespace
}  // namespace certfleet::http
