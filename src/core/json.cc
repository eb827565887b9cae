#include "core/json.h"

#include <fmt/format.h>

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/text.h"

namespace certfleet {
namespace {

namespace json = boost::json;

constexpr size_t kMaxEchoedKey = 64;  // of a duplicate key named in an error

// A boost::json::basic_parser handler that only remembers the keys of the objects open at
// the moment and stops at the first key an object has twice.
class DuplicateKeyFinder {
 public:
  static constexpr size_t max_object_size = size_t(-1);
  static constexpr size_t max_array_size = size_t(-1);
  static constexpr size_t max_key_size = size_t(-1);
  static constexpr size_t max_string_size = size_t(-1);

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_array_begin(json::error_code&) { return true; }
  bool on_array_end(size_t, json::error_code&) { return true; }
  bool on_object_begin(json::error_code&) {
    open_.emplace_back();
    return true;
  }
  bool on_object_end(size_t, json::error_code&) {
    open_.pop_back();
    return true;
  }
  bool on_string_part(json::string_view, size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, size_t, json::error_code&) { return true; }
  bool on_key_part(json::string_view s, size_t, json::error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, size_t, json::error_code& ec) {
    key_.append(s.data(), s.size());
    if (!open_.back().insert(key_).second) {
      duplicate = key_;
      ec = json::error::syntax;
      return false;
    }
    key_.clear();
    return true;
  }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(int64_t, json::string_view, json::error_code&) { return true; }
  bool on_uint64(uint64_t, json::string_view, json::error_code&) { return true; }
  bool on_double(double, json::string_view, json::error_code&) { return true; }
  bool on_bool(bool, json::error_code&) { return true; }
  bool on_null(json::error_code&) { return true; }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

  std::optional<std::string> duplicate;  // the first key found twice in one object

 private:
  std::vector<std::set<std::string>> open_;  // keys of each object being read, innermost last
  std::string key_;
};

// The first key that an object of `text` (valid JSON) has twice.
std::optional<std::string> DuplicateKey(std::string_view text) {
  json::basic_parser<DuplicateKeyFinder> parser(json::parse_options{});
  json::error_code ec;
  parser.write_some(false, text.data(), text.size(), ec);
  return parser.handler().duplicate;
}

}  // namespace

Result<json::value> ParseJson(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return MakeError(ErrorCode::kInvalidArgument, "malformed JSON: " + ec.message());
  if (auto key = DuplicateKey(text)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     fmt::format("malformed JSON: the key \"{}\" appears twice in an object",
                                 Escaped(key->substr(0, kMaxEchoedKey))));
  }
  return v;
}

}  // namespace certfleet
