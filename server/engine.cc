#include "server/engine.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/rpc/job_token.h"

namespace ternps::server {

namespace v1 = ::ternps::v1;

std::string Engine::Lost() const {
  return config_.state_dir.empty()
             ? "the job ended or expired, or this shard restarted: without --state_dir a shard "
               "keeps no state across a restart, so the job is lost here"
             : "the job ended or expired, or was not restored from --state_dir (jobs with "
               "snapshot_interval 0 are not written there)";
}

Engine::Engine(const ShardConfig& config) : config_(config) {
  if (!config_.state_dir.empty()) RestoreJobs();
  if (config_.run_reaper) reaper_ = std::thread([this] { ReaperLoop(); });
}

Engine::~Engine() {
  Shutdown();
  if (reaper_.joinable()) reaper_.join();
}

absl::StatusOr<std::unique_ptr<Job>> Engine::RestoreJob(StoredJob stored) const {
  const v1::JoinRequest& join = stored.registration;
  if (join.shard_index() != config_.shard_index || join.shard_count() != config_.shard_count) {
    return absl::FailedPreconditionError(
        absl::StrCat("was written by shard ", join.shard_index(), " of ", join.shard_count(),
                     ", this is shard ", config_.shard_index, " of ", config_.shard_count));
  }
  stored.store->set_sync_averages(config_.state_sync);
  absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(join, LimitsOf(config_));
  if (!spec.ok()) return spec.status();
  return Job::Restore(*std::move(spec), config_, std::move(stored.store));
}

void Engine::RestoreJobs() {
  for (StoredJob& stored :
       LoadJobs(ShardStateDir(config_.state_dir, config_.shard_index), &restored_.problems)) {
    const std::string dir = stored.store->dir();
    const std::string id = stored.registration.job_id();
    absl::StatusOr<std::unique_ptr<Job>> job = RestoreJob(std::move(stored));
    if (!job.ok()) {
      restored_.problems.push_back(
          absl::StrCat(dir, ": job '", id, "' not restored: ", job.status().message()));
      continue;
    }
    restored_.jobs.push_back(id);
    absl::MutexLock lock(&mu_);
    jobs_[id] = *std::move(job);
  }
}

absl::StatusOr<std::shared_ptr<Job>> Engine::Reload(const std::shared_ptr<Job>& stopped) {
  absl::MutexLock reload_lock(&reload_mu_);  // one at a time; not mu_: this reads and writes files
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("the shard is shutting down");
    auto it = jobs_.find(stopped->id());
    if (it == jobs_.end()) {
      return absl::UnavailableError(absl::StrCat("job '", stopped->id(), "' ended on shard ",
                                                 config_.shard_index,
                                                 " while it was stopped; join again"));
    }
    if (it->second != stopped) return it->second;  // reloaded by another Join meanwhile
  }
  stopped->Stop();  // the segments cut back to what is durable, before they are read
  absl::StatusOr<StoredJob> stored = LoadJob(stopped->StateDir());
  absl::StatusOr<std::unique_ptr<Job>> job =
      stored.ok() ? RestoreJob(*std::move(stored)) : stored.status();
  if (!job.ok()) {
    return absl::UnavailableError(absl::StrCat(stopped->StoppedStatus().message(),
                                               ". Reloading it failed: ", job.status().message()));
  }
  std::fprintf(stderr, "ternps-server: job '%s' reloaded from %s after its files failed\n",
               stopped->id().c_str(), stopped->StateDir().c_str());
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::UnavailableError("the shard is shutting down");
  std::shared_ptr<Job> reloaded = *std::move(job);
  jobs_[stopped->id()] = reloaded;
  return reloaded;
}

