#include "worker/bench/codec_cuda_bench.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <string>

#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "common/cuda/device_codec.h"

namespace ternps::bench {
namespace {

using common::cuda::DeviceBuffer;

// Best-of-`repeats` seconds of `work` on `stream`, timed with events.
double Time(cudaStream_t stream, int repeats, const std::function<bool()>& work) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  float best = 1e30f;
  for (int r = 0; r < repeats + 1; ++r) {  // the first is a warm-up
    cudaEventRecord(start, stream);
    if (!work()) return -1.0;
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0.0f;
    cudaEventElapsedTime(&ms, start, stop);
    if (r > 0) best = std::min(best, ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best / 1e3;
}

void Print(const char* bench, uint64_t n, double seconds, double bytes, double copy_gbps,
           int repeats) {
  const double gbps = bytes / seconds / 1e9;
  std::printf(
      "{\"bench\": \"%s\", \"device\": \"cuda\", \"elements\": %llu, \"repeats\": %d, "
      "\"seconds\": %.6f, \"gbps\": %.3f, \"ratio_to_d2d_copy\": %.3f}\n",
      bench, static_cast<unsigned long long>(n), repeats, seconds, gbps,
      copy_gbps > 0 ? gbps / copy_gbps : 1.0);
  std::fflush(stdout);
}

}  // namespace

int RunCodecCudaBench(const std::vector<uint64_t>& elements, int repeats, int contributors) {
  auto devices = common::cuda::CudaDeviceCount();
  if (!devices.ok() || *devices == 0) {
    std::fprintf(stderr, "ternps-bench: --device=cuda: no usable CUDA device\n");
    return 1;
  }
  auto stream_or = common::cuda::Stream::Create();
  auto ws_or = common::cuda::DeviceStatsWorkspace::Create();
  if (!stream_or.ok() || !ws_or.ok()) {
    std::fprintf(stderr, "ternps-bench: CUDA set-up failed\n");
    return 1;
  }
  common::cuda::Stream stream = *std::move(stream_or);
  common::cuda::DeviceStatsWorkspace ws = *std::move(ws_or);
  for (const uint64_t n : elements) {
    std::vector<float> host(n);
    std::mt19937_64 rng(n);
    std::normal_distribution<float> normal(0.0f, 0.01f);
    for (float& x : host) x = normal(rng);
    auto g = DeviceBuffer<float>::Create(n);
    auto copy = DeviceBuffer<float>::Create(n);
    auto codes = DeviceBuffer<uint8_t>::Create(common::TernaryBytes(n));
    auto sums = DeviceBuffer<uint8_t>::Create(common::IntSumBytes(n, contributors));
    if (!g.ok() || !copy.ok() || !codes.ok() || !sums.ok()) {
      std::fprintf(stderr, "ternps-bench: cannot allocate %llu elements on the device\n",
                   static_cast<unsigned long long>(n));
      return 1;
    }
    cudaMemcpy(g->data(), host.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemset(sums->data(), 0, sums->size());  // all fields 0 = valid (k = -N)
    const cudaStream_t s = stream.get();
    const double copy_s = Time(s, repeats, [&] {
      return cudaMemcpyAsync(copy->data(), g->data(), n * 4, cudaMemcpyDeviceToDevice, s) ==
             cudaSuccess;
    });
    const double copy_gbps = 2.0 * 4.0 * double(n) / copy_s / 1e9;  // read + write
    Print("cuda_d2d_copy", n, copy_s, 8.0 * double(n), copy_gbps, repeats);
    auto stats = common::cuda::DeviceComputeStats(g->span(), ws, s);
    if (!stats.ok()) return 1;
    const float clip = common::ClipThreshold(*stats, 2.5f);
    const float scaler = common::LocalScaler(*stats, 2.5f);
    const common::TernaryKey key{1, 0, 0, 0};
    const double stats_s =
        Time(s, repeats, [&] { return common::cuda::DeviceStatsAsync(g->span(), ws, s).ok(); });
    Print("cuda_encode_stats", n, stats_s, 4.0 * double(n), copy_gbps, repeats);
    const double ternarize_s = Time(s, repeats, [&] {
      return common::cuda::DeviceTernarize(g->span(), clip, scaler, key, codes->span(), s).ok();
    });
    Print("cuda_encode_ternarize", n, ternarize_s, 4.25 * double(n), copy_gbps, repeats);
    const double encode_s = Time(s, repeats, [&] {
      return common::cuda::DeviceStatsAsync(g->span(), ws, s).ok() &&
             common::cuda::DeviceTernarize(g->span(), clip, scaler, key, codes->span(), s).ok();
    });
    // Full encode reads g twice (statistics, then codes) but is counted, as the target says,
    // as 4 bytes read + 0.25 written per element.
    Print("cuda_encode", n, encode_s, 4.25 * double(n), copy_gbps, repeats);
    const double int_sum_s = Time(s, repeats, [&] {
      return common::cuda::DeviceDecodeIntSum(sums->span(), contributors, scaler, false,
                                              copy->span(), s)
          .ok();
    });
    Print("cuda_decode_int_sum", n, int_sum_s,
          4.0 * double(n) + double(common::IntSumBytes(n, contributors)), copy_gbps, repeats);
    const double ternary_s = Time(s, repeats, [&] {
      return common::cuda::DeviceDecodeTernary(codes->span(), scaler, false, copy->span(), s).ok();
    });
    Print("cuda_decode_ternary", n, ternary_s, 4.25 * double(n), copy_gbps, repeats);
  }
  return 0;
}

}  // namespace ternps::bench
