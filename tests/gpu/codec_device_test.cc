// The CUDA codec equals the CPU codec: the same bytes for the same (g, clip, scaler, key), the
// same decoded values, statistics within 1e-6 relative; plus a delay-kernel test that would
// expose a missing stream synchronization. Skips without a CUDA device.
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "common/cuda/device_codec.h"
#include "gtest/gtest.h"

namespace ternps::common::cuda {
namespace {

class CodecDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<int> devices = CudaDeviceCount();
    ASSERT_TRUE(devices.ok()) << devices.status();
    if (*devices == 0) GTEST_SKIP() << "no CUDA device";
    auto stream = Stream::Create();
    ASSERT_TRUE(stream.ok()) << stream.status();
    stream_ = *std::move(stream);
    auto ws = DeviceStatsWorkspace::Create();
    ASSERT_TRUE(ws.ok()) << ws.status();
    ws_ = *std::move(ws);
  }

  template <typename T>
  DeviceBuffer<T> Upload(const std::vector<T>& host) {
    auto buffer = DeviceBuffer<T>::Create(host.size());
    EXPECT_TRUE(buffer.ok()) << buffer.status();
    // On stream_, where the kernels under test run (a non-blocking stream is not ordered after
    // a legacy-stream cudaMemcpy from pageable memory), and waited for: `host` is pageable.
    if (!host.empty()) {
      EXPECT_EQ(cudaMemcpyAsync(buffer->data(), host.data(), host.size() * sizeof(T),
                                cudaMemcpyHostToDevice, stream_.get()),
                cudaSuccess);
      EXPECT_TRUE(stream_.Synchronize().ok());
    }
    return *std::move(buffer);
  }
  template <typename T>
  std::vector<T> Download(const DeviceBuffer<T>& device) {
    std::vector<T> host(device.size());
    EXPECT_TRUE(stream_.Synchronize().ok());
    if (!host.empty()) {
      EXPECT_EQ(cudaMemcpyAsync(host.data(), device.data(), host.size() * sizeof(T),
                                cudaMemcpyDeviceToHost, stream_.get()),
                cudaSuccess);
      EXPECT_TRUE(stream_.Synchronize().ok());
    }
    return host;
  }

  Stream stream_;
  DeviceStatsWorkspace ws_;
};

std::vector<float> Gaussian(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> g(n);
  for (float& x : g) x = normal(rng);
  return g;
}

constexpr size_t kSizes[] = {1, 3, 4, 5, 127, 128, 129, 2047, 2048, 2049, 100003, (1u << 20) + 3};

TEST_F(CodecDeviceTest, StatisticsMatchTheCpuWithin1e6) {
  for (size_t n : kSizes) {
    SCOPED_TRACE(n);
    const std::vector<float> g = Gaussian(n, n);
    DeviceBuffer<float> dg = Upload(g);
    absl::StatusOr<PartitionStats> gpu = DeviceComputeStats(dg.span(), ws_, stream_.get());
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    absl::StatusOr<PartitionStats> cpu = ComputeStats(g);
    ASSERT_TRUE(cpu.ok());
    EXPECT_EQ(gpu->max_abs, cpu->max_abs);
    EXPECT_NEAR(gpu->sigma, cpu->sigma, 1e-6 * cpu->sigma);
    const float sg = LocalScaler(*gpu, 2.5f), sc = LocalScaler(*cpu, 2.5f);
    EXPECT_NEAR(sg, sc, 1e-6 * sc);
  }
}

TEST_F(CodecDeviceTest, TernarizeGivesTheCpuBytes) {
  for (size_t n : kSizes) {
    for (float clip_sigmas : {2.5f, 0.0f}) {
      SCOPED_TRACE(testing::Message() << "n " << n << " clip " << clip_sigmas);
      const std::vector<float> g = Gaussian(n, 1000 + n);
      const PartitionStats stats = *ComputeStats(g);
      const float clip = ClipThreshold(stats, clip_sigmas);
      const float scaler = 1.1f * LocalScaler(stats, clip_sigmas);  // as if shared, larger
      const TernaryKey key{0x1234567890abcdefull, 3, 77, 5};
      std::vector<uint8_t> cpu(TernaryBytes(n));
      ASSERT_TRUE(Ternarize(g, clip, scaler, key, absl::MakeSpan(cpu)).ok());
      DeviceBuffer<float> dg = Upload(g);
      auto out = DeviceBuffer<uint8_t>::Create(TernaryBytes(n));
      ASSERT_TRUE(out.ok());
      ASSERT_TRUE(DeviceTernarize(dg.span(), clip, scaler, key, out->span(), stream_.get()).ok());
      EXPECT_EQ(Download(*out), cpu);
    }
  }
}

