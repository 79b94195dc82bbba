#include "server/job.h"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace ternps::server {
namespace {

namespace v1 = ::ternps::v1;

// Holds the locks of a set of aggregators, taken in ascending partition id order: the one order
// every multi-partition lock in the shard uses, so two requests cannot deadlock. The analysis
// cannot name a run-time set of mutexes, so this class declares none; code under it calls
// PartitionAggregator::AssertHeld() (checked at run time) before touching an aggregator.
class ABSL_SCOPED_LOCKABLE PartitionLocks {
 public:
  explicit PartitionLocks(std::vector<PartitionAggregator*> aggregators)
      ABSL_NO_THREAD_SAFETY_ANALYSIS : aggregators_(std::move(aggregators)) {
    std::sort(aggregators_.begin(), aggregators_.end(),
              [](const PartitionAggregator* a, const PartitionAggregator* b) {
                return a->config().id < b->config().id;
              });
    for (PartitionAggregator* a : aggregators_) a->mu().Lock();
  }
  PartitionLocks(const PartitionLocks&) = delete;
  PartitionLocks& operator=(const PartitionLocks&) = delete;
  ~PartitionLocks() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (auto it = aggregators_.rbegin(); it != aggregators_.rend(); ++it) (*it)->mu().Unlock();
  }

 private:
  std::vector<PartitionAggregator*> aggregators_;
};

class NullJobObserver final : public JobObserver {
 public:
  void PushAccepted(uint64_t, uint64_t, uint64_t) override {}
  void PartitionCompleted(const CompletionStats&) override {}
  void WorkersDropped(int) override {}
};

}  // namespace

common::SpecLimits LimitsOf(const ShardConfig& shard) {
  return {.shard_count = shard.shard_count,
          .max_world_size = shard.max_world_size,
          .max_partition_elements = shard.max_partition_elements};
}

absl::StatusOr<std::unique_ptr<Job>> Job::Create(common::JobSpec spec, const ShardConfig& shard,
                                                 std::string token_digest,
                                                 std::unique_ptr<JobStore> store) {
  if (spec.plan.ShardLoad(shard.shard_index) > shard.max_shard_elements) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tensors: this shard would own ", spec.plan.ShardLoad(shard.shard_index),
        " elements, more than its limit --max_shard_elements=", shard.max_shard_elements));
  }
  if (const uint64_t interval = spec.recovery.snapshot_interval; interval > 0) {
    const RecoveryLog::Footprint f = RecoveryLog::FootprintOf(spec, shard.shard_index);
    if (f.Bytes(interval) > shard.max_recovery_bytes) {
      const uint64_t fits = f.LargestInterval(shard.max_recovery_bytes);
      return absl::ResourceExhaustedError(absl::StrCat(
          "snapshot_interval: ", interval, " steps of recovery state would hold up to ",
          f.Bytes(interval) >> 20, " MiB on shard ", shard.shard_index,
          " (a snapshot of its partitions and snapshot_interval + 2 steps of their averages), "
          "more than its limit --max_recovery_bytes=",
          shard.max_recovery_bytes >> 20, " MiB; ",
          fits > 0 ? absl::StrCat("a snapshot_interval of at most ", fits, " fits")
                   : std::string("no snapshot_interval fits (more shards, or a larger limit)")));
    }
  }
  return std::unique_ptr<Job>(
      new Job(std::move(spec), shard, std::move(token_digest), std::move(store)));
}

absl::StatusOr<std::unique_ptr<Job>> Job::Restore(common::JobSpec spec, const ShardConfig& shard,
                                                  std::unique_ptr<JobStore> store) {
  if (spec.recovery.snapshot_interval == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(store->dir(), ": job '", spec.job_id, "' keeps no recovery state"));
  }
  std::string digest = store->token_digest();
  absl::StatusOr<std::unique_ptr<Job>> job =
      Create(std::move(spec), shard, std::move(digest), std::move(store));
  if (!job.ok()) return job.status();
  for (const auto& a : (*job)->aggregators_) {
    const PartitionConfig& c = a->config();
    absl::StatusOr<LoadedPartition> loaded = c.store->Load({.id = c.id,
                                                            .elements = c.elements,
                                                            .downlink = c.route.downlink,
                                                            .int_sum_radix = c.int_sum_radix,
                                                            .world_size = (*job)->spec_.world_size,
                                                            .state_bytes = c.state_bytes});
    if (!loaded.ok()) return loaded.status();
    absl::MutexLock lock(&a->mu());
    a->Restore(*std::move(loaded));
  }
  (*job)->membership_.MarkStarted();  // it ran before: its ranks come back with rejoin
  return job;
}

