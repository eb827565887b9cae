// W5's parts on their own: the inbound layout, ZIP size bounds, and the service over a local
// inbound folder and the .eml outbox on both stores (the end-to-end test runs it against
// S3 and SMTP servers).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <zip.h>

#include <filesystem>
#include <set>

#include "blob/blob_store.h"
#include "core/crypto.h"
#include "distribution/bundle.h"
#include "distribution/distribution_service.h"
#include "distribution/layout.h"
#include "distribution/sns.h"
#include "store/distribution_repo.h"
#include "testing/db.h"

namespace certfleet::distribution {
namespace {

namespace fs = std::filesystem;

TEST(Layout, ClassifiesTheSeedsLayoutAndIgnoresTheRest) {
  auto ok = [](std::string_view key) { return std::get<InboundFile>(Classify(key, "Inbound/")); };
  auto f = ok("Inbound/Warehouse_US/servertrust_us-east-1_123456789012.pem");
  EXPECT_EQ(f.warehouse, "Warehouse_US");
  EXPECT_EQ(f.gateway_eui, "SHARED_FILES");
  EXPECT_EQ(ok("Inbound/Warehouse_India/endpoints_ap-south-1_1.json").gateway_eui, "SHARED_FILES");
  f = ok("Inbound/Warehouse_US/00800000d000580f/0580f.key");
  EXPECT_EQ(f.gateway_eui, "00800000d000580f");
  EXPECT_EQ(f.name, "0580f.key");
  EXPECT_EQ(ok("Inbound/Plant-7/00800000D000BC03/0BC03.pem").warehouse, "Plant-7");
  for (const char* bad :
       {"Other/Warehouse_US/servertrust_a.pem", "Inbound/readme.txt", "Inbound/W/notes.txt",
        "Inbound/W/00800000d000580f/0580f.txt", "Inbound/W/00800000d000580f/12345.pem", "Inbound/W/0080/0080.pem",
        "Inbound/W/00800000d000580f/x/0580f.pem", "Inbound/../W/servertrust_a.pem", "Inbound/.hidden/servertrust_a.pem",
        "Inbound/W/servertrust_a b.pem", "Inbound/W/00800000d000580f/0580f.pem/x"}) {
    EXPECT_TRUE(std::holds_alternative<std::string>(Classify(bad, "Inbound/"))) << bad;
  }
}

TEST(Bundle, ZipsStayWithinTheirBoundAndReadBack) {
  const std::string dir = testing::TempDir();
  for (const std::optional<std::string>& password : {std::optional<std::string>(), std::optional<std::string>("pw")}) {
    std::vector<std::string> data;
    for (size_t n : {size_t{0}, size_t{1}, size_t{1000}, size_t{300'000}}) data.push_back(RandomBytes(n));
    std::vector<ZipEntry> entries;
    uint64_t bound = kZipEndBound;
    for (size_t i = 0; i < data.size(); ++i) {
      entries.push_back({fmt::format("00800000d000580{}/0580{}.pem", i, i), data[i]});
      bound += ZipEntryBound(entries.back().name.size(), data[i].size());
    }
    const std::string path = dir + "/b.zip";
    auto size = WriteZip(path, entries, password);
    ASSERT_TRUE(size.ok()) << size.error().message;
    EXPECT_LE(*size, bound);
    EXPECT_EQ(*size, fs::file_size(path));
    int err = 0;
    zip_t* za = zip_open(path.c_str(), ZIP_RDONLY, &err);
    ASSERT_NE(za, nullptr);
    if (password) zip_set_default_password(za, password->c_str());
    for (size_t i = 0; i < data.size(); ++i) {
      zip_file_t* zf = zip_fopen(za, entries[i].name.c_str(), 0);
      ASSERT_NE(zf, nullptr) << zip_strerror(za);
      std::string back(data[i].size() + 1, '\0');
      const zip_int64_t n = zip_fread(zf, back.data(), back.size());
      back.resize(static_cast<size_t>(std::max<zip_int64_t>(n, 0)));
      EXPECT_EQ(back, data[i]);
      zip_fclose(zf);
    }
    zip_discard(za);
  }
  EXPECT_EQ(WriteZip("/nonexistent-dir/x.zip", {}, std::nullopt).error().code, ErrorCode::kUnavailable);
}

// A real .eml mailer that can run a hook while a message is "in flight".
TEST(Sns, OnlySnsHostsAndTheFieldsSnsSignsInTheirOrder) {
  EXPECT_TRUE(IsSnsUrl("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"));
  EXPECT_TRUE(IsSnsUrl("https://sns.cn-north-1.amazonaws.com.cn/x.pem"));
  for (const char* bad : {"http://sns.us-east-1.amazonaws.com/x.pem", "https://sns.us-east-1.amazonaws.com.evil.net/x",
                          "https://evil.net/sns.us-east-1.amazonaws.com/x", "https://sns..amazonaws.com/x",
                          "https://sns.us-east-1.amazonaws.com:8443/x", "https://user@sns.us-east-1.amazonaws.com/x",
                          "https://s3.us-east-1.amazonaws.com/x"}) {
    EXPECT_FALSE(IsSnsUrl(bad)) << bad;
  }
  auto note = ParseSnsMessage(
      R"({"Type":"Notification","MessageId":"m1","TopicArn":"arn:t","Subject":"S","Message":"{}","Timestamp":"T",)"
      R"("SignatureVersion":"2","Signature":"c2ln","SigningCertURL":"https://sns.x.amazonaws.com/c.pem"})");
  ASSERT_TRUE(note.ok()) << note.error().message;
  EXPECT_EQ(SnsStringToSign(*note),
            "Message\n{}\nMessageId\nm1\nSubject\nS\nTimestamp\nT\nTopicArn\narn:t\nType\nNotification\n");
  auto sub = ParseSnsMessage(
      R"({"Type":"SubscriptionConfirmation","MessageId":"m2","TopicArn":"arn:t","Message":"M","Timestamp":"T",)"
      R"("SignatureVersion":"1","Signature":"c2ln","SigningCertURL":"u","SubscribeURL":"s","Token":"k"})");
  ASSERT_TRUE(sub.ok()) << sub.error().message;
  EXPECT_EQ(SnsStringToSign(*sub),
            "Message\nM\nMessageId\nm2\nSubscribeURL\ns\nTimestamp\nT\nToken\nk\nTopicArn\narn:t\nType\n"
            "SubscriptionConfirmation\n");
  EXPECT_EQ(ParseSnsMessage(R"({"Type":"SubscriptionConfirmation","MessageId":"m"})").error().code,
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ParseSnsMessage("[]").error().code, ErrorCode::kInvalidArgument);
}

TEST(Sns, UnsignedOrForeignMessagesAreRefusedBeforeAnythingIsFetched) {
  ManualClock clock{1'795'456'605'000};
  SnsVerifier none(clock, {});
  const std::string message =
      R"({"Type":"Notification","MessageId":"m1","TopicArn":"arn:t","Message":"{}","Timestamp":"2026-11-23T17:50:00Z",)"
      R"("SignatureVersion":"2","Signature":"c2ln","SigningCertURL":"https://evil.net/c.pem"})";
  EXPECT_EQ(none.Verify(message).error().code, ErrorCode::kPermissionDenied) << "no topic configured";
  SnsVerifier ours(clock, {{"arn:t"}, "", "", std::chrono::seconds(3600)});
  auto refused = ours.Verify(message);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("SigningCertURL"), std::string::npos) << refused.error().message;
  clock.Advance(std::chrono::hours(2));
  EXPECT_NE(ours.Verify(message).error().message.find("ago"), std::string::npos) << "too old";
}

class HookedMailer final : public mail::Mailer {
 public:
  HookedMailer(std::unique_ptr<mail::Mailer> inner) : inner_(std::move(inner)) {}
  Result<mail::Sent> Send(const mail::Message& m) override {
    if (hook) hook();
    sent.push_back(m);
    return inner_->Send(m);
  }
  std::function<void()> hook;
  std::vector<mail::Message> sent;

 private:
  std::unique_ptr<mail::Mailer> inner_;
};

class ServiceTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    root_ = testing::TempDir();
    inbound_ = std::move(blob::OpenBlobStore("file://" + root_ + "/inbound", {})).value();
    mailer_ =
        std::make_unique<HookedMailer>(std::move(mail::OpenMailer("file://" + root_ + "/outbox", clock_)).value());
    options_.work_dir = root_ + "/work";
    options_.default_recipient = "certs@example.com";
    options_.send_backoff = std::chrono::milliseconds(1);
  }
  DistributionService& Service() {
    service_ = std::make_unique<DistributionService>(*store_, *inbound_, *mailer_, clock_, options_);
    return *service_;
  }
  void Gateway(const std::string& warehouse, int n, size_t bytes) {
    const std::string eui = fmt::format("00800000d{:07x}", n);
    ASSERT_TRUE(
        inbound_->Put(fmt::format("Inbound/{}/{}/{}.pem", warehouse, eui, eui.substr(11)), RandomBytes(bytes)).ok());
    ASSERT_TRUE(
        inbound_->Put(fmt::format("Inbound/{}/{}/{}.key", warehouse, eui, eui.substr(11)), RandomBytes(200)).ok());
  }
  // The inbound objects as the store lists them.
  std::vector<blob::ObjectInfo> Inbound() {
    std::vector<blob::ObjectInfo> listed;
    EXPECT_TRUE(inbound_
                    ->List("Inbound/",
                           [&](std::vector<blob::ObjectInfo>& page) -> Result<void> {
                             listed.insert(listed.end(), page.begin(), page.end());
                             return Ok();
                           })
                    .ok());
    return listed;
  }
  std::map<std::string, std::string> Statuses(const std::string& warehouse) {
    store::RecordFilter f;
    f.warehouse = warehouse;
    f.limit = 1000;
    auto rows = store::Read(*store_, [&](store::Tx& tx) { return store::ListRecords(tx, f); });
    std::map<std::string, std::string> out;
    for (const auto& r : *rows) out[r.gateway_eui] = store::DistributionStatusName(r.status);
    return out;
  }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  std::string root_;
  std::unique_ptr<blob::BlobStore> inbound_;
  // The connection holding the run's lease ends while the first mail is sent (PostgreSQL).
  void LoseTheLeaseAtTheFirstMail() {
    mailer_->hook = [this] {
      mailer_->hook = nullptr;
      ASSERT_TRUE(store_
                      ->Query("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND "
                              "pid <> pg_backend_pid() AND database = (SELECT oid FROM pg_database WHERE datname = "
                              "current_database())")
                      .ok());
    };
  }

  std::unique_ptr<HookedMailer> mailer_;
  DistributionService::Options options_;
  std::unique_ptr<DistributionService> service_;
};

TEST_P(ServiceTest, SplitsUnderBothLimitsWithEveryGatewayOnce) {
  options_.zip_max_bytes = 40'000;
  options_.mail_max_bytes = 52'000;  // stricter than the ZIP limit once base64'd
  ASSERT_TRUE(inbound_->Put("Inbound/W1/servertrust_r_1.pem", RandomBytes(1000)).ok());
  for (int i = 0; i < 30; ++i) Gateway("W1", i, 2500);
  auto& svc = Service();
  auto scan = svc.Scan();
  ASSERT_TRUE(scan.ok()) << scan.error().message;
  EXPECT_EQ(scan->marked, 31);
  auto sent = svc.SendPending();
  ASSERT_TRUE(sent.ok()) << sent.error().message;
  EXPECT_EQ(sent->gateways_sent, 30);
  EXPECT_GE(sent->mails_sent, 3);
  const auto totals = svc.WarehouseCounters();
  ASSERT_EQ(totals.size(), 1u);
  EXPECT_EQ(totals.at("W1").gateways_sent, 30);
  EXPECT_EQ(totals.at("W1").mails_sent, sent->mails_sent);
  EXPECT_EQ(totals.at("W1").bytes_sent, sent->bytes_sent);

  auto deliveries = store::Read(*store_, [](store::Tx& tx) { return store::ListDeliveries(tx, {}, {}, 100); });
  ASSERT_TRUE(deliveries.ok());
  std::multiset<std::string> gateways;
  for (const auto& d : *deliveries) {
    EXPECT_LE(d.zip_bytes, 40'000);
    EXPECT_LE(d.message_bytes, 52'000);
    EXPECT_EQ(d.parts, static_cast<int>(deliveries->size()));
    gateways.insert(d.gateways.begin(), d.gateways.end());
  }
  EXPECT_EQ(gateways.size(), 30u);
  EXPECT_EQ(std::set<std::string>(gateways.begin(), gateways.end()).size(), 30u) << "a gateway went out twice";
  for (const auto& e : fs::directory_iterator(root_ + "/outbox")) EXPECT_LE(fs::file_size(e.path()), 52'000u);
  for (const auto& [eui, status] : Statuses("W1")) EXPECT_EQ(status, "EMAILED") << eui;
  EXPECT_FALSE(fs::exists(root_ + "/work") && !fs::is_empty(root_ + "/work")) << "run folders are removed";
}

TEST_P(ServiceTest, AChangeDuringSendingStaysPending) {
  Gateway("W1", 1, 500);
  Gateway("W1", 2, 500);
  auto& svc = Service();
  ASSERT_TRUE(svc.Scan().ok());
  // A new upload of gateway 1 lands while the mail is on its way.
  mailer_->hook = [&] {
    mailer_->hook = nullptr;
    Gateway("W1", 1, 600);  // a new size: a new ETag
    clock_.Advance(std::chrono::seconds(1));
    ASSERT_TRUE(svc.Scan().ok());
  };
  ASSERT_TRUE(svc.SendPending().ok());
  auto st = Statuses("W1");
  EXPECT_EQ(st["00800000d0000001"], "PENDING_EMAIL") << "the newer upload was not lost";
  EXPECT_EQ(st["00800000d0000002"], "EMAILED");
  ASSERT_TRUE(svc.SendPending().ok());
  EXPECT_EQ(Statuses("W1")["00800000d0000001"], "EMAILED");
  EXPECT_EQ(mailer_->sent.size(), 2u);
}

TEST_P(ServiceTest, AnObjectMarkedByAnEventAndThenScannedWithTheSameETagIsMailedOnce) {
  Gateway("W1", 1, 500);
  std::vector<blob::ObjectInfo> listed = Inbound();
  ASSERT_EQ(listed.size(), 2u);
  // The event's eventTime is not the listing's LastModified.
  for (auto& o : listed) o.last_modified_millis += 1234;
  auto& svc = Service();
  ASSERT_EQ(*svc.MarkChanged(listed), 1);
  ASSERT_TRUE(svc.SendPending().ok());
  ASSERT_EQ(mailer_->sent.size(), 1u);
  ASSERT_TRUE(svc.Scan().ok());
  ASSERT_TRUE(svc.SendPending().ok());
  EXPECT_EQ(mailer_->sent.size(), 1u) << "the scan saw the same ETag: nothing to send again";
  EXPECT_EQ(Statuses("W1")["00800000d0000001"], "EMAILED");
}

TEST_P(ServiceTest, AnEventOfAnOlderVersionThanTheOneRecordedChangesNothing) {
  Gateway("W1", 1, 500);
  std::vector<blob::ObjectInfo> listed = Inbound();
  auto& svc = Service();
  ASSERT_EQ(*svc.MarkChanged(listed), 1);
  ASSERT_TRUE(svc.SendPending().ok());
  ASSERT_EQ(mailer_->sent.size(), 1u);
  // A signed event replayed, or delivered late: another ETag, a minute before the one recorded.
  auto stale = listed;
  for (auto& o : stale) {
    o.etag = "\"replayed\"";
    o.last_modified_millis -= 60'000;
  }
  EXPECT_EQ(*svc.MarkChanged(stale), 0);
  ASSERT_TRUE(svc.Scan().ok());
  ASSERT_TRUE(svc.SendPending().ok());
  EXPECT_EQ(mailer_->sent.size(), 1u) << "nothing recorded of the old version, nothing mailed again";
  // Within a second (a listing's LastModified has whole seconds) another version counts.
  auto close = listed;
  for (auto& o : close) {
    o.etag = "\"new\"";
    o.last_modified_millis -= 900;
  }
  EXPECT_EQ(*svc.MarkChanged(close), 1);
  // A listing shows the objects as they are, whatever time an event recorded before.
  auto ahead = listed;
  for (auto& o : ahead) {
    o.etag = "\"ahead\"";
    o.last_modified_millis += 3'600'000;
  }
  EXPECT_EQ(*svc.MarkChanged(ahead), 1);
  auto scanned = svc.Scan();
  ASSERT_TRUE(scanned.ok());
  EXPECT_EQ(scanned->marked, 1);
}

TEST_P(ServiceTest, SharedFilesAloneWaitForTheFirstGatewayAndMissingObjectsChangeNothing) {
  ASSERT_TRUE(inbound_->Put("Inbound/W1/endpoints_r_1.json", "{}").ok());
  auto& svc = Service();
  ASSERT_TRUE(svc.Scan().ok());
  ASSERT_TRUE(svc.SendPending().ok());
  EXPECT_TRUE(mailer_->sent.empty()) << "no mail for shared files of a warehouse without gateways";
  EXPECT_EQ(Statuses("W1")["SHARED_FILES"], "PENDING_EMAIL");

  Gateway("W1", 7, 100);
  Gateway("W1", 8, 100);
  ASSERT_TRUE(svc.Scan().ok());
  fs::remove(root_ + "/inbound/Inbound/W1/00800000d0000007/00007.key");  // gone after the scan
  ASSERT_TRUE(svc.SendPending().ok());
  ASSERT_EQ(mailer_->sent.size(), 1u);
  EXPECT_EQ(mailer_->sent[0].subject, "W1: Gateway Certificates and Server/Endpoints Files");
  auto st = Statuses("W1");
  EXPECT_EQ(st["00800000d0000007"], "PENDING_EMAIL") << "a missing object changes no record";
  EXPECT_EQ(st["00800000d0000008"], "EMAILED");
  EXPECT_EQ(st["SHARED_FILES"], "EMAILED");
}

TEST_P(ServiceTest, StrayObjectsAreWarnedAboutOncePerChange) {
  ASSERT_TRUE(inbound_->Put("Inbound/W1/notes.txt", "a").ok());
  auto& svc = Service();
  ::testing::internal::CaptureStderr();  // where the JSON log lines go
  const bool scanned =
      svc.Scan().ok() && svc.Scan().ok() && inbound_->Put("Inbound/W1/notes.txt", "changed").ok() && svc.Scan().ok();
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(scanned);
  size_t warnings = 0;
  for (size_t pos = 0; (pos = log.find("ignoring inbound object", pos)) != std::string::npos; ++pos) ++warnings;
  EXPECT_EQ(warnings, 2u) << "once at first sight, once after the change";
}

TEST_P(ServiceTest, FilesThatGrewSinceTheScanWaitForTheNextRun) {
  options_.zip_max_bytes = 70'000;
  Gateway("W1", 1, 1000);
  Gateway("W1", 2, 1000);
  auto& svc = Service();
  ASSERT_TRUE(svc.Scan().ok());
  Gateway("W1", 1, 200'000);  // re-uploaded, far bigger, after the scan
  ASSERT_TRUE(svc.SendPending().ok());
  auto st = Statuses("W1");
  EXPECT_EQ(st["00800000d0000001"], "PENDING_EMAIL");
  EXPECT_EQ(st["00800000d0000002"], "EMAILED");
  auto deliveries = store::Read(*store_, [](store::Tx& tx) { return store::ListDeliveries(tx, {}, {}, 10); });
  ASSERT_EQ(deliveries->size(), 1u);
  EXPECT_LE(deliveries->front().zip_bytes, 70'000);
}

TEST_P(ServiceTest, OneRunAtATime) {
  Gateway("W1", 1, 100);
  auto& svc = Service();
  ASSERT_TRUE(svc.Scan().ok());
  {
    auto held = store_->TryLead("distribution-send");  // as another node's run would
    ASSERT_TRUE(held.ok() && *held);
    auto busy = svc.SendPending();
    ASSERT_FALSE(busy.ok());
    EXPECT_EQ(busy.error().code, ErrorCode::kFailedPrecondition);
    EXPECT_TRUE(mailer_->sent.empty());
  }
  ASSERT_TRUE(svc.SendPending().ok());
  EXPECT_EQ(mailer_->sent.size(), 1u);
}

TEST_P(ServiceTest, ARunThatLosesItsLeaseStopsBeforeItsNextWarehouse) {
  if (GetParam() != store::Dialect::kPostgres) GTEST_SKIP() << "SQLite's lease is a file lock, never lost";
  Gateway("W1", 1, 100);
  Gateway("W2", 2, 100);
  auto& svc = Service();
  ASSERT_TRUE(svc.Scan().ok());
  LoseTheLeaseAtTheFirstMail();
  auto run = svc.SendPending();
  ASSERT_FALSE(run.ok()) << "the run goes on without its lease";
  EXPECT_EQ(run.error().code, ErrorCode::kUnavailable);
  EXPECT_NE(run.error().message.find("lost its lease"), std::string::npos) << run.error().message;
  EXPECT_EQ(mailer_->sent.size(), 1u) << "the second warehouse is left for the next run";
  auto next = svc.SendPending();
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(mailer_->sent.size(), 2u);
}

// Within one warehouse too: a run that lost its lease sends no further part of it.
TEST_P(ServiceTest, ARunThatLosesItsLeaseStopsBeforeItsNextPart) {
  if (GetParam() != store::Dialect::kPostgres) GTEST_SKIP() << "SQLite's lease is a file lock, never lost";
  options_.zip_max_bytes = 40'000;
  for (int i = 0; i < 30; ++i) Gateway("W1", i, 2500);
  auto& svc = Service();
  ASSERT_TRUE(svc.Scan().ok());
  LoseTheLeaseAtTheFirstMail();
  auto run = svc.SendPending();
  ASSERT_FALSE(run.ok()) << "the run goes on without its lease";
  EXPECT_NE(run.error().message.find("lost its lease"), std::string::npos) << run.error().message;
  ASSERT_EQ(mailer_->sent.size(), 1u) << "no part after the lease was lost";
  int pending = 0;
  for (const auto& [eui, status] : Statuses("W1")) pending += status == "PENDING_EMAIL";
  EXPECT_GT(pending, 0);
  auto next = svc.SendPending();
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(next->gateways_sent, pending) << "the rest goes in the next run, nothing twice";
  for (const auto& [eui, status] : Statuses("W1")) EXPECT_EQ(status, "EMAILED") << eui;
}

TEST_P(ServiceTest, NoRecipientFailsTheRecordsWithTheReason) {
  options_.default_recipient.clear();
  Gateway("W1", 1, 100);
  auto& svc = Service();
  ASSERT_TRUE(svc.Scan().ok());
  ASSERT_TRUE(svc.SendPending().ok());
  auto rec = store::Read(*store_, [](store::Tx& tx) { return store::FindRecord(tx, "W1", "00800000d0000001"); });
  ASSERT_TRUE(rec.ok() && *rec);
  EXPECT_EQ((*rec)->status, store::DistributionStatus::kFailedEmail);
  EXPECT_NE((*rec)->last_error->find("no recipients"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Drivers, ServiceTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::distribution
