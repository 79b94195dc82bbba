// Makes `--help` of a ternps binary list the flags defined in its own main file (absl's default
// filter looks for a file named after the binary, which ours are not).
//
//   int main(int argc, char** argv) {
//     ternps::common::SetUsage("What this binary does.\nUsage: ...");
//     std::vector<char*> args = ternps::common::ParseFlags(argc, argv);
//
// ParseFlags is absl::ParseCommandLine, except that --help / -h print the usage and the flags of
// files whose path contains `help_filter` to stdout and exit 0 (absl exits 1).
#ifndef TERNPS_COMMON_UTIL_FLAGS_HELP_H_
#define TERNPS_COMMON_UTIL_FLAGS_HELP_H_

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/internal/program_name.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/parse.h"
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
  // "Flags from server/main.cc", not the build machine's absolute path.
  config.normalize_filename = [](absl::string_view path) -> std::string {
    size_t from = absl::string_view::npos;  // the last top-level directory of the tree
    for (absl::string_view top : {"/server/", "/worker/", "/common/", "/tests/"}) {
      const size_t at = path.rfind(top);
      if (at != absl::string_view::npos && (from == absl::string_view::npos || at > from)) {
        from = at;
      }
    }
    if (from != absl::string_view::npos) return std::string(path.substr(from + 1));
    const size_t slash = path.rfind('/');
    return std::string(slash == absl::string_view::npos ? path : path.substr(slash + 1));
  };
  absl::SetFlagsUsageConfig(config);
}

inline std::vector<char*> ParseFlags(int argc, char** argv,
                                     absl::string_view help_filter = "main.cc") {
  if (argc > 0) absl::flags_internal::SetProgramInvocationName(argv[0]);
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) break;
    if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0 ||
        std::strcmp(argv[i], "-help") == 0) {
      absl::flags_internal::FlagsHelp(std::cout, help_filter,
                                      absl::flags_internal::HelpFormat::kHumanReadable,
                                      absl::ProgramUsageMessage());
      std::exit(0);
    }
  }
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace ternps::common

#endif  // TERNPS_COMMON_UTIL_FLAGS_HELP_H_
