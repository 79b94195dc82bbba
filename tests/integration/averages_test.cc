// Integration: 2 shards and 4 workers over real gRPC on loopback exchange random gradients; every
// worker must receive the same averages, equal bit for bit to an independent computation from
// the codec (each worker's codes re-derived from its key, summed, averaged); through the blocking
// Step and through the streaming step.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <random>
#include <tuple>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "common/plan/partition_plan.h"
#include "gtest/gtest.h"
#include "server/aggregator.h"
#include "ternps/worker.h"
#include "tests/integration/cluster.h"

namespace ternps {
namespace {

using common::PartitionPlan;
using worker::CodecKind;

constexpr uint32_t kWorld = 4;
constexpr uint32_t kShards = 2;
constexpr int kSteps = 2;

enum class Mode { kSharing, kNoSharingFp32Down, kNoSharingTernaryDown, kFp32 };

std::string ModeName(Mode m) {
  switch (m) {
    case Mode::kSharing:
      return "Sharing";
    case Mode::kNoSharingFp32Down:
      return "NoSharingFp32Downlink";
    case Mode::kNoSharingTernaryDown:
      return "NoSharingTernaryDownlink";
    case Mode::kFp32:
      return "Fp32";
  }
  return "?";
}

std::vector<worker::TensorInfo> Tensors() {
  // Several partitions per tensor at 65536 elements, a ragged last one, and FP32 small tensors.
  return {{"conv.weight", 200003}, {"conv.bias", 100}, {"fc.weight", 70000}, {"fc.bias", 10}};
}

worker::CodecOptions Codec(Mode mode) {
  worker::CodecOptions c;
  c.partition_elements = 65536;
  c.min_compress_elements = 4096;
  c.seed = 20261128;
  c.codec = mode == Mode::kFp32 ? CodecKind::kFp32 : CodecKind::kTernGrad;
  c.scaler_sharing = mode == Mode::kSharing;
  c.ternary_downlink = mode == Mode::kNoSharingTernaryDown;
  // Without sharing the shard sums floats in arrival order: keep those sums exact (dyadic values,
  // no clipping) so any order gives the same bits, as the exact comparison below requires.
  if (mode != Mode::kSharing) c.clip_sigmas = 0.0f;
  return c;
}

// Gradient of `rank` at `step`: Gaussian where the shard sums integers (compressed partitions with
// sharing, clipping on); elsewhere the shard sums floats in arrival order, so there the values
// are multiples of 2^-10 in [-1, 1]: every float sum of up to 4 of them, and of scalers times
// codes, is exact in any order.
std::vector<std::vector<float>> Gradient(Mode mode, uint32_t rank, int step) {
  std::mt19937_64 rng(1000 * rank + step + 17);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  std::uniform_int_distribution<int> grid(-1024, 1024);
  std::vector<std::vector<float>> g;
  for (const auto& t : Tensors()) {
    std::vector<float> v(t.elements);
    for (float& x : v) {
      const bool integer_sum = mode == Mode::kSharing && t.elements >= 4096;
      x = integer_sum ? normal(rng) : static_cast<float>(grid(rng)) / 1024.0f;
    }
    g.push_back(std::move(v));
  }
  return g;
}

// Streamed: StartStep, the tensors marked in groups in an order of each rank's own (each group's
// callback must report OK), FinishStep. The averages must be the same bits as Step's.
class AveragesTest : public ::testing::TestWithParam<std::tuple<Mode, bool>> {};

absl::Status StreamStep(worker::Worker& w, std::vector<absl::Span<float>>& spans, uint32_t rank,
                        int step) {
  if (absl::Status st = w.StartStep(); !st.ok()) return st;
  std::vector<uint32_t> order(spans.size());
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), std::mt19937(rank * 31 + step));
  std::atomic<int> written{0};
  for (size_t i = 0; i < order.size();) {
    const size_t n = std::min<size_t>(1 + (i + rank) % 2, order.size() - i);
    std::vector<uint32_t> group(order.begin() + i, order.begin() + i + n);
    std::vector<absl::Span<float>> buffers;
    for (const uint32_t t : group) buffers.push_back(spans[t]);
    absl::Status st = w.MarkReady(group, buffers, [&written](const absl::Status& st) {
      EXPECT_TRUE(st.ok()) << st;
      ++written;
    });
    if (!st.ok()) return st;
    i += n;
  }
  absl::Status st = w.FinishStep();
  EXPECT_GT(written.load(), 0);
  return st;
}