TEST_F(CodecDeviceTest, DecodersGiveTheCpuValues) {
  std::mt19937_64 rng(5);
  for (size_t n : kSizes) {
    for (int contributors : {1, 4, 7, 200, 300}) {
      SCOPED_TRACE(testing::Message() << "n " << n << " N " << contributors);
      std::vector<int16_t> sums(n);
      for (auto& s : sums) {
        s = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
      }
      std::vector<uint8_t> wire(IntSumBytes(n, contributors));
      ASSERT_TRUE(EncodeIntSum(sums, contributors, absl::MakeSpan(wire)).ok());
      std::vector<float> cpu(n, 0.0f);
      ASSERT_TRUE(DecodeIntSumAdd(wire, contributors, 0.37f, absl::MakeSpan(cpu)).ok());
      DeviceBuffer<uint8_t> dw = Upload(wire);
      DeviceBuffer<float> out = Upload(std::vector<float>(n, 123.0f));
      ASSERT_TRUE(DeviceDecodeIntSum(dw.span(), contributors, 0.37f, /*accumulate=*/false,
                                     out.span(), stream_.get())
                      .ok());
      const std::vector<float> gpu = Download(out);
      ASSERT_EQ(std::memcmp(gpu.data(), cpu.data(), n * sizeof(float)), 0);
    }
    for (int contributors : {1, 2, 4, 16, 19}) {  // INT_SUM_RADIX, whole blocks and the last one
      SCOPED_TRACE(testing::Message() << "radix, n " << n << " N " << contributors);
      std::vector<int16_t> sums(n);
      for (auto& s : sums) {
        s = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
      }
      std::vector<uint8_t> wire(IntSumRadixBytes(n, contributors));
      ASSERT_TRUE(EncodeIntSumRadix(sums, contributors, absl::MakeSpan(wire)).ok());
      std::vector<float> cpu(n, 0.0f);
      ASSERT_TRUE(DecodeIntSumRadixOnePass(wire, contributors, 0.37f, absl::MakeSpan(cpu)).ok());
      DeviceBuffer<uint8_t> dw = Upload(wire);
      DeviceBuffer<float> out = Upload(std::vector<float>(n, 123.0f));
      ASSERT_TRUE(DeviceDecodeIntSumRadix(dw.span(), contributors, 0.37f, /*accumulate=*/false,
                                          out.span(), stream_.get())
                      .ok());
      const std::vector<float> gpu = Download(out);
      ASSERT_EQ(std::memcmp(gpu.data(), cpu.data(), n * sizeof(float)), 0);
    }
    std::vector<uint8_t> codes(TernaryBytes(n));
    for (size_t k = 0; k < n; ++k)
      codes[k / 4] |= static_cast<uint8_t>((rng() % 3) << (2 * (k % 4)));
    std::vector<float> cpu(n, 0.5f);
    ASSERT_TRUE(DecodeTernaryAdd(codes, 0.25f, absl::MakeSpan(cpu)).ok());
    DeviceBuffer<uint8_t> dc = Upload(codes);
    DeviceBuffer<float> out = Upload(std::vector<float>(n, 0.5f));
    ASSERT_TRUE(
        DeviceDecodeTernary(dc.span(), 0.25f, /*accumulate=*/true, out.span(), stream_.get()).ok());
    const std::vector<float> gpu = Download(out);
    ASSERT_EQ(std::memcmp(gpu.data(), cpu.data(), n * sizeof(float)), 0);
  }
}

// DeviceComputeStats must wait for the stream before reading the pinned result: a long kernel
// queued first would otherwise leave the sentinel (or stale values) in place.
TEST_F(CodecDeviceTest, StatsWaitForTheStream) {
  const std::vector<float> g = Gaussian(1 << 20, 3);
  DeviceBuffer<float> dg = Upload(g);
  ws_.host.data()->max_abs = -1.0f;                                 // sentinel
  ASSERT_EQ(LaunchDelay(200'000'000, stream_.get()), cudaSuccess);  // ~0.1 s
  absl::StatusOr<PartitionStats> stats = DeviceComputeStats(dg.span(), ws_, stream_.get());
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->max_abs, ComputeStats(g)->max_abs);
}

}  // namespace
}  // namespace ternps::common::cuda
