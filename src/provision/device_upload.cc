#include "provision/device_upload.h"

#include <fmt/format.h>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <vector>

#include "core/csv.h"
#include "core/json.h"
#include "core/text.h"

namespace certfleet::provision {
namespace {

namespace json = boost::json;

// The string field `name` of `entry` into `out`; a problem if present and not a string.
void StringField(const json::object& entry, std::string_view name, std::string& out, std::string& problem) {
  const json::value* v = entry.if_contains(name);
  if (v == nullptr || v->is_null()) return;
  if (!v->is_string()) {
    if (problem.empty()) problem = fmt::format("{} is not a string", name);
    return;
  }
  out = std::string(v->get_string());
}

Result<void> ForEachJsonRow(std::string_view body, const std::function<Result<void>(const UploadRow&)>& row) {
  CF_ASSIGN_OR_RETURN(json::value doc, ParseJson(body));
  if (!doc.is_array()) return MakeError(ErrorCode::kInvalidArgument, "the upload must be a JSON array of devices");
  size_t number = 0;
  for (const json::value& entry : doc.get_array()) {
    UploadRow r;
    r.number = ++number;
    if (const json::object* o = entry.if_object()) {
      StringField(*o, "device_id", r.device_id, r.problem);
      StringField(*o, "public_key_pem", r.public_key_pem, r.problem);
      StringField(*o, "batch", r.batch, r.problem);
    } else {
      r.problem = "not an object";
    }
    CF_RETURN_IF_ERROR(row(r));
  }
  return Ok();
}

Result<void> ForEachCsvRow(std::string_view body, const std::function<Result<void>(const UploadRow&)>& row) {
  CsvReader reader = CsvReader::OfText(body);
  std::vector<std::string> fields;
  size_t number = 0;
  bool first = true;
  for (;;) {
    CF_ASSIGN_OR_RETURN(bool more, reader.Next(fields));
    if (!more) return Ok();
    if (first && fields[0] == "device_id") {
      first = false;
      continue;  // the header
    }
    first = false;
    UploadRow r;
    r.number = ++number;
    if (fields.size() < 2 || fields.size() > 3) {
      r.problem = fmt::format("expected device_id,public_key_pem[,batch]; found {} fields", fields.size());
    }
    if (!fields.empty()) r.device_id = fields[0];
    if (fields.size() > 1) r.public_key_pem = fields[1];
    if (fields.size() > 2) r.batch = fields[2];
    CF_RETURN_IF_ERROR(row(r));
  }
}

}  // namespace

Result<void> ForEachUploadRow(std::string_view body, UploadFormat format,
                              const std::function<Result<void>(const UploadRow&)>& row) {
  return format == UploadFormat::kJson ? ForEachJsonRow(body, row) : ForEachCsvRow(body, row);
}

}  // namespace certfleet::provision
