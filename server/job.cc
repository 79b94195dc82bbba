#include "server/job.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/codec/fp32.h"
#include "common/codec/ternary.h"

namespace ternps::server {
namespace {

using ternps::v1::JoinRequest;
using ternps::v1::PartitionPayload;

// Locks a set of aggregators in ascending partition order for its lifetime.
class MultiLock {
 public:
  explicit MultiLock(std::vector<PartitionAggregator*> aggregators)
      : aggregators_(std::move(aggregators)) {
    std::sort(aggregators_.begin(), aggregators_.end(),
              [](const PartitionAggregator* a, const PartitionAggregator* b) {
                return a->config().id < b->config().id;
              });
    for (PartitionAggregator* a : aggregators_) a->mu().Lock();
  }
  MultiLock(const MultiLock&) = delete;
  MultiLock& operator=(const MultiLock&) = delete;
  ~MultiLock() {
    for (auto it = aggregators_.rbegin(); it != aggregators_.rend(); ++it) (*it)->mu().Unlock();
  }

 private:
  std::vector<PartitionAggregator*> aggregators_;
};

absl::string_view EncodingName(ternps::v1::Encoding e) { return ternps::v1::Encoding_Name(e); }

}  // namespace

absl::Status ValidateJobId(absl::string_view job_id) {
  if (job_id.empty() || job_id.size() > 128) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_id: must be 1..128 bytes, got ", job_id.size()));
  }
  for (const char c : job_id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return absl::InvalidArgumentError("job_id: only [A-Za-z0-9._-] are allowed");
  }
  return absl::OkStatus();
}

absl::StatusOr<CodecConfig> ResolveCodec(const ternps::v1::CodecSettings& settings,
                                         uint32_t max_partition_elements) {
  CodecConfig c;
  if (settings.codec() != ternps::v1::CODEC_FP32 &&
      settings.codec() != ternps::v1::CODEC_TERNGRAD) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec.codec: ", static_cast<int>(settings.codec()),
                     " is not CODEC_FP32 or CODEC_TERNGRAD"));
  }
  c.codec = settings.codec();
  if (settings.has_clip_sigmas()) {
    if (!std::isfinite(settings.clip_sigmas()) || settings.clip_sigmas() < 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("codec.clip_sigmas: ", settings.clip_sigmas(), " must be finite and >= 0"));
    }
    c.clip_sigmas = settings.clip_sigmas();
  }
  if (settings.has_scaler_sharing()) c.scaler_sharing = settings.scaler_sharing();
  if (settings.partition_elements() != 0) c.partition_elements = settings.partition_elements();
  if (c.partition_elements > max_partition_elements) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec.partition_elements: ", c.partition_elements,
                     " exceeds this shard's limit ", max_partition_elements));
  }
  if (settings.has_min_compress_elements()) {
    c.min_compress_elements = settings.min_compress_elements();
  }
  switch (settings.downlink_encoding()) {
    case ternps::v1::ENCODING_UNSPECIFIED:
    case ternps::v1::FP32:
      c.downlink = ternps::v1::FP32;
      break;
    case ternps::v1::TERNARY_2BIT:
      c.downlink = ternps::v1::TERNARY_2BIT;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("codec.downlink_encoding: ", static_cast<int>(settings.downlink_encoding()),
                       " is not FP32 or TERNARY_2BIT"));
  }
  c.seed = settings.seed();
  return c;
}

absl::StatusOr<std::unique_ptr<Job>> Job::Create(const JoinRequest& request,
                                                 const ShardConfig& shard) {
  if (absl::Status st = ValidateJobId(request.job_id()); !st.ok()) return st;
  if (request.world_size() == 0 || request.world_size() > shard.max_world_size) {
    return absl::InvalidArgumentError(absl::StrCat("world_size: ", request.world_size(),
                                                   " is outside [1, ", shard.max_world_size, "]"));
  }
  absl::StatusOr<CodecConfig> codec = ResolveCodec(request.codec(), shard.max_partition_elements);
  if (!codec.ok()) return codec.status();
  if (request.tensors_size() == 0) return absl::InvalidArgumentError("tensors: empty");
  if (static_cast<size_t>(request.tensors_size()) > common::kMaxTensors) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensors: ", request.tensors_size(), " exceeds ", common::kMaxTensors));
  }
  std::vector<common::TensorSpec> tensors;
  tensors.reserve(request.tensors_size());
  for (const ternps::v1::TensorSpec& t : request.tensors()) {
    tensors.push_back({t.name(), t.elements(), t.keep_fp32()});
  }
  common::PlanOptions options;
  options.partition_elements = codec->partition_elements;
  options.min_compress_elements = codec->min_compress_elements;
  options.shard_count = shard.shard_count;
  options.compress = codec->codec == ternps::v1::CODEC_TERNGRAD;
  absl::StatusOr<common::PartitionPlan> plan = common::PartitionPlan::Create(tensors, options);
  if (!plan.ok()) return plan.status();
  if (plan->ShardLoad(shard.shard_index) > shard.max_shard_elements) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "tensors: this shard would own ", plan->ShardLoad(shard.shard_index),
        " elements, more than its limit --max_shard_elements=", shard.max_shard_elements));
  }
  return std::unique_ptr<Job>(
      new Job(request.job_id(), request, *std::move(codec), *std::move(plan), shard));
}

