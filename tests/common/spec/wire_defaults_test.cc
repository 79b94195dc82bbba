// The wire defaults table of proto/ternps/v1/ternps.proto ("default <Message>.<field> = <value>"
// lines) against what a shard resolves (common/spec: ResolveCodec, ResolveJobSpec) for a request
// that leaves each of those settings absent or zero. The table and this test's list of checks
// must name the same settings, so a default can neither change in code without the table (this
// test fails) nor in the table without the baseline (tests/proto/contract_check.py fails).
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/spec/job_spec.h"
#include "gtest/gtest.h"

namespace ternps::common {
namespace {

namespace v1 = ::ternps::v1;

std::map<std::string, std::string> Table() {
  std::ifstream in(TERNPS_PROTO_FILE);
  EXPECT_TRUE(in.good()) << TERNPS_PROTO_FILE;
  const std::regex line(R"(^//\s+default\s+(\S+)\s+=\s+(\S+)\s*$)");
  std::map<std::string, std::string> table;
  std::string text;
  while (std::getline(in, text)) {
    std::smatch m;
    if (std::regex_match(text, m, line)) table[m[1]] = m[2];
  }
  return table;
}

// The resolved value of `codec` settings left at their defaults (the codec itself given).
CodecConfig Codec(v1::Codec codec) {
  v1::CodecSettings settings;
  settings.set_codec(codec);
  absl::StatusOr<CodecConfig> c = ResolveCodec(settings);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : CodecConfig{};
}

// The recovery settings a shard resolves for a JoinRequest that leaves them absent.
RecoveryConfig Recovery() {
  v1::JoinRequest request;
  request.set_job_id("defaults");
  request.set_world_size(1);
  request.set_shard_count(1);
  v1::TensorSpec* t = request.add_tensors();
  t->set_name("w");
  t->set_elements(10);
  request.mutable_codec()->set_codec(v1::CODEC_TERNGRAD);
  absl::StatusOr<JobSpec> spec = ResolveJobSpec(request, {});
  EXPECT_TRUE(spec.ok()) << spec.status();
  return spec.ok() ? spec->recovery : RecoveryConfig{.snapshot_interval = 999, .state_slots = 999};
}

std::string Bool(bool b) { return b ? "true" : "false"; }

TEST(WireDefaultsTest, TheShardResolvesEveryDefaultOfTheProtoTable) {
  const std::map<std::string, std::function<std::string()>> resolved = {
      {"CodecSettings.clip_sigmas",
       [] { return absl::StrCat(Codec(v1::CODEC_TERNGRAD).clip_sigmas); }},
      {"CodecSettings.scaler_sharing",
       [] { return Bool(Codec(v1::CODEC_TERNGRAD).scaler_sharing); }},
      {"CodecSettings.partition_elements[CODEC_TERNGRAD]",
       [] { return absl::StrCat(Codec(v1::CODEC_TERNGRAD).partition_elements); }},
      {"CodecSettings.partition_elements[CODEC_FP32]",
       [] { return absl::StrCat(Codec(v1::CODEC_FP32).partition_elements); }},
      {"CodecSettings.min_compress_elements",
       [] { return absl::StrCat(Codec(v1::CODEC_TERNGRAD).min_compress_elements); }},
      {"CodecSettings.downlink_encoding",
       [] {
         return std::string(Codec(v1::CODEC_TERNGRAD).ternary_downlink ? "TERNARY_2BIT" : "FP32");
       }},
      {"CodecSettings.seed", [] { return absl::StrCat(Codec(v1::CODEC_TERNGRAD).seed); }},
      {"CodecSettings.int_sum_radix", [] { return Bool(Codec(v1::CODEC_TERNGRAD).int_sum_radix); }},
      {"JoinRequest.snapshot_interval", [] { return absl::StrCat(Recovery().snapshot_interval); }},
      {"JoinRequest.state_slots", [] { return absl::StrCat(Recovery().state_slots); }},
  };
  const std::map<std::string, std::string> table = Table();
  EXPECT_EQ(table.size(), resolved.size());
  for (const auto& [field, value] : table) {
    auto it = resolved.find(field);
    if (it == resolved.end()) {
      ADD_FAILURE() << "the proto lists a default for " << field << ", which this test does not "
                    << "check: add it here";
      continue;
    }
    EXPECT_EQ(it->second(), value) << field << ": the shard resolves another value than the "
                                   << "proto's table says";
  }
  for (const auto& [field, value] : resolved) {
    EXPECT_TRUE(table.count(field)) << field << " (resolved " << value() << ") is missing from the "
                                    << "proto's table of wire defaults";
  }
}

}  // namespace
}  // namespace ternps::common
