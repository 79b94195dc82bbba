#include "worker/bench/codec_cuda_bench.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
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

// Copies `device` (n values) to the host, on `stream`.
template <typename T>
bool Download(const DeviceBuffer<T>& device, std::vector<T>& host, cudaStream_t stream) {
  host.resize(device.size());
  return cudaMemcpyAsync(host.data(), device.data(), host.size() * sizeof(T),
                         cudaMemcpyDeviceToHost, stream) == cudaSuccess &&
         cudaStreamSynchronize(stream) == cudaSuccess;
}
template <typename T>
bool Upload(const std::vector<T>& host, DeviceBuffer<T>& device, cudaStream_t stream) {
  return cudaMemcpyAsync(device.data(), host.data(), host.size() * sizeof(T),
                         cudaMemcpyHostToDevice, stream) == cudaSuccess &&
         cudaStreamSynchronize(stream) == cudaSuccess;
}

// Index of the first difference of a and b (same size), or -1.
template <typename T>
int64_t FirstDifference(const std::vector<T>& a, const std::vector<T>& b) {
  const size_t bytes = a.size() * sizeof(T);
  if (a.size() == b.size() && std::memcmp(a.data(), b.data(), bytes) == 0) return -1;
  for (size_t k = 0; k < std::min(a.size(), b.size()); ++k) {
    if (std::memcmp(&a[k], &b[k], sizeof(T)) != 0) return static_cast<int64_t>(k);
  }
  return static_cast<int64_t>(std::min(a.size(), b.size()));
}

void PrintCheck(const char* what, uint64_t n, int64_t first_difference) {
  std::printf(
      "{\"bench\": \"cuda_check\", \"device\": \"cuda\", \"check\": \"%s\", \"elements\": %llu, "
      "\"ok\": %s, \"first_difference\": %lld}\n",
      what, static_cast<unsigned long long>(n), first_difference < 0 ? "true" : "false",
      static_cast<long long>(first_difference));
  std::fflush(stdout);
}

