// Internal to libternps_worker: the device side of Worker::StepOnDevice. Gradients live in CUDA
// device memory; partitions are reduced and ternarized on the device, and only packed bytes
// cross PCIe (into pinned host memory); averages go back the same way and are decoded on the
// device into the gradient buffers.
//
// Per step: Stats() (one synchronization for all partitions), then EncodeAsync() per batch of
// partitions (kernels and copies queued on the encode stream; the returned ticket is waited on
// before the bytes are read, so encoding batch i+1 overlaps sending batch i), DecodeAsync() per
// answered partition (on the decode stream, from any thread), and Finish() before returning.
//
// Thread-compatible, except DecodeAsync, which may be called from several threads at once.
#ifndef TERNPS_WORKER_CLIENT_DEVICE_EXCHANGE_H_
#define TERNPS_WORKER_CLIENT_DEVICE_EXCHANGE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/codec/ternary.h"
#include "common/plan/partition_plan.h"

namespace ternps::worker {

class DeviceExchange {
 public:
  // Whether an implementation is registered (libternps_worker_cuda is loaded) and a device is
  // usable.
  static bool Available();
  using Factory = absl::StatusOr<std::unique_ptr<DeviceExchange>> (*)(
      const common::PartitionPlan& plan, uint32_t world_size, bool fp32_averages);
  // Called by libternps_worker_cuda's initializer.
  static void Register(Factory create, bool (*is_available)());
  // fp32_averages: compressed partitions come back as FP32 (TernGrad without scaler sharing and
  // an FP32 downlink), which sizes their staging.
  static absl::StatusOr<std::unique_ptr<DeviceExchange>> Create(const common::PartitionPlan& plan,
                                                                uint32_t world_size,
                                                                bool fp32_averages);
  virtual ~DeviceExchange() = default;

  // Statistics of every compressed partition (stats[p]; others untouched).
  virtual absl::Status Stats(absl::Span<const absl::Span<float>> gradients,
                             std::vector<common::PartitionStats>& stats) = 0;

  struct Ticket {
    int index = -1;  // internal
  };
  // Queues the encoding of `partitions` (compressed: ternarized with clips[p], scalers[p] and
  // key {seed, rank, step, p}; others: copied as FP32) into pinned host memory.
  virtual absl::StatusOr<Ticket> EncodeAsync(absl::Span<const absl::Span<float>> gradients,
                                             absl::Span<const uint32_t> partitions,
                                             const std::vector<float>& clips,
                                             const std::vector<float>& scalers,
                                             const common::TernaryKey& key_base) = 0;
  // Waits for a ticket; then HostBytes(p) of its partitions hold the wire bytes.
  virtual absl::Status Wait(Ticket ticket) = 0;
  virtual absl::Span<const uint8_t> HostBytes(uint32_t partition) const = 0;

  // Queues the decoding of a validated average of partition p (`encoding` 1 FP32, 2
  // TERNARY_2BIT, 3 INT_SUM as in the proto) into the partition's device gradient slice.
  virtual absl::Status DecodeAsync(absl::Span<const absl::Span<float>> gradients,
                                   uint32_t partition, int encoding, float scaler, int contributors,
                                   absl::Span<const uint8_t> bytes) = 0;
  // Waits for every queued decode.
  virtual absl::Status Finish() = 0;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_DEVICE_EXCHANGE_H_
