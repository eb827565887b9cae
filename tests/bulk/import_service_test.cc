// Importing Thingpress's real manifests into the registry: counts, idempotence, conflicts,
// resuming after an interruption, cancelling, and what the things look like afterwards.
#include "bulk/import_service.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "blob/blob_store.h"
#include "core/crypto.h"
#include "pki/certificate.h"
#include "pki/key.h"
#include "registry/registry.h"
#include "testing/db.h"
#include "testing/files.h"
#include "testing/registry.h"

namespace certfleet::bulk {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using registry::Kind;

std::string Fixture(const std::string& name) { return testing::ThingpressFixture(name); }
std::string Slurp(const std::string& path) { return testing::ReadFile(path); }

class ImportTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    dir_ = testing::TempDir();
    registry_ = std::make_unique<registry::Registry>(*store_, clock_);
    ImportService::Options options;
    options.manifest_dir = dir_ + "/manifests";
    options.verifiers_pem = {Slurp(Fixture("mchp_verifiers/MCHP_manifest_signer_5_Mar_6-2024_noExpiration.crt"))};
    options.batch_size = 30;
    imports_ = std::make_unique<ImportService>(*store_, clock_, options);
    Make(Kind::kThingType, {{"name", "tracker"}});
    Make(Kind::kThingGroup, {{"name", "fleet"}});
    Make(Kind::kPolicy, json::parse(R"({"name": "connect", "document": {"Statement": [
           {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}})"));
    Make(Kind::kProfile,
         {{"name", "trackers"}, {"thing_type", "tracker"}, {"thing_groups", {"fleet"}}, {"policies", {"connect"}}});
  }
  void Make(Kind kind, json::value body) {
    auto made = testing::CreateJson(*registry_, kind, body);
    ASSERT_TRUE(made.ok()) << made.error().message;
  }
  // A copy of the fixture (Start moves the file it is given).
  std::string Copy(const std::string& name) {
    const std::string to = dir_ + "/" + std::to_string(copies_++) + "-" + name.substr(name.rfind('/') + 1);
    fs::copy_file(Fixture(name), to);
    return to;
  }
  store::ImportRecord Import(const std::string& supplier, const std::string& fixture, const std::string& bundle = "") {
    auto started = imports_->Start(supplier, "trackers", bundle, Copy(fixture), "token:ops");
    EXPECT_TRUE(started.ok()) << started.error().message;
    if (!started.ok()) return {};
    auto done = imports_->Run(started->id);
    EXPECT_TRUE(done.ok()) << done.error().message;
    return done.ok() ? *done : store::ImportRecord{};
  }
  int64_t Count(const std::string& sql) { return store_->Query(sql)->at(0).Int(0); }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  std::string dir_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<ImportService> imports_;
  int copies_ = 0;
};

TEST_P(ImportTest, EveryFixtureImportsAndASecondImportFindsEverythingPresent) {
  const std::vector<std::tuple<std::string, std::string, std::string, int64_t>> fixtures = {
      {"microchip", "ECC608C-TNGTLSU-B.json", "", 10},
      {"espressif", "manifest-espressif.csv", "", 7},
      {"infineon", "manifest-infineon.7z", "E0E1", 200},
      {"generated", "certificates_test.txt", "", 100}};
  int64_t total = 0;
  for (const auto& [supplier, file, bundle, count] : fixtures) {
    store::ImportRecord first = Import(supplier, file, bundle);
    EXPECT_EQ(first.state, "done") << supplier;
    EXPECT_EQ(first.counts.seen, count) << supplier;
    EXPECT_EQ(first.counts.imported, count) << supplier;
    EXPECT_EQ(first.counts.rejected + first.counts.conflicts, 0) << supplier;
    total += count;
    store::ImportRecord again = Import(supplier, file, bundle);
    EXPECT_EQ(again.counts.already_present, count) << supplier;
    EXPECT_EQ(again.counts.imported, 0) << supplier;
  }
  EXPECT_EQ(Count("SELECT COUNT(*) FROM imported_certificates"), total);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM registry_objects WHERE kind = 'thing'"), total);

  json::object thing = *testing::GetJson(*registry_, Kind::kThing, "4BA2BB8764BD");
  EXPECT_EQ(thing["thing_type"], "tracker");
  EXPECT_EQ(thing["thing_groups"], json::array({"fleet"}));
  ASSERT_EQ(thing["certificates"].as_array().size(), 1u);
  EXPECT_EQ(thing["certificates"].as_array()[0].at("source"), "espressif");
  ASSERT_EQ(thing["effective_policies"].as_array().size(), 1u);
  EXPECT_EQ(thing["effective_policies"].as_array()[0].at("name"), "connect");
}

