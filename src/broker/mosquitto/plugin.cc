// certfleet's Mosquitto plugin (plugin API v5, Mosquitto 2.0): authenticates each client by
// its TLS certificate and decides every publish, subscribe and delivery from the registry
// snapshot certfleet serves (GET /v1/broker/snapshot), pulled by a thread of its own and kept
// current; no decision waits on certfleet, and while certfleet cannot be reached the last
// snapshot keeps deciding. A client whose certificate or Connect permission a new snapshot
// takes away is disconnected.
//
// mosquitto.conf:
//   plugin /usr/lib/certfleet/certfleet_mosquitto.so
//   plugin_opt_url https://certfleet.example.com:8443
//   plugin_opt_token_file /etc/mosquitto/certfleet.token   (a reader token)
//   plugin_opt_ca_file /etc/mosquitto/certfleet-ca.pem     (optional: who signs certfleet's TLS)
//   plugin_opt_poll_ms 1000                                (optional)
//   plugin_opt_cache_file /var/lib/mosquitto/certfleet.snapshot (optional: decide after a restart
//                                                           while certfleet is down)
//   plugin_opt_stats_file /run/mosquitto/certfleet.stats   (optional: counters, JSON)
//   plugin_opt_max_stale_s 3600                            (optional: refuse everything once the
//                                                           snapshot is older; 0, the default: never)
#include <curl/curl.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <strings.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>

#include "broker/snapshot.h"
#include "core/files.h"

namespace {

using certfleet::broker::View;
using certfleet::registry::MqttAction;
using Clock = std::chrono::steady_clock;

constexpr long kFetchTimeoutSeconds = 30;              // a 100,000-device snapshot is tens of MB
constexpr size_t kMaxSnapshotBytes = size_t{1} << 30;  // refuse anything larger than 1 GiB
constexpr size_t kMaxTokenBytes = size_t{64} * 1024;   // plugin_opt_token_file
constexpr auto kRecheck = std::chrono::seconds(1);     // expiry and grace ends, between snapshots
constexpr auto kStatsEvery = std::chrono::seconds(1);
constexpr auto kFirstFetchWait = std::chrono::seconds(5);  // at start, before deciding anything
// How long only snapshots older than the one taken may come before they are taken anyway: far
// longer than a node behind a balancer lags (broker.snapshot_min_rebuild_ms).
constexpr auto kOlderTolerance = std::chrono::minutes(2);
// A disconnected client is remembered this long (or until its id connects again): its will,
// delayed or not, and the messages queued for its persistent session are decided as its own.
constexpr int64_t kOfflineKeepMs = 3'600'000;
constexpr int kBucketNs = 25;   // decision-time histogram resolution
constexpr int kBuckets = 4000;  // up to 100 µs; slower ones in the last

int64_t NowMillis() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A connected client: who it is and what it may do under the current snapshot.
struct Client {
  std::string id;
  std::string fingerprint;
  std::optional<std::string> common_name;
  std::shared_ptr<const View> view;  // the one `session` points into
  View::Session session;
  std::optional<int64_t> offline_since;  // ms; set when it disconnects
};

struct Plugin {
  mosquitto_plugin_id_t* id = nullptr;
  std::string url, token, ca_file, cache_file, stats_file;
  std::chrono::milliseconds poll{1000};
  int64_t max_stale_ms = 0;       // 0: the last snapshot decides however old it is
  int64_t cached_generation = 0;  // of the snapshot read from cache_file at start

  // The fetching thread hands snapshots to the broker's thread through `pending`.
  std::mutex mu;
  std::condition_variable wake;
  bool stop = false;
  std::shared_ptr<const View> pending;
  std::vector<std::shared_ptr<const View>> retired;  // freed by the fetching thread, off the broker's
  std::vector<std::pair<int, std::string>> logs;     // the fetching thread's, written by the broker's
  std::thread fetcher;

