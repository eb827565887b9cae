// The agent's work after enrollment: long-poll for tasks, renew, report, back off.
#include <fmt/format.h>
#include <openssl/x509.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/json.hpp>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "agent/agent.h"
#include "agent/client.h"
#include "agent/common.h"
#include "core/files.h"
#include "core/log.h"
#include "pki/certificate.h"
#include "pki/csr.h"
#include "pki/key.h"

namespace certfleet::agent {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;

constexpr std::string_view kNew = ".new";    // a renewal's files before the swap
constexpr std::string_view kPrev = ".prev";  // the old files while the new ones are tried
// A CSR or a report is sent this often (with backoff) while the server cannot be reached
// or fails (a node stopping behind a balancer), before the agent gives up on it: the
// server's deadline then decides the attempt. The same CSR sent again gets the certificate
// issued for it, not a second one.
constexpr int kSendTries = 5;
// A long poll's transfer may take this much longer than its wait.
constexpr long kPollMarginSeconds = 15;
// A certificate or a chain of a few certificates.
constexpr size_t kMaxPemBytes = size_t{1} << 20;

// A step of a renewal task that failed, and why.
struct Failure {
  std::string step;
  std::string error;
};

// Sleeps up to `d`, in slices, returning early once `stop` is set.
void SleepFor(std::chrono::milliseconds d, const std::atomic<bool>& stop) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (!stop && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::min<std::chrono::milliseconds>(std::chrono::milliseconds(100), d));
  }
}

// Backoff with ±20% jitter, so that agents cut off together do not return together.
std::chrono::milliseconds Jittered(std::chrono::seconds d) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_real_distribution<double> f(0.8, 1.2);
  return std::chrono::milliseconds(static_cast<int64_t>(std::chrono::duration<double, std::milli>(d).count() * f(rng)));
}

Result<pki::CertificateFacts> FactsOf(const std::string& cert_file) {
  CF_ASSIGN_OR_RETURN(std::string pem, ReadFile(cert_file, kMaxPemBytes));
  CF_ASSIGN_OR_RETURN(pki::X509Ptr cert, pki::CertificateFromPem(pem));
  return pki::Inspect(cert.get());
}

// Whether the private key in `key_file` is the one of the certificate in `cert_file`.
bool KeyIsCertificates(const std::string& key_file, const std::string& cert_file) {
  auto key_pem = ReadFile(key_file, kMaxPemBytes);
  auto cert_pem = ReadFile(cert_file, kMaxPemBytes);
  if (!key_pem.ok() || !cert_pem.ok()) return false;
  auto key = pki::PrivateKeyFromPem(*key_pem);
  auto cert = pki::CertificateFromPem(*cert_pem);
  return key.ok() && cert.ok() && X509_check_private_key(cert->get(), key->get()) == 1;
}

