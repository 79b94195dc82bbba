// Membership: admission, readmission from a step, drops, leaves, epochs, and the caller checks
// made on immutable snapshots.
#include "server/membership.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ternps::server {
namespace {

using ::testing::HasSubstr;

TEST(MembershipTest, ExpectedRanksAreLiveButMustJoinBeforeCalling) {
  Membership m(3);
  auto view = m.View();
  EXPECT_EQ(view->LiveCount(), 3);
  EXPECT_EQ(view->CheckCaller(0, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(view->CheckCaller(3, 1).code(), absl::StatusCode::kInvalidArgument);
  const Membership::Admission a = m.Join(0, /*first_step=*/0, /*resume_step=*/0);
  EXPECT_EQ(a.epoch, 1u);
  EXPECT_EQ(a.start_step, 0u);
  EXPECT_TRUE(m.View()->CheckCaller(0, 1).ok());
  EXPECT_EQ(m.View()->CheckCaller(0, 2).code(), absl::StatusCode::kInvalidArgument);  // future
  // The old snapshot did not change.
  EXPECT_EQ(view->CheckCaller(0, 1).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(MembershipTest, DropThenReadmitFromAStepBumpsTheEpoch) {
  Membership m(3);
  for (uint32_t r = 0; r < 3; ++r) m.Join(r, 0, 0);
  EXPECT_EQ(m.Drop({2}), 1);
  EXPECT_EQ(m.Drop({2}), 0);  // already dropped
  auto view = m.View();
  EXPECT_EQ(view->epoch, 2u);
  EXPECT_EQ(view->LiveCount(), 2);
  const absl::Status dropped = view->CheckCaller(2, 1);
  EXPECT_EQ(dropped.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(dropped.message()), HasSubstr("dropped"));

  const Membership::Admission back = m.Join(2, 0, /*resume_step=*/7);
  EXPECT_EQ(back.epoch, 3u);
  EXPECT_EQ(back.start_step, 7u);
  view = m.View();
  EXPECT_EQ(view->LiveCount(), 3);
  // Awaited only from step 7 on.
  RankBits two(1, 0b011);
  EXPECT_TRUE(view->AllRequiredIn(6, two));
  EXPECT_FALSE(view->AllRequiredIn(7, two));
  EXPECT_EQ(view->CheckStepOfCaller(2, 6).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(view->CheckStepOfCaller(2, 7).ok());
  // The stale session (epoch 1) is told it was replaced.
  EXPECT_EQ(view->CheckCaller(2, 1).code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(view->CheckCaller(2, 3).ok());
}

TEST(MembershipTest, FirstCallOfAReadmittedRankMovesItsStepOnlyForward) {
  Membership m(2);
  m.Join(0, 0, 0);
  m.Join(1, 0, 0);
  m.Drop({1});
  m.Join(1, 0, /*resume_step=*/4);
  EXPECT_TRUE(m.View()->ranks[1].awaiting_first_call);
  EXPECT_TRUE(m.NoteFirstCall(1, 6));  // it skipped steps 4 and 5
  EXPECT_EQ(m.View()->ranks[1].from_step, 6u);
  EXPECT_FALSE(m.View()->ranks[1].awaiting_first_call);
  EXPECT_FALSE(m.NoteFirstCall(1, 9));  // only the first call counts
  EXPECT_EQ(m.View()->ranks[1].from_step, 6u);
}

TEST(MembershipTest, LeaveRemovesTheRankAndEndsTheJobWhenNobodyIsLeft) {
  Membership m(2);
  m.Join(0, 0, 0);
  m.Join(1, 0, 0);
  EXPECT_EQ(m.Leave(0), 2u);
  EXPECT_EQ(m.View()->CheckCaller(0, 2).code(), absl::StatusCode::kAborted);
  EXPECT_TRUE(m.AnyLive());
  m.Leave(1);
  EXPECT_FALSE(m.AnyLive());
}

}  // namespace
}  // namespace ternps::server
