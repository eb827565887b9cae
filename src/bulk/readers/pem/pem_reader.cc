#include "bulk/readers/pem/pem_reader.h"

#include "core/crypto.h"

namespace certfleet::bulk::readers {
namespace {

constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
// A certificate's base64 beyond this is no device certificate: bounds memory on a broken file.
constexpr size_t kMaxPemBytes = size_t{64} * 1024;

class PemReader final : public FileManifestReader {
 public:
  Result<std::optional<ManifestEntry>> Next() override {
    std::string line;
    std::string base64;
    bool inside = false;
    for (;;) {
      CF_ASSIGN_OR_RETURN(bool more, ReadLine(in(), line, kMaxPemBytes));
      if (!more) break;
      if (!inside) {
        inside = line == kBegin;
        continue;
      }
      if (line == kEnd) {
        ++index_;
        std::optional<std::string> der = Base64Decode(base64);
        if (!der) {
          ManifestEntry e;
          e.index = index_;
          e.problem = "the PEM block is not base64";
          return std::optional<ManifestEntry>(std::move(e));
        }
        return std::optional<ManifestEntry>(EntryFromDer(index_, std::move(*der)));
      }
      base64 += line;
      if (base64.size() > kMaxPemBytes) {
        return MakeError(ErrorCode::kInvalidArgument, "a PEM block is larger than any certificate: no END line?");
      }
    }
    if (inside) return MakeError(ErrorCode::kInvalidArgument, "the last PEM block has no END line");
    return std::optional<ManifestEntry>();
  }

 private:
  size_t index_ = 0;
};

}  // namespace

Result<std::unique_ptr<ManifestReader>> OpenPemManifest(const std::string& path) {
  auto reader = std::make_unique<PemReader>();
  CF_RETURN_IF_ERROR(reader->OpenFile(path));
  return std::unique_ptr<ManifestReader>(std::move(reader));
}

}  // namespace certfleet::bulk::readers