  // Broker thread only.
  std::shared_ptr<const View> active;
  std::unordered_map<const mosquitto*, Client> clients;
  std::unordered_map<std::string, const mosquitto*> by_id;  // a client id's latest connection
  Clock::time_point next_recheck{}, next_stats{};
  bool recheck_due = false;  // a snapshot was taken outside a tick
  bool too_old = false;      // what the last tick found: logged when it changes
  std::array<uint64_t, kBuckets> histogram{};
  uint64_t checks = 0, denied = 0, kicked = 0;

  // Either thread.
  std::atomic<uint64_t> fetches{0}, fetch_errors{0}, snapshots{0}, older_snapshots{0};
  // last_success_at: the last fetch that found the snapshot current (or, at start, when the
  // cached one was written).
  std::atomic<int64_t> snapshot_bytes{0}, parse_ms{0}, last_success_at{0};
};

// Why nothing is decided from the snapshot any more: certfleet has not been reached for longer
// than plugin_opt_max_stale_s, and revocations made since may be missing. nullopt while it may.
std::optional<std::string> TooOld(const Plugin& p, int64_t now) {
  if (p.max_stale_ms == 0) return std::nullopt;
  const int64_t age = now - p.last_success_at.load();
  if (age <= p.max_stale_ms) return std::nullopt;
  return "the snapshot was last confirmed " + std::to_string(age / 1000) + " s ago, more than plugin_opt_max_stale_s " +
         std::to_string(p.max_stale_ms / 1000) + " (certfleet cannot be reached)";
}

size_t Collect(char* data, size_t size, size_t count, void* out) {
  auto* body = static_cast<std::string*>(out);
  if (body->size() + size * count > kMaxSnapshotBytes) return 0;
  body->append(data, size * count);
  return size * count;
}

// What the answer's headers say of the snapshot.
struct Fetched {
  std::string etag;
  std::optional<int64_t> generation;  // X-Certfleet-Generation
};

size_t CollectHeader(char* data, size_t size, size_t count, void* out) {
  std::string_view line(data, size * count);
  auto value_of = [&](std::string_view name) -> std::optional<std::string> {
    if (line.size() <= name.size() || strncasecmp(line.data(), name.data(), name.size()) != 0) return std::nullopt;
    std::string value(line.substr(name.size()));
    value.erase(0, value.find_first_not_of(" \t"));
    value.erase(value.find_last_not_of(" \t\r\n") + 1);
    return value;
  };
  auto& fetched = *static_cast<Fetched*>(out);
  if (auto etag = value_of("etag:")) fetched.etag = std::move(*etag);
  if (auto generation = value_of("x-certfleet-generation:")) {
    int64_t n = 0;
    auto [end, ec] = std::from_chars(generation->data(), generation->data() + generation->size(), n);
    if (ec == std::errc() && end == generation->data() + generation->size()) fetched.generation = n;
  }
  return size * count;
}

// The fetching thread's memory of the snapshot it took last.
struct Taken {
  std::string etag;
  int64_t generation = 0;
  // Since when only older snapshots have come: past kOlderTolerance they are taken (the
  // database restored from a backup, whose audit log is shorter), not left for ever.
  std::optional<Clock::time_point> older_since;
};

// One GET of the snapshot: a new View, nullptr when it has not changed (or is older than the
// one taken last: another node behind a balancer that has not seen the latest change yet), or
// an error.
certfleet::Result<std::shared_ptr<const View>> Fetch(Plugin& p, Taken& taken, std::string& body) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return certfleet::MakeError(certfleet::ErrorCode::kInternal, "curl_easy_init failed");
  std::string url = p.url + "/v1/broker/snapshot";
  std::string auth = "Authorization: Bearer " + p.token;
  std::string match = "If-None-Match: " + taken.etag;
  curl_slist* headers = curl_slist_append(nullptr, auth.c_str());
  if (!taken.etag.empty()) headers = curl_slist_append(headers, match.c_str());
  Fetched fetched;
  body.clear();
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
#if LIBCURL_VERSION_NUM >= 0x075500
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https");
#else
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS, CURLPROTO_HTTPS);
#endif
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, CollectHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &fetched);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT, kFetchTimeoutSeconds);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (!p.ca_file.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, p.ca_file.c_str());
  CURLcode rc = curl_easy_perform(curl);
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  if (rc != CURLE_OK) {
    return certfleet::MakeError(certfleet::ErrorCode::kUnavailable, std::string(curl_easy_strerror(rc)));
  }
  if (status == 304) {
    // A node that has the snapshot taken: older ones come only from nodes behind it, for now.
    taken.older_since.reset();
    return std::shared_ptr<const View>();
  }
  if (status != 200) {
    return certfleet::MakeError(certfleet::ErrorCode::kUnavailable,
                                "HTTP " + std::to_string(status) + ": " + body.substr(0, 200));
  }
  if (fetched.generation && *fetched.generation < taken.generation) {
    if (!taken.older_since) taken.older_since = Clock::now();
    if (Clock::now() - *taken.older_since < kOlderTolerance) {
      p.older_snapshots++;
      return std::shared_ptr<const View>();
    }
  }
  const auto started = Clock::now();
  auto view = View::Parse(body);
  if (!view.ok()) return view.error();
  p.parse_ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
  p.snapshot_bytes = static_cast<int64_t>(body.size());
  taken.etag = fetched.etag;
  if (fetched.generation) taken.generation = *fetched.generation;
  taken.older_since.reset();
  return *view;
}

