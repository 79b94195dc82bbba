#include "server/membership.h"

#include <algorithm>
#include <bit>

#include "absl/strings/str_cat.h"

namespace ternps::server {

int CountRanks(const RankBits& bits) {
  int n = 0;
  for (const uint64_t w : bits) n += std::popcount(w);
  return n;
}

RankBits MembershipView::Required(uint64_t step) const {
  RankBits required = live;
  for (const Late& l : late) {
    if (l.from_step > step) required[l.rank / 64] &= ~(uint64_t{1} << (l.rank % 64));
  }
  return required;
}

bool MembershipView::AllRequiredIn(uint64_t step, const RankBits& have) const {
  if (late.empty()) {
    for (size_t w = 0; w < live.size(); ++w) {
      if (live[w] & ~have[w]) return false;
    }
    return true;
  }
  const RankBits required = Required(step);
  for (size_t w = 0; w < required.size(); ++w) {
    if (required[w] & ~have[w]) return false;
  }
  return true;
}

std::vector<uint32_t> MembershipView::LiveRanks() const {
  std::vector<uint32_t> result;
  for (uint32_t r = 0; r < world_size; ++r) {
    if (TestRank(live, r)) result.push_back(r);
  }
  return result;
}

absl::Status MembershipView::CheckCaller(uint32_t rank, uint64_t caller_epoch) const {
  if (rank >= world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker_rank: ", rank, " is not below world_size ", world_size));
  }
  const RankRecord& r = ranks[rank];
  switch (r.state) {
    case RankState::kExpected:
      if (caller_epoch > 0 && caller_epoch < first_epoch) {
        // A worker of the job from before this shard restarted (it restored the job): its call
        // reached the new process without a lost connection, so tell it as if one was lost.
        return absl::UnavailableError(absl::StrCat(
            "epoch: ", caller_epoch, " is from before this shard restarted; worker_rank ", rank,
            " must Join again (rejoin) and repeat the step"));
      }
      return absl::FailedPreconditionError(
          absl::StrCat("worker_rank: ", rank, " has not joined this shard; call Join first"));
    case RankState::kDropped:
      return absl::AbortedError(absl::StrCat("worker_rank: ", rank,
                                             " was dropped from the live set after a step "
                                             "timeout; Join again to continue"));
    case RankState::kLeft:
      return absl::AbortedError(
          absl::StrCat("worker_rank: ", rank, " has left the job; Join again to continue"));
    case RankState::kJoined:
      break;
  }
  if (caller_epoch > epoch) {
    return absl::InvalidArgumentError(
        absl::StrCat("epoch: ", caller_epoch, " is newer than the job's epoch ", epoch));
  }
  if (caller_epoch < r.join_epoch) {
    return absl::AbortedError(absl::StrCat("epoch: ", caller_epoch, " is older than worker_rank ",
                                           rank, "'s latest Join (epoch ", r.join_epoch,
                                           "); this session was replaced"));
  }
  return absl::OkStatus();
}

absl::Status MembershipView::CheckStepOfCaller(uint32_t rank, uint64_t step) const {
  const RankRecord& r = ranks[rank];
  if (r.from_step > step) {
    return absl::FailedPreconditionError(absl::StrCat("step: ", step, " is before step ",
                                                      r.from_step, " at which worker_rank ", rank,
                                                      " was readmitted"));
  }
  return absl::OkStatus();
}

Membership::Membership(uint32_t world_size, uint64_t first_epoch)
    : world_size_(world_size), first_epoch_(first_epoch), ranks_(world_size) {
  absl::MutexLock lock(&mu_);
  epoch_ = first_epoch;
  PublishLocked();
}

std::shared_ptr<const MembershipView> Membership::View() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

void Membership::PublishLocked() {
  auto view = std::make_shared<MembershipView>();
  view->epoch = epoch_;
  view->first_epoch = first_epoch_;
  view->world_size = world_size_;
  view->started = started_;
  view->ranks = ranks_;
  view->live.assign(RankWords(world_size_), 0);
  for (uint32_t r = 0; r < world_size_; ++r) {
    const RankRecord& rank = ranks_[r];
    if (rank.state == RankState::kExpected || rank.state == RankState::kJoined) {
      SetRank(view->live, r);
      if (rank.from_step > 0) view->late.push_back({r, rank.from_step});
    }
  }
  view_ = std::move(view);
}

Membership::Admission Membership::Join(uint32_t rank, uint64_t first_step, uint64_t resume_step,
                                       uint64_t session_epoch) {
  absl::MutexLock lock(&mu_);
  RankRecord& r = ranks_[rank];
  if (session_epoch != 0 && r.state == RankState::kJoined && session_epoch >= r.join_epoch &&
      session_epoch <= epoch_) {
    // The session goes on: same live set, same epochs (calls of the lost connection may still
    // arrive over the worker's other connections, after this Join), repeats allowed from now on.
    r.resumed_epoch = r.join_epoch;
    PublishLocked();
    return {epoch_, resume_step, /*resumed=*/true};
  }
  if (r.state == RankState::kExpected) {
    // Awaited from step 0 like every rank; but a worker that starts later (another shard already
    // went on without it) moves that with its first call, as a readmitted one does.
    r.state = RankState::kJoined;
    r.join_epoch = epoch_;
    r.awaiting_first_call = true;
    started_ = started_ || std::none_of(ranks_.begin(), ranks_.end(), [](const RankRecord& x) {
                 return x.state == RankState::kExpected;
               });
    PublishLocked();
    return {epoch_, first_step};
  }
  // Readmission: the live set changes (or the rank's session is replaced).
  ++epoch_;
  r.state = RankState::kJoined;
  r.join_epoch = epoch_;
  r.from_step = resume_step;
  r.awaiting_first_call = true;
  PublishLocked();
  return {epoch_, resume_step};
}

bool Membership::NoteFirstCall(uint32_t rank, uint64_t step) {
  absl::MutexLock lock(&mu_);
  RankRecord& r = ranks_[rank];
  if (!r.awaiting_first_call) return false;
  r.awaiting_first_call = false;
  const bool moved = step > r.from_step;
  if (moved) r.from_step = step;
  PublishLocked();
  return moved;
}

int Membership::Drop(absl::Span<const uint32_t> ranks) {
  absl::MutexLock lock(&mu_);
  int dropped = 0;
  for (const uint32_t rank : ranks) {
    RankRecord& r = ranks_[rank];
    if (r.state == RankState::kExpected || r.state == RankState::kJoined) {
      r.state = RankState::kDropped;
      r.awaiting_first_call = false;
      ++dropped;
    }
  }
  if (dropped > 0) {
    ++epoch_;
    PublishLocked();
  }
  return dropped;
}

uint64_t Membership::Leave(uint32_t rank) {
  absl::MutexLock lock(&mu_);
  ranks_[rank].state = RankState::kLeft;
  ranks_[rank].awaiting_first_call = false;
  ++epoch_;
  PublishLocked();
  return epoch_;
}

bool Membership::AnyLive() const {
  absl::MutexLock lock(&mu_);
  for (const RankRecord& r : ranks_) {
    if (r.state == RankState::kExpected || r.state == RankState::kJoined) return true;
  }
  return false;
}

void Membership::MarkStarted() {
  absl::MutexLock lock(&mu_);
  started_ = true;
  PublishLocked();
}

std::vector<uint32_t> Membership::NeverJoined() const {
  absl::MutexLock lock(&mu_);
  std::vector<uint32_t> ranks;
  if (started_) return ranks;
  for (uint32_t r = 0; r < world_size_; ++r) {
    if (ranks_[r].state == RankState::kExpected) ranks.push_back(r);
  }
  return ranks;
}

}  // namespace ternps::server
