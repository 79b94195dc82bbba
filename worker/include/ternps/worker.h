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
// Errors come back as absl::Status with the shard's address in the message. What a failed Step
// leaves behind, by code:
//   - INVALID_ARGUMENT whose message starts with "gradients" (wrong count or sizes, non-finite
//     values in a compressed partition): nothing was sent; the worker is unchanged and the same
//     step can be retried with corrected input. (Non-finite values in an FP32 partition are
//     found while encoding, "encoding partition ...", when other partitions may be on the wire:
//     the case below.)
//   - ABORTED: this worker was dropped from the live set (step timeout) or replaced by a newer
//     Join of the same rank. Call Rejoin(); the next Step continues at the step the shards agree
//     on (the gradient of the failed step is lost) and the model has missed the averages its
//     peers applied meanwhile: rebuild it with Recover() (needs snapshot_interval > 0).
//   - a lost connection to a shard is not a failure by itself: the worker joins that shard again
//     (retrying up to connect_timeout), resuming its session where the shard still runs it, and
//     repeats the step's unanswered calls to it; the shard answers repeats of what it already has
//     without counting them twice, and a durable shard (--state_dir) that restarted answers them
//     as if nothing happened. UNAVAILABLE when the shard stays unreachable; FAILED_PRECONDITION
//     when it came back without the job's state.
//   - anything else (UNAVAILABLE, DEADLINE_EXCEEDED, a malformed answer, a device error): the
//     step may have reached some shards and not others, so its outcome is unknown. Call
//     Rejoin() before the next Step; if the shards completed the step without this worker, it
//     is readmitted at their current step.
// In every failure case the gradient buffers' contents are unspecified and step() is unchanged.
//
// Thread safety: one thread drives a Worker (Connect, Step, StepOnDevice, Rejoin, Leave, the
// destructor); the accessors are safe from any thread.
#ifndef TERNPS_WORKER_INCLUDE_TERNPS_WORKER_H_
#define TERNPS_WORKER_INCLUDE_TERNPS_WORKER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "ternps/codec_config.h"

