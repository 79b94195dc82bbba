// Membership of one job on one shard: which worker ranks are live, since which step each one is
// expected to push, and the membership epoch.
//
//   Membership members(/*world_size=*/4);
//   std::shared_ptr<const MembershipView> view = members.View();  // immutable snapshot
//   absl::Status st = view->CheckCaller(rank, epoch);             // every data-path call
//   if (view->AllRequiredIn(step, pushed_bits)) ...
//
// A rank starts `expected`: it counts as live (partitions wait for it) but must Join before it may
// call anything else. The job starts once every rank has joined (steps cannot complete before:
// a slow starter is waited for, up to the shard's start timeout, never dropped). A step timeout
// or Leave drops a joined rank; a dropped rank is readmitted by Join from a given step on, and the
// epoch increases whenever the live set changes.
//
// Thread-safe. View() snapshots are immutable and cheap to share: the data path reads them
// without holding the membership lock.
#ifndef TERNPS_SERVER_MEMBERSHIP_H_
#define TERNPS_SERVER_MEMBERSHIP_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"

namespace ternps::server {

// A set of ranks as 64-bit words, rank r at bit r % 64 of word r / 64.
using RankBits = std::vector<uint64_t>;

inline size_t RankWords(uint32_t world_size) { return (world_size + 63) / 64; }
inline bool TestRank(const RankBits& bits, uint32_t rank) {
  return (bits[rank / 64] >> (rank % 64)) & 1u;
}
inline void SetRank(RankBits& bits, uint32_t rank) {
  bits[rank / 64] |= uint64_t{1} << (rank % 64);
}
int CountRanks(const RankBits& bits);

enum class RankState { kExpected, kJoined, kDropped, kLeft };

// One rank as a membership view records it.
struct RankRecord {
  RankState state = RankState::kExpected;
  uint64_t join_epoch = 0;           // the epoch its latest Join returned
  uint64_t from_step = 0;            // readmitted ranks: the first step they are awaited at
  bool awaiting_first_call = false;  // joined, from_step still provisional until its first call
  // The join_epoch of a session resumed after a lost connection (JoinRequest.resume_epoch); while
  // it equals join_epoch (no readmission since), the rank may repeat offers and pushes the shard
  // already has.
  uint64_t resumed_epoch = 0;
  bool may_repeat() const { return resumed_epoch != 0 && resumed_epoch == join_epoch; }
};

// An immutable snapshot of the membership.
struct MembershipView {
  uint64_t epoch = 0;
  uint64_t first_epoch = 1;  // the first epoch of this incarnation of the job (a restored job's
                             // are above every earlier one's)
  uint32_t world_size = 0;
  // Every rank has joined at least once (or the job was restored after a restart): steps may
  // complete. Before that, ranks still expected are waited for, not dropped.
  bool started = false;
  std::vector<RankRecord> ranks;  // by rank
  RankBits live;                  // expected or joined
  // Ranks readmitted after a drop: they are awaited only from their from_step on.
  struct Late {
    uint32_t rank;
    uint64_t from_step;
  };
  std::vector<Late> late;

  // The ranks a partition of `step` waits for.
  RankBits Required(uint64_t step) const;
  // Whether every rank required at `step` is in `have`.
  bool AllRequiredIn(uint64_t step, const RankBits& have) const;
  int LiveCount() const { return CountRanks(live); }
  std::vector<uint32_t> LiveRanks() const;

  // OK if `rank` may make data-path calls with `epoch`: INVALID_ARGUMENT (rank out of range,
  // epoch from the future), FAILED_PRECONDITION (never joined), UNAVAILABLE (not joined since the
  // shard restarted and restored the job, with an epoch from before: Join again, as after a lost
  // connection), ABORTED (dropped, left, or an epoch older than its Join: Join again).
  absl::Status CheckCaller(uint32_t rank, uint64_t epoch) const;
  // OK unless `rank` was readmitted from a step after `step` (FAILED_PRECONDITION).
  absl::Status CheckStepOfCaller(uint32_t rank, uint64_t step) const;
};

class Membership {
 public:
  // Epochs start at `first_epoch` (a restored job's are above every epoch it gave out before).
  explicit Membership(uint32_t world_size, uint64_t first_epoch = 1);

  uint32_t world_size() const { return world_size_; }
  std::shared_ptr<const MembershipView> View() const ABSL_LOCKS_EXCLUDED(mu_);

  struct Admission {
    uint64_t epoch;        // the epoch to send with later calls
    uint64_t start_step;   // the first step this rank is awaited at
    bool resumed = false;  // the rank's session went on (see Join)
  };
  // Admits `rank` (rank < world_size): a first Join keeps the epoch; a readmission (after a drop,
  // a Leave, or a restart of a joined worker) is awaited from `resume_step` and bumps the epoch.
  // A Join with `session_epoch` (JoinRequest.resume_epoch, non-zero) by a rank that is still
  // joined with that epoch or a later one resumes its session: it keeps its from_step and its
  // join epoch (calls of the lost connection may still arrive over its other connections after
  // this Join), the epoch does not change (the live set did not), and the rank may repeat what
  // it sent before (RankRecord::may_repeat) until its next readmission.
  Admission Join(uint32_t rank, uint64_t first_step, uint64_t resume_step,
                 uint64_t session_epoch = 0) ABSL_LOCKS_EXCLUDED(mu_);

  // A readmitted rank's first accepted call was at `step` (>= its start): it is awaited from
  // `step` on, not from the start it was given. Returns whether the live set changed.
  bool NoteFirstCall(uint32_t rank, uint64_t step) ABSL_LOCKS_EXCLUDED(mu_);

  // Removes ranks from the live set (step timeout). Returns how many were live.
  int Drop(absl::Span<const uint32_t> ranks) ABSL_LOCKS_EXCLUDED(mu_);
  // Removes a rank that leaves. Returns the new epoch.
  uint64_t Leave(uint32_t rank) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether any rank is still expected or joined.
  bool AnyLive() const ABSL_LOCKS_EXCLUDED(mu_);
  // A restored job has started (its ranks come back with rejoin).
  void MarkStarted() ABSL_LOCKS_EXCLUDED(mu_);
  // Ranks that have never joined (empty once started).
  std::vector<uint32_t> NeverJoined() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void PublishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint32_t world_size_;
  mutable absl::Mutex mu_;
  const uint64_t first_epoch_;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 1;
  std::vector<RankRecord> ranks_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<const MembershipView> view_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_MEMBERSHIP_H_