void Offer(Plugin& p, std::shared_ptr<const View> view) {
  {
    std::lock_guard lock(p.mu);
    p.pending = std::move(view);
    p.snapshots++;
  }
  p.wake.notify_all();  // plugin_init waits for the first one
}

// Mosquitto's logging is the broker thread's (it may publish to $SYS): the fetching thread
// hands its lines over.
void LogLater(Plugin& p, int level, std::string line) {
  std::lock_guard lock(p.mu);
  p.logs.emplace_back(level, std::move(line));
}

// Beside the cache file: the generation of the snapshot in it.
std::string GenerationFile(const Plugin& p) { return p.cache_file + ".generation"; }

// Replaces the cache file with `body` whole, or leaves the one there (a full disk, a folder
// not writable): a failure is logged. Then its generation, so that a broker restarted while
// only a node behind the others answers does not take that node's older snapshot (written
// second: a crash between leaves a lower generation, which errs towards taking snapshots).
void KeepCopy(Plugin& p, const std::string& body, int64_t generation) {
  if (p.cache_file.empty()) return;
  auto written = certfleet::WriteFileAtomically(p.cache_file, body, 0600);
  if (written.ok()) written = certfleet::WriteFileAtomically(GenerationFile(p), std::to_string(generation), 0600);
  if (!written.ok()) {
    LogLater(p, MOSQ_LOG_WARNING,
             "certfleet: cannot keep the snapshot in " + p.cache_file + ": " + written.error().message);
  }
}

void FetchLoop(Plugin* p) {
  Taken taken;
  taken.generation = p->cached_generation;
  std::string body;
  bool failing = false;
  std::unique_lock lock(p->mu);
  while (!p->stop) {
    lock.unlock();
    p->fetches++;
    auto fetched = Fetch(*p, taken, body);
    if (fetched.ok()) {
      p->last_success_at = NowMillis();
      if (failing) LogLater(*p, MOSQ_LOG_NOTICE, "certfleet: snapshot fetched again");
      failing = false;
      if (*fetched) {
        KeepCopy(*p, body, taken.generation);
        Offer(*p, *fetched);
      } else if (!p->cache_file.empty()) {
        // Confirmed current: the kept copy's time says so (plugin_opt_max_stale_s after a restart).
        utimensat(AT_FDCWD, p->cache_file.c_str(), nullptr, 0);
      }
    } else {
      p->fetch_errors++;
      if (!failing) {
        LogLater(*p, MOSQ_LOG_WARNING,
                 "certfleet: cannot fetch the snapshot, deciding from the last one: " + fetched.error().message);
      }
      failing = true;
    }
    lock.lock();
    p->wake.wait_for(lock, p->poll, [p] { return p->stop; });
    std::vector<std::shared_ptr<const View>> retired;
    retired.swap(p->retired);
    lock.unlock();
    retired.clear();  // a large snapshot takes a while to free
    lock.lock();
  }
}

