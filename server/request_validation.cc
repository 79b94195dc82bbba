#include "server/request_validation.h"

#include <algorithm>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/codec/fp32.h"
#include "common/codec/ternary.h"

namespace ternps::server {
namespace {

namespace v1 = ::ternps::v1;

absl::Status CheckCaller(uint32_t rank, uint64_t epoch, uint64_t step, const MembershipView& view) {
  if (absl::Status st = view.CheckCaller(rank, epoch); !st.ok()) return st;
  return view.CheckStepOfCaller(rank, step);
}

// NOT_FOUND unless `id` is a partition that `shard` owns in `spec`; `field` is formatted only for
// the error.
template <typename Field>
absl::Status CheckOwned(uint32_t id, const common::JobSpec& spec, uint32_t shard, Field field) {
  if (id < spec.plan.partitions().size() && spec.plan.partition(id).shard == shard) {
    return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat(field(), ": ", id, " is not a partition owned by shard ",
                                          shard, " in job '", spec.job_id, "'"));
}

}  // namespace

absl::Status ValidatePayloadData(const common::PayloadView& p, v1::Encoding encoding,
                                 uint32_t elements) {
  const size_t expected =
      encoding == v1::FP32 ? common::Fp32Bytes(elements) : common::TernaryBytes(elements);
  if (p.data_size() != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat("data: ", p.data_size(), " bytes, expected ", expected));
  }
  absl::Status st;
  if (encoding == v1::FP32) {
    common::ForEachRun(p.pieces, 4, [&](common::Piece run, size_t element) {
      if (st.ok()) st = common::ValidateFp32(run, run.size() / 4, element);
    });
  } else {
    common::ForEachRun(p.pieces, 1, [&](common::Piece run, size_t byte) {
      const size_t n = std::min<size_t>(4 * run.size(), elements - 4 * byte);
      if (st.ok()) st = common::ValidateTernary(run, n);
    });
  }
  return st;
}

absl::StatusOr<ValidatedRequest> ValidateShareScalers(const v1::ShareScalersRequest& request,
                                                      const common::JobSpec& spec, uint32_t shard,
                                                      const MembershipView& view) {
  if (absl::Status st = CheckCaller(request.worker_rank(), request.epoch(), request.step(), view);
      !st.ok()) {
    return st;
  }
  if (request.partition_ids_size() != request.scalers_size()) {
    return absl::InvalidArgumentError(absl::StrCat("scalers: ", request.scalers_size(),
                                                   " values for ", request.partition_ids_size(),
                                                   " partition_ids"));
  }
  if (request.partition_ids_size() == 0) {
    return absl::InvalidArgumentError("partition_ids: empty");
  }
  ValidatedRequest v;
  v.rank = request.worker_rank();
  v.step = request.step();
  v.may_repeat = view.ranks[v.rank].may_repeat();
  v.partitions.reserve(request.partition_ids_size());
  absl::flat_hash_set<uint32_t> seen;
  for (int i = 0; i < request.partition_ids_size(); ++i) {
    const uint32_t id = request.partition_ids(i);
    auto field = [i] { return absl::StrCat("partition_ids[", i, "]"); };
    if (absl::Status st = CheckOwned(id, spec, shard, field); !st.ok()) return st;
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(absl::StrCat(field(), ": ", id, " is listed twice"));
    }
    if (spec.route(id).aggregation != common::Aggregation::kIntSum) {
      return absl::FailedPreconditionError(absl::StrCat(
          field(), ": partition ", id, " does not use scaler sharing (FP32 or no sharing)"));
    }
    if (absl::Status st =
            common::ValidateScaler(request.scalers(i), absl::StrCat("scalers[", i, "]"));
        !st.ok()) {
      return st;
    }
    v.partitions.push_back(id);
  }
  return v;
}

absl::StatusOr<ValidatedRequest> ValidatePushPull(const common::PushPullRequestView& request,
                                                  const common::JobSpec& spec, uint32_t shard,
                                                  const MembershipView& view) {
  if (absl::Status st = CheckCaller(request.worker_rank, request.epoch, request.step, view);
      !st.ok()) {
    return st;
  }
  if (request.partitions.empty()) return absl::InvalidArgumentError("partitions: empty");
  ValidatedRequest v;
  v.rank = request.worker_rank;
  v.step = request.step;
  v.may_repeat = view.ranks[v.rank].may_repeat();
  v.partitions.reserve(request.partitions.size());
  absl::flat_hash_set<uint32_t> seen;
  for (size_t i = 0; i < request.partitions.size(); ++i) {
    const common::PayloadView& p = request.partitions[i];
    // Formatted only for an error message (not per partition on the hot path).
    auto field = [i] { return absl::StrCat("partitions[", i, "]"); };
    const uint32_t id = p.partition_id;
    if (absl::Status st =
            CheckOwned(id, spec, shard, [&] { return absl::StrCat(field(), ".partition_id"); });
        !st.ok()) {
      return st;
    }
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(field(), ".partition_id: ", id, " appears twice in one request"));
    }
    const uint32_t elements = spec.plan.partition(id).elements;
    if (p.elements != elements) {
      return absl::InvalidArgumentError(
          absl::StrCat(field(), ".elements: ", p.elements, ", partition ", id, " has ", elements));
    }
    const v1::Encoding expected = spec.route(id).uplink;
    if (p.encoding != expected) {
      const std::string name = v1::Encoding_IsValid(p.encoding)
                                   ? v1::Encoding_Name(static_cast<v1::Encoding>(p.encoding))
                                   : absl::StrCat(p.encoding);
      return absl::InvalidArgumentError(absl::StrCat(field(), ".encoding: ", name, ", partition ",
                                                     id, " travels as ",
                                                     v1::Encoding_Name(expected), " in this job"));
    }
    if (p.contributors != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field(), ".contributors: must be 0 in a request, got ", p.contributors));
    }
    absl::Status st;
    if (expected == v1::FP32) {
      st = p.scaler != 0.0f ? absl::InvalidArgumentError(
                                  absl::StrCat("scaler: must be 0 for FP32, got ", p.scaler))
                            : ValidatePayloadData(p, expected, elements);
    } else {
      st = common::ValidateScaler(p.scaler);
      if (st.ok()) st = ValidatePayloadData(p, expected, elements);
    }
    if (!st.ok()) return absl::Status(st.code(), absl::StrCat(field(), ".", st.message()));
    v.wire_bytes += p.data_size();
    v.dense_bytes += uint64_t{elements} * 4;
    v.partitions.push_back(id);
  }
  return v;
}

}  // namespace ternps::server
