// The scalar reference kernels: the specification in code of every other kernel set.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/codec/isa.h"
#include "common/codec/kernels.h"

namespace ternps::common::internal {
namespace {

void StatsScalar(const float* g, size_t n, StatsLanes* lanes) {
  for (int l = 0; l < kStatsLanes; ++l) lanes->sum[l] = lanes->sum_squares[l] = 0.0;
  lanes->max_abs = 0.0f;
  StatsTail(g, 0, n, lanes, &lanes->max_abs);
}

void DecodeTernaryAddScalar(const uint8_t* data, size_t n, float scaler, float* out) {
  const float values[4] = {0.0f, scaler, -scaler, 0.0f};
  for (size_t k = 0; k < n; ++k) {
    out[k] += values[(data[k >> 2] >> (2 * (k & 3))) & 3];
  }
}

template <bool kAccumulate>
void TernaryCodesScalar(const uint8_t* data, size_t n, int16_t* sums) {
  static constexpr int16_t kValues[4] = {0, 1, -1, 0};
  for (size_t k = 0; k < n; ++k) {
    const int16_t base = kAccumulate ? sums[k] : 0;
    sums[k] = static_cast<int16_t>(base + kValues[(data[k >> 2] >> (2 * (k & 3))) & 3]);
  }
}

bool HasInvalidTernaryCodeScalar(const uint8_t* data, size_t bytes) {
  size_t i = 0;
  uint64_t bad = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    bad |= w & (w >> 1) & 0x5555555555555555ull;
  }
  for (; i < bytes; ++i) bad |= data[i] & (data[i] >> 1) & 0x55u;
  return bad != 0;
}

uint32_t RadixMaxWordScalar(const uint8_t* data, size_t words) {
  uint32_t max_word = 0;
  for (size_t j = 0; j < words; ++j) max_word = std::max(max_word, LoadWord16(data + 2 * j));
  return max_word;
}

template <bool kAccumulate>
void DecodeIntSumRadixScalar(const uint8_t* data, size_t blocks, const RadixLayout& layout,
                             float scale, float* out) {
  DecodeIntSumRadixBlocksScalar(data, blocks, layout, scale, out, kAccumulate);
}

uint32_t IntSumMaxFieldScalar(const uint8_t* data, size_t n, int bits) {
  return IntSumMaxFieldRange(data, (n * bits + 7) / 8, 0, n, bits);
}

void DecodeIntSumAddScalar(const uint8_t* data, size_t n, int bits, int contributors, float scale,
                           float* out) {
  DecodeIntSumAddRange(data, (n * bits + 7) / 8, 0, n, bits, contributors, scale, out);
}

void DecodeIntSumScalar(const uint8_t* data, size_t n, int bits, int contributors, float scale,
                        float* out) {
  DecodeIntSumAddRange(data, (n * bits + 7) / 8, 0, n, bits, contributors, scale, out,
                       /*accumulate=*/false);
}

}  // namespace

void StatsTail(const float* g, size_t begin, size_t n, StatsLanes* lanes, float* max_abs) {
  float m = *max_abs;
  for (size_t k = begin; k < n; ++k) {
    const double x = g[k];
    lanes->sum[k % kStatsLanes] += x;
    lanes->sum_squares[k % kStatsLanes] += x * x;  // exact: a float squared fits a double
    const float a = BitsFloat(FloatBits(g[k]) & 0x7fffffffu);
    m = m < a ? a : m;
  }
  *max_abs = m;
}

uint32_t IntSumMaxFieldRange(const uint8_t* data, size_t bytes, size_t begin, size_t end,
                             int bits) {
  uint32_t max_field = 0;
  for (size_t k = begin; k < end; ++k) {
    const uint32_t f = ReadField(data, bytes, k, bits);
    max_field = f > max_field ? f : max_field;
  }
  return max_field;
}

void DecodeIntSumAddRange(const uint8_t* data, size_t bytes, size_t begin, size_t end, int bits,
                          int contributors, float scale, float* out, bool accumulate) {
  for (size_t k = begin; k < end; ++k) {
    const int field = static_cast<int>(ReadField(data, bytes, k, bits));
    const float v = static_cast<float>(field - contributors) * scale;
    out[k] = (accumulate ? out[k] : 0.0f) + v;
  }
}

