// The pure request validators: every class of bad ShareScalers / PushPull request gets its status
// code and a message naming the field, with nothing but a spec and a membership snapshot.
#include "server/request_validation.h"

#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "common/codec/fp32.h"
#include "common/codec/ternary.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/answer.h"

namespace ternps::server {
namespace {

namespace v1 = ::ternps::v1;
using ::testing::HasSubstr;

// One shard of two; tensors "w" (8190: partitions 0 and 1) and "b" (10: partition 2, FP32).
class RequestValidationTest : public ::testing::Test {
 protected:
  static common::JobSpec MakeSpec() {
    v1::JoinRequest join;
    join.set_job_id("v");
    join.set_world_size(2);
    v1::TensorSpec* w = join.add_tensors();
    w->set_name("w");
    w->set_elements(8190);
    v1::TensorSpec* b = join.add_tensors();
    b->set_name("b");
    b->set_elements(10);
    join.mutable_codec()->set_codec(v1::CODEC_TERNGRAD);
    join.mutable_codec()->set_partition_elements(4096);
    absl::StatusOr<common::JobSpec> spec = common::ResolveJobSpec(join, {.shard_count = 1});
    EXPECT_TRUE(spec.ok()) << spec.status();
    return *std::move(spec);
  }

  void SetUp() override {
    members_.Join(0, 0, 0);
    members_.Join(1, 0, 0);
  }

  v1::PushPullRequest Push() const {
    v1::PushPullRequest r;
    r.set_job_id("v");
    r.set_worker_rank(0);
    r.set_epoch(1);
    r.set_step(0);
    for (uint32_t p = 0; p < 3; ++p) {
      const common::Partition& part = spec_.plan.partition(p);
      v1::PartitionPayload* payload = r.add_partitions();
      payload->set_partition_id(p);
      payload->set_elements(part.elements);
      payload->set_encoding(spec_.route(p).uplink);
      if (part.compressed) {
        payload->set_scaler(1.0f);
        payload->set_data(std::string(common::TernaryBytes(part.elements), '\0'));
      } else {
        payload->set_data(std::string(common::Fp32Bytes(part.elements), '\0'));
      }
    }
    return r;
  }

  v1::ShareScalersRequest Share() const {
    v1::ShareScalersRequest r;
    r.set_job_id("v");
    r.set_worker_rank(1);
    r.set_epoch(1);
    r.set_step(0);
    r.add_partition_ids(0);
    r.add_scalers(0.5f);
    r.add_partition_ids(1);
    r.add_scalers(0.0f);
    return r;
  }

