// Shard start-up: an address that cannot be listened on is a clear error (never a crash), a port
// another socket holds is refused (no SO_REUSEPORT by default), and every setting is validated
// with a message naming its flag.
#include "server/shard_server.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ternps::server {
namespace {

using ::testing::HasSubstr;

// A TCP socket listening on a kernel-chosen loopback port.
class HeldPort {
 public:
  HeldPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(listen(fd_, 1), 0);
    socklen_t len = sizeof(addr);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~HeldPort() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(ShardServerTest, APortInUseIsAnErrorNamingTheAddress) {
  HeldPort held;
  ShardServerOptions options;
  options.listen = absl::StrCat("127.0.0.1:", held.port());
  absl::StatusOr<std::unique_ptr<ShardServer>> shard = ShardServer::Start(options);
  ASSERT_FALSE(shard.ok());
  EXPECT_EQ(shard.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(shard.status().message()), HasSubstr(options.listen));
}

TEST(ShardServerTest, ASecondShardOnTheSamePortIsRefused) {
  ShardServerOptions options;
  absl::StatusOr<std::unique_ptr<ShardServer>> first = ShardServer::Start(options);
  ASSERT_TRUE(first.ok()) << first.status();
  options.listen = (*first)->address();
  absl::StatusOr<std::unique_ptr<ShardServer>> second = ShardServer::Start(options);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
}

// Two shards with the same index must not share a state directory (they would overwrite each
// other's jobs); other indexes may share the volume.
TEST(ShardServerTest, ASecondShardOnTheSameStateDirIsRefused) {
  char tmpl[] = "/tmp/ternps-lock-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  ShardServerOptions options;
  options.listen = "127.0.0.1:0";
  options.shard.shard_count = 2;
  options.shard.state_dir = tmpl;
  {
    absl::StatusOr<std::unique_ptr<ShardServer>> first = ShardServer::Start(options);
    ASSERT_TRUE(first.ok()) << first.status();
    absl::StatusOr<std::unique_ptr<ShardServer>> second = ShardServer::Start(options);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition) << second.status();
    EXPECT_THAT(std::string(second.status().message()),
                HasSubstr(absl::StrCat(tmpl, "/shard-0 is in use by another ternps-server")));
    options.shard.shard_index = 1;
    absl::StatusOr<std::unique_ptr<ShardServer>> other = ShardServer::Start(options);
    EXPECT_TRUE(other.ok()) << other.status();
  }
  options.shard.shard_index = 0;
  absl::StatusOr<std::unique_ptr<ShardServer>> after = ShardServer::Start(options);
  EXPECT_TRUE(after.ok()) << "the lock outlived its shard: " << after.status();
  after->reset();
  std::system(absl::StrCat("rm -rf ", tmpl).c_str());
}

TEST(ShardServerTest, AnAddressThatIsNotLocalIsAnError) {
  ShardServerOptions options;
  options.listen = "256.1.1.1:7070";
  absl::StatusOr<std::unique_ptr<ShardServer>> shard = ShardServer::Start(options);
  ASSERT_FALSE(shard.ok());
  EXPECT_THAT(std::string(shard.status().message()), HasSubstr("256.1.1.1:7070"));
}

TEST(ShardServerTest, SettingsAreValidatedByFlagName) {
  struct Case {
    std::string want;
    void (*mutate)(ShardConfig&);
  };
  const Case cases[] = {
      {"--shard_count", [](ShardConfig& c) { c.shard_count = 0; }},
      {"--shard_index", [](ShardConfig& c) { c.shard_index = 1; }},
      {"--step_timeout", [](ShardConfig& c) { c.step_timeout = absl::ZeroDuration(); }},
      {"--job_idle_timeout", [](ShardConfig& c) { c.job_idle_timeout = absl::ZeroDuration(); }},
      {"--max_world_size: 32768", [](ShardConfig& c) { c.max_world_size = 32768; }},
      {"--max_jobs", [](ShardConfig& c) { c.max_jobs = 0; }},
      {"--max_partition_elements", [](ShardConfig& c) { c.max_partition_elements = 0; }},
      {"--max_shard_elements", [](ShardConfig& c) { c.max_shard_elements = 0; }},
  };
  EXPECT_TRUE(ValidateShardConfig(ShardConfig{}).ok());
  for (const Case& c : cases) {
    ShardServerOptions options;
    c.mutate(options.shard);
    absl::StatusOr<std::unique_ptr<ShardServer>> shard = ShardServer::Start(options);
    ASSERT_FALSE(shard.ok()) << c.want;
    EXPECT_EQ(shard.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(shard.status().message()), HasSubstr(c.want));
  }
}

}  // namespace
}  // namespace ternps::server
