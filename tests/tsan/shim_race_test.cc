// A real race, which ThreadSanitizer must report through the Abseil shim (absl_sync_tsan.cc):
// one field written under two different mutexes. ctest passes this test only when the report
// appears, so a shim that orders too much (and would hide races in ternps) fails it.
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace {

TEST(Racy, OneFieldUnderTwoMutexesIsReported) {
  absl::Mutex a;
  absl::Mutex b;
  long shared = 0;
  std::thread first([&] {
    absl::MutexLock lock(&a);
    shared += 1;
  });
  std::thread second([&] {
    absl::MutexLock lock(&b);
    shared += 2;
  });
  first.join();
  second.join();
  EXPECT_EQ(shared, 3);
}

}  // namespace