  const common::JobSpec spec_ = MakeSpec();
  Membership members_{2};
};

TEST_F(RequestValidationTest, ValidRequestsComeOutWithTheirPartitionsAndBytes) {
  const v1::PushPullRequest request = Push();
  absl::StatusOr<ValidatedRequest> push =
      ValidatePushPull(ViewOf(request), spec_, 0, *members_.View());
  ASSERT_TRUE(push.ok()) << push.status();
  EXPECT_EQ(push->partitions, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_EQ(push->wire_bytes, 1024u + 1024u + 40u);
  EXPECT_EQ(push->dense_bytes, 4u * 8200u);
  absl::StatusOr<ValidatedRequest> share =
      ValidateShareScalers(Share(), spec_, 0, *members_.View());
  ASSERT_TRUE(share.ok()) << share.status();
  EXPECT_EQ(share->rank, 1u);
  EXPECT_EQ(share->partitions, (std::vector<uint32_t>{0, 1}));
}

TEST_F(RequestValidationTest, EveryBadPushPullNamesItsField) {
  struct Case {
    absl::StatusCode code;
    std::string want;
    std::function<void(v1::PushPullRequest&)> mutate;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Case> cases = {
      {absl::StatusCode::kInvalidArgument, "worker_rank",
       [](v1::PushPullRequest& r) { r.set_worker_rank(2); }},
      {absl::StatusCode::kInvalidArgument, "epoch", [](v1::PushPullRequest& r) { r.set_epoch(9); }},
      {absl::StatusCode::kInvalidArgument, "partitions: empty",
       [](v1::PushPullRequest& r) { r.clear_partitions(); }},
      {absl::StatusCode::kNotFound, "partitions[1].partition_id",
       [](v1::PushPullRequest& r) { r.mutable_partitions(1)->set_partition_id(3); }},
      {absl::StatusCode::kInvalidArgument, "partitions[2].partition_id: 0 appears twice",
       [](v1::PushPullRequest& r) { r.mutable_partitions(2)->set_partition_id(0); }},
      {absl::StatusCode::kInvalidArgument, "partitions[0].elements",
       [](v1::PushPullRequest& r) { r.mutable_partitions(0)->set_elements(1); }},
      {absl::StatusCode::kInvalidArgument, "partitions[2].encoding",
       [](v1::PushPullRequest& r) { r.mutable_partitions(2)->set_encoding(v1::TERNARY_2BIT); }},
      {absl::StatusCode::kInvalidArgument, "partitions[0].contributors",
       [](v1::PushPullRequest& r) { r.mutable_partitions(0)->set_contributors(1); }},
      {absl::StatusCode::kInvalidArgument, "partitions[0].scaler",
       [nan](v1::PushPullRequest& r) { r.mutable_partitions(0)->set_scaler(nan); }},
      {absl::StatusCode::kInvalidArgument, "partitions[2].scaler",
       [](v1::PushPullRequest& r) { r.mutable_partitions(2)->set_scaler(1.0f); }},
      {absl::StatusCode::kInvalidArgument, "partitions[1].data",
       [](v1::PushPullRequest& r) { r.mutable_partitions(1)->mutable_data()->push_back('\0'); }},
      {absl::StatusCode::kInvalidArgument, "partitions[0].data",
       [](v1::PushPullRequest& r) { (*r.mutable_partitions(0)->mutable_data())[3] = '\xff'; }},
      {absl::StatusCode::kInvalidArgument, "partitions[2].data: element 7 is not finite",
       [nan](v1::PushPullRequest& r) {
         std::memcpy(r.mutable_partitions(2)->mutable_data()->data() + 4 * 7, &nan, 4);
       }},
  };
  for (const Case& c : cases) {
    v1::PushPullRequest r = Push();
    c.mutate(r);
    absl::StatusOr<ValidatedRequest> v = ValidatePushPull(ViewOf(r), spec_, 0, *members_.View());
    ASSERT_FALSE(v.ok()) << c.want;
    EXPECT_EQ(v.status().code(), c.code) << v.status();
    EXPECT_THAT(std::string(v.status().message()), HasSubstr(c.want)) << v.status();
  }
}

TEST_F(RequestValidationTest, EveryBadShareScalersNamesItsField) {
  struct Case {
    absl::StatusCode code;
    std::string want;
    std::function<void(v1::ShareScalersRequest&)> mutate;
  };
  const std::vector<Case> cases = {
      {absl::StatusCode::kInvalidArgument, "scalers: 1 values for 2",
       [](v1::ShareScalersRequest& r) { r.mutable_scalers()->RemoveLast(); }},
      {absl::StatusCode::kInvalidArgument, "partition_ids: empty",
       [](v1::ShareScalersRequest& r) {
         r.clear_partition_ids();
         r.clear_scalers();
       }},
      {absl::StatusCode::kNotFound, "partition_ids[1]",
       [](v1::ShareScalersRequest& r) { r.set_partition_ids(1, 77); }},
      {absl::StatusCode::kInvalidArgument, "partition_ids[1]: 0 is listed twice",
       [](v1::ShareScalersRequest& r) { r.set_partition_ids(1, 0); }},
      {absl::StatusCode::kFailedPrecondition, "does not use scaler sharing",
       [](v1::ShareScalersRequest& r) { r.set_partition_ids(1, 2); }},
      {absl::StatusCode::kInvalidArgument, "scalers[0]",
       [](v1::ShareScalersRequest& r) { r.set_scalers(0, -1.0f); }},
  };
  for (const Case& c : cases) {
    v1::ShareScalersRequest r = Share();
    c.mutate(r);
    absl::StatusOr<ValidatedRequest> v = ValidateShareScalers(r, spec_, 0, *members_.View());
    ASSERT_FALSE(v.ok()) << c.want;
    EXPECT_EQ(v.status().code(), c.code) << v.status();
    EXPECT_THAT(std::string(v.status().message()), HasSubstr(c.want)) << v.status();
  }
}

TEST_F(RequestValidationTest, CallersAreCheckedAgainstTheSnapshot) {
  members_.Drop({0});
  v1::PushPullRequest r = Push();
  EXPECT_EQ(ValidatePushPull(ViewOf(r), spec_, 0, *members_.View()).status().code(),
            absl::StatusCode::kAborted);
  // Readmitted from step 3: an earlier step is refused, step 3 is not.
  const Membership::Admission back = members_.Join(0, 0, 3);
  r.set_epoch(back.epoch);
  const absl::Status early = ValidatePushPull(ViewOf(r), spec_, 0, *members_.View()).status();
  EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(early.message()), HasSubstr("readmitted"));
  r.set_step(3);
  EXPECT_TRUE(ValidatePushPull(ViewOf(r), spec_, 0, *members_.View()).ok());
  // A shard that does not own the partitions.
  EXPECT_EQ(ValidatePushPull(ViewOf(r), spec_, 1, *members_.View()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ternps::server
