// The registry as an operator uses it: create, read, list with filters and pages, update,
// delete refused while something depends on it, attach and detach, validation.
#include "registry/registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <latch>
#include <thread>

#include "issuance/issuer.h"
#include "pki/file/file_key_backend.h"
#include "testing/db.h"
#include "testing/registry.h"

namespace certfleet::registry {
namespace {

namespace json = boost::json;

class RegistryTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    registry_ = std::make_unique<Registry>(*store_, clock_);
  }
  Result<json::object> Create(Kind kind, const json::value& body) {
    return testing::CreateJson(*registry_, kind, body);
  }
  json::object Made(Kind kind, json::value body) {
    auto r = Create(kind, std::move(body));
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : json::object{};
  }
  // The refusal's code, and its message in `message`.
  ErrorCode Refused(const Result<json::object>& r, std::string* message = nullptr) {
    EXPECT_FALSE(r.ok());
    if (r.ok()) return ErrorCode::kInternal;
    if (message) *message = r.error().message;
    return r.error().code;
  }
  // A CA to issue certificates that things and policies can be attached to.
  std::string IssueDevice() {
    if (!issuer_) {
      keys_ = std::make_unique<pki::file::FileKeyBackend>(testing::TempDir() + "/keys", std::string(64, 'k'));
      issuer_ =
          std::make_unique<issuance::Issuer>(*store_, *keys_, clock_, issuance::Issuer::Options{"https://ca.test"});
      issuance::IssueRequest root;
      root.type = pki::CertType::kRoot;
      root.name = "example.com";
      EXPECT_TRUE(issuer_->Issue(root, "t").ok());
    }
    issuance::IssueRequest device;
    device.type = pki::CertType::kDevice;
    device.name = "device-" + std::to_string(++devices_);
    device.subject = store::SubjectKind::kDevice;
    device.parent = "example.com";
    return issuer_->Issue(device, "t")->record.serial;
  }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<pki::file::FileKeyBackend> keys_;
  std::unique_ptr<issuance::Issuer> issuer_;
  int devices_ = 0;
};

const json::value kPolicy = {{"Version", "2012-10-17"},
                             {"Statement", {{{"Effect", "Allow"}, {"Action", {"iot:Connect"}}, {"Resource", "*"}}}}};

TEST_P(RegistryTest, ObjectsAreCreatedReadListedInPagesUpdatedAndDeleted) {
  json::object made = Made(Kind::kThingType, {{"name", "sensor"}, {"description", "a sensor"}});
  EXPECT_EQ(made["name"], "sensor");
  EXPECT_EQ(made["description"], "a sensor");
  EXPECT_EQ(Refused(Create(Kind::kThingType, {{"name", "sensor"}})), ErrorCode::kAlreadyExists);
  for (const char* name : {"t-3", "t-1", "t-2"}) Made(Kind::kThing, {{"name", name}, {"thing_type", "sensor"}});
  Made(Kind::kThing, {{"name", "t-0"}, {"attributes", {{"color", "red"}}}});

  auto page = registry_->List(Kind::kThing, {"sensor", {}, {}, 2});
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ(NameOf((*page)[0].body), "t-1");
  auto rest = registry_->List(Kind::kThing, {"sensor", {}, NameOf((*page)[1].body), 2});
  ASSERT_EQ(rest->size(), 1u);
  EXPECT_EQ(NameOf((*rest)[0].body), "t-3");

  auto updated = testing::UpdateJson(*registry_, Kind::kThing, "t-0", {{"attributes", {{"color", "blue"}}}});
  ASSERT_TRUE(updated.ok()) << updated.error().message;
  EXPECT_EQ(testing::GetJson(*registry_, Kind::kThing, "t-0")->at("attributes").at("color"), "blue");
  EXPECT_EQ(Refused(testing::UpdateJson(*registry_, Kind::kThing, "t-0", {{"name", "t-9"}})),
            ErrorCode::kInvalidArgument);

  std::string message;
  EXPECT_EQ(registry_->Delete(Kind::kThingType, "sensor", "t").error().code, ErrorCode::kFailedPrecondition);
  message = registry_->Delete(Kind::kThingType, "sensor", "t").error().message;
  EXPECT_NE(message.find("thing t-1 has this type"), std::string::npos) << message;
  for (const char* name : {"t-1", "t-2", "t-3"}) ASSERT_TRUE(registry_->Delete(Kind::kThing, name, "t").ok());
  EXPECT_TRUE(registry_->Delete(Kind::kThingType, "sensor", "t").ok());
  EXPECT_EQ(testing::GetJson(*registry_, Kind::kThingType, "sensor").error().code, ErrorCode::kNotFound);
}

