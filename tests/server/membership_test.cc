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

// A Join after a lost connection while still joined resumes the session: no readmission step,
// repeats allowed until the rank's next Join; a dropped rank, or a stale or future session
// epoch, gets an ordinary readmission instead.
TEST(MembershipTest, AResumedSessionKeepsItsStepAndMayRepeat) {
  Membership m(2);
  m.Join(0, 0, 0);
  m.Join(1, 0, 0);
  const uint64_t epoch = m.View()->epoch;
  const Membership::Admission resumed = m.Join(1, 0, /*resume_step=*/5, /*session_epoch=*/epoch);
  EXPECT_TRUE(resumed.resumed);
  EXPECT_EQ(resumed.epoch, epoch);  // the live set did not change
  auto view = m.View();
  EXPECT_EQ(view->ranks[1].from_step, 0u);  // awaited at every step as before
  EXPECT_TRUE(view->late.empty());
  EXPECT_TRUE(view->ranks[1].may_repeat());
  EXPECT_FALSE(view->ranks[0].may_repeat());
  // Late calls of the lost connection (same session, same epoch) are still accepted.
  EXPECT_TRUE(view->CheckCaller(1, epoch).ok());
  EXPECT_TRUE(view->CheckCaller(0, epoch).ok());  // the others' sessions go on
  // A session epoch from the future is not a resume.
  EXPECT_FALSE(m.Join(0, 0, 3, /*session_epoch=*/99).resumed);
  EXPECT_EQ(m.View()->ranks[0].from_step, 3u);
  // A dropped rank cannot resume: it is readmitted, and may not repeat.
  m.Drop({1});
  const Membership::Admission back = m.Join(1, 0, 6, /*session_epoch=*/resumed.epoch);
  EXPECT_FALSE(back.resumed);
  EXPECT_EQ(m.View()->ranks[1].from_step, 6u);
  EXPECT_FALSE(m.View()->ranks[1].may_repeat());
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
