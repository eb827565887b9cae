#include "store/store.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <latch>
#include <stdexcept>
#include <thread>

#include "store/certificates_repo.h"
#include "store/events_repo.h"
#include "store/migrations.h"
#include "store/tokens_repo.h"
#include "testing/db.h"

namespace certfleet::store {
namespace {

class StoreTest : public ::testing::TestWithParam<Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam(), &url_);
    ASSERT_NE(store_, nullptr);
    ASSERT_TRUE(store_->Exec("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE, n BIGINT)").ok());
  }
  std::unique_ptr<Store> store_;
  std::string url_;
};

TEST_P(StoreTest, MigrationsApplyOnceAndRecordTheirVersion) {
  auto again = Migrate(*store_);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, 0);
  auto version = SchemaVersion(*store_);
  ASSERT_TRUE(version.ok());
  EXPECT_GE(*version, 1);
}

TEST_P(StoreTest, ValuesRoundTripIncludingNullsQuotesAndQuestionMarks) {
  ASSERT_TRUE(
      store_->Exec("INSERT INTO items (id, name, n) VALUES (?, ?, ?)", {int64_t{1}, "it's a '?'", nullptr}).ok());
  ASSERT_TRUE(
      store_->Exec("INSERT INTO items (id, name, n) VALUES (2, 'literal ?', ?)", {int64_t{-9007199254740993}}).ok());
  auto rows = store_->Query("SELECT id, name, n FROM items ORDER BY id");
  ASSERT_TRUE(rows.ok()) << rows.error().message;
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].Text(1), "it's a '?'");
  EXPECT_TRUE((*rows)[0].IsNull(2));
  EXPECT_EQ((*rows)[1].Text(1), "literal ?");
  EXPECT_EQ((*rows)[1].Int(2), -9007199254740993);
}

TEST_P(StoreTest, AFailedTransactionLeavesNothingBehind) {
  Result<void> r = store_->Transact([](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (1, 'a')"));
    return MakeError(ErrorCode::kInvalidArgument, "changed my mind");
  });
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "changed my mind");
  EXPECT_TRUE(store_->Query("SELECT * FROM items")->empty());
}

TEST_P(StoreTest, ReadEachRunsEveryStatementOnItsOwn) {
  ASSERT_TRUE(store_->Exec("INSERT INTO items (id, name, n) VALUES (1, 'a', 1)").ok());
  // A failed statement then a good one: inside a PostgreSQL transaction the second fails too
  // (the transaction is aborted); statements on their own do not share that fate.
  auto failed_then_read = [&](TxMode mode) {
    return store_->Transact(
        [&](Tx& tx) -> Result<void> {
          EXPECT_FALSE(tx.Query("SELECT n FROM no_such_table").ok());
          CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT n FROM items WHERE id = 1"));
          EXPECT_EQ(row->Int(0), 1);
          return Ok();
        },
        mode);
  };
  EXPECT_TRUE(failed_then_read(TxMode::kReadEach).ok());
  if (GetParam() == Dialect::kPostgres) {
    EXPECT_FALSE(failed_then_read(TxMode::kRead).ok());
  }
}

TEST_P(StoreTest, UniqueViolationIsAlreadyExists) {
  ASSERT_TRUE(store_->Exec("INSERT INTO items (id, name) VALUES (1, 'a')").ok());
  auto dup = store_->Exec("INSERT INTO items (id, name) VALUES (2, 'a')");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, ErrorCode::kAlreadyExists);
}

TEST_P(StoreTest, DeferredStatementsRunInOrderBeforeTheNextStatement) {
  Result<void> r = store_->Transact([](Tx& tx) -> Result<void> {
    for (int64_t i = 1; i <= 50; ++i) {
      CF_RETURN_IF_ERROR(
          tx.ExecDeferred("INSERT INTO items (id, name, n) VALUES (?, ?, ?)", {i, "n" + std::to_string(i), i}));
    }
    CF_RETURN_IF_ERROR(tx.ExecDeferred("UPDATE items SET n = n * 2 WHERE id = ?", {int64_t{7}}));
    CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne("SELECT COUNT(*), SUM(n) FROM items"));
    EXPECT_EQ(row->Int(0), 50);
    EXPECT_EQ(row->Int(1), 50 * 51 / 2 + 7);
    // Left unanswered at the end: the commit waits for it.
    return tx.ExecDeferred("INSERT INTO items (id, name, n) VALUES (51, 'last', 0)");
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), 51);
}

