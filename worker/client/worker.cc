#include "ternps/worker.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "common/plan/partition_plan.h"
#include "common/rpc/status.h"
#include "common/util/thread_pool.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "ternps/v1/ternps.grpc.pb.h"
#include "worker/client/device_exchange.h"

namespace ternps::worker {

namespace v1 = ::ternps::v1;

namespace {

// The first error of a step wins; later ones are usually its consequences.
class FirstError {
 public:
  void Set(absl::Status st) ABSL_LOCKS_EXCLUDED(mu_) {
    if (st.ok()) return;
    absl::MutexLock lock(&mu_);
    if (status_.ok()) status_ = std::move(st);
  }
  absl::Status Get() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  mutable absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

void AddSeconds(std::atomic<double>& total, double s) {
  double old = total.load(std::memory_order_relaxed);
  while (!total.compare_exchange_weak(old, old + s, std::memory_order_relaxed)) {
  }
}

absl::Span<uint8_t> Bytes(std::string& s) {
  return absl::MakeSpan(reinterpret_cast<uint8_t*>(s.data()), s.size());
}
absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

class Worker::Impl {
 public:
  Impl(const WorkerOptions& options, common::PartitionPlan plan)
      : options_(options), plan_(std::move(plan)), pool_(options.threads) {}

  absl::Status Init();
  absl::Status JoinAll();
  absl::Status Step(absl::Span<const absl::Span<float>> gradients, bool on_device);
  absl::Status Leave();

  uint64_t step() const {
    absl::MutexLock lock(&mu_);
    return step_;
  }
  StepStats last_step() const {
    absl::MutexLock lock(&mu_);
    return last_;
  }
  uint32_t partitions() const { return static_cast<uint32_t>(plan_.partitions().size()); }

 private:
  // One reusable call to one shard about some of its partitions.
  template <typename Request, typename Response>
  struct ShardCall {
    uint32_t shard = 0;
    std::vector<uint32_t> partitions;
    Request request;
    Response response;
    std::unique_ptr<grpc::ClientContext> context;
  };
  using Batch = ShardCall<v1::PushPullRequest, v1::PushPullResponse>;
  using ScalerCall = ShardCall<v1::ShareScalersRequest, v1::ShareScalersResponse>;
  // Per-step counters, written by pool and gRPC threads.
  struct StepCounters {
    std::atomic<uint64_t> sent{0};
    std::atomic<uint64_t> received{0};
    std::atomic<double> encode{0.0};
    std::atomic<double> decode{0.0};
    std::atomic<uint32_t> min_contributors{UINT32_MAX};
  };

  bool sharing() const {
    return options_.codec.codec == CodecKind::kTernGrad && options_.codec.scaler_sharing;
  }
  std::string ShardName(uint32_t shard) const {
    return absl::StrCat("shard ", shard, " (", options_.shards[shard], ")");
  }
  std::unique_ptr<grpc::ClientContext> NewContext(absl::Duration timeout) const {
    auto context = std::make_unique<grpc::ClientContext>();
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    return context;
  }
  absl::Span<float> Slice(absl::Span<const absl::Span<float>> gradients, uint32_t p) const {
    const common::Partition& part = plan_.partition(p);
    return gradients[part.tensor].subspan(part.offset, part.elements);
  }
  absl::Status ShareScalers();
  // Fills the batch's payloads: encodes on the CPU, or (on_device) copies the bytes the device
  // produced for `ticket`.
  absl::Status Encode(Batch& batch, absl::Span<const absl::Span<float>> gradients, bool on_device,
                      DeviceExchange::Ticket ticket);
  void EncodeAndSend(Batch& batch, absl::Span<const absl::Span<float>> gradients, bool on_device,
                     DeviceExchange::Ticket ticket, StepCounters& counters, FirstError& error,
                     absl::BlockingCounter& pending);
  absl::Status Decode(Batch& batch, absl::Span<const absl::Span<float>> gradients, bool on_device,
                      StepCounters& counters);