TEST_P(ImportTest, AThingThatExistsTakesTheProfilesTypeAndKeepsItsAttributes) {
  Make(Kind::kThingType, {{"name", "sensor"}});
  Make(Kind::kThing, {{"name", "4BA2BB8764BD"}, {"thing_type", "sensor"}, {"attributes", {{"site", "lyon"}}}});
  Make(Kind::kThing, {{"name", "untyped"}});
  store::ImportRecord r = Import("espressif", "manifest-espressif.csv");
  EXPECT_EQ(r.counts.imported, 7);
  json::object thing = *testing::GetJson(*registry_, Kind::kThing, "4BA2BB8764BD");
  EXPECT_EQ(thing["thing_type"], "tracker");
  EXPECT_EQ(thing["attributes"], json::object({{"site", "lyon"}}));
  EXPECT_EQ(thing["certificates"].as_array().size(), 1u);
  // Listed under its new type only, as the registry filters by it.
  registry::ListFilter by_type;
  by_type.ref = "tracker";
  auto trackers = registry_->List(Kind::kThing, by_type);
  ASSERT_TRUE(trackers.ok()) << trackers.error().message;
  EXPECT_EQ(trackers->size(), 7u);
  by_type.ref = "sensor";
  auto sensors = registry_->List(Kind::kThing, by_type);
  ASSERT_TRUE(sensors.ok());
  EXPECT_TRUE(sensors->empty());
  // A profile without a type leaves a thing's type alone (Device-0: the CN of the first
  // certificate of the generated fixture).
  Make(Kind::kThing, {{"name", "Device-0"}, {"thing_type", "sensor"}});
  Make(Kind::kProfile, {{"name", "untyped-profile"}, {"policies", {"connect"}}});
  auto started = imports_->Start("generated", "untyped-profile", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(started.ok()) << started.error().message;
  auto done = imports_->Run(started->id);
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->counts.imported, 100);
  json::object device0 = *testing::GetJson(*registry_, Kind::kThing, "Device-0");
  EXPECT_EQ(device0["thing_type"], "sensor");
  EXPECT_EQ(device0["certificates"].as_array().size(), 1u);
}

TEST_P(ImportTest, ACertificateImportedForAnotherThingIsAConflictAndStays) {
  Import("espressif", "manifest-espressif.csv");          // its first certificate is named 4BA2BB8764BD
  store::ImportRecord pem = Import("pem", "single.pem");  // the same certificate, named by its CN
  EXPECT_EQ(pem.counts.conflicts, 1);
  auto rows = imports_->Rows(pem.id, std::string("conflict"), 0, 100);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_NE((*rows)[0].reason.find("4BA2BB8764BD"), std::string::npos) << (*rows)[0].reason;
  EXPECT_FALSE(registry_->Get(Kind::kThing, "6d1d54ba-ed81-4c32-8e08-f9f8c885a6ed").ok()) << "not moved";
}

TEST_P(ImportTest, AnInterruptedImportResumesWithTheBatchesNotCommittedAndNothingTwice) {
  auto started = imports_->Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(started.ok());
  imports_->fail_after_batches = 2;
  EXPECT_FALSE(imports_->Run(started->id).ok()) << "stopped as a crash would";
  store::ImportRecord halfway = *imports_->Get(started->id);
  // Two writers: the batch written beside the second may have committed too.
  EXPECT_TRUE(halfway.position == 60 || halfway.position == 90) << halfway.position;
  EXPECT_EQ(halfway.counts.imported, halfway.position);
  EXPECT_EQ(halfway.state, "running");
  EXPECT_GT(halfway.read_permille, 500) << "at least 60 of 100 lines read";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM imported_certificates"), halfway.position);
  imports_->fail_after_batches = -1;
  std::vector<int64_t> progress;
  auto done = imports_->Run(started->id, [&](const store::ImportRecord& r, double fraction) {
    progress.push_back(r.position);
    EXPECT_GT(fraction, 0.0);
    EXPECT_LE(fraction, 1.0);
  });
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->read_permille, 1000);
  EXPECT_EQ(done->counts.seen, 100);
  EXPECT_EQ(done->counts.imported, 100);
  EXPECT_EQ(done->counts.already_present, 0) << "the resumed run skipped what was committed";
  ASSERT_FALSE(progress.empty());
  EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
  EXPECT_EQ(progress.back(), 100);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM imported_certificates"), 100);
  EXPECT_TRUE(imports_->Run(started->id).ok()) << "a done import runs as a no-op";
}

