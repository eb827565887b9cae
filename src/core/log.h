#pragma once

#include <boost/json/object.hpp>
#include <string_view>

namespace certfleet::log {

// JSON log lines on stderr, one object per line: {"ts","level","msg",...fields}.
// Thread-safe. Never pass private keys or token secrets as fields.
enum class Level { kDebug, kInfo, kWarn, kError };

using Fields = boost::json::object;

// Sets the minimum level from "debug", "info", "warn" or "error"; false if unknown.
bool SetLevel(std::string_view name);
void Write(Level level, std::string_view msg, const Fields& fields = {});

inline void Debug(std::string_view msg, const Fields& fields = {}) { Write(Level::kDebug, msg, fields); }
inline void Info(std::string_view msg, const Fields& fields = {}) { Write(Level::kInfo, msg, fields); }
inline void Warn(std::string_view msg, const Fields& fields = {}) { Write(Level::kWarn, msg, fields); }
inline void Error(std::string_view msg, const Fields& fields = {}) { Write(Level::kError, msg, fields); }

}  // namespace certfleet::log