TEST_P(StoreTest, AFailingDeferredStatementFailsItsTransactionAndLeavesNothing) {
  ASSERT_TRUE(store_->Exec("INSERT INTO items (id, name) VALUES (1, 'a')").ok());
  // The error comes from the next statement...
  Result<void> r = store_->Transact([](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id, name) VALUES (2, 'b')"));
    CF_RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id, name) VALUES (3, 'a')"));
    CF_RETURN_IF_ERROR(tx.ExecDeferred("INSERT INTO items (id, name) VALUES (4, 'c')"));
    CF_RETURN_IF_ERROR(tx.Query("SELECT 1"));
    ADD_FAILURE() << "the duplicate went unnoticed";
    return Ok();
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kAlreadyExists) << r.error().message;
  // ...or from the commit.
  r = store_->Transact([](Tx& tx) { return tx.ExecDeferred("INSERT INTO items (id, name) VALUES (5, 'a')"); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kAlreadyExists) << r.error().message;
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), 1);
  // The connection is usable afterwards.
  EXPECT_TRUE(store_->Exec("INSERT INTO items (id, name) VALUES (6, 'f')").ok());
}

// Certificates and events are gathered until a transaction's end (one statement a group on
// PostgreSQL): the transaction's own reads and updates of certificates see them all the same.
TEST_P(StoreTest, GatheredCertificatesAreSeenByTheirTransactionAndUndoneWithItsSavepoint) {
  auto cert = [](const std::string& serial, std::string fqdn, std::optional<std::string> issuer) {
    CertificateRecord c;
    c.serial = serial;
    c.fqdn = std::move(fqdn);
    c.type = issuer ? CertType::kDevice : CertType::kRoot;
    c.parent_fqdn = issuer ? "root.example" : "Root";
    c.issuer_serial = std::move(issuer);
    c.fingerprint = "fp-" + serial;
    c.certificate_pem = "-----BEGIN CERTIFICATE-----\n\"quoted\" \\ {braces}, NULL ?\n-----END CERTIFICATE-----\n";
    c.created_by = "it's";
    return c;
  };
  Result<void> written = store_->Transact([&](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(InsertCertificate(tx, cert("aa", "root.example", std::nullopt)));
    CF_RETURN_IF_ERROR(InsertCa(tx, CaRecord{"root.example", "aa", "key", "hash", 0, {}, {}, {}}));
    CF_RETURN_IF_ERROR(InsertCertificate(tx, cert("bb", "d.example", "aa")));
    CF_RETURN_IF_ERROR(AppendEvent(tx, 1, "certificates/created", R"({"Serial":"bb"})"));
    CF_ASSIGN_OR_RETURN(auto active, ActiveSerialForFqdn(tx, "d.example"));
    if (active != "bb") return MakeError(ErrorCode::kInternal, "the active-name check missed bb");
    CF_ASSIGN_OR_RETURN(auto children, CascadeChildren(tx, "aa"));
    if (children.size() != 1) return MakeError(ErrorCode::kInternal, "the children of aa missed bb");
    CF_RETURN_IF_ERROR(tx.Savepoint("piece"));
    CF_RETURN_IF_ERROR(InsertCertificate(tx, cert("cc", "e.example", "aa")));
    CF_RETURN_IF_ERROR(AppendEvent(tx, 2, "certificates/created", R"({"Serial":"cc"})"));
    CF_RETURN_IF_ERROR(tx.RollbackTo("piece"));
    CF_RETURN_IF_ERROR(InsertCertificate(tx, cert("dd", "f.example", "aa")));
    CF_ASSIGN_OR_RETURN(bool revoked, RevokeCertificate(tx, "dd", 3, 1));
    if (!revoked) return MakeError(ErrorCode::kInternal, "dd was not there to revoke");
    return Ok();
  });
  ASSERT_TRUE(written.ok()) << written.error().message;

  auto read = store_->Transact([&](Tx& tx) -> Result<void> {
    CF_ASSIGN_OR_RETURN(auto bb, FindCertificate(tx, "bb"));
    if (!bb || bb->certificate_pem != cert("bb", "", "aa").certificate_pem || bb->created_by != "it's" ||
        bb->issuer_serial != "aa") {
      return MakeError(ErrorCode::kInternal, "bb is not as written");
    }
    CF_ASSIGN_OR_RETURN(auto cc, FindCertificate(tx, "cc"));
    if (cc) return MakeError(ErrorCode::kInternal, "cc was rolled back, yet stored");
    CF_ASSIGN_OR_RETURN(CertStatus dd, CertificateStatus(tx, "dd"));
    if (dd != CertStatus::kRevoked) return MakeError(ErrorCode::kInternal, "dd is not revoked");
    CF_ASSIGN_OR_RETURN(auto events, EventsAfter(tx, 0, {"certificates/created"}, 10));
    if (events.size() != 1 || events.front().payload != R"({"Serial":"bb"})") {
      return MakeError(ErrorCode::kInternal, "the events are not bb's alone");
    }
    return Ok();
  });
  ASSERT_TRUE(read.ok()) << read.error().message;
}

