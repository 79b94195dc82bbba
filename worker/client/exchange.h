// Internal to libternps_worker: where a step's numeric work happens. A step (Worker::Step, or
// the streaming step as its tensors are marked) runs one path (statistics, shared scalers, encode
// and push batch by batch, decode each answer) over an Exchange; the host implementation works on
// the CPU thread pool, the device one (CUDA, in libternps_worker_cuda) keeps gradients on the GPU
// and moves only packed bytes over PCIe.
//
//   std::unique_ptr<Exchange> host = MakeHostExchange(spec, pool);
//   absl::StatusOr<std::unique_ptr<Exchange>> device = MakeDeviceExchange(spec);
//
// Per step: Begin; then, as batches become ready, Stats of their partitions and per batch
// StartEncode (from the thread driving the step, in batch order within each group of batches
// that became encodable together) and FinishEncode (from any thread, once per ticket), Decode per
// answered partition (from any thread, concurrently), and End before the step returns.
// Thread-compatible otherwise.
#ifndef TERNPS_WORKER_CLIENT_EXCHANGE_H_
#define TERNPS_WORKER_CLIENT_EXCHANGE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/codec/ternary.h"
#include "common/spec/job_spec.h"
#include "common/util/thread_pool.h"
#include "common/wire/push_pull_wire.h"

namespace ternps::worker {

using Gradients = absl::Span<const absl::Span<float>>;

// How the partitions of one step are encoded (indexed by partition id).
struct EncodeParams {
  const std::vector<float>* clips = nullptr;
  const std::vector<float>* scalers = nullptr;
  common::TernaryKey key_base;  // .partition is set per partition
};

// An average whose header (partition, encoding = the route's downlink, contributors, scaler) and
// length were validated. Its bytes are `bytes`, validated too, or, for an average handed to an
// Exchange whose DecodesPieces(encoding) is true, `pieces`, whose values that Exchange checks.
struct Average {
  ternps::v1::Encoding encoding = ternps::v1::FP32;
  float scaler = 0.0f;
  int contributors = 0;
  absl::Span<const uint8_t> bytes;
  absl::Span<const common::Piece> pieces;
};

class Exchange {
 public:
  virtual ~Exchange() = default;

  // Starts a step. `stream` (device: a cudaStream_t, null = the legacy default stream) is
  // waited for before the gradients are read; the host ignores it.
  virtual absl::Status Begin(void* stream) = 0;
  // stats[p] of every partition in `compressed`; on failure *bad is the partition at fault.
  virtual absl::Status Stats(Gradients gradients, absl::Span<const uint32_t> compressed,
                             std::vector<common::PartitionStats>& stats, uint32_t* bad) = 0;
  // Starts encoding a batch of partitions; the ticket is passed to FinishEncode.
  virtual absl::StatusOr<int> StartEncode(Gradients gradients,
                                          absl::Span<const uint32_t> partitions,
                                          const EncodeParams& params) = 0;
  // Writes the uplink bytes of the batch's partitions into out[i] (exactly their wire size),
  // except partitions whose UplinkInPlace is not empty (their out[i] is empty).
  virtual absl::Status FinishEncode(int ticket, Gradients gradients,
                                    absl::Span<const uint32_t> partitions,
                                    const EncodeParams& params,
                                    absl::Span<const absl::Span<uint8_t>> out) = 0;
  // Writes the average over partition p's slice of the gradients. An average taken as pieces is
  // checked as it is written (INVALID_ARGUMENT naming the field, the gradients then unspecified).
  virtual absl::Status Decode(Gradients gradients, uint32_t partition, const Average& average) = 0;
  // Ends the step: every decode has landed in the gradients when this returns OK.
  virtual absl::Status End() = 0;
  // Partition p's uplink bytes when they are the gradients' own memory, sent without a copy (the
  // host's FP32: the wire format is the little-endian floats); empty when FinishEncode writes
  // them. The worker leaves that memory unchanged until the call carrying it has completed: it
  // writes p's slice only when p's average arrives, which the shard sends only after receiving
  // all of this worker's push of p, and a step returns only after its calls completed.
  virtual absl::Span<const uint8_t> UplinkInPlace(Gradients, uint32_t) const { return {}; }
  // Whether Decode takes averages of `encoding` as pieces (received slices) instead of one span,
  // and checks their values itself.
  virtual bool DecodesPieces(ternps::v1::Encoding) const { return false; }
};

// The CPU implementation; `pool` outlives it.
std::unique_ptr<Exchange> MakeHostExchange(const common::JobSpec& spec, common::ThreadPool& pool);

// The device implementation, if libternps_worker_cuda is loaded (UNIMPLEMENTED otherwise) and a
// device is usable (FAILED_PRECONDITION otherwise).
absl::StatusOr<std::unique_ptr<Exchange>> MakeDeviceExchange(const common::JobSpec& spec);
bool DeviceExchangeAvailable();

// Called by libternps_worker_cuda's initializer.
using DeviceExchangeFactory =
    absl::StatusOr<std::unique_ptr<Exchange>> (*)(const common::JobSpec& spec);
void RegisterDeviceExchange(DeviceExchangeFactory create, bool (*is_available)());

// The slice of `gradients` that partition p covers.
inline absl::Span<float> PartitionSlice(const common::PartitionPlan& plan, Gradients gradients,
                                        uint32_t p) {
  const common::Partition& part = plan.partition(p);
  return gradients[part.tensor].subspan(part.offset, part.elements);
}

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_EXCHANGE_H_
