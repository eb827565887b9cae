#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace certfleet::blob {

// What a listing says of one object.
struct ObjectInfo {
  std::string key;
  std::string etag;  // changes when the content does
  int64_t last_modified_millis = 0;
  int64_t size = 0;
};

// Called with each page of a listing; an error stops the listing and is returned by List.
using PageFn = std::function<Result<void>(std::vector<ObjectInfo>& page)>;

// An object store: a local folder or an S3-compatible bucket. Keys are '/'-separated paths
// relative to the store's root. Thread-safe.
class BlobStore {
 public:
  virtual ~BlobStore() = default;
  // Calls `page` with the objects whose key starts with `prefix`, in key order, at most
  // 1000 at a time, so that memory does not grow with the size of the bucket.
  virtual Result<void> List(std::string_view prefix, const PageFn& page) = 0;
  // The object's content; kNotFound if there is none, kResourceExhausted if it is larger
  // than `max_bytes`, kUnavailable if the store cannot be reached.
  virtual Result<std::string> Get(std::string_view key, size_t max_bytes) = 0;
  // The same, written to the file at `path` as it arrives, so that memory does not grow with
  // the object; on any error the file is removed.
  virtual Result<void> GetToFile(std::string_view key, const std::string& path, size_t max_bytes) = 0;
  // Creates or replaces an object.
  virtual Result<void> Put(std::string_view key, std::string_view bytes) = 0;
  // The same with the content of the file at `path`, read as it is sent, so that memory does
  // not grow with the file; kResourceExhausted over the store's largest object (5 GiB on S3).
  virtual Result<void> PutFile(std::string_view key, const std::string& path) = 0;
  // Removes an object; removing one that is not there succeeds.
  virtual Result<void> Delete(std::string_view key) = 0;
  // "file:///path" or "s3://bucket?…", without credentials, for logs.
  virtual std::string Describe() const = 0;
};

// Credentials and region for s3:// stores; empty fields fall back to AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN and AWS_REGION (or AWS_DEFAULT_REGION).
struct S3Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  // When set, the keys come from this file in the AWS CLI's format (its `profile`), read
  // again whenever it changes, so that a helper that renews temporary credentials keeps the
  // stores working past their expiry; the fields above are then not used.
  std::string credentials_file;
  std::string profile = "default";
};

// The keys of `profile` in an AWS CLI credentials file ([profile] or [profile name]
// sections of aws_access_key_id, aws_secret_access_key and aws_session_token). kNotFound for
// a missing file, kInvalidArgument for a profile missing or without both keys.
Result<S3Credentials> ReadCredentialsFile(const std::string& path, std::string_view profile);

// Opens `file://PATH` (a folder; relative paths are from the working directory) or
// `s3://bucket?endpoint=https://host:port&region=eu-west-1` (endpoint defaults to AWS's).
Result<std::unique_ptr<BlobStore>> OpenBlobStore(std::string_view url, const S3Credentials& credentials);

// Keys may not be empty, absolute, hold "." or ".." segments, empty segments, control
// characters or a backslash; kInvalidArgument otherwise.
Result<void> CheckKey(std::string_view key);

}  // namespace certfleet::blob
