// PartitionAggregator alone: the scaler exchange, exact INT_SUM sums (16-bit sums, and sums kept
// as the 4-bit answer itself at world sizes 4-7), the two-step window, duplicates, and step
// deadlines read from a ManualClock (no sleeping).
#include "server/aggregator.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ternps::server {
namespace {

namespace v1 = ::ternps::v1;
using ::testing::HasSubstr;

constexpr uint32_t kElements = 8;
constexpr uint32_t kMaxWorld = 5;

class AggregatorTest : public ::testing::Test {
 protected:
  // A partition of `elements` elements in a job of `world` ranks, all joined.
  void Make(common::PartitionRoute route, uint32_t world = 2, uint32_t elements = kElements,
            bool int_sum_radix = false) {
    ASSERT_LE(world, kMaxWorld);
    elements_ = elements;
    PartitionConfig config;
    config.id = 5;
    config.elements = elements;
    config.route = route;
    config.int_sum_radix = int_sum_radix;
    config.step_timeout = absl::Seconds(10);
    config.clock = &clock_;
    aggregator_ = std::make_unique<PartitionAggregator>(config);
    world_ = world;
    members_ = std::make_unique<Membership>(world);
    for (uint32_t r = 0; r < world; ++r) members_->Join(r, 0, 0);
    for (auto& a : active_) a.store(absl::ToUnixNanos(clock_.Now()));
    for (auto& d : disconnected_) d.store(INT64_MAX);
  }
  std::vector<uint32_t> Expired() {
    std::vector<uint32_t> missing;
    absl::MutexLock lock(&aggregator_->mu());
    aggregator_->CollectExpired(
        clock_.Now(), *members_->View(), absl::MakeConstSpan(active_, world_),
        absl::MakeConstSpan(disconnected_, world_), absl::Seconds(2), &missing);
    return missing;
  }
  // Drops the ranks whose step deadline passed and rechecks: the completed steps.
  std::vector<CompletionStats> DropExpired() {
    members_->Drop(Expired());
    Finisher finisher;
    std::vector<CompletionStats> completed;
    absl::MutexLock lock(&aggregator_->mu());
    aggregator_->Recheck(*members_->View(), finisher, &completed);
    return completed;
  }

  // Answers the calls still waiting (CANCELLED) while the test's status variables live: a call
  // left waiting is answered (ABORTED) when the aggregator is destroyed, after the test body.
  void AnswerWaitingCalls() {
    Finisher finisher;
    absl::MutexLock lock(&aggregator_->mu());
    aggregator_->FailAll(absl::CancelledError("test over"), finisher);
  }

  // A call of one part that records its status when answered.
  template <typename Response>
  std::shared_ptr<PendingCall<Response>> Call(Response* response, absl::Status* status) {
    return std::make_shared<PendingCall<Response>>(response, 1,
                                                   [status](absl::Status st) { *status = st; });
  }

  absl::Status Offer(uint32_t rank, uint64_t step, float scaler, v1::ShareScalersResponse* r,
                     absl::Status* answered, bool may_repeat = false) {
    r->add_partition_ids(5);
    r->add_shared_scalers(0.0f);
    Finisher finisher;
    absl::MutexLock lock(&aggregator_->mu());
    if (absl::Status st = aggregator_->CheckOffer(rank, step, 0, may_repeat); !st.ok()) return st;
    aggregator_->Offer(rank, step, scaler, Call(r, answered), 0, *members_->View(), finisher);
    return absl::OkStatus();
  }

  absl::Status Push(uint32_t rank, uint64_t step, const v1::PartitionPayload& payload,
                    PushPullAnswer* r, absl::Status* answered, bool may_repeat = false) {
    r->averages.resize(1);
    v1::PushPullRequest request;
    *request.add_partitions() = payload;
    const common::PayloadView view = ViewOf(request).partitions[0];
    Finisher finisher;
    std::vector<CompletionStats> completed;
    absl::MutexLock lock(&aggregator_->mu());
    if (absl::Status st = aggregator_->CheckPush(rank, step, view, 0, may_repeat); !st.ok()) {
      return st;
    }
    aggregator_->Push(rank, step, view, Call(r, answered), 0, *members_->View(), finisher,
                      &completed);
    return absl::OkStatus();
  }

