// DeviceExchange on CUDA (common/cuda kernels).
#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/cuda/device_codec.h"
#include "worker/client/device_exchange.h"

namespace ternps::worker {
namespace {

using common::cuda::DeviceBuffer;
using common::cuda::PinnedBuffer;

class CudaExchange final : public DeviceExchange {
 public:
  absl::Status Init(const common::PartitionPlan& plan, uint32_t world_size, bool fp32_averages) {
    plan_ = &plan;
    const size_t parts = plan.partitions().size();
    up_offset_.resize(parts + 1, 0);
    down_offset_.resize(parts + 1, 0);
    for (size_t p = 0; p < parts; ++p) {
      const common::Partition& part = plan.partition(static_cast<uint32_t>(p));
      const size_t up =
          part.compressed ? common::TernaryBytes(part.elements) : common::Fp32Bytes(part.elements);
      size_t down = common::Fp32Bytes(part.elements);
      if (part.compressed && !fp32_averages) {
        down = std::max(common::TernaryBytes(part.elements),
                        common::IntSumBytes(part.elements, static_cast<int>(world_size)));
      }
      up_offset_[p + 1] = up_offset_[p] + up;
      down_offset_[p + 1] = down_offset_[p] + down;
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

  absl::Status Stats(absl::Span<const absl::Span<float>> gradients,
                     std::vector<common::PartitionStats>& stats) override {
    const cudaStream_t s = encode_stream_.get();
    std::vector<uint32_t> compressed;
    for (const common::Partition& part : plan_->partitions()) {
      if (!part.compressed) continue;
      compressed.push_back(part.id);
      TERNPS_CUDA_RETURN_IF_ERROR(common::cuda::LaunchStats(Slice(gradients, part.id).data(),
                                                            part.elements, partials_.data(),
                                                            stats_device_.data() + part.id, s));
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
        return absl::InvalidArgumentError(
            absl::StrCat("gradients (partition ", p, "): ", st.status().message()));
      }
      stats[p] = *st;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Ticket> EncodeAsync(absl::Span<const absl::Span<float>> gradients,
                                     absl::Span<const uint32_t> partitions,
                                     const std::vector<float>& clips,
                                     const std::vector<float>& scalers,
                                     const common::TernaryKey& key_base) override {
    const cudaStream_t s = encode_stream_.get();
    for (const uint32_t p : partitions) {
      const common::Partition& part = plan_->partition(p);
      const absl::Span<float> g = Slice(gradients, p);
      const size_t bytes = up_offset_[p + 1] - up_offset_[p];
      uint8_t* host = up_host_.data() + up_offset_[p];
      if (part.compressed) {
        common::TernaryKey key = key_base;
        key.partition = p;
        uint8_t* codes = codes_device_.data() + up_offset_[p];
        if (absl::Status st = common::cuda::DeviceTernarize(g, clips[p], scalers[p], key,
                                                            absl::MakeSpan(codes, bytes), s);
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
    return Ticket{static_cast<int>(events_.size()) - 1};
  }

  absl::Status Wait(Ticket ticket) override {
    cudaEvent_t event;
    {
      absl::MutexLock lock(&mu_);
      if (ticket.index < 0 || ticket.index >= static_cast<int>(events_.size())) {
        return absl::InvalidArgumentError("ticket: unknown");
      }
      event = events_[ticket.index];
    }
    TERNPS_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(event));
    return absl::OkStatus();
  }

  absl::Span<const uint8_t> HostBytes(uint32_t p) const override {
    return absl::MakeConstSpan(up_host_.data() + up_offset_[p], up_offset_[p + 1] - up_offset_[p]);
  }

  absl::Status DecodeAsync(absl::Span<const absl::Span<float>> gradients, uint32_t p, int encoding,
                           float scaler, int contributors,
                           absl::Span<const uint8_t> bytes) override {
    const cudaStream_t s = decode_stream_.get();
    const absl::Span<float> out = Slice(gradients, p);
    const size_t capacity = down_offset_[p + 1] - down_offset_[p];
    if (bytes.size() > capacity) {
      return absl::InvalidArgumentError(absl::StrCat("partition ", p, ": ", bytes.size(),
                                                     " bytes exceed its staging of ", capacity));
    }
    if (encoding == 1) {  // FP32: the payload is the gradient itself
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
    if (encoding == 3) {
      return common::cuda::DeviceDecodeIntSum(data, contributors, scaler, false, out, s);
    }
    return common::cuda::DeviceDecodeTernary(data, scaler, false, out, s);
  }

  absl::Status Finish() override {
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(decode_stream_.get()));
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(encode_stream_.get()));
    absl::MutexLock lock(&mu_);
    for (cudaEvent_t e : events_) cudaEventDestroy(e);
    events_.clear();
    return absl::OkStatus();
  }

 private:
  absl::Span<float> Slice(absl::Span<const absl::Span<float>> gradients, uint32_t p) const {
    const common::Partition& part = plan_->partition(p);
    return gradients[part.tensor].subspan(part.offset, part.elements);
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

absl::StatusOr<std::unique_ptr<DeviceExchange>> CreateCudaExchange(
    const common::PartitionPlan& plan, uint32_t world_size, bool fp32_averages) {
  if (!CudaAvailable()) {
    return absl::FailedPreconditionError("gradients on a CUDA device: no usable CUDA device");
  }
  auto exchange = std::make_unique<CudaExchange>();
  if (absl::Status st = exchange->Init(plan, world_size, fp32_averages); !st.ok()) return st;
  return exchange;
}

// Registers the CUDA implementation with libternps_worker when this library is loaded.
const bool kRegistered = [] {
  DeviceExchange::Register(&CreateCudaExchange, &CudaAvailable);
  return true;
}();

}  // namespace

}  // namespace ternps::worker
