// TERNPS_CHECK: aborts with a message when a true invariant (never bad input) does not hold.
//
//   TERNPS_CHECK(st.ok(), "partition ", id, ": validated payload failed: ", st.ToString());
//
// The message arguments are absl::StrCat arguments, evaluated only on failure.
#ifndef TERNPS_COMMON_UTIL_CHECK_H_
#define TERNPS_COMMON_UTIL_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"

namespace ternps::common::internal {

[[noreturn]] inline void CheckFailed(const char* file, int line, const char* condition,
                                     const std::string& message) {
  std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", file, line, condition, message.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace ternps::common::internal

#define TERNPS_CHECK(condition, ...)                                          \
  do {                                                                        \
    if (!(condition)) {                                                       \
      ::ternps::common::internal::CheckFailed(__FILE__, __LINE__, #condition, \
                                              ::absl::StrCat(__VA_ARGS__));   \
    }                                                                         \
  } while (false)

#endif  // TERNPS_COMMON_UTIL_CHECK_H_