  v1::PartitionPayload Ternary(uint8_t byte, float scaler) const {
    std::string codes((elements_ + 3) / 4, static_cast<char>(byte));
    // The unused high codes of the last byte are 0 on the wire.
    if (elements_ % 4 != 0) codes.back() &= static_cast<char>((1u << (2 * (elements_ % 4))) - 1u);
    return TernaryCodes(std::move(codes), scaler);
  }
  v1::PartitionPayload TernaryCodes(std::string codes, float scaler) const {
    v1::PartitionPayload p;
    p.set_partition_id(5);
    p.set_elements(elements_);
    p.set_encoding(v1::TERNARY_2BIT);
    p.set_scaler(scaler);
    p.set_data(std::move(codes));
    return p;
  }

  static v1::PartitionPayload Fp32(float value) {
    std::vector<float> g(kElements, value);
    v1::PartitionPayload p;
    p.set_partition_id(5);
    p.set_elements(kElements);
    p.set_encoding(v1::FP32);
    p.mutable_data()->resize(common::Fp32Bytes(kElements));
    EXPECT_TRUE(
        common::EncodeFp32(g, absl::MakeSpan(reinterpret_cast<uint8_t*>(p.mutable_data()->data()),
                                             p.data().size()))
            .ok());
    return p;
  }

  common::ManualClock clock_;
  std::atomic<int64_t> active_[kMaxWorld];  // per rank: last active (Job::NoteActive)
  // Per rank: when its Watch closed (INT64_MAX: open, or none).
  std::atomic<int64_t> disconnected_[kMaxWorld];
  uint32_t world_ = 0;
  uint32_t elements_ = kElements;
  std::unique_ptr<Membership> members_;
  std::unique_ptr<PartitionAggregator> aggregator_;
};

const common::PartitionRoute kIntSum{v1::TERNARY_2BIT, common::Aggregation::kIntSum, v1::INT_SUM};
const common::PartitionRoute kFp32{v1::FP32, common::Aggregation::kFp32, v1::FP32};

TEST_F(AggregatorTest, SharedScalerThenExactIntegerSum) {
  Make(kIntSum);
  v1::ShareScalersResponse s0, s1;
  absl::Status a0 = absl::UnknownError("unanswered"), a1 = a0;
  ASSERT_TRUE(Offer(0, 0, 0.5f, &s0, &a0).ok());
  EXPECT_EQ(a0.code(), absl::StatusCode::kUnknown);  // waits for rank 1
  // A push before the scalers are settled is refused.
  PushPullAnswer early;
  absl::Status unused;
  const absl::Status refused = Push(0, 0, Ternary(0x55, 0.5f), &early, &unused);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("call ShareScalers"));
  ASSERT_TRUE(Offer(1, 0, 2.0f, &s1, &a1).ok());
  ASSERT_TRUE(a0.ok() && a1.ok());
  EXPECT_EQ(s0.shared_scalers(0), 2.0f);
  EXPECT_EQ(s1.contributors(), 2u);
  // Pushes must carry exactly the shared scaler.
  PushPullAnswer r0, r1;
  absl::Status p0 = absl::UnknownError("unanswered"), p1 = p0;
  EXPECT_EQ(Push(0, 0, Ternary(0x55, 0.5f), &r0, &p0).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(Push(0, 0, Ternary(0x55, 2.0f), &r0, &p0).ok());  // all +1
  ASSERT_TRUE(Push(1, 0, Ternary(0x99, 2.0f), &r1, &p1).ok());  // +1, -1, +1, -1, ...
  ASSERT_TRUE(p0.ok() && p1.ok());
  const AnsweredAverage& avg = r1.averages[0];
  EXPECT_EQ(avg.head.encoding, v1::INT_SUM);
  EXPECT_EQ(avg.head.contributors, 2u);
  EXPECT_EQ(avg.head.scaler, 2.0f);
  EXPECT_EQ(r0.averages[0].bytes, avg.bytes);  // one encoding, shared by both answers
  std::vector<float> out(kElements, 0.0f);
  ASSERT_TRUE(common::DecodeIntSumAdd(avg.bytes->span(), 2, 2.0f, absl::MakeSpan(out)).ok());
  for (uint32_t k = 0; k < kElements; ++k) EXPECT_EQ(out[k], k % 2 == 0 ? 2.0f : 0.0f) << k;
  EXPECT_EQ(aggregator_->base_step(), 1u);
}

TEST_F(AggregatorTest, StepWindowAndDuplicates) {
  Make(kFp32);
  PushPullAnswer r;
  absl::Status answered;
  const absl::Status ahead = Push(0, 2, Fp32(1), &r, &answered);
  EXPECT_EQ(ahead.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(ahead.message()), HasSubstr("too far ahead"));
  ASSERT_TRUE(Push(0, 0, Fp32(1), &r, &answered).ok());
  PushPullAnswer again;
  EXPECT_EQ(Push(0, 0, Fp32(1), &again, &answered).code(), absl::StatusCode::kAlreadyExists);
  // Rank 0 may run one step ahead.
  PushPullAnswer next;
  absl::Status next_answered = absl::UnknownError("unanswered");
  ASSERT_TRUE(Push(0, 1, Fp32(5), &next, &next_answered).ok());
  PushPullAnswer r1;
  absl::Status a1;
  ASSERT_TRUE(Push(1, 0, Fp32(3), &r1, &a1).ok());
  EXPECT_EQ(aggregator_->base_step(), 1u);
  EXPECT_EQ(next_answered.code(), absl::StatusCode::kUnknown);  // step 1 still waits for rank 1
  const absl::Status stale = Push(1, 0, Fp32(3), &r1, &a1);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(stale.message()), HasSubstr("already complete"));
  AnswerWaitingCalls();  // step 1 still waits
}

