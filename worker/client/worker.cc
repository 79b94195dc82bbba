#include "ternps/worker.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <string_view>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "common/plan/partition_plan.h"
#include "common/rpc/status.h"
#include "common/spec/job_spec.h"
#include "common/util/thread_pool.h"
#include "common/wire/push_pull_wire.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "ternps/v1/ternps.grpc.pb.h"
#include "worker/client/answer_checks.h"
#include "worker/client/call_plan.h"
#include "worker/client/call_status.h"
#include "worker/client/exchange.h"
#include "worker/client/push_window.h"
#include "worker/client/recovery.h"
#include "worker/client/session.h"
#include "worker/client/step_events.h"
#include "worker/client/step_progress.h"

namespace ternps::worker {

namespace v1 = ::ternps::v1;

namespace {

double Seconds(absl::Time since) { return absl::ToDoubleSeconds(absl::Now() - since); }

void AddSeconds(std::atomic<double>& total, double s) {
  double old = total.load(std::memory_order_relaxed);
  while (!total.compare_exchange_weak(old, old + s, std::memory_order_relaxed)) {
  }
}

absl::Span<uint8_t> Bytes(std::string& s) {
  return absl::MakeSpan(reinterpret_cast<uint8_t*>(s.data()), s.size());
}

// The JoinRequest a worker sends (shard_index set per shard): every codec setting explicit.
v1::JoinRequest MakeJoinRequest(const WorkerOptions& options) {
  v1::JoinRequest request;
  request.set_job_id(options.job_id);
  request.set_worker_rank(options.rank);
  request.set_world_size(options.world_size);
  for (const TensorInfo& t : options.tensors) {
    v1::TensorSpec* spec = request.add_tensors();
    spec->set_name(t.name);
    spec->set_elements(t.elements);
    spec->set_keep_fp32(t.keep_fp32);
  }
  *request.mutable_codec() = common::CodecToProto(options.codec);
  request.set_shard_count(static_cast<uint32_t>(options.shards.size()));
  request.set_snapshot_interval(options.snapshot_interval);
  request.set_state_slots(options.state_slots);
  request.set_restart_ended_job(options.restart_ended_job);
  return request;
}

}  // namespace

class Worker::Impl final : private PushWindow::Transport {
 public:
  Impl(const WorkerOptions& options, common::JobSpec spec, v1::JoinRequest join)
      : options_(options),
        spec_(std::move(spec)),
        session_(options_, spec_, std::move(join)),
        pool_(options.threads),
        host_(MakeHostExchange(spec_, pool_)),
        recovery_(options_, spec_, session_, *host_),
        progress_(StepProgress({}, {}, 0)) {}
  ~Impl() override { FinishStream().IgnoreError(); }

  absl::Status Init();
  // Joins every shard; `rejoin`: the job must exist there already (JoinRequest.rejoin).
  absl::Status JoinAll(bool rejoin) {
    FinishStream().IgnoreError();  // a failed streaming step: its error was reported
    absl::StatusOr<uint64_t> start = session_.JoinAll(rejoin);
    if (!start.ok()) return start.status();
    left_ = false;
    absl::MutexLock lock(&mu_);
    step_ = *start;
    return absl::OkStatus();
  }
  // The blocking step: every tensor ready at once, driven on the calling thread.
  absl::Status Step(Gradients gradients, Exchange& exchange, void* stream);
  // The streaming step (Worker::StartStep, MarkReady, FinishStep), on the host exchange.
  absl::Status StartStream();
  absl::Status MarkReady(absl::Span<const uint32_t> tensors, Gradients gradients,
                         StepProgress::Written written);
  absl::Status FinishStream();
  absl::Status Leave(absl::Duration timeout) {
    FinishStream().IgnoreError();
    absl::Status st = session_.Leave(timeout);
    left_ = true;
    return st;
  }
  absl::Status OfferState(State state) {
    if (absl::Status st = FinishStream(); !st.ok()) return st;
    return recovery_.Offer(state, step());
  }
  absl::Status Recover(State state, Gradients gradients,
                       const std::function<absl::Status(uint64_t)>& apply) {
    if (absl::Status st = FinishStream(); !st.ok()) return st;
    if (absl::Status st = CheckGradients(gradients); !st.ok()) return st;
    return recovery_.Recover(state, gradients, apply, step());
  }
  absl::StatusOr<Exchange*> Device();
  Exchange& host() { return *host_; }

  const WorkerOptions& options() const { return options_; }
  bool left() const { return left_; }
  uint64_t step() const {
    absl::MutexLock lock(&mu_);
    return step_;
  }
  StepStats last_step() const {
    absl::MutexLock lock(&mu_);
    return last_;
  }
  uint32_t partitions() const { return static_cast<uint32_t>(spec_.plan.partitions().size()); }