Job::Job(std::string id, const JoinRequest& request, CodecConfig codec, common::PartitionPlan plan,
         const ShardConfig& shard)
    : id_(std::move(id)),
      world_size_(request.world_size()),
      codec_(codec),
      plan_(std::move(plan)),
      shard_(shard),
      membership_(request.world_size()),
      owned_index_(plan_.partitions().size(), -1) {
  for (const uint32_t p : plan_.PartitionsOfShard(shard.shard_index)) {
    const common::Partition& part = plan_.partition(p);
    PartitionConfig config;
    config.id = p;
    config.elements = part.elements;
    config.kind = !part.compressed        ? AggregationKind::kFp32
                  : codec_.scaler_sharing ? AggregationKind::kIntSum
                                          : AggregationKind::kTernaryFloat;
    config.downlink = codec_.downlink;
    config.seed = codec_.seed;
    config.step_timeout = shard.step_timeout;
    owned_index_[p] = static_cast<int32_t>(aggregators_.size());
    aggregators_.push_back(std::make_unique<PartitionAggregator>(config));
  }
}

PartitionAggregator* Job::Owned(uint32_t id) const {
  if (id >= owned_index_.size() || owned_index_[id] < 0) return nullptr;
  return aggregators_[owned_index_[id]].get();
}

absl::Status Job::Matches(const JoinRequest& request) const {
  auto mismatch = [&](absl::string_view field, auto mine, auto theirs) {
    return absl::FailedPreconditionError(absl::StrCat(field, ": ", theirs, " differs from job '",
                                                      id_, "' (registered with ", mine, ")"));
  };
  if (request.world_size() != world_size_) {
    return mismatch("world_size", world_size_, request.world_size());
  }
  absl::StatusOr<CodecConfig> codec = ResolveCodec(request.codec(), shard_.max_partition_elements);
  if (!codec.ok()) return codec.status();
  if (codec->codec != codec_.codec) {
    return mismatch("codec.codec", ternps::v1::Codec_Name(codec_.codec),
                    ternps::v1::Codec_Name(codec->codec));
  }
  if (codec->clip_sigmas != codec_.clip_sigmas) {
    return mismatch("codec.clip_sigmas", codec_.clip_sigmas, codec->clip_sigmas);
  }
  if (codec->scaler_sharing != codec_.scaler_sharing) {
    return mismatch("codec.scaler_sharing", codec_.scaler_sharing, codec->scaler_sharing);
  }
  if (codec->partition_elements != codec_.partition_elements) {
    return mismatch("codec.partition_elements", codec_.partition_elements,
                    codec->partition_elements);
  }
  if (codec->min_compress_elements != codec_.min_compress_elements) {
    return mismatch("codec.min_compress_elements", codec_.min_compress_elements,
                    codec->min_compress_elements);
  }
  if (codec->downlink != codec_.downlink) {
    return mismatch("codec.downlink_encoding", EncodingName(codec_.downlink),
                    EncodingName(codec->downlink));
  }
  if (codec->seed != codec_.seed) return mismatch("codec.seed", codec_.seed, codec->seed);
  const std::vector<common::TensorSpec>& tensors = plan_.tensors();
  if (static_cast<size_t>(request.tensors_size()) != tensors.size()) {
    return mismatch("tensors", absl::StrCat(tensors.size(), " tensors"),
                    absl::StrCat(request.tensors_size(), " tensors"));
  }
  for (int i = 0; i < request.tensors_size(); ++i) {
    const common::TensorSpec& a = tensors[i];
    const ternps::v1::TensorSpec& b = request.tensors(i);
    if (a.name != b.name())
      return mismatch(absl::StrCat("tensors[", i, "].name"), a.name, b.name());
    if (a.elements != b.elements()) {
      return mismatch(absl::StrCat("tensors[", i, "].elements"), a.elements, b.elements());
    }
    if (a.keep_fp32 != b.keep_fp32()) {
      return mismatch(absl::StrCat("tensors[", i, "].keep_fp32"), a.keep_fp32, b.keep_fp32());
    }
  }
  if (request.plan_checksum() != 0 && request.plan_checksum() != plan_.Checksum()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "plan_checksum: ", absl::Hex(request.plan_checksum()), " differs from the shard's ",
        absl::Hex(plan_.Checksum()), " for the same registration (different plan version?)"));
  }
  return absl::OkStatus();
}

