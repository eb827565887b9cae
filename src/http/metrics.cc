#include "http/metrics.h"

#include <fmt/format.h>

namespace certfleet::http {

std::string EscapeLabel(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

void Metrics::ObserveRequest(std::string_view route, std::string_view method, int status, double seconds) {
  std::lock_guard lock(mu_);
  ++requests_[{std::string(route), std::string(method), status}];
  Histogram& h = latency_[std::string(route)];
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++h.counts[i];
  }
  ++h.count;
  h.sum += seconds;
}

void Metrics::AddCollector(std::function<std::string()> collect) {
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(collect));
}

std::string Metrics::Render() const {
  std::vector<std::function<std::string()>> collectors;
  std::string out;
  {
    std::lock_guard lock(mu_);
    out += "# HELP certfleet_http_requests_total HTTP requests by route, method and status.\n";
    out += "# TYPE certfleet_http_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
      const auto& [route, method, status] = key;
      out += fmt::format("certfleet_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}\n",
                         EscapeLabel(route), EscapeLabel(method), status, n);
    }
    out += "# HELP certfleet_http_request_duration_seconds Time from request read to response ready, by route.\n";
    out += "# TYPE certfleet_http_request_duration_seconds histogram\n";
    for (const auto& [route, h] : latency_) {
      const std::string r = EscapeLabel(route);
      for (size_t i = 0; i < kBuckets.size(); ++i) {
        out += fmt::format("certfleet_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n", r,
                           kBuckets[i], h.counts[i]);
      }
      out += fmt::format("certfleet_http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n", r, h.count);
      out += fmt::format("certfleet_http_request_duration_seconds_sum{{route=\"{}\"}} {}\n", r, h.sum);
      out += fmt::format("certfleet_http_request_duration_seconds_count{{route=\"{}\"}} {}\n", r, h.count);
    }
    collectors = collectors_;
  }
  for (const auto& c : collectors) out += c();
  return out;
}

}  // namespace certfleet::http
