// The push window without a network: a fake transport records what the window prepares, starts,
// cancels and holds. Checked: each shard's calls start in plan order whatever order they are
// encoded in, at most calls_in_flight_per_shard at once, a call that failed to encode is skipped,
// a lost connection holds the shard's later calls and Requeue sends exactly the unanswered ones
// again, CancelAll cancels what is in flight and sends nothing more; and, with encoder and
// "network" threads racing (run under ThreadSanitizer in tests/run.sh), every call is taken in
// order within the window and started exactly once.
#include "worker/client/push_window.h"

#include <algorithm>
#include <deque>
#include <random>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace ternps::worker {
namespace {

using Ending = PushWindow::Ending;

class FakeTransport : public PushWindow::Transport {
 public:
  explicit FakeTransport(std::vector<uint32_t> shard_of_call, int limit)
      : shard_of_call_(std::move(shard_of_call)), limit_(limit) {}

  void Prepare(size_t call) override {
    absl::MutexLock lock(&mu_);
    const uint32_t s = shard_of_call_[call];
    if (in_flight_.size() <= s) in_flight_.resize(s + 1, 0);
    ++in_flight_[s];
    if (limit_ > 0 && in_flight_[s] > limit_) over_limit_ = true;
    prepared_.push_back(call);
  }
  void Start(size_t call) override {
    absl::MutexLock lock(&mu_);
    started_.push_back(call);
    wire_.push_back(call);
  }
  void Cancel(size_t call) override {
    absl::MutexLock lock(&mu_);
    cancelled_.push_back(call);
  }
  void Held(size_t call) override {
    absl::MutexLock lock(&mu_);
    held_.push_back(call);
  }
  // The network answers `call` (started, not finished yet) with `ending`.
  PushWindow::Finish FinishCall(PushWindow& window, size_t call, Ending ending) {
    {
      absl::MutexLock lock(&mu_);
      const auto it = std::find(wire_.begin(), wire_.end(), call);
      EXPECT_NE(it, wire_.end()) << "call " << call << " is not in flight";
      if (it != wire_.end()) wire_.erase(it);
      --in_flight_[shard_of_call_[call]];
    }
    return window.Finished(call, ending);
  }
  // The network: takes a started call off the wire (any of them, `pick` chooses) to finish it.
  bool TakeFromWire(std::mt19937& rng, size_t* call) {
    absl::MutexLock lock(&mu_);
    if (wire_.empty()) return false;
    const size_t i = std::uniform_int_distribution<size_t>(0, wire_.size() - 1)(rng);
    *call = wire_[i];
    wire_.erase(wire_.begin() + static_cast<std::ptrdiff_t>(i));
    --in_flight_[shard_of_call_[*call]];
    return true;
  }
  std::vector<size_t> prepared() const {
    absl::MutexLock lock(&mu_);
    return prepared_;
  }
  std::vector<size_t> started() const {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  std::vector<size_t> held() const {
    absl::MutexLock lock(&mu_);
    return held_;
  }
  std::vector<size_t> cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }
  bool over_limit() const {
    absl::MutexLock lock(&mu_);
    return over_limit_;
  }
  void ClearLog() {
    absl::MutexLock lock(&mu_);
    started_.clear();
    held_.clear();
    cancelled_.clear();
    prepared_.clear();
  }