bool Fp32AnyNonFiniteScalar(const uint8_t* data, size_t n) {
  // Two values per 64-bit word: an exponent of all ones plus one more unit carries into the
  // value's bit 31 (no value carries into the next: 0x7f800000 + 0x00800000 = 0x80000000).
  constexpr uint64_t kExponents = 0x7f8000007f800000ull;
  constexpr uint64_t kUnits = 0x0080000000800000ull;
  constexpr uint64_t kCarries = 0x8000000080000000ull;
  uint64_t bad = 0;
  size_t k = 0;
  for (; k + 2 <= n; k += 2) {
    uint64_t w;
    std::memcpy(&w, data + 4 * k, 8);
    bad |= ((w & kExponents) + kUnits) & kCarries;
  }
  if (k < n) {
    uint32_t w;
    std::memcpy(&w, data + 4 * k, 4);
    bad |= static_cast<uint64_t>((w & 0x7f800000u) == 0x7f800000u);
  }
  return bad != 0;
}

void Fp32AddScalar(const uint8_t* data, size_t n, float* out) {
  for (size_t k = 0; k < n; ++k) {
    float v;
    std::memcpy(&v, data + 4 * k, 4);
    out[k] += v;
  }
}

bool Fp32DivideScalar(float* sums, size_t n, float divisor) {
  bool finite = true;
  for (size_t k = 0; k < n; ++k) {
    sums[k] /= divisor;
    finite &= std::isfinite(sums[k]);
  }
  return finite;
}

void DecodeIntSumRadixBlocksScalar(const uint8_t* data, size_t blocks, const RadixLayout& layout,
                                   float scale, float* out, bool accumulate) {
  const size_t per_block = kRadixBlockWords * static_cast<size_t>(layout.digits);
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* words = data + b * kRadixBlockBytes;
    float* o = out + b * per_block;
    for (size_t w = 0; w < kRadixBlockWords; ++w) {
      uint32_t x = LoadWord16(words + 2 * w);
      for (int d = 0; d < layout.digits; ++d) {
        const int field = static_cast<int>(x % layout.radix);
        x /= layout.radix;
        const float v = static_cast<float>(field - layout.contributors) * scale;
        float& dst = o[kRadixBlockWords * static_cast<size_t>(d) + w];
        dst = (accumulate ? dst : 0.0f) + v;
      }
    }
  }
}

void DecodeIntSumRadixTail(const uint8_t* data, size_t elements, const RadixLayout& layout,
                           float scale, float* out, bool accumulate) {
  const size_t words = RadixTailWords(elements, layout.digits);
  for (size_t w = 0; w < words; ++w) {
    uint32_t x = LoadWord16(data + 2 * w);
    for (size_t e = w; e < elements; e += words) {
      const int field = static_cast<int>(x % layout.radix);
      x /= layout.radix;
      const float v = static_cast<float>(field - layout.contributors) * scale;
      out[e] = (accumulate ? out[e] : 0.0f) + v;
    }
  }
}

bool RadixTailValid(const uint8_t* data, size_t elements, const RadixLayout& layout) {
  const size_t words = RadixTailWords(elements, layout.digits);
  for (size_t w = 0; w < words; ++w) {
    if (LoadWord16(data + 2 * w) >= RadixWordLimit(w, elements, words, layout.radix)) return false;
  }
  return true;
}

void PackNibblesRadixScalar(const uint8_t* fields, size_t blocks, const RadixLayout& layout,
                            uint8_t* out) {
  const size_t per_block = kRadixBlockWords * static_cast<size_t>(layout.digits);
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t w = 0; w < kRadixBlockWords; ++w) {
      uint32_t x = 0;
      for (int d = layout.digits - 1; d >= 0; --d) {
        const size_t e = b * per_block + kRadixBlockWords * static_cast<size_t>(d) + w;
        x = x * layout.radix + ((fields[e / 2] >> (4 * (e % 2))) & 15u);
      }
      out[b * kRadixBlockBytes + 2 * w] = static_cast<uint8_t>(x);
      out[b * kRadixBlockBytes + 2 * w + 1] = static_cast<uint8_t>(x >> 8);
    }
  }
}

void TernarizeScalar(const float* g, size_t n, uint64_t first, float limit, float scale,
                     const TernaryKey& key, uint8_t* out) {
  std::memset(out, 0, (n + 3) / 4);
  uint64_t cached_counter = ~0ull;
  Philox4x32 block{};
  for (size_t k = 0; k < n; ++k) {
    const uint64_t e = first + k;
    const uint32_t counter = TernaryCounter(e);
    if (counter != cached_counter) {
      block = TernaryBlock(key, e);
      cached_counter = counter;
    }
    const uint32_t code =
        TernaryCode(g[k], TernaryThreshold(g[k], limit, scale), TernaryDraw(block, e));
    out[k >> 2] |= static_cast<uint8_t>(code << (2 * (k & 3)));
  }
}

