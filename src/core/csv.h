#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace certfleet {

// Reads RFC 4180 CSV one record at a time from a source of lines, so that a file of any size
// is read in constant memory: quoted fields may hold commas, doubled quotes and line breaks
// (a PEM across lines); records may end in LF or CRLF; empty lines are skipped. Not
// thread-safe.
class CsvReader {
 public:
  // `next_line` puts the next line (without its '\n') into its argument, false at the end.
  explicit CsvReader(std::function<bool(std::string&)> next_line) : next_line_(std::move(next_line)) {}
  // Lines of `text`, which must outlive the reader.
  static CsvReader OfText(std::string_view text);

  // The next record's fields; false at the end. kInvalidArgument if a quote is never closed
  // (the record would run to the end: at most kMaxRecordBytes are read looking for it) or a
  // closing quote is followed by something other than a comma.
  Result<bool> Next(std::vector<std::string>& fields);

  // Longest record: bounds memory when a quote is never closed.
  static constexpr size_t kMaxRecordBytes = size_t{1} << 20;

 private:
  std::function<bool(std::string&)> next_line_;
  std::string line_;
};

}  // namespace certfleet
