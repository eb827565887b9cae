#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "blob/blob_store.h"
#include "bulk/manifest_reader.h"
#include "core/clock.h"
#include "core/result.h"
#include "store/imports_repo.h"
#include "store/store.h"

namespace certfleet::bulk {

// Imports supplier manifests into the registry (W3): every certificate registered by its
// SHA-256 fingerprint, its thing created if missing with the profile's type, the
// certificate attached to it, the profile's policies attached and groups joined. An import
// is a job: it writes in batches, several at once, each one transaction with what it adds
// to the import's counts, so that a crash resumes it with the batches not committed. Idempotent: a
// certificate imported before is counted already present; one imported for another thing
// is a conflict and is not moved. Thread-safe.
class ImportService {
 public:
  struct Options {
    std::string manifest_dir;                // where manifests wait for their import
    std::vector<std::string> verifiers_pem;  // Microchip manifest signers
    ArchiveLimits limits;
    // Entries per transaction: 2,000, large enough that commits cost little, small enough
    // that a failed batch is redone quickly and a cancel is seen within a second.
    size_t batch_size = 2000;
    size_t writers = 2;  // batches written at once, each in its own transaction: one parses while one commits
  };

  // Manifests wait for their import in manifest_dir or, given `waiting`, in that object store
  // under manifests/ (so that any node can run or resume any import; manifest_dir then holds
  // only the copy a run reads, removed when the run ends).
  ImportService(store::Store& store, const Clock& clock, Options options, blob::BlobStore* waiting = nullptr)
      : store_(store), clock_(clock), options_(std::move(options)), waiting_(waiting) {}

  // Checks the supplier, bundle type and profile (it and everything it names must exist),
  // moves the manifest file at `path` into manifest_dir, records the import and, with
  // `queue_job`, queues its job (the CLI runs it itself instead), in one transaction.
  // `source` names the inbound store object it came from ("<key> <etag>"): kAlreadyExists
  // if an import of it exists.
  Result<store::ImportRecord> Start(std::string_view supplier, std::string_view profile, std::string_view bundle_type,
                                    const std::string& path, std::string_view actor, bool queue_job = true,
                                    std::optional<std::string> source = std::nullopt);
  // Starts an import of every object of `inbound` under imports/<supplier>/<profile>/ not
  // imported before (by key and ETag, once whichever node sees it); Infineon's bundle type
  // goes with the supplier: imports/infineon.E0E1/<profile>/<file>. An object that cannot
  // start (an unknown profile, say) is recorded as a failed import with the reason, once.
  // Returns how many started. Run by the bulk.scan schedule.
  Result<int> ScanInbound(blob::BlobStore& inbound);
  // Called after each batch with the import so far and the share of the manifest read (0-1).
  using Progress = std::function<void(const store::ImportRecord&, double)>;
  // Runs the import, or resumes it with the batches not committed before. Returns at once for an import that is
  // done, failed or cancelled.
  Result<store::ImportRecord> Run(int64_t id, const Progress& progress = {});
  // Run as attempt `attempt` of a job's `max_attempts`: when it fails and the job will not run
  // again (its last attempt, or a failure that retrying cannot help), the import ends failed
  // with the error and its manifest is deleted, rather than showing queued or running for ever.
  Result<void> RunAttempt(int64_t id, int attempt, int max_attempts, const Progress& progress = {});
  // The same for every import whose job died without finishing it (its worker lost during the
  // last attempt, which RunAttempt never sees end); how many. Run with each scan.
  Result<int> FailOrphaned();
  Result<store::ImportRecord> Get(int64_t id);
  Result<std::vector<store::ImportRecord>> List(std::optional<int64_t> before, int limit);
  Result<std::vector<store::ImportRow>> Rows(int64_t id, std::optional<std::string> status, int64_t after, int limit);
  // A queued or running import stops after its current batch; kFailedPrecondition if it ended.
  Result<store::ImportRecord> Cancel(int64_t id, std::string_view actor);

  // Microchip manifest signers, PEM: bulk.verifier_dir's and those added while serving (read
  // from the store, so a signer added on one node applies to the next import on every node).
  Result<std::vector<std::string>> VerifiersPem();
  // Adds a Microchip manifest signer (one PEM certificate), audited. `source` names the
  // inbound store object it came from. kInvalidArgument if it is not one certificate,
  // kAlreadyExists if it is active already.
  Result<store::ImportVerifier> AddVerifier(std::string_view pem, std::optional<std::string> source,
                                            std::string_view actor);
  Result<std::vector<store::ImportVerifier>> ListVerifiers();
  // kNotFound for no active signer of that id. Those of bulk.verifier_dir stay.
  Result<void> RemoveVerifier(int64_t id, std::string_view actor);
  size_t DirectoryVerifiers() const { return options_.verifiers_pem.size(); }
  static constexpr size_t kMaxVerifierBytes = size_t{64} * 1024;  // a PEM certificate is a few KiB

  static constexpr std::string_view kJob = "bulk.import";
  static constexpr std::string_view kScanJob = "bulk.scan";
  static constexpr std::string_view kInboundPrefix = "imports/";
  // Largest manifest taken from the inbound store (copied into manifest_dir first, as it
  // arrives): a bound on the disk one dropped object may take.
  static constexpr size_t kMaxInboundBytes = size_t{16} << 30;
  // An import's manifest kept in the object store is named "blob:<key>" in its record.
  static constexpr std::string_view kWaitingPrefix = "manifests/";
  static constexpr std::string_view kBlobScheme = "blob:";

  // For tests: Run returns kUnavailable after this many batches, as a crash would leave it.
  int fail_after_batches = -1;

 private:
  // Adds the signer of an inbound store object once (by `source`, its key and ETag).
  Result<void> AddInboundVerifier(blob::BlobStore& inbound, const blob::ObjectInfo& object, const std::string& source);
  // Where an inbound object goes, from its key imports/<supplier>[.<bundle type>]/<profile>/<file>.
  struct InboundKey {
    std::string supplier;
    std::string bundle_type;
    std::string profile;
    bool signer = false;  // a Microchip signer (.crt or .pem), not a manifest
  };
  // nullopt for a key outside that layout: nothing to import.
  static std::optional<InboundKey> ParseInboundKey(std::string_view key);
  // Records an inbound object that cannot be imported as a failed import with the reason,
  // so that the next scans leave it.
  Result<void> RecordFailedInbound(const blob::ObjectInfo& object, const InboundKey& where, const Error& error);
  // Keeps the manifest file at `path` where it waits for its import (moved, or put into the
  // object store and removed); returns what the import's record names it by.
  Result<std::string> Keep(const std::string& path);
  // The file a run reads: the kept file, or a copy of the kept object in manifest_dir.
  Result<std::string> Fetch(const store::ImportRecord& imp);
  // Deletes an ended import's manifest: kept only while the import may still run.
  void RemoveManifest(const store::ImportRecord& imp);
  // Ends the import as failed with the error; returns the error for the job (not retried).
  Result<store::ImportRecord> Fail(int64_t id, const Error& e);
  // Sets the import's final state unless it was cancelled.
  Result<store::ImportRecord> Finish(int64_t id, std::string_view state, std::optional<std::string> error);

  store::Store& store_;
  const Clock& clock_;
  const Options options_;
  blob::BlobStore* const waiting_;
};

}  // namespace certfleet::bulk