// A client certificate is as good as the CAs above it: one revoked without its certificates
// (no cascade) makes them revoked for ChainStatus, not for CertificateStatus.
TEST_P(StoreTest, ChainStatusIsRevokedBelowARevokedCa) {
  auto cert = [](const std::string& serial, std::optional<std::string> issuer) {
    CertificateRecord c;
    c.serial = serial;
    c.fqdn = serial + ".example";
    c.type = issuer ? CertType::kDevice : CertType::kRoot;
    c.parent_fqdn = issuer ? *issuer + ".example" : "Root";
    c.issuer_serial = std::move(issuer);
    c.fingerprint = "fp-" + serial;
    c.certificate_pem = "pem";
    return c;
  };
  auto statuses = [&](std::string_view serial) {
    return Read(*store_, [&](Tx& tx) -> Result<std::pair<CertStatus, CertStatus>> {
      CF_ASSIGN_OR_RETURN(CertStatus own, CertificateStatus(tx, serial));
      CF_ASSIGN_OR_RETURN(CertStatus chain, ChainStatus(tx, serial));
      return std::pair{own, chain};
    });
  };
  ASSERT_TRUE(store_
                  ->Transact([&](Tx& tx) -> Result<void> {
                    CF_RETURN_IF_ERROR(InsertCertificate(tx, cert("aa", std::nullopt)));
                    CF_RETURN_IF_ERROR(InsertCertificate(tx, cert("bb", "aa")));
                    return InsertCertificate(tx, cert("cc", "bb"));
                  })
                  .ok());
  const auto active = std::pair{CertStatus::kActive, CertStatus::kActive};
  EXPECT_EQ(*statuses("cc"), active);
  ASSERT_TRUE(Write(*store_, [](Tx& tx) { return RevokeCertificate(tx, "bb", 5, 1); }).ok());
  EXPECT_EQ(*statuses("cc"), std::pair(CertStatus::kActive, CertStatus::kRevoked));
  EXPECT_EQ(*statuses("bb"), std::pair(CertStatus::kRevoked, CertStatus::kRevoked));
  EXPECT_EQ(*statuses("aa"), active);
  auto none = Read(*store_, [](Tx& tx) { return ChainStatus(tx, "ee"); });
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ErrorCode::kNotFound);
}

