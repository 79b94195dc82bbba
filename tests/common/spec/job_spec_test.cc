// The job spec: codec defaults resolved in one place, the encoding rule (route) of every kind of
// partition, and the registration comparison naming the first differing field in the proto's
// field order.
#include "common/spec/job_spec.h"

#include <limits>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ternps::common {
namespace {

namespace v1 = ::ternps::v1;
using ::testing::HasSubstr;

v1::JoinRequest Request() {
  v1::JoinRequest r;
  r.set_job_id("spec");
  r.set_world_size(4);
  for (const auto& [name, n, keep] : std::vector<std::tuple<std::string, uint64_t, bool>>{
           {"w", 10000, false}, {"b", 10, false}, {"head", 8192, true}}) {
    v1::TensorSpec* t = r.add_tensors();
    t->set_name(name);
    t->set_elements(n);
    t->set_keep_fp32(keep);
  }
  r.mutable_codec()->set_codec(v1::CODEC_TERNGRAD);
  r.mutable_codec()->set_partition_elements(4096);
  return r;
}

JobSpec Resolve(const v1::JoinRequest& r, uint32_t shards = 2) {
  absl::StatusOr<JobSpec> spec = ResolveJobSpec(r, {.shard_count = shards});
  EXPECT_TRUE(spec.ok()) << spec.status();
  return *std::move(spec);
}

TEST(JobSpecTest, AbsentSettingsTakeTheDefaultsOfCodecConfig) {
  v1::CodecSettings settings;
  settings.set_codec(v1::CODEC_TERNGRAD);
  absl::StatusOr<CodecConfig> codec = ResolveCodec(settings);
  ASSERT_TRUE(codec.ok()) << codec.status();
  CodecConfig expected;
  expected.partition_elements = 1u << 20;  // TernGrad's default partition size
  // The one exception: a request without int_sum_radix comes from a client that may not decode
  // INT_SUM_RADIX, so absent means false (the library's own requests always set it).
  expected.int_sum_radix = false;
  EXPECT_EQ(*codec, expected);
  settings.set_codec(v1::CODEC_FP32);
  codec = ResolveCodec(settings);
  ASSERT_TRUE(codec.ok()) << codec.status();
  EXPECT_EQ(codec->partition_elements, 1u << 18);  // fp32's: 1 MiB of float32
  settings.set_partition_elements(5000);
  EXPECT_EQ(ResolveCodec(settings)->partition_elements, 5000u);
}

TEST(JobSpecTest, CodecToProtoRoundTripsEverySetting) {
  CodecConfig c;
  c.codec = CodecKind::kTernGrad;
  c.clip_sigmas = 0.0f;
  c.scaler_sharing = false;
  c.partition_elements = 12345;
  c.min_compress_elements = 0;
  c.ternary_downlink = true;
  c.seed = 99;
  for (bool radix : {false, true}) {
    c.int_sum_radix = radix;
    absl::StatusOr<CodecConfig> back = ResolveCodec(CodecToProto(c));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, c);
  }
}

TEST(JobSpecTest, RoutesFollowTheOneRule) {
  v1::JoinRequest r = Request();
  // w: partitions 0 (4096), 1 (4096), 2 (1808); b: 3 (10 < 4096: FP32); head: 4, 5 (keep_fp32).
  JobSpec sharing = Resolve(r);
  ASSERT_EQ(sharing.routes.size(), 6u);
  const PartitionRoute int_sum{v1::TERNARY_2BIT, Aggregation::kIntSum, v1::INT_SUM};
  const PartitionRoute fp32{v1::FP32, Aggregation::kFp32, v1::FP32};
  for (uint32_t p : {0u, 1u, 2u}) EXPECT_EQ(sharing.route(p), int_sum) << p;
  for (uint32_t p : {3u, 4u, 5u}) EXPECT_EQ(sharing.route(p), fp32) << p;

  r.mutable_codec()->set_scaler_sharing(false);
  JobSpec plain = Resolve(r);
  EXPECT_EQ(plain.route(0),
            (PartitionRoute{v1::TERNARY_2BIT, Aggregation::kTernaryFloat, v1::FP32}));
  EXPECT_EQ(plain.route(3), fp32);
  r.mutable_codec()->set_downlink_encoding(v1::TERNARY_2BIT);
  EXPECT_EQ(Resolve(r).route(0),
            (PartitionRoute{v1::TERNARY_2BIT, Aggregation::kTernaryFloat, v1::TERNARY_2BIT}));

  r.mutable_codec()->set_codec(v1::CODEC_FP32);
  JobSpec dense = Resolve(r);
  for (const PartitionRoute& route : dense.routes) EXPECT_EQ(route, fp32);
}