std::string Fingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return "";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[md[i] >> 4]);
    out.push_back(kHex[md[i] & 0xf]);
  }
  return out;
}

std::optional<std::string> CommonName(X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  int i = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (i < 0) return std::nullopt;
  ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
  unsigned char* utf8 = nullptr;
  int n = ASN1_STRING_to_UTF8(&utf8, data);
  if (n < 0) return std::nullopt;
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
  OPENSSL_free(utf8);
  return out;
}

// Forgets the clients (their ACL checks are denied from now on) and disconnects those with an id.
void Forget(Plugin& p, const std::vector<std::pair<const mosquitto*, std::string>>& gone) {
  for (const auto& [client, id] : gone) {
    auto it = p.clients.find(client);
    if (it != p.clients.end()) {
      if (auto latest = p.by_id.find(it->second.id); latest != p.by_id.end() && latest->second == client) {
        p.by_id.erase(latest);
      }
      p.clients.erase(it);
    }
    if (!id.empty()) {
      mosquitto_kick_client_by_clientid(id.c_str(), false);
      p.kicked++;
    }
  }
}

// Re-opens every client's session under the active snapshot; disconnects the clients it no
// longer lets connect and forgets the offline ones it refuses.
void Recheck(Plugin& p) {
  const int64_t now = NowMillis();
  std::vector<std::pair<const mosquitto*, std::string>> gone;
  for (auto& [client, c] : p.clients) {
    auto session = p.active->Open(c.fingerprint, c.id, c.common_name, now);
    if (session.ok() && View::Decide(*session, MqttAction::kConnect, c.id).allowed) {
      c.view = p.active;
      c.session = std::move(*session);
      continue;
    }
    if (!c.offline_since) {
      mosquitto_log_printf(MOSQ_LOG_NOTICE, "certfleet: disconnecting %s: %s", c.id.c_str(),
                           session.ok() ? "its policies no longer allow iot:Connect" : session.error().message.c_str());
    }
    gone.emplace_back(client, c.offline_since ? "" : c.id);
  }
  Forget(p, gone);
}

// Between snapshots: the clients whose certificate has expired or whose grace period has
// ended, online or not (an offline one's delayed will and queued messages are refused from
// then on), and the offline clients remembered long enough.
void ExpireClients(Plugin& p) {
  const int64_t now = NowMillis();
  std::vector<std::pair<const mosquitto*, std::string>> gone;
  for (const auto& [client, c] : p.clients) {
    const bool ended = c.session.ends_at && *c.session.ends_at <= now;
    if (c.offline_since) {
      if (ended || now - *c.offline_since >= kOfflineKeepMs) gone.emplace_back(client, "");
    } else if (ended) {
      mosquitto_log_printf(MOSQ_LOG_NOTICE,
                           "certfleet: disconnecting %s: its certificate has expired or was superseded", c.id.c_str());
      gone.emplace_back(client, c.id);
    }
  }
  Forget(p, gone);
}

uint64_t Percentile(const Plugin& p, double q) {
  uint64_t total = 0;
  for (uint64_t n : p.histogram) total += n;
  if (total == 0) return 0;
  const auto want = static_cast<uint64_t>(static_cast<double>(total) * q);
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += p.histogram[i];
    if (seen > want) return static_cast<uint64_t>(i + 1) * kBucketNs;
  }
  return static_cast<uint64_t>(kBuckets) * kBucketNs;
}

void WriteStats(const Plugin& p) {
  if (p.stats_file.empty()) return;
  size_t offline = 0;
  for (const auto& [client, c] : p.clients) offline += c.offline_since ? 1 : 0;
  std::ostringstream s;
  s << "{\"checks\":" << p.checks << ",\"denied\":" << p.denied << ",\"p50_ns\":" << Percentile(p, 0.5)
    << ",\"p99_ns\":" << Percentile(p, 0.99) << ",\"clients\":" << p.clients.size() - offline
    << ",\"offline\":" << offline << ",\"kicked\":" << p.kicked << ",\"fetches\":" << p.fetches
    << ",\"fetch_errors\":" << p.fetch_errors << ",\"snapshots\":" << p.snapshots
    << ",\"older_snapshots\":" << p.older_snapshots << ",\"snapshot_bytes\":" << p.snapshot_bytes
    << ",\"parse_ms\":" << p.parse_ms
    << ",\"certificates\":" << (p.active ? p.active->snapshot().certificates.size() : 0)
    << ",\"last_success_at\":" << p.last_success_at << "}\n";
  const std::string tmp = p.stats_file + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << s.str();
  }
  std::rename(tmp.c_str(), p.stats_file.c_str());
}

