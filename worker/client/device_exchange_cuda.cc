// The Exchange on CUDA (common/cuda kernels): gradients stay in device memory; statistics and
// ternarization run on the device and only packed bytes cross PCIe (into pinned host memory);
// averages go back the same way and are decoded on the device into the gradient buffers.
// Batches are queued in order on one encode stream, each closed by an event (its ticket), so
// the device encodes batch i+1 while batch i is on the wire.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/cuda/device_codec.h"
#include "worker/client/exchange.h"

namespace ternps::worker {
namespace {

using common::cuda::DeviceBuffer;
using common::cuda::PinnedBuffer;

namespace v1 = ::ternps::v1;

class CudaExchange final : public Exchange {
 public:
  absl::Status Init(const common::JobSpec& spec) {
    plan_ = &spec.plan;
    const size_t parts = plan_->partitions().size();
    up_offset_.resize(parts + 1, 0);
    down_offset_.resize(parts + 1, 0);
    for (size_t p = 0; p < parts; ++p) {
      const common::Partition& part = plan_->partition(static_cast<uint32_t>(p));
      const common::PartitionRoute& route = spec.route(static_cast<uint32_t>(p));
      // INT_SUM is largest with every worker contributing; INT_SUM_RADIX, sent only where it takes
      // fewer bits per element, is at most 2 bytes (its last word) above that.
      const int n = static_cast<int>(spec.world_size);
      up_offset_[p + 1] = up_offset_[p] + common::PayloadBytes(route.uplink, part.elements, n);
      down_offset_[p + 1] = down_offset_[p] +
                            common::PayloadBytes(route.downlink, part.elements, n) +
                            (route.downlink == v1::INT_SUM ? 2 : 0);
    }
    auto assign = [](auto& dst, auto result) -> absl::Status {
      if (!result.ok()) return result.status();
      dst = *std::move(result);
      return absl::OkStatus();
    };
    absl::Status st = assign(encode_stream_, common::cuda::Stream::Create());
    if (st.ok()) st = assign(decode_stream_, common::cuda::Stream::Create());
    if (st.ok())
      st = assign(partials_,
                  DeviceBuffer<common::cuda::DeviceStats>::Create(common::cuda::kStatsBlocks));
    if (st.ok()) st = assign(stats_device_, DeviceBuffer<common::cuda::DeviceStats>::Create(parts));
    if (st.ok()) st = assign(stats_host_, PinnedBuffer<common::cuda::DeviceStats>::Create(parts));
    if (st.ok()) st = assign(codes_device_, DeviceBuffer<uint8_t>::Create(up_offset_[parts]));
    if (st.ok()) st = assign(up_host_, PinnedBuffer<uint8_t>::Create(up_offset_[parts]));
    if (st.ok()) st = assign(down_device_, DeviceBuffer<uint8_t>::Create(down_offset_[parts]));
    if (st.ok()) st = assign(down_host_, PinnedBuffer<uint8_t>::Create(down_offset_[parts]));
    return st;
  }

  ~CudaExchange() override {
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
  }