 private:
  const std::vector<uint32_t> shard_of_call_;
  const int limit_;
  mutable absl::Mutex mu_;
  std::vector<int> in_flight_ ABSL_GUARDED_BY(mu_);
  bool over_limit_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<size_t> prepared_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> started_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> cancelled_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> held_ ABSL_GUARDED_BY(mu_);
  std::vector<size_t> wire_ ABSL_GUARDED_BY(mu_);
};

std::vector<size_t> OfShard(const std::vector<size_t>& calls, const std::vector<uint32_t>& shard_of,
                            uint32_t s) {
  std::vector<size_t> out;
  for (const size_t c : calls) {
    if (shard_of[c] == s) out.push_back(c);
  }
  return out;
}

TEST(PushWindowTest, CallsStartInPlanOrderWithinTheWindowWhateverOrderTheyAreEncodedIn) {
  const std::vector<uint32_t> shard_of = {0, 1, 0, 1, 0, 0};
  FakeTransport transport(shard_of, 2);
  PushWindow window(shard_of, 2, /*limit_per_shard=*/2, &transport);
  window.Begin();
  window.Encoded(5, true);
  window.Encoded(4, true);
  window.Encoded(2, true);
  EXPECT_TRUE(transport.started().empty()) << "call 0, first of shard 0, is not encoded yet";
  window.Encoded(3, true);
  EXPECT_TRUE(transport.started().empty()) << "call 1, first of shard 1, is not encoded yet";
  window.Encoded(0, true);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{0, 2})) << "two in flight for shard 0";
  window.Encoded(1, true);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{0, 2, 1, 3}));
  EXPECT_FALSE(transport.FinishCall(window, 2, Ending::kDone).lost);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{0, 2, 1, 3, 4}));
  transport.FinishCall(window, 0, Ending::kDone);
  transport.FinishCall(window, 4, Ending::kDone);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{0, 2, 1, 3, 4, 5}));
  EXPECT_FALSE(transport.over_limit());
  EXPECT_TRUE(transport.held().empty());
}

TEST(PushWindowTest, ACallThatFailedToEncodeIsSkipped) {
  const std::vector<uint32_t> shard_of = {0, 0, 0};
  FakeTransport transport(shard_of, 1);
  PushWindow window(shard_of, 1, 1, &transport);
  window.Begin();
  window.Encoded(1, true);
  window.Encoded(0, false);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{1}));
  window.Encoded(2, true);
  transport.FinishCall(window, 1, Ending::kDone);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{1, 2}));
}

TEST(PushWindowTest, ALostConnectionHoldsTheShardAndRequeueSendsOnlyWhatWasNotAnswered) {
  const std::vector<uint32_t> shard_of = {0, 1, 0, 1, 0};
  FakeTransport transport(shard_of, 1);
  PushWindow window(shard_of, 2, 1, &transport);
  window.Begin();
  for (size_t c = 0; c < shard_of.size(); ++c) window.Encoded(c, true);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{0, 1}));
  transport.FinishCall(window, 0, Ending::kDone);
  window.Answered(0);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{0, 1, 2}));
  const PushWindow::Finish lost = transport.FinishCall(window, 2, Ending::kUnavailable);
  EXPECT_TRUE(lost.lost);
  EXPECT_TRUE(lost.first_loss);
  EXPECT_EQ(transport.held(), (std::vector<size_t>{4})) << "shard 0's next call waits";
  // Shard 1 goes on; a cancellation it did not ask for is a lost connection too.
  const PushWindow::Finish second = transport.FinishCall(window, 1, Ending::kCancelled);
  EXPECT_TRUE(second.lost);
  EXPECT_TRUE(second.first_loss);
  EXPECT_EQ(transport.held(), (std::vector<size_t>{4, 3}));
  EXPECT_EQ(window.LostShards(), (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(window.ShardsToReconnect(), (std::vector<uint32_t>{0, 1}));
  window.MarkReconnected({0});
  EXPECT_EQ(window.ShardsToReconnect(), (std::vector<uint32_t>{1}));
  transport.ClearLog();
  EXPECT_EQ(window.Requeue({0}), (std::vector<size_t>{2, 4})) << "call 0 was answered";
  window.SendNext(0);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{2}));
  transport.FinishCall(window, 2, Ending::kDone);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{2, 4}));
  EXPECT_EQ(window.LostShards(), (std::vector<uint32_t>{1}));
}

