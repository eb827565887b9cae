#include "store/sqlite/wal_vfs.h"

#include <sqlite3.h>

#include <new>
#include <string>

namespace certfleet::store::sqlite {
namespace {

constexpr const char* kVfsName = "certfleet-wal";
// Gathered frames are written out once they reach this size, before the sync if need be:
// SQLite's unix VFS takes less than 128 KiB per write, and a write of SQLite's is at most
// one 64 KiB page, so a write never exceeds 124 KiB.
constexpr size_t kFlushBytes = 60 << 10;

sqlite3_vfs* base_vfs = nullptr;
sqlite3_vfs combining_vfs;

// A write-ahead log opened through the combining VFS. The platform's file follows this
// struct in the memory SQLite allocates for the file (the VFS's szOsFile).
struct WalFile {
  sqlite3_file base;          // first, as SQLite requires: pMethods
  sqlite3_file* real;         // the platform VFS's file, placed after this struct
  std::string* gathered;      // written since the last flush, contiguous; owned
  sqlite3_int64 gathered_at;  // file offset of gathered's first byte
};

WalFile& Wal(sqlite3_file* f) { return *reinterpret_cast<WalFile*>(f); }
const sqlite3_io_methods& Real(sqlite3_file* f) { return *Wal(f).real->pMethods; }

// Writes the gathered bytes out. They leave memory even if the write fails: SQLite then
// fails the transaction and rolls it back.
int Flush(WalFile& w) {
  if (w.gathered->empty()) return SQLITE_OK;
  const int rc =
      w.real->pMethods->xWrite(w.real, w.gathered->data(), static_cast<int>(w.gathered->size()), w.gathered_at);
  w.gathered->clear();  // keeps its capacity for the next commit
  return rc;
}

int Close(sqlite3_file* f) {
  WalFile& w = Wal(f);
  const int flushed = Flush(w);
  const int closed = Real(f).xClose(w.real);
  delete w.gathered;
  return flushed != SQLITE_OK ? flushed : closed;
}

int Read(sqlite3_file* f, void* out, int amount, sqlite3_int64 offset) {
  if (int rc = Flush(Wal(f)); rc != SQLITE_OK) return rc;
  return Real(f).xRead(Wal(f).real, out, amount, offset);
}

int Write(sqlite3_file* f, const void* data, int amount, sqlite3_int64 offset) {
  WalFile& w = Wal(f);
  const auto end = w.gathered_at + static_cast<sqlite3_int64>(w.gathered->size());
  if (!w.gathered->empty() && offset != end) {
    if (int rc = Flush(w); rc != SQLITE_OK) return rc;
  }
  if (w.gathered->empty()) w.gathered_at = offset;
  try {
    w.gathered->append(static_cast<const char*>(data), static_cast<size_t>(amount));
  } catch (const std::bad_alloc&) {
    return SQLITE_IOERR_NOMEM;
  }
  return w.gathered->size() >= kFlushBytes ? Flush(w) : SQLITE_OK;
}

int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  if (int rc = Flush(Wal(f)); rc != SQLITE_OK) return rc;
  return Real(f).xTruncate(Wal(f).real, size);
}

int Sync(sqlite3_file* f, int flags) {
  if (int rc = Flush(Wal(f)); rc != SQLITE_OK) return rc;
  return Real(f).xSync(Wal(f).real, flags);
}

int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  if (int rc = Flush(Wal(f)); rc != SQLITE_OK) return rc;
  return Real(f).xFileSize(Wal(f).real, size);
}

int Lock(sqlite3_file* f, int level) { return Real(f).xLock(Wal(f).real, level); }
int Unlock(sqlite3_file* f, int level) { return Real(f).xUnlock(Wal(f).real, level); }
int CheckReservedLock(sqlite3_file* f, int* out) { return Real(f).xCheckReservedLock(Wal(f).real, out); }
int FileControl(sqlite3_file* f, int op, void* arg) { return Real(f).xFileControl(Wal(f).real, op, arg); }
int SectorSize(sqlite3_file* f) { return Real(f).xSectorSize(Wal(f).real); }
int DeviceCharacteristics(sqlite3_file* f) { return Real(f).xDeviceCharacteristics(Wal(f).real); }
int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  return Real(f).xShmMap(Wal(f).real, region, size, extend, out);
}
int ShmLock(sqlite3_file* f, int offset, int n, int flags) { return Real(f).xShmLock(Wal(f).real, offset, n, flags); }
void ShmBarrier(sqlite3_file* f) { Real(f).xShmBarrier(Wal(f).real); }
int ShmUnmap(sqlite3_file* f, int delete_flag) { return Real(f).xShmUnmap(Wal(f).real, delete_flag); }
int Fetch(sqlite3_file* f, sqlite3_int64 offset, int amount, void** out) {
  if (int rc = Flush(Wal(f)); rc != SQLITE_OK) return rc;
  return Real(f).xFetch(Wal(f).real, offset, amount, out);
}
int Unfetch(sqlite3_file* f, sqlite3_int64 offset, void* p) { return Real(f).xUnfetch(Wal(f).real, offset, p); }

const sqlite3_io_methods kWalMethods = {
    .iVersion = 3,
    .xClose = Close,
    .xRead = Read,
    .xWrite = Write,
    .xTruncate = Truncate,
    .xSync = Sync,
    .xFileSize = FileSize,
    .xLock = Lock,
    .xUnlock = Unlock,
    .xCheckReservedLock = CheckReservedLock,
    .xFileControl = FileControl,
    .xSectorSize = SectorSize,
    .xDeviceCharacteristics = DeviceCharacteristics,
    .xShmMap = ShmMap,
    .xShmLock = ShmLock,
    .xShmBarrier = ShmBarrier,
    .xShmUnmap = ShmUnmap,
    .xFetch = Fetch,
    .xUnfetch = Unfetch,
};

int Open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  // Everything but logs is the platform's file itself, in the first bytes of `f`.
  if ((flags & SQLITE_OPEN_WAL) == 0) return base_vfs->xOpen(base_vfs, name, f, flags, out_flags);
  WalFile& w = Wal(f);
  w.base.pMethods = nullptr;  // until the platform's file is open: SQLite then calls no xClose
  w.real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + sizeof(WalFile));
  const int rc = base_vfs->xOpen(base_vfs, name, w.real, flags, out_flags);
  if (rc != SQLITE_OK) return rc;
  // The methods above need all of version 3's, which SQLite's unix and windows files have.
  if (w.real->pMethods == nullptr || w.real->pMethods->iVersion < 3) {
    if (w.real->pMethods) w.real->pMethods->xClose(w.real);
    return SQLITE_CANTOPEN;
  }
  w.gathered = new (std::nothrow) std::string();
  if (w.gathered == nullptr) {
    w.real->pMethods->xClose(w.real);
    return SQLITE_NOMEM;
  }
  w.gathered_at = 0;
  w.base.pMethods = &kWalMethods;
  return SQLITE_OK;
}

}  // namespace

const char* WalCombiningVfs() {
  static const char* const name = []() -> const char* {
    base_vfs = sqlite3_vfs_find(nullptr);
    if (base_vfs == nullptr) return nullptr;
    combining_vfs = *base_vfs;
    combining_vfs.zName = kVfsName;
    combining_vfs.szOsFile = static_cast<int>(sizeof(WalFile)) + base_vfs->szOsFile;
    combining_vfs.pNext = nullptr;
    combining_vfs.xOpen = Open;
    return sqlite3_vfs_register(&combining_vfs, 0) == SQLITE_OK ? kVfsName : nullptr;
  }();
  return name;
}

}  // namespace certfleet::store::sqlite
