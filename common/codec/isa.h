// CPU instruction-set selection for the codec kernels.
//
// The codec has one kernel set per ISA: a scalar reference, AVX2 and AVX-512. All of them produce
// bit-identical output for the same input, key and scaler (tests/common/codec/simd_test.cc).
// kAuto resolves to the best set this CPU supports; an explicit choice the CPU cannot run falls
// back to the best supported one below it.
//
//   for (Isa isa : SupportedIsas()) { ... Ternarize(..., isa); }
//
// Thread safety: all functions are thread-safe (detection runs once).
#ifndef TERNPS_COMMON_CODEC_ISA_H_
#define TERNPS_COMMON_CODEC_ISA_H_

#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace ternps::common {

enum class Isa : int {
  kAuto = 0,
  kScalar = 1,
  kAvx2 = 2,    // AVX2 + FMA + BMI1.
  kAvx512 = 3,  // AVX-512 F/BW/DQ/VL/VBMI + BMI2.
};

// The best ISA this CPU runs.
Isa BestIsa();
// Whether this CPU runs `isa` (kAuto and kScalar always).
bool IsaSupported(Isa isa);
// `isa` if supported (kAuto: BestIsa()), else the best supported one below it.
Isa ResolveIsa(Isa isa);
// Every concrete ISA this CPU runs, scalar first.
std::vector<Isa> SupportedIsas();
// "auto", "scalar", "avx2", "avx512".
std::string_view IsaName(Isa isa);
// Inverse of IsaName; INVALID_ARGUMENT for an unknown name.
absl::StatusOr<Isa> ParseIsa(std::string_view name);

}  // namespace ternps::common

#endif  // TERNPS_COMMON_CODEC_ISA_H_
