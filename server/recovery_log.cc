#include "server/recovery_log.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/util/check.h"

namespace ternps::server {

absl::Status RecoveryLog::Add(uint64_t step, const RankBits& pushed,
                              const common::PayloadView& head,
                              const std::shared_ptr<AverageBytes>& answer, Finisher& finisher) {
  if (!config_.keep_recovery) {
    if (answer != nullptr) {
      last_step_ = step;
      last_ = {{head, answer}, pushed};
    }
    return absl::OkStatus();
  }
  std::shared_ptr<AverageBytes> copy;
  if (answer != nullptr) {
    // A copy: holding `answer` itself would keep the aggregator from reusing its buffers. The
    // copy goes into a buffer an earlier snapshot released, when there is one (fresh memory
    // every step costs page faults on every byte).
    if (!free_.empty()) {
      copy = std::move(free_.back());
      free_.pop_back();
    } else {
      copy = std::make_shared<AverageBytes>();
    }
    copy->Resize(answer->size());
    std::memcpy(copy->data(), answer->data(), answer->size());
  }
  // Kept in memory even if the append fails: the step is complete here, and the store's failure
  // keeps it from being answered (every later Sync fails).
  log_.push_back({{head, copy}, pushed});
  if (config_.store == nullptr) return absl::OkStatus();
  LoggedAverage record{
      .step = step, .pushed = pushed, .head = head, .has_bytes = copy != nullptr, .bytes = {}};
  if (copy != nullptr) record.bytes = copy->span();
  if (absl::Status st = config_.store->Append(record); !st.ok()) {
    return absl::UnavailableError(absl::StrCat("partition ", config_.partition_id, " step ", step,
                                               ": the shard cannot make the average durable (",
                                               st.message(), ")"));
  }
  finisher.SyncBeforeFinishing(config_.store);
  return absl::OkStatus();
}

const RecoveryLog::Entry* RecoveryLog::Replayable(uint32_t rank, uint64_t step, bool newest) const {
  const Entry* entry = nullptr;
  if (!config_.keep_recovery) {
    if (newest && step == last_step_ && last_.average.bytes != nullptr) entry = &last_;
  } else if (step >= snapshot_step_ && step - snapshot_step_ < log_.size()) {
    entry = &log_[step - snapshot_step_];
  }
  if (entry == nullptr || entry->average.bytes == nullptr || rank / 64 >= entry->pushed.size() ||
      !TestRank(entry->pushed, rank)) {
    return nullptr;
  }
  return entry;
}

const RecoveryLog::Entry& RecoveryLog::Replay(uint32_t rank, uint64_t step,
                                              Finisher& finisher) const {
  const Entry* e = Replayable(rank, step, /*newest=*/true);
  TERNPS_CHECK(e != nullptr, "partition ", config_.partition_id, ": step ", step,
               " is not replayable for rank ", rank, " (the caller checks first)");
  if (config_.store != nullptr) finisher.SyncBeforeFinishing(config_.store);
  return *e;
}

namespace {

absl::Status NoRecoveryState() {
  return absl::FailedPreconditionError(
      "snapshot_interval: the job keeps no recovery state (registered with 0)");
}

}  // namespace

absl::Status RecoveryLog::CheckSnapshot(uint64_t step, size_t bytes, int index,
                                        uint64_t base_step) const {
  if (!config_.keep_recovery) return NoRecoveryState();
  if (bytes != config_.state_bytes) {
    return absl::InvalidArgumentError(absl::StrCat("partitions[", index, "].data: ", bytes,
                                                   " bytes, expected ", config_.state_bytes,
                                                   " (4 * state_slots * elements)"));
  }
  if (step > base_step) {
    return absl::FailedPreconditionError(
        absl::StrCat("step: ", step, " is after the steps partitions[", index, "] (partition ",
                     config_.partition_id, ") has completed here (it is at step ", base_step, ")"));
  }
  return absl::OkStatus();
}

absl::Status RecoveryLog::ApplySnapshot(uint64_t step, std::string state, uint64_t base_step) {
  if (step <= snapshot_step_) return absl::OkStatus();
  const uint64_t drop = std::min<uint64_t>(step - snapshot_step_, log_.size());
  for (uint64_t i = 0; i < drop; ++i) {
    std::shared_ptr<const AverageBytes>& bytes = log_[i].average.bytes;
    // Only the log holds these (GetRecovery copies out under the lock): reusable.
    if (bytes != nullptr && bytes.use_count() == 1) {
      free_.push_back(std::const_pointer_cast<AverageBytes>(std::move(bytes)));
    }
  }
  log_.erase(log_.begin(), log_.begin() + static_cast<std::ptrdiff_t>(drop));
  snapshot_step_ = step;
  snapshot_ = std::move(state);
  if (config_.store == nullptr) return absl::OkStatus();
  return config_.store->StartSegment(base_step, step);
}

uint64_t RecoveryLog::Restore(LoadedPartition loaded) {
  snapshot_step_ = loaded.snapshot_step;
  snapshot_ = std::move(loaded.snapshot);
  log_.clear();
  for (LoadedPartition::Entry& e : loaded.log) {
    std::shared_ptr<AverageBytes> bytes;
    if (e.has_bytes) {
      bytes = std::make_shared<AverageBytes>();
      bytes->Resize(e.bytes.size());
      std::memcpy(bytes->data(), e.bytes.data(), e.bytes.size());
    }
    log_.push_back({{e.head, std::move(bytes)}, std::move(e.pushed)});
  }
  return snapshot_step_ + log_.size();
}

absl::Status RecoveryLog::CheckRecovery(uint64_t to_step) const {
  if (!config_.keep_recovery) return NoRecoveryState();
  if (to_step < snapshot_step_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "to_step: ", to_step, " is before the snapshot of partition ", config_.partition_id,
        " (step ", snapshot_step_, "); Join again and recover to the step it answers"));
  }
  return absl::OkStatus();
}

