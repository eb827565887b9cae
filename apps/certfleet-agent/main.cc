// certfleet-agent: renews this host's certificate with a certfleet server (W4). The key is
// made here and never leaves the host.
#include "agent/agent.h"

int main(int argc, char** argv) { return certfleet::agent::Main(argc, argv); }