TEST_P(StoreTest, ManyRowsGoInOneWriteWithAnyTextAndFindOneParameterAway) {
  static constexpr Column kColumns[] = {{"id", "bigint"}, {"name", "text"}, {"n", "bigint"}};
  // Text that array literals and JSON must escape, an empty one, a NULL and a "NULL".
  const std::vector<std::string> names = {
      "plain", "with \"quotes\"", "back\\slash", "{braces}, commas", "line\nbreak", "", "NULL", "ünïcödé ✓"};
  std::vector<Params> rows;
  for (size_t i = 0; i < names.size(); ++i) {
    rows.push_back(
        {static_cast<int64_t>(i + 1), names[i], i % 2 ? Value(nullptr) : Value(-5 * static_cast<int64_t>(i))});
  }
  ASSERT_TRUE(store_->Transact([&](Tx& tx) { return InsertRows(tx, "items", kColumns, rows); }).ok());
  auto stored = store_->Query("SELECT id, name, n FROM items ORDER BY id");
  ASSERT_TRUE(stored.ok()) << stored.error().message;
  ASSERT_EQ(stored->size(), names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ((*stored)[i].Text(1), names[i]);
    EXPECT_EQ((*stored)[i].IsNull(2), i % 2 == 1);
    if (i % 2 == 0) {
      EXPECT_EQ((*stored)[i].Int(2), -5 * static_cast<int64_t>(i));
    }
  }
  // Written again with a conflict clause: one new row, even proposed twice; the rest stay.
  rows.push_back({int64_t{100}, "new", int64_t{1}});
  rows.push_back({int64_t{100}, "new", int64_t{1}});
  Result<void> again =
      store_->Transact([&](Tx& tx) { return InsertRows(tx, "items", kColumns, rows, "ON CONFLICT (id) DO NOTHING"); });
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), static_cast<int64_t>(names.size() + 1));
  // Without one, the duplicate fails the write and nothing of it stays.
  Result<void> dup = store_->Transact([&](Tx& tx) { return InsertRows(tx, "items", kColumns, {rows.front()}); });
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code, ErrorCode::kAlreadyExists);

  auto find = [&](const std::vector<std::string>& wanted) {
    return Read(*store_, [&](Tx& tx) -> Result<Rows> {
      Params params;
      const std::string where = InValues(tx, "name", wanted, params);
      return tx.Query("SELECT name FROM items WHERE " + where + " ORDER BY id", params);
    });
  };
  auto found = find({"with \"quotes\"", "back\\slash", "line\nbreak", "NULL", "absent"});
  ASSERT_TRUE(found.ok()) << found.error().message;
  ASSERT_EQ(found->size(), 4u);
  EXPECT_EQ((*found)[0].Text(0), "with \"quotes\"");
  EXPECT_EQ((*found)[3].Text(0), "NULL");
  auto none = find({"absent"});
  ASSERT_TRUE(none.ok()) << none.error().message;
  EXPECT_TRUE(none->empty());
}

TEST_P(StoreTest, ConcurrentTransactionsLoseNoUpdate) {
  ASSERT_TRUE(store_->Exec("INSERT INTO items (id, name, n) VALUES (1, 'counter', 0)").ok());
  constexpr int kThreads = 8, kIncrements = 40;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        Result<void> r = store_->Transact([](Tx& tx) -> Result<void> {
          // Read-modify-write: only correct if transactions serialize on the row.
          const char* lock =
              tx.postgres() ? "SELECT n FROM items WHERE id = 1 FOR UPDATE" : "SELECT n FROM items WHERE id = 1";
          CF_ASSIGN_OR_RETURN(auto row, tx.QueryOne(lock));
          CF_RETURN_IF_ERROR(tx.Exec("UPDATE items SET n = ? WHERE id = 1", {row->Int(0) + 1}));
          return Ok();
        });
        if (!r.ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(store_->Query("SELECT n FROM items WHERE id = 1")->at(0).Int(0), kThreads * kIncrements);
}

TEST_P(StoreTest, OneLeaderAtATime) {
  auto other = Store::Open(url_, {2});
  ASSERT_TRUE(other.ok());
  auto first = store_->TryLead("scheduler");
  ASSERT_TRUE(first.ok());
  ASSERT_NE(*first, nullptr);
  EXPECT_TRUE((*first)->Held());
  auto second = (*other)->TryLead("scheduler");
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, nullptr);
  auto unrelated = (*other)->TryLead("another-name");
  ASSERT_TRUE(unrelated.ok());
  EXPECT_NE(*unrelated, nullptr);
  first->reset();
  auto third = (*other)->TryLead("scheduler");
  ASSERT_TRUE(third.ok());
  EXPECT_NE(*third, nullptr);
  // A lease given up is free at once, for the other node trying right after (handed over
  // back and forth, as nodes that step down and take over do).
  std::unique_ptr<LeaderLease> held = std::move(*third);
  for (int i = 0; i < 20; ++i) {
    held.reset();
    auto next = (i % 2 == 0 ? store_ : *other)->TryLead("scheduler");
    ASSERT_TRUE(next.ok());
    ASSERT_NE(*next, nullptr) << "handover " << i;
    held = std::move(*next);
  }
}

TEST_P(StoreTest, TokenIdsCanBeTypedOnACommandLine) {
  // 400 ids: one in 64 would begin with '-' if nothing prevented it.
  ASSERT_TRUE(store_
                  ->Transact([](Tx& tx) -> Result<void> {
                    for (int i = 0; i < 400; ++i) {
                      CF_ASSIGN_OR_RETURN(auto t, CreateApiToken(tx, Role::kReader, "", "t", 0));
                      EXPECT_NE(t.record.id.front(), '-') << t.record.id;
                      EXPECT_EQ(t.record.id.find('_'), std::string::npos) << t.record.id;
                    }
                    return Ok();
                  })
                  .ok());
}