// The device's results for one whole partition of n = host.size() elements against the CPU
// codec's: the statistics (max |g| exact, sigma within 1e-5 relative: the sums are taken in another
// order), the ternary codes for the CPU's clip and scaler (bit-identical), and the INT_SUM,
// INT_SUM_RADIX and TERNARY_2BIT decoders (bit-identical floats). At 2^28 elements every kernel
// runs its grid-stride loops several times. One JSON row per check; false if any differs.
bool CheckAgainstCpu(const std::vector<float>& host, int contributors, cudaStream_t s,
                     common::cuda::DeviceStatsWorkspace& ws) {
  const size_t n = host.size();
  bool ok = true;
  auto g = DeviceBuffer<float>::Create(n);
  auto out = DeviceBuffer<float>::Create(n);
  if (!g.ok() || !out.ok() || !Upload(host, *g, s)) {
    std::fprintf(stderr, "ternps-bench: check: cannot set up %zu elements on the device\n", n);
    return false;
  }
  absl::StatusOr<common::PartitionStats> cpu_stats = common::ComputeStats(host);
  absl::StatusOr<common::PartitionStats> gpu_stats =
      common::cuda::DeviceComputeStats(g->span(), ws, s);
  if (!cpu_stats.ok() || !gpu_stats.ok()) return false;
  const bool stats_ok = gpu_stats->max_abs == cpu_stats->max_abs &&
                        std::fabs(gpu_stats->sigma - cpu_stats->sigma) <= 1e-5 * cpu_stats->sigma;
  PrintCheck("stats", n, stats_ok ? -1 : 0);
  ok = ok && stats_ok;

  const float clip = common::ClipThreshold(*cpu_stats, 2.5f);
  const float scaler = common::LocalScaler(*cpu_stats, 2.5f);
  const common::TernaryKey key{0x5eedull, 1, 2, 3};
  std::vector<uint8_t> cpu_codes(common::TernaryBytes(n)), gpu_codes;
  auto codes = DeviceBuffer<uint8_t>::Create(cpu_codes.size());
  if (!codes.ok() || !common::Ternarize(host, clip, scaler, key, absl::MakeSpan(cpu_codes)).ok() ||
      !common::cuda::DeviceTernarize(g->span(), clip, scaler, key, codes->span(), s).ok() ||
      !Download(*codes, gpu_codes, s)) {
    return false;
  }
  const int64_t codes_diff = FirstDifference(cpu_codes, gpu_codes);
  PrintCheck("ternarize", n, codes_diff);
  ok = ok && codes_diff < 0;

  std::vector<float> cpu_values(n, 0.0f), gpu_values;
  if (!common::DecodeTernaryAdd(cpu_codes, scaler, absl::MakeSpan(cpu_values)).ok() ||
      !common::cuda::DeviceDecodeTernary(codes->span(), scaler, false, out->span(), s).ok() ||
      !Download(*out, gpu_values, s)) {
    return false;
  }
  const int64_t ternary_diff = FirstDifference(cpu_values, gpu_values);
  PrintCheck("decode_ternary", n, ternary_diff);
  ok = ok && ternary_diff < 0;

  std::mt19937_64 rng(n + 1);
  std::vector<int16_t> sums(n);
  for (int16_t& v : sums) {
    v = static_cast<int16_t>(static_cast<int>(rng() % (2 * contributors + 1)) - contributors);
  }
  for (const bool radix : {false, true}) {
    const size_t bytes =
        radix ? common::IntSumRadixBytes(n, contributors) : common::IntSumBytes(n, contributors);
    if (bytes == 0) continue;  // no radix packing for this N
    std::vector<uint8_t> wire(bytes);
    std::fill(cpu_values.begin(), cpu_values.end(), 0.0f);
    absl::Status st = radix ? common::EncodeIntSumRadix(sums, contributors, absl::MakeSpan(wire))
                            : common::EncodeIntSum(sums, contributors, absl::MakeSpan(wire));
    if (st.ok()) {
      st = radix ? common::DecodeIntSumRadixOnePass(wire, contributors, scaler,
                                                    absl::MakeSpan(cpu_values))
                 : common::DecodeIntSumAdd(wire, contributors, scaler, absl::MakeSpan(cpu_values));
    }
    auto device_wire = DeviceBuffer<uint8_t>::Create(bytes);
    if (!st.ok() || !device_wire.ok() || !Upload(wire, *device_wire, s)) return false;
    st = radix ? common::cuda::DeviceDecodeIntSumRadix(device_wire->span(), contributors, scaler,
                                                       false, out->span(), s)
               : common::cuda::DeviceDecodeIntSum(device_wire->span(), contributors, scaler, false,
                                                  out->span(), s);
    if (!st.ok() || !Download(*out, gpu_values, s)) return false;
    const int64_t diff = FirstDifference(cpu_values, gpu_values);
    PrintCheck(radix ? "decode_int_sum_radix" : "decode_int_sum", n, diff);
    ok = ok && diff < 0;
  }
  return ok;
}

}  // namespace

int RunCodecCudaBench(const std::vector<uint64_t>& elements, int repeats, int contributors,
                      bool check) {
  bool failed = false;
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
    const cudaStream_t s = stream.get();
    // On the stream the kernels run on (a non-blocking stream is not ordered after the legacy
    // stream's cudaMemcpy/cudaMemset), waited for since `host` is pageable.
    if (cudaMemcpyAsync(g->data(), host.data(), n * 4, cudaMemcpyHostToDevice, s) != cudaSuccess ||
        cudaMemsetAsync(sums->data(), 0, sums->size(), s) != cudaSuccess ||  // fields 0: k = -N
        cudaStreamSynchronize(s) != cudaSuccess) {
      std::fprintf(stderr, "ternps-bench: cannot upload %llu elements\n",
                   static_cast<unsigned long long>(n));
      return 1;
    }
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
    if (check && !CheckAgainstCpu(host, contributors, stream.get(), ws)) failed = true;
  }
  return failed ? 1 : 0;
}

}  // namespace ternps::bench
