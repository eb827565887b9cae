#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "core/result.h"

namespace certfleet {

// Longest name of a registry object (thing, type, group, policy, template, profile, batch).
inline constexpr size_t kMaxNameBytes = 128;

// The registry's name rule (things, types, groups, policies, templates, batches, device ids):
// 1 to `max_bytes` of A-Z a-z 0-9 . _ : -, starting with a letter or digit. Names appear in
// certificates (CN), URLs, file names and SQL parameters, so nothing that needs escaping in
// any of them.
bool IsValidName(std::string_view name, size_t max_bytes = kMaxNameBytes);
// What IsValidName asks of `field`, for error messages.
std::string NameRule(std::string_view field, size_t max_bytes = kMaxNameBytes);

// `text` with A-Z made a-z, whatever the process's locale (DNS names, serials, media types).
std::string AsciiLower(std::string_view text);

// True if `text` holds a control character: C0, DEL or C1 (U+0080 to U+009F in UTF-8). Such
// characters in a name move a terminal's cursor or change its colours when the name is printed.
bool HasControlCharacter(std::string_view text);
// kInvalidArgument naming `field` if `text` has a control character; `allow_line_breaks`
// lets tabs, CR and LF through (PEM, commands' error output).
Result<void> CheckPrintable(std::string_view field, std::string_view text, bool allow_line_breaks = false);

// True if `text` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool IsValidUtf8(std::string_view text);
// `text` with every byte that is not part of well-formed UTF-8 replaced by U+FFFD, so that
// input echoed in a response or a log line never makes it invalid.
std::string ToValidUtf8(std::string_view text);
// `text` with control characters and bytes that are not well-formed UTF-8 written as \xNN,
// so that a rejected value can be shown and stored as it was sent, harmlessly.
std::string Escaped(std::string_view text);

// A duration as people write it: a whole number and a unit, s, m, h or d ("90s", "72h", "7d").
// kInvalidArgument naming `field` otherwise, or past `max`.
Result<std::chrono::seconds> ParseDuration(std::string_view field, std::string_view text, std::chrono::seconds max);

}  // namespace certfleet
