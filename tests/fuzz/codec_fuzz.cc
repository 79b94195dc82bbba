// libFuzzer target: the codec's validators and decoders on arbitrary payloads, every ISA this
// CPU runs against the scalar reference.
//
// Input: byte 0 the encoding (% 3: TERNARY_2BIT, INT_SUM, FP32), bytes 1-2 the element count
// (u16 LE, modulo 8192: every kernel's vector loop and tail is covered well below that), bytes 3-4
// INT_SUM's contributors (u16 LE), bytes 5-8 the scaler's float32 bits, then the payload. Checked:
// every ISA validates alike; a payload that fails validation is refused by the decoders with the
// output untouched; a valid one decodes to the same bits on every ISA.
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/isa.h"
#include "common/codec/ternary.h"

namespace {

using ternps::common::Isa;

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "codec_fuzz: %s\n", what);
  __builtin_trap();
}

std::vector<Isa> Isas() {
  std::vector<Isa> isas = {Isa::kScalar};
  if (ternps::common::BestIsa() >= Isa::kAvx2) isas.push_back(Isa::kAvx2);
  if (ternps::common::BestIsa() >= Isa::kAvx512) isas.push_back(Isa::kAvx512);
  return isas;
}

constexpr float kSentinel = 1.25f;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 9) return 0;
  const int kind = data[0] % 3;
  const size_t n = (data[1] | (size_t{data[2]} << 8)) % 8192;
  const int contributors = data[3] | (data[4] << 8);
  float scaler;
  std::memcpy(&scaler, data + 5, 4);
  const absl::Span<const uint8_t> payload(data + 9, size - 9);
  static const std::vector<Isa> isas = Isas();

  std::vector<std::vector<float>> decoded;
  std::vector<std::vector<int16_t>> sums;
  bool first = true, valid = false;
  for (Isa isa : isas) {
    absl::Status st;
    std::vector<float> out(n, kSentinel);
    std::vector<int16_t> codes(n, 3);
    switch (kind) {
      case 0:
        st = ternps::common::ValidateTernary(payload, n, isa);
        if (ternps::common::DecodeTernaryAdd(payload, scaler, absl::MakeSpan(out), isa).ok() !=
            (st.ok() && ternps::common::ValidateScaler(scaler).ok())) {
          Fail("DecodeTernaryAdd disagrees with ValidateTernary/ValidateScaler");
        }
        if (ternps::common::AddTernaryCodes(payload, absl::MakeSpan(codes), isa).ok() != st.ok()) {
          Fail("AddTernaryCodes disagrees with ValidateTernary");
        }
        break;
      case 1:
        st = ternps::common::ValidateIntSum(payload, n, contributors, isa);
        if (ternps::common::DecodeIntSumAdd(payload, contributors, scaler, absl::MakeSpan(out), isa)
                .ok() != (st.ok() && ternps::common::ValidateScaler(scaler).ok())) {
          Fail("DecodeIntSumAdd disagrees with ValidateIntSum/ValidateScaler");
        }
        break;
      default: {
        st = ternps::common::ValidateFp32(payload, n, 0, isa);
        if (ternps::common::DecodeFp32Add(payload, absl::MakeSpan(out), isa).ok() != st.ok()) {
          Fail("DecodeFp32Add disagrees with ValidateFp32");
        }
        // The one-pass decoder (checks and copies block by block) accepts exactly what
        // ValidateFp32 accepts, and then holds a copy of the payload.
        std::vector<float> copied(n, kSentinel);
        const bool one_pass =
            ternps::common::DecodeFp32OnePass(payload, absl::MakeSpan(copied), 0, isa).ok();
        if (one_pass != st.ok()) Fail("DecodeFp32OnePass disagrees with ValidateFp32");
        if (one_pass && n > 0 && std::memcmp(copied.data(), payload.data(), 4 * n) != 0) {
          Fail("DecodeFp32OnePass is not a copy of a valid payload");
        }
        break;
      }
    }
    if (first) valid = st.ok();
    if (st.ok() != valid) Fail("ISAs disagree on validity");
    first = false;
    decoded.push_back(std::move(out));
    sums.push_back(std::move(codes));
  }
  for (size_t i = 0; i < decoded.size(); ++i) {
    if (!valid || (kind != 2 && !ternps::common::ValidateScaler(scaler).ok())) {
      for (float v : decoded[i]) {
        if (std::memcmp(&v, &kSentinel, 4) != 0) Fail("a refused payload changed the output");
      }
    }
    if (n > 0 && std::memcmp(decoded[i].data(), decoded[0].data(), 4 * n) != 0) {
      Fail("ISAs decode to different bits");
    }
    if (sums[i] != sums[0]) Fail("ISAs sum codes differently");
  }
  return 0;
}
