#pragma once

namespace certfleet::store::sqlite {

// The name of a SQLite VFS that is the platform's default VFS except for write-ahead logs:
// a transaction's log frames, which SQLite writes one system call per frame header and one
// per page, are gathered in memory and written in 60 KiB pieces, the last when SQLite syncs
// the log or reads it back. Readers see a commit only after its sync, so the connection must run with
// `PRAGMA synchronous=FULL`, which syncs the log at every commit: with less, other
// connections could read frames still in memory. Registered on first use; thread-safe.
// Null if SQLite refused to register it: SQLite then opens files with its default VFS.
const char* WalCombiningVfs();

}  // namespace certfleet::store::sqlite
