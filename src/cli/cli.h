#pragma once

namespace certfleet::cli {

// The certfleet command line: init, serve, migrate, token, audit, config. Returns the
// process exit code.
int Main(int argc, char** argv);

}  // namespace certfleet::cli
