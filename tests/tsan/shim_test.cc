// Checks tests/tsan/absl_sync_tsan.cc, the shim that tells ThreadSanitizer about Abseil's locks:
// these cases hand data between threads through every Abseil primitive ternps uses and must run
// clean (the shim invents no race). shim_race_test.cc is its counterpart: a real race the shim
// must not hide.
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace {

TEST(Ordered, MutexLockGuardsACounter) {
  absl::Mutex mu;
  long counter = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        absl::MutexLock lock(&mu);
        ++counter;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  absl::MutexLock lock(&mu);
  EXPECT_EQ(counter, 4000);
}

TEST(Ordered, AwaitSeesWhatTheOtherThreadWrote) {
  absl::Mutex mu;
  int stage = 0;
  int payload = 0;
  std::thread producer([&] {
    for (int i = 1; i <= 100; ++i) {
      absl::MutexLock lock(&mu);
      mu.Await(absl::Condition(
          +[](int* s) { return *s % 2 == 0; }, &stage));
      payload = i;
      ++stage;
    }
  });
  int sum = 0;
  for (int i = 1; i <= 100; ++i) {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* s) { return *s % 2 == 1; }, &stage));
    sum += payload;
    ++stage;
  }
  producer.join();
  EXPECT_EQ(sum, 5050);
}

TEST(Ordered, LockWhenWithTimeoutAndCondVar) {
  absl::Mutex mu;
  absl::CondVar cv;
  bool ready = false;
  int payload = 0;
  std::thread producer([&] {
    absl::MutexLock lock(&mu);
    payload = 42;
    ready = true;
    cv.Signal();
  });
  {
    absl::MutexLock lock(&mu);
    while (!ready) cv.Wait(&mu);
    EXPECT_EQ(payload, 42);
    payload = 7;
  }
  producer.join();
  ready = false;
  std::thread second([&] {
    absl::MutexLock lock(&mu);
    payload = 9;
    ready = true;
  });
  EXPECT_TRUE(mu.LockWhenWithTimeout(absl::Condition(&ready), absl::Seconds(60)));
  EXPECT_EQ(payload, 9);
  mu.Unlock();
  second.join();
}

TEST(Ordered, NotificationHandsOverData) {
  absl::Notification done;
  std::vector<int> data;
  std::thread producer([&] {
    data.assign(1000, 3);
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  long sum = 0;
  for (int v : data) sum += v;
  EXPECT_EQ(sum, 3000);
  producer.join();
}

}  // namespace
