// What a shard answers is checked before it reaches the worker: every wrong field of an average,
// a ShareScalers answer and a Join answer is refused with INVALID_ARGUMENT or FAILED_PRECONDITION
// naming the field, and a refused ShareScalers answer changes none of the worker's scalers.
#include "worker/client/answer_checks.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/spec/job_spec.h"
#include "gtest/gtest.h"

namespace ternps::worker {
namespace {

namespace v1 = ::ternps::v1;

// Two tensors in one shard: "big" compressed (shared scaler, INT_SUM downlink), "small" FP32.
common::JobSpec Spec() {
  v1::JoinRequest join;
  join.set_job_id("answers");
  join.set_world_size(4);
  v1::TensorSpec* big = join.add_tensors();
  big->set_name("big");
  big->set_elements(1000);
  v1::TensorSpec* small = join.add_tensors();
  small->set_name("small");
  small->set_elements(10);
  join.mutable_codec()->set_codec(v1::CODEC_TERNGRAD);
  join.mutable_codec()->set_min_compress_elements(100);
  absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(join, {.shard_count = 1});
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *std::move(spec);
}

// A well-formed FP32 average of partition `p` (all values 0.5), backed by `data`.
common::PayloadView Fp32Average(const common::JobSpec& spec, uint32_t p, std::string& data) {
  const uint32_t n = spec.plan.partition(p).elements;
  data.assign(size_t{4} * n, '\0');
  const float half = 0.5f;
  for (uint32_t i = 0; i < n; ++i) std::memcpy(data.data() + 4 * i, &half, 4);
  common::PayloadView v;
  v.partition_id = p;
  v.encoding = v1::FP32;
  v.elements = n;
  v.contributors = 4;
  v.pieces = {common::Piece(reinterpret_cast<const uint8_t*>(data.data()), data.size())};
  return v;
}

uint32_t FindPartition(const common::JobSpec& spec, bool compressed) {
  for (const common::Partition& part : spec.plan.partitions()) {
    if (part.compressed == compressed) return part.id;
  }
  ADD_FAILURE() << "no partition with compressed=" << compressed;
  return 0;
}

void ExpectRefused(const absl::StatusOr<Average>& got, const std::string& field) {
  ASSERT_FALSE(got.ok()) << "accepted; expected a refusal naming " << field;
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(got.status().message().find(field), absl::string_view::npos) << got.status();
}

TEST(AnswerChecksTest, AGoodFp32AverageIsAcceptedAndEachBadFieldIsNamed) {
  const common::JobSpec spec = Spec();
  const uint32_t p = FindPartition(spec, /*compressed=*/false);
  ASSERT_EQ(spec.route(p).downlink, v1::FP32);
  std::string data;
  std::vector<uint8_t> scratch;
  const common::PayloadView good = Fp32Average(spec, p, data);
  for (const bool as_pieces : {false, true}) {
    absl::StatusOr<Average> ok = ValidateAverage(good, p, spec, 0.0f, as_pieces, &scratch);
    ASSERT_TRUE(ok.ok()) << ok.status();
    EXPECT_EQ(ok->contributors, 4);

    common::PayloadView bad = good;
    bad.partition_id = p + 1;
    ExpectRefused(ValidateAverage(bad, p, spec, 0.0f, as_pieces, &scratch), "partition");
    bad = good;
    bad.elements += 1;
    ExpectRefused(ValidateAverage(bad, p, spec, 0.0f, as_pieces, &scratch), "elements");
    for (const uint32_t contributors : {0u, 5u}) {
      bad = good;
      bad.contributors = contributors;
      ExpectRefused(ValidateAverage(bad, p, spec, 0.0f, as_pieces, &scratch), ".contributors");
    }
    bad = good;
    bad.encoding = v1::TERNARY_2BIT;
    ExpectRefused(ValidateAverage(bad, p, spec, 0.0f, as_pieces, &scratch), ".encoding");
    bad = good;
    std::string shorter = data.substr(4);
    bad.pieces = {common::Piece(reinterpret_cast<const uint8_t*>(shorter.data()), shorter.size())};
    ExpectRefused(ValidateAverage(bad, p, spec, 0.0f, as_pieces, &scratch), "data");
  }
  // A NaN is found here when the payload is gathered (as pieces, the exchange's Decode does it).
  std::string nan_data = data;
  const float nan = std::nanf("");
  std::memcpy(nan_data.data() + 8, &nan, 4);
  common::PayloadView with_nan = good;
  with_nan.pieces = {
      common::Piece(reinterpret_cast<const uint8_t*>(nan_data.data()), nan_data.size())};
  EXPECT_FALSE(ValidateAverage(with_nan, p, spec, 0.0f, /*as_pieces=*/false, &scratch).ok());
}

TEST(AnswerChecksTest, AnIntSumAverageMustCarryTheSharedScaler) {
  const common::JobSpec spec = Spec();
  const uint32_t p = FindPartition(spec, /*compressed=*/true);
  ASSERT_EQ(spec.route(p).aggregation, common::Aggregation::kIntSum);
  const v1::Encoding encoding =
      common::AverageEncoding(spec.route(p).downlink, spec.codec.int_sum_radix, 4);
  const uint32_t n = spec.plan.partition(p).elements;
  std::string data(common::PayloadBytes(encoding, n, 4), '\0');
  common::PayloadView avg;
  avg.partition_id = p;
  avg.encoding = encoding;
  avg.elements = n;
  avg.contributors = 4;
  avg.scaler = 0.25f;
  avg.pieces = {common::Piece(reinterpret_cast<const uint8_t*>(data.data()), data.size())};
  std::vector<uint8_t> scratch;
  EXPECT_TRUE(ValidateAverage(avg, p, spec, 0.25f, /*as_pieces=*/true, &scratch).ok());
  ExpectRefused(ValidateAverage(avg, p, spec, 0.5f, /*as_pieces=*/true, &scratch), "scaler");
}

TEST(AnswerChecksTest, ARefusedShareScalersAnswerChangesNoScaler) {
  const std::vector<uint32_t> partitions = {1, 3};
  const std::vector<float> before = {0.0f, 0.2f, 0.0f, 0.3f};
  auto answer = [&](std::vector<uint32_t> ids, std::vector<float> shared) {
    v1::ShareScalersResponse r;
    for (const uint32_t id : ids) r.add_partition_ids(id);
    for (const float f : shared) r.add_shared_scalers(f);
    return r;
  };
  struct Case {
    v1::ShareScalersResponse answer;
    std::string field;
  };
  const Case cases[] = {
      {answer({1}, {0.4f}), "shared_scalers: 1 values"},
      {answer({1, 2}, {0.4f, 0.5f}), "partition_ids[1]: 2"},
      {answer({1, 3}, {0.4f, 0.25f}), "shared_scalers[1]"},  // below this worker's own
      {answer({1, 3}, {std::nanf(""), 0.5f}), "shared_scalers[0]"},
      {answer({1, 3}, {0.4f, -1.0f}), "shared_scalers[1]"},
  };
  for (const Case& c : cases) {
    std::vector<float> scalers = before;
    const absl::Status st = CheckSharedScalers(c.answer, partitions, scalers);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(st.message().find(c.field), absl::string_view::npos) << st;
    EXPECT_EQ(scalers, before) << "a refused answer changed a scaler: " << st;
  }
  std::vector<float> scalers = before;
  ASSERT_TRUE(CheckSharedScalers(answer({1, 3}, {0.4f, 0.3f}), partitions, scalers).ok());
  EXPECT_EQ(scalers, (std::vector<float>{0.0f, 0.4f, 0.0f, 0.3f}));
}

TEST(AnswerChecksTest, AJoinAnswerMustMatchThisWorkersPlan) {
  const common::JobSpec spec = Spec();
  v1::JoinResponse good;
  good.set_plan_checksum(spec.plan.Checksum());
  for (const uint32_t p : spec.plan.PartitionsOfShard(0)) good.add_owned_partitions(p);
  EXPECT_TRUE(CheckJoinAnswer(good, spec.plan, 0).ok());
  v1::JoinResponse bad = good;
  bad.set_plan_checksum(good.plan_checksum() ^ 1);
  EXPECT_EQ(CheckJoinAnswer(bad, spec.plan, 0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(CheckJoinAnswer(bad, spec.plan, 0).message().find("plan_checksum"),
            absl::string_view::npos);
  bad = good;
  bad.mutable_owned_partitions()->RemoveLast();
  EXPECT_NE(CheckJoinAnswer(bad, spec.plan, 0).message().find("owned_partitions"),
            absl::string_view::npos);
}

}  // namespace
}  // namespace ternps::worker