TEST_P(StoreTest, TokensAuthenticateUntilRevoked) {
  NewToken token;
  ASSERT_TRUE(store_
                  ->Transact([&](Tx& tx) -> Result<void> {
                    CF_ASSIGN_OR_RETURN(token, CreateApiToken(tx, Role::kOperator, "ci", "test", 1000));
                    return Ok();
                  })
                  .ok());
  auto auth = [&](const std::string& bearer) {
    std::optional<ApiToken> t;
    EXPECT_TRUE(store_
                    ->Transact([&](Tx& tx) -> Result<void> {
                      CF_ASSIGN_OR_RETURN(t, AuthenticateBearer(tx, bearer));
                      return Ok();
                    })
                    .ok());
    return t;
  };
  auto ok = auth(token.bearer);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->role, Role::kOperator);
  EXPECT_EQ(ok->name, "ci");
  std::string tampered = token.bearer;
  tampered.back() = tampered.back() == 'A' ? 'B' : 'A';
  EXPECT_FALSE(auth(tampered).has_value());
  EXPECT_FALSE(auth("cf_nonsense").has_value());
  EXPECT_FALSE(auth("").has_value());
  auto stored = store_->Query("SELECT secret_hash FROM api_tokens");
  EXPECT_EQ(token.bearer.find(stored->at(0).Text(0)), std::string::npos) << "the secret must not be stored";
  ASSERT_TRUE(store_
                  ->Transact([&](Tx& tx) -> Result<void> {
                    return RevokeApiToken(tx, token.record.id, 2000).ok() ? Ok() : MakeError(ErrorCode::kInternal, "x");
                  })
                  .ok());
  EXPECT_FALSE(auth(token.bearer).has_value());
}

// A function that throws leaves nothing behind: what it wrote is rolled back, and its
// connection does not carry the open transaction into the next one.
TEST_P(StoreTest, AnExceptionInATransactionRollsItBack) {
  auto opened = Store::Open(url_, {1});
  ASSERT_TRUE(opened.ok());
  Store& store = **opened;
  EXPECT_THROW((void)store.Transact([](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (1, 'thrown')"));
    throw std::runtime_error("a bug");
  }),
               std::runtime_error);
  ASSERT_TRUE(store.Exec("INSERT INTO items (id, name) VALUES (2, 'next')").ok());
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), 1);
}

INSTANTIATE_TEST_SUITE_P(Drivers, StoreTest, testing::kBothDialects, testing::DialectName);

// How the PostgreSQL driver lives with connections that break.
class PgConnectionsTest : public StoreTest {};

// A TCP relay to the PostgreSQL server of a URL. Armed, it passes a client's COMMIT on to the
// server, waits for the server's answer and closes the connection instead of passing it back:
// the client cannot know whether its transaction committed.
class CommitCutter {
 public:
  explicit CommitCutter(const std::string& url) {
    PGconn* conn = PQconnectdb(url.c_str());
    target_.sin_family = AF_INET;
    target_.sin_port = htons(static_cast<uint16_t>(std::stoi(PQport(conn))));
    inet_pton(AF_INET, "127.0.0.1", &target_.sin_addr);
    PQfinish(conn);
    listener_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    socklen_t len = sizeof(addr);
    bind(listener_, reinterpret_cast<sockaddr*>(&addr), len);
    listen(listener_, 8);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len);
    url_ = url + (url.find('?') == std::string::npos ? "?" : "&") +
           "host=127.0.0.1&port=" + std::to_string(ntohs(addr.sin_port));
    thread_ = std::thread([this] { Accept(); });
  }
  ~CommitCutter() {
    stop_ = true;
    shutdown(listener_, SHUT_RDWR);
    thread_.join();
    close(listener_);
  }
  const std::string& url() const { return url_; }
  void Arm() { armed_ = true; }

 private:
  void Accept() {
    std::vector<std::thread> relays;
    for (;;) {
      const int client = accept(listener_, nullptr, nullptr);
      if (client < 0 || stop_) break;
      relays.emplace_back([this, client] { Relay(client); });
    }
    for (auto& t : relays) t.join();
  }
  void Relay(int client) {
    const int server = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(server, reinterpret_cast<const sockaddr*>(&target_), sizeof(target_)) == 0) {
      char buf[16384];
      pollfd fds[2] = {{client, POLLIN, 0}, {server, POLLIN, 0}};
      while (!stop_ && poll(fds, 2, 100) >= 0) {
        if (fds[0].revents != 0) {
          const ssize_t n = read(client, buf, sizeof(buf));
          if (n <= 0 || write(server, buf, static_cast<size_t>(n)) != n) break;
          if (armed_ && std::string_view(buf, static_cast<size_t>(n)).find("COMMIT") != std::string_view::npos) {
            armed_ = false;
            pollfd answer{server, POLLIN, 0};
            poll(&answer, 1, 10'000);  // the server has committed (or not) and answered
            break;
          }
        }
        if (fds[1].revents != 0) {
          const ssize_t n = read(server, buf, sizeof(buf));
          if (n <= 0 || write(client, buf, static_cast<size_t>(n)) != n) break;
        }
      }
    }
    close(server);
    close(client);
  }

  sockaddr_in target_{};
  int listener_ = -1;
  std::string url_;
  std::thread thread_;
  std::atomic<bool> armed_{false}, stop_{false};
};