absl::StatusOr<std::shared_ptr<Job>> Engine::FindJob(absl::string_view job_id) const {
  absl::MutexLock lock(&mu_);
  if (shutdown_) return absl::UnavailableError("the shard is shutting down");
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    if (absl::Status st = common::ValidateJobId(job_id); !st.ok()) return st;
    return absl::NotFoundError(absl::StrCat("job_id: no job '", job_id, "' on shard ",
                                            config_.shard_index, " (Join first; or ", Lost(), ")"));
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<Job>> Engine::AuthorizedJob(absl::string_view job_id,
                                                           absl::string_view token) const {
  absl::StatusOr<std::shared_ptr<Job>> job = FindJob(job_id);
  if (!job.ok()) return job;
  if (absl::Status st =
          common::CheckJobToken((*job)->token_digest(), common::JobTokenDigest(token), job_id);
      !st.ok()) {
    return st;
  }
  return job;
}

absl::StatusOr<ternps::v1::JoinResponse> Engine::Join(const ternps::v1::JoinRequest& request,
                                                      absl::string_view token) {
  if (request.shard_index() != config_.shard_index ||
      request.shard_count() != config_.shard_count) {
    return absl::FailedPreconditionError(
        absl::StrCat("shard_index/shard_count: the request is for shard ", request.shard_index(),
                     " of ", request.shard_count(), ", this is shard ", config_.shard_index, " of ",
                     config_.shard_count, " (check the order of the shard addresses)"));
  }
  if (request.worker_rank() >= request.world_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker_rank: ", request.worker_rank(), " is not below world_size ", request.world_size()));
  }
  const std::string digest = common::JobTokenDigest(token);
  std::shared_ptr<Job> job;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return absl::UnavailableError("the shard is shutting down");
    auto it = jobs_.find(request.job_id());
    if (it != jobs_.end()) job = it->second;
  }
  // The token is checked before anything of the request is compared with the job's (whose
  // messages would tell a stranger about the job).
  if (job != nullptr) {
    if (absl::Status st = common::CheckJobToken(job->token_digest(), digest, request.job_id());
        !st.ok()) {
      return st;
    }
    if (job->stopped()) {
      absl::StatusOr<std::shared_ptr<Job>> reloaded = Reload(job);
      if (!reloaded.ok()) return reloaded.status();
      job = *std::move(reloaded);
    }
  } else if (config_.require_job_token && token.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat(common::kJobTokenMetadataKey, ": shard ", config_.shard_index,
                     " requires a job token (--require_job_token) and the Join has none "
                     "(WorkerOptions::token_file, ternps-worker --token_file)"));
  }
  if (job == nullptr) {
    // An ended job: tell a late worker why, instead of starting the job again with it alone.
    std::optional<EndedJob> ended;
    {
      absl::MutexLock lock(&mu_);
      auto it = ended_.find(request.job_id());
      if (it != ended_.end() && config_.clock->Now() - it->second.at <= config_.ended_job_memory) {
        ended = it->second;
      }
    }
    if (ended.has_value()) {
      if (absl::Status st = common::CheckJobToken(ended->token_digest, digest, request.job_id());
          !st.ok()) {
        return st;
      }
      const std::string why = absl::StrCat(
          "job '", request.job_id(), "' ended on shard ", config_.shard_index, " ",
          absl::FormatDuration(absl::Trunc(config_.clock->Now() - ended->at, absl::Seconds(1))),
          " ago: ", ended->reason);
      if (request.rejoin()) return absl::NotFoundError(absl::StrCat("rejoin: ", why));
      if (!request.restart_ended_job()) {
        return absl::FailedPreconditionError(absl::StrCat(
            "job_id: ", why,
            ". A worker restarted after its peers finished cannot start it again alone; start a "
            "new run with a new job_id, or set restart_ended_job (ternps-worker "
            "--restart_ended_job) to run this id again"));
      }
    }
  }
  if (job == nullptr && request.rejoin()) {
    if (absl::Status st = common::ValidateJobId(request.job_id()); !st.ok()) return st;
    return absl::NotFoundError(absl::StrCat("rejoin: job '", request.job_id(), "' is not on shard ",
                                            config_.shard_index, ": ", Lost()));
  }
  // Resolved outside the lock (the plan is O(partitions)).
  absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(request, LimitsOf(config_));
  if (!spec.ok()) return spec.status();
  if (job == nullptr) {
    absl::StatusOr<std::shared_ptr<Job>> created = CreateJob(request, *spec, digest);
    if (!created.ok()) return created.status();
    job = *std::move(created);
  }
  return job->Join(request, *spec);
}