TEST_P(RegistryTest, BodiesAreValidated) {
  std::string message;
  EXPECT_EQ(Refused(Create(Kind::kThing, {{"name", "a/b"}}), &message), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refused(Create(Kind::kThing, {{"name", "x' OR '1'='1"}})), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refused(Create(Kind::kThing, {{"description", "no name"}})), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refused(Create(Kind::kThing, {{"name", "t"}, {"thing_type", "missing"}}), &message),
            ErrorCode::kInvalidArgument);
  EXPECT_NE(message.find("no thing-type missing"), std::string::npos) << message;
  EXPECT_EQ(Refused(Create(Kind::kThing, {{"name", "t"}, {"attributes", {{"n", 5}}}})), ErrorCode::kInvalidArgument)
      << "attribute values are strings";
  EXPECT_EQ(Refused(Create(Kind::kPolicy, {{"name", "p"}, {"document", "{}"}})), ErrorCode::kInvalidArgument);
  EXPECT_EQ(Refused(Create(Kind::kPolicy, {{"name", "p"}, {"document", {{"Statement", json::array()}}}})),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(
      Refused(Create(Kind::kPolicy,
                     {{"name", "p"},
                      {"document", {{"Statement", {{{"Effect", "Maybe"}, {"Action", "a"}, {"Resource", "*"}}}}}}}),
              &message),
      ErrorCode::kInvalidArgument);
  EXPECT_NE(message.find("Effect must be Allow or Deny"), std::string::npos) << message;
  EXPECT_EQ(Refused(Create(Kind::kTemplate, {{"name", "tp"}, {"ca_fqdn", "nope.example.com"}}), &message),
            ErrorCode::kInvalidArgument);
  EXPECT_NE(message.find("no CA"), std::string::npos) << message;
  Made(Kind::kPolicy, {{"name", "p"}, {"document", kPolicy}});
  EXPECT_EQ(registry_->List(Kind::kThing, {{}, {}, {}, 100})->size(), 0u) << "nothing refused was stored";
}

TEST_P(RegistryTest, AttachmentsShowInTheThingAndBlockDeletes) {
  const std::string serial = IssueDevice();
  Made(Kind::kThing, {{"name", "dev-1"}});
  Made(Kind::kThingGroup, {{"name", "plant"}});
  Made(Kind::kPolicy, {{"name", "connect"}, {"document", kPolicy}});
  ASSERT_TRUE(registry_->Attach(Link::kThingCertificate, "dev-1", serial, "t").ok());
  ASSERT_TRUE(registry_->Attach(Link::kThingCertificate, "dev-1", serial, "t").ok()) << "twice is no error";
  ASSERT_TRUE(registry_->Attach(Link::kPolicyCertificate, "connect", serial, "t").ok());
  ASSERT_TRUE(registry_->Attach(Link::kGroupThing, "plant", "dev-1", "t").ok());
  EXPECT_EQ(registry_->Attach(Link::kThingCertificate, "dev-1", "00ff", "t").error().code, ErrorCode::kNotFound);
  EXPECT_EQ(registry_->Attach(Link::kGroupThing, "plant", "dev-404", "t").error().code, ErrorCode::kNotFound);
  // Only a device's certificate, not revoked: a thing's are superseded and revoked with it.
  const std::string root = issuer_->Get("example.com")->serial;
  EXPECT_EQ(registry_->Attach(Link::kThingCertificate, "dev-1", root, "t").error().code,
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(registry_->Attach(Link::kPolicyCertificate, "connect", root, "t").error().code,
            ErrorCode::kFailedPrecondition);
  const std::string revoked = IssueDevice();
  ASSERT_TRUE(issuer_->Revoke(revoked, "keyCompromise", false, "t").ok());
  EXPECT_NE(registry_->Attach(Link::kThingCertificate, "dev-1", revoked, "t").error().message.find("is revoked"),
            std::string::npos);

  json::object thing = *testing::GetJson(*registry_, Kind::kThing, "dev-1");
  EXPECT_EQ(thing["thing_groups"], json::array({"plant"}));
  ASSERT_EQ(thing["certificates"].as_array().size(), 1u);
  EXPECT_EQ(thing["certificates"].as_array()[0].at("status"), "active");
  ASSERT_EQ(thing["effective_policies"].as_array().size(), 1u);
  EXPECT_EQ(thing["effective_policies"].as_array()[0].at("document"), kPolicy);

  auto members = registry_->List(Kind::kThing, {{}, std::string("plant"), {}, 100});
  ASSERT_EQ(members->size(), 1u);
  EXPECT_EQ(registry_->Delete(Kind::kThingGroup, "plant", "t").error().code, ErrorCode::kFailedPrecondition);
  EXPECT_NE(registry_->Delete(Kind::kPolicy, "connect", "t").error().message.find(serial), std::string::npos);
  EXPECT_NE(registry_->Delete(Kind::kThing, "dev-1", "t").error().message.find("detach it first"), std::string::npos);

  ASSERT_TRUE(registry_->Detach(Link::kThingCertificate, "dev-1", serial, "t").ok());
  EXPECT_EQ(registry_->Detach(Link::kThingCertificate, "dev-1", serial, "t").error().code, ErrorCode::kNotFound);
  ASSERT_TRUE(registry_->Detach(Link::kPolicyCertificate, "connect", serial, "t").ok());
  EXPECT_TRUE(registry_->Delete(Kind::kPolicy, "connect", "t").ok());
  EXPECT_TRUE(registry_->Delete(Kind::kThing, "dev-1", "t").ok()) << "its group memberships go with it";
  EXPECT_TRUE(registry_->Delete(Kind::kThingGroup, "plant", "t").ok());
}

// Provisioning's registry writes wait for the transaction's end, where a group commit's go
// together: a thing provisioned twice in one transaction keeps the last certificate active.
TEST_P(RegistryTest, ProvisioningTwiceInOneTransactionKeepsTheLastCertificateActive) {
  Made(Kind::kThingGroup, {{"name", "plant"}});
  ProvisioningTemplate tmpl;
  tmpl.name = "t";
  tmpl.thing_groups = {"plant"};
  PolicyDocument connect;
  connect.text = json::serialize(kPolicy);
  tmpl.policies.push_back({"connect", connect});
  auto provision = [&](const std::vector<std::pair<std::string, std::string>>& things) {
    return store_->Transact([&](store::Tx& tx) -> Result<void> {
      for (const auto& [thing, serial] : things) {
        CF_RETURN_IF_ERROR(Registry::RecordProvisioning(tx, tmpl, thing, serial, 1000, 5000));
      }
      return Ok();
    });
  };
  ASSERT_TRUE(provision({{"dev-1", "0a"}}).ok());
  ASSERT_TRUE(provision({{"dev-1", "0b"}, {"dev-2", "0c"}, {"dev-1", "0d"}}).ok());
  auto links = store::Read(
      *store_, [](store::Tx& tx) { return store::LinksFrom(tx, store::kThingCertificate, "dev-1", "", 10); });
  ASSERT_TRUE(links.ok());
  ASSERT_EQ(links->size(), 3u);
  std::map<std::string, std::pair<std::string, std::optional<int64_t>>> by_serial;
  for (const auto& l : *links) by_serial[l.to_name] = {l.state, l.due_at};
  EXPECT_EQ(by_serial["0a"], std::make_pair(std::string("superseded"), std::optional<int64_t>(5000)));
  EXPECT_EQ(by_serial["0b"], std::make_pair(std::string("superseded"), std::optional<int64_t>(5000)));
  EXPECT_EQ(by_serial["0d"], std::make_pair(std::string("active"), std::optional<int64_t>()));
  auto policies =
      store::Read(*store_, [](store::Tx& tx) { return store::LinksTo(tx, store::kPolicyCertificate, "0c", 10); });
  ASSERT_EQ(policies->size(), 1u) << "the template's policy, created once, is attached to each certificate";
  auto members = registry_->List(Kind::kThing, {{}, std::string("plant"), {}, 100});
  EXPECT_EQ(members->size(), 2u);
  // A read later in the transaction (enrollment's "is this a new thing?") sees them once
  // they are flushed.
  auto seen = store_->Transact([&](store::Tx& tx) -> Result<void> {
    CF_RETURN_IF_ERROR(Registry::RecordProvisioning(tx, tmpl, "dev-3", "0e", 1000, 5000));
    CF_ASSIGN_OR_RETURN(auto before, store::FindObject(tx, store::kObjectThing, "dev-3"));
    EXPECT_FALSE(before.has_value()) << "gathered for the transaction's end";
    CF_RETURN_IF_ERROR(store::FlushProvisioningWrites(tx));
    CF_ASSIGN_OR_RETURN(auto after, store::FindObject(tx, store::kObjectThing, "dev-3"));
    EXPECT_TRUE(after.has_value());
    CF_ASSIGN_OR_RETURN(auto links, store::LinksTo(tx, store::kThingCertificate, "0e", 1));
    EXPECT_EQ(links.size(), 1u);
    return Ok();
  });
  EXPECT_TRUE(seen.ok()) << seen.error().message;
}

// A certificate its device refused (CMP certConf) is taken back: the newest certificate it
// replaced that is still usable is the thing's active one again, not due for revocation.
TEST_P(RegistryTest, TakingBackARefusedCertificateRestoresTheNewestUsableOneItReplaced) {
  ProvisioningTemplate tmpl;
  tmpl.name = "t";
  const std::string a = IssueDevice(), b = IssueDevice(), c = IssueDevice();
  int64_t at = 1000;
  for (const auto& serial : {a, b, c}) {
    at += 1000;
    ASSERT_TRUE(store_
                    ->Transact([&](store::Tx& tx) {
                      return Registry::RecordProvisioning(tx, tmpl, "dev", serial, at, at + 100'000);
                    })
                    .ok());
  }
  ASSERT_TRUE(issuer_->Revoke(b, "keyCompromise", false, "t").ok());
  auto take_back = [&](const std::string& serial) {
    return store::Write(*store_,
                        [&](store::Tx& tx) { return Registry::TakeBackProvisioning(tx, "dev", serial, 9000); });
  };
  auto states = [&] {
    std::map<std::string, std::pair<std::string, std::optional<int64_t>>> by_serial;
    auto links =
        store::Read(*store_, [](store::Tx& tx) { return store::LinksFrom(tx, store::kThingCertificate, "dev"); });
    EXPECT_TRUE(links.ok());
    for (const auto& l : *links) by_serial[l.to_name] = {l.state, l.due_at};
    return by_serial;
  };
  auto restored = take_back(c);
  ASSERT_TRUE(restored.ok()) << restored.error().message;
  EXPECT_EQ(*restored, a) << "b, newer, is revoked";
  auto after = states();
  EXPECT_EQ(after[a], std::make_pair(std::string("active"), std::optional<int64_t>()));
  EXPECT_EQ(after[b].first, "superseded");
  EXPECT_EQ(after[c], std::make_pair(std::string("superseded"), std::optional<int64_t>(9000)))
      << "due at once, for the revocation sweep";
  // Not the active certificate (any more): nothing changes.
  restored = take_back(c);
  ASSERT_TRUE(restored.ok());
  EXPECT_FALSE(restored->has_value());
  EXPECT_EQ(states(), after);
  // The only usable one refused: nothing to restore, and it is superseded all the same.
  restored = take_back(a);
  ASSERT_TRUE(restored.ok());
  EXPECT_FALSE(restored->has_value());
  EXPECT_EQ(states()[a], std::make_pair(std::string("superseded"), std::optional<int64_t>(9000)));
}

TEST_P(RegistryTest, ABatchBelongsToOneTemplateAndOneTemplateIsTheDefault) {
  IssueDevice();  // makes the CA
  Made(Kind::kTemplate, {{"name", "a"}, {"ca_fqdn", "Example.com"}, {"batches", {"b-1"}}, {"default", true}});
  std::string message;
  EXPECT_EQ(
      Refused(Create(Kind::kTemplate, {{"name", "b"}, {"ca_fqdn", "example.com"}, {"batches", {"b-1"}}}), &message),
      ErrorCode::kAlreadyExists);
  EXPECT_NE(message.find("batch b-1 belongs to provisioning template a"), std::string::npos) << message;
  EXPECT_EQ(Refused(Create(Kind::kTemplate, {{"name", "b"}, {"ca_fqdn", "example.com"}, {"default", true}})),
            ErrorCode::kAlreadyExists);
  Made(Kind::kTemplate, {{"name", "b"}, {"ca_fqdn", "example.com"}, {"batches", {"b-2"}}});
  auto for_batch = [&](const std::string& batch) {
    return *store::Read(*store_, [&](store::Tx& tx) { return Registry::TemplateFor(tx, batch); });
  };
  EXPECT_EQ(for_batch("b-2")->name, "b");
  EXPECT_EQ(for_batch("b-1")->name, "a");
  EXPECT_EQ(for_batch("elsewhere")->name, "a") << "the default";
  EXPECT_EQ(for_batch("b-1")->ca_fqdn, "example.com") << "CA names are lowercase";
  ASSERT_TRUE(testing::UpdateJson(*registry_, Kind::kTemplate, "a", {{"default", false}}).ok());
  EXPECT_FALSE(for_batch("elsewhere").has_value());
  ASSERT_TRUE(registry_->Delete(Kind::kTemplate, "b", "t").ok());
  EXPECT_FALSE(for_batch("b-2").has_value()) << "its batches went with it";
}

TEST_P(RegistryTest, ObjectsAreTypedValuesAndThePolicyTextIsKeptAsWritten) {
  ThingType type;
  type.name = "sensor";
  type.searchable_attributes = {"site"};
  ASSERT_TRUE(registry_->Create(type, "t").ok());
  Thing thing;
  thing.name = "t-1";
  thing.thing_type = "sensor";
  thing.attributes = {{"site", "lyon"}};
  ASSERT_TRUE(registry_->Create(thing, "t").ok());
  auto read = registry_->Get(Kind::kThing, "t-1");
  ASSERT_TRUE(read.ok()) << read.error().message;
  const auto& got = std::get<Thing>(read->body);
  EXPECT_EQ(got.thing_type, "sensor");
  EXPECT_EQ(got.attributes.at("site"), "lyon");
  ASSERT_TRUE(read->detail.has_value()) << "a thing read alone comes with its detail";

  const std::string written =
      R"({"Statement":{"Effect":"Deny","Action":"iot:Publish","Resource":["topic/a","topic/b"],"Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"true"}}}})";
  Made(Kind::kPolicy, {{"name", "deny"}, {"document", json::parse(written)}});
  auto policy = registry_->Get(Kind::kPolicy, "deny");
  ASSERT_TRUE(policy.ok());
  const PolicyDocument& doc = std::get<Policy>(policy->body).document;
  ASSERT_EQ(doc.statements.size(), 1u);
  EXPECT_FALSE(doc.statements[0].allow);
  EXPECT_EQ(doc.statements[0].actions, std::vector<std::string>{"iot:Publish"});
  EXPECT_EQ(doc.statements[0].resources, (std::vector<std::string>{"topic/a", "topic/b"}));
  EXPECT_EQ(doc.statements[0].condition, R"({"Bool":{"iot:Connection.Thing.IsAttached":"true"}})");
  EXPECT_EQ(testing::GetJson(*registry_, Kind::kPolicy, "deny")->at("document"), json::parse(written))
      << "answered as written: a lone statement and a lone Action stay as they were";

  Thing renamed = got;
  renamed.name = "t-2";
  auto refused = registry_->Update(
      Kind::kThing, "t-1", [&](const Body&) { return Result<Body>(renamed); }, "t");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, ErrorCode::kInvalidArgument);
  Thing bad = got;
  bad.attributes["site"] = std::string("a\x01b");
  auto unchecked = registry_->Update(
      Kind::kThing, "t-1", [&](const Body&) { return Result<Body>(bad); }, "t");
  ASSERT_FALSE(unchecked.ok()) << "a change is checked as a creation is";
  EXPECT_EQ(std::get<Thing>(registry_->Get(Kind::kThing, "t-1")->body).attributes.at("site"), "lyon");
}

