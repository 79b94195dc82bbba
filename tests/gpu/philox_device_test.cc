// The device evaluates Philox4x32-10 exactly as the host does: the Random123 known answers and
// a sweep of counters shaped like the codec's (block index, partition, step, worker).
#include "common/cuda/philox_device.h"

#include <random>

#include "common/codec/ternary_element.h"
#include "common/cuda/cuda_status.h"
#include "gtest/gtest.h"

namespace ternps::common::cuda {
namespace {

class PhiloxDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> devices = CudaDeviceCount();
    ASSERT_TRUE(devices.ok()) << devices.status();
    if (*devices == 0) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(PhiloxDeviceTest, KnownAnswers) {
  const std::vector<Philox4x32> counters = {{{0, 0, 0, 0}},
                                            {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}};
  absl::StatusOr<std::vector<Philox4x32>> zero = PhiloxOnDevice({counters[0]}, {{0, 0}});
  ASSERT_TRUE(zero.ok()) << zero.status();
  EXPECT_EQ((*zero)[0].v[0], 0x6627e8d5u);
  EXPECT_EQ((*zero)[0].v[3], 0x9b00dbd8u);
  absl::StatusOr<std::vector<Philox4x32>> pi =
      PhiloxOnDevice({counters[1]}, {{0xa4093822, 0x299f31d0}});
  ASSERT_TRUE(pi.ok()) << pi.status();
  EXPECT_EQ((*pi)[0].v[0], 0xd16cfe09u);
  EXPECT_EQ((*pi)[0].v[3], 0x24126ea1u);
}

TEST_F(PhiloxDeviceTest, DeviceEqualsHostOnCodecCounters) {
  std::mt19937_64 rng(9);
  const TernaryKey key{.seed = rng(), .worker = 3, .step = 1234, .partition = 77};
  std::vector<Philox4x32> counters;
  for (uint64_t e = 0; e < (1u << 16); e += 1) {
    counters.push_back(
        {{TernaryCounter(e * 8), key.partition, static_cast<uint32_t>(key.step), key.worker}});
  }
  absl::StatusOr<std::vector<Philox4x32>> out = PhiloxOnDevice(counters, TernaryPhiloxKey(key));
  ASSERT_TRUE(out.ok()) << out.status();
  for (size_t i = 0; i < counters.size(); ++i) {
    const Philox4x32 host = Philox4x32_10(counters[i], TernaryPhiloxKey(key));
    for (int w = 0; w < 4; ++w) ASSERT_EQ((*out)[i].v[w], host.v[w]) << i;
  }
}

}  // namespace
}  // namespace ternps::common::cuda
