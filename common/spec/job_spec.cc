#include "common/spec/job_spec.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/codec/fp32.h"
#include "common/codec/ternary.h"

namespace ternps::common {

namespace v1 = ::ternps::v1;

PartitionRoute RouteOf(const Partition& partition, const CodecConfig& codec) {
  if (!partition.compressed) return {v1::FP32, Aggregation::kFp32, v1::FP32};
  if (codec.scaler_sharing) return {v1::TERNARY_2BIT, Aggregation::kIntSum, v1::INT_SUM};
  return {v1::TERNARY_2BIT, Aggregation::kTernaryFloat,
          codec.ternary_downlink ? v1::TERNARY_2BIT : v1::FP32};
}

v1::Encoding AverageEncoding(v1::Encoding downlink, bool int_sum_radix, int contributors) {
  if (downlink == v1::INT_SUM && int_sum_radix && IntSumRadixSmaller(contributors)) {
    return v1::INT_SUM_RADIX;
  }
  return downlink;
}

size_t PayloadBytes(v1::Encoding encoding, size_t elements, int contributors) {
  switch (encoding) {
    case v1::INT_SUM_RADIX:
      return IntSumRadixBytes(elements, contributors);
    case v1::TERNARY_2BIT:
      return TernaryBytes(elements);
    case v1::INT_SUM:
      return IntSumBytes(elements, contributors);
    default:
      return Fp32Bytes(elements);
  }
}

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

absl::StatusOr<CodecConfig> ResolveCodec(const v1::CodecSettings& settings,
                                         uint32_t max_partition_elements) {
  CodecConfig c;
  switch (settings.codec()) {
    case v1::CODEC_TERNGRAD:
      c.codec = CodecKind::kTernGrad;
      break;
    case v1::CODEC_FP32:
      c.codec = CodecKind::kFp32;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("codec.codec: ", static_cast<int>(settings.codec()),
                       " is not CODEC_FP32 or CODEC_TERNGRAD"));
  }
  if (settings.has_clip_sigmas()) {
    if (!std::isfinite(settings.clip_sigmas()) || settings.clip_sigmas() < 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("codec.clip_sigmas: ", settings.clip_sigmas(), " must be finite and >= 0"));
    }
    c.clip_sigmas = settings.clip_sigmas();
  }
  if (settings.has_scaler_sharing()) c.scaler_sharing = settings.scaler_sharing();
  c.partition_elements = settings.partition_elements();
  c.partition_elements = PartitionElements(c);
  if (c.partition_elements > max_partition_elements) {
    return absl::InvalidArgumentError(
        absl::StrCat("codec.partition_elements: ", c.partition_elements, " exceeds the limit ",
                     max_partition_elements));
  }
  if (settings.has_min_compress_elements()) {
    c.min_compress_elements = settings.min_compress_elements();
  }
  switch (settings.downlink_encoding()) {
    case v1::ENCODING_UNSPECIFIED:
    case v1::FP32:
      c.ternary_downlink = false;
      break;
    case v1::TERNARY_2BIT:
      c.ternary_downlink = true;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("codec.downlink_encoding: ", static_cast<int>(settings.downlink_encoding()),
                       " is not FP32 or TERNARY_2BIT"));
  }
  c.seed = settings.seed();
  c.int_sum_radix = settings.has_int_sum_radix() && settings.int_sum_radix();
  return c;
}

v1::CodecSettings CodecToProto(const CodecConfig& codec) {
  v1::CodecSettings s;
  s.set_codec(codec.codec == CodecKind::kTernGrad ? v1::CODEC_TERNGRAD : v1::CODEC_FP32);
  s.set_clip_sigmas(codec.clip_sigmas);
  s.set_scaler_sharing(codec.scaler_sharing);
  s.set_partition_elements(codec.partition_elements);
  s.set_min_compress_elements(codec.min_compress_elements);
  s.set_downlink_encoding(codec.ternary_downlink ? v1::TERNARY_2BIT : v1::FP32);
  s.set_seed(codec.seed);
  s.set_int_sum_radix(codec.int_sum_radix);
  return s;
}