TEST_P(ImportTest, AResumedImportSkipsExactlyTheBatchesCommittedWhereverTheyAre) {
  auto started = imports_->Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(started.ok());
  // As if the batch of entries 31-60 had committed and the one before had not when the
  // process died (writers commit in any order).
  store::ImportCounts counted{30, 30, 0, 0, 0};
  ASSERT_TRUE(store_
                  ->Transact([&](store::Tx& tx) {
                    return store::RecordImportBatch(tx, started->id, {30, 30}, counted, 600, clock_.NowMillis());
                  })
                  .ok());
  auto done = imports_->Run(started->id);
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->state, "done");
  EXPECT_EQ(done->counts.seen, 100);
  EXPECT_EQ(done->counts.imported, 100);
  EXPECT_EQ(done->position, 100);
  // Written now: entries 1-30 and 61-100, and none of the batch counted before.
  EXPECT_EQ(Count("SELECT COUNT(*) FROM imported_certificates"), 70);
  auto refs = store_->Query("SELECT MIN(ref), MAX(ref) FROM imported_certificates WHERE ref > " +
                            fmt::format("'import:{:010}:{:010}'", started->id, 30) +
                            " AND ref <= " + fmt::format("'import:{:010}:{:010}'", started->id, 60));
  ASSERT_TRUE(refs.ok());
  EXPECT_TRUE(refs->at(0).IsNull(0)) << refs->at(0).Text(0);
  EXPECT_EQ(Count(fmt::format("SELECT COUNT(*) FROM imported_certificates WHERE ref = 'import:{:010}:{:010}'",
                              started->id, 61)),
            1);
}

TEST_P(ImportTest, TheSameCertificatesTwiceInOneManifestAreImportedOnceWhicheverWriterComesFirst) {
  // Entries 1-30 again as 31-60: two batches that two writers write at the same time.
  std::istringstream lines(Slurp(Fixture("certificates_test.txt")));
  std::string first30;
  std::string line;
  for (int i = 0; i < 30 && std::getline(lines, line); ++i) first30 += line + "\n";
  const std::string path = dir_ + "/twice.txt";
  std::ofstream(path) << first30 << first30;
  for (int run = 0; run < 5; ++run) {
    const std::string copy = dir_ + "/twice-" + std::to_string(run) + ".txt";
    fs::copy_file(path, copy);
    auto started = imports_->Start("generated", "trackers", "", copy, "t");
    ASSERT_TRUE(started.ok()) << started.error().message;
    auto done = imports_->Run(started->id);
    ASSERT_TRUE(done.ok()) << done.error().message;
    EXPECT_EQ(done->counts.seen, 60);
    EXPECT_EQ(done->counts.imported, run == 0 ? 30 : 0);
    EXPECT_EQ(done->counts.already_present, run == 0 ? 30 : 60);
  }
  EXPECT_EQ(Count("SELECT COUNT(*) FROM imported_certificates"), 30);
}