  absl::Status Begin(void* stream) override {
    // The caller's work on its stream (e.g. the backward pass) completes before we read.
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)));
    return absl::OkStatus();
  }

  absl::Status Stats(Gradients gradients, absl::Span<const uint32_t> compressed,
                     std::vector<common::PartitionStats>& stats, uint32_t* bad) override {
    const cudaStream_t s = encode_stream_.get();
    for (const uint32_t p : compressed) {
      TERNPS_CUDA_RETURN_IF_ERROR(
          common::cuda::LaunchStats(Slice(gradients, p).data(), plan_->partition(p).elements,
                                    partials_.data(), stats_device_.data() + p, s));
    }
    if (compressed.empty()) return absl::OkStatus();
    TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        stats_host_.data(), stats_device_.data(),
        stats_device_.size() * sizeof(stats_host_.data()[0]), cudaMemcpyDeviceToHost, s));
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));
    for (const uint32_t p : compressed) {
      absl::StatusOr<common::PartitionStats> st =
          common::cuda::FinishStats(stats_host_.data()[p], plan_->partition(p).elements);
      if (!st.ok()) {
        *bad = p;
        return st.status();
      }
      stats[p] = *st;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int> StartEncode(Gradients gradients, absl::Span<const uint32_t> partitions,
                                  const EncodeParams& params) override {
    const cudaStream_t s = encode_stream_.get();
    for (const uint32_t p : partitions) {
      const common::Partition& part = plan_->partition(p);
      const absl::Span<float> g = Slice(gradients, p);
      const size_t bytes = up_offset_[p + 1] - up_offset_[p];
      uint8_t* host = up_host_.data() + up_offset_[p];
      if (part.compressed) {
        common::TernaryKey key = params.key_base;
        key.partition = p;
        uint8_t* codes = codes_device_.data() + up_offset_[p];
        if (absl::Status st = common::cuda::DeviceTernarize(
                g, (*params.clips)[p], (*params.scalers)[p], key, absl::MakeSpan(codes, bytes), s);
            !st.ok()) {
          return st;
        }
        TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, codes, bytes, cudaMemcpyDeviceToHost, s));
      } else {
        TERNPS_CUDA_RETURN_IF_ERROR(
            cudaMemcpyAsync(host, g.data(), bytes, cudaMemcpyDeviceToHost, s));
      }
    }
    cudaEvent_t event;
    TERNPS_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    TERNPS_CUDA_RETURN_IF_ERROR(cudaEventRecord(event, s));
    absl::MutexLock lock(&mu_);
    events_.push_back(event);
    return static_cast<int>(events_.size()) - 1;
  }

  absl::Status FinishEncode(int ticket, Gradients, absl::Span<const uint32_t> partitions,
                            const EncodeParams&,
                            absl::Span<const absl::Span<uint8_t>> out) override {
    cudaEvent_t event;
    {
      absl::MutexLock lock(&mu_);
      if (ticket < 0 || ticket >= static_cast<int>(events_.size())) {
        return absl::InternalError("encode ticket: unknown");
      }
      event = events_[ticket];
    }
    TERNPS_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(event));
    for (size_t i = 0; i < partitions.size(); ++i) {
      const uint32_t p = partitions[i];
      const size_t bytes = up_offset_[p + 1] - up_offset_[p];
      if (out[i].size() != bytes) {
        return absl::InternalError(absl::StrCat("partition ", p, ": ", out[i].size(),
                                                " payload bytes, the device wrote ", bytes));
      }
      std::memcpy(out[i].data(), up_host_.data() + up_offset_[p], bytes);
    }
    return absl::OkStatus();
  }

  absl::Status Decode(Gradients gradients, uint32_t p, const Average& avg) override {
    const absl::Span<const uint8_t> bytes = avg.bytes;
    const cudaStream_t s = decode_stream_.get();
    const absl::Span<float> out = Slice(gradients, p);
    const size_t capacity = down_offset_[p + 1] - down_offset_[p];
    if (bytes.size() > capacity) {
      return absl::InvalidArgumentError(absl::StrCat("partition ", p, ": ", bytes.size(),
                                                     " bytes exceed its staging of ", capacity));
    }
    if (avg.encoding == v1::FP32) {  // the payload is the gradient itself
      uint8_t* host = down_host_.data() + down_offset_[p];
      std::memcpy(host, bytes.data(), bytes.size());
      TERNPS_CUDA_RETURN_IF_ERROR(
          cudaMemcpyAsync(out.data(), host, bytes.size(), cudaMemcpyHostToDevice, s));
      return absl::OkStatus();
    }
    uint8_t* host = down_host_.data() + down_offset_[p];
    uint8_t* device = down_device_.data() + down_offset_[p];
    std::memcpy(host, bytes.data(), bytes.size());
    TERNPS_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(device, host, bytes.size(), cudaMemcpyHostToDevice, s));
    const auto data = absl::MakeConstSpan(device, bytes.size());
    if (avg.encoding == v1::INT_SUM) {
      return common::cuda::DeviceDecodeIntSum(data, avg.contributors, avg.scaler, false, out, s);
    }
    if (avg.encoding == v1::INT_SUM_RADIX) {
      return common::cuda::DeviceDecodeIntSumRadix(data, avg.contributors, avg.scaler, false, out,
                                                   s);
    }
    return common::cuda::DeviceDecodeTernary(data, avg.scaler, false, out, s);
  }

  absl::Status End() override {
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(decode_stream_.get()));
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(encode_stream_.get()));
    absl::MutexLock lock(&mu_);
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    events_.clear();
    return absl::OkStatus();
  }

 private:
  absl::Span<float> Slice(Gradients gradients, uint32_t p) const {
    return PartitionSlice(*plan_, gradients, p);
  }

  const common::PartitionPlan* plan_ = nullptr;
  std::vector<size_t> up_offset_, down_offset_;  // per partition, into the staging buffers
  common::cuda::Stream encode_stream_, decode_stream_;
  DeviceBuffer<common::cuda::DeviceStats> partials_, stats_device_;
  PinnedBuffer<common::cuda::DeviceStats> stats_host_;
  DeviceBuffer<uint8_t> codes_device_, down_device_;
  PinnedBuffer<uint8_t> up_host_, down_host_;
  absl::Mutex mu_;
  std::vector<cudaEvent_t> events_ ABSL_GUARDED_BY(mu_);
};

bool CudaAvailable() {
  absl::StatusOr<int> devices = common::cuda::CudaDeviceCount();
  return devices.ok() && *devices > 0;
}

absl::StatusOr<std::unique_ptr<Exchange>> CreateCudaExchange(const common::JobSpec& spec) {
  if (!CudaAvailable()) {
    return absl::FailedPreconditionError("gradients on a CUDA device: no usable CUDA device");
  }
  auto exchange = std::make_unique<CudaExchange>();
  if (absl::Status st = exchange->Init(spec); !st.ok()) return st;
  return exchange;
}

// Registers the CUDA implementation with libternps_worker when this library is loaded.
const bool kRegistered = [] {
  RegisterDeviceExchange(&CreateCudaExchange, &CudaAvailable);
  return true;
}();

}  // namespace

}  // namespace ternps::worker
