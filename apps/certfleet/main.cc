#include "cli/cli.h"

int main(int argc, char** argv) { return certfleet::cli::Main(argc, argv); }
