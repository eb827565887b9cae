#include "registry/policy.h"

#include <gtest/gtest.h>

#include <vector>

namespace certfleet::registry {
namespace {

CompiledPolicy Compiled(const std::string& name, const std::string& document) {
  auto p = CompiledPolicy::Compile(name, document);
  EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().message);
  return p.ok() ? *p : CompiledPolicy();
}

std::string Refusal(const std::string& document) {
  auto p = CompiledPolicy::Compile("p", document);
  return p.ok() ? "" : p.error().message;
}

Connection Device(const std::string& client_id) {
  Connection c;
  c.client_id = client_id;
  c.common_name = client_id;
  c.thing_name = client_id;
  c.thing_type = "sensor";
  c.thing_attributes = {{"site", "lyon"}};
  c.thing_attached = true;
  return c;
}

Decision Decide(const std::vector<CompiledPolicy>& policies, const Connection& c, MqttAction a, std::string_view t) {
  std::vector<const CompiledPolicy*> ptrs;
  ptrs.reserve(policies.size());
  for (const auto& p : policies) ptrs.push_back(&p);
  return Evaluate(ptrs, c, a, t);
}

// The template policy of the issue: a device publishes under its own client id.
const char* kTelemetry = R"({"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:eu-west-1:123456789012:client/${iot:ClientId}"},
  {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"topic/telemetry/${iot:ClientId}/*"},
  {"Sid":"own","Effect":"Allow","Action":"iot:Subscribe","Resource":"topicfilter/telemetry/${iot:ClientId}/#"}]})";

TEST(PolicyTest, VariablesResolveToTheConnection) {
  std::vector<CompiledPolicy> p = {Compiled("telemetry", kTelemetry)};
  Connection dev = Device("dev-1");
  EXPECT_TRUE(Decide(p, dev, MqttAction::kConnect, "dev-1").allowed);
  EXPECT_FALSE(Decide(p, dev, MqttAction::kConnect, "dev-2").allowed) << "another client id";
  EXPECT_TRUE(Decide(p, dev, MqttAction::kPublish, "telemetry/dev-1/temp").allowed);
  EXPECT_TRUE(Decide(p, dev, MqttAction::kPublish, "telemetry/dev-1/a/b").allowed) << "* crosses /";
  EXPECT_FALSE(Decide(p, dev, MqttAction::kPublish, "telemetry/dev-2/temp").allowed) << "another device's topic";
  EXPECT_FALSE(Decide(p, dev, MqttAction::kSubscribe, "telemetry/dev-1/+").allowed)
      << "+ is a plain character in a topic filter resource";
  Decision sub = Decide(p, dev, MqttAction::kSubscribe, "telemetry/dev-1/#");
  EXPECT_TRUE(sub.allowed);
  EXPECT_EQ(sub.policy, "telemetry");
  EXPECT_EQ(sub.statement, 2);
  EXPECT_EQ(sub.sid, "own");
  Decision none = Decide(p, dev, MqttAction::kRetainPublish, "telemetry/dev-1/temp");
  EXPECT_FALSE(none.allowed);
  EXPECT_EQ(none.statement, -1);
  EXPECT_NE(none.reason.find("no statement allows iot:RetainPublish on topic/telemetry/dev-1/temp"), std::string::npos)
      << none.reason;
}

TEST(PolicyTest, AVariableValueIsNeverAWildcard) {
  std::vector<CompiledPolicy> p = {Compiled("telemetry", kTelemetry)};
  Connection star = Device("*");
  EXPECT_TRUE(Decide(p, star, MqttAction::kConnect, "*").allowed);
  EXPECT_FALSE(Decide(p, star, MqttAction::kConnect, "dev-1").allowed) << "a client id of * is not a wildcard";
  EXPECT_FALSE(Decide(p, star, MqttAction::kPublish, "telemetry/dev-1/x").allowed);
}

TEST(PolicyTest, AnExplicitDenyWinsInAnyPolicy) {
  std::vector<CompiledPolicy> p = {
      Compiled("all", R"({"Statement":{"Effect":"Allow","Action":"iot:*","Resource":"*"}})"),
      Compiled("no-admin", R"({"Statement":[{"Sid":"admin","Effect":"Deny","Action":"iot:Publish",
           "Resource":"arn:aws:iot:*:*:topic/admin/*"}]})")};
  Connection dev = Device("dev-1");
  EXPECT_TRUE(Decide(p, dev, MqttAction::kPublish, "data/x").allowed);
  Decision d = Decide(p, dev, MqttAction::kPublish, "admin/reboot");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.policy, "no-admin");
  EXPECT_EQ(d.sid, "admin");
  EXPECT_EQ(d.reason, "denied by policy no-admin, Statement[0] (admin)");
  EXPECT_TRUE(Decide(p, dev, MqttAction::kReceive, "admin/reboot").allowed) << "the deny names iot:Publish only";
}