Job::Job(common::JobSpec spec, const ShardConfig& shard, std::string token_digest,
         std::unique_ptr<JobStore> store)
    : spec_(std::move(spec)),
      token_digest_(std::move(token_digest)),
      shard_(shard),
      store_(std::move(store)),
      // Epochs of a restored job start above every one its earlier incarnations gave out.
      membership_(spec_.world_size, (store_ == nullptr ? 0 : store_->incarnation() << 32) | 1),
      owned_index_(spec_.plan.partitions().size(), -1),
      created_(shard.clock->Now()),
      active_ns_(new std::atomic<int64_t>[spec_.world_size]),
      watches_(spec_.world_size),
      disconnected_ns_(new std::atomic<int64_t>[spec_.world_size]) {
  for (uint32_t r = 0; r < spec_.world_size; ++r) {
    NoteActive(r);
    disconnected_ns_[r].store(kConnected, std::memory_order_relaxed);
  }
  for (const uint32_t p : spec_.plan.PartitionsOfShard(shard.shard_index)) {
    PartitionConfig config;
    config.id = p;
    config.elements = spec_.plan.partition(p).elements;
    config.route = spec_.route(p);
    config.seed = spec_.codec.seed;
    config.int_sum_radix = spec_.codec.int_sum_radix;
    config.step_timeout = shard.step_timeout;
    config.clock = shard.clock;
    config.keep_recovery = spec_.recovery.snapshot_interval > 0;
    config.state_bytes = size_t{4} * spec_.recovery.state_slots * config.elements;
    if (store_ != nullptr && config.keep_recovery) config.store = store_->Partition(p);
    owned_index_[p] = static_cast<int32_t>(aggregators_.size());
    aggregators_.push_back(std::make_unique<PartitionAggregator>(config));
  }
  Touch();
  if (shard.observer != nullptr) observer_ = shard.observer->NewJob(aggregators_.size());
  if (observer_ == nullptr) observer_ = std::make_unique<NullJobObserver>();
}

Job::~Job() {
  FailAll(absl::AbortedError(absl::StrCat(
      "job_id: job '", spec_.job_id,
      "' was removed from this shard (it ended, expired, or the shard is shutting down) before "
      "this call was answered")));
}

PartitionAggregator* Job::Owned(uint32_t id) const {
  if (id >= owned_index_.size() || owned_index_[id] < 0) return nullptr;
  return aggregators_[owned_index_[id]].get();
}

absl::Status Job::StoppedStatus() const {
  return absl::UnavailableError(absl::StrCat(
      "job '", spec_.job_id, "' stopped on shard ", shard_.shard_index,
      ": its state directory failed (", store_->fault().status().message(),
      "). Nothing that was not on disk was answered; the shard reloads the job from its state "
      "directory when a worker joins again (workers do so by themselves, retrying until "
      "--connect_timeout), so fix the disk"));
}

void Job::Stop() {
  if (!stopped() || stop_done_.exchange(true)) return;
  store_->CutToDurable();
  const absl::Status st = StoppedStatus();
  std::fprintf(stderr, "ternps-server: %s\n", std::string(st.message()).c_str());
  FailAll(st);
}