TEST(JobSpecTest, InvalidRegistrationsNameTheField) {
  struct Case {
    std::string want;
    std::function<void(v1::JoinRequest&)> mutate;
  };
  const std::vector<Case> cases = {
      {"job_id", [](v1::JoinRequest& r) { r.set_job_id("a b"); }},
      {"world_size", [](v1::JoinRequest& r) { r.set_world_size(0); }},
      {"world_size", [](v1::JoinRequest& r) { r.set_world_size(kMaxIntSumContributors + 1); }},
      {"codec.codec", [](v1::JoinRequest& r) { r.mutable_codec()->set_codec(v1::Codec(9)); }},
      {"codec.clip_sigmas",
       [](v1::JoinRequest& r) {
         r.mutable_codec()->set_clip_sigmas(std::numeric_limits<float>::quiet_NaN());
       }},
      {"codec.clip_sigmas", [](v1::JoinRequest& r) { r.mutable_codec()->set_clip_sigmas(-1); }},
      {"codec.partition_elements",
       [](v1::JoinRequest& r) {
         r.mutable_codec()->set_partition_elements(kMaxPartitionElements + 1);
       }},
      {"codec.downlink_encoding",
       [](v1::JoinRequest& r) { r.mutable_codec()->set_downlink_encoding(v1::INT_SUM); }},
      {"tensors", [](v1::JoinRequest& r) { r.clear_tensors(); }},
      {"tensors[1].name", [](v1::JoinRequest& r) { r.mutable_tensors(1)->set_name("w"); }},
      {"tensors[2].elements", [](v1::JoinRequest& r) { r.mutable_tensors(2)->set_elements(0); }},
      {"snapshot_interval: 1000001 exceeds 1000000",
       [](v1::JoinRequest& r) { r.set_snapshot_interval(kMaxSnapshotInterval + 1); }},
      {"state_slots: 17 exceeds 16", [](v1::JoinRequest& r) { r.set_state_slots(17); }},
  };
  for (const Case& c : cases) {
    v1::JoinRequest r = Request();
    c.mutate(r);
    absl::StatusOr<JobSpec> spec = ResolveJobSpec(r, {.shard_count = 2});
    ASSERT_FALSE(spec.ok()) << c.want;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument) << spec.status();
    EXPECT_THAT(std::string(spec.status().message()), HasSubstr(c.want)) << spec.status();
  }
  // The shard's own world-size bound.
  absl::StatusOr<JobSpec> big = ResolveJobSpec(Request(), {.shard_count = 1, .max_world_size = 3});
  EXPECT_THAT(std::string(big.status().message()), HasSubstr("world_size: 4 is outside [1, 3]"));
}

