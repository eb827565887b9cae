// The local folder store, key checks and the S3 listing parser. The S3 store itself is
// exercised against a real S3-compatible server by the distribution end-to-end test.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "blob/blob_store.h"
#include "blob/s3/s3_blob_store.h"
#include "testing/db.h"
#include "testing/files.h"

namespace certfleet::blob {
namespace {

TEST(LocalBlobStore, PutGetAndListInPages) {
  auto store = OpenBlobStore("file://" + testing::TempDir() + "/blobs", {});
  ASSERT_TRUE(store.ok()) << store.error().message;
  for (int i = 0; i < 2500; ++i) ASSERT_TRUE((*store)->Put(fmt::format("in/w/{:05}.pem", i), "x").ok());
  ASSERT_TRUE((*store)->Put("other/a", "y").ok());
  std::vector<size_t> pages;
  std::vector<std::string> keys;
  ASSERT_TRUE((*store)
                  ->List("in/",
                         [&](std::vector<ObjectInfo>& page) -> Result<void> {
                           pages.push_back(page.size());
                           for (auto& o : page) keys.push_back(o.key);
                           return Ok();
                         })
                  .ok());
  EXPECT_EQ(pages, (std::vector<size_t>{1000, 1000, 500}));
  EXPECT_TRUE(std::is_sorted(keys.begin(), keys.end()));
  EXPECT_EQ(keys.front(), "in/w/00000.pem");

  auto got = (*store)->Get("other/a", 10);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "y");
  EXPECT_EQ((*store)->Get("other/missing", 10).error().code, ErrorCode::kNotFound);
  ASSERT_TRUE((*store)->Put("big", std::string(100, 'b')).ok());
  EXPECT_EQ((*store)->Get("big", 99).error().code, ErrorCode::kResourceExhausted);
}

TEST(LocalBlobStore, GetToFileCopiesTheObjectAndLeavesNoFileOnError) {
  const std::string dir = testing::TempDir();
  auto store = OpenBlobStore("file://" + dir + "/blobs", {});
  ASSERT_TRUE(store.ok()) << store.error().message;
  const std::string content = "line one\n" + std::string(100'000, 'z');
  ASSERT_TRUE((*store)->Put("imports/a.txt", content).ok());
  const std::string out = dir + "/copy";
  ASSERT_TRUE((*store)->GetToFile("imports/a.txt", out, content.size()).ok());
  EXPECT_EQ(testing::ReadFile(out), content);
  EXPECT_EQ((*store)->GetToFile("imports/a.txt", dir + "/small", content.size() - 1).error().code,
            ErrorCode::kResourceExhausted);
  EXPECT_EQ((*store)->GetToFile("imports/none.txt", dir + "/none", 10).error().code, ErrorCode::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(dir + "/small"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/none"));
}

TEST(LocalBlobStore, PutFileCopiesAFileAndDeleteRemovesOnce) {
  const std::string dir = testing::TempDir();
  auto store = OpenBlobStore("file://" + dir + "/blobs", {});
  ASSERT_TRUE(store.ok()) << store.error().message;
  const std::string content = std::string(300'000, 'm') + "end";
  std::ofstream(dir + "/manifest") << content;
  ASSERT_TRUE((*store)->PutFile("manifests/m.txt", dir + "/manifest").ok());
  EXPECT_EQ(*(*store)->Get("manifests/m.txt", content.size()), content);
  EXPECT_TRUE(std::filesystem::exists(dir + "/manifest")) << "the file stays where it was";
  EXPECT_EQ((*store)->PutFile("manifests/n.txt", dir + "/no-such-file").error().code, ErrorCode::kUnavailable);
  EXPECT_EQ((*store)->Get("manifests/n.txt", 10).error().code, ErrorCode::kNotFound) << "nothing half written";
  ASSERT_TRUE((*store)->Delete("manifests/m.txt").ok());
  EXPECT_EQ((*store)->Get("manifests/m.txt", content.size()).error().code, ErrorCode::kNotFound);
  EXPECT_TRUE((*store)->Delete("manifests/m.txt").ok()) << "deleting what is not there succeeds";
  EXPECT_EQ((*store)->Delete("../escape").error().code, ErrorCode::kInvalidArgument);
}

TEST(LocalBlobStore, ChangedContentChangesTheEtag) {
  auto store = OpenBlobStore("file://" + testing::TempDir() + "/etag", {});
  auto etag = [&] {
    std::string e;
    EXPECT_TRUE((*store)
                    ->List("",
                           [&](std::vector<ObjectInfo>& page) -> Result<void> {
                             e = page.at(0).etag;
                             return Ok();
                           })
                    .ok());
    return e;
  };
  ASSERT_TRUE((*store)->Put("k", "one").ok());
  const std::string first = etag();
  ASSERT_TRUE((*store)->Put("k", "two!").ok());
  EXPECT_NE(etag(), first);
}

TEST(Keys, RefusesTraversalAndControlCharacters) {
  for (const char* bad : {"", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b", "a\nb", "a/"}) {
    EXPECT_FALSE(CheckKey(bad).ok()) << bad;
  }
  EXPECT_TRUE(CheckKey("Inbound/Warehouse_US/00800000d000580f/0580f.pem").ok());
  auto store = OpenBlobStore("file://" + testing::TempDir() + "/k", {});
  EXPECT_EQ((*store)->Get("../etc/passwd", 100).error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ((*store)->Put("a/../../x", "x").error().code, ErrorCode::kInvalidArgument);
}

TEST(OpenBlobStore, RefusesUrlsItCannotServe) {
  EXPECT_FALSE(OpenBlobStore("ftp://x", {}).ok());
  EXPECT_FALSE(OpenBlobStore("file://", {}).ok());
  EXPECT_FALSE(OpenBlobStore("s3://bucket/prefix", {}).ok());
  EXPECT_FALSE(OpenBlobStore("s3://bucket?endpoint=ftp://h", {}).ok());
  auto s3 = OpenBlobStore("s3://certs?endpoint=http://127.0.0.1:9000/&region=eu-west-1", {});
  ASSERT_TRUE(s3.ok());
  EXPECT_EQ((*s3)->Describe(), "s3://certs?endpoint=http://127.0.0.1:9000&region=eu-west-1");
}

TEST(S3Credentials, TheProfileOfAnAwsCliCredentialsFile) {
  const std::string path = testing::TempDir() + "/credentials";
  std::ofstream(path)
      << "# made by the role helper\n[default]\naws_access_key_id = AKIADEFAULT\n"
         "aws_secret_access_key = s1\n\n[profile gref]\r\n  aws_access_key_id=ASIAGREF\r\n"
         "aws_secret_access_key = s2 \r\naws_session_token = t0k/en=\r\n[half]\naws_access_key_id = X\n";
  auto gref = ReadCredentialsFile(path, "gref");
  ASSERT_TRUE(gref.ok()) << gref.error().message;
  EXPECT_EQ(gref->access_key_id, "ASIAGREF");
  EXPECT_EQ(gref->secret_access_key, "s2");
  EXPECT_EQ(gref->session_token, "t0k/en=");
  auto def = ReadCredentialsFile(path, "default");
  ASSERT_TRUE(def.ok());
  EXPECT_EQ(def->access_key_id, "AKIADEFAULT");
  EXPECT_TRUE(def->session_token.empty());
  EXPECT_EQ(ReadCredentialsFile(path, "nope").error().code, ErrorCode::kInvalidArgument);
  EXPECT_EQ(ReadCredentialsFile(path, "half").error().code, ErrorCode::kInvalidArgument) << "no secret";
  EXPECT_FALSE(ReadCredentialsFile(path + ".missing", "default").ok());
}

TEST(S3Listing, ParsesPagesAndTokens) {
  auto page = s3::ParseListObjectsV2(R"(<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><IsTruncated>true</IsTruncated>
<Contents><Key>Inbound/W/a.pem</Key><LastModified>2025-10-30T08:46:28.000Z</LastModified>
<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag><Size>1234</Size></Contents>
<NextContinuationToken>tok+/=</NextContinuationToken></ListBucketResult>)");
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_EQ(page->objects.size(), 1u);
  EXPECT_EQ(page->objects[0].key, "Inbound/W/a.pem");
  EXPECT_EQ(page->objects[0].etag, "9b2cf535f27731c974343645a3985328");
  EXPECT_EQ(page->objects[0].size, 1234);
  EXPECT_EQ(page->objects[0].last_modified_millis, 1'761'813'988'000);
  EXPECT_EQ(page->next_token, "tok+/=");
  EXPECT_FALSE(s3::ParseListObjectsV2("<nope").ok());
  EXPECT_FALSE(s3::ParseListObjectsV2("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>").ok());
}

}  // namespace
}  // namespace certfleet::blob
