// The worker's session on its own, against real shards over loopback gRPC: it joins every shard
// and carries each one's epoch, a reconnection resumes the session at the same step and is
// counted once per shard, Leave ends it; an unreachable shard fails after connect_timeout naming
// the shard, and a malformed address is refused before any connection, naming the field.
#include "worker/client/session.h"

#include <optional>
#include <string>
#include <vector>

#include "common/spec/job_spec.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster.h"

namespace ternps::worker {
namespace {

namespace v1 = ::ternps::v1;

struct Job {
  WorkerOptions options;
  v1::JoinRequest join;
  std::optional<common::JobSpec> spec;
};

Job MakeJob(std::vector<std::string> shards, uint32_t rank) {
  Job job;
  job.options.job_id = "session";
  job.options.rank = rank;
  job.options.world_size = 2;
  job.options.shards = std::move(shards);
  job.options.tensors = {{"w", 5000}};
  job.options.connect_timeout = absl::Seconds(30);
  job.join.set_job_id(job.options.job_id);
  job.join.set_worker_rank(rank);
  job.join.set_world_size(job.options.world_size);
  v1::TensorSpec* t = job.join.add_tensors();
  t->set_name("w");
  t->set_elements(5000);
  *job.join.mutable_codec() = common::CodecToProto(job.options.codec);
  job.join.set_shard_count(static_cast<uint32_t>(job.options.shards.size()));
  absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(
      job.join, {.shard_count = static_cast<uint32_t>(job.options.shards.size())});
  EXPECT_TRUE(spec.ok()) << spec.status();
  job.spec.emplace(*std::move(spec));
  return job;
}

TEST(SessionTest, JoinsEveryShardResumesAfterAReconnectionAndLeaves) {
  testing::TestCluster cluster(2);
  Job job = MakeJob(cluster.addresses(), 0);
  Session session(job.options, *job.spec, job.join);
  ASSERT_TRUE(session.Open().ok());
  absl::StatusOr<uint64_t> start = session.JoinAll(/*rejoin=*/false);
  ASSERT_TRUE(start.ok()) << start.status();
  EXPECT_EQ(*start, 0u);
  for (uint32_t s = 0; s < 2; ++s) {
    EXPECT_GT(session.epoch(s), 0u) << "shard " << s;
    EXPECT_EQ(session.ShardName(s),
              "shard " + std::to_string(s) + " (" + cluster.addresses()[s] + ")");
  }
  EXPECT_EQ(session.TakeReconnects(), 0u);
  // As after a lost connection to shard 1 during step 0: the shard still has the session.
  ASSERT_TRUE(session.Reconnect({1}, 0).ok());
  EXPECT_EQ(session.TakeReconnects(), 1u);
  EXPECT_EQ(session.TakeReconnects(), 0u);
  // A shard that is not at the worker's step (or the next) is refused with both steps named.
  const absl::Status ahead = session.Reconnect({0}, 5);
  EXPECT_EQ(ahead.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(ahead.message().find("the shard is at step 0, this worker at step 5"),
            absl::string_view::npos)
      << ahead;
  EXPECT_TRUE(session.Leave(absl::Seconds(5)).ok());
}

TEST(SessionTest, AnUnreachableShardFailsAfterTheConnectTimeoutNamingIt) {
  Job job = MakeJob({"127.0.0.1:1"}, 0);
  job.options.connect_timeout = absl::Milliseconds(300);
  Session session(job.options, *job.spec, job.join);
  ASSERT_TRUE(session.Open().ok());
  const absl::StatusOr<uint64_t> start = session.JoinAll(/*rejoin=*/false);
  ASSERT_FALSE(start.ok());
  EXPECT_EQ(start.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(start.status().message().find("shard 0 (127.0.0.1:1) Join: unreachable"),
            absl::string_view::npos)
      << start.status();
}

TEST(SessionTest, AMalformedAddressIsRefusedNamingTheField) {
  EXPECT_TRUE(CheckShardAddress("shard-0.ternps:7070", 0).ok());
  EXPECT_TRUE(CheckShardAddress("[::1]:7070", 0).ok());
  EXPECT_TRUE(CheckShardAddress("dns:///shard:7070", 0).ok());
  for (const std::string bad : {"shard", "shard:0", "shard:70000", "sh ard:7070", ":7070"}) {
    const absl::Status st = CheckShardAddress(bad, 3);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("shards[3]: '" + bad + "'"), absl::string_view::npos) << st;
  }
}

}  // namespace
}  // namespace ternps::worker