absl::StatusOr<v1::JoinResponse> Job::Join(const v1::JoinRequest& request,
                                           const common::JobSpec& spec) {
  Touch();
  if (stopped()) return StoppedStatus();
  if (absl::Status st = common::CompareSpecs(spec_, spec); !st.ok()) return st;
  NoteActive(request.worker_rank());  // below world_size (the engine checked, the specs agree)
  if (request.plan_checksum() != 0 && request.plan_checksum() != spec_.plan.Checksum()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "plan_checksum: ", absl::Hex(request.plan_checksum()), " differs from the shard's ",
        absl::Hex(spec_.plan.Checksum()), " for the same registration (different plan version?)"));
  }
  // A readmitted worker is awaited from the first step that no owned partition has moved past or
  // settled the shared scaler of without it. The partitions stay locked until the membership
  // says so, so none can settle that step in between.
  std::vector<PartitionAggregator*> all;
  for (const auto& a : aggregators_) all.push_back(a.get());
  Membership::Admission admission;
  {
    PartitionLocks locks(all);
    uint64_t resume = 0;
    uint64_t first = all.empty() ? 0 : UINT64_MAX;
    for (PartitionAggregator* a : all) {
      a->AssertHeld();
      resume = std::max(resume, a->FirstOpenStep());
      first = std::min(first, a->base_step());
    }
    const bool was_started = membership_.View()->started;
    admission = membership_.Join(request.worker_rank(), first, resume, request.resume_epoch());
    // A Join is a live connection: an earlier process of this rank whose Watch closed (it died)
    // does not make the new one look disconnected before its own Watch arrives.
    disconnected_ns_[request.worker_rank()].store(kConnected, std::memory_order_relaxed);
    if (!was_started && membership_.View()->started) {
      // The last rank joined: the steps that waited for it time out from now.
      const absl::Time now = shard_.clock->Now();
      for (PartitionAggregator* a : all) {
        a->AssertHeld();
        a->RestartDeadlines(now);
      }
    }
  }
  // A readmission can release a waiting step: a restarted worker whose old process's offer
  // settled step s's scalers is awaited from s + 1, so step s no longer waits for its push. Nothing
  // else would complete that step (the other ranks have all pushed it already).
  if (!admission.resumed) RecheckAll();
  v1::JoinResponse response;
  response.set_epoch(admission.epoch);
  response.set_start_step(admission.start_step);
  response.set_plan_checksum(spec_.plan.Checksum());
  for (const uint32_t p : spec_.plan.PartitionsOfShard(shard_.shard_index)) {
    response.add_owned_partitions(p);
  }
  for (const uint32_t r : membership_.View()->LiveRanks()) response.add_live_workers(r);
  v1::JobSettings* settings = response.mutable_settings();
  *settings->mutable_codec() = common::CodecToProto(spec_.codec);
  settings->set_snapshot_interval(spec_.recovery.snapshot_interval);
  settings->set_state_slots(spec_.recovery.state_slots);
  return response;
}

// ShareScalers' part of Apply: offers scalers, answered with the shared maximum.
struct Job::OfferOp {
  using Response = v1::ShareScalersResponse;
  const v1::ShareScalersRequest* request;
  Response* response;

  absl::Status Check(PartitionAggregator& a, const ValidatedRequest& v, int i) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(a.mu()) {
    return a.CheckOffer(v.rank, v.step, i, v.may_repeat);
  }
  void Prepare(const ValidatedRequest& v) const {
    response->set_step(v.step);
    for (const uint32_t p : v.partitions) {
      response->add_partition_ids(p);
      response->add_shared_scalers(0.0f);
    }
  }
  void Accepted(const ValidatedRequest&, Job&) const {}
  void Record(PartitionAggregator& a, const ValidatedRequest& v, int i,
              std::shared_ptr<PendingCall<Response>> call, const MembershipView& view,
              Finisher& finisher, std::vector<CompletionStats>*) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(a.mu()) {
    a.Offer(v.rank, v.step, request->scalers(i), std::move(call), i, view, finisher);
  }
};

// PushPull's part of Apply: sums the payloads, answered with the averages.
struct Job::PushOp {
  using Response = PushPullAnswer;
  const common::PushPullRequestView* request;
  Response* response;