namespace ternps::worker {

struct TensorInfo {
  std::string name;        // unique, non-empty
  uint64_t elements = 0;   // float32 elements, >= 1
  bool keep_fp32 = false;  // send uncompressed whatever its size
};

// The codec settings (ternps/codec_config.h), shared with the shard's resolution of a Join.
using CodecKind = ::ternps::CodecKind;
using CodecOptions = ::ternps::CodecConfig;

// Upper bound of WorkerOptions::channels_per_shard.
inline constexpr int kMaxChannelsPerShard = 16;

struct WorkerOptions {
  std::string job_id = "ternps";
  uint32_t rank = 0;
  uint32_t world_size = 1;
  std::vector<std::string> shards;  // host:port of shard i at index i
  std::vector<TensorInfo> tensors;  // identical on every worker
  CodecOptions codec;
  // Join keeps retrying while a shard is still starting (its name does not resolve yet, nothing
  // listens yet), up to this long, saying what it waits for after 2 s and then every 5 s. A
  // malformed address, and a peer that answers but does not speak gRPC, fail at once.
  absl::Duration connect_timeout = absl::Seconds(60);
  // Deadline of every other call; should exceed the shards' step timeout.
  absl::Duration rpc_timeout = absl::Seconds(180);
  // How long the destructor's Leave may take (a destroyed worker that does not leave costs its
  // peers a whole step timeout).
  absl::Duration leave_timeout = absl::Seconds(5);
  int threads = 2;                            // encode/decode threads
  size_t max_call_bytes = size_t{512} << 10;  // partitions per PushPull call, by wire bytes
  // PushPull calls in flight to one shard at a time (0: no limit). Partitions then complete in
  // order and the averages of early ones come back while later ones are still going up, instead
  // of every partition finishing at the end of the upload.
  // The depth should cover a call's upload, the shard's wait and the answer's download. Measured
  // (resnet50): over 1 Gbit/s links (tests/bench/netbench.sh, 4 workers x 4 shards) fp32, whose
  // calls are whole partitions (1 MiB by default), keeps its uplink busier with 4: 1.08x faster
  // than gloo (1.07-1.13x over three rounds) against 1.00x (0.93-1.01x) with 2; TernGrad (512
  // KiB calls) steps as fast with either there. On loopback (ternps-bench cluster, no wire time
  // to cover) 4 is slower for both: TernGrad 0.117 s -> 0.146-0.172 s, fp32 0.74-0.96 s ->
  // 1.10-1.47 s (two alternating runs). So: 4 for fp32 over a real link.
  int calls_in_flight_per_shard = 2;
  // TCP connections to each shard (1..kMaxChannelsPerShard). PushPull calls take turns on them;
  // Join, ShareScalers and the recovery calls use the first. One connection is one HTTP/2
  // stream of bytes that each end's gRPC reads and writes in turn; two let the kernel and gRPC
  // of both ends work on two calls at once on different cores. Measured (resnet50, fp32, one
  // worker and one shard without shaping, tests/bench/netbench.sh, three alternating pairs):
  // 0.51-0.56 GB/s each way with 2 against 0.41-0.49 with 1. Over 1 Gbit/s with 4 workers and 4
  // shards the step is the same with 1 or 2 within the run-to-run noise. All connections are made
  // by the Join (Connect, Rejoin, a reconnection), not by the first call.
  int channels_per_shard = 2;
  // Recovery (OfferState, Recover): every snapshot_interval steps one live worker uploads its
  // state and the shards keep every average since, so that a worker that (re)joins can rebuild
  // its peers' exact model. 0: off (the shards keep nothing; a rejoining worker cannot recover).
  // The shards hold about snapshot_interval steps of averages plus one copy of the state, and
  // refuse the Join (RESOURCE_EXHAUSTED naming snapshot_interval and the largest that fits) when
  // that could pass their --max_recovery_bytes. A job setting: identical on every worker.
  uint32_t snapshot_interval = 0;
  // TLS (files in PEM). tls_ca_file: the CA certificates the shards' certificates are checked
  // against; setting it turns TLS on. tls_cert_file and tls_key_file (both or neither): this
  // worker's certificate chain and key, for shards that require client certificates (mutual
  // TLS). Empty: plaintext. The files are read again every minute: rotated certificates are used
  // for the next connections (a reconnect after a shard restart, say) without restarting.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // A file holding the job's token (16 to 1024 printable ASCII bytes, no spaces; a final newline
  // is ignored), sent with every call as "authorization: Bearer <token>". The first Join of a job
  // fixes its token on each shard: workers without it are refused (UNAUTHENTICATED), workers with
  // another one too (PERMISSION_DENIED). Empty: no token. Use it with TLS, or the token crosses the
  // network in the clear.
  std::string token_file;
  // float32 values per model element in the state (parameters plus optimizer slots, e.g. 2 for
  // SGD with momentum), 1..16. A job setting.
  uint32_t state_slots = 1;
  // A shard remembers an ended job's id for a while and refuses a Join for it
  // (FAILED_PRECONDITION saying why it ended: a worker restarted after its peers finished must
  // not train the job alone). Set this to start a new run under the same job_id anyway.
  bool restart_ended_job = false;
  // Progress lines (waiting for a shard while connecting or reconnecting); null: written to
  // stderr as "ternps worker <rank>: <line>". Called from the thread driving the worker.
  std::function<void(std::string_view line)> log;
};

// A worker's state for recovery: state[i * state_slots + j] is slot j (0: the parameters) of
// tensor i, options.tensors[i].elements values each, in host memory.
using State = absl::Span<const absl::Span<float>>;

// Figures of one Step (wire payload bytes, as sent and received).
struct StepStats {
  uint64_t step = 0;
  uint64_t sent_bytes = 0;
  uint64_t received_bytes = 0;
  uint64_t dense_bytes = 0;  // float32 bytes of the gradient (one direction)
  double seconds = 0.0;      // the whole Step
  // Statistics (wall time of that phase) + encoding (summed over the threads doing it).
  double encode_seconds = 0.0;
  double decode_seconds = 0.0;  // summed over threads
  double scaler_seconds = 0.0;  // waiting for the shared scalers
  // From the scaler exchange to the last average decoded (later encodes overlap it).
  double communication_seconds = 0.0;
  uint32_t min_contributors = 0;  // smallest number of workers in any average
  // Shards joined again during the step after their connections were lost (a shard restarted
  // from its state directory); the step's calls to them were repeated.
  uint32_t reconnects = 0;
  // The step's timeline, in seconds since Step began: the statistics phase ended, the scaler
  // exchange ended, and per PushPull call (one shard, some partitions) when its encoding was
  // done (and the call sent), when its answer arrived (upload, the shard's wait for the other
  // workers and download together) and when it was decoded.
  double statistics_end = 0.0;
  double scalers_end = 0.0;
  struct Call {
    uint32_t shard = 0;
    uint64_t sent_bytes = 0;
    uint64_t received_bytes = 0;
    double encoded = 0.0;
    double answered = 0.0;
    double decoded = 0.0;
  };
  std::vector<Call> calls;
};

class Worker {
 public:
  // Joins every shard (retrying while one is still starting, up to connect_timeout).
  static absl::StatusOr<std::unique_ptr<Worker>> Connect(const WorkerOptions& options);
  // Leaves the job on every shard (bounded by options.leave_timeout) unless Leave() already did.
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Exchanges one gradient: gradients[i] is tensor i's (options.tensors[i].elements values);
  // on success each holds the average over the contributing workers. On failure the buffers'
  // contents are unspecified. The buffers must not be written by anyone else during the call:
  // FP32 partitions are sent from them without a copy.
  absl::Status Step(absl::Span<const absl::Span<float>> gradients);
  // Step for gradients in CUDA device memory (spans of device pointers): statistics and
  // ternarization run on the device and only packed bytes cross PCIe; averages are decoded on
  // the device into the same buffers.
  // Synchronization: `cuda_stream` (a cudaStream_t; null: the legacy default stream) is
  // synchronized before the gradients are read, so queue the backward pass on it and call this
  // right after; when this returns OK the averages are in the buffers (the device work of the
  // step has completed), so anything queued afterwards on any stream sees them.
  // Needs libternps_worker_cuda linked into the program (CMake: ternps::worker_cuda):
  // UNIMPLEMENTED without it, FAILED_PRECONDITION without a usable device.
  absl::Status StepOnDevice(absl::Span<const absl::Span<float>> device_gradients,
                            void* cuda_stream = nullptr);
  // Whether StepOnDevice can work here (ternps::worker_cuda linked and a device).
  static bool DeviceAvailable();

