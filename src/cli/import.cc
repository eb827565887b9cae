// `certfleet import`: a supplier manifest into the registry from this machine, with a
// progress bar, without a running server.
#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "blob/setup.h"
#include "bulk/import_service.h"
#include "bulk/setup.h"
#include "cli/commands.h"
#include "core/crypto.h"
#include "core/log.h"
#include "server/server.h"

namespace certfleet::cli {
namespace {

constexpr int kBarWidth = 30;

void PrintCounts(const store::ImportRecord& r) {
  std::cout << fmt::format("import {}: {} (seen {}, imported {}, already present {}, rejected {}, conflicts {})\n",
                           r.id, r.state, r.counts.seen, r.counts.imported, r.counts.already_present, r.counts.rejected,
                           r.counts.conflicts);
  if (r.counts.rejected + r.counts.conflicts > 0) {
    std::cout << fmt::format("the entries not imported and why: GET /v1/imports/{}/rows\n", r.id);
  }
  if (r.error) std::cout << "error: " << *r.error << "\n";
}

}  // namespace

int Import(const Config& config, const Clock& clock, const ImportArgs& args) {
  auto st = server::OpenStore(config);
  if (!st.ok()) {
    std::cerr << "certfleet import: " << st.error().message << "\n";
    return 1;
  }
  auto options = bulk::ImportOptions(config, args.verifier_dir);
  if (!options.ok()) {
    std::cerr << "certfleet import: " << options.error().message << "\n";
    return 1;
  }
  // Manifests wait where the server's imports keep them, so that a node may resume this one.
  auto in_blobs = bulk::ManifestsInBlobs(config, (*st)->dialect());
  Result<std::unique_ptr<blob::BlobStore>> blobs = std::unique_ptr<blob::BlobStore>();
  if (in_blobs.ok() && *in_blobs) blobs = blob::OpenBlobStore(config.Get("blobs"), blob::S3CredentialsFrom(config));
  if (!in_blobs.ok() || !blobs.ok()) {
    std::cerr << "certfleet import: " << (in_blobs.ok() ? blobs.error() : in_blobs.error()).message << "\n";
    return 1;
  }
  bulk::ImportService imports(**st, clock, *options, blobs->get());

  int64_t id = args.resume_id;
  if (id == 0) {
    // Start moves the file it is given: it gets a copy, and the user keeps the original.
    std::error_code ec;
    std::filesystem::create_directories(options->manifest_dir, ec);
    const std::string copy = (std::filesystem::path(options->manifest_dir) / (RandomToken(12) + ".upload")).string();
    if (!std::filesystem::copy_file(args.file, copy, ec)) {
      std::cerr << fmt::format("certfleet import: cannot read {}: {}\n", args.file, ec.message());
      return 1;
    }
    auto started = imports.Start(args.supplier, args.profile, args.bundle_type, copy, "cli:import", false);
    if (!started.ok()) {
      std::filesystem::remove(copy, ec);
      std::cerr << "certfleet import: " << started.error().message << "\n";
      return 1;
    }
    id = started->id;
    std::cerr << fmt::format("import {} started; if it is interrupted, `certfleet import --resume {}` goes on\n", id,
                             id);
  }
  auto done = imports.Run(id, [&](const store::ImportRecord& r, double fraction) {
    const int filled = static_cast<int>(fraction * kBarWidth);
    std::cerr << fmt::format("\r[{:<{}}] {:3.0f}%  {} seen, {} imported", std::string(filled, '#'), kBarWidth,
                             fraction * 100, r.counts.seen, r.counts.imported)
              << std::flush;
  });
  std::cerr << "\n";
  if (!done.ok()) {
    auto current = imports.Get(id);
    if (current.ok()) PrintCounts(*current);
    std::cerr << "certfleet import: " << done.error().message << "\n";
    return 1;
  }
  PrintCounts(*done);
  return done->state == "done" ? 0 : 1;
}

}  // namespace certfleet::cli
