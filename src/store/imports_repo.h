#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "store/store.h"

namespace certfleet::store {

// What an import has done so far; every entry of the manifest it has read is counted once.
struct ImportCounts {
  int64_t seen = 0;
  int64_t imported = 0;
  int64_t already_present = 0;
  int64_t rejected = 0;
  int64_t conflicts = 0;

  ImportCounts& operator+=(const ImportCounts& o) {
    seen += o.seen;
    imported += o.imported;
    already_present += o.already_present;
    rejected += o.rejected;
    conflicts += o.conflicts;
    return *this;
  }
};

// An import of a supplier manifest into the registry (W3).
struct ImportRecord {
  int64_t id = 0;
  std::string supplier;
  std::string profile;
  std::string bundle_type;    // infineon only, else ""
  std::string manifest;       // where the manifest file is kept
  std::string state;          // queued, running, done, failed, cancelled
  int64_t position = 0;       // manifest entries done (committed), in any order
  int64_t read_permille = 0;  // how much of the manifest file was read then, in 1/1000
  ImportCounts counts;
  std::optional<std::string> error;
  std::string created_by;
  int64_t created_at = 0;
  int64_t updated_at = 0;
  std::optional<int64_t> started_at;
  std::optional<int64_t> finished_at;
  std::optional<std::string> source;  // the inbound store object it came from, "<key> <etag>"
};

// Imports still queued or running whose job (of `job_kind`, payload {"import_id": N}) is dead:
// it ended without finishing them, as a worker lost during its last attempt leaves them. The
// import's id and the job's last error.
Result<std::vector<std::pair<int64_t, std::string>>> ImportsOfDeadJobs(Tx& tx, std::string_view job_kind);

// A Microchip manifest signer added while serving.
struct ImportVerifier {
  int64_t id = 0;
  std::string fingerprint;  // SHA-256 of the DER, hex
  std::string subject;      // RFC 2253
  int64_t not_after = 0;
  std::string certificate_pem;
  std::optional<std::string> source;  // "<key> <etag>" of the inbound object it came from
  std::string created_by;
  int64_t created_at = 0;
  std::optional<int64_t> removed_at;
};
// Its id; kAlreadyExists if an active signer has the fingerprint, or a signer the source.
// One inserted removed records only that its source was seen.
Result<int64_t> InsertImportVerifier(Tx& tx, const ImportVerifier& v);
// The active ones (not removed), oldest first.
Result<std::vector<ImportVerifier>> ActiveImportVerifiers(Tx& tx);
// False if there is no active signer of that id.
Result<bool> RemoveImportVerifier(Tx& tx, int64_t id, int64_t now);
// True if a signer (active or removed) came from this inbound store object.
Result<bool> VerifierSourceSeen(Tx& tx, std::string_view source);

// The new import's id; kAlreadyExists if an import of the same source exists.
Result<int64_t> InsertImport(Tx& tx, const ImportRecord& r);
// True if an import of this inbound store object exists.
Result<bool> ImportSourceSeen(Tx& tx, std::string_view source);
Result<std::optional<ImportRecord>> FindImport(Tx& tx, int64_t id);
// Newest first; `before`: the id of the last import of the previous page.
Result<std::vector<ImportRecord>> ListImports(Tx& tx, std::optional<int64_t> before, int limit);
// Sets state, position, counts, error and the times from `r`.
Result<void> UpdateImport(Tx& tx, const ImportRecord& r);

// Manifest entries written by one committed transaction of an import.
struct ImportBatch {
  int64_t first = 0;    // the first entry's offset in the manifest, 0-based
  int64_t entries = 0;  // how many from there
};
// The import's committed batches, by offset.
Result<std::vector<ImportBatch>> ImportBatches(Tx& tx, int64_t import_id);
// Records a batch written in `tx` and adds what it did to the import's counts and position
// (a queued import becomes running); `read_permille` raises the import's, never lowers it.
// Batches of one import may commit concurrently (each waits for the other's row lock at this
// point only: call it last).
Result<void> RecordImportBatch(Tx& tx, int64_t import_id, const ImportBatch& batch, const ImportCounts& counts,
                               int64_t read_permille, int64_t now);

// An entry that was not imported, with why.
struct ImportRow {
  int64_t index = 0;   // its place in the manifest, 1-based
  std::string status;  // rejected or conflict
  std::string thing_name;
  std::string fingerprint;
  std::string reason;
};
// Deferred, in one write (see InsertRows).
Result<void> InsertImportRows(Tx& tx, int64_t import_id, const std::vector<ImportRow>& rows);
// In manifest order after `after`; `status` filters when set.
Result<std::vector<ImportRow>> ListImportRows(Tx& tx, int64_t import_id, std::optional<std::string> status,
                                              int64_t after, int limit);

// How registry links name the imported certificate of an import's entry, and whether a link's
// target is one (else it is the serial of a certificate certfleet issued).
std::string ImportedRef(int64_t import_id, int64_t entry);
bool IsImportedRef(std::string_view ref);

// A supplier's certificate as imported: by the SHA-256 of its DER.
struct ImportedCertificate {
  std::string fingerprint;  // hex
  std::string ref;          // how registry links name it (see migration 7)
  std::string source;       // the supplier
  std::string thing_name;
  std::string der;
  int64_t import_id = 0;
  int64_t created_at = 0;
};
// The things the imported certificates among `fingerprints` belong to, by fingerprint; one
// query for them all.
Result<std::map<std::string, std::string>> ImportedCertificateThings(Tx& tx,
                                                                     const std::vector<std::string>& fingerprints);
// Deferred, in one write (see InsertRows); kAlreadyExists (at the latest on commit) if one was imported before.
Result<void> InsertImportedCertificates(Tx& tx, const std::vector<ImportedCertificate>& certificates);
// The state of the attachment of the imported certificate `fingerprint` to its thing
// (kAttachmentActive, ...); nullopt when it is attached to none.
Result<std::optional<std::string>> ImportedCertificateAttachment(Tx& tx, std::string_view fingerprint);
// The imported certificate a link names (by its ref), without its DER.
Result<std::optional<ImportedCertificate>> FindImportedCertificate(Tx& tx, std::string_view ref);

}  // namespace certfleet::store