  const WorkerOptions options_;
  const common::PartitionPlan plan_;
  common::ThreadPool pool_;
  std::vector<std::unique_ptr<v1::ParameterServer::Stub>> stubs_;
  std::vector<uint64_t> epochs_;
  std::vector<Batch> batches_;
  std::vector<ScalerCall> scaler_calls_;
  std::vector<common::PartitionStats> stats_;  // per partition (compressed ones)
  std::vector<float> scalers_;                 // per partition: the scaler it is encoded with
  std::vector<float> clips_;                   // per partition: its clip threshold
  std::unique_ptr<DeviceExchange> device_;     // created by the first step on the device
  mutable absl::Mutex mu_;
  uint64_t step_ ABSL_GUARDED_BY(mu_) = 0;
  StepStats last_ ABSL_GUARDED_BY(mu_);
};

absl::Status Worker::Impl::Init() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  for (const std::string& address : options_.shards) {
    stubs_.push_back(v1::ParameterServer::NewStub(
        grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
  }
  epochs_.assign(options_.shards.size(), 0);
  stats_.resize(plan_.partitions().size());
  scalers_.assign(plan_.partitions().size(), 0.0f);
  clips_.assign(plan_.partitions().size(), 0.0f);
  // Batches: each shard's partitions in plan order, cut at max_call_bytes of payload; then
  // interleaved across shards so every shard gets work from the start of a step.
  std::vector<std::vector<Batch>> per_shard(options_.shards.size());
  for (uint32_t s = 0; s < options_.shards.size(); ++s) {
    size_t bytes = 0;
    for (const uint32_t p : plan_.PartitionsOfShard(s)) {
      const common::Partition& part = plan_.partition(p);
      const size_t wire =
          part.compressed ? common::TernaryBytes(part.elements) : common::Fp32Bytes(part.elements);
      if (per_shard[s].empty() || bytes + wire > options_.max_call_bytes) {
        per_shard[s].emplace_back();
        per_shard[s].back().shard = s;
        bytes = 0;
      }
      per_shard[s].back().partitions.push_back(p);
      bytes += wire;
    }
    std::vector<uint32_t> compressed;
    for (const uint32_t p : plan_.PartitionsOfShard(s)) {
      if (plan_.partition(p).compressed) compressed.push_back(p);
    }
    if (sharing() && !compressed.empty()) {
      scaler_calls_.emplace_back();
      scaler_calls_.back().shard = s;
      scaler_calls_.back().partitions = std::move(compressed);
    }
  }
  for (size_t round = 0;; ++round) {
    bool any = false;
    for (auto& list : per_shard) {
      if (round < list.size()) {
        batches_.push_back(std::move(list[round]));
        any = true;
      }
    }
    if (!any) break;
  }
  for (Batch& b : batches_) {
    b.request.set_job_id(options_.job_id);
    b.request.set_worker_rank(options_.rank);
    for (const uint32_t p : b.partitions) {
      const common::Partition& part = plan_.partition(p);
      v1::PartitionPayload* payload = b.request.add_partitions();
      payload->set_partition_id(p);
      payload->set_elements(part.elements);
      payload->set_encoding(part.compressed ? v1::TERNARY_2BIT : v1::FP32);
      payload->mutable_data()->resize(part.compressed ? common::TernaryBytes(part.elements)
                                                      : common::Fp32Bytes(part.elements));
    }
  }
  for (ScalerCall& c : scaler_calls_) {
    c.request.set_job_id(options_.job_id);
    c.request.set_worker_rank(options_.rank);
    for (const uint32_t p : c.partitions) {
      c.request.add_partition_ids(p);
      c.request.add_scalers(0.0f);
    }
  }
  return JoinAll();
}

absl::Status Worker::Impl::JoinAll() {
  v1::JoinRequest request;
  request.set_job_id(options_.job_id);
  request.set_worker_rank(options_.rank);
  request.set_world_size(options_.world_size);
  for (const TensorInfo& t : options_.tensors) {
    v1::TensorSpec* spec = request.add_tensors();
    spec->set_name(t.name);
    spec->set_elements(t.elements);
    spec->set_keep_fp32(t.keep_fp32);
  }
  v1::CodecSettings* codec = request.mutable_codec();
  codec->set_codec(options_.codec.codec == CodecKind::kTernGrad ? v1::CODEC_TERNGRAD
                                                                : v1::CODEC_FP32);
  codec->set_clip_sigmas(options_.codec.clip_sigmas);
  codec->set_scaler_sharing(options_.codec.scaler_sharing);
  codec->set_partition_elements(options_.codec.partition_elements);
  codec->set_min_compress_elements(options_.codec.min_compress_elements);
  codec->set_downlink_encoding(options_.codec.ternary_downlink ? v1::TERNARY_2BIT : v1::FP32);
  codec->set_seed(options_.codec.seed);
  request.set_shard_count(static_cast<uint32_t>(options_.shards.size()));
  request.set_plan_checksum(plan_.Checksum());
  uint64_t start = 0;
  for (uint32_t s = 0; s < options_.shards.size(); ++s) {
    request.set_shard_index(s);
    v1::JoinResponse response;
    std::unique_ptr<grpc::ClientContext> context = NewContext(options_.connect_timeout);
    context->set_wait_for_ready(true);  // retry while the shard is still starting
    const grpc::Status st = stubs_[s]->Join(context.get(), request, &response);
    if (!st.ok()) return common::FromGrpcStatus(st, absl::StrCat(ShardName(s), " Join"));
    if (response.plan_checksum() != plan_.Checksum()) {
      return absl::FailedPreconditionError(
          absl::StrCat(ShardName(s), " Join: plan_checksum ", absl::Hex(response.plan_checksum()),
                       " differs from this worker's ", absl::Hex(plan_.Checksum())));
    }
    const std::vector<uint32_t>& mine = plan_.PartitionsOfShard(s);
    if (!std::equal(mine.begin(), mine.end(), response.owned_partitions().begin(),
                    response.owned_partitions().end())) {
      return absl::FailedPreconditionError(absl::StrCat(
          ShardName(s), " Join: owned_partitions differ from this worker's partition plan"));
    }
    epochs_[s] = response.epoch();
    start = std::max(start, response.start_step());
  }
  absl::MutexLock lock(&mu_);
  step_ = start;
  return absl::OkStatus();
}

absl::Status Worker::Impl::ShareScalers() {
  const uint64_t step = this->step();
  absl::BlockingCounter pending(static_cast<int>(scaler_calls_.size()));
  FirstError error;
  for (ScalerCall& c : scaler_calls_) {
    c.request.set_epoch(epochs_[c.shard]);
    c.request.set_step(step);
    for (size_t i = 0; i < c.partitions.size(); ++i) {
      c.request.set_scalers(static_cast<int>(i), scalers_[c.partitions[i]]);
    }
    c.response.Clear();
    c.context = NewContext(options_.rpc_timeout);
    stubs_[c.shard]->async()->ShareScalers(
        c.context.get(), &c.request, &c.response, [&, shard = c.shard](grpc::Status st) {
          error.Set(common::FromGrpcStatus(st, absl::StrCat(ShardName(shard), " ShareScalers")));
          pending.DecrementCount();
        });
  }
  pending.Wait();
  if (absl::Status st = error.Get(); !st.ok()) return st;
  for (ScalerCall& c : scaler_calls_) {
    const std::string where = absl::StrCat(ShardName(c.shard), " ShareScalers answer: ");
    if (c.response.shared_scalers_size() != static_cast<int>(c.partitions.size()) ||
        c.response.partition_ids_size() != static_cast<int>(c.partitions.size())) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "shared_scalers: ", c.response.shared_scalers_size(), " values for ",
                       c.partitions.size(), " partitions"));
    }
    for (size_t i = 0; i < c.partitions.size(); ++i) {
      const float shared = c.response.shared_scalers(static_cast<int>(i));
      const uint32_t p = c.partitions[i];
      if (c.response.partition_ids(static_cast<int>(i)) != p ||
          !common::ValidateScaler(shared).ok() || shared < scalers_[p]) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "shared_scalers[", i, "]: ", shared, " for partition ", p,
                         " is not a valid maximum (this worker's scaler is ", scalers_[p], ")"));
      }
      scalers_[p] = shared;
    }
  }
  return absl::OkStatus();
}