// A rank whose session was resumed after a lost connection repeats what the connection carried:
// an offer or push the partition already has is answered like the first and counted once, and a
// push of the step that just completed is answered with its average. Without may_repeat the same
// calls stay ALREADY_EXISTS / "already complete".
TEST_F(AggregatorTest, RepeatsOfAResumedSessionAreAnsweredAndCountedOnce) {
  Make(kIntSum);
  v1::ShareScalersResponse s0, s0_again, s1;
  absl::Status a0 = absl::UnknownError("unanswered"), a0_again = a0, a1 = a0;
  ASSERT_TRUE(Offer(0, 0, 2.0f, &s0, &a0).ok());
  EXPECT_EQ(Offer(0, 0, 2.0f, &s0_again, &a0_again).code(), absl::StatusCode::kAlreadyExists);
  v1::ShareScalersResponse repeat;
  absl::Status repeat_answered = absl::UnknownError("unanswered");
  // A different scaler in the repeat cannot move the shared maximum: the first offer counts.
  ASSERT_TRUE(Offer(0, 0, 9.0f, &repeat, &repeat_answered, /*may_repeat=*/true).ok());
  EXPECT_EQ(repeat_answered.code(), absl::StatusCode::kUnknown);  // waits for rank 1
  ASSERT_TRUE(Offer(1, 0, 1.0f, &s1, &a1).ok());
  ASSERT_TRUE(repeat_answered.ok());
  EXPECT_EQ(repeat.shared_scalers(0), 2.0f);
  EXPECT_EQ(s1.shared_scalers(0), 2.0f);
  EXPECT_EQ(repeat.contributors(), 2u);

  PushPullAnswer p0, p0_again, p1, replay;
  absl::Status b0 = absl::UnknownError("unanswered"), b0_again = b0, b1 = b0, b_replay = b0;
  ASSERT_TRUE(Push(0, 0, Ternary(0x55, 2.0f), &p0, &b0).ok());  // all +1
  EXPECT_EQ(Push(0, 0, Ternary(0x55, 2.0f), &p0_again, &b0_again).code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(Push(0, 0, Ternary(0x55, 2.0f), &p0_again, &b0_again, /*may_repeat=*/true).ok());
  EXPECT_EQ(b0_again.code(), absl::StatusCode::kUnknown);
  ASSERT_TRUE(Push(1, 0, Ternary(0x55, 2.0f), &p1, &b1).ok());
  ASSERT_TRUE(b0.ok() && b0_again.ok() && b1.ok());
  // Counted once: two contributors, k = 2 everywhere, the same bytes for the repeat.
  EXPECT_EQ(p0.averages[0].head.contributors, 2u);
  EXPECT_EQ(p0_again.averages[0].head.contributors, 2u);
  ASSERT_EQ(p0_again.averages[0].bytes->size(), p1.averages[0].bytes->size());
  EXPECT_EQ(std::memcmp(p0_again.averages[0].bytes->data(), p1.averages[0].bytes->data(),
                        p1.averages[0].bytes->size()),
            0);
  std::vector<float> decoded(kElements, 0.0f);
  ASSERT_TRUE(
      common::DecodeIntSumAdd(p1.averages[0].bytes->span(), 2, 2.0f, absl::MakeSpan(decoded)).ok());
  EXPECT_THAT(decoded, ::testing::Each(2.0f));
  // Step 0 is complete: a resumed session's repeat gets its average, anyone else the old error.
  EXPECT_EQ(aggregator_->base_step(), 1u);
  const absl::Status stale = Push(1, 0, Ternary(0x55, 2.0f), &replay, &b_replay);
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(Push(1, 0, Ternary(0x55, 2.0f), &replay, &b_replay, /*may_repeat=*/true).ok());
  ASSERT_TRUE(b_replay.ok());
  EXPECT_EQ(replay.averages[0].bytes, p1.averages[0].bytes);
  v1::ShareScalersResponse late;
  absl::Status late_answered = absl::UnknownError("unanswered");
  ASSERT_TRUE(Offer(1, 0, 1.0f, &late, &late_answered, /*may_repeat=*/true).ok());
  EXPECT_EQ(late.shared_scalers(0), 2.0f);
  // Only the newest completed step is kept without recovery.
  PushPullAnswer q0, q1, old;
  absl::Status c0, c1, c_old;
  v1::ShareScalersResponse t0, t1;
  absl::Status d0, d1;
  ASSERT_TRUE(Offer(0, 1, 1.0f, &t0, &d0).ok());
  ASSERT_TRUE(Offer(1, 1, 1.0f, &t1, &d1).ok());
  ASSERT_TRUE(Push(0, 1, Ternary(0x00, 1.0f), &q0, &c0).ok());
  ASSERT_TRUE(Push(1, 1, Ternary(0x00, 1.0f), &q1, &c1).ok());
  EXPECT_EQ(Push(1, 0, Ternary(0x55, 2.0f), &old, &c_old, /*may_repeat=*/true).code(),
            absl::StatusCode::kFailedPrecondition);
}

// Every push is finite, their sum is not: the shard answers with an error instead of an average
// (and neither crashes nor sends infinities), and the next step works.
TEST_F(AggregatorTest, AnAverageThatOverflowsIsAnErrorNotACrash) {
  Make(kFp32);
  PushPullAnswer r0, r1;
  absl::Status a0 = absl::UnknownError("unanswered"), a1 = a0;
  ASSERT_TRUE(Push(0, 0, Fp32(3e38f), &r0, &a0).ok());
  ASSERT_TRUE(Push(1, 0, Fp32(3e38f), &r1, &a1).ok());
  EXPECT_EQ(a0.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(a1.message()), HasSubstr("overflows float32"));
  EXPECT_EQ(aggregator_->base_step(), 1u);
  PushPullAnswer q0, q1;
  absl::Status b0 = absl::UnknownError("unanswered"), b1 = b0;
  ASSERT_TRUE(Push(0, 1, Fp32(1.0f), &q0, &b0).ok());
  ASSERT_TRUE(Push(1, 1, Fp32(3.0f), &q1, &b1).ok());
  ASSERT_TRUE(b0.ok() && b1.ok()) << b0 << b1;
  const auto* avg = reinterpret_cast<const float*>(q1.averages[0].bytes->data());
  EXPECT_EQ(avg[0], 2.0f);
}

TEST_F(AggregatorTest, DeadlinesComeFromTheClock) {
  Make(kFp32);
  PushPullAnswer r0;
  absl::Status a0 = absl::UnknownError("unanswered");
  ASSERT_TRUE(Push(0, 0, Fp32(4), &r0, &a0).ok());
  clock_.Advance(absl::Seconds(9));
  EXPECT_TRUE(Expired().empty());
  clock_.Advance(absl::Seconds(2));
  std::vector<uint32_t> missing = Expired();
  EXPECT_EQ(missing, std::vector<uint32_t>{1});
  // Once the membership drops rank 1, the step completes with rank 0 alone.
  const std::vector<CompletionStats> completed = DropExpired();
  ASSERT_EQ(completed.size(), 1u);
  EXPECT_EQ(completed[0].step, 0u);
  ASSERT_TRUE(a0.ok());
  EXPECT_EQ(r0.averages[0].head.contributors, 1u);
  const auto* avg = reinterpret_cast<const float*>(r0.averages[0].bytes->data());
  for (uint32_t k = 0; k < kElements; ++k) EXPECT_EQ(avg[k], 4.0f) << k;  // one push: itself
}

// A rank that has been silent on this shard for step_timeout is not waited for a second full
// timeout by a step that started later (its peers were held up elsewhere, e.g. by another shard
// that waited for the same dead rank); a rank active within the timeout is.
TEST_F(AggregatorTest, ARankSilentForTheTimeoutIsNotWaitedForAgain) {
  Make(kFp32);
  clock_.Advance(absl::Seconds(9));  // rank 1 last active at 0, rank 0 now
  active_[0].store(absl::ToUnixNanos(clock_.Now()));
  PushPullAnswer r0;
  absl::Status a0 = absl::UnknownError("unanswered");
  ASSERT_TRUE(Push(0, 0, Fp32(4), &r0, &a0).ok());  // the step starts at 9 s: deadline 19 s
  EXPECT_TRUE(Expired().empty());
  clock_.Advance(absl::Seconds(1));  // 10 s: rank 1 silent for the whole timeout
  EXPECT_EQ(Expired(), std::vector<uint32_t>{1});
  active_[1].store(absl::ToUnixNanos(clock_.Now()));  // it called after all
  EXPECT_TRUE(Expired().empty());
  AnswerWaitingCalls();
}

// The INT_SUM answer of `codes` (one TERNARY_2BIT payload per contributor) the 16-bit way:
// the reference for the sums kept as 4-bit fields.
std::vector<uint8_t> IntSumOf(const std::vector<std::string>& codes, uint32_t elements) {
  std::vector<int16_t> sums(elements, 0);
  for (const std::string& c : codes) {
    common::AddValidatedTernaryCodes(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(c.data()), c.size()),
        absl::MakeSpan(sums));
  }
  const int n = static_cast<int>(codes.size());
  std::vector<uint8_t> wire(common::IntSumBytes(elements, n));
  EXPECT_TRUE(common::EncodeIntSum(sums, n, absl::MakeSpan(wire)).ok());
  return wire;
}

