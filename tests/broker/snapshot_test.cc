#include "broker/snapshot.h"

#include <gtest/gtest.h>

namespace certfleet::broker {
namespace {

using registry::MqttAction;

constexpr int64_t kNow = 1'800'000'000'000;

Snapshot Sample() {
  Snapshot s;
  s.policies = {{"telemetry", R"({"Statement":[
      {"Effect":"Allow","Action":"iot:Connect","Resource":"client/${iot:Connection.Thing.ThingName}"},
      {"Effect":"Allow","Action":"iot:Publish","Resource":"topic/telemetry/${iot:ClientId}/*"}]})"},
                {"legacy", R"({"Statement":{"Effect":"Allow","Action":"iot:GetThingShadow","Resource":"*"}})"},
                {"legacy-deny", R"({"Statement":[{"Effect":"Deny","Action":"iot:Publish","Resource":"topic/admin/*",
                   "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]})"}};
  s.things = {{"dev-1", "sensor", {{"site", "lyon"}, {"note", "a \"quoted\" \\ value"}}}, {"dev-2", std::nullopt, {}}};
  s.certificates = {{"aa11", {0}, {0, 1}, kNow + 1000, std::nullopt, "dev-1"},
                    {"bb22", {1}, {0}, std::nullopt, kNow - 1, "dev-2"},
                    {"cc33", {0, 1}, {0}, kNow - 1, std::nullopt, "dev-1"},
                    {"dd44", {0}, {0}, std::nullopt, std::nullopt, "someone-else"},
                    {"ee66", {}, {0}, std::nullopt, std::nullopt, "dev-3"},
                    {"ff77", {1}, {0, 2}, std::nullopt, std::nullopt, "dev-2"}};
  return s;
}

TEST(SnapshotTest, ItsJsonReadsBackAsTheSameSnapshot) {
  const std::string text = ToJson(Sample());
  auto view = View::Parse(text);
  ASSERT_TRUE(view.ok()) << view.error().message;
  EXPECT_EQ(ToJson((*view)->snapshot()), text);
  ASSERT_EQ((*view)->skipped_policies().size(), 2u);
  EXPECT_TRUE((*view)->skipped_policies()[0].starts_with("legacy: ")) << (*view)->skipped_policies()[0];
}

TEST(SnapshotTest, ACertificateGetsWhatItsPoliciesSay) {
  auto view = View::Make(Sample());
  auto session = view->Open("AA11", "dev-1", "dev-1", kNow);
  ASSERT_TRUE(session.ok()) << "fingerprints match in any case";
  EXPECT_EQ(session->connection.thing_name, "dev-1");
  EXPECT_EQ(session->connection.thing_type, "sensor");
  EXPECT_TRUE(session->connection.thing_attached);
  EXPECT_EQ(session->policies.size(), 1u) << "the policy that does not compile grants nothing";
  EXPECT_TRUE(View::Decide(*session, MqttAction::kConnect, "dev-1").allowed);
  EXPECT_TRUE(View::Decide(*session, MqttAction::kPublish, "telemetry/dev-1/t").allowed);
  EXPECT_FALSE(View::Decide(*session, MqttAction::kPublish, "telemetry/dev-2/t").allowed);

  auto other_id = view->Open("aa11", "someone", std::nullopt, kNow);
  ASSERT_TRUE(other_id.ok());
  EXPECT_FALSE(other_id->connection.thing_attached) << "the thing is not the one the client id names";
  EXPECT_EQ(other_id->connection.thing_name, "dev-1") << "the certificate's one thing still resolves";
  EXPECT_FALSE(View::Decide(*other_id, MqttAction::kConnect, "someone").allowed);
  EXPECT_EQ(other_id->connection.common_name, "dev-1") << "without a CN, the certificate's own";
}

TEST(SnapshotTest, WhatGetsNothing) {
  auto view = View::Make(Sample());
  auto unknown = view->Open("ee55", "dev-1", std::nullopt, kNow);
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code, ErrorCode::kPermissionDenied);
  auto superseded = view->Open("bb22", "dev-2", std::nullopt, kNow);
  ASSERT_FALSE(superseded.ok());
  EXPECT_NE(superseded.error().message.find("grace period is over"), std::string::npos);
  EXPECT_TRUE(view->Open("bb22", "dev-2", std::nullopt, kNow - 2).ok()) << "within its grace period";
  auto expired = view->Open("cc33", "dev-1", std::nullopt, kNow);
  ASSERT_FALSE(expired.ok());
  EXPECT_NE(expired.error().message.find("expired"), std::string::npos);
  auto late = view->Open("aa11", "dev-1", std::nullopt, kNow + 1000);
  EXPECT_FALSE(late.ok()) << "expiry is compared with the reader's clock";
  auto unknown_deny = view->Open("ff77", "dev-2", std::nullopt, kNow);
  ASSERT_FALSE(unknown_deny.ok()) << "what the Deny it cannot evaluate would refuse cannot be told";
  EXPECT_NE(unknown_deny.error().message.find("legacy-deny has a Deny statement"), std::string::npos)
      << unknown_deny.error().message;
  auto thingless = view->Open("ee66", "dev-3", std::nullopt, kNow);
  ASSERT_FALSE(thingless.ok()) << "a thing deleted while the snapshot was read";
  EXPECT_EQ(thingless.error().message, "the certificate is attached to no thing");
}

TEST(SnapshotTest, AThingsCertificatesForBrokersThatDoNotSayWhichOne) {
  auto view = View::Make(Sample());
  auto sessions = view->OpenByThing("dev-1", "dev-1", "dev-1", kNow);
  ASSERT_EQ(sessions.size(), 1u) << "aa11; cc33 has expired, dd44 has another CN";
  EXPECT_TRUE(view->OpenByThing("dev-1", "dev-1", "someone", kNow).empty()) << "no certificate of dev-1 has that CN";
  EXPECT_TRUE(view->OpenByThing("dev-1", "dev-1", std::nullopt, kNow).empty()) << "without a CN, nothing";
  EXPECT_TRUE(view->OpenByThing("nobody", "nobody", "nobody", kNow).empty());
}

TEST(SnapshotTest, MalformedSnapshotsAreRefused) {
  EXPECT_FALSE(View::Parse("[]").ok());
  EXPECT_FALSE(View::Parse(R"({"format":2,"policies":[],"things":[],"certificates":[]})").ok());
  auto out_of_range = View::Parse(
      R"({"format":1,"policies":[],"things":[],"certificates":[{"fingerprint":"a","things":[3],"policies":[]}]})");
  ASSERT_FALSE(out_of_range.ok());
  EXPECT_NE(out_of_range.error().message.find("out of range"), std::string::npos);
}

}  // namespace
}  // namespace certfleet::broker