absl::Status RecoveryLog::Recovery(uint64_t to_step, uint64_t from_step, int index,
                                   uint64_t base_step, uint64_t* budget,
                                   ternps::v1::PartitionRecovery* out) const {
  if (absl::Status st = CheckRecovery(to_step); !st.ok()) return st;
  if (to_step > base_step) {
    return absl::UnavailableError(absl::StrCat(
        "partition_ids[", index, "]: partition ", config_.partition_id, " has not completed step ",
        to_step - 1, " yet (it is at step ", base_step, "); retry"));
  }
  const uint64_t first = std::max(from_step, snapshot_step_);
  out->set_partition_id(config_.partition_id);
  out->set_snapshot_step(snapshot_step_);
  out->set_first_step(first);
  // Progress: the snapshot, or else at least one average.
  bool progress = false;
  if (from_step == 0) {
    out->set_state(snapshot_);
    *budget -= std::min<uint64_t>(*budget, snapshot_.size());
    progress = !snapshot_.empty();
  }
  for (uint64_t step = first; step < to_step; ++step) {
    const AnsweredAverage& a = log_[step - snapshot_step_].average;
    if (a.bytes == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat("partition ", config_.partition_id,
                                                        " has no average for step ", step,
                                                        " (that step failed)"));
    }
    if ((progress || step > first) && a.bytes->size() > *budget) break;
    ToProto(a, out->add_averages());
    *budget -= std::min<uint64_t>(*budget, a.bytes->size());
  }
  return absl::OkStatus();
}

RecoveryLog::Footprint RecoveryLog::FootprintOf(const common::JobSpec& spec, uint32_t shard) {
  Footprint f;
  for (const uint32_t p : spec.plan.PartitionsOfShard(shard)) {
    const uint32_t elements = spec.plan.partition(p).elements;
    f.state += uint64_t{4} * spec.recovery.state_slots * elements;
    // An average of every rank is the largest (INT_SUM fields grow with the contributors).
    const int n = static_cast<int>(spec.world_size);
    f.step += common::PayloadBytes(
        common::AverageEncoding(spec.route(p).downlink, spec.codec.int_sum_radix, n), elements, n);
  }
  return f;
}

}  // namespace ternps::server