TEST_P(ImportTest, AnImportRefusesToStartWhenItsProfileNamesWhatDoesNotExist) {
  Make(Kind::kProfile, {{"name", "broken"}, {"policies", {"missing-policy"}}});
  auto started = imports_->Start("generated", "broken", "", Copy("certificates_test.txt"), "t");
  ASSERT_FALSE(started.ok());
  EXPECT_EQ(started.error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(started.error().message.find("policy missing-policy"), std::string::npos);
  EXPECT_EQ(imports_->Start("acme", "trackers", "", Copy("single.pem"), "t").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(imports_->Start("infineon", "trackers", "", Copy("manifest-infineon.7z"), "t").error().code,
            ErrorCode::kInvalidArgument)
      << "no bundle type";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM imports"), 0);
}

TEST_P(ImportTest, RejectedEntriesAreListedWithTheirReason) {
  // Three good lines, then one that is base64 of something else.
  std::istringstream lines(Slurp(Fixture("certificates_test.txt")));
  std::ofstream mixed(dir_ + "/mixed.txt");
  std::string line;
  for (int i = 0; i < 3 && std::getline(lines, line); ++i) mixed << line << "\n";
  mixed << "bm9wZQ==\n";
  mixed.close();
  auto started = imports_->Start("generated", "trackers", "", dir_ + "/mixed.txt", "t");
  ASSERT_TRUE(started.ok());
  auto done = imports_->Run(started->id);
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->counts.rejected, 1);
  auto rows = imports_->Rows(started->id, std::string("rejected"), 0, 10);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].index, done->counts.seen);
  EXPECT_NE((*rows)[0].reason.find("base64 of a PEM"), std::string::npos) << (*rows)[0].reason;
}

// A reason quotes what the manifest says (a kid, a uniqueId); a NUL byte there, which no
// database text holds, is written escaped and rejects its entry only.
TEST_P(ImportTest, AReasonQuotingAControlCharacterIsStoredEscaped) {
  std::string json = Slurp(Fixture("ECC608C-TNGTLSU-B.json"));
  const size_t at = json.find('"', json.find(':', json.find("\"protected\""))) + 1;
  json.replace(at, json.find('"', at) - at, Base64UrlEncode(R"({"alg":"ES256","kid":"a\u0000b"})"));
  std::ofstream(dir_ + "/nul.json") << json;
  auto started = imports_->Start("microchip", "trackers", "", dir_ + "/nul.json", "t");
  ASSERT_TRUE(started.ok()) << started.error().message;
  auto done = imports_->Run(started->id);
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->counts.rejected, 1);
  EXPECT_EQ(done->counts.imported, 9);
  auto rows = imports_->Rows(started->id, std::string("rejected"), 0, 10);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_NE((*rows)[0].reason.find("kid a\\x00b"), std::string::npos) << (*rows)[0].reason;
}

TEST_P(ImportTest, ACancelledImportStopsAndStaysCancelled) {
  auto started = imports_->Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(started.ok());
  ASSERT_TRUE(imports_->Cancel(started->id, "t").ok());
  auto run = imports_->Run(started->id);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->state, "cancelled");
  EXPECT_EQ(run->counts.seen, 0);
  EXPECT_EQ(imports_->Cancel(started->id, "t").error().code, ErrorCode::kFailedPrecondition);
}

TEST_P(ImportTest, ManifestsDroppedIntoTheInboundStoreAreImportedOnce) {
  auto inbound = blob::OpenBlobStore("file://" + dir_ + "/inbound", {});
  ASSERT_TRUE(inbound.ok());
  const std::string manifest = Slurp(Fixture("certificates_test.txt"));
  ASSERT_TRUE((*inbound)->Put("imports/generated/trackers/batch-1.txt", manifest).ok());
  ASSERT_TRUE((*inbound)->Put("imports/generated/no-such-profile/batch-2.txt", manifest).ok());
  ASSERT_TRUE((*inbound)->Put("imports/readme.txt", "not a manifest place").ok());
  auto started = imports_->ScanInbound(**inbound);
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_EQ(*started, 1);
  auto list = imports_->List(std::nullopt, 10);
  ASSERT_EQ(list->size(), 2u) << "the one that started and the one recorded as failed";
  const store::ImportRecord& failed = (*list)[0].state == "failed" ? (*list)[0] : (*list)[1];
  const store::ImportRecord& queued = (*list)[0].state == "failed" ? (*list)[1] : (*list)[0];
  EXPECT_NE(failed.error.value_or("").find("no profile no-such-profile"), std::string::npos);
  EXPECT_EQ(queued.state, "queued");
  EXPECT_EQ(imports_->Run(queued.id)->counts.imported, 100);

  EXPECT_EQ(*imports_->ScanInbound(**inbound), 0) << "seen: not again";
  EXPECT_EQ(imports_->List(std::nullopt, 10)->size(), 2u);
  // A new version of the object (another ETag) is a new import: everything in it is present.
  ASSERT_TRUE((*inbound)->Put("imports/generated/trackers/batch-1.txt", manifest + "\n").ok());
  EXPECT_EQ(*imports_->ScanInbound(**inbound), 1);
  auto again = imports_->List(std::nullopt, 1);
  EXPECT_EQ(imports_->Run((*again)[0].id)->counts.already_present, 100);
}

