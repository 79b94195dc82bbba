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
  // Largest partition, in elements.
  uint32_t partition_elements = 1u << 20;
  // Tensors with fewer elements travel as FP32 and are averaged exactly.
  uint32_t min_compress_elements = 4096;
  // Without scaler sharing: averages come back re-ternarized (TERNARY_2BIT) instead of FP32.
  bool ternary_downlink = false;
  // Job seed of the stochastic rounding streams.
  uint64_t seed = 0;

  bool operator==(const CodecConfig&) const = default;
};

}  // namespace ternps

#endif  // TERNPS_COMMON_INCLUDE_TERNPS_CODEC_CONFIG_H_
