#include "core/thread_name.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

namespace certfleet {
namespace {

// The name `top -H` and `ps -L` show for the calling thread.
std::string ShownName() {
  std::ifstream comm("/proc/self/task/" + std::to_string(syscall(SYS_gettid)) + "/comm");
  std::string name;
  std::getline(comm, name);
  return name;
}

TEST(ThreadName, ShownForTheThreadItNames) {
  std::string named;
  std::thread([&] {
    NameThisThread("cf-commit");
    named = ShownName();
  }).join();
  EXPECT_EQ(named, "cf-commit");
  EXPECT_NE(ShownName(), "cf-commit") << "other threads keep their names";
}

TEST(ThreadName, LongNamesKeepTheirFirstFifteenBytes) {
  std::string named;
  std::thread([&] {
    NameThisThread("cf-a-very-long-thread-name");
    named = ShownName();
  }).join();
  EXPECT_EQ(named, "cf-a-very-long-");
}

}  // namespace
}  // namespace certfleet