absl::StatusOr<JobSpec> ResolveJobSpec(const v1::JoinRequest& request, const SpecLimits& limits) {
  if (absl::Status st = ValidateJobId(request.job_id()); !st.ok()) return st;
  const uint32_t max_world = std::min<uint32_t>(limits.max_world_size, kMaxIntSumContributors);
  if (request.world_size() == 0 || request.world_size() > max_world) {
    return absl::InvalidArgumentError(
        absl::StrCat("world_size: ", request.world_size(), " is outside [1, ", max_world, "]"));
  }
  absl::StatusOr<CodecConfig> codec = ResolveCodec(request.codec(), limits.max_partition_elements);
  if (!codec.ok()) return codec.status();
  if (request.snapshot_interval() > kMaxSnapshotInterval) {
    return absl::InvalidArgumentError(absl::StrCat(
        "snapshot_interval: ", request.snapshot_interval(), " exceeds ", kMaxSnapshotInterval));
  }
  if (request.state_slots() > kMaxStateSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("state_slots: ", request.state_slots(), " exceeds ", kMaxStateSlots));
  }
  if (request.tensors_size() == 0) return absl::InvalidArgumentError("tensors: empty");
  if (static_cast<size_t>(request.tensors_size()) > kMaxTensors) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensors: ", request.tensors_size(), " exceeds ", kMaxTensors));
  }
  std::vector<TensorSpec> tensors;
  tensors.reserve(request.tensors_size());
  for (const v1::TensorSpec& t : request.tensors()) {
    tensors.push_back({t.name(), t.elements(), t.keep_fp32()});
  }
  PlanOptions options;
  options.partition_elements = codec->partition_elements;
  options.min_compress_elements = codec->min_compress_elements;
  options.shard_count = limits.shard_count;
  options.compress = codec->codec == CodecKind::kTernGrad;
  absl::StatusOr<PartitionPlan> plan = PartitionPlan::Create(tensors, options);
  if (!plan.ok()) return plan.status();
  JobSpec spec{.job_id = request.job_id(),
               .world_size = request.world_size(),
               .codec = *codec,
               .recovery = {.snapshot_interval = request.snapshot_interval(),
                            .state_slots = std::max<uint32_t>(1, request.state_slots())},
               .plan = *std::move(plan),
               .routes = {}};
  spec.routes.reserve(spec.plan.partitions().size());
  for (const Partition& p : spec.plan.partitions()) spec.routes.push_back(RouteOf(p, spec.codec));
  return spec;
}

namespace {

template <typename T>
absl::Status Mismatch(const JobSpec& job, absl::string_view field, const T& mine, const T& theirs) {
  return absl::FailedPreconditionError(absl::StrCat(field, ": ", theirs, " differs from job '",
                                                    job.job_id, "' (registered with ", mine, ")"));
}

}  // namespace

absl::Status CompareSpecs(const JobSpec& job, const JobSpec& other) {
  // JoinRequest field order: world_size (3), tensors (4), codec (5), shard_count (7),
  // snapshot_interval (9), state_slots (10).
  if (job.world_size != other.world_size) {
    return Mismatch(job, "world_size", job.world_size, other.world_size);
  }
  const std::vector<TensorSpec>& a = job.plan.tensors();
  const std::vector<TensorSpec>& b = other.plan.tensors();
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const std::string field = absl::StrCat("tensors[", i, "]");
    if (a[i].name != b[i].name) return Mismatch(job, field + ".name", a[i].name, b[i].name);
    if (a[i].elements != b[i].elements) {
      return Mismatch(job, field + ".elements", a[i].elements, b[i].elements);
    }
    if (a[i].keep_fp32 != b[i].keep_fp32) {
      return Mismatch(job, field + ".keep_fp32", a[i].keep_fp32, b[i].keep_fp32);
    }
  }
  if (a.size() != b.size()) {
    return Mismatch(job, "tensors", absl::StrCat(a.size(), " tensors"),
                    absl::StrCat(b.size(), " tensors"));
  }
  const CodecConfig& x = job.codec;
  const CodecConfig& y = other.codec;
  auto codec_name = [](CodecKind k) -> std::string {
    return k == CodecKind::kTernGrad ? "CODEC_TERNGRAD" : "CODEC_FP32";
  };
  auto downlink_name = [](bool ternary) -> std::string {
    return ternary ? "TERNARY_2BIT" : "FP32";
  };
  if (x.codec != y.codec) {
    return Mismatch(job, "codec.codec", codec_name(x.codec), codec_name(y.codec));
  }
  if (x.clip_sigmas != y.clip_sigmas) {
    return Mismatch(job, "codec.clip_sigmas", x.clip_sigmas, y.clip_sigmas);
  }
  if (x.scaler_sharing != y.scaler_sharing) {
    return Mismatch(job, "codec.scaler_sharing", x.scaler_sharing, y.scaler_sharing);
  }
  if (x.partition_elements != y.partition_elements) {
    return Mismatch(job, "codec.partition_elements", x.partition_elements, y.partition_elements);
  }
  if (x.min_compress_elements != y.min_compress_elements) {
    return Mismatch(job, "codec.min_compress_elements", x.min_compress_elements,
                    y.min_compress_elements);
  }
  if (x.ternary_downlink != y.ternary_downlink) {
    return Mismatch(job, "codec.downlink_encoding", downlink_name(x.ternary_downlink),
                    downlink_name(y.ternary_downlink));
  }
  if (x.seed != y.seed) return Mismatch(job, "codec.seed", x.seed, y.seed);
  if (x.int_sum_radix != y.int_sum_radix) {
    return Mismatch(job, "codec.int_sum_radix", x.int_sum_radix, y.int_sum_radix);
  }
  if (job.shard_count() != other.shard_count()) {
    return Mismatch(job, "shard_count", job.shard_count(), other.shard_count());
  }
  if (job.recovery.snapshot_interval != other.recovery.snapshot_interval) {
    return Mismatch(job, "snapshot_interval", job.recovery.snapshot_interval,
                    other.recovery.snapshot_interval);
  }
  if (job.recovery.state_slots != other.recovery.state_slots) {
    return Mismatch(job, "state_slots", job.recovery.state_slots, other.recovery.state_slots);
  }
  return absl::OkStatus();
}

}  // namespace ternps::common
