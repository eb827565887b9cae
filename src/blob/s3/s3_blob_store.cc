#include "blob/s3/s3_blob_store.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <pugixml.hpp>

#include "core/clock.h"
#include "core/crypto.h"
#include "core/log.h"

namespace certfleet::blob::s3 {
namespace {

// Bounds a listing page's XML (1000 keys of up to 1 KiB each, with their metadata).
constexpr size_t kMaxListBytes = size_t{4} * 1024 * 1024;
constexpr long kConnectTimeoutSeconds = 10;
// A request that moves fewer than kLowSpeedBytes per second for this long is abandoned.
constexpr long kLowSpeedSeconds = 30;
constexpr long kLowSpeedBytes = 1;
// Idle connections kept, one per concurrent downloader is enough (distribution.download_workers).
constexpr size_t kMaxIdleHandles = 64;
constexpr std::string_view kEmptySha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
// The largest object one PUT may create.
constexpr uintmax_t kMaxPutBytes = uintmax_t{5} << 30;

using CurlPtr = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using SlistPtr = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

// A response body as it arrives: in memory, or written to `file` when one is given.
struct Body {
  std::string data;
  size_t limit = 0;
  std::ofstream* file = nullptr;
  size_t received = 0;
  bool over = false;
};

size_t Collect(char* ptr, size_t size, size_t n, void* userdata) {
  auto* body = static_cast<Body*>(userdata);
  const size_t len = size * n;
  if (body->received + len > body->limit) {
    body->over = true;
    return 0;  // stops the transfer
  }
  body->received += len;
  if (body->file == nullptr) {
    body->data.append(ptr, len);
  } else if (!body->file->write(ptr, static_cast<std::streamsize>(len))) {
    return 0;  // the disk is full: stops the transfer, which fails
  }
  return len;
}

// Percent-encodes as SigV4 wants: unreserved characters stay, and '/' too when `keep_slash`.
std::string UriEncode(std::string_view s, bool keep_slash) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

class S3BlobStore final : public BlobStore {
 public:
  S3BlobStore(S3Location location, S3Credentials credentials)
      : loc_(std::move(location)), creds_(std::move(credentials)) {
    if (!creds_.credentials_file.empty()) return;
    if (creds_.access_key_id.empty()) creds_.access_key_id = Env("AWS_ACCESS_KEY_ID");
    if (creds_.secret_access_key.empty()) creds_.secret_access_key = Env("AWS_SECRET_ACCESS_KEY");
    if (creds_.session_token.empty()) creds_.session_token = Env("AWS_SESSION_TOKEN");
  }

  Result<void> List(std::string_view prefix, const PageFn& page) override {
    std::string token;
    do {
      // Query parameters in code-point order, as the canonical request sorts them.
      std::string query = "list-type=2&max-keys=1000";
      if (!token.empty()) query = "continuation-token=" + UriEncode(token, false) + "&" + query;
      query += "&prefix=" + UriEncode(prefix, false);
      CF_ASSIGN_OR_RETURN(
          Response r, Request("GET", fmt::format("{}/{}?{}", loc_.endpoint, loc_.bucket, query), {}, kMaxListBytes));
      if (r.status != 200) return StatusError(r, "listing " + std::string(prefix));
      CF_ASSIGN_OR_RETURN(ListPage parsed, ParseListObjectsV2(r.body));
      if (!parsed.objects.empty()) CF_RETURN_IF_ERROR(page(parsed.objects));
      token = std::move(parsed.next_token);
    } while (!token.empty());
    return Ok();
  }

  Result<std::string> Get(std::string_view key, size_t max_bytes) override {
    CF_RETURN_IF_ERROR(CheckKey(key));
    CF_ASSIGN_OR_RETURN(Response r, Request("GET", ObjectUrl(key), {}, max_bytes));
    if (r.over_limit) {
      return MakeError(ErrorCode::kResourceExhausted, fmt::format("{} is larger than {} bytes", key, max_bytes));
    }
    if (r.status == 404) return MakeError(ErrorCode::kNotFound, fmt::format("no object {}", key));
    if (r.status != 200) return StatusError(r, "getting " + std::string(key));
    return std::move(r.body);
  }

  Result<void> GetToFile(std::string_view key, const std::string& path, size_t max_bytes) override {
    CF_RETURN_IF_ERROR(CheckKey(key));
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    if (!file) return MakeError(ErrorCode::kUnavailable, fmt::format("cannot write {}", path));
    Result<Response> r = Request("GET", ObjectUrl(key), {}, max_bytes, &file);
    file.close();
    Result<void> out = Ok();
    if (!r.ok()) {
      out = r.error();
    } else if (r->over_limit) {
      out = MakeError(ErrorCode::kResourceExhausted, fmt::format("{} is larger than {} bytes", key, max_bytes));
    } else if (r->status == 404) {
      out = MakeError(ErrorCode::kNotFound, fmt::format("no object {}", key));
    } else if (r->status != 200) {
      out = StatusError(*r, "getting " + std::string(key));
    } else if (!file) {
      out = MakeError(ErrorCode::kUnavailable, fmt::format("writing {} failed", path));
    }
    if (!out.ok()) std::filesystem::remove(path);
    return out;
  }