absl::StatusOr<std::shared_ptr<Job>> Engine::CreateJob(const ternps::v1::JoinRequest& request,
                                                       const common::JobSpec& spec,
                                                       const std::string& digest) {
  const std::string& id = request.job_id();
  {
    // First one in wins; later Joins are compared with the winner's spec. While one creates the
    // job's files (or an ended run of the id deletes them), the others wait for it: no second
    // creation can replace the winner's files, and the files are written outside the lock.
    absl::MutexLock lock(&mu_);
    auto idle = [this, &id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !busy_.contains(id); };
    mu_.Await(absl::Condition(&idle));
    if (shutdown_) return absl::UnavailableError("the shard is shutting down");
    auto it = jobs_.find(id);
    if (it != jobs_.end()) {
      // Created by another Join since the caller looked.
      if (absl::Status st = common::CheckJobToken(it->second->token_digest(), digest, id);
          !st.ok()) {
        return st;
      }
      return it->second;
    }
    if (jobs_.size() >= config_.max_jobs) {
      return absl::ResourceExhaustedError(
          absl::StrCat("job_id: shard ", config_.shard_index, " already serves ", jobs_.size(),
                       " jobs (--max_jobs); '", id, "' is refused"));
    }
    busy_.insert(id);
  }
  absl::StatusOr<std::unique_ptr<Job>> created = [&]() -> absl::StatusOr<std::unique_ptr<Job>> {
    std::unique_ptr<JobStore> store;
    if (!config_.state_dir.empty() && spec.recovery.snapshot_interval > 0) {
      absl::StatusOr<std::unique_ptr<JobStore>> made =
          JobStore::Create(ShardStateDir(config_.state_dir, config_.shard_index), request, digest);
      if (!made.ok()) return made.status();
      store = *std::move(made);
      store->set_sync_averages(config_.state_sync);
    }
    return Job::Create(spec, config_, digest, std::move(store));
  }();
  absl::MutexLock lock(&mu_);
  busy_.erase(id);
  if (!created.ok()) return created.status();
  std::shared_ptr<Job> job = *std::move(created);
  if (shutdown_) return absl::UnavailableError("the shard is shutting down");
  jobs_.emplace(id, job);
  ended_.erase(id);  // a new run of an ended id (restart_ended_job)
  return job;
}

void Engine::ShareScalers(const ternps::v1::ShareScalersRequest& request,
                          ternps::v1::ShareScalersResponse* response, DoneCallback done,
                          absl::string_view token) {
  absl::StatusOr<std::shared_ptr<Job>> job = AuthorizedJob(request.job_id(), token);
  if (!job.ok()) return done(job.status());
  (*job)->ShareScalers(request, response, std::move(done));
}

void Engine::PushPull(const common::PushPullRequestView& request, PushPullAnswer* answer,
                      DoneCallback done, absl::string_view token) {
  absl::StatusOr<std::shared_ptr<Job>> job = AuthorizedJob(request.job_id, token);
  if (!job.ok()) return done(job.status());
  (*job)->PushPull(request, answer, std::move(done));
}

void Engine::PushPull(const ternps::v1::PushPullRequest& request,
                      ternps::v1::PushPullResponse* response, DoneCallback done,
                      absl::string_view token) {
  auto answer = std::make_shared<PushPullAnswer>();
  PushPull(
      ViewOf(request), answer.get(),
      [answer, response, done = std::move(done)](absl::Status st) {
        if (st.ok()) ToProto(*answer, response);
        done(std::move(st));
      },
      token);
}

