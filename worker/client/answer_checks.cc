#include "worker/client/answer_checks.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"

namespace ternps::worker {

namespace v1 = ::ternps::v1;

absl::StatusOr<Average> ValidateAverage(const common::PayloadView& avg, uint32_t p,
                                        const common::JobSpec& spec, float shared_scaler,
                                        bool as_pieces, std::vector<uint8_t>* scratch) {
  const uint32_t elements = spec.plan.partition(p).elements;
  if (avg.partition_id != p || avg.elements != elements) {
    return absl::InvalidArgumentError(absl::StrCat(": partition ", avg.partition_id, " of ",
                                                   avg.elements, " elements, expected ", p, " of ",
                                                   elements));
  }
  if (avg.contributors < 1 || avg.contributors > spec.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(".contributors: ", avg.contributors, " is outside [1, world_size]"));
  }
  const v1::Encoding expected = common::AverageEncoding(
      spec.route(p).downlink, spec.codec.int_sum_radix, static_cast<int>(avg.contributors));
  if (avg.encoding != expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(".encoding: ", avg.encoding, ", expected ", v1::Encoding_Name(expected)));
  }
  Average out{.encoding = expected,
              .scaler = avg.scaler,
              .contributors = static_cast<int>(avg.contributors),
              .bytes = {},
              .pieces = {}};
  absl::Status st;
  if ((expected == v1::INT_SUM || expected == v1::INT_SUM_RADIX) && avg.scaler != shared_scaler) {
    st = absl::InvalidArgumentError(
        absl::StrCat("scaler: ", avg.scaler, " is not the shared scaler ", shared_scaler));
  } else if (expected == v1::TERNARY_2BIT) {
    st = common::ValidateScaler(avg.scaler);
  }
  if (st.ok() && as_pieces) {
    // Left where gRPC received it (FP32 and INT_SUM); the exchange checks the values as it
    // decodes them, piece by piece, in one pass and without a gathering copy.
    out.pieces = avg.pieces;
    const size_t bytes = common::PayloadBytes(expected, elements, out.contributors);
    if (avg.data_size() != bytes) {
      st = absl::InvalidArgumentError(
          absl::StrCat("data: ", avg.data_size(), " bytes, expected ", bytes));
    }
  } else if (st.ok()) {
    out.bytes = avg.Gather(scratch);
    switch (expected) {
      case v1::INT_SUM:
        st = common::ValidateIntSum(out.bytes, elements, out.contributors);
        break;
      case v1::INT_SUM_RADIX:
        st = common::ValidateIntSumRadix(out.bytes, elements, out.contributors);
        break;
      case v1::TERNARY_2BIT:
        st = common::ValidateTernary(out.bytes, elements);
        break;
      default:
        st = common::ValidateFp32(out.bytes, elements);
        break;
    }
  }
  if (!st.ok()) return absl::Status(st.code(), absl::StrCat(".", st.message()));
  return out;
}

absl::Status CheckSharedScalers(const v1::ShareScalersResponse& answer,
                                absl::Span<const uint32_t> partitions,
                                std::vector<float>& scalers) {
  if (answer.shared_scalers_size() != static_cast<int>(partitions.size()) ||
      answer.partition_ids_size() != static_cast<int>(partitions.size())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared_scalers: ", answer.shared_scalers_size(), " values and ",
        answer.partition_ids_size(), " partition_ids for ", partitions.size(), " partitions"));
  }
  for (size_t i = 0; i < partitions.size(); ++i) {
    const float shared = answer.shared_scalers(static_cast<int>(i));
    const uint32_t p = partitions[i];
    if (answer.partition_ids(static_cast<int>(i)) != p) {
      return absl::InvalidArgumentError(absl::StrCat(
          "partition_ids[", i, "]: ", answer.partition_ids(static_cast<int>(i)), ", expected ", p));
    }
    if (!common::ValidateScaler(shared).ok() || shared < scalers[p]) {
      return absl::InvalidArgumentError(
          absl::StrCat("shared_scalers[", i, "]: ", shared, " for partition ", p,
                       " is not a valid maximum (this worker's scaler is ", scalers[p], ")"));
    }
  }
  for (size_t i = 0; i < partitions.size(); ++i) {
    scalers[partitions[i]] = answer.shared_scalers(static_cast<int>(i));
  }
  return absl::OkStatus();
}

absl::Status CheckJoinAnswer(const v1::JoinResponse& answer, const common::PartitionPlan& plan,
                             uint32_t shard) {
  if (answer.plan_checksum() != plan.Checksum()) {
    return absl::FailedPreconditionError(
        absl::StrCat("plan_checksum ", absl::Hex(answer.plan_checksum()),
                     " differs from this worker's ", absl::Hex(plan.Checksum())));
  }
  const std::vector<uint32_t>& mine = plan.PartitionsOfShard(shard);
  if (!std::equal(mine.begin(), mine.end(), answer.owned_partitions().begin(),
                  answer.owned_partitions().end())) {
    return absl::FailedPreconditionError(
        "owned_partitions differ from this worker's partition plan");
  }
  return absl::OkStatus();
}

}  // namespace ternps::worker