ternps::v1::JoinResponse Job::Join(const JoinRequest& request) {
  // A readmitted worker is awaited from the newest step any owned partition is at.
  uint64_t resume = 0;
  uint64_t first = UINT64_MAX;
  for (const auto& a : aggregators_) {
    resume = std::max(resume, a->base_step());
    first = std::min(first, a->base_step());
  }
  if (aggregators_.empty()) first = 0;
  const Membership::Admission admission = membership_.Join(request.worker_rank(), first, resume);
  ternps::v1::JoinResponse response;
  response.set_epoch(admission.epoch);
  response.set_start_step(admission.start_step);
  response.set_plan_checksum(plan_.Checksum());
  for (const uint32_t p : plan_.PartitionsOfShard(shard_.shard_index)) {
    response.add_owned_partitions(p);
  }
  for (const uint32_t r : membership_.View()->LiveRanks()) response.add_live_workers(r);
  return response;
}

void Job::ShareScalers(const ternps::v1::ShareScalersRequest& request,
                       ternps::v1::ShareScalersResponse* response, DoneCallback done) {
  const uint32_t rank = request.worker_rank();
  if (absl::Status st = membership_.CheckCaller(rank, request.epoch()); !st.ok()) {
    return done(st);
  }
  // Phase 1: fields.
  if (request.partition_ids_size() != request.scalers_size()) {
    return done(
        absl::InvalidArgumentError(absl::StrCat("scalers: ", request.scalers_size(), " values for ",
                                                request.partition_ids_size(), " partition_ids")));
  }
  if (request.partition_ids_size() == 0) {
    return done(absl::InvalidArgumentError("partition_ids: empty"));
  }
  std::vector<PartitionAggregator*> parts;
  parts.reserve(request.partition_ids_size());
  absl::flat_hash_set<uint32_t> seen;
  for (int i = 0; i < request.partition_ids_size(); ++i) {
    const uint32_t id = request.partition_ids(i);
    PartitionAggregator* a = Owned(id);
    if (a == nullptr) {
      return done(absl::NotFoundError(absl::StrCat("partition_ids[", i, "]: ", id,
                                                   " is not a partition owned by shard ",
                                                   shard_.shard_index, " in job '", id_, "'")));
    }
    if (!seen.insert(id).second) {
      return done(absl::InvalidArgumentError(
          absl::StrCat("partition_ids[", i, "]: ", id, " is listed twice")));
    }
    if (absl::Status st =
            common::ValidateScaler(request.scalers(i), absl::StrCat("scalers[", i, "]"));
        !st.ok()) {
      return done(st);
    }
    parts.push_back(a);
  }
  const bool changed = membership_.NoteFirstCall(rank, request.step());
  if (changed) RecheckAll();
  const std::shared_ptr<const MembershipView> view = membership_.View();
  // Phase 2: state, with every partition of the request locked.
  absl::Status rejected;
  {
    Finisher finisher;
    MultiLock lock(parts);
    for (int i = 0; i < request.partition_ids_size() && rejected.ok(); ++i) {
      rejected = parts[i]->CheckOffer(rank, request.step(), i);
    }
    if (rejected.ok()) {
      response->set_step(request.step());
      for (int i = 0; i < request.partition_ids_size(); ++i) {
        response->add_partition_ids(request.partition_ids(i));
        response->add_shared_scalers(0.0f);
      }
      auto call = std::make_shared<PendingCall<ternps::v1::ShareScalersResponse>>(
          response, request.partition_ids_size(), std::move(done));
      for (int i = 0; i < request.partition_ids_size(); ++i) {
        parts[i]->Offer(rank, request.step(), request.scalers(i), call, i, *view, finisher);
      }
    }
  }
  if (!rejected.ok()) done(std::move(rejected));
}

