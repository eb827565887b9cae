#pragma once

#include <array>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

namespace certfleet::http {

// Prometheus metrics of the HTTP server, plus collectors that add their own text at
// scrape time (job counts). Thread-safe.
class Metrics {
 public:
  // `route` is the route pattern (bounded cardinality), never the raw path.
  void ObserveRequest(std::string_view route, std::string_view method, int status, double seconds);
  // `collect` returns complete Prometheus text lines (with # HELP/# TYPE).
  void AddCollector(std::function<std::string()> collect);
  std::string Render() const;

 private:
  static constexpr std::array<double, 11> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  struct Histogram {
    std::array<uint64_t, kBuckets.size()> counts{};
    uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> latency_;
  std::vector<std::function<std::string()>> collectors_;
};

// A label value escaped for the Prometheus text format.
std::string EscapeLabel(std::string_view v);

}  // namespace certfleet::http
