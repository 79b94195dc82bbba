#include "worker/client/shard_watch.h"

#include <utility>

namespace ternps::worker {

namespace v1 = ::ternps::v1;

ShardWatches::ShardWatches(std::vector<v1::ParameterServer::Stub*> stubs, std::string job_id,
                           uint32_t rank,
                           std::function<std::unique_ptr<grpc::ClientContext>()> new_context)
    : stubs_(std::move(stubs)),
      job_id_(std::move(job_id)),
      rank_(rank),
      new_context_(std::move(new_context)),
      shards_(stubs_.size()) {
  keeper_ = std::thread([this] { KeeperLoop(); });
}

ShardWatches::~ShardWatches() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (Shard& shard : shards_) {
      if (shard.open) shard.context->TryCancel();
    }
  }
  keeper_.join();
  absl::MutexLock lock(&mu_);
  auto all_ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return in_flight_ == 0; };
  mu_.Await(absl::Condition(&all_ended));
}

void ShardWatches::Watch(uint32_t s, uint64_t epoch) {
  absl::MutexLock lock(&mu_);
  if (stopping_ || s >= shards_.size()) return;
  Shard& shard = shards_[s];
  shard.epoch = epoch;
  if (shard.open) shard.context->TryCancel();  // its callback is then ignored
  shard.open = false;
  Open(s);
}

void ShardWatches::StopAll() {
  absl::MutexLock lock(&mu_);
  for (Shard& shard : shards_) {
    shard.epoch = 0;
    if (shard.open) shard.context->TryCancel();
    shard.open = false;
  }
}

void ShardWatches::Open(uint32_t s) {
  Shard& shard = shards_[s];
  if (shard.epoch == 0 || shard.unsupported || shard.open || stopping_) return;
  struct State {
    std::unique_ptr<grpc::ClientContext> context;
    v1::WatchRequest request;
    v1::WatchResponse response;
  };
  auto* state = new State{new_context_(), {}, {}};
  state->request.set_job_id(job_id_);
  state->request.set_worker_rank(rank_);
  state->request.set_epoch(shard.epoch);
  shard.generation++;
  shard.open = true;
  shard.context = state->context.get();
  ++in_flight_;
  const uint64_t generation = shard.generation;
  stubs_[s]->async()->Watch(state->context.get(), &state->request, &state->response,
                            [this, s, generation, state](grpc::Status status) {
                              Ended(s, generation, status);
                              delete state;
                              absl::MutexLock lock(&mu_);
                              --in_flight_;
                            });
}

void ShardWatches::Ended(uint32_t s, uint64_t generation, const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  Shard& shard = shards_[s];
  if (shard.generation != generation) return;  // replaced or stopped meanwhile
  shard.open = false;
  shard.context = nullptr;
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED) shard.unsupported = true;
  if (status.ok()) shard.epoch = 0;  // the shard ended it: this rank left there
}

void ShardWatches::KeeperLoop() {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  // A retry interval, not synchronization: wakes early only to stop.
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping), kReopenInterval)) {
    for (uint32_t s = 0; s < shards_.size(); ++s) Open(s);
  }
}

}  // namespace ternps::worker
