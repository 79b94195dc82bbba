#include "common/util/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace ternps::common {

absl::StatusOr<std::string> ReadFileToString(const std::string& path, absl::string_view field) {
  auto failed = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": cannot read '", path, "': ", std::strerror(errno)));
  };
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return failed();
  std::string out;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const absl::Status st = failed();
      close(fd);
      return st;
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

}  // namespace ternps::common
