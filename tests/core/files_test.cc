#include "core/files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace certfleet {
namespace {

namespace fs = std::filesystem;

fs::path FreshDir() {
  char tmpl[] = "/tmp/certfleet-files-test.XXXXXX";
  const char* dir = mkdtemp(tmpl);
  EXPECT_NE(dir, nullptr);
  return dir ? fs::path(dir) : fs::path();
}

TEST(Files, CopyFileAtomicallyCopiesAnySizeWithItsMode) {
  const fs::path dir = FreshDir();
  std::string data;
  for (int i = 0; i < 300'000; ++i) data.push_back(static_cast<char>(i * 7));  // several read buffers
  ASSERT_TRUE(WriteFileAtomically(dir / "from", data, 0644).ok());
  ASSERT_TRUE(CopyFileAtomically(dir / "from", dir / "sub" / "to", 0600).ok());
  EXPECT_EQ(*ReadFile(dir / "sub" / "to", data.size()), data);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "sub" / "to").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Only the copy stays: no temporary file is left beside it.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir / "sub"), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

TEST(Files, ACopyThatFailsLeavesNothing) {
  const fs::path dir = FreshDir();
  auto missing = CopyFileAtomically(dir / "none", dir / "to", 0600);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ErrorCode::kUnavailable);
  // A source that cannot be read (a folder) fails the copy halfway: no target, no temporary.
  fs::create_directories(dir / "folder");
  EXPECT_FALSE(CopyFileAtomically(dir / "folder", dir / "to", 0600).ok());
  EXPECT_FALSE(fs::exists(dir / "to"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);  // the folder
  fs::remove_all(dir);
}

}  // namespace
}  // namespace certfleet