// World sizes 4 to 7 (4-bit fields) keep the sums as the answer's bytes; the answer is the one
// 16-bit sums give, for an odd element count too (its last, unused nibble is 0), over two steps
// (the second reuses the slot of step 0's buffer or a fresh one while an answer holds it).
TEST_F(AggregatorTest, FourBitSumsAreTheAnswerAtWorldSizesFourToSeven) {
  for (uint32_t world : {4u, 5u}) {
    Make(kIntSum, world, /*elements=*/13);
    for (uint64_t step = 0; step < 2; ++step) {
      SCOPED_TRACE(testing::Message() << "world " << world << " step " << step);
      std::vector<v1::ShareScalersResponse> offered(world);
      std::vector<absl::Status> offer_answers(world);
      for (uint32_t r = 0; r < world; ++r) {
        ASSERT_TRUE(Offer(r, step, 1.5f, &offered[r], &offer_answers[r]).ok());
      }
      // Codes 01 (+1), 10 (-1), 00 in patterns that differ per rank and step.
      const std::vector<uint8_t> patterns = {0x55, 0x99, 0x66, 0x12, 0x58};
      std::vector<std::string> codes;
      std::vector<PushPullAnswer> answers(world);
      std::vector<absl::Status> done(world, absl::UnknownError("unanswered"));
      for (uint32_t r = 0; r < world; ++r) {
        codes.push_back(Ternary(patterns[(r + step) % patterns.size()], 1.5f).data());
        ASSERT_TRUE(Push(r, step, TernaryCodes(codes.back(), 1.5f), &answers[r], &done[r]).ok());
      }
      for (const absl::Status& st : done) ASSERT_TRUE(st.ok()) << st;
      const AnsweredAverage& avg = answers[0].averages[0];
      EXPECT_EQ(avg.head.contributors, world);
      const std::vector<uint8_t> expected = IntSumOf(codes, 13);
      ASSERT_EQ(avg.bytes->span(), absl::MakeConstSpan(expected));
      EXPECT_EQ(avg.bytes->span().back() >> 4, 0);  // 13 fields: the 14th nibble is padding
    }
  }
}

