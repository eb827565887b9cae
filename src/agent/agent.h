#pragma once

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

// Where a host's files are, as the server said at enrollment.
struct Identity {
  std::string host_id;
  std::string cert_file;   // {cert_path}/{host_id}.crt
  std::string key_file;    // {key_path}/{host_id}.key, mode 0400
  std::string chain_file;  // {cacert_path}/ca_chain_certificate.crt
  std::string serial;
};

// The identity recorded in state_dir, or nullopt before the first enrollment.
Result<std::optional<Identity>> LoadIdentity(const std::string& state_dir);

// First start: makes a key and CSR here, enrolls with the single-use token, and writes key,
// certificate and chain to their final names (each through a temporary file renamed into
// place, the key with mode 0400), then records the identity. The key never leaves the host.
// Checked before anything is written: the certificate is for the new key and verifies to
// the chain.
Result<Identity> Enroll(const AgentOptions& options, const std::string& token);

// certfleet-agent's command line; the process exit code.
int Main(int argc, char** argv);

}  // namespace certfleet::agent