 private:
  // One reusable ShareScalers call to one shard about its shared-scaler partitions (a repeat
  // after reconnecting: every partition of the shard).
  struct ScalerCall {
    uint32_t shard = 0;
    std::vector<uint32_t> partitions;
    v1::ShareScalersRequest request;
    v1::ShareScalersResponse response;
    std::unique_ptr<grpc::ClientContext> context;
  };
  // One ShareScalers call of the step's first round, about the shared-scaler partitions of
  // `batches` (calls that became ready together) on one shard; asked again after a lost
  // connection, with the same scalers.
  struct StepScalerCall {
    uint32_t shard = 0;
    std::vector<size_t> batches;
    std::vector<uint32_t> partitions;
    v1::ShareScalersRequest request;
    v1::ShareScalersResponse response;
    std::unique_ptr<grpc::ClientContext> context;
    grpc::Status status;
    double sent = 0.0;  // seconds into the step
  };
  // One PushPull call: its payloads are encoded in place into `data` and sent as slices that
  // alias it (common/wire writes the fields around them), and its answer is parsed from gRPC's
  // buffer without protobuf copies.
  struct Batch {
    uint32_t shard = 0;
    int channel = 0;  // which of the shard's connections carries it
    std::vector<uint32_t> partitions;
    std::vector<uint32_t> shared;      // its partitions with shared scalers (INT_SUM)
    std::vector<uint32_t> compressed;  // its partitions with statistics and a scaler
    std::vector<std::string> data;     // per partition: its encoded uplink (sized at first use)
    std::vector<absl::Span<const uint8_t>> payloads;  // per partition: what is sent, this step
    std::string heads;   // the message's fields around the payloads, per step
    uint64_t epoch = 0;  // the shard's epoch `heads` carries (built as the call starts)
    grpc::ByteBuffer request;
    grpc::ByteBuffer response;
    std::unique_ptr<grpc::ClientContext> context;
    std::vector<uint8_t> scratch;  // compressed averages split across slices, gathered
    StepStats::Call timing;        // of the current step
  };
  // Per-step counters, written by pool and gRPC threads.
  struct StepCounters {
    std::atomic<uint64_t> sent{0};
    std::atomic<uint64_t> received{0};
    std::atomic<double> encode{0.0};
    std::atomic<double> decode{0.0};
    std::atomic<uint32_t> min_contributors{UINT32_MAX};
  };

  absl::Status CheckGradients(Gradients gradients) const;
  // Runs a step whose tensors are marked through `events` (all at once, or as they become
  // ready), on the calling thread; tells the groups not written when it fails.
  // `scalers_first`: encode nothing before every ShareScalers call of the step is answered (the
  // blocking Step: the shards then stay in step with each other, as a worker's calls to one shard
  // do not run ahead of another shard's scaler round, which a shard's drop rule relies on: a rank
  // silent on one shard for the step timeout while it waits on another is dropped there).
  absl::Status RunStep(Exchange& exchange, void* stream, StepEvents& events, absl::Time start,
                       bool scalers_first);
  // Handles the driver's work until the round is done; the step's first error goes to `error`.
  void Drive(StepEvents& events, FirstError& error);
  // Calls whose tensors are all marked: their statistics and local scalers, then ShareScalers
  // for those with shared scalers (one call per shard) and encoding for the others.
  void StartReady(const std::vector<size_t>& ready, StepEvents& events, FirstError& error);
  // Sends (or, after a lost connection, sends again) step scaler call `index`.
  void SendStepScalers(size_t index, StepEvents& events);
  // A step scaler call ended: its batches are encoded, or it is asked again after reconnecting.
  void StepScalersEnded(size_t index, StepEvents& events, FirstError& error);
  // Starts encoding `calls` (in call order) and sends each when encoded.
  void Encode(std::vector<size_t> calls, FirstError& error);
  // Gives up calls not started yet (the step failed).
  void Abandon(const std::vector<size_t>& calls, StepEvents& events);
  void CancelStepScalers() ABSL_LOCKS_EXCLUDED(scaler_mu_);
  // The step's ShareScalers calls to the shards with to[s]; shards whose call lost its
  // connection are set in `lost` (not an error).
  absl::Status ShareScalers(const std::vector<bool>& to, std::vector<bool>* lost);
  // ShareScalers, reconnecting lost shards and asking them again (a bounded number of times).
  absl::Status ShareScalersWithRetry(std::vector<bool> to);
  // The PushPull request of an encoded batch: its fields and each payload's fields as slices of
  // `heads`, each payload's bytes as a slice of `data`.
  void BuildRequest(Batch& batch, uint64_t step);
  // After some batches' calls lost their connection: reconnects those shards, shares their
  // scalers again and resends the batches they have not answered, until none is lost.
  absl::Status Resend(StepEvents& events, FirstError& error);
  // Reconnects the shards whose calls lost their connection and that are not reconnected yet.
  absl::Status ReconnectLost();
  // A PushPull call to `shard` sent with `epoch` lost its connection.
  void NoteLostEpoch(uint32_t shard, uint64_t epoch) ABSL_LOCKS_EXCLUDED(lost_mu_);
  // PushWindow::Transport: the window's calls are batches_[call], sent over gRPC.
  void Prepare(size_t call) override;
  void Start(size_t call) override;
  void Cancel(size_t call) override;
  void Held(size_t call) override;
  void EncodeAndSend(size_t call, int ticket);
  absl::Status Decode(Batch& batch);

  // Seconds since the current step began.
  double Elapsed() const { return Seconds(step_start_); }

