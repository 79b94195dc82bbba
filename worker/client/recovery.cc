#include "worker/client/recovery.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "common/rpc/status.h"
#include "common/wire/push_pull_wire.h"
#include "worker/client/answer_checks.h"
#include "worker/client/call_plan.h"
#include "worker/client/call_status.h"

namespace ternps::worker {

namespace v1 = ::ternps::v1;

Recovery::Recovery(const WorkerOptions& options, const common::JobSpec& spec, Session& session,
                   Exchange& host)
    : options_(options), spec_(spec), session_(session), host_(host) {}

absl::Status Recovery::CheckState(State state) const {
  const uint32_t slots = spec_.recovery.state_slots;
  const std::vector<common::TensorSpec>& tensors = spec_.plan.tensors();
  if (state.size() != tensors.size() * slots) {
    return absl::InvalidArgumentError(absl::StrCat("state: ", state.size(), " spans, expected ",
                                                   tensors.size() * slots, " (", tensors.size(),
                                                   " tensors x ", slots, " state_slots)"));
  }
  for (size_t i = 0; i < state.size(); ++i) {
    if (state[i].size() != tensors[i / slots].elements) {
      return absl::InvalidArgumentError(absl::StrCat(
          "state[", i, "]: ", state[i].size(), " values, expected ", tensors[i / slots].elements));
    }
  }
  return absl::OkStatus();
}

absl::Status Recovery::Offer(State state, uint64_t step) {
  const uint32_t k = spec_.recovery.snapshot_interval;
  if (k == 0 || step == 0 || step % k != 0 || (step / k) % spec_.world_size != options_.rank) {
    return absl::OkStatus();
  }
  if (absl::Status st = CheckState(state); !st.ok()) return st;
  const uint32_t slots = spec_.recovery.state_slots;
  const absl::Time deadline = absl::Now() + options_.rpc_timeout;
  // Every shard at once, one call of at most max_call_bytes in flight to each; the next call's
  // request is built when the previous one is answered.
  struct Upload {
    uint32_t shard = 0;
    std::vector<std::vector<uint32_t>> groups;
    size_t next = 0;
    v1::PutSnapshotRequest request;
    v1::PutSnapshotResponse response;
    std::unique_ptr<grpc::ClientContext> context;
  };
  std::vector<Upload> uploads(options_.shards.size());
  std::unique_ptr<absl::BlockingCounter> pending;
  FirstError error;
  std::vector<bool> lost(uploads.size(), false);  // lost connections: reconnected, sent again
  absl::Mutex lost_mu;
  std::function<void(Upload&)> send_next = [&](Upload& u) {
    if (u.next == u.groups.size() || !error.Get().ok()) {
      pending->DecrementCount();
      return;
    }
    u.request.Clear();
    u.request.set_job_id(options_.job_id);
    u.request.set_worker_rank(options_.rank);
    u.request.set_epoch(session_.epoch(u.shard));
    u.request.set_step(step);
    for (const uint32_t p : u.groups[u.next++]) {
      const common::Partition& part = spec_.plan.partition(p);
      v1::PartitionState* out = u.request.add_partitions();
      out->set_partition_id(p);
      std::string& data = *out->mutable_data();
      data.reserve(size_t{4} * slots * part.elements);
      for (uint32_t j = 0; j < slots; ++j) {
        const absl::Span<const float> slice =
            state[part.tensor * slots + j].subspan(part.offset, part.elements);
        data.append(reinterpret_cast<const char*>(slice.data()), 4 * slice.size());
      }
    }
    u.context = session_.NewContext(deadline);
    session_.stub(u.shard).async()->PutSnapshot(
        u.context.get(), &u.request, &u.response, [&, up = &u](grpc::Status st) {
          if (LostConnection(st, /*cancelled_here=*/false)) {
            absl::MutexLock lock(&lost_mu);
            lost[up->shard] = true;
          } else if (!st.ok()) {
            error.Set(common::FromGrpcStatus(
                st, absl::StrCat(session_.ShardName(up->shard), " PutSnapshot")));
          }
          if (!st.ok()) {
            pending->DecrementCount();
            return;
          }
          send_next(*up);
        });
  };
  std::vector<uint32_t> to;
  for (uint32_t s = 0; s < uploads.size(); ++s) {
    uploads[s].shard = s;
    uploads[s].groups = PlanStateGroups(spec_, s, options_.max_call_bytes);
    to.push_back(s);
  }
  for (int attempt = 0;; ++attempt) {
    pending = std::make_unique<absl::BlockingCounter>(static_cast<int>(to.size()));
    for (const uint32_t s : to) {
      uploads[s].next = 0;
      send_next(uploads[s]);
    }
    pending->Wait();
    if (absl::Status st = error.Get(); !st.ok()) return st;
    to.clear();
    for (uint32_t s = 0; s < lost.size(); ++s) {
      if (lost[s]) to.push_back(s);
      lost[s] = false;
    }
    if (to.empty()) return absl::OkStatus();
    if (attempt == kMaxReconnectsPerStep) {
      return absl::UnavailableError(
          absl::StrCat(session_.ShardName(to[0]),
                       " PutSnapshot: the connection was lost again after every reconnection"));
    }
    if (absl::Status st = session_.Reconnect(to, step); !st.ok()) return st;
  }
}

absl::Status Recovery::Recover(State state, Gradients gradients,
                               const std::function<absl::Status(uint64_t)>& apply,
                               uint64_t to_step) {
  if (absl::Status st = CheckState(state); !st.ok()) return st;
  // A peer may store a newer snapshot while this worker replays (at most the step it recovers
  // to: the peers wait there for it); the replay then starts again from that snapshot.
  for (int attempt = 0;; ++attempt) {
    absl::StatusOr<bool> done = RecoverOnce(state, gradients, apply, to_step);
    if (!done.ok() || *done) return done.status();
    if (attempt == 3) {
      return absl::AbortedError("GetRecovery: the shards' snapshots moved during each of 4 tries");
    }
  }
}

absl::StatusOr<bool> Recovery::FetchRecoveryPage(RecoveryGroup& g, uint64_t from_step,
                                                 uint64_t to_step, absl::Time deadline,
                                                 bool retry) {
  absl::Duration backoff = absl::Milliseconds(5);
  for (;;) {
    v1::GetRecoveryRequest request;
    request.set_job_id(options_.job_id);
    request.set_worker_rank(options_.rank);
    request.set_epoch(session_.epoch(g.shard));
    request.set_to_step(to_step);
    request.set_from_step(from_step);
    request.set_max_bytes(kRecoveryPageBytes);
    for (const uint32_t p : g.partitions) request.add_partition_ids(p);
    g.page.Clear();
    std::unique_ptr<grpc::ClientContext> context = session_.NewContext(deadline);
    const grpc::Status st = session_.stub(g.shard).GetRecovery(context.get(), request, &g.page);
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE && absl::Now() + backoff < deadline) {
      // Either a step is still aggregating there (its other workers are still on it: the shard's
      // RecoveryLog says "has not completed step"), or this worker's session with the shard is
      // gone (a lost connection, a shard restarted from its state directory, a job reloaded
      // after a disk fault): then it joins that shard again before asking again.
      if (!absl::StrContains(st.error_message(), "has not completed step")) {
        absl::StatusOr<v1::JoinResponse> joined =
            session_.JoinShard(g.shard, /*rejoin=*/true, /*resume=*/true);
        if (!joined.ok()) return joined.status();
        if (joined->start_step() > to_step) {
          return absl::FailedPreconditionError(absl::StrCat(
              session_.ShardName(g.shard),
              " GetRecovery: after joining again the shard is at step ", joined->start_step(),
              ", past step ", to_step,
              " this worker recovers to (it went on without it); Rejoin and Recover again"));
        }
      }
      if (!retry) return false;
      absl::SleepFor(backoff);  // a retry delay, not synchronization: the peers finish the step
      backoff = std::min(backoff * 2, absl::Milliseconds(200));
      continue;
    }
    if (!st.ok())
      return common::FromGrpcStatus(st, absl::StrCat(session_.ShardName(g.shard), " GetRecovery"));
    break;
  }
  const std::string where = absl::StrCat(session_.ShardName(g.shard), " GetRecovery answer: ");
  if (g.page.partitions_size() != static_cast<int>(g.partitions.size())) {
    return absl::InvalidArgumentError(absl::StrCat(where, "partitions: ", g.page.partitions_size(),
                                                   " for ", g.partitions.size(), " requested"));
  }
  for (size_t i = 0; i < g.partitions.size(); ++i) {
    const v1::PartitionRecovery& r = g.page.partitions(static_cast<int>(i));
    const uint32_t p = g.partitions[i];
    const size_t state_bytes =
        size_t{4} * spec_.recovery.state_slots * spec_.plan.partition(p).elements;
    const uint64_t first = std::max(from_step, r.snapshot_step());
    const bool state_ok = from_step == 0 ? (r.state().empty() ? r.snapshot_step() == 0
                                                              : r.state().size() == state_bytes)
                                         : r.state().empty();
    const uint64_t count = static_cast<uint64_t>(r.averages_size());
    // Each page makes progress: the snapshot, or at least one average.
    const bool progress = first == to_step || count > 0 || !r.state().empty();
    if (r.partition_id() != p || r.snapshot_step() > to_step || r.first_step() != first ||
        !state_ok || count > to_step - first || !progress) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "partitions[", i, "]: partition ", r.partition_id(), " snapshot step ",
          r.snapshot_step(), " with ", r.state().size(), " state bytes and ", count,
          " averages from step ", r.first_step(), " is not a page of partition ", p,
          "'s recovery from step ", from_step, " to step ", to_step));
    }
  }
  return true;
}