// An inbound store that refuses the next `refusals` fetches (expired credentials, say).
class RefusingStore final : public blob::BlobStore {
 public:
  RefusingStore(blob::BlobStore& real, int refusals) : real_(real), refusals_(refusals) {}
  Result<void> List(std::string_view prefix, const blob::PageFn& page) override { return real_.List(prefix, page); }
  Result<std::string> Get(std::string_view key, size_t max_bytes) override { return real_.Get(key, max_bytes); }
  Result<void> GetToFile(std::string_view key, const std::string& path, size_t max_bytes) override {
    if (refusals_ > 0) {
      --refusals_;
      return MakeError(ErrorCode::kPermissionDenied, "HTTP 400 ExpiredToken");
    }
    return real_.GetToFile(key, path, max_bytes);
  }
  Result<void> Put(std::string_view key, std::string_view bytes) override { return real_.Put(key, bytes); }
  Result<void> PutFile(std::string_view key, const std::string& path) override { return real_.PutFile(key, path); }
  Result<void> Delete(std::string_view key) override { return real_.Delete(key); }
  std::string Describe() const override { return real_.Describe(); }

 private:
  blob::BlobStore& real_;
  int refusals_;
};

// A fetch the store refuses fails nothing: the object is the store's to give, and the next
// scan takes it.
TEST_P(ImportTest, AnInboundObjectTheStoreRefusesOnceIsImportedByTheNextScan) {
  auto real = blob::OpenBlobStore("file://" + dir_ + "/inbound", {});
  ASSERT_TRUE(real.ok());
  ASSERT_TRUE((*real)->Put("imports/generated/trackers/batch-1.txt", Slurp(Fixture("certificates_test.txt"))).ok());
  RefusingStore inbound(**real, 1);
  auto first = imports_->ScanInbound(inbound);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(*first, 0);
  EXPECT_TRUE(imports_->List(std::nullopt, 10)->empty()) << "nothing recorded as failed";
  auto second = imports_->ScanInbound(inbound);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(*second, 1);
  auto list = imports_->List(std::nullopt, 10);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(imports_->Run((*list)[0].id)->counts.imported, 100);
}

// A job that dies without its handler seeing it (its lease expired on the last attempt) leaves
// its import to the scan, which ends it as failed and deletes its manifest.
TEST_P(ImportTest, AnImportWhoseJobDiedUnseenIsFailedByTheNextScan) {
  auto orphan = imports_->Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  auto alive = imports_->Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(orphan.ok() && alive.ok());
  ASSERT_TRUE(store_
                  ->Transact([&](store::Tx& tx) -> Result<void> {
                    CF_ASSIGN_OR_RETURN(int64_t changed,
                                        tx.Exec("UPDATE jobs SET state = 'dead', last_error = 'lease expired' WHERE "
                                                "kind = 'bulk.import' AND payload = ?",
                                                {fmt::format("{{\"import_id\":{}}}", orphan->id)}));
                    EXPECT_EQ(changed, 1);
                    return Ok();
                  })
                  .ok());
  auto failed = imports_->FailOrphaned();
  ASSERT_TRUE(failed.ok()) << failed.error().message;
  EXPECT_EQ(*failed, 1);
  auto ended = imports_->Get(orphan->id);
  EXPECT_EQ(ended->state, "failed");
  EXPECT_NE(ended->error.value_or("").find("its job ended without finishing it: lease expired"), std::string::npos)
      << ended->error.value_or("");
  EXPECT_FALSE(fs::exists(ended->manifest)) << "its manifest is deleted";
  EXPECT_EQ(imports_->Get(alive->id)->state, "queued") << "an import whose job lives is left alone";
  EXPECT_EQ(*imports_->FailOrphaned(), 0) << "once";
}

