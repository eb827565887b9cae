// The broker snapshot and the operator's evaluation, from a real store: what a certificate gets
// as the registry changes (attach, detach, revoke, policy edits), and when the snapshot is
// rebuilt.
#include "broker/broker_service.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "issuance/issuer.h"
#include "pki/file/file_key_backend.h"
#include "store/audit_repo.h"
#include "store/registry_repo.h"
#include "testing/db.h"
#include "testing/registry.h"

namespace certfleet::broker {
namespace {

namespace json = boost::json;
using registry::Kind;
using registry::Link;
using registry::MqttAction;

class BrokerServiceTest : public ::testing::TestWithParam<store::Dialect> {
 protected:
  void SetUp() override {
    store_ = testing::FreshStore(GetParam());
    ASSERT_NE(store_, nullptr);
    registry_ = std::make_unique<registry::Registry>(*store_, clock_);
    broker_ = std::make_unique<BrokerService>(*store_, clock_, BrokerService::Options{});
    keys_ = std::make_unique<pki::file::FileKeyBackend>(testing::TempDir() + "/keys", std::string(64, 'k'));
    issuer_ = std::make_unique<issuance::Issuer>(*store_, *keys_, clock_, issuance::Issuer::Options{"https://ca.test"});
    issuance::IssueRequest root;
    root.type = pki::CertType::kRoot;
    root.name = "example.com";
    ASSERT_TRUE(issuer_->Issue(root, "t").ok());
    ASSERT_TRUE(
        testing::CreateJson(*registry_, Kind::kPolicy, json::parse(R"({"name": "telemetry", "document": {"Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "client/${iot:Connection.Thing.ThingName}"},
        {"Effect": "Allow", "Action": "iot:Publish",
         "Resource": "topic/${iot:Connection.Thing.Attributes[site]}/${iot:ClientId}/*"}]}})"))
            .ok());
  }

  // A device certificate attached to thing `name` (site lyon) with the telemetry policy.
  std::string Device(const std::string& name, const std::string& parent = "example.com") {
    issuance::IssueRequest device;
    device.type = pki::CertType::kDevice;
    device.name = name;
    device.subject = store::SubjectKind::kDevice;
    device.parent = parent;
    auto issued = issuer_->Issue(device, "t");
    EXPECT_TRUE(issued.ok());
    std::string serial = issued->record.serial;
    EXPECT_TRUE(
        testing::CreateJson(*registry_, Kind::kThing, json::object{{"name", name}, {"attributes", {{"site", "lyon"}}}})
            .ok());
    EXPECT_TRUE(registry_->Attach(Link::kThingCertificate, name, serial, "t").ok());
    EXPECT_TRUE(registry_->Attach(Link::kPolicyCertificate, "telemetry", serial, "t").ok());
    return serial;
  }

  BrokerService::EvaluateAnswer Evaluate(const std::string& serial, MqttAction action, const std::string& topic) {
    BrokerService::EvaluateRequest r;
    r.serial = serial;
    r.client_id = "dev-1";
    r.action = action;
    r.topic = topic;
    auto a = broker_->Evaluate(r);
    EXPECT_TRUE(a.ok()) << a.error().message;
    return a.ok() ? *a : BrokerService::EvaluateAnswer{};
  }

  ManualClock clock_{1'795'456'605'000};
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<registry::Registry> registry_;
  std::unique_ptr<BrokerService> broker_;
  std::unique_ptr<pki::file::FileKeyBackend> keys_;
  std::unique_ptr<issuance::Issuer> issuer_;
};

TEST_P(BrokerServiceTest, TheSnapshotHoldsWhatMayConnectWithItsThingAndPolicies) {
  const std::string serial = Device("dev-1");
  auto current = broker_->Latest();
  ASSERT_TRUE(current.ok()) << current.error().message;
  auto view = (*current)->view();
  ASSERT_TRUE(view.ok());
  const Snapshot& s = (*view)->snapshot();
  ASSERT_EQ(s.certificates.size(), 1u) << "the CA itself is attached to no thing";
  ASSERT_EQ(s.certificates[0].things.size(), 1u);
  EXPECT_EQ(s.things[s.certificates[0].things[0]].attributes.at("site"), "lyon");
  ASSERT_EQ(s.certificates[0].policies.size(), 1u);
  EXPECT_EQ(s.policies[s.certificates[0].policies[0]].first, "telemetry");
  auto session = (*view)->Open(s.certificates[0].fingerprint, "dev-1", std::nullopt, clock_.NowMillis());
  ASSERT_TRUE(session.ok());
  EXPECT_TRUE(View::Decide(*session, MqttAction::kPublish, "lyon/dev-1/t").allowed);

  const int64_t generation = (*current)->generation;
  EXPECT_GT(generation, 0) << "the audit log's head the snapshot was built at";
  Evaluate(serial, MqttAction::kConnect, "");  // reads only
  clock_.Advance(std::chrono::seconds(2));
  auto again = broker_->Latest();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->get(), current->get()) << "nothing was audited since: the same snapshot";

  issuance::IssueRequest other;  // audited, but nothing a broker sees
  other.type = pki::CertType::kDevice;
  other.name = "loose";
  other.subject = store::SubjectKind::kDevice;
  other.parent = "example.com";
  ASSERT_TRUE(issuer_->Issue(other, "t").ok());
  clock_.Advance(std::chrono::seconds(2));
  auto rebuilt = broker_->Latest();
  ASSERT_TRUE(rebuilt.ok());
  EXPECT_EQ((*rebuilt)->etag, (*current)->etag) << "a rebuild that changes nothing keeps its ETag";
  EXPECT_GT((*rebuilt)->generation, generation) << "and says it reaches further into the audit log";
}