TEST_P(AveragesTest, EveryWorkerGetsTheExactAverage) {
  const Mode mode = std::get<0>(GetParam());
  const bool streamed = std::get<1>(GetParam());
  testing::TestCluster cluster(kShards);
  // results[rank][step] = the averaged gradient that worker received.
  std::vector<std::vector<std::vector<std::vector<float>>>> results(kWorld);
  std::vector<uint32_t> contributors(kWorld, 0);
  testing::RunWorkers(kWorld, [&](uint32_t rank) {
    worker::WorkerOptions options;
    options.job_id = "averages-" + ModeName(mode) + (streamed ? "-streamed" : "");
    options.rank = rank;
    options.world_size = kWorld;
    options.shards = cluster.addresses();
    options.tensors = Tensors();
    options.codec = Codec(mode);
    options.max_call_bytes = 40000;  // several calls per shard
    auto w = worker::Worker::Connect(options);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int step = 0; step < kSteps; ++step) {
      std::vector<std::vector<float>> g = Gradient(mode, rank, step);
      std::vector<absl::Span<float>> spans;
      for (auto& v : g) spans.push_back(absl::MakeSpan(v));
      if (streamed) {
        ASSERT_TRUE(StreamStep(**w, spans, rank, step).ok());
      } else {
        ASSERT_TRUE((*w)->Step(spans).ok());
      }
      contributors[rank] = (*w)->last_step().min_contributors;
      results[rank].push_back(std::move(g));
    }
    EXPECT_TRUE((*w)->Leave().ok());
  });
  ASSERT_EQ(results[0].size(), static_cast<size_t>(kSteps));

  // Independent computation, partition by partition, from the codec's public functions.
  std::vector<common::TensorSpec> specs;
  for (const auto& t : Tensors()) specs.push_back({t.name, t.elements, t.keep_fp32});
  const worker::CodecOptions codec = Codec(mode);
  common::PlanOptions plan_options{codec.partition_elements, codec.min_compress_elements, kShards,
                                   codec.codec == CodecKind::kTernGrad};
  absl::StatusOr<PartitionPlan> plan = PartitionPlan::Create(specs, plan_options);
  ASSERT_TRUE(plan.ok());
  for (int step = 0; step < kSteps; ++step) {
    std::vector<std::vector<std::vector<float>>> inputs;
    for (uint32_t r = 0; r < kWorld; ++r) inputs.push_back(Gradient(mode, r, step));
    for (const common::Partition& part : plan->partitions()) {
      SCOPED_TRACE(::testing::Message()
                   << ModeName(mode) << " step " << step << " partition " << part.id);
      const size_t n = part.elements;
      auto slice = [&](uint32_t r) {
        return absl::MakeConstSpan(inputs[r][part.tensor]).subspan(part.offset, n);
      };
      std::vector<float> expected(n, 0.0f);
      if (!part.compressed) {
        for (uint32_t r = 0; r < kWorld; ++r) {
          for (size_t k = 0; k < n; ++k) expected[k] += slice(r)[k];
        }
        for (float& v : expected) v /= static_cast<float>(kWorld);
      } else {
        std::vector<common::PartitionStats> stats(kWorld);
        std::vector<float> scalers(kWorld);
        for (uint32_t r = 0; r < kWorld; ++r) {
          stats[r] = *common::ComputeStats(slice(r));
          scalers[r] = common::LocalScaler(stats[r], codec.clip_sigmas);
        }
        const float shared = *common::MaxScaler(scalers);
        std::vector<int16_t> sums(n, 0);
        for (uint32_t r = 0; r < kWorld; ++r) {
          const float s = mode == Mode::kSharing ? shared : scalers[r];
          std::vector<uint8_t> codes(common::TernaryBytes(n));
          const common::TernaryKey key{codec.seed, r, static_cast<uint64_t>(step), part.id};
          ASSERT_TRUE(common::Ternarize(slice(r),
                                        common::ClipThreshold(stats[r], codec.clip_sigmas), s, key,
                                        absl::MakeSpan(codes))
                          .ok());
          if (mode == Mode::kSharing) {
            ASSERT_TRUE(common::AddTernaryCodes(codes, absl::MakeSpan(sums)).ok());
          } else {
            ASSERT_TRUE(common::DecodeTernaryAdd(codes, s, absl::MakeSpan(expected)).ok());
          }
        }
        if (mode == Mode::kSharing) {
          for (size_t k = 0; k < n; ++k) {
            expected[k] = static_cast<float>(sums[k]) * (shared / static_cast<float>(kWorld));
          }
        } else {
          for (float& v : expected) v /= static_cast<float>(kWorld);
          if (mode == Mode::kNoSharingTernaryDown) {
            std::vector<uint8_t> codes(common::TernaryBytes(n));
            const common::TernaryKey key{codec.seed, server::kShardStreamWorker,
                                         static_cast<uint64_t>(step), part.id};
            absl::StatusOr<float> s =
                common::EncodeTernary(expected, 0.0f, key, absl::MakeSpan(codes));
            ASSERT_TRUE(s.ok());
            std::fill(expected.begin(), expected.end(), 0.0f);
            ASSERT_TRUE(common::DecodeTernaryAdd(codes, *s, absl::MakeSpan(expected)).ok());
          }
        }
      }
      for (uint32_t r = 0; r < kWorld; ++r) {
        const auto got = absl::MakeConstSpan(results[r][step][part.tensor]).subspan(part.offset, n);
        ASSERT_EQ(std::memcmp(got.data(), expected.data(), n * sizeof(float)), 0)
            << "worker " << r << " differs from the independent average";
      }
    }
  }
  for (uint32_t r = 0; r < kWorld; ++r) EXPECT_EQ(contributors[r], kWorld);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, AveragesTest,
    ::testing::Combine(::testing::Values(Mode::kSharing, Mode::kNoSharingFp32Down,
                                         Mode::kNoSharingTernaryDown, Mode::kFp32),
                       ::testing::Bool()),
    [](const auto& info) {
      return ModeName(std::get<0>(info.param)) + (std::get<1>(info.param) ? "Streamed" : "");
    });

}  // namespace
}  // namespace ternps
