#pragma once

#include <atomic>
#include <chrono>
#include <optional>
#include <string>

#include "core/result.h"

namespace certfleet::agent {

// How certfleet-agent reaches its server and where it keeps its state.
struct AgentOptions {
  std::string server;  // https://host:port of the certfleet API
  std::string host_id;
  std::string ca_file;               // trusts the server's TLS certificate; empty: the system store
  std::string state_dir;             // its identity: which files hold its certificate and key
  std::string key_type = "ec-p256";  // of the first key, made before the server is asked
};

// Who the agent is and where its files are, as the server said at enrollment or renewal.
struct Identity {
  // The final names of a host's files in the folders the server names.
  struct Files {
    std::string cert;   // {cert_path}/{host_id}.crt
    std::string key;    // {key_path}/{host_id}.key, mode 0400
    std::string chain;  // {cacert_path}/ca_chain_certificate.crt
  };
  static Files FilesFor(const std::string& host_id, const std::string& cert_path, const std::string& key_path,
                        const std::string& cacert_path);

  std::string host_id;
  Files files;
  std::string serial;  // of the certificate in files.cert
};

// The identity recorded in state_dir, or nullopt before the first enrollment.
Result<std::optional<Identity>> LoadIdentity(const std::string& state_dir);

// First start: makes a key and CSR here, enrolls with the single-use token, and writes key,
// certificate and chain to their final names (each through a temporary file renamed into
// place, the key with mode 0400), then records the identity. The key never leaves the host.
// Checked before anything is written: the certificate is for the new key and verifies to
// the chain.
Result<Identity> Enroll(const AgentOptions& options, const std::string& token);

Result<void> SaveIdentity(const std::string& state_dir, const std::string& server, const Identity& id);

// How the agent works once enrolled.
struct RunOptions {
  int wait_seconds = 30;                  // of each long poll
  std::chrono::seconds backoff_min{1};    // after the server could not be reached; doubles
  std::chrono::seconds backoff_max{300};  // each time up to this
  // The agent asks for a renewal itself when less than this share of its certificate's
  // lifetime is left (the server renews at its threshold, 30 of 90 days by default).
  double self_renew_share = 1.0 / 6;
  std::chrono::seconds self_renew_every{3600};  // how often it asks again meanwhile
  // A reload command still running after this is killed (its process group) and the
  // renewal fails at step reload; well inside the server's deadline (600 s by default).
  std::chrono::seconds reload_timeout{120};
};

// Undoes a renewal interrupted between swapping the new files in and recording them: the
// old files, kept beside as *.prev, go back into place. Run at start.
Result<void> Recover(const Identity& id);

// Long-polls the server for tasks and runs them until `stop` is set (SIGTERM): on a renewal
// task makes a new key (0400) and CSR, has it signed, writes the new files beside the old
// ones, checks them (key matches certificate, chain verifies), swaps them in by rename, runs
// the reload command (restoring the old files if it fails), and reports each state. Any
// failure leaves the old files in place and is reported with its step.
void Run(const AgentOptions& options, Identity id, const RunOptions& run, const std::atomic<bool>& stop);

// certfleet-agent's command line; the process exit code.
int Main(int argc, char** argv);

}  // namespace certfleet::agent