  Result<void> Put(std::string_view key, std::string_view bytes) override {
    CF_RETURN_IF_ERROR(CheckKey(key));
    CF_ASSIGN_OR_RETURN(Response r, Request("PUT", ObjectUrl(key), Upload{bytes}, kMaxListBytes));
    if (r.status != 200) return StatusError(r, "putting " + std::string(key));
    return Ok();
  }

  Result<void> PutFile(std::string_view key, const std::string& path) override {
    CF_RETURN_IF_ERROR(CheckKey(key));
    std::error_code ec;
    const uintmax_t size = std::filesystem::file_size(path, ec);
    if (ec) return MakeError(ErrorCode::kUnavailable, fmt::format("reading {}: {}", path, ec.message()));
    if (size > kMaxPutBytes) {
      return MakeError(ErrorCode::kResourceExhausted,
                       fmt::format("{} is larger than the {} bytes one S3 PUT takes", key, kMaxPutBytes));
    }
    std::unique_ptr<std::FILE, decltype(&std::fclose)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
    if (!file) return MakeError(ErrorCode::kUnavailable, fmt::format("cannot read {}", path));
    CF_ASSIGN_OR_RETURN(Response r, Request("PUT", ObjectUrl(key),
                                            Upload{{}, file.get(), static_cast<curl_off_t>(size)}, kMaxListBytes));
    if (r.status != 200) return StatusError(r, "putting " + std::string(key));
    return Ok();
  }

  Result<void> Delete(std::string_view key) override {
    CF_RETURN_IF_ERROR(CheckKey(key));
    CF_ASSIGN_OR_RETURN(Response r, Request("DELETE", ObjectUrl(key), {}, kMaxListBytes));
    if (r.status != 204 && r.status != 200 && r.status != 404) return StatusError(r, "deleting " + std::string(key));
    return Ok();
  }

  std::string Describe() const override {
    return fmt::format("s3://{}?endpoint={}&region={}", loc_.bucket, loc_.endpoint, loc_.region);
  }

 private:
  // What a request sends: nothing, `bytes`, or the open `file` read as it is sent.
  struct Upload {
    std::string_view bytes;
    std::FILE* file = nullptr;
    curl_off_t file_size = 0;
  };

  struct Response {
    long status = 0;
    std::string body;
    bool over_limit = false;
  };

  std::string ObjectUrl(std::string_view key) const {
    return fmt::format("{}/{}/{}", loc_.endpoint, loc_.bucket, UriEncode(key, true));
  }

  static Error StatusError(const Response& r, const std::string& what) {
    // S3 errors are XML with a Code and a Message; keep the message short and key-free.
    std::string code;
    pugi::xml_document doc;
    if (doc.load_buffer(r.body.data(), r.body.size())) code = doc.child("Error").child_value("Code");
    const ErrorCode ec = r.status == 403 || r.status == 401 ? ErrorCode::kPermissionDenied
                         : r.status >= 500                  ? ErrorCode::kUnavailable
                                                            : ErrorCode::kInternal;
    return MakeError(ec, fmt::format("{}: HTTP {}{}", what, r.status, code.empty() ? "" : " " + code));
  }

  // Handles are kept between requests so that their connections stay open (keep-alive):
  // a new TCP connection per object would cost more than the object.
  CurlPtr TakeHandle() const {
    {
      std::lock_guard lock(handles_mu_);
      if (!handles_.empty()) {
        CurlPtr h = std::move(handles_.back());
        handles_.pop_back();
        curl_easy_reset(h.get());
        return h;
      }
    }
    return CurlPtr(curl_easy_init(), &curl_easy_cleanup);
  }
  void ReturnHandle(CurlPtr h) const {
    std::lock_guard lock(handles_mu_);
    if (handles_.size() < kMaxIdleHandles) handles_.push_back(std::move(h));
  }