  // The streaming step: the same exchange as Step, started tensor by tensor while the rest of
  // the gradient is still being computed (the backward pass of a framework).
  //
  //   worker->StartStep();
  //   // as each group of gradients is computed (e.g. a DDP bucket, from the backward thread):
  //   worker->MarkReady({7, 8}, {w7_grad, b7_grad}, [](const absl::Status& st) { ... });
  //   ...
  //   absl::Status st = worker->FinishStep();   // waits for the whole step
  //
  // MarkReady hands over the buffers of `tensors` (indexes into options.tensors; buffers in
  // host memory, the tensors' sizes) and returns at once. A PushPull call starts as soon as
  // every tensor it carries a part of is marked: its statistics, its ShareScalers (one call per
  // shard for the calls readied by one mark) and its encoding run on the worker's threads
  // while the caller goes on. `written` is called once, from a worker thread (never inside
  // MarkReady), when every tensor of the group holds its average: OK, or the step's error once
  // nothing of the step touches any buffer any more (then the buffers are unspecified). It must
  // not call the worker's step methods; it may hand the buffers to another thread.
  //
  // Order. A shard's calls go out in the call plan's order, which follows options.tensors: a
  // call waits for the calls before it to the same shard to be sent (calls_in_flight_per_shard
  // still applies). Every worker keeps that order whatever order its tensors are marked in, which
  // is what keeps the shards' per-partition rounds from waiting on each other in a cycle. So list
  // options.tensors in the order their gradients become ready (reverse layer order for a
  // backward pass); then the calls the next forward pass needs first (the first layers) are
  // those sent last, and no call waits behind one whose tensors are not ready. Marking in
  // another order is correct, only slower.
  //
  // FinishStep says no more marks come and waits for the step's end: OK once every tensor was
  // marked and every average written (step() then advances), else the step's error; a tensor
  // never marked fails the step with FAILED_PRECONDITION naming it (what other tensors' calls
  // sent is then like any failed step: Rejoin). StartStep, Step, Rejoin, OfferState, Recover and
  // Leave finish a streaming step in progress first (StartStep and Step return its error if it
  // failed). MarkReady: INVALID_ARGUMENT for a bad index, size or a tensor marked twice (nothing
  // marked); FAILED_PRECONDITION without StartStep, or after the step failed (with its error).
  // Host memory only: CUDA buffers go through host memory (StepOnDevice is not streamed).
  // Thread safety: MarkReady may be called from any one thread at a time besides the driving
  // thread's StartStep/FinishStep ordering (StartStep before, FinishStep after every MarkReady).
  absl::Status StartStep();
  absl::Status MarkReady(absl::Span<const uint32_t> tensors,
                         absl::Span<const absl::Span<float>> gradients,
                         std::function<void(const absl::Status&)> written);
  absl::Status FinishStep();
  // Joins every shard again (after a failed Step); the next Step continues at the step they
  // agree on. The model is then behind its peers' (this worker missed averages): Recover.
  // NOT_FOUND if a shard no longer has the job (it ended or expired, or the shard restarted
  // without --state_dir): a rejoin never starts the job afresh.
  absl::Status Rejoin();

