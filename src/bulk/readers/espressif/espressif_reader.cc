#include "bulk/readers/espressif/espressif_reader.h"

#include <fmt/format.h>

#include "core/csv.h"

namespace certfleet::bulk::readers {
namespace {

// One CSV line; a PEM line is 64 characters, a MAC 12.
constexpr size_t kMaxLineBytes = size_t{16} * 1024;

class EspressifReader final : public FileManifestReader {
 public:
  EspressifReader()
      : csv_([this](std::string& line) {
          Result<bool> more = ReadLine(in(), line, kMaxLineBytes);
          if (!more.ok()) {
            line_error_ = more.error();
            return false;
          }
          return *more;
        }) {}

  Result<std::optional<ManifestEntry>> Next() override {
    std::vector<std::string> fields;
    CF_ASSIGN_OR_RETURN(bool more, csv_.Next(fields));
    if (line_error_) return *line_error_;
    if (!more) return std::optional<ManifestEntry>();
    if (!header_seen_) {
      header_seen_ = true;
      if (fields.size() != 3 || fields[0] != "MAC" || fields[2] != "cert") {
        return MakeError(ErrorCode::kInvalidArgument, "an Espressif manifest starts with the header MAC,cn,cert");
      }
      return Next();
    }
    ++index_;
    ManifestEntry e;
    e.index = index_;
    if (fields.size() != 3) {
      e.problem = fmt::format("expected MAC,cn,cert; found {} fields", fields.size());
      return std::optional<ManifestEntry>(std::move(e));
    }
    Result<std::string> der = CertificateDerFromPem(fields[2]);
    if (!der.ok()) {
      e.problem = "cert: " + der.error().message;
      return std::optional<ManifestEntry>(std::move(e));
    }
    // Named by its MAC, whatever the certificate's CN.
    e = EntryFromDer(index_, std::move(*der), fields[0]);
    if (fields[0].empty()) {
      if (e.problem.empty()) e.problem = "MAC is empty";
    } else {
      e.thing_name = fields[0];
    }
    return std::optional<ManifestEntry>(std::move(e));
  }

 private:
  CsvReader csv_;
  std::optional<Error> line_error_;
  bool header_seen_ = false;
  size_t index_ = 0;
};

}  // namespace

Result<std::unique_ptr<ManifestReader>> OpenEspressifManifest(const std::string& path) {
  auto reader = std::make_unique<EspressifReader>();
  CF_RETURN_IF_ERROR(reader->OpenFile(path));
  return std::unique_ptr<ManifestReader>(std::move(reader));
}

}  // namespace certfleet::bulk::readers
