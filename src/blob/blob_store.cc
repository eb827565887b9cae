#include "blob/blob_store.h"

#include <curl/curl.h>
#include <fmt/format.h>

#include <sstream>

#include "blob/local/local_blob_store.h"
#include "blob/s3/s3_blob_store.h"
#include "core/files.h"

namespace certfleet::blob {
namespace {

constexpr size_t kMaxKeyBytes = 1024;  // S3's own limit
constexpr std::string_view kAwsEndpoint = "https://s3.{}.amazonaws.com";

// The value of `name` in a URL's query ("a=1&b=2"), percent-decoded; empty if absent.
std::string QueryValue(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    if (pair.starts_with(name) && pair.size() > name.size() && pair[name.size()] == '=') {
      std::string_view v = pair.substr(name.size() + 1);
      int len = 0;
      char* decoded = curl_easy_unescape(nullptr, v.data(), static_cast<int>(v.size()), &len);
      std::string out(decoded ? decoded : "", decoded ? static_cast<size_t>(len) : 0);
      curl_free(decoded);
      return out;
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

}  // namespace

Result<void> CheckKey(std::string_view key) {
  auto bad = [&](std::string_view why) {
    return MakeError(ErrorCode::kInvalidArgument, fmt::format("object key {:?}: {}", key.substr(0, 200), why));
  };
  if (key.empty() || key.size() > kMaxKeyBytes) return bad("must be 1 to 1024 bytes");
  if (key.front() == '/') return bad("must be relative");
  for (unsigned char c : key) {
    if (c < 0x20 || c == 0x7f || c == '\\') return bad("control character or backslash");
  }
  size_t start = 0;
  while (start <= key.size()) {
    const size_t slash = key.find('/', start);
    const std::string_view seg = key.substr(start, slash == std::string_view::npos ? key.npos : slash - start);
    if (seg.empty() || seg == "." || seg == "..") return bad("empty, '.' or '..' segment");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return Ok();
}

Result<std::unique_ptr<BlobStore>> OpenBlobStore(std::string_view url, const S3Credentials& credentials) {
  if (url.starts_with("file://")) {
    std::string path(url.substr(7));
    if (path.empty()) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{}: file:// needs a path", url));
    return local::OpenLocalBlobStore(std::move(path));
  }
  if (url.starts_with("s3://")) {
    std::string_view rest = url.substr(5);
    const size_t q = rest.find('?');
    const std::string_view query = q == std::string_view::npos ? std::string_view() : rest.substr(q + 1);
    s3::S3Location loc;
    loc.bucket = std::string(rest.substr(0, q));
    if (loc.bucket.empty() || loc.bucket.find('/') != std::string::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       fmt::format("{}: s3://BUCKET?endpoint=…&region=… (no path; the prefix is set apart)", url));
    }
    loc.region = QueryValue(query, "region");
    if (loc.region.empty()) {
      const char* env = std::getenv("AWS_REGION");
      if (!env) env = std::getenv("AWS_DEFAULT_REGION");
      loc.region = env ? env : "us-east-1";
    }
    loc.endpoint = QueryValue(query, "endpoint");
    if (loc.endpoint.empty()) loc.endpoint = fmt::format(fmt::runtime(kAwsEndpoint), loc.region);
    while (!loc.endpoint.empty() && loc.endpoint.back() == '/') loc.endpoint.pop_back();
    if (!loc.endpoint.starts_with("http://") && !loc.endpoint.starts_with("https://")) {
      return MakeError(ErrorCode::kInvalidArgument, fmt::format("{}: endpoint must be http(s)://host[:port]", url));
    }
    return s3::OpenS3BlobStore(std::move(loc), credentials);
  }
  return MakeError(ErrorCode::kInvalidArgument, fmt::format("{}: an object store is file:///path or s3://bucket", url));
}

Result<S3Credentials> ReadCredentialsFile(const std::string& path, std::string_view profile) {
  constexpr size_t kMaxCredentialsFile = size_t{1} << 20;  // a few profiles are a few hundred bytes
  CF_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kMaxCredentialsFile));
  S3Credentials out;
  bool in_profile = false;
  bool found = false;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    auto trim = [](std::string_view s) {
      const size_t b = s.find_first_not_of(" \t\r");
      if (b == std::string_view::npos) return std::string_view();
      return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
    };
    const std::string_view l = trim(line);
    if (l.empty() || l.front() == '#' || l.front() == ';') continue;
    if (l.front() == '[' && l.back() == ']') {
      std::string_view name = trim(l.substr(1, l.size() - 2));
      if (name.starts_with("profile ")) name = trim(name.substr(8));
      in_profile = name == profile;
      found = found || in_profile;
      continue;
    }
    const size_t eq = l.find('=');
    if (!in_profile || eq == std::string_view::npos) continue;
    const std::string_view key = trim(l.substr(0, eq));
    const std::string value(trim(l.substr(eq + 1)));
    if (key == "aws_access_key_id") out.access_key_id = value;
    if (key == "aws_secret_access_key") out.secret_access_key = value;
    if (key == "aws_session_token") out.session_token = value;
  }
  if (!found) return MakeError(ErrorCode::kInvalidArgument, fmt::format("{} has no profile [{}]", path, profile));
  if (out.access_key_id.empty() || out.secret_access_key.empty()) {
    return MakeError(
        ErrorCode::kInvalidArgument,
        fmt::format("profile [{}] of {} needs aws_access_key_id and aws_secret_access_key", profile, path));
  }
  return out;
}

}  // namespace certfleet::blob
