// The TernGrad codec on a CUDA device: statistics, scaler, ternarization and decoding of
// partitions that live in device memory, with Status errors and RAII device resources.
//
//   absl::StatusOr<DeviceBuffer<float>> g = DeviceBuffer<float>::Create(n);
//   absl::StatusOr<Stream> stream = Stream::Create();
//   DeviceStatsWorkspace ws = ...;
//   absl::StatusOr<PartitionStats> stats = DeviceComputeStats(g->span(), ws, stream->get());
//   absl::Status st = DeviceTernarize(g->span(), ClipThreshold(*stats, 2.5f), scaler, key, codes,
//                                     stream->get());
//
// The same (g, clip, scaler, key) give the same bytes as common/codec/ternary.h's Ternarize.
// Functions ending the stream's work on the host (DeviceComputeStats) synchronize the stream;
// the others are asynchronous. Thread-compatible: one stream per thread.
#ifndef TERNPS_COMMON_CUDA_DEVICE_CODEC_H_
#define TERNPS_COMMON_CUDA_DEVICE_CODEC_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/codec/ternary.h"
#include "common/cuda/codec_kernels.cuh"
#include "common/cuda/cuda_status.h"

namespace ternps::common::cuda {

enum class Memory { kDevice, kPinnedHost };

// n values of T in device memory, or in page-locked host memory (fast, asynchronous copies);
// move-only, freed on destruction.
template <typename T, Memory kMemory>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  static absl::StatusOr<CudaBuffer> Create(size_t n) {
    CudaBuffer b;
    if (n > 0) {
      void** p = reinterpret_cast<void**>(&b.data_);
      if constexpr (kMemory == Memory::kDevice) {
        TERNPS_CUDA_RETURN_IF_ERROR(cudaMalloc(p, n * sizeof(T)));
      } else {
        TERNPS_CUDA_RETURN_IF_ERROR(cudaMallocHost(p, n * sizeof(T)));
      }
    }
    b.size_ = n;
    return b;
  }
  CudaBuffer(CudaBuffer&& o) noexcept { *this = std::move(o); }
  CudaBuffer& operator=(CudaBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    return *this;
  }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;
  ~CudaBuffer() {
    if (data_ == nullptr) return;
    if constexpr (kMemory == Memory::kDevice) {
      cudaFree(data_);
    } else {
      cudaFreeHost(data_);
    }
  }
  T* data() const { return data_; }
  size_t size() const { return size_; }
  absl::Span<T> span() const { return absl::Span<T>(data_, size_); }

 private:
  T* data_ = nullptr;
  size_t size_ = 0;
};

template <typename T>
using DeviceBuffer = CudaBuffer<T, Memory::kDevice>;
template <typename T>
using PinnedBuffer = CudaBuffer<T, Memory::kPinnedHost>;

// A CUDA stream; move-only, destroyed on destruction.
class Stream {
 public:
  Stream() = default;
  static absl::StatusOr<Stream> Create() {
    Stream s;
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.stream_, cudaStreamNonBlocking));
    return s;
  }
  Stream(Stream&& o) noexcept { std::swap(stream_, o.stream_); }
  Stream& operator=(Stream&& o) noexcept {
    std::swap(stream_, o.stream_);
    return *this;
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() {
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }
  cudaStream_t get() const { return stream_; }
  absl::Status Synchronize() const {
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    return absl::OkStatus();
  }

 private:
  cudaStream_t stream_ = nullptr;
};

// Scratch of the statistics reduction: the per-block partials and the result.
struct DeviceStatsWorkspace {
  static absl::StatusOr<DeviceStatsWorkspace> Create();
  DeviceBuffer<DeviceStats> partials;  // kStatsBlocks
  DeviceBuffer<DeviceStats> result;    // 1
  PinnedBuffer<DeviceStats> host;      // 1
};

// Launches the reduction of g (device) into ws.result and its copy to ws.host, asynchronously;
// then FinishStats (after the stream reached that point) turns ws.host into PartitionStats.
absl::Status DeviceStatsAsync(absl::Span<const float> g, DeviceStatsWorkspace& ws,
                              cudaStream_t stream);
absl::StatusOr<PartitionStats> FinishStats(const DeviceStats& sums, size_t n);
// Both, synchronizing the stream.
absl::StatusOr<PartitionStats> DeviceComputeStats(absl::Span<const float> g,
                                                  DeviceStatsWorkspace& ws, cudaStream_t stream);

// out (device, TernaryBytes(g.size()) bytes) = the codes of g (device), as Ternarize does.
absl::Status DeviceTernarize(absl::Span<const float> g, float clip, float scaler,
                             const TernaryKey& key, absl::Span<uint8_t> out, cudaStream_t stream);

// out (device) = the decoded payload; `data` (device) must already be validated on the host
// (ValidateIntSum / ValidateIntSumRadix / ValidateTernary): the device does not check it.
absl::Status DeviceDecodeIntSum(absl::Span<const uint8_t> data, int contributors, float scaler,
                                bool accumulate, absl::Span<float> out, cudaStream_t stream);
absl::Status DeviceDecodeIntSumRadix(absl::Span<const uint8_t> data, int contributors, float scaler,
                                     bool accumulate, absl::Span<float> out, cudaStream_t stream);
absl::Status DeviceDecodeTernary(absl::Span<const uint8_t> data, float scaler, bool accumulate,
                                 absl::Span<float> out, cudaStream_t stream);
// SGD-momentum on device buffers.
absl::Status DeviceSgd(absl::Span<float> w, absl::Span<float> v, absl::Span<const float> g,
                       float lr, float momentum, float weight_decay, cudaStream_t stream);

}  // namespace ternps::common::cuda

#endif  // TERNPS_COMMON_CUDA_DEVICE_CODEC_H_