absl::Status Worker::Impl::Encode(Batch& batch, absl::Span<const absl::Span<float>> gradients,
                                  bool on_device, DeviceExchange::Ticket ticket) {
  if (on_device) {
    if (absl::Status st = device_->Wait(ticket); !st.ok()) return st;
  }
  const uint64_t step = this->step();
  for (size_t i = 0; i < batch.partitions.size(); ++i) {
    const uint32_t p = batch.partitions[i];
    const common::Partition& part = plan_.partition(p);
    v1::PartitionPayload* payload = batch.request.mutable_partitions(static_cast<int>(i));
    if (part.compressed) payload->set_scaler(scalers_[p]);
    absl::Status st;
    if (on_device) {
      const absl::Span<const uint8_t> bytes = device_->HostBytes(p);
      std::memcpy(payload->mutable_data()->data(), bytes.data(), bytes.size());
    } else if (part.compressed) {
      const common::TernaryKey key{options_.codec.seed, options_.rank, step, p};
      st = common::Ternarize(Slice(gradients, p), clips_[p], scalers_[p], key,
                             Bytes(*payload->mutable_data()));
    } else {
      st = common::EncodeFp32(Slice(gradients, p), Bytes(*payload->mutable_data()));
    }
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat("encoding partition ", p, ": ", st.message()));
    }
  }
  return absl::OkStatus();
}