  absl::Status Check(PartitionAggregator& a, const ValidatedRequest& v, int i) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(a.mu()) {
    return a.CheckPush(v.rank, v.step, request->partitions[i], i, v.may_repeat);
  }
  void Prepare(const ValidatedRequest& v) const {
    response->step = v.step;
    response->averages.assign(v.partitions.size(), AnsweredAverage{});
  }
  void Accepted(const ValidatedRequest& v, Job& job) const {
    job.received_bytes_.fetch_add(v.wire_bytes, std::memory_order_relaxed);
    job.observer_->PushAccepted(v.step, v.wire_bytes, v.dense_bytes);
  }
  void Record(PartitionAggregator& a, const ValidatedRequest& v, int i,
              std::shared_ptr<PendingCall<Response>> call, const MembershipView& view,
              Finisher& finisher, std::vector<CompletionStats>* completed) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(a.mu()) {
    a.Push(v.rank, v.step, request->partitions[i], std::move(call), i, view, finisher, completed);
  }
};

template <typename Op>
void Job::Apply(const ValidatedRequest& v, Op op, DoneCallback done) {
  std::vector<PartitionAggregator*> parts;
  parts.reserve(v.partitions.size());
  for (const uint32_t p : v.partitions) parts.push_back(Owned(p));  // validated: owned
  std::vector<CompletionStats> completed;
  bool membership_changed = false;
  absl::Status rejected;
  {
    Finisher finisher;  // answers calls after the locks are released
    PartitionLocks locks(parts);
    // A call that gets the locks after the store failed is refused; one that parked before is
    // failed by Stop, which locks each partition after the failure was recorded.
    if (stopped()) rejected = StoppedStatus();
    for (size_t i = 0; i < parts.size() && rejected.ok(); ++i) {
      PartitionAggregator& a = *parts[i];
      a.AssertHeld();
      rejected = op.Check(a, v, static_cast<int>(i));
    }
    if (rejected.ok()) {
      // Accepted: from here on the request changes state.
      membership_changed = membership_.NoteFirstCall(v.rank, v.step);
      const std::shared_ptr<const MembershipView> view = membership_.View();
      op.Accepted(v, *this);
      op.Prepare(v);
      auto call = std::make_shared<PendingCall<typename Op::Response>>(
          op.response, static_cast<int>(parts.size()), std::move(done));
      for (size_t i = 0; i < parts.size(); ++i) {
        PartitionAggregator& a = *parts[i];
        a.AssertHeld();
        op.Record(a, v, static_cast<int>(i), call, *view, finisher, &completed);
      }
    }
  }
  if (!rejected.ok()) done(std::move(rejected));
  if (membership_changed) RecheckAll();
  Account(completed);
  Stop();
}

void Job::ShareScalers(const v1::ShareScalersRequest& request, v1::ShareScalersResponse* response,
                       DoneCallback done) {
  Touch();
  if (stopped()) return done(StoppedStatus());
  absl::StatusOr<ValidatedRequest> v =
      ValidateShareScalers(request, spec_, shard_.shard_index, *membership_.View());
  if (!v.ok()) return done(v.status());
  Apply(*v, OfferOp{&request, response}, Activity(v->rank, std::move(done)));
}

void Job::PushPull(const common::PushPullRequestView& request, PushPullAnswer* response,
                   DoneCallback done) {
  Touch();
  if (stopped()) return done(StoppedStatus());
  absl::StatusOr<ValidatedRequest> v =
      ValidatePushPull(request, spec_, shard_.shard_index, *membership_.View());
  if (!v.ok()) return done(v.status());
  Apply(*v, PushOp{&request, response}, Activity(v->rank, std::move(done)));
}

DoneCallback Job::Activity(uint32_t rank, DoneCallback done) {
  NoteActive(rank);
  return [this, rank, done = std::move(done)](absl::Status st) {
    NoteActive(rank);
    done(std::move(st));
  };
}

absl::StatusOr<v1::LeaveResponse> Job::Leave(const v1::LeaveRequest& request) {
  Touch();
  if (absl::Status st = membership_.View()->CheckCaller(request.worker_rank(), request.epoch());
      !st.ok()) {
    return st;
  }
  v1::LeaveResponse response;
  response.set_epoch(membership_.Leave(request.worker_rank()));
  FinishWatches(request.worker_rank(), absl::OkStatus());
  RecheckAll();
  return response;
}