void Engine::Watch(const ternps::v1::WatchRequest& request, std::shared_ptr<PendingCallBase> call,
                   absl::string_view token) {
  absl::StatusOr<std::shared_ptr<Job>> job = AuthorizedJob(request.job_id(), token);
  absl::Status st = job.status();
  if (st.ok()) st = (*job)->Watch(request, call);
  if (!st.ok()) {
    call->Fail(std::move(st));
    call->Finish();
  }
}

void Engine::Unwatch(absl::string_view job_id, uint32_t rank, const PendingCallBase* call) {
  absl::StatusOr<std::shared_ptr<Job>> job = FindJob(job_id);
  if (job.ok()) (*job)->Unwatch(rank, call);
}

absl::StatusOr<ternps::v1::LeaveResponse> Engine::Leave(const ternps::v1::LeaveRequest& request,
                                                        absl::string_view token) {
  absl::StatusOr<std::shared_ptr<Job>> job = AuthorizedJob(request.job_id(), token);
  if (!job.ok()) return job.status();
  absl::StatusOr<ternps::v1::LeaveResponse> response = (*job)->Leave(request);
  if (response.ok() && !(*job)->AnyLive()) {
    // Everyone left: the job is over.
    End({{*job, absl::StrCat("every worker left (at step ", (*job)->NewestStep(), ")")}});
  }
  return response;
}

absl::StatusOr<ternps::v1::PutSnapshotResponse> Engine::PutSnapshot(
    ternps::v1::PutSnapshotRequest& request, absl::string_view token) {
  absl::StatusOr<std::shared_ptr<Job>> job = AuthorizedJob(request.job_id(), token);
  if (!job.ok()) return job.status();
  return (*job)->PutSnapshot(request);
}

absl::StatusOr<ternps::v1::GetRecoveryResponse> Engine::GetRecovery(
    const ternps::v1::GetRecoveryRequest& request, absl::string_view token) {
  absl::StatusOr<std::shared_ptr<Job>> job = AuthorizedJob(request.job_id(), token);
  if (!job.ok()) return job.status();
  return (*job)->GetRecovery(request);
}

absl::StatusOr<ternps::v1::GetStatusResponse> Engine::GetStatus(
    const ternps::v1::GetStatusRequest& request, absl::string_view token) const {
  std::vector<std::shared_ptr<Job>> jobs;
  if (!request.job_id().empty()) {
    absl::StatusOr<std::shared_ptr<Job>> job = AuthorizedJob(request.job_id(), token);
    if (!job.ok()) return job.status();
    jobs.push_back(*std::move(job));
  } else {
    const std::string digest = common::JobTokenDigest(token);
    absl::MutexLock lock(&mu_);
    for (const auto& [id, job] : jobs_) {
      if (common::CheckJobToken(job->token_digest(), digest, id).ok()) jobs.push_back(job);
    }
  }
  std::sort(jobs.begin(), jobs.end(),
            [](const auto& a, const auto& b) { return a->id() < b->id(); });
  ternps::v1::GetStatusResponse response;
  response.set_shard_index(config_.shard_index);
  response.set_shard_count(config_.shard_count);
  for (const auto& job : jobs) job->FillStatus(response.add_jobs());
  return response;
}