void Worker::Impl::EncodeAndSend(Batch& batch, absl::Span<const absl::Span<float>> gradients,
                                 bool on_device, DeviceExchange::Ticket ticket,
                                 StepCounters& counters, FirstError& error,
                                 absl::BlockingCounter& pending) {
  const absl::Time start = absl::Now();
  batch.request.set_epoch(epochs_[batch.shard]);
  batch.request.set_step(this->step());
  if (absl::Status st = Encode(batch, gradients, on_device, ticket); !st.ok()) {
    error.Set(std::move(st));
    pending.DecrementCount();
    return;
  }
  uint64_t sent = 0;
  for (const v1::PartitionPayload& payload : batch.request.partitions()) {
    sent += payload.data().size();
  }
  counters.sent.fetch_add(sent, std::memory_order_relaxed);
  AddSeconds(counters.encode, Seconds(start));
  batch.response.Clear();
  batch.context = NewContext(options_.rpc_timeout);
  stubs_[batch.shard]->async()->PushPull(
      batch.context.get(), &batch.request, &batch.response,
      [this, &batch, gradients, on_device, &counters, &error, &pending](grpc::Status st) {
        if (!st.ok()) {
          error.Set(common::FromGrpcStatus(st, absl::StrCat(ShardName(batch.shard), " PushPull")));
          pending.DecrementCount();
          return;
        }
        // Decode on the pool, not on gRPC's callback thread.
        pool_.Schedule([this, &batch, gradients, on_device, &counters, &error, &pending] {
          error.Set(Decode(batch, gradients, on_device, counters));
          pending.DecrementCount();
        });
      });
}

absl::Status Worker::Impl::Decode(Batch& batch, absl::Span<const absl::Span<float>> gradients,
                                  bool on_device, StepCounters& counters) {
  const absl::Time start = absl::Now();
  const std::string where = absl::StrCat(ShardName(batch.shard), " PushPull answer: ");
  if (batch.response.averages_size() != static_cast<int>(batch.partitions.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "averages: ", batch.response.averages_size(), " for ",
                     batch.partitions.size(), " partitions"));
  }
  uint64_t received = 0;
  for (size_t i = 0; i < batch.partitions.size(); ++i) {
    const uint32_t p = batch.partitions[i];
    const common::Partition& part = plan_.partition(p);
    const v1::PartitionPayload& avg = batch.response.averages(static_cast<int>(i));
    const std::string field = absl::StrCat(where, "averages[", i, "]");
    if (avg.partition_id() != p || avg.elements() != part.elements) {
      return absl::InvalidArgumentError(absl::StrCat(field, ": partition ", avg.partition_id(),
                                                     " of ", avg.elements(), " elements, expected ",
                                                     p, " of ", part.elements));
    }
    if (avg.contributors() < 1 || avg.contributors() > options_.world_size) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".contributors: ", avg.contributors(),
                                                     " is outside [1, world_size]"));
    }
    v1::Encoding expected = v1::FP32;
    if (part.compressed) {
      expected = sharing()                         ? v1::INT_SUM
                 : options_.codec.ternary_downlink ? v1::TERNARY_2BIT
                                                   : v1::FP32;
    }
    if (avg.encoding() != expected) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".encoding: ", v1::Encoding_Name(avg.encoding()), ", expected ",
                       v1::Encoding_Name(expected)));
    }
    const absl::Span<float> out = Slice(gradients, p);
    const absl::Span<const uint8_t> bytes = Bytes(avg.data());
    const int n_contrib = static_cast<int>(avg.contributors());
    absl::Status st;
    if (expected == v1::INT_SUM && avg.scaler() != scalers_[p]) {
      st = absl::InvalidArgumentError(
          absl::StrCat("scaler: ", avg.scaler(), " is not the shared scaler ", scalers_[p]));
    } else if (expected == v1::INT_SUM) {
      st = common::ValidateIntSum(bytes, part.elements, n_contrib);
    } else if (expected == v1::TERNARY_2BIT) {
      st = common::ValidateScaler(avg.scaler());
      if (st.ok()) st = common::ValidateTernary(bytes, part.elements);
    } else {
      st = common::ValidateFp32(bytes, part.elements);
    }
    if (st.ok() && on_device) {
      st = device_->DecodeAsync(gradients, p, static_cast<int>(expected), avg.scaler(), n_contrib,
                                bytes);
    } else if (st.ok() && expected == v1::FP32) {
      common::CopyValidatedFp32(bytes, out);
    } else if (st.ok()) {
      std::fill(out.begin(), out.end(), 0.0f);
      if (expected == v1::INT_SUM) {
        common::DecodeValidatedIntSumAdd(bytes, n_contrib, avg.scaler(), out);
      } else {
        common::DecodeValidatedTernaryAdd(bytes, avg.scaler(), out);
      }
    }
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat(field, ".", st.message()));
    received += avg.data().size();
    uint32_t seen = counters.min_contributors.load(std::memory_order_relaxed);
    while (avg.contributors() < seen &&
           !counters.min_contributors.compare_exchange_weak(seen, avg.contributors())) {
    }
  }
  counters.received.fetch_add(received, std::memory_order_relaxed);
  AddSeconds(counters.decode, Seconds(start));
  return absl::OkStatus();
}

