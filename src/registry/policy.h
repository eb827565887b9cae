#pragma once

// Policy evaluation as AWS IoT Core does it for MQTT: which of a connection's policies allow or
// deny an action on a client id, topic or topic filter. Self-contained (the standard library,
// Boost.JSON, core/result.h and core/text.h), so that the Mosquitto plugin compiles it in as well.
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace certfleet::registry {

// The MQTT actions a policy decides.
enum class MqttAction : uint8_t {
  kConnect,        // client/<client id>
  kPublish,        // topic/<topic>
  kSubscribe,      // topicfilter/<filter>
  kReceive,        // topic/<topic>: a message delivered to the client
  kRetainPublish,  // topic/<topic>: a retained message, besides kPublish
};
inline constexpr int kMqttActionCount = 5;
// "iot:Connect", "iot:Publish", ...
std::string_view MqttActionName(MqttAction action);
// The action of "iot:Connect", ... (any case); nullopt for anything else.
std::optional<MqttAction> ParseMqttAction(std::string_view name);

// What a connection's policy variables and condition keys resolve to.
struct Connection {
  std::string client_id;
  std::optional<std::string> common_name;  // the certificate's subject CN
  // The thing of the connection: the one attached to the certificate (the one named by the
  // client id where several are); nullopt when there is none.
  std::optional<std::string> thing_name;
  std::optional<std::string> thing_type;
  std::map<std::string, std::string, std::less<>> thing_attributes;
  bool thing_attached = false;  // a thing named by the client id is attached to the certificate
};

// One policy document compiled for evaluation. Compile refuses, as kInvalidArgument naming the
// statement, whatever it does not evaluate exactly (an unknown action, variable, condition
// operator or key, a resource that cannot name a client, topic or topic filter), so that a
// stored document never means something else at the broker than it says. Thread contract:
// immutable after Compile.
class CompiledPolicy {
 public:
  static Result<CompiledPolicy> Compile(std::string name, std::string_view document_json);

  const std::string& name() const { return name_; }

  // One pattern of a resource or a condition value: literal text, wildcards (* and ?, IAM's)
  // and policy variables.
  struct Pattern {
    struct Piece {
      enum Kind : uint8_t { kText, kVariable } kind = kText;
      std::string text;  // kText: the text, wildcards active; kVariable: the variable's key
    };
    std::vector<Piece> pieces;
  };
  struct Condition {
    enum Operator : uint8_t { kStringEquals, kStringNotEquals, kStringLike, kStringNotLike, kBool } op;
    std::string key;              // a variable's key, "iot:ClientId", ...
    std::vector<Pattern> values;  // any one of them
  };
  struct Statement {
    std::optional<std::string> sid;
    bool allow = true;
    uint8_t actions = 0;  // bit (1 << MqttAction)
    std::vector<Pattern> resources;
    std::vector<Condition> conditions;  // all of them
  };
  const std::vector<Statement>& statements() const { return statements_; }

 private:
  std::string name_;
  std::vector<Statement> statements_;
};

// Which statement decided: an explicit deny in any policy wins over every allow; without a
// matching statement the answer is no (an implicit deny).
struct Decision {
  bool allowed = false;
  std::string policy;  // the deciding statement's policy; "" for an implicit deny
  int statement = -1;  // its index in the document's Statement list
  std::optional<std::string> sid;
  std::string reason;  // "allowed by …", "denied by …", "no statement allows it"
};

// `target` is the client id (kConnect), topic (kPublish, kReceive, kRetainPublish) or topic
// filter (kSubscribe).
Decision Evaluate(std::span<const CompiledPolicy* const> policies, const Connection& connection, MqttAction action,
                  std::string_view target);

// IAM's wildcard match: * any run of characters (including /), ? one character; MQTT's + and #
// are plain characters.
bool WildcardMatch(std::string_view pattern, std::string_view text);

}  // namespace certfleet::registry