TEST_P(RegistryTest, TheSummaryCountsObjectsAndAttachedCertificates) {
  const std::string serial = IssueDevice();
  IssueDevice();  // not attached: not counted
  Made(Kind::kThingType, {{"name", "sensor"}});
  Made(Kind::kThing, {{"name", "dev-1"}, {"thing_type", "sensor"}});
  Made(Kind::kThing, {{"name", "dev-2"}});
  Made(Kind::kPolicy, {{"name", "connect"}, {"document", kPolicy}});
  ASSERT_TRUE(registry_->Attach(Link::kThingCertificate, "dev-1", serial, "t").ok());
  auto counts = registry_->Summary();
  ASSERT_TRUE(counts.ok()) << counts.error().message;
  const json::object summary = SummaryJson(*counts);
  EXPECT_EQ(summary.at("thing"), 2);
  EXPECT_EQ(summary.at("thing-type"), 1);
  EXPECT_EQ(summary.at("policy"), 1);
  EXPECT_EQ(summary.at("thing-group"), 0) << "every kind is named";
  EXPECT_EQ(summary.at("certificates"), json::parse(R"([{"source":"certfleet","status":"active","count":1}])"));
}

INSTANTIATE_TEST_SUITE_P(Drivers, RegistryTest, testing::kBothDialects, testing::DialectName);