absl::Status Worker::Impl::Step(absl::Span<const absl::Span<float>> gradients, bool on_device) {
  const absl::Time start = absl::Now();
  if (on_device && device_ == nullptr) {
    const bool fp32_averages = options_.codec.codec == CodecKind::kTernGrad &&
                               !options_.codec.scaler_sharing && !options_.codec.ternary_downlink;
    absl::StatusOr<std::unique_ptr<DeviceExchange>> device =
        DeviceExchange::Create(plan_, options_.world_size, fp32_averages);
    if (!device.ok()) return device.status();
    device_ = *std::move(device);
  }
  if (gradients.size() != options_.tensors.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "gradients: ", gradients.size(), " tensors, the job has ", options_.tensors.size()));
  }
  for (size_t t = 0; t < gradients.size(); ++t) {
    if (gradients[t].size() != options_.tensors[t].elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("gradients[", t, "]: ", gradients[t].size(), " elements, tensor '",
                       options_.tensors[t].name, "' has ", options_.tensors[t].elements));
    }
  }
  StepCounters counters;
  FirstError error;
  // 1. Statistics, local scalers and clip thresholds of the compressed partitions.
  if (options_.codec.codec == CodecKind::kTernGrad && on_device) {
    const absl::Time t0 = absl::Now();
    if (absl::Status st = device_->Stats(gradients, stats_); !st.ok()) return st;
    for (const common::Partition& part : plan_.partitions()) {
      if (!part.compressed) continue;
      scalers_[part.id] = common::LocalScaler(stats_[part.id], options_.codec.clip_sigmas);
      clips_[part.id] = common::ClipThreshold(stats_[part.id], options_.codec.clip_sigmas);
    }
    AddSeconds(counters.encode, Seconds(t0));
  } else if (options_.codec.codec == CodecKind::kTernGrad) {
    std::vector<uint32_t> compressed;
    for (const common::Partition& part : plan_.partitions()) {
      if (part.compressed) compressed.push_back(part.id);
    }
    absl::BlockingCounter done(static_cast<int>(compressed.size()));
    for (const uint32_t p : compressed) {
      pool_.Schedule([&, p] {
        const absl::Time t0 = absl::Now();
        absl::StatusOr<common::PartitionStats> stats = common::ComputeStats(Slice(gradients, p));
        if (stats.ok()) {
          stats_[p] = *stats;
          scalers_[p] = common::LocalScaler(*stats, options_.codec.clip_sigmas);
          clips_[p] = common::ClipThreshold(*stats, options_.codec.clip_sigmas);
        } else {
          const common::Partition& part = plan_.partition(p);
          error.Set(absl::InvalidArgumentError(absl::StrCat("gradients[", part.tensor, "] ('",
                                                            options_.tensors[part.tensor].name,
                                                            "'): ", stats.status().message())));
        }
        AddSeconds(counters.encode, Seconds(t0));
        done.DecrementCount();
      });
    }
    done.Wait();
    if (absl::Status st = error.Get(); !st.ok()) return st;
  }
  // 2. Shared scalers.
  const absl::Time scaler_start = absl::Now();
  if (!scaler_calls_.empty()) {
    if (absl::Status st = ShareScalers(); !st.ok()) return st;
  }
  const double scaler_seconds = Seconds(scaler_start);
  // 3. Encode, push and decode, batch by batch.
  // On the device, every batch's kernels and copies are queued now, in order, on one stream;
  // each pool task waits only for its own batch, so the device encodes batch i+1 while batch i
  // is on the wire.
  absl::BlockingCounter pending(static_cast<int>(batches_.size()));
  const common::TernaryKey key_base{options_.codec.seed, options_.rank, step(), 0};
  for (Batch& batch : batches_) {
    DeviceExchange::Ticket ticket;
    if (on_device) {
      absl::StatusOr<DeviceExchange::Ticket> queued =
          device_->EncodeAsync(gradients, batch.partitions, clips_, scalers_, key_base);
      if (!queued.ok()) {
        error.Set(queued.status());
        pending.DecrementCount();
        continue;
      }
      ticket = *queued;
    }
    pool_.Schedule([&, b = &batch, ticket] {
      EncodeAndSend(*b, gradients, on_device, ticket, counters, error, pending);
    });
  }
  pending.Wait();
  if (on_device) error.Set(device_->Finish());
  if (absl::Status st = error.Get(); !st.ok()) return st;
  absl::MutexLock lock(&mu_);
  last_.step = step_;
  last_.sent_bytes = counters.sent.load();
  last_.received_bytes = counters.received.load();
  last_.dense_bytes = plan_.total_elements() * 4;
  last_.seconds = Seconds(start);
  last_.encode_seconds = counters.encode.load();
  last_.decode_seconds = counters.decode.load();
  last_.scaler_seconds = scaler_seconds;
  last_.communication_seconds = Seconds(scaler_start);
  last_.min_contributors = counters.min_contributors.load();
  ++step_;
  return absl::OkStatus();
}

