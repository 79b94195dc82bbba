// Worker::Connect against addresses that cannot work (yet): typos and peers that do not speak
// gRPC fail at once with the cause; a name that does not resolve and an address where nothing
// listens are retried until the connect timeout, logged while waiting, and then fail with the
// reason, not with a bare DEADLINE_EXCEEDED. (A name that starts resolving while the worker waits:
// dns_test.)
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ternps/worker.h"

namespace ternps::worker {
namespace {

using ::testing::HasSubstr;

// A TCP socket bound to a free loopback port (not listening yet); its port in `port`.
int BoundLoopbackSocket(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return -1;
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

WorkerOptions Options(const std::string& address) {
  WorkerOptions options;
  options.job_id = "connect";
  options.shards = {address};
  options.tensors = {{"w", 16}};
  options.connect_timeout = absl::Seconds(1);
  return options;
}

TEST(ConnectTest, MalformedAddressesFailAtOnce) {
  const struct {
    std::string address;
    std::string want;
  } cases[] = {
      {"127.0.0.1:99999",
       "shards[0]: '127.0.0.1:99999': port '99999' is not a number in [1, 65535]"},
      {"127.0.0.1", "shards[0]: '127.0.0.1' is not host:port"},
      {"127.0.0.1:", "port '' is not a number"},
      {"bad host:7070", "host 'bad host' is neither a DNS name nor an IP address"},
      {"[::1]:7070x", "port '7070x' is not a number"},
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

TEST(ConnectTest, ANameThatDoesNotResolveIsRetriedUntilTheConnectTimeout) {
  WorkerOptions options = Options("no-such-host.invalid:7070");
  std::vector<std::string> lines;
  options.log = [&lines](std::string_view line) { lines.emplace_back(line); };
  options.connect_timeout = absl::Seconds(4);  // past the first progress line (at 2 s)
  absl::StatusOr<std::unique_ptr<Worker>> w = Worker::Connect(options);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kUnavailable) << w.status();
  EXPECT_THAT(std::string(w.status().message()),
              HasSubstr("host 'no-such-host.invalid' did not resolve within"));
  ASSERT_FALSE(lines.empty()) << "no progress line while waiting";
  EXPECT_THAT(lines[0], HasSubstr("waiting for shard 0 (no-such-host.invalid:7070): host "
                                  "'no-such-host.invalid' does not resolve yet"));
  EXPECT_THAT(lines[0], HasSubstr("more (connect_timeout)"));
}

// Something listens and answers, but not in HTTP/2 (here: an SSH-like banner, then close).
TEST(ConnectTest, APeerThatDoesNotSpeakGrpcFailsAtOnce) {
  int port = 0;
  const int fd = BoundLoopbackSocket(&port);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(listen(fd, 16), 0);
  std::thread banner([fd] {
    for (;;) {
      const int c = accept(fd, nullptr, nullptr);
      if (c < 0) return;  // the listening socket was shut down
      const char kBanner[] = "SSH-2.0-OpenSSH_9.2\r\n";
      (void)!write(c, kBanner, sizeof(kBanner) - 1);
      close(c);
    }
  });
  WorkerOptions options = Options(absl::StrCat("127.0.0.1:", port));
  options.connect_timeout = absl::Seconds(60);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Worker>> w = Worker::Connect(options);
  shutdown(fd, SHUT_RDWR);
  banner.join();
  close(fd);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), absl::StatusCode::kFailedPrecondition) << w.status();
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("does not speak gRPC"));
  // Bound, not a speed check: far below the 60 s connect timeout it would otherwise wait.
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
}

TEST(ConnectTest, NothingListeningFailsAtTheConnectTimeoutWithTheCause) {
  // A port that was just free: bound and closed, so nothing listens there.
  int port = 0;
  const int fd = BoundLoopbackSocket(&port);
  ASSERT_GE(fd, 0);
  close(fd);
  WorkerOptions options = Options(absl::StrCat("127.0.0.1:", port));
  std::vector<std::string> lines;
  options.log = [&lines](std::string_view line) { lines.emplace_back(line); };
  options.connect_timeout = absl::Seconds(4);  // past the first progress line (at 2 s)
  absl::StatusOr<std::unique_ptr<Worker>> w = Worker::Connect(options);
  ASSERT_FALSE(w.ok());
  ASSERT_FALSE(lines.empty()) << "no progress line while waiting";
  EXPECT_THAT(lines[0], HasSubstr("onnection refused"));
  EXPECT_EQ(w.status().code(), absl::StatusCode::kUnavailable) << w.status();
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("unreachable for"));
  EXPECT_THAT(std::string(w.status().message()), HasSubstr("onnection refused"));
}

}  // namespace
}  // namespace ternps::worker
