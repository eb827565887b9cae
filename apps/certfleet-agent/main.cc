// certfleet-agent: renews this host's certificate with a certfleet server (W4). The key is
// made here and never leaves the host.
#include <CLI/CLI.hpp>
#include <iostream>

#include "agent/agent.h"

int main(int argc, char** argv) {
  certfleet::agent::AgentOptions options;
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
  auto fail = [](const std::string& what, const certfleet::Error& e) {
    std::cerr << R"({"level":"error","msg":")" << what << R"(","error":)" << '"' << e.message << '"' << "}\n";
    return 1;
  };
  auto identity = certfleet::agent::LoadIdentity(options.state_dir);
  if (!identity.ok()) return fail("cannot read the agent's state", identity.error());
  if (!*identity) {
    if (token.empty()) {
      return fail("not enrolled",
                  certfleet::Error{certfleet::ErrorCode::kInvalidArgument, "the first start needs --bootstrap-token"});
    }
    auto enrolled = certfleet::agent::Enroll(options, token);
    if (!enrolled.ok()) return fail("enrollment failed", enrolled.error());
    std::cout << R"({"level":"info","msg":"enrolled","host":")" << enrolled->host_id << R"(","serial":")"
              << enrolled->serial << R"(","certificate":")" << enrolled->cert_file << "\"}\n";
  }
  return 0;
}