// A step completed by fewer workers than the world size (4 of 5 here, and 3 of 4: 3 bits a field)
// is answered with fields k + contributors, re-encoded from the 4-bit sums.
TEST_F(AggregatorTest, FourBitSumsOfADroppedWorkerAreReencoded) {
  for (uint32_t world : {4u, 5u}) {
    SCOPED_TRACE(testing::Message() << "world " << world);
    Make(kIntSum, world, /*elements=*/9);
    std::vector<v1::ShareScalersResponse> offered(world);
    std::vector<absl::Status> offer_answers(world);
    for (uint32_t r = 0; r < world; ++r) {
      ASSERT_TRUE(Offer(r, 0, 1.0f, &offered[r], &offer_answers[r]).ok());
    }
    std::vector<std::string> codes;
    std::vector<PushPullAnswer> answers(world);
    std::vector<absl::Status> done(world, absl::UnknownError("unanswered"));
    for (uint32_t r = 0; r + 1 < world; ++r) {  // the last rank never pushes
      codes.push_back(Ternary(r % 2 == 0 ? 0x99 : 0x56, 1.0f).data());
      ASSERT_TRUE(Push(r, 0, TernaryCodes(codes.back(), 1.0f), &answers[r], &done[r]).ok());
    }
    EXPECT_EQ(done[0].code(), absl::StatusCode::kUnknown);
    clock_.Advance(absl::Seconds(11));
    ASSERT_EQ(DropExpired().size(), 1u);
    ASSERT_TRUE(done[0].ok()) << done[0];
    const AnsweredAverage& avg = answers[0].averages[0];
    EXPECT_EQ(avg.head.contributors, world - 1);
    const std::vector<uint8_t> expected = IntSumOf(codes, 9);
    EXPECT_EQ(avg.bytes->span(), absl::MakeConstSpan(expected));
  }
}