TEST(JobSpecTest, CompareNamesTheFirstDifferenceInProtoFieldOrder) {
  const JobSpec job = Resolve(Request());
  EXPECT_TRUE(CompareSpecs(job, Resolve(Request())).ok());
  struct Case {
    std::string want;
    std::function<void(v1::JoinRequest&)> mutate;
    uint32_t shards = 2;
  };
  const std::vector<Case> cases = {
      // world_size (3) before tensors (4) before codec (5) before shard_count (7) before
      // snapshot_interval (9) before state_slots (10).
      {"world_size: 3 differs",
       [](v1::JoinRequest& r) {
         r.set_world_size(3);
         r.mutable_tensors(0)->set_elements(1);
         r.mutable_codec()->set_seed(5);
       }},
      {"tensors[0].elements: 1 differs",
       [](v1::JoinRequest& r) {
         r.mutable_tensors(0)->set_elements(1);
         r.mutable_codec()->set_seed(5);
       }},
      {"tensors[2].keep_fp32",
       [](v1::JoinRequest& r) { r.mutable_tensors(2)->set_keep_fp32(false); }},
      {"tensors: 4 tensors differs",
       [](v1::JoinRequest& r) {
         v1::TensorSpec* t = r.add_tensors();
         t->set_name("extra");
         t->set_elements(5);
       }},
      {"codec.codec: CODEC_FP32",
       [](v1::JoinRequest& r) {
         r.mutable_codec()->set_codec(v1::CODEC_FP32);
         r.mutable_codec()->set_seed(5);
       }},
      {"codec.clip_sigmas", [](v1::JoinRequest& r) { r.mutable_codec()->set_clip_sigmas(2); }},
      {"codec.scaler_sharing",
       [](v1::JoinRequest& r) { r.mutable_codec()->set_scaler_sharing(false); }},
      {"codec.partition_elements",
       [](v1::JoinRequest& r) { r.mutable_codec()->set_partition_elements(0); }},
      {"codec.min_compress_elements",
       [](v1::JoinRequest& r) { r.mutable_codec()->set_min_compress_elements(1); }},
      {"codec.downlink_encoding: TERNARY_2BIT differs",
       [](v1::JoinRequest& r) { r.mutable_codec()->set_downlink_encoding(v1::TERNARY_2BIT); }},
      {"codec.seed: 5 differs", [](v1::JoinRequest& r) { r.mutable_codec()->set_seed(5); }},
      {"codec.int_sum_radix",
       [](v1::JoinRequest& r) { r.mutable_codec()->set_int_sum_radix(true); }},
      {"shard_count: 3 differs",
       [](v1::JoinRequest& r) {
         r.set_snapshot_interval(5);
         r.set_state_slots(2);
       },
       3},
      {"snapshot_interval: 5 differs",
       [](v1::JoinRequest& r) {
         r.set_snapshot_interval(5);
         r.set_state_slots(2);
       }},
      {"state_slots: 2 differs", [](v1::JoinRequest& r) { r.set_state_slots(2); }},
  };
  for (const Case& c : cases) {
    v1::JoinRequest r = Request();
    c.mutate(r);
    const absl::Status st = CompareSpecs(job, Resolve(r, c.shards));
    EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << c.want << ": " << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr(c.want)) << st;
  }
}

TEST(JobSpecTest, PayloadBytesFollowTheWireFormat) {
  EXPECT_EQ(PayloadBytes(v1::FP32, 10, 0), 40u);
  EXPECT_EQ(PayloadBytes(v1::TERNARY_2BIT, 10, 0), 3u);
  EXPECT_EQ(PayloadBytes(v1::INT_SUM, 10, 4), 5u);        // 4 bits each
  EXPECT_EQ(PayloadBytes(v1::INT_SUM_RADIX, 10, 4), 4u);  // five per 16-bit word
}

TEST(JobSpecTest, IntSumAveragesGoRadixWhereTheJobAllowsAndItIsSmaller) {
  for (int n = 1; n <= 40; ++n) {
    const bool smaller = n == 1 || n == 2 || n == 4 || (n >= 16 && n <= 19);
    EXPECT_EQ(AverageEncoding(v1::INT_SUM, true, n), smaller ? v1::INT_SUM_RADIX : v1::INT_SUM)
        << n;
    EXPECT_EQ(AverageEncoding(v1::INT_SUM, false, n), v1::INT_SUM) << n;
    EXPECT_EQ(AverageEncoding(v1::FP32, true, n), v1::FP32) << n;
    EXPECT_EQ(AverageEncoding(v1::TERNARY_2BIT, true, n), v1::TERNARY_2BIT) << n;
  }
}

}  // namespace
}  // namespace ternps::common
