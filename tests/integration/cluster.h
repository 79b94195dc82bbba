// Test helpers: S in-process shards on 127.0.0.1 (port 0) and W workers on threads.
#ifndef TERNPS_TESTS_INTEGRATION_CLUSTER_H_
#define TERNPS_TESTS_INTEGRATION_CLUSTER_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "server/shard_server.h"

namespace ternps::testing {

class TestCluster {
 public:
  // `state_dir`: durable shards, sharing that directory (each keeps its own subdirectory).
  explicit TestCluster(uint32_t shards, absl::Duration step_timeout = absl::Seconds(60),
                       bool metrics = false, const std::string& state_dir = "")
      : TestCluster(shards, [&](server::ShardServerOptions& options) {
          options.shard.step_timeout = step_timeout;
          options.shard.state_dir = state_dir;
          if (metrics) options.metrics_address = "127.0.0.1:0";
        }) {}
  // Shards whose options `configure` sets (after the index, count and listen address).
  TestCluster(uint32_t shards, const std::function<void(server::ShardServerOptions&)>& configure) {
    for (uint32_t s = 0; s < shards; ++s) {
      server::ShardServerOptions options;
      options.listen = "127.0.0.1:0";
      options.shard.shard_index = s;
      options.shard.shard_count = shards;
      configure(options);
      auto shard = server::ShardServer::Start(options);
      EXPECT_TRUE(shard.ok()) << shard.status();
      if (shard.ok()) shards_.push_back(*std::move(shard));
    }
  }
  std::vector<std::string> addresses() const {
    std::vector<std::string> out;
    for (const auto& s : shards_) out.push_back(s->address());
    return out;
  }
  server::ShardServer& shard(size_t i) { return *shards_[i]; }

 private:
  std::vector<std::unique_ptr<server::ShardServer>> shards_;
};

// Runs body(rank) on `world` threads and joins them.
inline void RunWorkers(uint32_t world, const std::function<void(uint32_t)>& body) {
  std::vector<std::thread> threads;
  for (uint32_t r = 0; r < world; ++r) threads.emplace_back(body, r);
  for (std::thread& t : threads) t.join();
}

}  // namespace ternps::testing

#endif  // TERNPS_TESTS_INTEGRATION_CLUSTER_H_