absl::StatusOr<bool> Recovery::RecoverOnce(State state, Gradients gradients,
                                           const std::function<absl::Status(uint64_t)>& apply,
                                           uint64_t to_step) {
  const uint32_t slots = spec_.recovery.state_slots;
  const common::PartitionPlan& plan = spec_.plan;
  // Each partition's averages arrive in pages of its group (the partitions one call asks a shard
  // for), fetched as the replay reaches them: at most a page per group is held at a time.
  std::vector<RecoveryGroup> groups;
  for (uint32_t s = 0; s < options_.shards.size(); ++s) {
    for (std::vector<uint32_t>& group : PlanStateGroups(spec_, s, options_.max_call_bytes)) {
      groups.push_back({.shard = s, .partitions = std::move(group), .page = {}});
    }
  }
  struct Source {
    size_t group = 0;
    int index = 0;          // in the group's pages
    uint64_t snapshot = 0;  // its snapshot step
    std::string state;      // the snapshot, until the replay reaches its step
  };
  std::vector<Source> sources(plan.partitions().size());
  // Every shard is asked once before any is waited for: the first GetRecovery also tells a shard
  // that admitted this worker from an earlier step to stop waiting for it there (else two shards
  // could each wait on a step the other one holds up).
  const absl::Time deadline = absl::Now() + options_.rpc_timeout;
  absl::Duration backoff = absl::Milliseconds(5);
  std::vector<bool> fetched(groups.size(), false);
  for (size_t remaining = groups.size(); remaining > 0;) {
    for (size_t g = 0; g < groups.size(); ++g) {
      if (fetched[g]) continue;
      absl::StatusOr<bool> got =
          FetchRecoveryPage(groups[g], 0, to_step, deadline, /*retry=*/false);
      if (!got.ok()) return got.status();
      if (!*got) continue;  // next round
      fetched[g] = true;
      --remaining;
      for (size_t i = 0; i < groups[g].partitions.size(); ++i) {
        v1::PartitionRecovery& r = *groups[g].page.mutable_partitions(static_cast<int>(i));
        sources[groups[g].partitions[i]] = {.group = g,
                                            .index = static_cast<int>(i),
                                            .snapshot = r.snapshot_step(),
                                            .state = std::move(*r.mutable_state())};
      }
    }
    if (remaining > 0) {
      absl::SleepFor(backoff);  // a retry delay, not synchronization: the peers finish the step
      backoff = std::min(backoff * 2, absl::Milliseconds(200));
    }
  }
  // Replay from the oldest snapshot: each partition's state is restored when the replay reaches
  // its snapshot step, and its averages decoded from then on (zero before).
  uint64_t first = to_step;
  for (const Source& src : sources) first = std::min(first, src.snapshot);
  auto restore = [&](uint64_t step) {
    for (uint32_t p = 0; p < sources.size(); ++p) {
      Source& src = sources[p];
      if (src.snapshot != step || src.state.empty()) continue;
      const common::Partition& part = plan.partition(p);
      for (uint32_t j = 0; j < slots; ++j) {
        std::memcpy(state[part.tensor * slots + j].subspan(part.offset, part.elements).data(),
                    src.state.data() + size_t{4} * j * part.elements, size_t{4} * part.elements);
      }
      std::string().swap(src.state);
    }
  };
  std::vector<uint8_t> scratch;
  for (uint64_t t = first; t < to_step; ++t) {
    restore(t);
    for (uint32_t p = 0; p < sources.size(); ++p) {
      const Source& src = sources[p];
      const absl::Span<float> out = PartitionSlice(plan, gradients, p);
      if (t < src.snapshot) {
        std::fill(out.begin(), out.end(), 0.0f);
        continue;
      }
      RecoveryGroup& g = groups[src.group];
      if (t >= g.page.partitions(src.index).first_step() +
                   static_cast<uint64_t>(g.page.partitions(src.index).averages_size())) {
        // The group's next page, from this step on.
        absl::StatusOr<bool> got = FetchRecoveryPage(g, t, to_step, deadline, /*retry=*/true);
        if (!got.ok()) return got.status();
        for (size_t i = 0; i < g.partitions.size(); ++i) {
          if (g.page.partitions(static_cast<int>(i)).snapshot_step() !=
              sources[g.partitions[i]].snapshot) {
            return false;  // a newer snapshot: start again from it
          }
        }
      }
      const v1::PartitionRecovery& r = g.page.partitions(src.index);
      const v1::PartitionPayload& a = r.averages(static_cast<int>(t - r.first_step()));
      common::PayloadView view{
          .partition_id = a.partition_id(),
          .encoding = a.encoding(),
          .scaler = a.scaler(),
          .elements = a.elements(),
          .contributors = a.contributors(),
          .pieces = {
              common::Piece(reinterpret_cast<const uint8_t*>(a.data().data()), a.data().size())}};
      // The INT_SUM scaler is the one the peers shared at step t (this worker had none).
      absl::StatusOr<Average> avg = ValidateAverage(
          view, p, spec_, a.scaler(), host_.DecodesPieces(spec_.route(p).downlink), &scratch);
      absl::Status st = avg.ok() ? host_.Decode(gradients, p, *avg) : avg.status();
      if (!st.ok()) {
        return absl::Status(st.code(), absl::StrCat("GetRecovery answer: partition ", p, " step ",
                                                    t, " average", st.message()));
      }
    }
    if (absl::Status st = apply(t); !st.ok()) return st;
  }
  restore(to_step);
  return true;
}

}  // namespace ternps::worker
