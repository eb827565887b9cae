#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace certfleet::bulk {

// One certificate of a supplier manifest, as read.
struct ManifestEntry {
  size_t index = 0;                // 1-based place in the manifest
  std::string thing_name;          // who the certificate is for, by the supplier's rule
  std::string certificate;         // DER
  std::vector<std::string> chain;  // issuers the manifest gives with it, DER, nearest first
  std::string problem;             // why it cannot be imported ("" if it can): reported, not imported
};

// Reads a supplier's manifest one certificate at a time, in constant memory whatever its
// size. Not thread-safe.
class ManifestReader {
 public:
  virtual ~ManifestReader() = default;
  // The next entry, nullopt after the last. An entry that is broken comes back with its
  // `problem`; an error means the manifest cannot be read any further (not the format, an
  // archive past its limits, an I/O error).
  virtual Result<std::optional<ManifestEntry>> Next() = 0;
  // How much of the manifest file is read, 0 to 1, by bytes: for progress bars.
  virtual double Fraction() = 0;
};

// A manifest read as a stream from a file: owns the file and says how much of it is read.
class FileManifestReader : public ManifestReader {
 public:
  double Fraction() override;
  // Before the first Next(); kNotFound if the file cannot be opened.
  Result<void> OpenFile(const std::string& path);

 protected:
  std::istream& in() { return *in_; }

 private:
  std::unique_ptr<std::istream> in_;
  uint64_t size_ = 0;
};

// Bounds on what an archive may expand to, so that an archive bomb stops with an error.
struct ArchiveLimits {
  size_t max_entries = 100'000;                     // files, over all nesting levels
  uint64_t max_expanded_bytes = uint64_t{4} << 30;  // all files together
  uint64_t max_entry_bytes = uint64_t{64} << 20;    // one file (an inner archive is read whole)
  int max_depth = 2;                                // archives inside archives: Infineon's 7z of 7z
};

struct ReaderOptions {
  std::string bundle_type;                 // infineon: E0E0, E0E1 or E0E2
  std::vector<std::string> verifiers_pem;  // microchip: the manifest signers' certificates
  ArchiveLimits limits;
};

// The suppliers certfleet reads: microchip, infineon, espressif, generated, pem.
const std::vector<std::string_view>& Suppliers();
// A reader of the manifest file at `path` in `supplier`'s format; kInvalidArgument for an
// unknown supplier or options it needs and lacks, kNotFound if the file cannot be opened.
Result<std::unique_ptr<ManifestReader>> OpenManifest(std::string_view supplier, const std::string& path,
                                                     const ReaderOptions& options);

// The Microchip manifest signers in `dir`: every .crt and .pem file, PEM text each. An
// empty `dir` gives none.
Result<std::vector<std::string>> ReadVerifierDir(const std::string& dir);

// Helpers the readers share.
// An entry for a DER certificate: parsed, and named by its subject CN (or `fallback_name`
// when it has none); `problem` set if it is not a certificate.
ManifestEntry EntryFromDer(size_t index, std::string der, std::string_view fallback_name = "");
// The DER of the first certificate in PEM text; kInvalidArgument if there is none.
Result<std::string> CertificateDerFromPem(std::string_view pem);
// The next line of `in` (without its LF or CRLF) into `line`; false at the end. A line
// longer than `max_bytes` is kInvalidArgument: a text manifest's lines are short, and this
// keeps a file without line breaks from being read into memory whole.
Result<bool> ReadLine(std::istream& in, std::string& line, size_t max_bytes);

}  // namespace certfleet::bulk
