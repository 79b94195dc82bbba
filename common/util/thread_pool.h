// A fixed pool of threads running queued closures, and a way to wait for a batch of them.
//
//   ThreadPool pool(4);
//   absl::BlockingCounter done(n);
//   for (int i = 0; i < n; ++i) pool.Schedule([&, i] { Work(i); done.DecrementCount(); });
//   done.Wait();
//
// Thread-safe. The destructor runs what is queued, then joins.
#ifndef TERNPS_COMMON_UTIL_THREAD_POOL_H_
#define TERNPS_COMMON_UTIL_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ternps::common {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> task) ABSL_LOCKS_EXCLUDED(mu_);
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void Run() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace ternps::common

#endif  // TERNPS_COMMON_UTIL_THREAD_POOL_H_