// A job with int_sum_radix answers INT_SUM_RADIX where it is smaller: N = 4 packed from the 4-bit
// sums, 4 of 5 (a dropped worker) re-encoded from 16-bit sums; 3 stays INT_SUM (3 bits a field
// beat 3.2). Random codes over two whole blocks (160 elements each at N = 4) and a short one.
TEST_F(AggregatorTest, RadixAnswersWhereSmaller) {
  std::mt19937_64 rng(11);
  const uint32_t elements = 2 * 160 + 13;
  struct Case {
    uint32_t world;
    uint32_t pushing;
    v1::Encoding encoding;
  };
  for (const Case& c : {Case{4, 4, v1::INT_SUM_RADIX}, Case{5, 4, v1::INT_SUM_RADIX},
                        Case{3, 3, v1::INT_SUM}, Case{2, 2, v1::INT_SUM_RADIX}}) {
    SCOPED_TRACE(testing::Message() << "world " << c.world << ", pushing " << c.pushing);
    Make(kIntSum, c.world, elements, /*int_sum_radix=*/true);
    std::vector<v1::ShareScalersResponse> offered(c.world);
    std::vector<absl::Status> offer_answers(c.world);
    for (uint32_t r = 0; r < c.world; ++r) {
      ASSERT_TRUE(Offer(r, 0, 1.0f, &offered[r], &offer_answers[r]).ok());
    }
    std::vector<std::string> codes;
    std::vector<int16_t> sums(elements, 0);
    std::vector<PushPullAnswer> answers(c.world);
    std::vector<absl::Status> done(c.world, absl::UnknownError("unanswered"));
    for (uint32_t r = 0; r < c.pushing; ++r) {
      std::string bytes((elements + 3) / 4, '\0');
      for (uint32_t k = 0; k < elements; ++k) {
        const int code = static_cast<int>(rng() % 3);  // 0, +1 (01), -1 (10)
        bytes[k / 4] = static_cast<char>(bytes[k / 4] | (code << (2 * (k % 4))));
        sums[k] = static_cast<int16_t>(sums[k] + (code == 1 ? 1 : code == 2 ? -1 : 0));
      }
      ASSERT_TRUE(Push(r, 0, TernaryCodes(bytes, 1.0f), &answers[r], &done[r]).ok());
    }
    if (c.pushing < c.world) {
      clock_.Advance(absl::Seconds(11));
      ASSERT_EQ(DropExpired().size(), 1u);
    }
    ASSERT_TRUE(done[0].ok()) << done[0];
    const AnsweredAverage& avg = answers[0].averages[0];
    EXPECT_EQ(avg.head.contributors, c.pushing);
    ASSERT_EQ(avg.head.encoding, c.encoding);
    const int n = static_cast<int>(c.pushing);
    std::vector<uint8_t> expected(common::PayloadBytes(c.encoding, elements, n));
    ASSERT_TRUE((c.encoding == v1::INT_SUM_RADIX
                     ? common::EncodeIntSumRadix(sums, n, absl::MakeSpan(expected))
                     : common::EncodeIntSum(sums, n, absl::MakeSpan(expected)))
                    .ok());
    EXPECT_EQ(avg.bytes->span(), absl::MakeConstSpan(expected));
  }
}

