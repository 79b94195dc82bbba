// Process-wide settings that every ternps binary makes at start-up. The libraries never make
// them: a host process (a trainer, Python) owns its process-wide state.
//
//   int main(int argc, char** argv) {
//     ternps::common::ConfigureBinaryProcess();
#ifndef TERNPS_COMMON_UTIL_PROCESS_H_
#define TERNPS_COMMON_UTIL_PROCESS_H_

#include "absl/synchronization/mutex.h"

namespace ternps::common {

inline void ConfigureBinaryProcess() {
  // Debian builds Abseil without NDEBUG, so absl::Mutex keeps a global lock-order graph on every
  // acquisition (about 2% of the CPU of a shard and of a worker on the data path). Lock order is
  // checked at build time instead (clang -Wthread-safety, tests/run.sh) and by the tests.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

}  // namespace ternps::common

#endif  // TERNPS_COMMON_UTIL_PROCESS_H_
