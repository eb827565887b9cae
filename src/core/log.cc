#include "core/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/json/serialize.hpp>
#include <memory>

#include "core/clock.h"

namespace certfleet::log {
namespace {

std::atomic<Level> g_min_level{Level::kInfo};

spdlog::logger& Logger() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    auto l = std::make_shared<spdlog::logger>("certfleet", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    l->set_pattern("%v");
    l->set_level(spdlog::level::trace);
    l->flush_on(spdlog::level::trace);
    return l;
  }();
  return *logger;
}

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug:
      return "debug";
    case Level::kInfo:
      return "info";
    case Level::kWarn:
      return "warn";
    case Level::kError:
      return "error";
  }
  return "info";
}

}  // namespace

bool SetLevel(std::string_view name) {
  for (Level l : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    if (LevelName(l) == name) {
      g_min_level = l;
      return true;
    }
  }
  return false;
}

void Write(Level level, std::string_view msg, const Fields& fields) {
  if (level < g_min_level.load()) return;
  boost::json::object line;
  line["ts"] = FormatRfc3339(SystemClock::Instance().NowMillis());
  line["level"] = LevelName(level);
  line["msg"] = msg;
  for (const auto& kv : fields) line[kv.key()] = kv.value();
  Logger().info(boost::json::serialize(line));
}

}  // namespace certfleet::log