TEST_P(BrokerServiceTest, EmqxHooksNeedTheCertificatesCommonName) {
  Device("dev-1");
  Device("dev-2");
  EXPECT_TRUE(*broker_->Authenticate("dev-1", std::string("dev-1")));
  EXPECT_FALSE(*broker_->Authenticate("dev-1", std::string("dev-2"))) << "dev-2's certificate cannot connect as dev-1";
  EXPECT_FALSE(*broker_->Authenticate("dev-1", std::nullopt));
  EXPECT_TRUE(*broker_->Authorize("dev-1", std::string("dev-1"), MqttAction::kPublish, "lyon/dev-1/t"));
  EXPECT_FALSE(*broker_->Authorize("dev-1", std::string("dev-1"), MqttAction::kPublish, "lyon/dev-2/t"));
}

// A hook never waits for a rebuild: it answers from the snapshot there is and starts one.
TEST_P(BrokerServiceTest, EmqxHooksAnswerAtOnceWhileTheSnapshotIsRebuilt) {
  Device("dev-1");
  EXPECT_TRUE(*broker_->Authenticate("dev-1", std::string("dev-1"))) << "the first snapshot is waited for";
  Device("dev-2");
  clock_.Advance(std::chrono::milliseconds(1000));
  EXPECT_FALSE(*broker_->Authenticate("dev-2", std::string("dev-2"))) << "answered from the snapshot there was";
  broker_->WaitForRefresh();
  EXPECT_TRUE(*broker_->Authenticate("dev-2", std::string("dev-2"))) << "from the one rebuilt meanwhile";
  EXPECT_TRUE(*broker_->Authorize("dev-2", std::string("dev-2"), MqttAction::kPublish, "lyon/dev-2/t"));
}

TEST_P(BrokerServiceTest, ChangesShowAfterTheLeastRebuildTime) {
  const std::string one = Device("dev-1");
  auto first = broker_->Latest();
  ASSERT_TRUE(first.ok());
  const std::string two = Device("dev-2");
  EXPECT_EQ(broker_->Latest()->get(), first->get()) << "within broker.snapshot_min_rebuild_ms";
  clock_.Advance(std::chrono::milliseconds(1000));
  auto second = broker_->Latest();
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*second)->certificates, 2u);
  EXPECT_NE((*second)->etag, (*first)->etag);

  ASSERT_TRUE(issuer_->Revoke(one, "keyCompromise", false, "t").ok());
  ASSERT_TRUE(registry_->Detach(Link::kThingCertificate, "dev-2", two, "t").ok());
  clock_.Advance(std::chrono::milliseconds(1000));
  EXPECT_EQ((*broker_->Latest())->certificates, 0u) << "a revoked certificate and a detached one get nothing";
}

// A snapshot that cannot be rebuilt is still served (EMQX's hooks decide from it), but not
// confirmed to brokers that fetch it, until a rebuild succeeds again.
TEST_P(BrokerServiceTest, ASnapshotThatCannotBeRebuiltIsNotConfirmed) {
  Device("dev-1");
  ASSERT_TRUE(broker_->Confirmed().ok());
  auto set_policy = [&](const std::string& body) {
    return store::Write(*store_, [&](store::Tx& tx) -> Result<void> {
      CF_ASSIGN_OR_RETURN(auto policy, store::FindObject(tx, store::kObjectPolicy, "telemetry"));
      if (!policy) return MakeError(ErrorCode::kNotFound, "no policy");
      policy->body = body;
      CF_RETURN_IF_ERROR(store::UpdateObject(tx, *policy));
      return store::AppendAudit(tx, clock_.NowMillis(), "t", "test", "policy:telemetry", "{}");
    });
  };
  auto kept =
      store::Read(*store_, [](store::Tx& tx) { return store::FindObject(tx, store::kObjectPolicy, "telemetry"); });
  ASSERT_TRUE(kept.ok() && *kept);
  ASSERT_TRUE(set_policy("not json").ok());  // a stored body the rebuild cannot read
  clock_.Advance(std::chrono::milliseconds(1000));
  EXPECT_TRUE(broker_->Latest().ok()) << "the last snapshot, served";
  auto unconfirmed = broker_->Confirmed();
  ASSERT_FALSE(unconfirmed.ok());
  EXPECT_EQ(unconfirmed.error().code, ErrorCode::kUnavailable);
  EXPECT_FALSE(broker_->Confirmed().ok()) << "within min_rebuild too";
  ASSERT_TRUE(set_policy((*kept)->body).ok());
  clock_.Advance(std::chrono::milliseconds(1000));
  EXPECT_TRUE(broker_->Confirmed().ok()) << "rebuilt again";
}