TEST(PushWindowTest, CancelAllCancelsWhatIsInFlightAndSendsNothingMore) {
  const std::vector<uint32_t> shard_of = {0, 0, 1};
  FakeTransport transport(shard_of, 0);
  PushWindow window(shard_of, 2, 0, &transport);
  window.Begin();
  window.Encoded(0, true);
  window.Encoded(2, true);
  transport.FinishCall(window, 2, Ending::kDone);
  window.CancelAll();
  EXPECT_TRUE(window.cancelled());
  EXPECT_EQ(transport.cancelled(), (std::vector<size_t>{0})) << "only the call in flight";
  window.Encoded(1, true);
  EXPECT_EQ(transport.started(), (std::vector<size_t>{0, 2}));
  EXPECT_EQ(transport.held(), (std::vector<size_t>{1}));
  // Our own cancellation is not a lost connection: nothing to resend.
  EXPECT_FALSE(transport.FinishCall(window, 0, Ending::kCancelled).lost);
  EXPECT_TRUE(window.LostShards().empty());
  // A new step starts clean.
  window.Begin();
  EXPECT_FALSE(window.cancelled());
}

TEST(PushWindowTest, RacingEncodersAndAnswersStartEveryCallOnceInOrderWithinTheWindow) {
  constexpr uint32_t kShards = 3;
  constexpr size_t kCalls = 60;
  std::vector<uint32_t> shard_of(kCalls);
  for (size_t c = 0; c < kCalls; ++c) shard_of[c] = static_cast<uint32_t>((c * 7) % kShards);
  for (const int limit : {0, 1, 2}) {
    for (uint32_t seed = 1; seed <= 5; ++seed) {
      SCOPED_TRACE(::testing::Message() << "limit " << limit << ", seed " << seed);
      FakeTransport transport(shard_of, limit);
      PushWindow window(shard_of, kShards, limit, &transport);
      window.Begin();
      std::vector<size_t> order(kCalls);
      for (size_t c = 0; c < kCalls; ++c) order[c] = c;
      std::shuffle(order.begin(), order.end(), std::mt19937(seed));
      std::vector<std::thread> threads;
      for (int e = 0; e < 3; ++e) {
        threads.emplace_back([&, e] {
          for (size_t i = static_cast<size_t>(e); i < kCalls; i += 3)
            window.Encoded(order[i], true);
        });
      }
      absl::Mutex done_mu;
      size_t done = 0;
      for (int n = 0; n < 2; ++n) {
        threads.emplace_back([&, n] {
          std::mt19937 rng(seed * 10 + static_cast<uint32_t>(n));
          for (;;) {
            {
              absl::MutexLock lock(&done_mu);
              if (done == kCalls) return;
            }
            size_t call = 0;
            if (!transport.TakeFromWire(rng, &call)) {
              std::this_thread::yield();  // nothing on the wire yet: spin, not a sleep
              continue;
            }
            window.Finished(call, Ending::kDone);
            window.Answered(call);
            absl::MutexLock lock(&done_mu);
            ++done;
          }
        });
      }
      for (std::thread& t : threads) t.join();
      // Taken in order under the window's lock (Prepare); Start runs outside it, so two calls
      // taken by two threads may reach gRPC in either order, both without waiting for anything.
      const std::vector<size_t> prepared = transport.prepared();
      ASSERT_EQ(prepared.size(), kCalls);
      for (uint32_t s = 0; s < kShards; ++s) {
        const std::vector<size_t> mine = OfShard(prepared, shard_of, s);
        EXPECT_TRUE(std::is_sorted(mine.begin(), mine.end())) << "shard " << s;
        EXPECT_EQ(std::adjacent_find(mine.begin(), mine.end()), mine.end()) << "shard " << s;
      }
      std::vector<size_t> started = transport.started();
      std::sort(started.begin(), started.end());
      for (size_t c = 0; c < kCalls; ++c) EXPECT_EQ(started[c], c) << "each call starts once";
      EXPECT_FALSE(transport.over_limit());
      EXPECT_TRUE(transport.held().empty());
      EXPECT_TRUE(window.LostShards().empty());
    }
  }
}

}  // namespace
}  // namespace ternps::worker