// Makes a snapshot the fetching thread handed over the active one; true if there was one. The
// one it replaces goes back to that thread to be freed (once Recheck has moved the clients off it).
bool TakePending(Plugin& p) {
  std::lock_guard lock(p.mu);
  if (!p.pending) return false;
  if (p.active) p.retired.push_back(p.active);
  p.active = std::move(p.pending);
  return true;
}

int OnTick(int, void*, void* userdata) {
  auto& p = *static_cast<Plugin*>(userdata);
  std::vector<std::pair<int, std::string>> logs;
  {
    std::lock_guard lock(p.mu);
    logs.swap(p.logs);
  }
  for (const auto& [level, line] : logs) mosquitto_log_printf(level, "%s", line.c_str());
  const auto now = Clock::now();
  if (TakePending(p) || p.recheck_due) {
    Recheck(p);
    p.recheck_due = false;
  } else if (now >= p.next_recheck) {
    ExpireClients(p);
    p.next_recheck = now + kRecheck;
  }
  if (auto old = TooOld(p, NowMillis()); old.has_value() != p.too_old) {
    p.too_old = old.has_value();
    if (old) {
      mosquitto_log_printf(MOSQ_LOG_WARNING, "certfleet: refusing every client and message: %s", old->c_str());
    } else {
      mosquitto_log_printf(MOSQ_LOG_NOTICE, "certfleet: the snapshot is current again, deciding from it");
    }
  }
  if (now >= p.next_stats) {
    WriteStats(p);
    p.next_stats = now + kStatsEvery;
  }
  return MOSQ_ERR_SUCCESS;
}

int OnBasicAuth(int, void* event_data, void* userdata) {
  auto& p = *static_cast<Plugin*>(userdata);
  auto* ev = static_cast<mosquitto_evt_basic_auth*>(event_data);
  // A snapshot that came since the last tick decides; the next tick rechecks the others
  // (not here: disconnecting clients inside another's connect is the tick's job).
  if (TakePending(p)) p.recheck_due = true;
  const char* client_id = mosquitto_client_id(ev->client);
  auto* cert = static_cast<X509*>(mosquitto_client_certificate(ev->client));
  if (cert == nullptr || client_id == nullptr || !p.active) {
    if (cert != nullptr) X509_free(cert);
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "certfleet: refusing %s: %s", client_id ? client_id : "?",
                         cert == nullptr ? "no client certificate" : "no snapshot yet");
    return MOSQ_ERR_AUTH;
  }
  if (auto old = TooOld(p, NowMillis())) {
    X509_free(cert);
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "certfleet: refusing %s: %s", client_id, old->c_str());
    return MOSQ_ERR_AUTH;
  }
  Client c;
  c.id = client_id;
  c.fingerprint = Fingerprint(cert);
  c.common_name = CommonName(cert);
  X509_free(cert);
  auto session = p.active->Open(c.fingerprint, c.id, c.common_name, NowMillis());
  if (!session.ok()) {
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "certfleet: refusing %s: %s", client_id, session.error().message.c_str());
    return MOSQ_ERR_AUTH;
  }
  auto decision = View::Decide(*session, MqttAction::kConnect, c.id);
  if (!decision.allowed) {
    mosquitto_log_printf(MOSQ_LOG_NOTICE, "certfleet: refusing %s: %s", client_id, decision.reason.c_str());
    return MOSQ_ERR_AUTH;
  }
  c.view = p.active;
  c.session = std::move(*session);
  // The id's previous connection, offline or taken over, is done with; and what was
  // remembered at this address (a freed connection's) is another client's.
  if (auto previous = p.by_id.find(c.id); previous != p.by_id.end() && previous->second != ev->client) {
    if (auto old = p.clients.find(previous->second); old != p.clients.end() && old->second.id == c.id) {
      p.clients.erase(old);
    }
  }
  if (auto here = p.clients.find(ev->client); here != p.clients.end() && here->second.id != c.id) {
    if (auto mapped = p.by_id.find(here->second.id); mapped != p.by_id.end() && mapped->second == ev->client) {
      p.by_id.erase(mapped);
    }
  }
  p.by_id[c.id] = ev->client;
  p.clients[ev->client] = std::move(c);
  return MOSQ_ERR_SUCCESS;
}