namespace order {

// Float32 values whose sum depends on the order it is taken in: per element, two ranks push
// +-1e8 (whose float32 spacing is 8) and the others small values near half of that, which are
// lost or kept depending on whether they meet each other or 1e8 first.
std::vector<float> Values(uint32_t rank) {
  const float table[] = {1e8f, 3.0f, 3.0f, -1e8f, 2.5f};
  std::vector<float> v(kElements);
  for (uint32_t k = 0; k < kElements; ++k) {
    v[k] = table[(rank + k) % 5] * (1.0f + 0.01f * static_cast<float>(k % 3));
  }
  return v;
}

v1::PartitionPayload Fp32Values(const std::vector<float>& g) {
  v1::PartitionPayload p;
  p.set_partition_id(5);
  p.set_elements(static_cast<uint32_t>(g.size()));
  p.set_encoding(v1::FP32);
  p.mutable_data()->resize(common::Fp32Bytes(g.size()));
  EXPECT_TRUE(
      common::EncodeFp32(
          g, absl::MakeSpan(reinterpret_cast<uint8_t*>(p.mutable_data()->data()), p.data().size()))
          .ok());
  return p;
}

}  // namespace order

const common::PartitionRoute kTernaryFloat{v1::TERNARY_2BIT, common::Aggregation::kTernaryFloat,
                                           v1::FP32};

