#include "bulk/manifest_reader.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "bulk/readers/espressif/espressif_reader.h"
#include "bulk/readers/generated/generated_reader.h"
#include "bulk/readers/infineon/infineon_reader.h"
#include "bulk/readers/microchip/microchip_reader.h"
#include "bulk/readers/pem/pem_reader.h"
#include "core/crypto.h"
#include "pki/certificate.h"

namespace certfleet::bulk {

const std::vector<std::string_view>& Suppliers() {
  static const std::vector<std::string_view> suppliers = {"microchip", "infineon", "espressif", "generated", "pem"};
  return suppliers;
}

Result<std::unique_ptr<ManifestReader>> OpenManifest(std::string_view supplier, const std::string& path,
                                                     const ReaderOptions& options) {
  if (supplier == "microchip") return readers::OpenMicrochipManifest(path, options.verifiers_pem);
  if (supplier == "infineon") return readers::OpenInfineonManifest(path, options.bundle_type, options.limits);
  if (supplier == "espressif") return readers::OpenEspressifManifest(path);
  if (supplier == "generated") return readers::OpenGeneratedManifest(path);
  if (supplier == "pem") return readers::OpenPemManifest(path);
  return MakeError(ErrorCode::kInvalidArgument,
                   fmt::format("unknown supplier '{}' (microchip, infineon, espressif, generated, pem)", supplier));
}

Result<std::vector<std::string>> ReadVerifierDir(const std::string& dir) {
  constexpr uintmax_t kMaxCertificateFile = uintmax_t{64} * 1024;  // a PEM certificate is a few KiB
  std::vector<std::string> out;
  if (dir.empty()) return out;
  std::error_code ec;
  for (const auto& f : std::filesystem::directory_iterator(dir, ec)) {
    const std::string ext = f.path().extension().string();
    if (!f.is_regular_file() || (ext != ".crt" && ext != ".pem")) continue;
    if (f.file_size() > kMaxCertificateFile) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("{} is too large for a certificate", f.path().string()));
    }
    std::ifstream in(f.path(), std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (ec) return MakeError(ErrorCode::kInvalidArgument, fmt::format("cannot read {}: {}", dir, ec.message()));
  return out;
}

ManifestEntry EntryFromDer(size_t index, std::string der, std::string_view fallback_name) {
  ManifestEntry e;
  e.index = index;
  Result<std::string> cn = pki::CertificateSubjectCn(der);
  if (!cn.ok()) {
    e.problem = cn.error().message;
    return e;
  }
  e.thing_name = cn->empty() ? std::string(fallback_name) : std::move(*cn);
  if (e.thing_name.empty()) e.problem = "the certificate has no subject CN to name its thing";
  e.certificate = std::move(der);
  return e;
}

Result<std::string> CertificateDerFromPem(std::string_view pem) {
  constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
  constexpr std::string_view kEnd = "-----END CERTIFICATE-----";
  const size_t begin = pem.find(kBegin);
  const size_t end = begin == std::string_view::npos ? begin : pem.find(kEnd, begin);
  if (end == std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "no PEM certificate (BEGIN CERTIFICATE)");
  }
  std::string base64;
  base64.reserve(end - begin);
  for (char c : pem.substr(begin + kBegin.size(), end - begin - kBegin.size())) {
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') base64 += c;
  }
  std::optional<std::string> der = Base64Decode(base64);
  if (!der || der->empty()) return MakeError(ErrorCode::kInvalidArgument, "the PEM certificate is not base64");
  return std::move(*der);
}

double FileManifestReader::Fraction() {
  const std::streamoff at = in_->tellg();
  if (size_ == 0 || at < 0) return in_->eof() ? 1.0 : 0.0;
  return std::min(1.0, static_cast<double>(at) / static_cast<double>(size_));
}

Result<void> FileManifestReader::OpenFile(const std::string& path) {
  auto file = std::make_unique<std::ifstream>(path, std::ios::binary);
  if (!*file) return MakeError(ErrorCode::kNotFound, "cannot open the manifest file");
  in_ = std::move(file);
  std::error_code ec;
  size_ = std::filesystem::file_size(path, ec);
  return Ok();
}

Result<bool> ReadLine(std::istream& in, std::string& line, size_t max_bytes) {
  line.clear();
  std::streambuf* buf = in.rdbuf();
  for (;;) {
    const int c = buf->sbumpc();
    if (c == std::char_traits<char>::eof()) {
      if (line.empty()) return false;
      break;
    }
    if (c == '\n') break;
    if (line.size() >= max_bytes) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("a line is longer than {} bytes", max_bytes));
    }
    line += static_cast<char>(c);
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return true;
}

}  // namespace certfleet::bulk
