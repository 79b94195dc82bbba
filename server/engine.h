// The shard's engine: its jobs, and the reaper that enforces the step timeout. The gRPC service
// is a thin layer over this class, which speaks protobuf messages and absl::Status.
//
//   Engine engine(ShardConfig{.shard_index = 0, .shard_count = 2});
//   absl::StatusOr<JoinResponse> joined = engine.Join(request);
//   engine.PushPull(request, &response, [](absl::Status st) { ... });  // answered when complete
//   engine.Shutdown();  // fails whatever still waits
//
// Every method takes the job token the call carried (common/rpc/job_token.h; empty: none): the
// first Join of a job fixes the job's token, and every later call of the job must carry the same
// one (UNAUTHENTICATED without, PERMISSION_DENIED with another) before anything else is looked at.
//
// Thread-safe. Every asynchronous call's `done` runs exactly once, on some thread, without engine
// locks held. Lock order: engine, then a job's partitions (ascending id), then its membership.
#ifndef TERNPS_SERVER_ENGINE_H_
#define TERNPS_SERVER_ENGINE_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "server/job.h"
#include "server/pending_call.h"
#include "server/shard_config.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::server {

class Engine {
 public:
  // With config.state_dir, restores the jobs written there (see restored()).
  explicit Engine(const ShardConfig& config);
  ~Engine();  // Shutdown()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ShardConfig& config() const { return config_; }
  // What the constructor restored from config().state_dir: job ids, and one line per job
  // directory it could not use (skipped; its files are left in place until that id starts anew).
  struct Restored {
    std::vector<std::string> jobs;
    std::vector<std::string> problems;
  };
  const Restored& restored() const { return restored_; }

  absl::StatusOr<ternps::v1::JoinResponse> Join(const ternps::v1::JoinRequest& request,
                                                absl::string_view token = {});
  void ShareScalers(const ternps::v1::ShareScalersRequest& request,
                    ternps::v1::ShareScalersResponse* response, DoneCallback done,
                    absl::string_view token = {});
  // The data path: `answer` is filled before `done` runs; the request's bytes (the view's spans)
  // are not used after this returns.
  void PushPull(const common::PushPullRequestView& request, PushPullAnswer* answer,
                DoneCallback done, absl::string_view token = {});
  // The same with the generated classes (tests, in-process callers); copies the averages.
  void PushPull(const ternps::v1::PushPullRequest& request, ternps::v1::PushPullResponse* response,
                DoneCallback done, absl::string_view token = {});
  // A worker's Watch (see the proto; Job::Watch): `call` is answered later, or now with an error.
  void Watch(const ternps::v1::WatchRequest& request, std::shared_ptr<PendingCallBase> call,
             absl::string_view token = {});
  // The Watch `call` of `rank` in job `job_id` was cancelled (its connection closed).
  void Unwatch(absl::string_view job_id, uint32_t rank, const PendingCallBase* call);
  absl::StatusOr<ternps::v1::LeaveResponse> Leave(const ternps::v1::LeaveRequest& request,
                                                  absl::string_view token = {});
  absl::StatusOr<ternps::v1::PutSnapshotResponse> PutSnapshot(
      ternps::v1::PutSnapshotRequest& request, absl::string_view token = {});
  absl::StatusOr<ternps::v1::GetRecoveryResponse> GetRecovery(
      const ternps::v1::GetRecoveryRequest& request, absl::string_view token = {});
  // With a job_id: that job (its token required). Without: the jobs the call's token opens (with
  // no token, the jobs that have none).
  absl::StatusOr<ternps::v1::GetStatusResponse> GetStatus(
      const ternps::v1::GetStatusRequest& request, absl::string_view token = {}) const;

  // The job `job_id` (NOT_FOUND naming it otherwise); for inspection and tests.
  absl::StatusOr<std::shared_ptr<Job>> FindJob(absl::string_view job_id) const;

  // Runs the timeout check now, at config().clock's time (the reaper does it every
  // step_timeout / 32 (at most 1 s) unless config().run_reaper is false). Returns how many ranks it
  // dropped.
  int CheckTimeouts();
  // Fails all waiting calls with UNAVAILABLE and refuses new ones; idempotent.
  void Shutdown();

 private:
  // FindJob, then the token check.
  absl::StatusOr<std::shared_ptr<Job>> AuthorizedJob(absl::string_view job_id,
                                                     absl::string_view token) const;
  void ReaperLoop();

  void RestoreJobs();
  // A job read back from its state directory (at start-up, or by Reload), checked against this
  // shard's index and limits.
  absl::StatusOr<std::unique_ptr<Job>> RestoreJob(StoredJob stored) const;
  // A durable job whose files failed (Job::stopped), read back from its state directory in its
  // place (as a restarted shard would): UNAVAILABLE naming both failures if that fails too.
  absl::StatusOr<std::shared_ptr<Job>> Reload(const std::shared_ptr<Job>& stopped)
      ABSL_LOCKS_EXCLUDED(mu_, reload_mu_);
  // Why a job may be missing, for NOT_FOUND messages.
  std::string Lost() const;

  const ShardConfig config_;
  Restored restored_;
  absl::Mutex reload_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // held by Reload, across its file I/O
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  // Jobs that ended, remembered for config_.ended_job_memory (at most kMaxEndedJobs, the oldest
  // forgotten first), so that a late Join is told instead of starting the job afresh.
  struct EndedJob {
    absl::Time at;
    std::string token_digest;
    std::string reason;
  };
  static constexpr size_t kMaxEndedJobs = 4096;
  absl::flat_hash_map<std::string, EndedJob> ended_ ABSL_GUARDED_BY(mu_);
  // Removes each job (if it is still the one under its id) and remembers why it ended, then
  // deletes its state files outside the lock (a new run of the id waits for that: busy_).
  void End(std::vector<std::pair<std::shared_ptr<Job>, std::string>> ended)
      ABSL_LOCKS_EXCLUDED(mu_);
  // End's part under the lock: false if `job` was no longer there.
  bool EndLocked(const std::shared_ptr<Job>& job, std::string reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The job of a first Join (or the one another Join created meanwhile); its files are created
  // outside the lock.
  absl::StatusOr<std::shared_ptr<Job>> CreateJob(const ternps::v1::JoinRequest& request,
                                                 const common::JobSpec& spec,
                                                 const std::string& digest)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Job ids whose state directory is being created or deleted outside the lock.
  absl::flat_hash_set<std::string> busy_ ABSL_GUARDED_BY(mu_);
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reaper_;
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_ENGINE_H_