void Job::PushPull(const ternps::v1::PushPullRequest& request,
                   ternps::v1::PushPullResponse* response, DoneCallback done) {
  const uint32_t rank = request.worker_rank();
  if (absl::Status st = membership_.CheckCaller(rank, request.epoch()); !st.ok()) {
    return done(st);
  }
  if (request.partitions_size() == 0) return done(absl::InvalidArgumentError("partitions: empty"));
  // Phase 1: fields and payload bytes, no state.
  std::vector<PartitionAggregator*> parts;
  parts.reserve(request.partitions_size());
  absl::flat_hash_set<uint32_t> seen;
  uint64_t received = 0;
  uint64_t dense = 0;
  for (int i = 0; i < request.partitions_size(); ++i) {
    const PartitionPayload& p = request.partitions(i);
    // Formatted only for an error message.
    auto field = [i] { return absl::StrCat("partitions[", i, "]"); };
    PartitionAggregator* a = Owned(p.partition_id());
    if (a == nullptr) {
      return done(absl::NotFoundError(absl::StrCat(field(), ".partition_id: ", p.partition_id(),
                                                   " is not a partition owned by shard ",
                                                   shard_.shard_index, " in job '", id_, "'")));
    }
    if (!seen.insert(p.partition_id()).second) {
      return done(absl::InvalidArgumentError(absl::StrCat(
          field(), ".partition_id: ", p.partition_id(), " appears twice in one request")));
    }
    const PartitionConfig& config = a->config();
    if (p.elements() != config.elements) {
      return done(absl::InvalidArgumentError(absl::StrCat(field(), ".elements: ", p.elements(),
                                                          ", partition ", config.id, " has ",
                                                          config.elements)));
    }
    const ternps::v1::Encoding expected =
        config.kind == AggregationKind::kFp32 ? ternps::v1::FP32 : ternps::v1::TERNARY_2BIT;
    if (p.encoding() != expected) {
      return done(absl::InvalidArgumentError(
          absl::StrCat(field(), ".encoding: ", EncodingName(p.encoding()), ", partition ",
                       config.id, " travels as ", EncodingName(expected), " in this job")));
    }
    if (p.contributors() != 0) {
      return done(absl::InvalidArgumentError(
          absl::StrCat(field(), ".contributors: must be 0 in a request, got ", p.contributors())));
    }
    const auto data =
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(p.data().data()), p.data().size());
    absl::Status st;
    if (expected == ternps::v1::FP32) {
      if (p.scaler() != 0.0f) {
        st = absl::InvalidArgumentError(
            absl::StrCat("scaler: must be 0 for FP32, got ", p.scaler()));
      } else {
        st = common::ValidateFp32(data, config.elements);
      }
    } else {
      st = common::ValidateScaler(p.scaler());
      if (st.ok()) st = common::ValidateTernary(data, config.elements);
    }
    if (!st.ok()) {
      return done(absl::Status(st.code(), absl::StrCat(field(), ".", st.message())));
    }
    received += p.data().size();
    dense += uint64_t{config.elements} * 4;
    parts.push_back(a);
  }
  if (membership_.NoteFirstCall(rank, request.step())) RecheckAll();
  const std::shared_ptr<const MembershipView> view = membership_.View();
  // A readmitted rank cannot push a step from before its readmission.
  for (const MembershipView::Late& late : view->late) {
    if (late.rank == rank && request.step() < late.from_step) {
      return done(absl::FailedPreconditionError(
          absl::StrCat("step: ", request.step(), " is before step ", late.from_step,
                       " at which worker_rank ", rank, " was readmitted")));
    }
  }
  // Phase 2: state, with every partition of the request locked.
  std::vector<CompletionStats> completed;
  absl::Status rejected;
  {
    Finisher finisher;
    MultiLock lock(parts);
    for (int i = 0; i < request.partitions_size() && rejected.ok(); ++i) {
      rejected = parts[i]->CheckPush(rank, request.step(), request.partitions(i), i);
    }
    if (rejected.ok()) {
      counters_.received_bytes.fetch_add(received, std::memory_order_relaxed);
      if (shard_.metrics != nullptr) {
        shard_.metrics->received_bytes->Increment(static_cast<double>(received));
        shard_.metrics->dense_bytes->Increment(static_cast<double>(dense));
        NoteStepStart(request.step());
      }
      response->set_step(request.step());
      for (int i = 0; i < request.partitions_size(); ++i) response->add_averages();
      auto call = std::make_shared<PendingCall<ternps::v1::PushPullResponse>>(
          response, request.partitions_size(), std::move(done));
      for (int i = 0; i < request.partitions_size(); ++i) {
        parts[i]->Push(rank, request.step(), request.partitions(i), call, i, *view, finisher,
                       &completed);
      }
    }
  }
  if (!rejected.ok()) done(std::move(rejected));
  Account(completed);
}