absl::Status Job::Watch(const v1::WatchRequest& request, std::shared_ptr<PendingCallBase> call) {
  Touch();
  if (stopped()) return StoppedStatus();
  if (absl::Status st = membership_.View()->CheckCaller(request.worker_rank(), request.epoch());
      !st.ok()) {
    return st;
  }
  absl::MutexLock lock(&watch_mu_);
  watches_[request.worker_rank()].push_back(std::move(call));
  disconnected_ns_[request.worker_rank()].store(kConnected, std::memory_order_relaxed);
  return absl::OkStatus();
}

void Job::Unwatch(uint32_t rank, const PendingCallBase* call) {
  if (rank >= spec_.world_size) return;
  absl::MutexLock lock(&watch_mu_);
  std::vector<std::shared_ptr<PendingCallBase>>& open = watches_[rank];
  const auto it =
      std::find_if(open.begin(), open.end(), [call](const auto& w) { return w.get() == call; });
  if (it == open.end()) return;  // answered already (the rank left, the job ended)
  open.erase(it);
  if (open.empty()) {
    disconnected_ns_[rank].store(absl::ToUnixNanos(shard_.clock->Now()), std::memory_order_relaxed);
  }
}

void Job::FinishWatches(uint32_t rank, const absl::Status& status) {
  std::vector<std::shared_ptr<PendingCallBase>> done;
  {
    absl::MutexLock lock(&watch_mu_);
    for (uint32_t r = 0; r < spec_.world_size; ++r) {
      if (rank != kAllRanks && r != rank) continue;
      for (auto& w : watches_[r]) done.push_back(std::move(w));
      watches_[r].clear();
      disconnected_ns_[r].store(kConnected, std::memory_order_relaxed);
    }
  }
  for (const auto& w : done) {  // outside the lock: answering runs gRPC code
    w->Fail(status);
    w->Finish();
  }
}

