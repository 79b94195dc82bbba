// The streaming step's bookkeeping without a network: which calls become ready as tensors are
// marked (a call carrying parts of several tensors only once all are marked), which groups are
// written once their calls are decoded (a tensor split over several calls only after the last),
// every group called exactly once on success and on failure, and bad marks refused without
// changing anything.
#include "worker/client/step_progress.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace ternps::worker {
namespace {

// Tensors 0..3; partitions: 0,1 -> tensor 0 (split over calls 0 and 1), 2 -> tensor 1,
// 3 -> tensor 2, 4 -> tensor 3. Calls: {0}, {1, 2}, {3, 4}.
StepProgress Example() { return StepProgress({{0}, {1, 2}, {3, 4}}, {0, 0, 1, 2, 3}, 4); }

TEST(StepProgressTest, ACallIsReadyOnlyOnceEveryTensorItCarriesIsMarked) {
  StepProgress progress = Example();
  absl::StatusOr<std::vector<size_t>> ready = progress.Mark({1}, nullptr);
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_TRUE(ready->empty());  // call 1 also carries part of tensor 0
  ready = progress.Mark({2}, nullptr);
  ASSERT_TRUE(ready.ok());
  EXPECT_TRUE(ready->empty());  // call 2 also carries tensor 3
  ready = progress.Mark({3, 0}, nullptr);
  ASSERT_TRUE(ready.ok());
  EXPECT_EQ(*ready, (std::vector<size_t>{0, 1, 2}));
  EXPECT_TRUE(progress.all_marked());
}

TEST(StepProgressTest, AGroupIsWrittenAfterTheLastCallOfEachOfItsTensors) {
  StepProgress progress = Example();
  std::vector<int> calls_of_group(2, 0);
  ASSERT_TRUE(progress
                  .Mark({0},
                        [&](const absl::Status& st) {
                          EXPECT_TRUE(st.ok());
                          ++calls_of_group[0];
                        })
                  .ok());
  ASSERT_TRUE(progress
                  .Mark({1, 2, 3},
                        [&](const absl::Status& st) {
                          EXPECT_TRUE(st.ok());
                          ++calls_of_group[1];
                        })
                  .ok());
  EXPECT_TRUE(progress.Decoded(0).empty());  // tensor 0 also lies in call 1
  std::vector<StepProgress::Written> done = progress.Decoded(1);
  ASSERT_EQ(done.size(), 1u);  // group 0 (tensor 0); group 1 still waits for call 2
  for (auto& w : done) w(absl::OkStatus());
  EXPECT_EQ(calls_of_group, (std::vector<int>{1, 0}));
  done = progress.Decoded(2);
  ASSERT_EQ(done.size(), 1u);
  for (auto& w : done) w(absl::OkStatus());
  EXPECT_EQ(calls_of_group, (std::vector<int>{1, 1}));
  EXPECT_TRUE(progress.TakeUncalled().empty());
}

TEST(StepProgressTest, AFailedStepHandsOutEveryGroupNotWrittenExactlyOnce) {
  StepProgress progress = Example();
  int written = 0;
  int failed = 0;
  auto count = [&](const absl::Status& st) { st.ok() ? ++written : ++failed; };
  ASSERT_TRUE(progress.Mark({0}, count).ok());
  ASSERT_TRUE(progress.Mark({1}, count).ok());
  ASSERT_TRUE(progress.Mark({2, 3}, count).ok());
  progress.Decoded(0);
  for (auto& w : progress.Decoded(1)) w(absl::OkStatus());  // tensors 0 and 1
  for (auto& w : progress.TakeUncalled()) w(absl::AbortedError("x"));
  EXPECT_EQ(written, 2);
  EXPECT_EQ(failed, 1);
  EXPECT_TRUE(progress.TakeUncalled().empty());
}

TEST(StepProgressTest, BadMarksAreRefusedAndChangeNothing) {
  StepProgress progress = Example();
  EXPECT_EQ(progress.Mark({}, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  absl::Status st = progress.Mark({0, 4}, nullptr).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("tensors[1]"), std::string::npos) << st;
  st = progress.Mark({2, 2}, nullptr).status();
  EXPECT_NE(st.message().find("listed twice"), std::string::npos) << st;
  EXPECT_EQ(progress.Unmarked(10), (std::vector<uint32_t>{0, 1, 2, 3}));
  ASSERT_TRUE(progress.Mark({2}, nullptr).ok());
  st = progress.Mark({3, 2}, nullptr).status();
  EXPECT_NE(st.message().find("already marked"), std::string::npos) << st;
  EXPECT_EQ(progress.Unmarked(10), (std::vector<uint32_t>{0, 1, 3}));
  EXPECT_EQ(progress.Unmarked(1), (std::vector<uint32_t>{0}));
}

// Any order of marks and of decodes (seeded): every call becomes ready exactly once, and every
// group is written exactly once, only after all its tensors' calls were decoded.
TEST(StepProgressTest, EveryOrderReadiesEachCallAndWritesEachGroupOnce) {
  const std::vector<std::vector<uint32_t>> calls = {{0, 1}, {2}, {3, 4, 5}, {6}, {7, 8}};
  const std::vector<uint32_t> tensor_of = {0, 0, 0, 1, 2, 2, 3, 4, 5};
  std::mt19937 rng(7);
  for (int round = 0; round < 200; ++round) {
    StepProgress progress(calls, tensor_of, 6);
    progress.Begin();
    std::vector<uint32_t> tensors(6);
    std::iota(tensors.begin(), tensors.end(), 0u);
    std::shuffle(tensors.begin(), tensors.end(), rng);
    std::vector<int> ready_count(calls.size(), 0);
    std::vector<int> written(3, 0);
    std::vector<std::vector<uint32_t>> groups = {
        {tensors[0], tensors[1]}, {tensors[2]}, {tensors[3], tensors[4], tensors[5]}};
    std::vector<bool> decoded(calls.size(), false);
    for (int g = 0; g < 3; ++g) {
      absl::StatusOr<std::vector<size_t>> ready =
          progress.Mark(groups[g], [&, g](const absl::Status& st) {
            ASSERT_TRUE(st.ok());
            ++written[g];
            for (const uint32_t t : groups[g]) {
              for (size_t c = 0; c < calls.size(); ++c) {
                for (const uint32_t p : calls[c]) {
                  if (tensor_of[p] == t) {
                    EXPECT_TRUE(decoded[c]) << "group " << g << " written before call " << c;
                  }
                }
              }
            }
          });
      ASSERT_TRUE(ready.ok());
      for (const size_t c : *ready) ++ready_count[c];
    }
    EXPECT_EQ(ready_count, std::vector<int>(calls.size(), 1));
    std::vector<size_t> order(calls.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    for (const size_t c : order) {
      decoded[c] = true;
      for (auto& w : progress.Decoded(c)) w(absl::OkStatus());
    }
    EXPECT_EQ(written, std::vector<int>(3, 1));
  }
}

}  // namespace
}  // namespace ternps::worker