  // The response; its body goes to `file` instead of Response::body when one is given.
  Result<Response> Request(const char* method, const std::string& url, const Upload& upload, size_t limit,
                           std::ofstream* file = nullptr) const {
    CF_ASSIGN_OR_RETURN(const S3Credentials creds, Credentials());
    CurlPtr curl = TakeHandle();
    if (!curl) return MakeError(ErrorCode::kInternal, "curl_easy_init failed");
    Body body{{}, limit, file};
    const std::string sigv4 = fmt::format("aws:amz:{}:s3", loc_.region);
    // A file is not read twice to hash it: S3 takes an unsigned payload over TLS.
    const std::string payload_hash = upload.file != nullptr ? "UNSIGNED-PAYLOAD"
                                     : upload.bytes.empty() ? std::string(kEmptySha256)
                                                            : Sha256Hex(upload.bytes);
    curl_slist* headers = curl_slist_append(nullptr, ("x-amz-content-sha256: " + payload_hash).c_str());
    if (!creds.session_token.empty()) {
      headers = curl_slist_append(headers, ("x-amz-security-token: " + creds.session_token).c_str());
    }
    SlistPtr header_list(headers, &curl_slist_free_all);
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, header_list.get());
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4.c_str());
    curl_easy_setopt(c, CURLOPT_USERNAME, creds.access_key_id.c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, creds.secret_access_key.c_str());
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, kLowSpeedSeconds);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, kLowSpeedBytes);
    if (upload.file != nullptr) {
      curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(c, CURLOPT_READDATA, upload.file);  // curl's own reader: fread
      curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, upload.file_size);
    } else if (!upload.bytes.empty()) {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, upload.bytes.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(upload.bytes.size()));
    }
    const CURLcode rc = curl_easy_perform(c);
    Response r;
    r.over_limit = body.over;
    if (rc != CURLE_OK && !(rc == CURLE_WRITE_ERROR && body.over)) {
      return MakeError(ErrorCode::kUnavailable, fmt::format("{} {}: {}", method, Describe(), curl_easy_strerror(rc)));
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    r.body = std::move(body.data);
    ReturnHandle(std::move(curl));
    return r;
  }

  // The keys of the moment: those given, or the credentials file's, read again when its time
  // or size changed. A file that cannot be read (a helper in the middle of writing it) keeps
  // the keys read last, if any.
  Result<S3Credentials> Credentials() const {
    std::lock_guard lock(creds_mu_);
    if (creds_.credentials_file.empty()) return creds_;
    std::error_code ec;
    const auto mtime = std::filesystem::last_write_time(creds_.credentials_file, ec);
    const auto size = ec ? 0 : std::filesystem::file_size(creds_.credentials_file, ec);
    if (!ec && read_ && mtime == file_time_ && size == file_size_) return *read_;
    Result<S3Credentials> fresh = ReadCredentialsFile(creds_.credentials_file, creds_.profile);
    if (fresh.ok()) {
      read_ = std::move(*fresh);
      file_time_ = mtime;
      file_size_ = size;
      log::Info("read the S3 credentials file", {{"file", creds_.credentials_file}, {"profile", creds_.profile}});
      return *read_;
    }
    if (read_) {
      log::Warn("the S3 credentials file cannot be read now; keeping the keys read last",
                {{"file", creds_.credentials_file}, {"error", fresh.error().message}});
      return *read_;
    }
    return MakeError(ErrorCode::kUnavailable, "s3.credentials_file: " + fresh.error().message);
  }

  const S3Location loc_;
  S3Credentials creds_;  // set in the constructor only
  mutable std::mutex creds_mu_;
  mutable std::optional<S3Credentials> read_;  // from the credentials file
  mutable std::filesystem::file_time_type file_time_;
  mutable uintmax_t file_size_ = 0;
  mutable std::mutex handles_mu_;
  mutable std::vector<CurlPtr> handles_;
};

}  // namespace

std::unique_ptr<BlobStore> OpenS3BlobStore(S3Location location, S3Credentials credentials) {
  return std::make_unique<S3BlobStore>(std::move(location), std::move(credentials));
}

Result<ListPage> ParseListObjectsV2(std::string_view xml) {
  pugi::xml_document doc;
  if (!doc.load_buffer(xml.data(), xml.size())) {
    return MakeError(ErrorCode::kUnavailable, "the bucket listing is not XML");
  }
  pugi::xml_node root = doc.child("ListBucketResult");
  if (!root) return MakeError(ErrorCode::kUnavailable, "the bucket listing has no ListBucketResult");
  ListPage page;
  for (pugi::xml_node c : root.children("Contents")) {
    ObjectInfo o;
    o.key = c.child_value("Key");
    o.etag = c.child_value("ETag");
    if (o.etag.size() >= 2 && o.etag.front() == '"' && o.etag.back() == '"')
      o.etag = o.etag.substr(1, o.etag.size() - 2);
    o.size = c.child("Size").text().as_llong();
    o.last_modified_millis = ParseRfc3339(c.child_value("LastModified")).value_or(0);
    page.objects.push_back(std::move(o));
  }
  if (std::string_view(root.child_value("IsTruncated")) == "true") {
    page.next_token = root.child_value("NextContinuationToken");
    if (page.next_token.empty()) return MakeError(ErrorCode::kUnavailable, "a truncated listing without a token");
  }
  return page;
}

}  // namespace certfleet::blob::s3
