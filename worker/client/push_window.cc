#include "worker/client/push_window.h"

#include <utility>

namespace ternps::worker {

PushWindow::PushWindow(std::vector<uint32_t> shard_of_call, uint32_t shards, int limit_per_shard,
                       Transport* transport)
    : shard_of_call_(std::move(shard_of_call)), limit_(limit_per_shard), transport_(transport) {
  absl::MutexLock lock(&mu_);
  calls_.assign(shard_of_call_.size(), Call{});
  flights_.assign(shards, Flight{});
}

void PushWindow::Begin() {
  absl::MutexLock lock(&mu_);
  cancelled_ = false;
  for (Flight& f : flights_) f = Flight{};
  for (size_t c = 0; c < calls_.size(); ++c) {
    calls_[c] = Call{};
    flights_[shard_of_call_[c]].order.push_back(c);
  }
}

void PushWindow::TakeNextLocked(uint32_t shard, std::vector<size_t>* start,
                                std::vector<size_t>* held) {
  Flight& f = flights_[shard];
  while (f.next < f.order.size()) {
    const size_t c = f.order[f.next];
    Call& call = calls_[c];
    if (call.encoding == Encoding::kFailed) {  // never sent; skip it
      ++f.next;
      continue;
    }
    if (call.encoding != Encoding::kReady) break;
    if (cancelled_ || f.lost) {
      // The step has failed (its error is set), or this shard's connection was lost: the call
      // waits for a Requeue after the reconnection (which sends every unanswered call of the
      // shard), and so does every later encoded one (no call of this shard will complete to
      // release them).
      ++f.next;
      held->push_back(c);
      continue;
    }
    if (limit_ > 0 && f.in_flight >= limit_) break;
    ++f.in_flight;
    ++f.next;
    call.in_call = true;
    transport_->Prepare(c);
    start->push_back(c);
  }
}

void PushWindow::Run(const std::vector<size_t>& start, const std::vector<size_t>& held) {
  for (const size_t c : held) transport_->Held(c);
  for (const size_t c : start) transport_->Start(c);
}

void PushWindow::Encoded(size_t call, bool sendable) {
  std::vector<size_t> start;
  std::vector<size_t> held;
  {
    absl::MutexLock lock(&mu_);
    calls_[call].encoding = sendable ? Encoding::kReady : Encoding::kFailed;
    TakeNextLocked(shard_of_call_[call], &start, &held);
  }
  Run(start, held);
}

PushWindow::Finish PushWindow::Finished(size_t call, Ending ending) {
  Finish finish;
  std::vector<size_t> start;
  std::vector<size_t> held;
  {
    absl::MutexLock lock(&mu_);
    const uint32_t shard = shard_of_call_[call];
    Flight& f = flights_[shard];
    calls_[call].in_call = false;
    --f.in_flight;
    finish.lost = ending == Ending::kUnavailable || (ending == Ending::kCancelled && !cancelled_);
    if (finish.lost) {
      calls_[call].lost = true;
      finish.first_loss = !f.lost;
      f.lost = true;
    }
    TakeNextLocked(shard, &start, &held);
  }
  Run(start, held);
  return finish;
}

void PushWindow::Answered(size_t call) {
  absl::MutexLock lock(&mu_);
  calls_[call].answered = true;
}

void PushWindow::CancelAll() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  for (size_t c = 0; c < calls_.size(); ++c) {
    if (calls_[c].in_call) transport_->Cancel(c);
  }
}

bool PushWindow::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

std::vector<uint32_t> PushWindow::LostShards() const {
  absl::MutexLock lock(&mu_);
  std::vector<bool> lost(flights_.size(), false);
  for (size_t c = 0; c < calls_.size(); ++c) {
    if (calls_[c].lost) lost[shard_of_call_[c]] = true;
  }
  std::vector<uint32_t> shards;
  for (uint32_t s = 0; s < lost.size(); ++s) {
    if (lost[s]) shards.push_back(s);
  }
  return shards;
}

std::vector<uint32_t> PushWindow::ShardsToReconnect() const {
  absl::MutexLock lock(&mu_);
  std::vector<uint32_t> shards;
  for (uint32_t s = 0; s < flights_.size(); ++s) {
    if (flights_[s].lost && !flights_[s].reconnected) shards.push_back(s);
  }
  return shards;
}

void PushWindow::MarkReconnected(const std::vector<uint32_t>& shards) {
  absl::MutexLock lock(&mu_);
  for (const uint32_t s : shards) flights_[s].reconnected = true;
}

std::vector<size_t> PushWindow::Requeue(const std::vector<uint32_t>& shards) {
  absl::MutexLock lock(&mu_);
  std::vector<bool> requeued(flights_.size(), false);
  for (const uint32_t s : shards) {
    flights_[s] = Flight{};
    requeued[s] = true;
  }
  std::vector<size_t> again;
  for (size_t c = 0; c < calls_.size(); ++c) {
    const uint32_t s = shard_of_call_[c];
    if (!requeued[s] || calls_[c].answered) continue;
    calls_[c].lost = false;
    flights_[s].order.push_back(c);
    again.push_back(c);
  }
  return again;
}

void PushWindow::SendNext(uint32_t shard) {
  std::vector<size_t> start;
  std::vector<size_t> held;
  {
    absl::MutexLock lock(&mu_);
    TakeNextLocked(shard, &start, &held);
  }
  Run(start, held);
}

}  // namespace ternps::worker
