// Makes `--help` of a ternps binary list the flags defined in its own main file (absl's default
// filter looks for a file named after the binary, which ours are not).
//
//   int main(int argc, char** argv) {
//     ternps::common::SetUsage("What this binary does.\nUsage: ...");
//     absl::ParseCommandLine(argc, argv);
#ifndef TERNPS_COMMON_UTIL_FLAGS_HELP_H_
#define TERNPS_COMMON_UTIL_FLAGS_HELP_H_

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace ternps::common {

inline void SetUsage(absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [](absl::string_view path) {
    return absl::EndsWith(path, "main.cc") || absl::StrContains(path, "/ternps/");
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
}

}  // namespace ternps::common

#endif  // TERNPS_COMMON_UTIL_FLAGS_HELP_H_