TEST_P(ImportTest, ThingNamesFromManifestsFollowTheRegistrysRule) {
  // A PEM manifest whose certificates' CNs name things: one good, three that the registry's
  // API refuses (and that could then never be read or deleted by name).
  std::string pem;
  for (const std::string cn : {"good-1", "bad cn/with slash", "../../x", "a\x1b[31mb"}) {
    auto key = pki::GenerateKey(pki::KeyType::kEcP256);
    pki::CertificateSpec spec;
    spec.common_name = cn;
    spec.not_after_millis = clock_.NowMillis() + 86'400'000;
    auto cert = pki::SignCertificate(spec, key->get(), nullptr, key->get());
    ASSERT_TRUE(cert.ok());
    pem += *pki::CertificateToPem(cert->get());
  }
  std::ofstream(dir_ + "/names.pem") << pem;
  auto started = imports_->Start("pem", "trackers", "", dir_ + "/names.pem", "t");
  ASSERT_TRUE(started.ok()) << started.error().message;
  auto done = imports_->Run(started->id);
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->counts.imported, 1);
  EXPECT_EQ(done->counts.rejected, 3);
  auto rows = imports_->Rows(started->id, std::string("rejected"), 0, 10);
  ASSERT_EQ(rows->size(), 3u);
  for (const auto& row : *rows) EXPECT_NE(row.reason.find("a thing name must be"), std::string::npos) << row.reason;
  EXPECT_EQ((*rows)[2].thing_name, "a\\x1b[31mb") << "kept escaped, for the report";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM registry_objects WHERE kind = 'thing'"), 1);
  EXPECT_TRUE(registry_->Get(Kind::kThing, "good-1").ok());
}

TEST_P(ImportTest, ManifestsAreDeletedWhenTheirImportEnds) {
  const fs::path kept = dir_ + "/manifests";
  auto files = [&] { return std::distance(fs::directory_iterator(kept), fs::directory_iterator{}); };
  // Done.
  EXPECT_EQ(Import("generated", "certificates_test.txt").state, "done");
  EXPECT_EQ(files(), 0);
  // Failed: not an archive.
  std::ofstream(dir_ + "/not.7z") << "not an archive";
  auto failing = imports_->Start("infineon", "trackers", "E0E1", dir_ + "/not.7z", "t");
  ASSERT_TRUE(failing.ok());
  EXPECT_EQ(files(), 1);
  for (const auto& f : fs::directory_iterator(kept)) {
    EXPECT_EQ(f.status().permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write)
        << "a waiting manifest is certfleet's alone";
  }
  EXPECT_FALSE(imports_->Run(failing->id).ok());
  auto failed = imports_->Get(failing->id);
  EXPECT_EQ(failed->state, "failed");
  EXPECT_EQ(failed->error.value_or("").find(dir_), std::string::npos) << "no server path: " << *failed->error;
  EXPECT_EQ(files(), 0);
  // Cancelled while queued: at once, before any run.
  auto queued = imports_->Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(queued.ok());
  ASSERT_TRUE(imports_->Cancel(queued->id, "t").ok());
  EXPECT_EQ(files(), 0);
  EXPECT_EQ(imports_->Run(queued->id)->state, "cancelled");
  // Cancelled while running (after its first batch): when the run stops.
  ImportService::Options one_writer;
  one_writer.manifest_dir = kept.string();
  one_writer.batch_size = 30;
  one_writer.writers = 1;
  ImportService imports(*store_, clock_, one_writer);
  auto running = imports.Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(running.ok());
  bool cancelled = false;
  auto stopped = imports.Run(running->id, [&](const store::ImportRecord&, double) {
    if (!std::exchange(cancelled, true)) {
      EXPECT_TRUE(imports.Cancel(running->id, "t").ok());
    }
  });
  ASSERT_TRUE(stopped.ok()) << stopped.error().message;
  EXPECT_EQ(stopped->state, "cancelled");
  EXPECT_LT(stopped->counts.seen, 100);
  EXPECT_EQ(files(), 0);
}