absl::StatusOr<ternps::v1::LeaveResponse> Job::Leave(const ternps::v1::LeaveRequest& request) {
  if (absl::Status st = membership_.CheckCaller(request.worker_rank(), request.epoch()); !st.ok()) {
    return st;
  }
  ternps::v1::LeaveResponse response;
  response.set_epoch(membership_.Leave(request.worker_rank()));
  RecheckAll();
  return response;
}

void Job::RecheckAll() {
  const std::shared_ptr<const MembershipView> view = membership_.View();
  std::vector<CompletionStats> completed;
  Finisher finisher;
  for (const auto& a : aggregators_) {
    absl::MutexLock lock(&a->mu());
    a->Recheck(*view, finisher, &completed);
  }
  Account(completed);
}

void Job::Account(const std::vector<CompletionStats>& completed) {
  common::ServerMetrics* m = shard_.metrics;
  for (const CompletionStats& c : completed) {
    counters_.sent_bytes.fetch_add(c.sent_bytes, std::memory_order_relaxed);
    if (m == nullptr) continue;
    m->sent_bytes->Increment(static_cast<double>(c.sent_bytes));
    m->straggler_wait_seconds->Observe(absl::ToDoubleSeconds(c.straggler_wait));
    m->aggregate_seconds->Observe(absl::ToDoubleSeconds(c.aggregate));
    absl::MutexLock lock(&timing_mu_);
    StepTiming& t = timing_[c.step % 2];
    if (t.step == c.step && ++t.completed == aggregators_.size()) {
      m->step_seconds->Observe(absl::ToDoubleSeconds(absl::Now() - t.first_push));
    }
  }
}

void Job::NoteStepStart(uint64_t step) {
  if (shard_.metrics == nullptr) return;
  absl::MutexLock lock(&timing_mu_);
  StepTiming& t = timing_[step % 2];
  if (t.step != step) t = {step, absl::Now(), 0};
}

uint64_t Job::NewestStep() const {
  uint64_t step = 0;
  for (const auto& a : aggregators_) step = std::max(step, a->base_step());
  return step;
}

int Job::CheckTimeouts(absl::Time now) {
  const std::shared_ptr<const MembershipView> view = membership_.View();
  std::vector<uint32_t> missing;
  for (const auto& a : aggregators_) {
    absl::MutexLock lock(&a->mu());
    a->CollectExpired(now, *view, &missing);
  }
  if (missing.empty()) return 0;
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  const int dropped = membership_.Drop(missing);
  if (shard_.metrics != nullptr) shard_.metrics->worker_timeouts->Increment(dropped);
  RecheckAll();
  return dropped;
}

void Job::FailAll(const absl::Status& status) {
  Finisher finisher;
  for (const auto& a : aggregators_) {
    absl::MutexLock lock(&a->mu());
    a->FailAll(status, finisher);
  }
}

void Job::FillStatus(ternps::v1::JobStatus* status) const {
  const std::shared_ptr<const MembershipView> view = membership_.View();
  status->set_job_id(id_);
  status->set_world_size(world_size_);
  status->set_epoch(view->epoch);
  uint64_t step = aggregators_.empty() ? 0 : UINT64_MAX;
  for (const auto& a : aggregators_) step = std::min(step, a->base_step());
  status->set_step(step);
  for (const uint32_t r : view->LiveRanks()) status->add_live_workers(r);
  status->set_plan_checksum(plan_.Checksum());
  status->set_owned_partitions(static_cast<uint32_t>(aggregators_.size()));
  status->set_received_bytes(counters_.received_bytes.load(std::memory_order_relaxed));
  status->set_sent_bytes(counters_.sent_bytes.load(std::memory_order_relaxed));
}

}  // namespace ternps::server
