// Reading a whole file, with an error that names the setting it came from.
//
//   absl::StatusOr<std::string> pem = common::ReadFileToString(path, "--tls_cert");
//   // INVALID_ARGUMENT "--tls_cert: cannot read 'x.pem': No such file or directory"
#ifndef TERNPS_COMMON_UTIL_FILE_H_
#define TERNPS_COMMON_UTIL_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ternps::common {

// The contents of `path`; INVALID_ARGUMENT naming `field`, the path and the system's reason if
// it cannot be opened or read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path, absl::string_view field);

}  // namespace ternps::common

#endif  // TERNPS_COMMON_UTIL_FILE_H_
