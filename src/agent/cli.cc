// The certfleet-agent command line.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <boost/json.hpp>
#include <csignal>
#include <iostream>

#include "agent/agent.h"
#include "agent/common.h"
#include "core/files.h"
#include "core/log.h"

namespace certfleet::agent {
namespace {

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop = true; }

}  // namespace

int Main(int argc, char** argv) {
  AgentOptions options;
  std::string token;
  CLI::App app{
      "certfleet-agent: enrolls this host with a certfleet server and keeps its certificate, key and CA chain "
      "in the folders the server names. The first start needs --bootstrap-token (certfleet host token ID)."};
  app.add_option("--server", options.server, "The certfleet API, https://host:port")->required();
  app.add_option("--host-id", options.host_id, "This host's id, as registered (POST /v1/hosts)")->required();
  // Kept off the command line (where ps and /proc show it to every local user) with the
  // environment variable or the file.
  auto* token_option = app.add_option("--bootstrap-token", token,
                                      "Enrollment token (single-use) or fleet secret, for the first start; also "
                                      "from CERTFLEET_AGENT_BOOTSTRAP_TOKEN")
                           ->envname("CERTFLEET_AGENT_BOOTSTRAP_TOKEN");
  std::string token_file;
  app.add_option("--bootstrap-token-file", token_file, "A file holding the enrollment token or fleet secret")
      ->excludes(token_option);
  app.add_option("--ca-file", options.ca_file,
                 "PEM file of the CA that signed the server's TLS certificate "
                 "(default: the system store)");
  app.add_option("--state-dir", options.state_dir, "Where the agent records its identity")
      ->default_val("/var/lib/certfleet-agent");
  app.add_option("--key-type", options.key_type, "The first key's type (later ones: the host's key_type)")
      ->default_val("ec-p256");
  RunOptions run;
  app.add_option("--poll-wait", run.wait_seconds, "Seconds each long poll for tasks waits")
      ->default_val(30)
      ->check(CLI::Range(1, 60));
  app.add_option("--self-renew-below", run.self_renew_share,
                 "Ask for a renewal itself when less than this share of the certificate's lifetime is left")
      ->default_val(1.0 / 6)
      ->check(CLI::Range(0.0, 1.0));
  int64_t reload_timeout = run.reload_timeout.count();
  app.add_option("--reload-timeout", reload_timeout,
                 "Seconds the reload command may run before it is killed and the renewal fails")
      ->default_val(run.reload_timeout.count())
      ->check(CLI::Range(1, 3600));
  bool enroll_only = false;
  app.add_flag("--enroll-only", enroll_only, "Enroll (if not yet) and exit, instead of serving tasks");
  bool re_enroll = false;
  app.add_flag("--re-enroll", re_enroll,
               "Enroll again with --bootstrap-token although --state-dir holds an identity (a host reactivated "
               "after its certificate was revoked: POST /v1/hosts/{id}/reactivate)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // Read: the reload commands this process runs do not inherit it.
  unsetenv("CERTFLEET_AGENT_BOOTSTRAP_TOKEN");
  auto fail = [](std::string_view what, const Error& e) {
    log::Error(what, {{"error", e.message}});
    return 1;
  };
  if (!token_file.empty()) {
    constexpr size_t kMaxTokenFileBytes = 4096;
    auto text = ReadFile(token_file, kMaxTokenFileBytes);
    if (!text.ok()) return fail("cannot read --bootstrap-token-file", text.error());
    token = text->substr(0, text->find_first_of("\r\n"));
  }
  auto identity = LoadIdentity(options.state_dir);
  if (!identity.ok()) return fail("cannot read the agent's state", identity.error());
  // Never act as another host: two agents sharing one state folder would.
  if (*identity && (*identity)->host_id != options.host_id) {
    return fail("the state folder belongs to another host",
                Error{ErrorCode::kFailedPrecondition,
                      fmt::format("{} holds the identity of host {}, not of {} (--host-id); give each agent a "
                                  "--state-dir of its own",
                                  options.state_dir, (*identity)->host_id, options.host_id)});
  }
  if (!*identity || re_enroll) {
    if (token.empty()) {
      return fail(*identity ? "cannot enroll again" : "not enrolled",
                  Error{ErrorCode::kInvalidArgument,
                        *identity ? "--re-enroll needs --bootstrap-token" : "the first start needs --bootstrap-token"});
    }
    auto enrolled = Enroll(options, token);
    if (!enrolled.ok()) return fail("enrollment failed", enrolled.error());
    log::Info("enrolled",
              {{"host", enrolled->host_id}, {"serial", enrolled->serial}, {"certificate", enrolled->files.cert}});
    identity = std::optional<Identity>(*enrolled);
  }
  run.reload_timeout = std::chrono::seconds(reload_timeout);
  if (enroll_only) return 0;
  if (auto r = Recover(**identity); !r.ok()) return fail("cannot undo an interrupted renewal", r.error());
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  log::Info("serving tasks", {{"host", (*identity)->host_id}, {"server", options.server}});
  Run(options, **identity, run, g_stop);
  log::Info("stopped");
  return 0;
}

}  // namespace certfleet::agent