bool EncodeIntSumScalar(const int16_t* sums, size_t n, int bits, int contributors, uint8_t* out) {
  // Fields accumulate in a 64-bit register and leave it a byte at a time.
  uint64_t acc = 0;
  int acc_bits = 0;
  size_t o = 0;
  bool in_range = true;
  for (size_t k = 0; k < n; ++k) {
    const int v = sums[k] + contributors;
    in_range &= v >= 0 && v <= 2 * contributors;
    acc |= static_cast<uint64_t>(static_cast<uint32_t>(v) & ((1u << bits) - 1u)) << acc_bits;
    acc_bits += bits;
    while (acc_bits >= 8) {
      out[o++] = static_cast<uint8_t>(acc);
      acc >>= 8;
      acc_bits -= 8;
    }
  }
  if (acc_bits > 0) out[o++] = static_cast<uint8_t>(acc);
  return in_range;
}

namespace {

// Natural element order visits the 16 lanes of a 128-element block in turn, so the reference
// computes a whole block's 16 Philox outputs at once instead of re-deriving them per element.
void TernarizeScalarBlocked(const float* g, size_t n, uint64_t first, float limit, float scale,
                            const TernaryKey& key, uint8_t* out) {
  size_t k = 0;
  // Head up to a 128-element boundary of the partition, and any tail, element by element.
  const size_t head = first % 128 == 0 ? 0 : std::min<size_t>(n, 128 - first % 128);
  if (head > 0) TernarizeScalar(g, head, first, limit, scale, key, out);
  k = head;
  for (; k + 128 <= n; k += 128) {
    const uint64_t e0 = first + k;
    Philox4x32 blocks[16];
    for (int i = 0; i < 16; ++i) blocks[i] = TernaryBlock(key, e0 + i);
    uint8_t* o = out + k / 4;
    std::memset(o, 0, 32);
    for (int m = 0; m < 128; ++m) {
      const uint32_t draw = TernaryDraw(blocks[m & 15], e0 + m);
      const uint32_t code = TernaryCode(g[k + m], TernaryThreshold(g[k + m], limit, scale), draw);
      o[m >> 2] |= static_cast<uint8_t>(code << (2 * (m & 3)));
    }
  }
  if (k < n) TernarizeScalar(g + k, n - k, first + k, limit, scale, key, out + k / 4);
}

void AddTernaryNibblesScalar(const uint8_t* data, size_t field_bytes, uint8_t* fields) {
  TernaryNibblesScalar(data, field_bytes, 0, /*store=*/false, fields);
}

void StoreTernaryNibblesScalar(const uint8_t* data, size_t field_bytes, uint8_t base,
                               uint8_t* fields) {
  TernaryNibblesScalar(data, field_bytes, base, /*store=*/true, fields);
}

}  // namespace

void TernaryNibblesScalar(const uint8_t* data, size_t field_bytes, uint8_t base, bool store,
                          uint8_t* fields) {
  for (size_t i = 0; i < field_bytes; ++i) {
    const uint8_t from = store ? base : fields[i];
    fields[i] = static_cast<uint8_t>(from + kNibbleDeltas[(data[i / 2] >> (4 * (i % 2))) & 15]);
  }
}

const CodecKernels& ScalarKernels() {
  static constexpr CodecKernels kKernels = {
      StatsScalar,
      TernarizeScalarBlocked,
      DecodeTernaryAddScalar,
      TernaryCodesScalar<true>,
      TernaryCodesScalar<false>,
      HasInvalidTernaryCodeScalar,
      IntSumMaxFieldScalar,
      DecodeIntSumAddScalar,
      DecodeIntSumScalar,
      EncodeIntSumScalar,
      AddTernaryNibblesScalar,
      StoreTernaryNibblesScalar,
      RadixMaxWordScalar,
      DecodeIntSumRadixScalar<true>,
      DecodeIntSumRadixScalar<false>,
      PackNibblesRadixScalar,
      Fp32AnyNonFiniteScalar,
      Fp32AddScalar,
      Fp32DivideScalar,
  };
  return kKernels;
}

const CodecKernels& KernelsFor(Isa isa) {
  switch (ResolveIsa(isa)) {
    case Isa::kAvx512:
      return Avx512Kernels();
    case Isa::kAvx2:
      return Avx2Kernels();
    default:
      return ScalarKernels();
  }
}

}  // namespace ternps::common::internal