int OnAclCheck(int, void* event_data, void* userdata) {
  auto& p = *static_cast<Plugin*>(userdata);
  auto* ev = static_cast<mosquitto_evt_acl_check*>(event_data);
  const auto started = Clock::now();
  auto it = p.clients.find(ev->client);
  bool allowed = false;
  if (it != p.clients.end() && !p.too_old) {
    const View::Session& s = it->second.session;
    switch (ev->access) {
      case MOSQ_ACL_SUBSCRIBE:
        allowed = View::Decide(s, MqttAction::kSubscribe, ev->topic).allowed;
        break;
      case MOSQ_ACL_WRITE:
        allowed = View::Decide(s, MqttAction::kPublish, ev->topic).allowed &&
                  (!ev->retain || View::Decide(s, MqttAction::kRetainPublish, ev->topic).allowed);
        break;
      case MOSQ_ACL_READ:
        allowed = View::Decide(s, MqttAction::kReceive, ev->topic).allowed;
        break;
      case MOSQ_ACL_UNSUBSCRIBE:
        allowed = true;  // no policy action governs it
        break;
      default:
        break;
    }
  }
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count();
  p.histogram[std::min<int64_t>(ns / kBucketNs, kBuckets - 1)]++;
  p.checks++;
  if (!allowed) p.denied++;
  return allowed ? MOSQ_ERR_SUCCESS : MOSQ_ERR_ACL_DENIED;
}

int OnDisconnect(int, void* event_data, void* userdata) {
  auto& p = *static_cast<Plugin*>(userdata);
  // Remembered: its will (sent after this) and its persistent session's messages are its own.
  auto it = p.clients.find(static_cast<mosquitto_evt_disconnect*>(event_data)->client);
  if (it != p.clients.end()) it->second.offline_since = NowMillis();
  return MOSQ_ERR_SUCCESS;
}

}  // namespace