// The server committed, but its answer was lost with the connection: running the transaction
// again could do its work twice, so the caller hears that the outcome is unknown.
TEST_P(PgConnectionsTest, ACommitWhoseAnswerIsLostIsNotRunAgain) {
  CommitCutter cutter(url_);
  auto opened = Store::Open(cutter.url(), {1});
  ASSERT_TRUE(opened.ok()) << opened.error().message;
  cutter.Arm();
  int runs = 0;
  Result<void> r = (*opened)->Transact([&](Tx& tx) -> Result<void> {
    ++runs;
    CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (1, 'once')"));
    return Ok();
  });
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(MayHaveCommitted(r.error())) << r.error().message;
  EXPECT_EQ(r.error().code, ErrorCode::kUnavailable);
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), 1) << "the server did commit";
  // The next transaction gets a new connection.
  EXPECT_TRUE((*opened)->Query("SELECT COUNT(*) FROM items").ok());
}

// After a restart every pooled connection is broken: finding one broken closes the others, so
// the next attempt opens a new connection instead of trying the dead ones until it gives up.
TEST_P(PgConnectionsTest, AfterARestartATransactionNeedsOneMoreAttemptNotAll) {
  constexpr int kConnections = 8;  // more than a transaction's attempts
  auto opened = Store::Open(url_, {kConnections});
  ASSERT_TRUE(opened.ok());
  Store& store = **opened;
  std::latch inside(kConnections);  // so many transactions at once open so many connections
  std::vector<std::thread> threads;
  for (int i = 0; i < kConnections; ++i) {
    threads.emplace_back([&] {
      EXPECT_TRUE(store
                      .Transact(
                          [&](Tx& tx) -> Result<void> {
                            CF_RETURN_IF_ERROR(tx.Query("SELECT 1"));
                            inside.arrive_and_wait();
                            return Ok();
                          },
                          TxMode::kRead)
                      .ok());
    });
  }
  for (auto& t : threads) t.join();
  // What a restart does to them (waiting up to 5 s for each to end).
  auto ended = store_->Query(
      "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
      "AND CASE WHEN pid = pg_backend_pid() THEN false ELSE pg_terminate_backend(pid, 5000) END");
  ASSERT_TRUE(ended.ok()) << ended.error().message;
  ASSERT_GE(ended->at(0).Int(0), kConnections);
  auto after = store.Query("SELECT 1");
  EXPECT_TRUE(after.ok()) << after.error().message;
}

// On PostgreSQL a failed statement aborts its transaction, whose COMMIT then rolls back: a
// function that went on past the failure hears that nothing was stored.
TEST_P(PgConnectionsTest, ACommitThatRollsBackIsAnError) {
  Result<void> r = store_->Transact([](Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(tx.Exec("INSERT INTO items (id, name) VALUES (1, 'a')"));
    (void)tx.Exec("INSERT INTO items (id, name) VALUES (1, 'again')");  // fails, and is ignored
    return Ok();
  });
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("rolled back"), std::string::npos) << r.error().message;
  EXPECT_EQ(store_->Query("SELECT COUNT(*) FROM items")->at(0).Int(0), 0);
}

INSTANTIATE_TEST_SUITE_P(Drivers, PgConnectionsTest, ::testing::Values(Dialect::kPostgres), testing::DialectName);

}  // namespace
}  // namespace certfleet::store
