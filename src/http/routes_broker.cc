// The registry enforced at MQTT brokers: the snapshot the Mosquitto plugin pulls, EMQX's HTTP
// authentication and authorization hooks, and the operator's policy evaluation.
#include <boost/json.hpp>

#include "broker/broker_service.h"
#include "core/text.h"
#include "http/api.h"
#include "http/json.h"
#include "pki/certificate.h"

namespace certfleet::http {
namespace {

namespace json = boost::json;
using registry::MqttAction;

constexpr size_t kMaxClientId = 256;    // MQTT allows 65,535; no device id is near this
constexpr size_t kMaxTopic = 1024;      // AWS IoT's topic limit is 256 bytes; brokers allow more
constexpr size_t kMaxFingerprint = 64;  // SHA-256 hex
constexpr size_t kMaxSerial = 64;
constexpr size_t kMaxCommonName = 256;
constexpr size_t kHookBodyLimit = 8192;  // a hook's request: a few short fields

// An optional field of a broker hook: EMQX sends "" or "undefined" for a placeholder with no
// value.
Result<std::optional<std::string>> HookField(const json::object& o, std::string_view key, size_t max) {
  CF_ASSIGN_OR_RETURN(auto v, OptionalString(o, key, max));
  if (v && (v->empty() || *v == "undefined")) v.reset();
  return v;
}

json::object EmqxResult(bool allowed) { return {{"result", allowed ? "allow" : "deny"}, {"is_superuser", false}}; }

Result<Response> Snapshot(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(auto current, ctx.broker->Confirmed());
  std::vector<std::pair<std::string, std::string>> headers = {
      {"ETag", current->etag},
      {"Cache-Control", "no-cache"},
      {"X-Certfleet-Generation", std::to_string(current->generation.load())}};
  if (auto seen = req.Header("if-none-match"); seen && *seen == current->etag) {
    return Response{304, "application/json", "", std::move(headers)};
  }
  return Response{200, "application/json", current->json, std::move(headers)};
}

Result<Response> Evaluate(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  broker::BrokerService::EvaluateRequest e;
  CF_ASSIGN_OR_RETURN(e.serial, OptionalString(body, "serial", kMaxSerial));
  CF_ASSIGN_OR_RETURN(e.fingerprint, OptionalString(body, "fingerprint", kMaxFingerprint));
  if (e.fingerprint) e.fingerprint = AsciiLower(*e.fingerprint);
  if (e.serial) {
    // Written as the inventory keeps it, whatever the case, leading zeros or colons.
    std::optional<std::string> serial = pki::CanonicalSerial(*e.serial);
    if (!serial) return MakeError(ErrorCode::kInvalidArgument, "serial must be hexadecimal");
    e.serial = std::move(serial);
  }
  if (e.serial.has_value() == e.fingerprint.has_value()) {
    return MakeError(ErrorCode::kInvalidArgument, "name the certificate by serial or by fingerprint (one of them)");
  }
  CF_ASSIGN_OR_RETURN(e.client_id, RequiredString(body, "client_id", kMaxClientId));
  CF_ASSIGN_OR_RETURN(std::string action, RequiredString(body, "action", 32));
  auto parsed = registry::ParseMqttAction(action);
  if (!parsed) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "action must be iot:Connect, iot:Publish, iot:Subscribe, iot:Receive or iot:RetainPublish");
  }
  e.action = *parsed;
  CF_ASSIGN_OR_RETURN(auto topic, OptionalString(body, "topic", kMaxTopic));
  if (e.action != MqttAction::kConnect && !topic) {
    return MakeError(ErrorCode::kInvalidArgument, "topic is required for every action but iot:Connect");
  }
  e.topic = topic.value_or("");
  CF_ASSIGN_OR_RETURN(auto a, ctx.broker->Evaluate(e));
  json::array policies(a.policies.begin(), a.policies.end());
  json::array ignored(a.ignored_policies.begin(), a.ignored_policies.end());
  json::object out{{"allowed", a.decision.allowed},
                   {"reason", a.decision.reason},
                   {"policy", a.decision.policy.empty() ? json::value(nullptr) : json::value(a.decision.policy)},
                   {"statement", a.decision.statement < 0 ? json::value(nullptr) : json::value(a.decision.statement)},
                   {"sid", OptStr(a.decision.sid)},
                   {"connect_allowed", a.connect_allowed},
                   {"certificate", json::object{{"fingerprint", a.fingerprint}, {"serial", OptStr(a.serial)}}},
                   {"thing", OptStr(a.thing)},
                   {"policies", std::move(policies)},
                   {"ignored_policies", std::move(ignored)}};
  return JsonResponse(200, out);
}

Result<Response> EmqxAuthn(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  CF_ASSIGN_OR_RETURN(std::string client_id, RequiredString(body, "clientid", kMaxClientId));
  CF_ASSIGN_OR_RETURN(auto cn, HookField(body, "cert_common_name", kMaxCommonName));
  CF_ASSIGN_OR_RETURN(bool allowed, ctx.broker->Authenticate(client_id, cn));
  return JsonResponse(200, EmqxResult(allowed));
}

Result<Response> EmqxAuthz(const ApiContext& ctx, const Request& req) {
  CF_ASSIGN_OR_RETURN(json::object body, ParseJsonObject(req.body));
  CF_ASSIGN_OR_RETURN(std::string client_id, RequiredString(body, "clientid", kMaxClientId));
  CF_ASSIGN_OR_RETURN(auto cn, HookField(body, "cert_common_name", kMaxCommonName));
  CF_ASSIGN_OR_RETURN(std::string topic, RequiredString(body, "topic", kMaxTopic));
  CF_ASSIGN_OR_RETURN(std::string action, RequiredString(body, "action", 16));
  bool retain = false;
  if (const json::value* r = body.if_contains("retain")) {
    retain =
        (r->is_bool() && r->get_bool()) || (r->is_string() && (r->get_string() == "true" || r->get_string() == "1"));
  }
  bool allowed = false;
  if (action == "subscribe") {
    CF_ASSIGN_OR_RETURN(allowed, ctx.broker->Authorize(client_id, cn, MqttAction::kSubscribe, topic));
  } else if (action == "publish") {
    CF_ASSIGN_OR_RETURN(allowed, ctx.broker->Authorize(client_id, cn, MqttAction::kPublish, topic));
    if (allowed && retain) {
      CF_ASSIGN_OR_RETURN(allowed, ctx.broker->Authorize(client_id, cn, MqttAction::kRetainPublish, topic));
    }
  } else {
    return MakeError(ErrorCode::kInvalidArgument, "action must be publish or subscribe");
  }
  return JsonResponse(200, EmqxResult(allowed));
}

}  // namespace

void AddBrokerRoutes(Router& router, const ApiContext& ctx) {
  const ApiContext* c = &ctx;
  router.Add("GET", "/v1/broker/snapshot", {Access::kReader}, [c](Request& r) { return Snapshot(*c, r); });
  router.Add("POST", "/v1/policies/evaluate", {Access::kOperator, false, kHookBodyLimit},
             [c](Request& r) { return Evaluate(*c, r); });
  router.Add("POST", "/v1/broker/emqx/authn", {Access::kReader, false, kHookBodyLimit},
             [c](Request& r) { return EmqxAuthn(*c, r); });
  router.Add("POST", "/v1/broker/emqx/authz", {Access::kReader, false, kHookBodyLimit},
             [c](Request& r) { return EmqxAuthz(*c, r); });
}

}  // namespace certfleet::http