TEST(PolicyTest, ThingVariablesNeedAThing) {
  std::vector<CompiledPolicy> p = {Compiled("site", R"({"Statement":[
      {"Effect":"Allow","Action":"iot:Publish",
       "Resource":"topic/${iot:Connection.Thing.ThingTypeName}/${iot:Connection.Thing.Attributes[site]}/*"},
      {"Effect":"Allow","Action":"iot:Connect","Resource":"client/*",
       "Condition":{"Bool":{"iot:Connection.Thing.IsAttached":true}}}]})")};
  Connection dev = Device("dev-1");
  EXPECT_TRUE(Decide(p, dev, MqttAction::kPublish, "sensor/lyon/1").allowed);
  EXPECT_FALSE(Decide(p, dev, MqttAction::kPublish, "sensor/paris/1").allowed);
  EXPECT_TRUE(Decide(p, dev, MqttAction::kConnect, "dev-1").allowed);
  Connection loose = dev;
  loose.thing_attached = false;
  EXPECT_FALSE(Decide(p, loose, MqttAction::kConnect, "dev-1").allowed) << "IsAttached is false";
  Connection thingless;
  thingless.client_id = "dev-1";
  EXPECT_FALSE(Decide(p, thingless, MqttAction::kPublish, "sensor/lyon/1").allowed)
      << "an unresolved variable matches nothing";
  Connection no_site = dev;
  no_site.thing_attributes.clear();
  EXPECT_FALSE(Decide(p, no_site, MqttAction::kPublish, "sensor//1").allowed);
}

TEST(PolicyTest, ConditionsOnStrings) {
  std::vector<CompiledPolicy> p = {Compiled("c", R"({"Statement":[
      {"Effect":"Allow","Action":"iot:Connect","Resource":"*",
       "Condition":{"StringLike":{"iot:Certificate.Subject.CommonName":["dev-*","gw-?"]},
                    "StringNotEquals":{"iot:ClientId":"dev-banned"}}},
      {"Effect":"Allow","Action":"iot:Subscribe","Resource":"*",
       "Condition":{"StringEquals":{"iot:ClientId":"${iot:Connection.Thing.ThingName}"}}}]})")};
  EXPECT_TRUE(Decide(p, Device("dev-1"), MqttAction::kConnect, "dev-1").allowed);
  EXPECT_TRUE(Decide(p, Device("gw-7"), MqttAction::kConnect, "gw-7").allowed);
  EXPECT_FALSE(Decide(p, Device("gw-77"), MqttAction::kConnect, "gw-77").allowed);
  EXPECT_FALSE(Decide(p, Device("dev-banned"), MqttAction::kConnect, "dev-banned").allowed);
  EXPECT_TRUE(Decide(p, Device("dev-1"), MqttAction::kSubscribe, "a/#").allowed);
  Connection other = Device("dev-1");
  other.client_id = "someone-else";
  EXPECT_FALSE(Decide(p, other, MqttAction::kSubscribe, "a/#").allowed);
}

TEST(PolicyTest, ActionsByWildcardAndInAnyCase) {
  std::vector<CompiledPolicy> p = {
      Compiled("p", R"({"Statement":{"Effect":"Allow","Action":["iot:*publish"],"Resource":"topic/*"}})")};
  EXPECT_TRUE(Decide(p, Device("d"), MqttAction::kPublish, "x").allowed);
  EXPECT_TRUE(Decide(p, Device("d"), MqttAction::kRetainPublish, "x").allowed);
  EXPECT_FALSE(Decide(p, Device("d"), MqttAction::kReceive, "x").allowed);
  EXPECT_EQ(ParseMqttAction("IOT:RECEIVE"), MqttAction::kReceive);
  EXPECT_FALSE(ParseMqttAction("iot:GetThingShadow").has_value());
}

TEST(PolicyTest, WhatIsNotEvaluatedIsRefused) {
  EXPECT_NE(Refusal(R"({"Statement":{"Effect":"Allow","Action":"iot:UpdateThingShadow","Resource":"*"}})")
                .find("iot:UpdateThingShadow is not an MQTT action"),
            std::string::npos);
  EXPECT_NE(Refusal(R"({"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"client/${iot:Nope}"}})")
                .find("${iot:Nope}"),
            std::string::npos);
  EXPECT_NE(Refusal(R"({"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"client/${iot:ClientId"}})")
                .find("no closing }"),
            std::string::npos);
  EXPECT_NE(Refusal(R"({"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"thing/x"}})")
                .find("names no client/"),
            std::string::npos);
  EXPECT_NE(Refusal(R"({"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:s3:::bucket/x"}})")
                .find("not an AWS IoT resource"),
            std::string::npos);
  EXPECT_NE(Refusal(R"({"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"*",
                 "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}})")
                .find("operator IpAddress is not evaluated"),
            std::string::npos);
  EXPECT_NE(Refusal(R"({"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"*",
                 "Condition":{"StringEquals":{"aws:SourceIp":"x"}}}})")
                .find("not a condition key"),
            std::string::npos);
  EXPECT_NE(Refusal(R"({"Statement":{"Effect":"Allow","Action":"iot:Connect","Resource":"*",
                 "Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"yes"}}}})")
                .find("Bool takes true or false"),
            std::string::npos);
  EXPECT_EQ(Refusal(R"({"Statement":{"Effect":"Allow","Action":"*","Resource":"top*"}})"), "")
      << "a wildcard that can still name a topic is accepted";
}

TEST(PolicyTest, WildcardMatch) {
  EXPECT_TRUE(WildcardMatch("*", ""));
  EXPECT_TRUE(WildcardMatch("a*c", "abbbc"));
  EXPECT_TRUE(WildcardMatch("a?c", "abc"));
  EXPECT_FALSE(WildcardMatch("a?c", "ac"));
  EXPECT_TRUE(WildcardMatch("*/b/*", "x/b/y/z"));
  EXPECT_FALSE(WildcardMatch("a/+", "a/b"));
  EXPECT_TRUE(WildcardMatch("a/#", "a/#"));
}

}  // namespace
}  // namespace certfleet::registry
