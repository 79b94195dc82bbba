// libternps_worker: the C++ client of a ternps (TernGrad) parameter server.
//
// A Worker joins every shard of a job, and each Step() exchanges one gradient: it computes the
// per-partition statistics, agrees on shared scalers with the other workers, ternarizes each
// partition on a thread pool and pushes it to the shard that owns it while the next one is being
// encoded, and writes each partition's average over all workers back into the caller's buffer as
// soon as that partition's answer arrives.
//
//   ternps::worker::WorkerOptions options;
//   options.job_id = "mnist";
//   options.rank = 0;
//   options.world_size = 4;
//   options.shards = {"127.0.0.1:7070", "127.0.0.1:7071"};
//   options.tensors = {{"fc1.weight", 784 * 512}, {"fc1.bias", 512}};
//   absl::StatusOr<std::unique_ptr<ternps::worker::Worker>> worker =
//       ternps::worker::Worker::Connect(options);
//   std::vector<absl::Span<float>> grads = {w1_grad, b1_grad};
//   absl::Status st = (*worker)->Step(grads);   // grads now hold the averaged gradient
//
// Errors come back as absl::Status with the shard's address in the message. ABORTED means this
// worker was dropped (step timeout) or replaced: call Rejoin() and continue with the next Step.
//
// Thread safety: one thread drives a Worker (Connect, Step, Rejoin, Leave); the accessors are
// safe from any thread.
#ifndef TERNPS_WORKER_INCLUDE_TERNPS_WORKER_H_
#define TERNPS_WORKER_INCLUDE_TERNPS_WORKER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace ternps::worker {

struct TensorInfo {
  std::string name;        // unique, non-empty
  uint64_t elements = 0;   // float32 elements, >= 1
  bool keep_fp32 = false;  // send uncompressed whatever its size
};

enum class CodecKind { kTernGrad, kFp32 };

struct CodecOptions {
  CodecKind codec = CodecKind::kTernGrad;
  float clip_sigmas = 2.5f;    // 0: no clipping
  bool scaler_sharing = true;  // exact integer aggregation, INT_SUM downlink
  uint32_t partition_elements = 1u << 20;
  uint32_t min_compress_elements = 4096;
  bool ternary_downlink = false;  // without sharing: averages come back re-ternarized
  uint64_t seed = 1;              // job seed of the rounding streams
};

struct WorkerOptions {
  std::string job_id = "ternps";
  uint32_t rank = 0;
  uint32_t world_size = 1;
  std::vector<std::string> shards;  // host:port of shard i at index i
  std::vector<TensorInfo> tensors;  // identical on every worker
  CodecOptions codec;
  // Join keeps retrying while a shard is still starting, up to this long.
  absl::Duration connect_timeout = absl::Seconds(60);
  // Deadline of every other call; should exceed the shards' step timeout.
  absl::Duration rpc_timeout = absl::Seconds(180);
  int threads = 2;                          // encode/decode threads
  size_t max_call_bytes = size_t{4} << 20;  // partitions per PushPull call, by wire bytes
};

// Figures of one Step (wire payload bytes, as sent and received).
struct StepStats {
  uint64_t step = 0;
  uint64_t sent_bytes = 0;
  uint64_t received_bytes = 0;
  uint64_t dense_bytes = 0;     // float32 bytes of the gradient (one direction)
  double seconds = 0.0;         // the whole Step
  double encode_seconds = 0.0;  // statistics + ternarization, summed over threads
  double decode_seconds = 0.0;  // summed over threads
  double scaler_seconds = 0.0;  // waiting for the shared scalers
  // From the scaler exchange to the last average decoded (later encodes overlap it).
  double communication_seconds = 0.0;
  uint32_t min_contributors = 0;  // smallest number of workers in any average
};

class Worker {
 public:
  static absl::StatusOr<std::unique_ptr<Worker>> Connect(const WorkerOptions& options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Exchanges one gradient: gradients[i] is tensor i's (options.tensors[i].elements values);
  // on success each holds the average over the contributing workers. On failure the buffers'
  // contents are unspecified.
  absl::Status Step(absl::Span<const absl::Span<float>> gradients);
  // Step for gradients in CUDA device memory (spans of device pointers): statistics and
  // ternarization run on the device and only packed bytes cross PCIe; averages are decoded on
  // the device into the same buffers, complete when this returns. UNIMPLEMENTED in a build
  // without CUDA, FAILED_PRECONDITION without a usable device.
  absl::Status StepOnDevice(absl::Span<const absl::Span<float>> device_gradients);
  // Whether StepOnDevice can work here (CUDA build and a device).
  static bool DeviceAvailable();
  // Joins every shard again (after ABORTED); the next Step continues at the step they agree on.
  absl::Status Rejoin();
  // Leaves the job on every shard.
  absl::Status Leave();

  uint64_t step() const;
  StepStats last_step() const;
  uint32_t partitions() const;

  class Impl;

 private:
  explicit Worker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_INCLUDE_TERNPS_WORKER_H_
