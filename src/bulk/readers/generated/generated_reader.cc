#include "bulk/readers/generated/generated_reader.h"

#include "core/crypto.h"

namespace certfleet::bulk::readers {
namespace {

// The base64 of one certificate's PEM; far above any device certificate.
constexpr size_t kMaxLineBytes = size_t{64} * 1024;
constexpr size_t kFallbackHexDigits = 8;

class GeneratedReader final : public FileManifestReader {
 public:
  Result<std::optional<ManifestEntry>> Next() override {
    std::string line;
    do {
      CF_ASSIGN_OR_RETURN(bool more, ReadLine(in(), line, kMaxLineBytes));
      if (!more) return std::optional<ManifestEntry>();
    } while (line.empty());
    ++index_;
    std::optional<std::string> pem = Base64Decode(line);
    Result<std::string> der =
        pem ? CertificateDerFromPem(*pem) : Result<std::string>(MakeError(ErrorCode::kInvalidArgument, "not base64"));
    if (!der.ok()) {
      ManifestEntry e;
      e.index = index_;
      e.problem = "the line is not the base64 of a PEM certificate: " + der.error().message;
      return std::optional<ManifestEntry>(std::move(e));
    }
    const std::string fallback = "Device-" + Sha256Hex(*der).substr(0, kFallbackHexDigits);
    return std::optional<ManifestEntry>(EntryFromDer(index_, std::move(*der), fallback));
  }

 private:
  size_t index_ = 0;
};

}  // namespace

Result<std::unique_ptr<ManifestReader>> OpenGeneratedManifest(const std::string& path) {
  auto reader = std::make_unique<GeneratedReader>();
  CF_RETURN_IF_ERROR(reader->OpenFile(path));
  return std::unique_ptr<ManifestReader>(std::move(reader));
}

}  // namespace certfleet::bulk::readers