// Two writers at once on one PostgreSQL, as on two nodes (SQLite has one writer: one of the two
// waits for the other whole, and then sees its claim).
using RegistryRaceTest = RegistryTest;

TEST_P(RegistryRaceTest, TwoTemplatesClaimingOneBatchAtOnceLeaveItToOne) {
  IssueDevice();  // makes the CA
  Made(Kind::kTemplate, {{"name", "a"}, {"ca_fqdn", "example.com"}});
  // Template a's claim of batch b-1 is written and not committed yet when b's is checked.
  std::latch claimed(1);
  std::latch go(1);
  std::thread first([&] {
    EXPECT_TRUE(store_
                    ->Transact([&](store::Tx& tx) -> Result<void> {
                      CF_RETURN_IF_ERROR(store::PutLink(
                          tx, {std::string(store::kBatchTemplate), "b-1", "a", "", std::nullopt, clock_.NowMillis()}));
                      CF_RETURN_IF_ERROR(tx.FlushAll(/*last_too=*/false));
                      claimed.count_down();
                      go.wait();
                      return certfleet::Ok();
                    })
                    .ok());
  });
  claimed.wait();
  std::atomic<bool> ended{false};
  Result<json::object> second = Error{};
  std::thread late([&] {
    second = Create(Kind::kTemplate, {{"name", "b"}, {"ca_fqdn", "example.com"}, {"batches", {"b-1"}}});
    ended = true;
  });
  EXPECT_TRUE(testing::SomeoneWaitsForALock(*store_, ended)) << "the second claim waits for the first";
  go.count_down();
  first.join();
  late.join();
  std::string message;
  EXPECT_EQ(Refused(second, &message), ErrorCode::kAlreadyExists);
  EXPECT_NE(message.find("batch b-1 was given to another provisioning template meanwhile"), std::string::npos)
      << message;
  auto owners = store::Read(*store_, [](store::Tx& tx) { return store::LinksFrom(tx, store::kBatchTemplate, "b-1"); });
  ASSERT_TRUE(owners.ok());
  ASSERT_EQ(owners->size(), 1u);
  EXPECT_EQ(owners->front().to_name, "a");
}

INSTANTIATE_TEST_SUITE_P(Drivers, RegistryRaceTest, ::testing::Values(store::Dialect::kPostgres), testing::DialectName);

}  // namespace
}  // namespace certfleet::registry
