#include "core/thread_name.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <string_view>
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

// The name a new thread shows after naming itself `name`.
std::string ShownAfterNaming(std::string_view name) {
  std::string shown;
  std::thread([&] {
    NameThisThread(name);
    shown = ShownName();
  }).join();
  return shown;
}

TEST(ThreadName, ShownForTheThreadItNames) {
  EXPECT_EQ(ShownAfterNaming("cf-commit"), "cf-commit");
  EXPECT_NE(ShownName(), "cf-commit") << "other threads keep their names";
}

TEST(ThreadName, LongNamesKeepTheirFirstFifteenBytes) {
  EXPECT_EQ(ShownAfterNaming("cf-a-very-long-thread-name"), "cf-a-very-long-");
}

}  // namespace
}  // namespace certfleet
