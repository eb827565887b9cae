#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "store/store.h"

namespace certfleet::store::sqlite {

// When a background thread copies the write-ahead log into the database file. Checkpoints
// never run inside a committing transaction, where copying pages and syncing the file would
// stall every writer waiting behind it.
struct CheckpointPolicy {
  // How often committed frames are copied (PASSIVE: writers go on meanwhile).
  std::chrono::milliseconds interval{1000};
  // Log length (4 KiB frames) after which the checkpointer holds writers back for one short
  // checkpoint so that the log starts over instead of growing while writes never pause.
  int restart_frames = 16 * 1024;
};

// The embedded store: one SQLite file in WAL mode, foreign keys on, busy timeout.
// `path` is a file path (relative to the working directory or absolute).
Result<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path, const Store::Options& options,
                                               const CheckpointPolicy& checkpoints = {});

}  // namespace certfleet::store::sqlite
