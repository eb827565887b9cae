// W5 benchmark driver: uploads W warehouses x N gateways (two files each, plus shared
// files) into an S3-compatible server, then times one full distribution cycle against it
// and an SMTP server: scan, download, zip, send, until the last mail is accepted. Prints
// gateways/s, the time per phase and the process's peak memory. bench/distribution/run
// starts the servers and runs it at two sizes, so that memory growth shows.
#include <fmt/format.h>
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "blob/blob_store.h"
#include "core/clock.h"
#include "core/crypto.h"
#include "core/log.h"
#include "distribution/distribution_service.h"
#include "mail/mailer.h"
#include "store/distribution_repo.h"
#include "store/migrations.h"

namespace cf = certfleet;

namespace {

constexpr int kUploadThreads = 16;
constexpr double kAimSeconds = 60;  // the aim for 4 x 10,000 gateways

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

long PeakRssMiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

int Fail(const std::string& what) {
  fmt::print(stderr, "distribution_cycle: {}\n", what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    fmt::print(stderr, "usage: distribution_cycle S3_URL SMTP_URL WAREHOUSES GATEWAYS_PER_WAREHOUSE WORK_DIR\n");
    return 2;
  }
  cf::log::SetLevel("warn");
  const std::string s3_url = argv[1], smtp_url = argv[2], work = argv[5];
  const int warehouses = std::atoi(argv[3]), gateways = std::atoi(argv[4]);
  auto inbound = cf::blob::OpenBlobStore(s3_url, {});
  if (!inbound.ok()) return Fail(inbound.error().message);

  // Setup (not timed as part of the cycle): what a provisioning system would upload.
  const auto upload_start = std::chrono::steady_clock::now();
  std::atomic<int> next{0};
  std::atomic<bool> failed{false};
  const int total = warehouses * gateways;
  auto uploader = [&] {
    for (int i; !failed && (i = next.fetch_add(1)) < total;) {
      const std::string warehouse = fmt::format("Warehouse_{}", i / gateways);
      const std::string eui = fmt::format("00800000{:08x}", i);
      const std::string base = fmt::format("Inbound/{}/{}/{}", warehouse, eui, eui.substr(11));
      const std::string pem =
          "-----BEGIN CERTIFICATE-----\n" + cf::Base64Encode(cf::RandomBytes(900)) + "\n-----END CERTIFICATE-----\n";
      const std::string key = "-----BEGIN EC PRIVATE KEY-----\n" + cf::Base64Encode(cf::RandomBytes(121)) +
                              "\n-----END EC PRIVATE KEY-----\n";
      if (!(*inbound)->Put(base + ".pem", pem).ok() || !(*inbound)->Put(base + ".key", key).ok()) failed = true;
    }
  };
  for (int w = 0; w < warehouses; ++w) {
    const std::string root = fmt::format("Inbound/Warehouse_{}/", w);
    if (!(*inbound)->Put(root + "servertrust_us-east-1_123456789012.pem", cf::RandomBytes(2000)).ok() ||
        !(*inbound)->Put(root + "endpoints_us-east-1_123456789012.json", "{\"iot\":\"example\"}").ok()) {
      return Fail("uploading shared files failed");
    }
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kUploadThreads; ++t) threads.emplace_back(uploader);
  for (auto& t : threads) t.join();
  if (failed) return Fail("uploading gateway files failed");
  const double upload_s = Seconds(upload_start);

  std::filesystem::create_directories(work);
  auto store = cf::store::Store::Open("sqlite://" + work + "/certfleet.db", {});
  if (!store.ok()) return Fail(store.error().message);
  if (auto m = cf::store::Migrate(**store); !m.ok()) return Fail(m.error().message);
  auto mailer = cf::mail::OpenMailer(smtp_url, cf::SystemClock::Instance());
  if (!mailer.ok()) return Fail(mailer.error().message);
  cf::distribution::DistributionService::Options options;
  options.work_dir = work + "/zips";
  options.default_recipient = "warehouse@bench.test";
  options.sender = "certfleet@bench.test";
  cf::distribution::DistributionService service(**store, **inbound, **mailer, cf::SystemClock::Instance(), options);

  const auto cycle_start = std::chrono::steady_clock::now();
  auto scan = service.Scan();
  if (!scan.ok()) return Fail(scan.error().message);
  const double scan_s = Seconds(cycle_start);
  auto sent = service.SendPending();
  if (!sent.ok()) return Fail(sent.error().message);
  const double cycle_s = Seconds(cycle_start);

  auto counts = cf::store::Read(**store, [](cf::store::Tx& tx) { return cf::store::CountRecordsByStatus(tx); });
  int64_t emailed = 0;
  for (const auto& [status, n] : counts.value()) {
    if (status == cf::store::DistributionStatusName(cf::store::DistributionStatus::kEmailed)) emailed = n;
  }
  fmt::print("W5 distribution cycle: {} warehouses x {} gateways (2 files each) = {} gateways, {} objects\n",
             warehouses, gateways, total, scan->objects);
  fmt::print("  setup upload (not in the cycle): {:.1f} s\n", upload_s);
  fmt::print("  scan:     {:.2f} s\n", scan_s);
  fmt::print("  download: {:.2f} s\n", sent->download_millis / 1000.0);
  fmt::print("  zip:      {:.2f} s\n", sent->zip_millis / 1000.0);
  fmt::print("  send:     {:.2f} s ({} mails, {:.1f} MB, none failed: {})\n", sent->send_millis / 1000.0,
             sent->mails_sent, sent->bytes_sent / 1e6, sent->mails_failed == 0 ? "yes" : "NO");
  fmt::print("  whole cycle: {:.2f} s, {:.0f} gateways/s; aim: under {:.0f} s for 4 x 10,000: {}\n", cycle_s,
             total / cycle_s, kAimSeconds, cycle_s < kAimSeconds ? "met" : "not met");
  fmt::print("  records EMAILED: {} of {} (gateways + shared)\n", emailed, total + warehouses);
  fmt::print("  peak memory (max RSS): {} MiB\n", PeakRssMiB());
  return emailed == total + warehouses ? 0 : 1;
}
