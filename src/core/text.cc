#include "core/text.h"

#include <fmt/format.h>

#include <algorithm>

namespace certfleet {
namespace {

// ASCII only, whatever the process's locale.
bool IsAsciiAlnum(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsNameChar(char c) { return IsAsciiAlnum(c) || c == '.' || c == '_' || c == ':' || c == '-'; }

constexpr unsigned char kDel = 0x7f;
bool IsControl(char c) { return static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) == kDel; }
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The length of the well-formed UTF-8 sequence at the start of `s`, 0 if there is none
// (RFC 3629's table of well-formed byte sequences).
size_t Utf8SequenceLength(std::string_view s) {
  const auto b = [&](size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto cont = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return i < s.size() && b(i) >= lo && b(i) <= hi;
  };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80;  // no overlong forms
    const unsigned char hi = c == 0xED ? 0x9F : 0xBF;  // no surrogates
    return cont(1, lo, hi) && cont(2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80;  // no overlong forms
    const unsigned char hi = c == 0xF4 ? 0x8F : 0xBF;  // nothing past U+10FFFF
    return cont(1, lo, hi) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

// A C1 control character (U+0080 to U+009F, CSI and NEL among them) in UTF-8 at `s`'s start.
bool IsC1(std::string_view s) {
  return s.size() >= 2 && static_cast<unsigned char>(s[0]) == 0xC2 && static_cast<unsigned char>(s[1]) >= 0x80 &&
         static_cast<unsigned char>(s[1]) <= 0x9F;
}

// Whether `text` holds a C0 control (but for line breaks and tabs when `allow_line_breaks`),
// DEL or a C1 control.
bool FindsControl(std::string_view text, bool allow_line_breaks) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (IsControl(c) && !(allow_line_breaks && (c == '\t' || c == '\r' || c == '\n'))) return true;
    if (IsC1(text.substr(i))) return true;
  }
  return false;
}

}  // namespace

bool IsValidName(std::string_view name, size_t max_bytes) {
  if (name.empty() || name.size() > max_bytes || !IsAsciiAlnum(name.front())) return false;
  for (char c : name) {
    if (!IsNameChar(c)) return false;
  }
  return true;
}

std::string NameRule(std::string_view field, size_t max_bytes) {
  return fmt::format("{} must be 1 to {} of A-Z a-z 0-9 . _ : - starting with a letter or digit", field, max_bytes);
}

std::string AsciiLower(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool HasControlCharacter(std::string_view text) { return FindsControl(text, false); }

Result<void> CheckPrintable(std::string_view field, std::string_view text, bool allow_line_breaks) {
  if (FindsControl(text, allow_line_breaks)) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} must not hold control characters", field));
  }
  return Ok();
}

bool IsValidUtf8(std::string_view text) {
  while (!text.empty()) {
    const size_t n = Utf8SequenceLength(text);
    if (n == 0) return false;
    text.remove_prefix(n);
  }
  return true;
}

std::string ToValidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const size_t n = Utf8SequenceLength(text);
    if (n == 0) {
      out += kReplacement;
      text.remove_prefix(1);
    } else {
      out.append(text.substr(0, n));
      text.remove_prefix(n);
    }
  }
  return out;
}

std::string Escaped(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const size_t n = Utf8SequenceLength(text);
    if (n == 0 || IsControl(text.front()) || IsC1(text) || text.front() == '\\') {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(text.front()));
      text.remove_prefix(1);
    } else {
      out.append(text.substr(0, n));
      text.remove_prefix(n);
    }
  }
  return out;
}

Result<std::chrono::seconds> ParseDuration(std::string_view field, std::string_view text, std::chrono::seconds max) {
  auto invalid = [&] {
    return MakeError(
        ErrorCode::kInvalidArgument,
        fmt::format("{} must be a whole number and a unit s, m, h or d (like 72h), at most {}s", field, max.count()));
  };
  constexpr size_t kMaxDigits = 9;
  if (text.size() < 2 || text.size() > kMaxDigits + 1) return invalid();
  int64_t n = 0;
  for (char c : text.substr(0, text.size() - 1)) {
    if (c < '0' || c > '9') return invalid();
    n = n * 10 + (c - '0');
  }
  int64_t unit = 0;
  switch (text.back()) {
    case 's':
      unit = 1;
      break;
    case 'm':
      unit = 60;
      break;
    case 'h':
      unit = 3600;
      break;
    case 'd':
      unit = 86400;
      break;
    default:
      return invalid();
  }
  const std::chrono::seconds d(n * unit);
  if (d.count() <= 0 || d > max) return invalid();
  return d;
}

}  // namespace certfleet
