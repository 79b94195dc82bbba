// Worker::Connect against addresses that cannot work: typos fail at once with the cause, and an
// address where nothing listens fails at the connect timeout with gRPC's reason, not with a bare
// DEADLINE_EXCEEDED.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ternps/worker.h"

namespace ternps::worker {
namespace {

using ::testing::HasSubstr;

WorkerOptions Options(const std::string& address) {
  WorkerOptions options;
  options.job_id = "connect";
  options.shards = {address};
  options.tensors = {{"w", 16}};
  options.connect_timeout = absl::Seconds(1);
  return options;
}

TEST(ConnectTest, MalformedOrUnresolvableAddressesFailAtOnce) {
  const struct {
    std::string address;
    std::string want;
  } cases[] = {
      {"127.0.0.1:99999",
       "shards[0]: '127.0.0.1:99999': port '99999' is not a number in [1, 65535]"},
      {"127.0.0.1", "shards[0]: '127.0.0.1' is not host:port"},
      {"127.0.0.1:", "port '' is not a number"},
      {"no-such-host.invalid:7070", "cannot resolve host 'no-such-host.invalid'"},
  };
  for (const auto& c : cases) {
    const absl::Time start = absl::Now();
    absl::StatusOr<std::unique_ptr<Worker>> w = Worker::Connect(Options(c.address));
    ASSERT_FALSE(w.ok()) << c.address;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << w.status();
    EXPECT_THAT(std::string(w.status().message()), HasSubstr(c.want));
    // Bound, not a speed check: these fail before any connection is attempted.
    EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << c.address;
  }
}

TEST(ConnectTest, NothingListeningFailsAtTheConnectTimeoutWithTheCause) {
  // A port that was just free: bound and closed, so nothing listens there.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  close(fd);
  absl::StatusOr<std::unique_ptr<Worker>> w =
      Worker::Connect(Options(absl::StrCat("127.0.0.1:", port)));
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kUnavailable) << w.status();
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("unreachable for"));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("onnection refused"));
}

}  // namespace
}  // namespace ternps::worker