// A CA revoked without its certificates (no cascade): what it issued gets nothing either.
TEST_P(BrokerServiceTest, CertificatesUnderARevokedCaGetNothing) {
  issuance::IssueRequest ca;
  ca.type = pki::CertType::kIntermediate;
  ca.name = "sub.example.com";
  ca.parent = "example.com";
  auto sub = issuer_->Issue(ca, "t");
  ASSERT_TRUE(sub.ok()) << sub.error().message;
  const std::string serial = Device("dev-1", "sub.example.com");
  Device("dev-2");
  EXPECT_EQ((*broker_->Latest())->certificates, 2u);
  ASSERT_TRUE(issuer_->Revoke(sub->record.serial, "keyCompromise", /*cascade=*/false, "t").ok());
  clock_.Advance(std::chrono::milliseconds(1000));
  EXPECT_EQ((*broker_->Latest())->certificates, 1u) << "dev-1's CA is revoked; dev-2's certificate stays";
  BrokerService::EvaluateRequest asked;
  asked.serial = serial;
  asked.client_id = "dev-1";
  auto answer = broker_->Evaluate(asked);
  ASSERT_TRUE(answer.ok()) << answer.error().message;
  EXPECT_FALSE(answer->decision.allowed);
  EXPECT_EQ(answer->decision.reason, "a CA above the certificate is revoked");
}

TEST_P(BrokerServiceTest, EvaluateSaysWhatDecidedAndWhyACertificateGetsNothing) {
  const std::string serial = Device("dev-1");
  auto allowed = Evaluate(serial, MqttAction::kPublish, "lyon/dev-1/temp");
  EXPECT_TRUE(allowed.decision.allowed);
  EXPECT_EQ(allowed.decision.policy, "telemetry");
  EXPECT_EQ(allowed.decision.statement, 1);
  EXPECT_TRUE(allowed.connect_allowed);
  EXPECT_EQ(allowed.thing, "dev-1");
  EXPECT_EQ(allowed.policies, std::vector<std::string>{"telemetry"});
  auto other = Evaluate(serial, MqttAction::kPublish, "paris/dev-1/temp");
  EXPECT_FALSE(other.decision.allowed);
  EXPECT_EQ(other.decision.statement, -1);

  ASSERT_TRUE(
      testing::UpdateJson(*registry_, Kind::kThing, "dev-1", json::object{{"attributes", {{"site", "paris"}}}}).ok());
  EXPECT_TRUE(Evaluate(serial, MqttAction::kPublish, "paris/dev-1/temp").decision.allowed)
      << "read from the store: a thing's new attribute counts at once";

  ASSERT_TRUE(registry_->Detach(Link::kThingCertificate, "dev-1", serial, "t").ok());
  EXPECT_EQ(Evaluate(serial, MqttAction::kConnect, "").decision.reason, "the certificate is attached to no thing");
  ASSERT_TRUE(registry_->Attach(Link::kThingCertificate, "dev-1", serial, "t").ok());
  ASSERT_TRUE(issuer_->Revoke(serial, "keyCompromise", false, "t").ok());
  auto revoked = Evaluate(serial, MqttAction::kConnect, "");
  EXPECT_FALSE(revoked.decision.allowed);
  EXPECT_EQ(revoked.decision.reason, "the certificate is revoked");

  BrokerService::EvaluateRequest unknown;
  unknown.fingerprint = std::string(64, 'a');
  unknown.client_id = "x";
  auto missing = broker_->Evaluate(unknown);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
}

TEST_P(BrokerServiceTest, EvaluateKnowsTheCertificatesCommonNameAsTheBrokerDoes) {
  const std::string serial = Device("dev-1");
  ASSERT_TRUE(
      testing::CreateJson(*registry_, Kind::kPolicy, json::parse(R"({"name": "by-cn", "document": {"Statement": [
        {"Effect": "Allow", "Action": "iot:Publish", "Resource": "topic/cn/${iot:Certificate.Subject.CommonName}"}]}})"))
          .ok());
  ASSERT_TRUE(registry_->Attach(Link::kPolicyCertificate, "by-cn", serial, "t").ok());
  auto own = Evaluate(serial, MqttAction::kPublish, "cn/dev-1");
  EXPECT_TRUE(own.decision.allowed) << own.decision.reason;
  EXPECT_EQ(own.decision.policy, "by-cn");
  EXPECT_FALSE(Evaluate(serial, MqttAction::kPublish, "cn/dev-2").decision.allowed);
}

INSTANTIATE_TEST_SUITE_P(Drivers, BrokerServiceTest, testing::kBothDialects, testing::DialectName);

}  // namespace
}  // namespace certfleet::broker