// Every order in which the pushes of 5 ranks can arrive gives the same average bits: the sum of
// the ranks in rank order, divided by the contributors. For FP32 pushes and for ternary pushes
// with per-rank scalers (no sharing), whose float sums both depend on order. (Summing in arrival
// order instead fails this: checked by making the shard sum in arrival order.)
TEST_F(AggregatorTest, FloatSumsAreTakenInRankOrderWhateverTheArrivalOrder) {
  for (const bool ternary : {false, true}) {
    SCOPED_TRACE(ternary ? "ternary, per-rank scalers" : "fp32");
    constexpr uint32_t kWorld = 5;
    std::vector<v1::PartitionPayload> payloads;
    // Ternary: ranks 0 and 3 push +1e8 and -1e8 (all codes +1, all -1), the others small scalers
    // (valid 2-bit codes only: 00, 01 = +1, 10 = -1).
    const float scalers[] = {1e8f, 3.0f, 3.0f, 1e8f, 2.5f};
    const uint8_t kCodes[] = {0x55, 0x55, 0x59, 0xAA, 0x56};
    for (uint32_t r = 0; r < kWorld; ++r) {
      payloads.push_back(ternary ? Ternary(kCodes[r], scalers[r])
                                 : order::Fp32Values(order::Values(r)));
    }
    // The expected average: rank order, computed here from the payloads with the codec's own
    // decode-and-add (as a shard that sums in rank order does).
    std::vector<float> expected(kElements, 0.0f);
    for (uint32_t r = 0; r < kWorld; ++r) {
      const auto* bytes = reinterpret_cast<const uint8_t*>(payloads[r].data().data());
      const absl::Span<const uint8_t> data(bytes, payloads[r].data().size());
      if (ternary) {
        ASSERT_TRUE(common::DecodeTernaryAdd(data, scalers[r], absl::MakeSpan(expected)).ok());
      } else if (r == 0) {
        std::memcpy(expected.data(), bytes, kElements * sizeof(float));
      } else {
        ASSERT_TRUE(common::DecodeFp32Add(data, absl::MakeSpan(expected)).ok());
      }
    }
    for (float& x : expected) x /= static_cast<float>(kWorld);
    std::vector<uint32_t> arrival = {0, 1, 2, 3, 4};
    int orders = 0;
    do {
      Make(ternary ? kTernaryFloat : kFp32, kWorld);
      std::vector<PushPullAnswer> answers(kWorld);
      std::vector<absl::Status> answered(kWorld, absl::UnknownError("unanswered"));
      for (const uint32_t r : arrival) {
        ASSERT_TRUE(Push(r, 0, payloads[r], &answers[r], &answered[r]).ok());
      }
      for (uint32_t r = 0; r < kWorld; ++r) {
        ASSERT_TRUE(answered[r].ok()) << answered[r];
        const auto* avg = reinterpret_cast<const float*>(answers[r].averages[0].bytes->data());
        ASSERT_EQ(std::memcmp(avg, expected.data(), kElements * sizeof(float)), 0)
            << "arrival order " << arrival[0] << arrival[1] << arrival[2] << arrival[3]
            << arrival[4] << ", rank " << r;
      }
      ++orders;
    } while (std::next_permutation(arrival.begin(), arrival.end()));
    EXPECT_EQ(orders, 120);
  }
}

// A rank that does not push (dropped at the timeout) leaves a gap: the pushes after it wait
// until the step completes, and are then summed in rank order too.
TEST_F(AggregatorTest, RankOrderSkipsARankThatNeverPushes) {
  std::vector<uint32_t> arrival = {0, 2, 3};
  std::vector<float> expected(kElements);
  for (uint32_t k = 0; k < kElements; ++k) {
    expected[k] = (order::Values(0)[k] + order::Values(2)[k] + order::Values(3)[k]) / 3.0f;
  }
  do {
    Make(kFp32, 4);
    members_->Drop({1});
    std::vector<PushPullAnswer> answers(4);
    std::vector<absl::Status> answered(4, absl::UnknownError("unanswered"));
    for (const uint32_t r : arrival) {
      ASSERT_TRUE(Push(r, 0, order::Fp32Values(order::Values(r)), &answers[r], &answered[r]).ok());
    }
    for (const uint32_t r : arrival) {
      ASSERT_TRUE(answered[r].ok()) << answered[r];
      const auto* avg = reinterpret_cast<const float*>(answers[r].averages[0].bytes->data());
      ASSERT_EQ(std::memcmp(avg, expected.data(), kElements * sizeof(float)), 0)
          << "arrival " << arrival[0] << arrival[1] << arrival[2];
    }
  } while (std::next_permutation(arrival.begin(), arrival.end()));
}

}  // namespace
}  // namespace ternps::server