absl::Status Worker::Impl::Leave() {
  FirstError error;
  for (uint32_t s = 0; s < stubs_.size(); ++s) {
    v1::LeaveRequest request;
    request.set_job_id(options_.job_id);
    request.set_worker_rank(options_.rank);
    request.set_epoch(epochs_[s]);
    v1::LeaveResponse response;
    std::unique_ptr<grpc::ClientContext> context = NewContext(options_.rpc_timeout);
    error.Set(common::FromGrpcStatus(stubs_[s]->Leave(context.get(), request, &response),
                                     absl::StrCat(ShardName(s), " Leave")));
  }
  return error.Get();
}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Connect(const WorkerOptions& options) {
  if (options.shards.empty()) return absl::InvalidArgumentError("shards: empty");
  if (options.world_size == 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank: ", options.rank, " must be below world_size ", options.world_size));
  }
  if (options.threads < 1) return absl::InvalidArgumentError("threads: must be >= 1");
  std::vector<common::TensorSpec> tensors;
  for (const TensorInfo& t : options.tensors) tensors.push_back({t.name, t.elements, t.keep_fp32});
  common::PlanOptions plan_options;
  plan_options.partition_elements = options.codec.partition_elements;
  plan_options.min_compress_elements = options.codec.min_compress_elements;
  plan_options.shard_count = static_cast<uint32_t>(options.shards.size());
  plan_options.compress = options.codec.codec == CodecKind::kTernGrad;
  absl::StatusOr<common::PartitionPlan> plan = common::PartitionPlan::Create(tensors, plan_options);
  if (!plan.ok()) return plan.status();
  auto impl = std::make_unique<Impl>(options, *std::move(plan));
  if (absl::Status st = impl->Init(); !st.ok()) return st;
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Worker::~Worker() = default;
absl::Status Worker::Step(absl::Span<const absl::Span<float>> gradients) {
  return impl_->Step(gradients, /*on_device=*/false);
}
absl::Status Worker::StepOnDevice(absl::Span<const absl::Span<float>> device_gradients) {
  return impl_->Step(device_gradients, /*on_device=*/true);
}
bool Worker::DeviceAvailable() { return DeviceExchange::Available(); }
absl::Status Worker::Rejoin() { return impl_->JoinAll(); }
absl::Status Worker::Leave() { return impl_->Leave(); }
uint64_t Worker::step() const { return impl_->step(); }
StepStats Worker::last_step() const { return impl_->last_step(); }
uint32_t Worker::partitions() const { return impl_->partitions(); }

}  // namespace ternps::worker
