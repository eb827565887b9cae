// The certfleet-agent command line.
#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <iostream>

#include "agent/agent.h"

namespace certfleet::agent {
namespace {

// One JSON log line.
void Log(std::ostream& out, std::string_view level, std::string_view msg, boost::json::object fields) {
  fields.emplace("level", level);
  fields.emplace("msg", msg);
  out << boost::json::serialize(fields) << "\n";
}

}  // namespace

int Main(int argc, char** argv) {
  AgentOptions options;
  std::string token;
  CLI::App app{
      "certfleet-agent: enrolls this host with a certfleet server and keeps its certificate, key and CA chain "
      "in the folders the server names. The first start needs --bootstrap-token (certfleet host token ID)."};
  app.add_option("--server", options.server, "The certfleet API, https://host:port")->required();
  app.add_option("--host-id", options.host_id, "This host's id, as registered (POST /v1/hosts)")->required();
  app.add_option("--bootstrap-token", token, "Single-use enrollment token, for the first start");
  app.add_option("--ca-file", options.ca_file,
                 "PEM file of the CA that signed the server's TLS certificate "
                 "(default: the system store)");
  app.add_option("--state-dir", options.state_dir, "Where the agent records its identity")
      ->default_val("/var/lib/certfleet-agent");
  app.add_option("--key-type", options.key_type, "The first key's type (later ones: the host's key_type)")
      ->default_val("ec-p256");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto fail = [](std::string_view what, const Error& e) {
    Log(std::cerr, "error", what, {{"error", e.message}});
    return 1;
  };
  auto identity = LoadIdentity(options.state_dir);
  if (!identity.ok()) return fail("cannot read the agent's state", identity.error());
  if (!*identity) {
    if (token.empty()) {
      return fail("not enrolled", Error{ErrorCode::kInvalidArgument, "the first start needs --bootstrap-token"});
    }
    auto enrolled = Enroll(options, token);
    if (!enrolled.ok()) return fail("enrollment failed", enrolled.error());
    Log(std::cout, "info", "enrolled",
        {{"host", enrolled->host_id}, {"serial", enrolled->serial}, {"certificate", enrolled->cert_file}});
  }
  return 0;
}

}  // namespace certfleet::agent