int Engine::CheckTimeouts() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, job] : jobs_) jobs.push_back(job);
  }
  const absl::Time now = config_.clock->Now();
  int workers = 0;
  int dropped = 0;
  uint64_t step = 0;
  std::vector<std::pair<std::shared_ptr<Job>, std::string>> ended;
  for (const auto& job : jobs) {
    if (job->stopped()) {
      // Its files failed: it waits for a Join to reload it. Not dropped, expired or ended (that
      // would delete its state directory).
      job->Stop();
      continue;
    }
    if (!job->started()) {
      // Waiting for every rank's first Join: only the start timeout applies.
      if (absl::Status st = job->CheckStart(now, config_.start_timeout); !st.ok()) {
        job->FailAll(st);
        ended.emplace_back(job, std::string(st.message()));
      }
      workers += job->LiveWorkers();
      continue;
    }
    dropped += job->CheckTimeouts(now);
    if (now - job->LastCall() > config_.job_idle_timeout) {
      // No worker has called for the idle timeout: they are gone (killed between steps, when no
      // step timeout runs). Whatever still waits is told so.
      const std::string why =
          absl::StrCat("expired after ", absl::FormatDuration(config_.job_idle_timeout),
                       " without calls (--job_idle_timeout)");
      job->FailAll(absl::AbortedError(absl::StrCat("job_id: job '", job->id(), "' ", why)));
      ended.emplace_back(job, why);
      continue;
    }
    if (!job->AnyLive()) {
      ended.emplace_back(job, absl::StrCat("no worker was left in it (at step ", job->NewestStep(),
                                           ": every rank left or was dropped)"));
    }
    workers += job->LiveWorkers();
    step = std::max(step, job->NewestStep());
  }
  // It is over: its memory is free and its id remembered for a while.
  if (!ended.empty()) End(std::move(ended));
  if (config_.observer != nullptr) config_.observer->ShardState(workers, step);
  return dropped;
}

void Engine::End(std::vector<std::pair<std::shared_ptr<Job>, std::string>> ended) {
  std::vector<std::shared_ptr<Job>> removed;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [job, why] : ended) {
      if (EndLocked(job, std::move(why)) && !job->StateDir().empty()) {
        busy_.insert(job->id());  // a new run of the id waits until the files are gone
        removed.push_back(job);
      }
    }
  }
  for (const auto& job : removed) job->RemoveState();  // outside the lock: disk I/O
  if (removed.empty()) return;
  absl::MutexLock lock(&mu_);
  for (const auto& job : removed) busy_.erase(job->id());
}

bool Engine::EndLocked(const std::shared_ptr<Job>& job, std::string reason) {
  auto it = jobs_.find(job->id());
  if (it == jobs_.end() || it->second != job) return false;
  jobs_.erase(it);
  if (config_.ended_job_memory <= absl::ZeroDuration()) return true;
  const absl::Time now = config_.clock->Now();
  // Forget what is too old, and the oldest beyond the bound.
  absl::erase_if(ended_,
                 [&](const auto& e) { return now - e.second.at > config_.ended_job_memory; });
  if (ended_.size() >= kMaxEndedJobs) {
    auto oldest = ended_.begin();
    for (auto e = ended_.begin(); e != ended_.end(); ++e) {
      if (e->second.at < oldest->second.at) oldest = e;
    }
    ended_.erase(oldest);
  }
  ended_[job->id()] = {now, job->token_digest(), std::move(reason)};
  return true;
}

void Engine::ReaperLoop() {
  absl::Duration tick =
      std::clamp(config_.step_timeout / 32, absl::Milliseconds(10), absl::Seconds(1));
  // A closed connection is acted on within a quarter of the grace after it passed.
  if (config_.disconnect_grace > absl::ZeroDuration()) {
    tick = std::max(absl::Milliseconds(10), std::min(tick, config_.disconnect_grace / 4));
  }
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return shutdown_; };
  // Waits in real time; what expired is judged by config_.clock.
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      // The reaper's own wait: wakes early only for shutdown.
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), tick)) return;
    }
    CheckTimeouts();
  }
}

void Engine::Shutdown() {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_) return;
    shutdown_ = true;
    for (const auto& [id, job] : jobs_) jobs.push_back(job);
  }
  for (const auto& job : jobs) {
    job->FailAll(absl::UnavailableError("the shard is shutting down"));
  }
}

}  // namespace ternps::server