absl::Status Job::CheckRecoveryCaller(uint32_t rank, uint64_t epoch,
                                      absl::Span<const uint32_t> partitions,
                                      const char* list) const {
  if (absl::Status st = membership_.View()->CheckCaller(rank, epoch); !st.ok()) return st;
  std::vector<bool> seen(owned_index_.size(), false);
  for (size_t i = 0; i < partitions.size(); ++i) {
    const uint32_t p = partitions[i];
    if (Owned(p) == nullptr) {
      return absl::NotFoundError(absl::StrCat(list, "[", i, "]: partition ", p,
                                              " is not owned by shard ", shard_.shard_index));
    }
    if (seen[p]) {
      return absl::InvalidArgumentError(
          absl::StrCat(list, "[", i, "]: partition ", p, " is listed twice"));
    }
    seen[p] = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::PutSnapshotResponse> Job::PutSnapshot(v1::PutSnapshotRequest& request) {
  Touch();
  if (stopped()) return StoppedStatus();
  std::vector<uint32_t> ids;
  for (const v1::PartitionState& p : request.partitions()) ids.push_back(p.partition_id());
  if (absl::Status st =
          CheckRecoveryCaller(request.worker_rank(), request.epoch(), ids, "partitions");
      !st.ok()) {
    return st;
  }
  NoteActive(request.worker_rank());
  std::vector<PartitionAggregator*> parts;
  for (const uint32_t p : ids) parts.push_back(Owned(p));
  {
    PartitionLocks locks(parts);
    for (size_t i = 0; i < ids.size(); ++i) {  // validate all, then apply all
      PartitionAggregator& a = *Owned(ids[i]);
      a.AssertHeld();
      if (absl::Status st = a.CheckSnapshot(request.step(), request.partitions(i).data().size(),
                                            static_cast<int>(i));
          !st.ok()) {
        return st;
      }
    }
  }
  // A durable shard writes the snapshots before they take effect, without holding the partitions
  // (what passed the checks still passes: a partition's step only grows).
  for (size_t i = 0; i < ids.size(); ++i) {
    if (PartitionStore* store = Owned(ids[i])->config().store; store != nullptr) {
      if (absl::Status st = store->WriteSnapshot(request.step(), request.partitions(i).data());
          !st.ok()) {
        Stop();
        return StoppedStatus();
      }
    }
  }
  {
    PartitionLocks locks(parts);
    for (size_t i = 0; i < ids.size(); ++i) {
      PartitionAggregator& a = *Owned(ids[i]);
      a.AssertHeld();
      // Fails only on a durable shard whose next segment cannot start: the store has failed.
      if (absl::Status st = a.ApplySnapshot(
              request.step(),
              std::move(*request.mutable_partitions(static_cast<int>(i))->mutable_data()));
          !st.ok()) {
        break;
      }
    }
  }
  if (stopped()) {
    Stop();
    return StoppedStatus();
  }
  return v1::PutSnapshotResponse();
}

absl::StatusOr<v1::GetRecoveryResponse> Job::GetRecovery(const v1::GetRecoveryRequest& request) {
  Touch();
  if (stopped()) return StoppedStatus();
  const std::vector<uint32_t> ids(request.partition_ids().begin(), request.partition_ids().end());
  if (absl::Status st =
          CheckRecoveryCaller(request.worker_rank(), request.epoch(), ids, "partition_ids");
      !st.ok()) {
    return st;
  }
  if (request.from_step() > request.to_step()) {
    return absl::InvalidArgumentError(
        absl::StrCat("from_step: ", request.from_step(), " is after to_step ", request.to_step()));
  }
  NoteActive(request.worker_rank());
  // A readmitted rank recovers up to the step it will push first (its start step: the largest any
  // shard answered). Where this shard admitted it from an earlier step, that step must not wait
  // for it: it completes without it, as a first push at to_step would have made it.
  if (absl::Status st =
          membership_.View()->CheckStepOfCaller(request.worker_rank(), request.to_step());
      !st.ok()) {
    return st;
  }
  // Validate, then apply: what no retry can cure is refused before the membership changes.
  for (const uint32_t p : ids) {
    PartitionAggregator& a = *Owned(p);
    absl::MutexLock lock(&a.mu());
    if (absl::Status st = a.CheckRecovery(request.to_step()); !st.ok()) return st;
  }
  if (membership_.NoteFirstCall(request.worker_rank(), request.to_step())) RecheckAll();
  v1::GetRecoveryResponse response;
  uint64_t budget = request.max_bytes() == 0 ? UINT64_MAX : request.max_bytes();
  for (size_t i = 0; i < ids.size(); ++i) {
    PartitionAggregator& a = *Owned(ids[i]);
    absl::MutexLock lock(&a.mu());
    if (absl::Status st = a.Recovery(request.to_step(), request.from_step(), static_cast<int>(i),
                                     &budget, response.add_partitions());
        !st.ok()) {
      return st;
    }
  }
  // The averages answered here may still be on their way to disk (a step completed by another
  // call whose sync runs now): on disk first.
  for (const uint32_t p : ids) {
    if (PartitionStore* store = Owned(p)->config().store; store != nullptr) {
      if (absl::Status st = store->Sync(); !st.ok()) {
        Stop();
        return StoppedStatus();
      }
    }
  }
  return response;
}

void Job::RecheckAll() {
  const std::shared_ptr<const MembershipView> view = membership_.View();
  std::vector<CompletionStats> completed;
  {
    Finisher finisher;
    for (const auto& a : aggregators_) {
      absl::MutexLock lock(&a->mu());
      a->Recheck(*view, finisher, &completed);
    }
  }
  Account(completed);
  Stop();
}

void Job::Account(const std::vector<CompletionStats>& completed) {
  for (const CompletionStats& c : completed) {
    sent_bytes_.fetch_add(c.sent_bytes, std::memory_order_relaxed);
    observer_->PartitionCompleted(c);
  }
}

uint64_t Job::NewestStep() const {
  uint64_t step = 0;
  for (const auto& a : aggregators_) step = std::max(step, a->base_step());
  return step;
}

absl::Status Job::CheckStart(absl::Time now, absl::Duration start_timeout) const {
  if (now - created_ <= start_timeout) return absl::OkStatus();
  const std::vector<uint32_t> missing = membership_.NeverJoined();
  if (missing.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("job '", spec_.job_id, "' did not start: worker_rank ",
                   absl::StrJoin(missing, ", "), " of ", spec_.world_size, " never joined shard ",
                   shard_.shard_index, " within ", absl::FormatDuration(start_timeout),
                   " (--start_timeout); every rank must join before the first step"));
}

int Job::CheckTimeouts(absl::Time now) {
  const std::shared_ptr<const MembershipView> view = membership_.View();
  std::vector<uint32_t> missing;
  for (const auto& a : aggregators_) {
    absl::MutexLock lock(&a->mu());
    a->CollectExpired(now, *view, absl::MakeConstSpan(active_ns_.get(), spec_.world_size),
                      absl::MakeConstSpan(disconnected_ns_.get(), spec_.world_size),
                      shard_.disconnect_grace, &missing);
  }
  if (missing.empty()) return 0;
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  // Every live rank late at once is not every worker dying at once (their connections would have
  // closed): it is the network to this shard, or a stall of the shard itself. Dropping them all
  // would end the job and delete its state; they are waited for instead (up to
  // --job_idle_timeout).
  const std::vector<uint32_t> live = view->LiveRanks();
  if (std::includes(missing.begin(), missing.end(), live.begin(), live.end()) && !live.empty()) {
    const bool all_closed = std::all_of(live.begin(), live.end(), [&](uint32_t r) {
      return shard_.disconnect_grace > absl::ZeroDuration() &&
             disconnected_ns_[r].load(std::memory_order_relaxed) <=
                 absl::ToUnixNanos(now - shard_.disconnect_grace);
    });
    if (!all_closed) {
      if (all_late_step_ != NewestStep()) {
        all_late_step_ = NewestStep();
        std::fprintf(stderr,
                     "ternps-server: job '%s' step %llu: every live worker is late here; none is "
                     "dropped (a network fault or a stalled shard?), they are waited for up to "
                     "--job_idle_timeout\n",
                     spec_.job_id.c_str(), static_cast<unsigned long long>(all_late_step_));
      }
      return 0;
    }
  }
  const int dropped = membership_.Drop(missing);
  if (dropped > 0) {
    observer_->WorkersDropped(dropped);
    // Operators see why a step went on without someone.
    const int64_t gone_since = absl::ToUnixNanos(now - shard_.disconnect_grace);
    for (const uint32_t r : missing) {
      const int64_t closed = disconnected_ns_[r].load(std::memory_order_relaxed);
      std::fprintf(stderr, "ternps-server: job '%s' step %llu: dropped worker_rank %u (%s)\n",
                   spec_.job_id.c_str(), static_cast<unsigned long long>(NewestStep()), r,
                   shard_.disconnect_grace > absl::ZeroDuration() && closed <= gone_since
                       ? "its connection closed and it did not reconnect within "
                         "--disconnect_grace"
                       : "it missed the step timeout");
    }
  }
  RecheckAll();
  return dropped;
}

void Job::FailAll(const absl::Status& status) {
  {
    Finisher finisher;
    for (const auto& a : aggregators_) {
      absl::MutexLock lock(&a->mu());
      a->FailAll(status, finisher);
    }
  }
  FinishWatches(kAllRanks, status);
}

void Job::FillStatus(v1::JobStatus* status) const {
  const std::shared_ptr<const MembershipView> view = membership_.View();
  status->set_job_id(spec_.job_id);
  status->set_world_size(spec_.world_size);
  status->set_epoch(view->epoch);
  uint64_t step = aggregators_.empty() ? 0 : UINT64_MAX;
  for (const auto& a : aggregators_) step = std::min(step, a->base_step());
  status->set_step(step);
  for (const uint32_t r : view->LiveRanks()) status->add_live_workers(r);
  status->set_plan_checksum(spec_.plan.Checksum());
  status->set_owned_partitions(static_cast<uint32_t>(aggregators_.size()));
  status->set_received_bytes(received_bytes_.load(std::memory_order_relaxed));
  status->set_sent_bytes(sent_bytes_.load(std::memory_order_relaxed));
}

}  // namespace ternps::server
