#include "core/csv.h"

#include <algorithm>

namespace certfleet {
namespace {

Error Invalid(std::string message) { return MakeError(ErrorCode::kInvalidArgument, std::move(message)); }

// Splits one record whose quotes are balanced.
Result<void> Split(std::string_view text, std::vector<std::string>& fields) {
  size_t pos = 0;
  for (;;) {
    std::string field;
    if (pos < text.size() && text[pos] == '"') {
      ++pos;
      for (;;) {
        const size_t quote = text.find('"', pos);
        if (quote == std::string_view::npos) return Invalid("a quoted CSV field is never closed");
        field.append(text.substr(pos, quote - pos));
        pos = quote + 1;
        if (pos < text.size() && text[pos] == '"') {
          field += '"';
          ++pos;
          continue;
        }
        break;
      }
    } else {
      const size_t end = std::min(text.find(',', pos), text.size());
      field = std::string(text.substr(pos, end - pos));
      pos = end;
    }
    fields.push_back(std::move(field));
    if (pos >= text.size()) return Ok();
    if (text[pos] != ',') return Invalid("a quoted CSV field is followed by more than a comma");
    ++pos;
  }
}

}  // namespace

CsvReader CsvReader::OfText(std::string_view text) {
  return CsvReader([text, pos = size_t{0}](std::string& line) mutable {
    if (pos >= text.size()) return false;
    const size_t end = std::min(text.find('\n', pos), text.size());
    line.assign(text.substr(pos, end - pos));
    pos = end + 1;
    return true;
  });
}

Result<bool> CsvReader::Next(std::vector<std::string>& fields) {
  fields.clear();
  std::string record;
  size_t quotes = 0;
  for (;;) {
    if (!next_line_(line_)) {
      if (record.empty()) return false;
      break;  // a record whose quote never closes: Split says so
    }
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (record.empty() && quotes == 0 && line_.empty()) continue;  // an empty line between records
    if (quotes % 2 == 1) record += '\n';
    record += line_;
    quotes += static_cast<size_t>(std::count(line_.begin(), line_.end(), '"'));
    if (quotes % 2 == 0) break;
    if (record.size() > kMaxRecordBytes) return Invalid("a quoted CSV field is never closed");
  }
  CF_RETURN_IF_ERROR(Split(record, fields));
  return true;
}

}  // namespace certfleet
