// main() of every benchmark: Google Benchmark's, with certfleet's info logs silenced so
// that only the figures are printed.
#include <benchmark/benchmark.h>

#include "core/log.h"

int main(int argc, char** argv) {
  certfleet::log::SetLevel("warn");
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