// Runs the reload command through /bin/sh in a process group of its own; its exit status
// must be 0 within `timeout`, else the group is killed.
Result<void> RunReload(const std::string& command, std::chrono::seconds timeout) {
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::string sh = "/bin/sh";
  std::string flag = "-c";
  std::string cmd = command;
  std::array<char*, 4> argv{sh.data(), flag.data(), cmd.data(), nullptr};
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, sh.c_str(), nullptr, &attr, argv.data(), environ);
  posix_spawnattr_destroy(&attr);
  if (spawned != 0) {
    return MakeError(ErrorCode::kInternal,
                     fmt::format("the reload command could not be started: {}", std::strerror(spawned)));
  }
  const auto until = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) return MakeError(ErrorCode::kInternal, "waiting for the reload command failed");
    if (std::chrono::steady_clock::now() >= until) {
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      return MakeError(
          ErrorCode::kDeadlineExceeded,
          fmt::format("the reload command `{}` did not finish within {} s: killed", command, timeout.count()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return MakeError(ErrorCode::kInternal, fmt::format("the reload command `{}` failed (exit status {})", command,
                                                       WIFEXITED(status) ? WEXITSTATUS(status) : -1));
  }
  return Ok();
}

std::array<std::string, 3> FinalNames(const Identity::Files& f) { return {f.key, f.cert, f.chain}; }

void RemoveQuietly(const std::string& path) {
  std::error_code ec;
  fs::remove(path, ec);
}

// The old files back in place, where a kPrev copy exists.
void Restore(const Identity::Files& files) {
  for (const auto& f : FinalNames(files)) {
    std::error_code ec;
    if (fs::exists(f + std::string(kPrev), ec)) fs::rename(f + std::string(kPrev), f, ec);
  }
}

// Puts the new files (kNew) in place, keeping the old ones as kPrev. On a failure midway
// the old files are put back.
Result<void> Swap(const Identity::Files& files) {
  for (const auto& f : FinalNames(files)) RemoveQuietly(f + std::string(kPrev));
  for (const auto& f : FinalNames(files)) {
    std::error_code ec;
    if (fs::exists(f, ec)) fs::create_hard_link(f, f + std::string(kPrev), ec);
    if (!ec) fs::rename(f + std::string(kNew), f, ec);
    if (ec) {
      Restore(files);
      return MakeError(ErrorCode::kInternal, fmt::format("swapping in {}: {}", f, ec.message()));
    }
  }
  return Ok();
}

class Renewer {
 public:
  Renewer(const AgentOptions& options, Identity id, const RunOptions& run, const std::atomic<bool>& stop)
      : options_(options),
        run_(run),
        stop_(stop),
        id_(std::move(id)),
        client_(std::make_unique<Client>(
            Client::Options{options.server, options.ca_file, id_.files.cert, id_.files.key, &stop})) {}

  void Loop() {
    std::chrono::seconds backoff = run_.backoff_min;
    while (!stop_) {
      MaybeSelfRenew();
      auto r = client_->Get(fmt::format("/v1/agent/tasks?wait={}", run_.wait_seconds),
                            run_.wait_seconds + kPollMarginSeconds);
      if (!r.ok() || r->status >= 500 || r->status == 401 || r->status == 403) {
        log::Warn("cannot get tasks; backing off",
                  {{"error", r.ok() ? ServerError(*r) : r.error().message}, {"backoff_s", backoff.count()}});
        SleepFor(Jittered(backoff), stop_);
        backoff = std::min(backoff * 2, run_.backoff_max);
        continue;
      }
      backoff = run_.backoff_min;
      if (r->status == 204) continue;
      if (r->status != 200) {
        log::Error("unexpected answer to the task poll", {{"error", ServerError(*r)}});
        SleepFor(Jittered(run_.backoff_max), stop_);
        continue;
      }
      auto task = JsonAnswer(*r, "task");
      if (!task.ok()) {
        log::Error("unreadable task", {{"error", task.error().message}});
        continue;
      }
      RunTask(*task);
    }
  }

 private:
  // Asks the server for a renewal when the certificate is near its end and the server's
  // schedule has not come (a late or stopped scheduler must not let the host expire).
  void MaybeSelfRenew() {
    const auto now = std::chrono::steady_clock::now();
    if (last_self_renew_ && now - *last_self_renew_ < run_.self_renew_every) return;
    auto facts = FactsOf(id_.files.cert);
    if (!facts.ok()) return;
    const int64_t wall =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    const auto lifetime = static_cast<double>(facts->not_after_millis - facts->not_before_millis);
    if (static_cast<double>(facts->not_after_millis - wall) > lifetime * run_.self_renew_share) return;
    last_self_renew_ = now;
    auto r = client_->Post("/v1/agent/renew", "{}");
    log::Write(r.ok() && r->status < 300 ? log::Level::kInfo : log::Level::kWarn,
               "certificate near its end: asked for a renewal",
               {{"not_after_ms", facts->not_after_millis}, {"answer", r.ok() ? ServerError(*r) : r.error().message}});
  }

  void RunTask(const json::object& task) {
    const json::value* idv = task.if_contains("renewal_id");
    if (idv == nullptr || !idv->is_int64()) {
      log::Error("task without renewal_id");
      return;
    }
    const int64_t renewal_id = idv->get_int64();
    log::Info("renewal task", {{"renewal_id", renewal_id}});
    Identity::Files files;
    auto done = Renew(task, renewal_id, files);
    if (!done.has_value()) {
      log::Info("renewed", {{"renewal_id", renewal_id}, {"serial", id_.serial}});
      return;
    }
    for (const auto& f : FinalNames(files)) RemoveQuietly(f + std::string(kNew));
    log::Error("renewal failed; the old files stay",
               {{"renewal_id", renewal_id}, {"step", done->step}, {"error", done->error}});
    Report(renewal_id, json::object{{"state", "failed"}, {"step", done->step}, {"error", done->error}});
  }

  // The renewal's steps; the failure, or nullopt when it was validated.
  std::optional<Failure> Renew(const json::object& task, int64_t renewal_id, Identity::Files& files) {
    auto text = [&](std::string_view key) { return Field(task, key); };
    auto cert_path = text("cert_path");
    auto key_path = text("key_path");
    auto cacert_path = text("cacert_path");
    auto key_type = text("key_type");
    if (!cert_path.ok() || !key_path.ok() || !cacert_path.ok() || !key_type.ok()) {
      return Failure{"key", "the task lacks its paths or key type"};
    }
    files = Identity::FilesFor(id_.host_id, *cert_path, *key_path, *cacert_path);
    std::vector<std::string> sans;
    if (const json::value* s = task.if_contains("sans"); s && s->is_array()) {
      for (const auto& v : s->get_array()) {
        if (v.is_string()) sans.emplace_back(v.get_string());
      }
    }
    std::optional<std::string> reload;
    if (const json::value* c = task.if_contains("reload_command"); c && c->is_string()) reload = c->get_string();

    auto type = pki::ParseKeyType(*key_type);
    if (!type.ok()) return Failure{"key", type.error().message};
    auto key = pki::GenerateKey(*type);
    if (!key.ok()) return Failure{"key", key.error().message};
    auto csr = pki::MakeCsrPem(key->get(), id_.host_id, sans);
    if (!csr.ok()) return Failure{"csr", csr.error().message};

    auto r = Send(fmt::format("/v1/agent/renewals/{}/csr", renewal_id), json::serialize(json::object{{"csr", *csr}}));
    if (!r.ok()) return Failure{"submit", r.error().message};
    if (r->status != 201) return Failure{"submit", ServerError(*r)};
    auto answer = JsonAnswer(*r, "the signed certificate");
    if (!answer.ok()) return Failure{"submit", answer.error().message};
    auto cert_pem = Field(*answer, "certificate");
    auto chain_pem = Field(*answer, "chain");
    auto serial = Field(*answer, "serial");
    if (!cert_pem.ok() || !chain_pem.ok() || !serial.ok()) return Failure{"submit", "the answer lacks the certificate"};

    auto key_pem = pki::PrivateKeyToPem(key->get());
    if (!key_pem.ok()) return Failure{"write", key_pem.error().message};
    for (auto [path, data, mode] :
         {std::tuple{files.key, &*key_pem, mode_t{0400}}, std::tuple{files.cert, &*cert_pem, mode_t{0644}},
          std::tuple{files.chain, &*chain_pem, mode_t{0644}}}) {
      if (auto w = WriteFileAtomically(path + std::string(kNew), *data, mode); !w.ok()) {
        return Failure{"write", w.error().message};
      }
    }
    Report(renewal_id, json::object{{"state", "deployed"}});

    // What is on disk is checked, not what was received.
    auto written = ReadFile(files.cert + std::string(kNew), kMaxPemBytes);
    auto written_chain = ReadFile(files.chain + std::string(kNew), kMaxPemBytes);
    if (!written.ok() || !written_chain.ok()) return Failure{"verify", "the new files cannot be read back"};
    if (auto c = CheckIssued(*written, *written_chain, key->get()); !c.ok())
      return Failure{"verify", c.error().message};

    if (auto s = Swap(files); !s.ok()) return Failure{"swap", s.error().message};
    if (reload) {
      if (auto rc = RunReload(*reload, run_.reload_timeout); !rc.ok()) {
        Restore(files);
        // The service goes back to the old files too.
        if (auto again = RunReload(*reload, run_.reload_timeout); !again.ok()) {
          log::Error("the reload command failed again with the old files", {{"error", again.error().message}});
        }
        return Failure{"reload", rc.error().message};
      }
    }
    Identity next = id_;
    next.files = files;
    next.serial = *serial;
    if (auto saved = SaveIdentity(options_.state_dir, options_.server, next); !saved.ok()) {
      Restore(files);
      return Failure{"swap", saved.error().message};
    }
    for (const auto& f : FinalNames(files)) RemoveQuietly(f + std::string(kPrev));
    id_ = std::move(next);
    // From now on the agent authenticates with its new certificate.
    client_ = std::make_unique<Client>(
        Client::Options{options_.server, options_.ca_file, id_.files.cert, id_.files.key, &stop_});
    Report(renewal_id, json::object{{"state", "validated"}});
    return std::nullopt;
  }

  // POSTs `body`, again after a backoff while the server cannot be reached or fails; the
  // last answer or error.
  Result<HttpResponse> Send(const std::string& path, const std::string& body) {
    std::chrono::seconds backoff = run_.backoff_min;
    Result<HttpResponse> r = client_->Post(path, body);
    for (int i = 1; i < kSendTries && !stop_ && (!r.ok() || r->status >= 500); ++i) {
      log::Warn("the server did not answer; sending again",
                {{"path", path}, {"error", r.ok() ? ServerError(*r) : r.error().message}});
      SleepFor(Jittered(backoff), stop_);
      backoff = std::min(backoff * 2, run_.backoff_max);
      r = client_->Post(path, body);
    }
    return r;
  }

  void Report(int64_t renewal_id, const json::object& report) {
    auto r = Send(fmt::format("/v1/agent/renewals/{}/status", renewal_id), json::serialize(report));
    if (!r.ok() || r->status >= 500) {
      log::Error("could not report", {{"renewal_id", renewal_id}});
    } else if (r->status != 200) {
      log::Warn("report refused", {{"renewal_id", renewal_id}, {"error", ServerError(*r)}});
    }
  }

  const AgentOptions& options_;
  const RunOptions& run_;
  const std::atomic<bool>& stop_;
  Identity id_;
  std::unique_ptr<Client> client_;
  std::optional<std::chrono::steady_clock::time_point> last_self_renew_;
};

}  // namespace

Result<void> Recover(const Identity& id) {
  const Identity::Files& files = id.files;
  bool interrupted = false;
  for (const auto& f : FinalNames(files)) {
    std::error_code ec;
    interrupted = interrupted || fs::exists(f + std::string(kPrev), ec);
    RemoveQuietly(f + std::string(kNew));
  }
  if (!interrupted) return Ok();
  // The identity records the serial once a renewal completed: a certificate in place that
  // is not the recorded one belongs to a renewal that was cut short, and so does a key in
  // place that is not its certificate's (a swap cut short after the key, before the
  // certificate, leaves the old certificate, whose serial the identity still holds).
  auto facts = FactsOf(id.files.cert);
  if (facts.ok() && facts->serial_hex == id.serial && KeyIsCertificates(id.files.key, id.files.cert)) {
    for (const auto& f : FinalNames(files)) RemoveQuietly(f + std::string(kPrev));
    return Ok();
  }
  Restore(files);
  log::Warn("an interrupted renewal was undone: the old files are back", {{"serial", id.serial}});
  return Ok();
}

void Run(const AgentOptions& options, Identity id, const RunOptions& run, const std::atomic<bool>& stop) {
  Renewer(options, std::move(id), run, stop).Loop();
}

}  // namespace certfleet::agent