  // Recovery. After applying the averages of step() - 1 to `state` (i.e. right after the
  // optimizer update), call OfferState every step: when this worker is the one to snapshot the
  // state at the start of step() (step() a positive multiple of snapshot_interval, rank
  // (step() / snapshot_interval) % world_size), it uploads it to the shards; otherwise it returns
  // at once.
  absl::Status OfferState(State state);
  // For a worker that joined a running job (step() > 0 after Connect) or Rejoined: fetches the
  // newest snapshot and every average since from the shards. `state` must hold the job's
  // initial state (what every worker starts step 0 from: create the model afresh with the same
  // seed), which partitions without a snapshot yet start from. Writes the snapshots into `state`
  // and, for each step t from the snapshot to step() - 1 in order, writes the average of step t
  // into `gradients` and calls apply(t), which must run the same optimizer update the live
  // workers ran after Step t (same code, same hyperparameters for step t). Afterwards `state` is
  // bit for bit its peers' state at the start of step(). The optimizer must be elementwise:
  // partitions may have snapshots of different steps, so a partition's gradient is zero in
  // (and its state overwritten after) the steps before its own snapshot. Peers wait at step()
  // for this worker meanwhile. FAILED_PRECONDITION if the job keeps no recovery state.
  absl::Status Recover(State state, absl::Span<const absl::Span<float>> gradients,
                       const std::function<absl::Status(uint64_t step)>& apply);
  // Leaves the job on every shard; the destructor then does not leave again.
  absl::Status Leave();

  uint64_t step() const;
  StepStats last_step() const;
  uint32_t partitions() const;

 private:
  class Impl;
  explicit Worker(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_INCLUDE_TERNPS_WORKER_H_
