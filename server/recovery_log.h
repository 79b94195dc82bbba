// What one partition answered, kept for repeats and recovery: the snapshot a worker last stored
// and the average of every step completed since (with recovery; JobSpec.recovery), or just the
// newest step's average (without: a worker whose connection lost an answer repeats that step).
// On a durable shard every average is also appended to the partition's PartitionStore.
//
// The rule it keeps: nothing is answered before it is durable. Add appends the record and makes
// the Finisher sync the store before any call it completes is answered; Replay does the same for
// an average answered again. A store that failed once fails every later sync (StoreFault), so an
// average whose write or sync failed is never answered, first time or repeated.
//
//   RecoveryLog log(config);
//   if (absl::Status st = log.Add(step, pushed, head, answer, finisher); !st.ok()) fail the calls;
//   if (const RecoveryLog::Entry* e = log.Replayable(rank, step, newest)) answer Replay(...);
//
// Thread-compatible: its aggregator's lock guards it.
#ifndef TERNPS_SERVER_RECOVERY_LOG_H_
#define TERNPS_SERVER_RECOVERY_LOG_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/spec/job_spec.h"
#include "common/wire/push_pull_wire.h"
#include "server/answer.h"
#include "server/membership.h"
#include "server/pending_call.h"
#include "server/state_store.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::server {

struct RecoveryLogConfig {
  uint32_t partition_id = 0;
  bool keep_recovery = false;       // the snapshot and every average since, or the newest only
  size_t state_bytes = 0;           // bytes of a snapshot (4 * state_slots * elements)
  PartitionStore* store = nullptr;  // a durable shard's files (not owned); null: memory only
};

class RecoveryLog {
 public:
  struct Entry {
    AnsweredAverage average;  // bytes null for a step that failed without an average
    RankBits pushed;          // who contributed
  };

  explicit RecoveryLog(const RecoveryLogConfig& config) : config_(config) {}

  // Records completed step `step` (`answer` null: it failed without an average). With a store,
  // the record is appended and `finisher` syncs it before it answers anything; an error (the
  // store failed, naming the file and errno) means the average must not be answered.
  absl::Status Add(uint64_t step, const RankBits& pushed, const common::PayloadView& head,
                   const std::shared_ptr<AverageBytes>& answer, Finisher& finisher);
  // The step's entry if `rank` contributed to it and it has an average: with recovery any step
  // kept; without, the newest completed step if `newest` (a resumed session's repeat).
  const Entry* Replayable(uint32_t rank, uint64_t step, bool newest) const;
  // Replayable(rank, step, true), which must exist, to answer again: `finisher` syncs the store
  // first (the record may still be on its way to disk).
  const Entry& Replay(uint32_t rank, uint64_t step, Finisher& finisher) const;

  // Snapshots (see the proto): OK if a snapshot of the state at the start of `step` fits a
  // partition at `base_step`; Apply replaces an older one and forgets the averages before it (an
  // equal or older step is ignored); INTERNAL if a durable shard cannot start the next segment.
  absl::Status CheckSnapshot(uint64_t step, size_t bytes, int index, uint64_t base_step) const;
  absl::Status ApplySnapshot(uint64_t step, std::string state, uint64_t base_step);
  // Takes what a restarted durable shard read back; returns the first step not logged.
  uint64_t Restore(LoadedPartition loaded);
  // A page of the recovery to `to_step` (see GetRecoveryRequest): the snapshot if from_step is
  // 0, and the averages from max(from_step, snapshot step) on while they fit `*budget` (bytes,
  // decreased by what was added), but at least one unless the snapshot was added. UNAVAILABLE while
  // the partition at `base_step` has not completed to_step - 1; FAILED_PRECONDITION if not kept.
  absl::Status Recovery(uint64_t to_step, uint64_t from_step, int index, uint64_t base_step,
                        uint64_t* budget, ternps::v1::PartitionRecovery* out) const;
  // Recovery's refusals that a retry cannot cure (no recovery state, to_step before the
  // snapshot), checked before a GetRecovery changes anything.
  absl::Status CheckRecovery(uint64_t to_step) const;
  // The most a job's recovery state may hold on this shard: a snapshot of `spec`'s partitions
  // owned by `shard` (`state` bytes) and snapshot_interval + 2 steps of their largest averages
  // (`step` bytes each; a snapshot of step s arrives while the shard completes step s or s + 1).
  struct Footprint {
    uint64_t state = 0;
    uint64_t step = 0;
    uint64_t Bytes(uint64_t interval) const { return state + (interval + 2) * step; }
    // The largest interval whose Bytes fit `limit` (0 if none).
    uint64_t LargestInterval(uint64_t limit) const {
      if (step == 0 || limit < state + 3 * step) return 0;
      return (limit - state) / step - 2;
    }
  };
  static Footprint FootprintOf(const common::JobSpec& spec, uint32_t shard);

 private:
  const RecoveryLogConfig config_;
  // With recovery: the state at the start of snapshot_step_ (empty before the first snapshot: the
  // initial state) and the averages of steps snapshot_step_, snapshot_step_ + 1, ...
  uint64_t snapshot_step_ = 0;
  std::string snapshot_;
  std::deque<Entry> log_;
  std::vector<std::shared_ptr<AverageBytes>> free_;  // buffers a snapshot released
  // Without recovery: the newest completed step's average as answered (the bytes are shared
  // with the answer, not copied).
  uint64_t last_step_ = 0;
  Entry last_;
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_RECOVERY_LOG_H_
