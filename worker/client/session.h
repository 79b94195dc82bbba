// A worker's session with the shards of its job: the channels (TLS, the job token), Join with
// backoff while a shard is unreachable or its name does not resolve yet (logging what it waits
// for), the epoch each shard gave this worker, reconnection after a lost connection (resuming the
// session where the shard still has it), the Watch calls, and Leave. The step's calls go over its
// channels and carry its epochs and token.
#ifndef TERNPS_WORKER_CLIENT_SESSION_H_
#define TERNPS_WORKER_CLIENT_SESSION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/spec/job_spec.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "ternps/v1/ternps.grpc.pb.h"
#include "ternps/worker.h"
#include "worker/client/shard_watch.h"

namespace ternps::worker {

// OK if `address` (shards[index]) is well-formed: host:port with a port in 1..65535 and a host
// that is a DNS name or an IP address, or a gRPC target with a scheme ("dns:///...", "unix:...",
// "ipv4:...") left to gRPC. Checked before connecting so that a typo fails at once. Whether the
// name resolves is not checked here: on Kubernetes a shard's name appears only once its pod is
// scheduled, so Join waits for it (up to connect_timeout).
absl::Status CheckShardAddress(const std::string& address, size_t index);

// Thread safety: one thread joins, reconnects and leaves; epoch(), stub(), push(), NewContext()
// and ShardName() are safe from any thread beside that (epochs are atomic).
class Session {
 public:
  // `join`: the registration (shard_index is set per shard, the plan checksum from `spec`).
  Session(const WorkerOptions& options, const common::JobSpec& spec, ternps::v1::JoinRequest join);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Opens the channels (channels_per_shard per shard) and reads the token; no call yet.
  absl::Status Open();
  // Joins shard `s` (retrying while it cannot be reached, up to connect_timeout) and checks its
  // plan; sets its epoch and opens its Watch. With `resume`, asks the shard to resume this
  // worker's session with it (JoinRequest.resume_epoch: after a lost connection).
  absl::StatusOr<ternps::v1::JoinResponse> JoinShard(uint32_t s, bool rejoin, bool resume = false);
  // Joins every shard; the step to continue at (the largest start_step).
  absl::StatusOr<uint64_t> JoinAll(bool rejoin);
  // Joins `shards` again after their connections were lost during `step`, resuming the session
  // where the shard still has it (a connection reset) or rejoining a shard that restarted from its
  // state directory: FAILED_PRECONDITION unless each continues at `step` or the next.
  absl::Status Reconnect(const std::vector<uint32_t>& shards, uint64_t step);
  // Leaves every shard at once under one deadline, then closes the Watches.
  absl::Status Leave(absl::Duration timeout);

  // Reconnections since the last TakeReconnects (StepStats::reconnects).
  uint32_t TakeReconnects() { return std::exchange(reconnects_, 0); }
  uint64_t epoch(uint32_t s) const { return epochs_[s].load(); }
  ternps::v1::ParameterServer::Stub& stub(uint32_t s) const { return *stubs_[s]; }
  // The stub of connection `channel` of shard `s`, for PushPull.
  grpc::GenericStub& push(uint32_t s, int channel) const { return *connections_[s][channel].push; }
  // A call context with `deadline` and the job token.
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Time deadline) const;
  // "shard 1 (host:port)", for messages.
  std::string ShardName(uint32_t shard) const;

 private:
  // A progress line (options.log, or stderr).
  void Log(std::string_view line) const;
  // Waits until shard `s`'s host name resolves, logging after kFirstWaitLog and then every
  // kWaitLogInterval; UNAVAILABLE at `deadline`.
  absl::Status WaitForName(uint32_t s, absl::Time first, absl::Time deadline);
  // While Join waits for shard `s`: "waiting for <shard>: <why>; retrying for ..." once
  // `next_log` has come, which then moves kWaitLogInterval on.
  void LogWaiting(uint32_t s, absl::string_view why, absl::Time deadline,
                  absl::Time& next_log) const;
  static constexpr absl::Duration kFirstWaitLog = absl::Seconds(2);
  static constexpr absl::Duration kWaitLogInterval = absl::Seconds(5);

  // One TCP connection to a shard: its channel and the stub its PushPull calls go through.
  struct Connection {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<grpc::GenericStub> push;
  };

  const WorkerOptions& options_;
  const common::JobSpec& spec_;
  ternps::v1::JoinRequest join_;  // shard_index set per shard
  std::string authorization_;     // the token's metadata value; empty: none (set by Open)
  std::vector<std::unique_ptr<ternps::v1::ParameterServer::Stub>> stubs_;
  // Per shard, channels_per_shard of them; [0] is stubs_'s channel.
  std::vector<std::vector<Connection>> connections_;
  // Per shard, the epoch its calls carry: written by a (re)Join on the driving thread while pool
  // threads build other shards' requests, so atomic.
  std::unique_ptr<std::atomic<uint64_t>[]> epochs_;
  // A Watch per shard while in the job (destroyed before the stubs it uses).
  std::unique_ptr<ShardWatches> watches_;
  uint32_t reconnects_ = 0;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_SESSION_H_
