// ternps::CodecConfig: the codec settings of a ternps job, with every default in one place.
//
// The same struct configures a worker (WorkerOptions::codec) and is what a shard resolves a
// JoinRequest's CodecSettings into (common/spec/job_spec.h), so a default exists exactly once.
//
//   ternps::CodecConfig codec;            // TernGrad, clip at 2.5 sigma, scaler sharing
//   codec.codec = ternps::CodecKind::kFp32;
//
// A plain value type; header-only, no dependencies.
#ifndef TERNPS_COMMON_INCLUDE_TERNPS_CODEC_CONFIG_H_
#define TERNPS_COMMON_INCLUDE_TERNPS_CODEC_CONFIG_H_

#include <cstdint>

namespace ternps {

enum class CodecKind {
  kTernGrad,  // large partitions travel as TERNARY_2BIT
  kFp32,      // every partition travels as FP32 (the uncompressed baseline)
};

struct CodecConfig {
  CodecKind codec = CodecKind::kTernGrad;
  // |g| > clip_sigmas * sigma is clipped before ternarization; 0: no clipping.
  float clip_sigmas = 2.5f;
  // Every worker ternarizes with the maximum scaler (ShareScalers): exact integer aggregation and
  // an INT_SUM downlink.
  bool scaler_sharing = true;
  // Largest partition, in elements; 0: the codec's default (DefaultPartitionElements below).
  uint32_t partition_elements = 0;
  // Tensors with fewer elements travel as FP32 and are averaged exactly.
  uint32_t min_compress_elements = 4096;
  // Without scaler sharing: averages come back re-ternarized (TERNARY_2BIT) instead of FP32.
  bool ternary_downlink = false;
  // Job seed of the stochastic rounding streams.
  uint64_t seed = 0;
  // With scaler sharing: averages of N workers come back as INT_SUM_RADIX (base-(2N+1) digits,
  // five per 16-bit word for N = 4: 3.2 bits per element against 4) where that is smaller than
  // INT_SUM's ceil(log2(2N+1)) bits, i.e. for N = 1, 2, 4 and 16..19. Every worker of a job must
  // agree; a JoinRequest without the field means false.
  bool int_sum_radix = true;

  bool operator==(const CodecConfig&) const = default;
};

// The partition size a job uses when CodecConfig::partition_elements is 0: TernGrad 2^20 elements,
// fp32 2^18 (1 MiB of float32).
//
// A partition is the unit a shard sums and answers. An FP32 partition travels alone in its call
// (it is larger than max_call_bytes), so its size sets how soon averages start coming back and
// how long the last one takes; smaller ones are also still in cache when the shard sums them.
// Measured with resnet50's profile: fp32 over emulated 1 Gbit/s links (tests/bench/netbench.sh,
// 4 workers x 4 shards) steps 1.05x faster than gloo with 2^18 against 0.96x with 2^20, one
// worker and one shard without shaping 0.18-0.20 s against 0.20-0.24 s per step, and the loopback
// cluster (ternps-bench cluster) 0.74-0.96 s against 1.16-1.28 s. TernGrad's calls carry several
// partitions: on the links it steps as fast with either, on loopback 0.117 s with 2^18 against
// 0.096-0.110 s with 2^20 (per-partition work), so it keeps 2^20.
constexpr uint32_t DefaultPartitionElements(CodecKind codec) {
  return codec == CodecKind::kFp32 ? 1u << 18 : 1u << 20;
}

// The partition size a job with these settings uses: partition_elements, or for 0 the codec's
// default. (A shard resolves a JoinRequest with this; a resolved CodecConfig is never 0.)
constexpr uint32_t PartitionElements(const CodecConfig& codec) {
  return codec.partition_elements != 0 ? codec.partition_elements
                                       : DefaultPartitionElements(codec.codec);
}

}  // namespace ternps

#endif  // TERNPS_COMMON_INCLUDE_TERNPS_CODEC_CONFIG_H_
