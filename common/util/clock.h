// Clock: where the engine and the aggregators read the time, so that tests can drive step
// timeouts by hand instead of waiting for them.
//
//   const Clock& clock = Clock::Real();          // absl::Now()
//   ManualClock fake(absl::UnixEpoch());         // tests: fake.Advance(absl::Seconds(61));
//
// Thread-safe.
#ifndef TERNPS_COMMON_UTIL_CLOCK_H_
#define TERNPS_COMMON_UTIL_CLOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace ternps::common {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() const = 0;
  // The system clock (absl::Now()); lives for the whole program.
  static const Clock& Real();
};

// A clock that moves only when told to.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(absl::Time start = absl::UnixEpoch()) : now_(start) {}
  absl::Time Now() const override ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

inline const Clock& Clock::Real() {
  class RealClock final : public Clock {
   public:
    absl::Time Now() const override { return absl::Now(); }
  };
  static const RealClock* const kClock = new RealClock();
  return *kClock;
}

}  // namespace ternps::common

#endif  // TERNPS_COMMON_UTIL_CLOCK_H_