TEST_P(ImportTest, AnImportWhoseJobGivesUpEndsFailedWithItsManifestDeleted) {
  const fs::path kept = dir_ + "/manifests";
  auto started = imports_->Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(started.ok()) << started.error().message;
  imports_->fail_after_batches = 1;
  auto first = imports_->RunAttempt(started->id, 1, 3);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(imports_->Get(started->id)->state, "running") << "another attempt will resume it";
  EXPECT_FALSE(fs::is_empty(kept));
  auto last = imports_->RunAttempt(started->id, 3, 3);
  ASSERT_FALSE(last.ok());
  EXPECT_EQ(last.error().code, ErrorCode::kUnavailable) << "the job records the error it got";
  auto failed = imports_->Get(started->id);
  EXPECT_EQ(failed->state, "failed");
  EXPECT_EQ(failed->error.value_or(""), "given up after 3 attempts: stopped for a test");
  EXPECT_TRUE(fs::is_empty(kept)) << "its manifest is deleted";
}

TEST_P(ImportTest, AManifestWaitingInTheObjectStoreIsResumedByAnotherNodeAndDeletedAtTheEnd) {
  auto blobs = blob::OpenBlobStore("file://" + dir_ + "/blobs", {});
  ASSERT_TRUE(blobs.ok());
  auto waiting = [&] {
    std::vector<std::string> keys;
    EXPECT_TRUE((*blobs)
                    ->List("manifests/",
                           [&](std::vector<blob::ObjectInfo>& page) -> Result<void> {
                             for (const auto& o : page) keys.push_back(o.key);
                             return Ok();
                           })
                    .ok());
    return keys;
  };
  // Two nodes: each its own scratch folder, one object store.
  auto node = [&](const std::string& name) {
    ImportService::Options options;
    options.manifest_dir = dir_ + "/" + name;
    options.batch_size = 30;
    return std::make_unique<ImportService>(*store_, clock_, options, blobs->get());
  };
  auto first = node("node-1");
  auto second = node("node-2");
  const std::string upload = Copy("certificates_test.txt");
  auto started = first->Start("generated", "trackers", "", upload, "t");
  ASSERT_TRUE(started.ok()) << started.error().message;
  EXPECT_FALSE(fs::exists(upload)) << "the upload is in the object store now";
  EXPECT_FALSE(fs::exists(dir_ + "/node-1") && !fs::is_empty(dir_ + "/node-1")) << "nothing kept on the node";
  ASSERT_EQ(waiting().size(), 1u);
  EXPECT_EQ(started->manifest, "blob:" + waiting()[0]);

  first->fail_after_batches = 1;
  EXPECT_FALSE(first->Run(started->id).ok()) << "stopped as a crash would";
  EXPECT_TRUE(fs::is_empty(dir_ + "/node-1")) << "the scratch copy is gone with the run";
  const int64_t halfway = imports_->Get(started->id)->position;
  EXPECT_GT(halfway, 0);
  EXPECT_LT(halfway, 100);

  auto done = second->Run(started->id);
  ASSERT_TRUE(done.ok()) << done.error().message;
  EXPECT_EQ(done->state, "done");
  EXPECT_EQ(done->counts.imported, 100);
  EXPECT_EQ(done->counts.already_present, 0) << "the second node skipped what the first committed";
  EXPECT_EQ(Count("SELECT COUNT(*) FROM imported_certificates"), 100);
  EXPECT_TRUE(waiting().empty()) << "deleted when the import ended";
  EXPECT_TRUE(fs::is_empty(dir_ + "/node-2"));

  // A node that keeps manifests in a folder cannot run it, and says why; a manifest gone
  // from the store fails the import rather than retrying forever.
  auto lost = first->Start("generated", "trackers", "", Copy("certificates_test.txt"), "t");
  ASSERT_TRUE(lost.ok());
  auto folder_node = imports_->Run(lost->id);
  ASSERT_FALSE(folder_node.ok());
  EXPECT_NE(folder_node.error().message.find("object store"), std::string::npos) << folder_node.error().message;
  ASSERT_TRUE((*blobs)->Delete(lost->manifest.substr(5)).ok());
  EXPECT_FALSE(second->Run(lost->id).ok());
  EXPECT_EQ(imports_->Get(lost->id)->state, "failed");
}

INSTANTIATE_TEST_SUITE_P(Drivers, ImportTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::bulk