// The plugin's entry points, the only symbols it exports.
#define CERTFLEET_EXPORT __attribute__((visibility("default")))
extern "C" {

CERTFLEET_EXPORT int mosquitto_plugin_version(int supported_version_count, const int* supported_versions) {
  for (int i = 0; i < supported_version_count; ++i) {
    if (supported_versions[i] == 5) return 5;
  }
  return -1;
}

CERTFLEET_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t* identifier, void** userdata,
                                           struct mosquitto_opt* options, int option_count) {
  auto p = std::make_unique<Plugin>();
  p->id = identifier;
  std::string token_file;
  for (int i = 0; i < option_count; ++i) {
    const std::string key = options[i].key, value = options[i].value;
    if (key == "url") {
      p->url = value;
      while (!p->url.empty() && p->url.back() == '/') p->url.pop_back();
    } else if (key == "token_file") {
      token_file = value;
    } else if (key == "ca_file") {
      p->ca_file = value;
    } else if (key == "cache_file") {
      p->cache_file = value;
    } else if (key == "stats_file") {
      p->stats_file = value;
    } else if (key == "poll_ms") {
      p->poll = std::chrono::milliseconds(std::max(100, std::atoi(value.c_str())));
    } else if (key == "max_stale_s") {
      p->max_stale_ms = int64_t{std::max(0, std::atoi(value.c_str()))} * 1000;
    } else {
      mosquitto_log_printf(MOSQ_LOG_ERR, "certfleet: unknown option plugin_opt_%s", key.c_str());
      return MOSQ_ERR_INVAL;
    }
  }
  if (p->url.empty() || token_file.empty()) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "certfleet: plugin_opt_url and plugin_opt_token_file are required");
    return MOSQ_ERR_INVAL;
  }
  // The token goes with every fetch, and the snapshot decides who connects: never in clear.
  if (!p->url.starts_with("https://")) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "certfleet: plugin_opt_url must be an https:// URL");
    return MOSQ_ERR_INVAL;
  }
  auto token = certfleet::ReadFile(token_file, kMaxTokenBytes);
  if (!token.ok()) {
    mosquitto_log_printf(MOSQ_LOG_ERR, "certfleet: %s", token.error().message.c_str());
    return MOSQ_ERR_INVAL;
  }
  p->token = std::move(*token);
  p->token.erase(p->token.find_last_not_of(" \t\r\n") + 1);
  curl_global_init(CURL_GLOBAL_DEFAULT);

  // The last snapshot kept, if any, decides until a fresh one arrives.
  if (auto cached = p->cache_file.empty() ? certfleet::Result<std::string>(std::string())
                                          : certfleet::ReadFile(p->cache_file, kMaxSnapshotBytes);
      cached.ok() && !cached->empty()) {
    auto view = View::Parse(*cached);
    if (view.ok()) p->active = *view;
    // Written when it was fetched, touched when certfleet confirmed it: as old as its last word.
    if (struct stat st{}; view.ok() && stat(p->cache_file.c_str(), &st) == 0) {
      p->last_success_at = int64_t{st.st_mtim.tv_sec} * 1000 + st.st_mtim.tv_nsec / 1'000'000;
    }
    // A cache from before its generation was kept beside it: 0, any snapshot is newer.
    if (auto kept = certfleet::ReadFile(GenerationFile(*p), 32); view.ok() && kept.ok()) {
      int64_t n = 0;
      auto [end, ec] = std::from_chars(kept->data(), kept->data() + kept->size(), n);
      if (ec == std::errc() && end == kept->data() + kept->size()) p->cached_generation = n;
    }
  }
  p->fetcher = std::thread(FetchLoop, p.get());
  {
    std::unique_lock lock(p->mu);
    p->wake.wait_for(lock, kFirstFetchWait, [&] { return p->pending != nullptr; });
    if (p->pending) p->active = std::move(p->pending);
  }
  mosquitto_log_printf(MOSQ_LOG_INFO, "certfleet: deciding from %s",
                       p->active ? "a snapshot" : "nothing yet (refusing)");

  Plugin* raw = p.release();
  mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH, OnBasicAuth, nullptr, raw);
  mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, OnAclCheck, nullptr, raw);
  mosquitto_callback_register(identifier, MOSQ_EVT_TICK, OnTick, nullptr, raw);
  mosquitto_callback_register(identifier, MOSQ_EVT_DISCONNECT, OnDisconnect, nullptr, raw);
  *userdata = raw;
  return MOSQ_ERR_SUCCESS;
}

CERTFLEET_EXPORT int mosquitto_plugin_cleanup(void* userdata, struct mosquitto_opt*, int) {
  auto* p = static_cast<Plugin*>(userdata);
  if (p == nullptr) return MOSQ_ERR_SUCCESS;
  mosquitto_callback_unregister(p->id, MOSQ_EVT_BASIC_AUTH, OnBasicAuth, nullptr);
  mosquitto_callback_unregister(p->id, MOSQ_EVT_ACL_CHECK, OnAclCheck, nullptr);
  mosquitto_callback_unregister(p->id, MOSQ_EVT_TICK, OnTick, nullptr);
  mosquitto_callback_unregister(p->id, MOSQ_EVT_DISCONNECT, OnDisconnect, nullptr);
  {
    std::lock_guard lock(p->mu);
    p->stop = true;
  }
  p->wake.notify_all();
  if (p->fetcher.joinable()) p->fetcher.join();
  WriteStats(*p);
  delete p;
  curl_global_cleanup();
  return MOSQ_ERR_SUCCESS;
}

}  // extern "C"