  const WorkerOptions options_;
  const common::JobSpec spec_;
  Session session_;  // channels, token, epochs, (re)joins, watches, leave
  common::ThreadPool pool_;
  std::unique_ptr<Exchange> host_;
  std::unique_ptr<Exchange> device_;  // created by the first StepOnDevice
  Recovery recovery_;                 // OfferState, Recover
  std::vector<Batch> batches_;
  std::vector<ScalerCall> scaler_calls_;
  std::vector<common::PartitionStats> stats_;  // per partition (compressed ones)
  std::vector<float> scalers_;                 // per partition: the scaler it is encoded with
  std::vector<float> clips_;                   // per partition: its clip threshold
  bool left_ = false;
  int reconnects_left_ = 0;  // per step
  absl::Time step_start_;
  // The order and window of the PushPull calls (batches_[i] is its call i; created by Init).
  std::unique_ptr<PushWindow> window_;
  // Which tensors of the step are marked, which calls are ready, which groups are written.
  StepProgress progress_;
  // The step's gradients: tensor t's buffer, set when t is marked (under the step's lock).
  std::vector<absl::Span<float>> grads_;
  std::vector<bool> taken_;  // per call: the driver has started it (or abandoned it)
  // The step's ShareScalers calls of its first round; a deque, so that they stay in place.
  absl::Mutex scaler_mu_;
  std::deque<StepScalerCall> step_scalers_ ABSL_GUARDED_BY(scaler_mu_);
  bool scalers_cancelled_ ABSL_GUARDED_BY(scaler_mu_) = false;
  // Per shard: the newest epoch a lost PushPull call carried.
  absl::Mutex lost_mu_;
  std::vector<uint64_t> lost_epoch_ ABSL_GUARDED_BY(lost_mu_);
  double statistics_end_ = 0.0;
  double scalers_end_ = 0.0;
  double scaler_seconds_ = 0.0;
  // With scalers_first: the calls ready to encode, held until no ShareScalers call is open.
  bool scalers_first_ = false;
  int scalers_open_ = 0;
  std::vector<size_t> held_;
  // What the calls of the current step report to: set while no call is in flight; Start copies
  // the pointers into each call's callback.
  struct RoundSinks {
    Exchange* exchange = nullptr;
    StepCounters* counters = nullptr;
    FirstError* error = nullptr;
    StepEvents* events = nullptr;
  };
  RoundSinks round_;
  EncodeParams params_;
  // The streaming step in progress: its events and the thread driving it.
  std::unique_ptr<StepEvents> stream_;
  std::thread stream_driver_;
  absl::Status stream_status_;
  mutable absl::Mutex mu_;
  uint64_t step_ ABSL_GUARDED_BY(mu_) = 0;
  StepStats last_ ABSL_GUARDED_BY(mu_);
};

absl::Status Worker::Impl::Init() {
  if (absl::Status st = session_.Open(); !st.ok()) return st;
  const common::PartitionPlan& plan = spec_.plan;
  stats_.resize(plan.partitions().size());
  scalers_.assign(plan.partitions().size(), 0.0f);
  clips_.assign(plan.partitions().size(), 0.0f);
  CallPlan calls = PlanCalls(spec_, static_cast<uint32_t>(options_.shards.size()),
                             options_.max_call_bytes, options_.channels_per_shard);
  std::vector<bool> shared(plan.partitions().size(), false);
  for (CallGroup& g : calls.scalers) {
    for (const uint32_t p : g.partitions) shared[p] = true;
    scaler_calls_.emplace_back();
    scaler_calls_.back().shard = g.shard;
    scaler_calls_.back().partitions = std::move(g.partitions);
  }
  std::vector<uint32_t> shard_of_call;
  std::vector<std::vector<uint32_t>> call_partitions;
  for (CallGroup& g : calls.push) {
    Batch& b = batches_.emplace_back();
    b.shard = g.shard;
    b.channel = g.channel;
    b.partitions = std::move(g.partitions);
    for (const uint32_t p : b.partitions) {
      if (shared[p]) b.shared.push_back(p);
      if (plan.partition(p).compressed) b.compressed.push_back(p);
    }
    b.data.resize(b.partitions.size());
    b.payloads.resize(b.partitions.size());
    shard_of_call.push_back(b.shard);
    call_partitions.push_back(b.partitions);
  }
  std::vector<uint32_t> tensor_of_partition;
  for (const common::Partition& part : plan.partitions()) {
    tensor_of_partition.push_back(part.tensor);
  }
  progress_ = StepProgress(call_partitions, tensor_of_partition,
                           static_cast<uint32_t>(options_.tensors.size()));
  grads_.resize(options_.tensors.size());
  {
    absl::MutexLock lock(&lost_mu_);
    lost_epoch_.assign(options_.shards.size(), 0);
  }
  window_ = std::make_unique<PushWindow>(
      std::move(shard_of_call), static_cast<uint32_t>(options_.shards.size()),
      options_.calls_in_flight_per_shard, static_cast<PushWindow::Transport*>(this));
  for (ScalerCall& c : scaler_calls_) {
    c.request.set_job_id(options_.job_id);
    c.request.set_worker_rank(options_.rank);
    for (const uint32_t p : c.partitions) {
      c.request.add_partition_ids(p);
      c.request.add_scalers(0.0f);
    }
  }
  return JoinAll(/*rejoin=*/false);
}

absl::Status Worker::Impl::ShareScalers(const std::vector<bool>& to, std::vector<bool>* lost) {
  const uint64_t step = this->step();
  std::vector<ScalerCall*> calls;
  for (ScalerCall& c : scaler_calls_) {
    if (to[c.shard]) calls.push_back(&c);
  }
  absl::BlockingCounter pending(static_cast<int>(calls.size()));
  const absl::Time deadline = absl::Now() + options_.rpc_timeout;
  for (ScalerCall* c : calls) c->context = session_.NewContext(deadline);
  // One shard failing fails the step: the calls to the others are cancelled, not waited for. A
  // lost connection (UNAVAILABLE) is not a failure yet: that shard is reconnected and asked again.
  FirstError error([&calls] {
    for (ScalerCall* c : calls) c->context->TryCancel();
  });
  absl::Mutex lost_mu;
  for (ScalerCall* c : calls) {
    c->request.set_epoch(session_.epoch(c->shard));
    c->request.set_step(step);
    for (size_t i = 0; i < c->partitions.size(); ++i) {
      c->request.set_scalers(static_cast<int>(i), scalers_[c->partitions[i]]);
    }
    c->response.Clear();
    session_.stub(c->shard).async()->ShareScalers(
        c->context.get(), &c->request, &c->response, [&, shard = c->shard](grpc::Status st) {
          if (LostConnection(st, !error.Get().ok())) {
            absl::MutexLock lock(&lost_mu);
            (*lost)[shard] = true;
          } else {
            error.Set(common::FromGrpcStatus(
                st, absl::StrCat(session_.ShardName(shard), " ShareScalers")));
          }
          pending.DecrementCount();
        });
  }
  pending.Wait();
  if (absl::Status st = error.Get(); !st.ok()) return st;
  for (ScalerCall* c : calls) {
    if ((*lost)[c->shard]) continue;
    if (absl::Status st = CheckSharedScalers(c->response, c->partitions, scalers_); !st.ok()) {
      return absl::Status(st.code(), absl::StrCat(session_.ShardName(c->shard),
                                                  " ShareScalers answer: ", st.message()));
    }
  }
  return absl::OkStatus();
}

absl::Status Worker::Impl::ShareScalersWithRetry(std::vector<bool> to) {
  for (;;) {
    std::vector<bool> lost(options_.shards.size(), false);
    if (absl::Status st = ShareScalers(to, &lost); !st.ok()) return st;
    std::vector<uint32_t> reconnect;
    for (uint32_t s = 0; s < lost.size(); ++s) {
      if (lost[s]) reconnect.push_back(s);
    }
    if (reconnect.empty()) return absl::OkStatus();
    if (--reconnects_left_ < 0) {
      return absl::UnavailableError(absl::StrCat(session_.ShardName(reconnect[0]),
                                                 " ShareScalers: the connection was lost again "
                                                 "after every reconnection of this step"));
    }
    if (absl::Status st = session_.Reconnect(reconnect, step()); !st.ok()) return st;
    to = std::move(lost);
  }
}

void Worker::Impl::EncodeAndSend(size_t call, int ticket) {
  Batch& batch = batches_[call];
  const RoundSinks sinks = round_;
  const absl::Time start = absl::Now();
  std::vector<absl::Span<uint8_t>> out(batch.partitions.size());
  uint64_t sent = 0;
  for (size_t i = 0; i < batch.partitions.size(); ++i) {
    const uint32_t p = batch.partitions[i];
    batch.payloads[i] = sinks.exchange->UplinkInPlace(grads_, p);
    if (batch.payloads[i].empty()) {
      std::string& d = batch.data[i];
      d.resize(common::PayloadBytes(spec_.route(p).uplink, spec_.plan.partition(p).elements, 0));
      out[i] = Bytes(d);
      batch.payloads[i] = out[i];
    }
    sent += batch.payloads[i].size();
  }
  if (absl::Status st =
          sinks.exchange->FinishEncode(ticket, grads_, batch.partitions, params_, out);
      !st.ok()) {
    sinks.error->Set(std::move(st));
    sinks.events->DecrementCount();
    window_->Encoded(call, /*sendable=*/false);
    return;
  }
  sinks.counters->sent.fetch_add(sent, std::memory_order_relaxed);
  AddSeconds(sinks.counters->encode, Seconds(start));
  batch.timing = {.shard = batch.shard, .sent_bytes = sent, .encoded = Elapsed()};
  window_->Encoded(call, /*sendable=*/true);
}

void Worker::Impl::BuildRequest(Batch& batch, uint64_t step) {
  // The heads and the payloads stay alive and unchanged until the call completes.
  batch.heads.clear();
  std::vector<size_t> ends;  // where each payload's head ends in `heads`
  batch.epoch = session_.epoch(batch.shard);
  common::AppendPushPullRequestHead(options_.job_id, options_.rank, batch.epoch, step,
                                    &batch.heads);
  for (size_t i = 0; i < batch.partitions.size(); ++i) {
    const uint32_t p = batch.partitions[i];
    const common::PayloadView head{
        .partition_id = p,
        .encoding = spec_.route(p).uplink,
        .scaler = spec_.plan.partition(p).compressed ? scalers_[p] : 0.0f,
        .elements = spec_.plan.partition(p).elements,
        .contributors = 0,
        .pieces = {}};
    common::AppendPayloadHead(common::kRequestPartitionsField, head, batch.payloads[i].size(),
                              &batch.heads);
    ends.push_back(batch.heads.size());
  }
  std::vector<grpc::Slice> slices;
  slices.reserve(2 * batch.partitions.size());
  size_t from = 0;
  for (size_t i = 0; i < batch.partitions.size(); ++i) {
    slices.emplace_back(batch.heads.data() + from, ends[i] - from, grpc::Slice::STATIC_SLICE);
    // STATIC_SLICE: gRPC references the payload, no copy and no ownership (it outlives the call).
    slices.emplace_back(batch.payloads[i].data(), batch.payloads[i].size(),
                        grpc::Slice::STATIC_SLICE);
    from = ends[i];
  }
  batch.request = grpc::ByteBuffer(slices.data(), slices.size());
}

void Worker::Impl::Prepare(size_t call) {
  batches_[call].context = session_.NewContext(absl::Now() + options_.rpc_timeout);
}

void Worker::Impl::Cancel(size_t call) { batches_[call].context->TryCancel(); }

void Worker::Impl::Held(size_t call) { round_.events->DecrementCount(); }

void Worker::Impl::Start(size_t call) {
  Batch& batch = batches_[call];
  // Built now, not when encoded: the shard may have been joined again meanwhile (a lost
  // ShareScalers call reconnects it while this call waited in the window), and a call carrying
  // an older epoch would be refused as coming from a replaced session.
  BuildRequest(batch, params_.key_base.step);
  batch.response.Clear();
  const RoundSinks sinks = round_;
  session_.push(batch.shard, batch.channel)
      .UnaryCall(batch.context.get(), "/ternps.v1.ParameterServer/PushPull", grpc::StubOptions(),
                 &batch.request, &batch.response, [this, call, &batch, sinks](grpc::Status st) {
                   batch.timing.answered = Elapsed();
                   // A lost connection (the shard may be restarting) is not a failure yet: the
                   // shard is reconnected and its unanswered batches resent (Resend). The shard's
                   // next batches in order take this call's place.
                   using Ending = PushWindow::Ending;
                   const Ending ending =
                       st.error_code() == grpc::StatusCode::UNAVAILABLE ? Ending::kUnavailable
                       : st.error_code() == grpc::StatusCode::CANCELLED ? Ending::kCancelled
                                                                        : Ending::kDone;
                   const PushWindow::Finish finish = window_->Finished(call, ending);
                   if (finish.lost) NoteLostEpoch(batch.shard, batch.epoch);
                   if (finish.first_loss) sinks.events->NoteLoss();
                   if (!st.ok() && !finish.lost) {
                     sinks.error->Set(common::FromGrpcStatus(
                         st, absl::StrCat(session_.ShardName(batch.shard), " PushPull")));
                   }
                   if (!st.ok()) {
                     sinks.events->DecrementCount();
                     return;
                   }
                   // Decode on the pool, not on gRPC's callback thread.
                   pool_.Schedule([this, call, &batch, sinks] {
                     absl::Status decoded = Decode(batch);
                     if (!decoded.ok()) {
                       sinks.error->Set(std::move(decoded));
                       sinks.events->DecrementCount();
                       return;
                     }
                     window_->Answered(call);
                     sinks.events->Decoded(call);
                   });
                 });
}

absl::Status Worker::Impl::Resend(StepEvents& events, FirstError& error) {
  const uint64_t step = this->step();
  for (;;) {
    const std::vector<uint32_t> shards = window_->LostShards();
    if (shards.empty()) return absl::OkStatus();
    if (absl::Status st = ReconnectLost(); !st.ok()) return st;
    std::vector<bool> lost(options_.shards.size(), false);
    for (const uint32_t s : shards) lost[s] = true;
    // A restarted shard lost the offers of an unfinished step: offer again. The payloads were
    // encoded with the scalers shared before, so the shard must settle the same ones (it does:
    // the maximum of the same offers, or the one it logged).
    const std::vector<float> encoded_with = scalers_;
    if (absl::Status st = ShareScalersWithRetry(lost); !st.ok()) return st;
    for (const ScalerCall& c : scaler_calls_) {
      for (const uint32_t p : c.partitions) {
        if (scalers_[p] != encoded_with[p]) {
          return absl::FailedPreconditionError(absl::StrCat(
              session_.ShardName(c.shard), " ShareScalers after reconnecting: shared scaler ",
              scalers_[p], " for partition ", p, " of step ", step,
              ", the payloads were encoded with ", encoded_with[p]));
        }
      }
    }
    // Resend what those shards have not answered, in plan order (with the new epochs: a
    // call's request is built as it starts).
    const std::vector<size_t> again = window_->Requeue(shards);
    events.AddPending(static_cast<int>(again.size()));
    for (const uint32_t s : shards) window_->SendNext(s);
    Drive(events, error);
    if (absl::Status st = error.Get(); !st.ok()) return st;
  }
}

absl::Status Worker::Impl::ReconnectLost() {
  const std::vector<uint32_t> shards = window_->ShardsToReconnect();
  if (shards.empty()) return absl::OkStatus();
  // A shard joined again since its lost calls were sent (a lost ShareScalers call reconnected
  // it) is not joined once more: that would replace the session the other calls now use.
  std::vector<uint32_t> join;
  {
    absl::MutexLock lock(&lost_mu_);
    for (const uint32_t s : shards) {
      if (lost_epoch_[s] >= session_.epoch(s)) join.push_back(s);
    }
  }
  if (!join.empty()) {
    if (--reconnects_left_ < 0) {
      return absl::UnavailableError(absl::StrCat(session_.ShardName(join[0]),
                                                 " PushPull: the connection was lost again after "
                                                 "every reconnection of this step"));
    }
    if (absl::Status st = session_.Reconnect(join, step()); !st.ok()) return st;
  }
  window_->MarkReconnected(shards);
  return absl::OkStatus();
}

void Worker::Impl::NoteLostEpoch(uint32_t shard, uint64_t epoch) {
  absl::MutexLock lock(&lost_mu_);
  lost_epoch_[shard] = std::max(lost_epoch_[shard], epoch);
}

absl::Status Worker::Impl::Decode(Batch& batch) {
  const absl::Time start = absl::Now();
  Exchange& exchange = *round_.exchange;
  StepCounters& counters = *round_.counters;
  auto where = [&] { return absl::StrCat(session_.ShardName(batch.shard), " PushPull answer: "); };
  // The answer as the slices gRPC received it in (referenced, not copied).
  std::vector<grpc::Slice> slices;
  (void)batch.response.Dump(&slices);
  std::vector<common::Piece> pieces;
  pieces.reserve(slices.size());
  for (const grpc::Slice& slice : slices) pieces.emplace_back(slice.begin(), slice.size());
  common::PushPullResponseView response;
  if (absl::Status st = common::ParsePushPullResponse(pieces, &response); !st.ok()) {
    return absl::Status(st.code(), absl::StrCat(where(), st.message()));
  }
  if (response.averages.size() != batch.partitions.size()) {
    return absl::InvalidArgumentError(absl::StrCat(where(), "averages: ", response.averages.size(),
                                                   " for ", batch.partitions.size(),
                                                   " partitions"));
  }
  uint64_t received = 0;
  for (size_t i = 0; i < batch.partitions.size(); ++i) {
    const uint32_t p = batch.partitions[i];
    const common::PayloadView& payload = response.averages[i];
    absl::StatusOr<Average> avg =
        ValidateAverage(payload, p, spec_, scalers_[p],
                        exchange.DecodesPieces(spec_.route(p).downlink), &batch.scratch);
    absl::Status st = avg.ok() ? exchange.Decode(grads_, p, *avg) : avg.status();
    if (!st.ok()) {
      return absl::Status(st.code(), absl::StrCat(where(), "averages[", i, "]", st.message()));
    }
    received += payload.data_size();
    uint32_t seen = counters.min_contributors.load(std::memory_order_relaxed);
    while (payload.contributors < seen &&
           !counters.min_contributors.compare_exchange_weak(seen, payload.contributors)) {
    }
  }
  // Give gRPC's receive buffers back now, not at the next step: the allocator reuses them warm.
  response.averages.clear();
  batch.response.Clear();
  batch.timing.received_bytes = received;
  counters.received.fetch_add(received, std::memory_order_relaxed);
  AddSeconds(counters.decode, Seconds(start));
  batch.timing.decoded = Elapsed();
  return absl::OkStatus();
}

absl::Status Worker::Impl::CheckGradients(Gradients gradients) const {
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
  return absl::OkStatus();
}

absl::StatusOr<Exchange*> Worker::Impl::Device() {
  if (device_ == nullptr) {
    absl::StatusOr<std::unique_ptr<Exchange>> device = MakeDeviceExchange(spec_);
    if (!device.ok()) return device.status();
    device_ = *std::move(device);
  }
  return device_.get();
}

absl::Status Worker::Impl::Step(Gradients gradients, Exchange& exchange, void* stream) {
  const absl::Time start = absl::Now();
  if (absl::Status st = CheckGradients(gradients); !st.ok()) return st;
  if (absl::Status st = FinishStream(); !st.ok()) return st;
  progress_.Begin();
  StepEvents events(&progress_, static_cast<int>(batches_.size()));
  std::vector<uint32_t> all(gradients.size());
  for (uint32_t t = 0; t < all.size(); ++t) {
    all[t] = t;
    grads_[t] = gradients[t];
  }
  if (absl::Status st = events.Mark(all, nullptr); !st.ok()) return st;
  events.Finish();
  return RunStep(exchange, stream, events, start, /*scalers_first=*/true);
}

absl::Status Worker::Impl::StartStream() {
  const absl::Time start = absl::Now();
  if (absl::Status st = FinishStream(); !st.ok()) return st;
  progress_.Begin();
  stream_ = std::make_unique<StepEvents>(&progress_, static_cast<int>(batches_.size()));
  stream_driver_ = std::thread([this, start] {
    stream_status_ = RunStep(*host_, nullptr, *stream_, start, /*scalers_first=*/false);
  });
  return absl::OkStatus();
}

absl::Status Worker::Impl::MarkReady(absl::Span<const uint32_t> tensors, Gradients gradients,
                                     StepProgress::Written written) {
  if (stream_ == nullptr) {
    return absl::FailedPreconditionError("MarkReady: no step started (call StartStep first)");
  }
  if (gradients.size() != tensors.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradients: ", gradients.size(), " buffers for ", tensors.size(), " tensors"));
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint32_t t = tensors[i];
    if (t < options_.tensors.size() && gradients[i].size() != options_.tensors[t].elements) {
      return absl::InvalidArgumentError(
          absl::StrCat("gradients[", i, "]: ", gradients[i].size(), " elements, tensor '",
                       options_.tensors[t].name, "' has ", options_.tensors[t].elements));
    }
  }
  // The buffers are recorded under the step's lock once the mark is accepted, before the driver
  // can see the calls it readies.
  return stream_->Mark(tensors, std::move(written), [&] {
    for (size_t i = 0; i < tensors.size(); ++i) grads_[tensors[i]] = gradients[i];
  });
}

absl::Status Worker::Impl::FinishStream() {
  if (stream_ == nullptr) return absl::OkStatus();
  stream_->Finish();
  stream_driver_.join();
  stream_.reset();
  return stream_status_;
}

absl::Status Worker::Impl::RunStep(Exchange& exchange, void* stream, StepEvents& events,
                                   absl::Time start, bool scalers_first) {
  step_start_ = start;
  scalers_first_ = scalers_first;
  scalers_open_ = 0;
  held_.clear();
  StepCounters counters;
  reconnects_left_ = kMaxReconnectsPerStep;
  session_.TakeReconnects();
  statistics_end_ = scalers_end_ = scaler_seconds_ = 0.0;
  {
    absl::MutexLock lock(&scaler_mu_);
    step_scalers_.clear();
    scalers_cancelled_ = false;
  }
  taken_.assign(batches_.size(), false);
  params_ = {.clips = &clips_,
             .scalers = &scalers_,
             .key_base = {options_.codec.seed, options_.rank, step(), 0}};
  // One failed call fails the step: calls in flight to every shard are cancelled and nothing
  // more is sent, instead of waiting for answers that no longer matter.
  FirstError error([this, &events] {
    window_->CancelAll();
    CancelStepScalers();
    events.Wake();
  });
  round_ = {.exchange = &exchange, .counters = &counters, .error = &error, .events = &events};
  window_->Begin();
  error.Set(exchange.Begin(stream));
  Drive(events, error);
  if (error.Get().ok()) error.Set(Resend(events, error));
  error.Set(exchange.End());
  if (absl::Status st = error.Get(); !st.ok()) {
    events.EndWith(st);
    return st;
  }
  events.EndWith(absl::FailedPreconditionError("the step is over"));
  absl::MutexLock lock(&mu_);
  last_.step = step_;
  last_.sent_bytes = counters.sent.load();
  last_.received_bytes = counters.received.load();
  last_.dense_bytes = spec_.plan.total_elements() * 4;
  last_.seconds = Seconds(start);
  last_.encode_seconds = counters.encode.load();
  last_.decode_seconds = counters.decode.load();
  last_.scaler_seconds = scaler_seconds_;
  last_.communication_seconds = last_.seconds - statistics_end_;
  last_.min_contributors = counters.min_contributors.load();
  last_.reconnects = session_.TakeReconnects();
  last_.statistics_end = statistics_end_;
  last_.scalers_end = scalers_end_;
  last_.calls.clear();
  for (const Batch& b : batches_) last_.calls.push_back(b.timing);
  ++step_;
  return absl::OkStatus();
}

void Worker::Impl::Drive(StepEvents& events, FirstError& error) {
  for (;;) {
    StepEvents::Work work = events.Wait();
    if (work.unmarked_at_finish) {
      const std::vector<uint32_t> unmarked = events.Unmarked(5);
      std::string names;
      for (const uint32_t t : unmarked) {
        absl::StrAppend(&names, names.empty() ? "" : ", ", "'", options_.tensors[t].name, "'");
      }
      error.Set(absl::FailedPreconditionError(
          absl::StrCat("FinishStep: tensors not marked ready in this step (the first ",
                       unmarked.size(), "): ", names)));
    }
    for (const size_t index : work.shared) StepScalersEnded(index, events, error);
    if (!work.ready.empty()) {
      for (const size_t call : work.ready) taken_[call] = true;
      if (error.Get().ok()) {
        StartReady(work.ready, events, error);
      } else {
        Abandon(work.ready, events);
      }
    }
    if (!error.Get().ok()) {
      // Nothing more starts: the calls not taken yet will never be sent.
      std::vector<size_t> untaken;
      for (size_t call = 0; call < taken_.size(); ++call) {
        if (!taken_[call]) {
          taken_[call] = true;
          untaken.push_back(call);
        }
      }
      Abandon(untaken, events);
      Abandon(held_, events);  // taken, waiting for the last scaler answer: never sent now
      held_.clear();
    } else if (work.loss) {
      // A call lost its connection: reconnect that shard now, while the others go on. If it
      // cannot be reached within the connect timeout the step fails (its other calls are
      // cancelled).
      error.Set(ReconnectLost());
    }
    if (work.done) return;
  }
}

void Worker::Impl::StartReady(const std::vector<size_t>& ready, StepEvents& events,
                              FirstError& error) {
  std::vector<uint32_t> compressed;
  for (const size_t call : ready) {
    const Batch& b = batches_[call];
    compressed.insert(compressed.end(), b.compressed.begin(), b.compressed.end());
  }
  if (!compressed.empty()) {
    const absl::Time start = absl::Now();
    uint32_t bad = 0;
    if (absl::Status st = round_.exchange->Stats(grads_, compressed, stats_, &bad); !st.ok()) {
      const common::Partition& part = spec_.plan.partition(bad);
      error.Set(absl::Status(st.code(), absl::StrCat("gradients[", part.tensor, "] ('",
                                                     options_.tensors[part.tensor].name,
                                                     "'), partition ", bad, ": ", st.message())));
      Abandon(ready, events);
      return;
    }
    for (const uint32_t p : compressed) {
      scalers_[p] = common::LocalScaler(stats_[p], options_.codec.clip_sigmas);
      clips_[p] = common::ClipThreshold(stats_[p], options_.codec.clip_sigmas);
    }
    AddSeconds(round_.counters->encode, Seconds(start));
    statistics_end_ = Elapsed();
  }
  // One ShareScalers call per shard for the ready calls with shared scalers; the others are
  // encoded now.
  std::vector<size_t> now;
  std::vector<size_t> scaler_calls;
  {
    absl::MutexLock lock(&scaler_mu_);
    std::vector<int> of_shard(options_.shards.size(), -1);
    for (const size_t call : ready) {
      const Batch& b = batches_[call];
      if (b.shared.empty()) {
        now.push_back(call);
        continue;
      }
      if (of_shard[b.shard] < 0) {
        of_shard[b.shard] = static_cast<int>(step_scalers_.size());
        scaler_calls.push_back(step_scalers_.size());
        step_scalers_.emplace_back().shard = b.shard;
      }
      StepScalerCall& c = step_scalers_[of_shard[b.shard]];
      c.batches.push_back(call);
      c.partitions.insert(c.partitions.end(), b.shared.begin(), b.shared.end());
    }
  }
  for (const size_t index : scaler_calls) SendStepScalers(index, events);
  if (scalers_first_) {
    scalers_open_ += static_cast<int>(scaler_calls.size());
    held_.insert(held_.end(), now.begin(), now.end());
    if (scalers_open_ == 0 && !held_.empty()) {
      Encode(std::move(held_), error);
      held_.clear();
    }
    return;
  }
  if (!now.empty()) Encode(std::move(now), error);
}

void Worker::Impl::SendStepScalers(size_t index, StepEvents& events) {
  absl::MutexLock lock(&scaler_mu_);
  StepScalerCall& c = step_scalers_[index];
  if (scalers_cancelled_) {  // the step failed meanwhile: tell the driver, which abandons it
    c.status = grpc::Status(grpc::StatusCode::CANCELLED, "the step failed");
    events.AddPending(1);
    events.ScalerCallEnded(index);
    events.DecrementCount();
    return;
  }
  c.request.Clear();
  c.request.set_job_id(options_.job_id);
  c.request.set_worker_rank(options_.rank);
  c.request.set_epoch(session_.epoch(c.shard));
  c.request.set_step(params_.key_base.step);
  for (const uint32_t p : c.partitions) {
    c.request.add_partition_ids(p);
    c.request.add_scalers(scalers_[p]);
  }
  c.response.Clear();
  c.context = session_.NewContext(absl::Now() + options_.rpc_timeout);
  c.sent = Elapsed();
  events.AddPending(1);
  session_.stub(c.shard).async()->ShareScalers(c.context.get(), &c.request, &c.response,
                                               [&c, index, &events](grpc::Status st) {
                                                 c.status = std::move(st);
                                                 events.ScalerCallEnded(index);
                                                 events.DecrementCount();
                                               });
}

void Worker::Impl::StepScalersEnded(size_t index, StepEvents& events, FirstError& error) {
  StepScalerCall* c;
  {
    absl::MutexLock lock(&scaler_mu_);
    c = &step_scalers_[index];
  }
  const double answered = Elapsed();
  if (!c->status.ok()) {
    if (error.Get().ok() && LostConnection(c->status, /*cancelled_here=*/false)) {
      // The shard went away (maybe restarting from its state directory): join it again, unless
      // that happened since this call was sent, and ask again with the same scalers.
      if (c->request.epoch() == session_.epoch(c->shard)) {
        if (--reconnects_left_ < 0) {
          error.Set(absl::UnavailableError(absl::StrCat(
              session_.ShardName(c->shard),
              " ShareScalers: the connection was lost again after every reconnection of this "
              "step")));
        } else {
          error.Set(session_.Reconnect({c->shard}, params_.key_base.step));
        }
      }
      if (error.Get().ok()) {
        SendStepScalers(index, events);
        return;
      }
    } else {
      error.Set(common::FromGrpcStatus(
          c->status, absl::StrCat(session_.ShardName(c->shard), " ShareScalers")));
    }
    Abandon(c->batches, events);
    return;
  }
  if (!error.Get().ok()) {
    Abandon(c->batches, events);
    return;
  }
  if (absl::Status st = CheckSharedScalers(c->response, c->partitions, scalers_); !st.ok()) {
    error.Set(absl::Status(st.code(), absl::StrCat(session_.ShardName(c->shard),
                                                   " ShareScalers answer: ", st.message())));
    Abandon(c->batches, events);
    return;
  }
  scaler_seconds_ = std::max(scaler_seconds_, answered - c->sent);
  scalers_end_ = answered;
  if (scalers_first_) {
    held_.insert(held_.end(), c->batches.begin(), c->batches.end());
    if (--scalers_open_ == 0) {
      Encode(std::move(held_), error);
      held_.clear();
    }
    return;
  }
  Encode(c->batches, error);
}

void Worker::Impl::Encode(std::vector<size_t> calls, FirstError& error) {
  std::sort(calls.begin(), calls.end());
  for (const size_t call : calls) {
    absl::StatusOr<int> ticket =
        round_.exchange->StartEncode(grads_, batches_[call].partitions, params_);
    if (!ticket.ok()) {
      error.Set(ticket.status());
      round_.events->DecrementCount();
      window_->Encoded(call, /*sendable=*/false);
      continue;
    }
    pool_.Schedule([this, call, t = *ticket] { EncodeAndSend(call, t); });
  }
}

void Worker::Impl::Abandon(const std::vector<size_t>& calls, StepEvents& events) {
  for (const size_t call : calls) {
    window_->Encoded(call, /*sendable=*/false);
    events.DecrementCount();
  }
}

void Worker::Impl::CancelStepScalers() {
  absl::MutexLock lock(&scaler_mu_);
  scalers_cancelled_ = true;
  for (StepScalerCall& c : step_scalers_) {
    if (c.context != nullptr) c.context->TryCancel();
  }
}

absl::StatusOr<std::unique_ptr<Worker>> Worker::Connect(const WorkerOptions& options) {
  if (options.shards.empty()) return absl::InvalidArgumentError("shards: empty");
  if (options.world_size == 0 || options.rank >= options.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank: ", options.rank, " must be below world_size ", options.world_size));
  }
  if (options.threads < 1) return absl::InvalidArgumentError("threads: must be >= 1");
  if (options.calls_in_flight_per_shard < 0) {
    return absl::InvalidArgumentError("calls_in_flight_per_shard: must be >= 0 (0: no limit)");
  }
  if (options.channels_per_shard < 1 || options.channels_per_shard > kMaxChannelsPerShard) {
    return absl::InvalidArgumentError(
        absl::StrCat("channels_per_shard: ", options.channels_per_shard, " is not in 1..",
                     kMaxChannelsPerShard));
  }
  if (options.state_slots < 1) return absl::InvalidArgumentError("state_slots: must be >= 1");
  for (size_t i = 0; i < options.shards.size(); ++i) {
    if (absl::Status st = CheckShardAddress(options.shards[i], i); !st.ok()) return st;
  }
  // The worker resolves the same spec from its own JoinRequest as the shards will.
  v1::JoinRequest join = MakeJoinRequest(options);
  absl::StatusOr<common::JobSpec> spec =
      common::ResolveJobSpec(join, {.shard_count = static_cast<uint32_t>(options.shards.size())});
  if (!spec.ok()) return spec.status();
  auto impl = std::make_unique<Impl>(options, *std::move(spec), std::move(join));
  if (absl::Status st = impl->Init(); !st.ok()) return st;
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Worker::~Worker() {
  if (!impl_->left()) impl_->Leave(impl_->options().leave_timeout).IgnoreError();
}
absl::Status Worker::Step(absl::Span<const absl::Span<float>> gradients) {
  return impl_->Step(gradients, impl_->host(), nullptr);
}
absl::Status Worker::StepOnDevice(absl::Span<const absl::Span<float>> device_gradients,
                                  void* cuda_stream) {
  absl::StatusOr<Exchange*> device = impl_->Device();
  if (!device.ok()) return device.status();
  return impl_->Step(device_gradients, **device, cuda_stream);
}
bool Worker::DeviceAvailable() { return DeviceExchangeAvailable(); }
absl::Status Worker::StartStep() { return impl_->StartStream(); }
absl::Status Worker::MarkReady(absl::Span<const uint32_t> tensors,
                               absl::Span<const absl::Span<float>> gradients,
                               std::function<void(const absl::Status&)> written) {
  return impl_->MarkReady(tensors, gradients, std::move(written));
}
absl::Status Worker::FinishStep() { return impl_->FinishStream(); }
absl::Status Worker::Rejoin() { return impl_->JoinAll(/*rejoin=*/true); }
absl::Status Worker::OfferState(State state) { return impl_->OfferState(state); }
absl::Status Worker::Recover(State state, absl::Span<const absl::Span<float>> gradients,
                             const std::function<absl::Status(uint64_t)>& apply) {
  return impl_->Recover(state, gradients, apply);
}
absl::Status Worker::Leave() { return impl_->Leave(impl_->options().rpc_timeout); }
uint64_t Worker::step() const { return impl_->step(); }
StepStats Worker::last_step() const { return impl_->last_step(); }
uint32_t Worker::partitions() const { return impl_->partitions(); }

}  // namespace ternps::worker
