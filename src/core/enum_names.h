#pragma once

// The one string mapping of an enum whose values run 0, 1, ... in the order of its names:
//   constexpr std::string_view kColorNames[] = {"red", "green"};
//   EnumName(Color::kGreen, kColorNames) == "green"; ParseEnum<Color>("red", kColorNames).
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace certfleet {

template <typename E, size_t N>
constexpr std::string_view EnumName(E value, const std::string_view (&names)[N]) {
  const auto i = static_cast<size_t>(value);
  return i < N ? names[i] : std::string_view("?");
}

template <typename E, size_t N>
constexpr std::optional<E> ParseEnum(std::string_view name, const std::string_view (&names)[N]) {
  for (size_t i = 0; i < N; ++i) {
    if (names[i] == name) return static_cast<E>(i);
  }
  return std::nullopt;
}

// "a, b or c": the names, for a message saying which are allowed.
template <size_t N>
std::string EnumChoices(const std::string_view (&names)[N]) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += i + 1 == N ? " or " : ", ";
    out += names[i];
  }
  return out;
}

}  // namespace certfleet
