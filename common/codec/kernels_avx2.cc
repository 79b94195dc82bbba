// AVX2 + FMA + BMI1 codec kernels. Compiled with those flags; called only when the CPU has them
// (isa.cc). Bit-identical to kernels_scalar.cc.
//
// Ternarization runs the 16 Philox4x32-7 lanes of a 128-element block as two sets of 8 (see
// ternary_element.h and kernels_avx512.cc); 2-bit codes are packed by spreading the 16-bit
// "+1" and "-1" masks into alternate bits (a Morton interleave, fast on every AVX2 CPU).
#include <immintrin.h>

#include <cstring>

#include "common/codec/kernels.h"

namespace ternps::common::internal {
namespace {

inline void MulHiLo(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

struct PhiloxLanes {
  __m256i x[4];
};

inline PhiloxLanes Philox8(__m256i c0, __m256i c1, __m256i c2, __m256i c3, const __m256i* rk0,
                           const __m256i* rk1) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  for (int r = 0; r < kTernaryPhiloxRounds; ++r) {
    __m256i hi0, lo0, hi1, lo1;
    MulHiLo(c0, m0, &hi0, &lo0);
    MulHiLo(c2, m1, &hi1, &lo1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), rk0[r]);
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), rk1[r]);
    c3 = lo0;
  }
  return PhiloxLanes{{c0, c1, c2, c3}};
}

// Spreads the 16 bits of x to the even bit positions of a 32-bit word.
inline uint32_t SpreadBits(uint32_t x) {
  x = (x | (x << 8)) & 0x00FF00FFu;
  x = (x | (x << 4)) & 0x0F0F0F0Fu;
  x = (x | (x << 2)) & 0x33333333u;
  x = (x | (x << 1)) & 0x55555555u;
  return x;
}

void StatsAvx2(const float* g, size_t n, StatsLanes* lanes) {
  static_assert(kStatsLanes == 32);
  __m256d s[8], q[8];
  for (int i = 0; i < 8; ++i) s[i] = q[i] = _mm256_setzero_pd();
  __m256 mx = _mm256_setzero_ps();
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  size_t k = 0;
  for (; k + 32 <= n; k += 32) {
    for (int quarter = 0; quarter < 4; ++quarter) {
      const __m256 v = _mm256_loadu_ps(g + k + 8 * quarter);
      const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
      const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
      s[2 * quarter] = _mm256_add_pd(s[2 * quarter], lo);
      s[2 * quarter + 1] = _mm256_add_pd(s[2 * quarter + 1], hi);
      q[2 * quarter] = _mm256_fmadd_pd(lo, lo, q[2 * quarter]);  // exact square: == add(mul)
      q[2 * quarter + 1] = _mm256_fmadd_pd(hi, hi, q[2 * quarter + 1]);
      mx = _mm256_max_ps(_mm256_and_ps(v, abs_mask), mx);
    }
  }
  for (int i = 0; i < 8; ++i) {
    _mm256_storeu_pd(lanes->sum + 4 * i, s[i]);
    _mm256_storeu_pd(lanes->sum_squares + 4 * i, q[i]);
  }
  alignas(32) float m8[8];
  _mm256_store_ps(m8, mx);
  lanes->max_abs = 0.0f;
  for (float m : m8) lanes->max_abs = lanes->max_abs < m ? m : lanes->max_abs;
  StatsTail(g, k, n, lanes, &lanes->max_abs);
}

void TernarizeAvx2(const float* g, size_t n, uint64_t first, float limit, float scale,
                   const TernaryKey& key, uint8_t* out) {
  size_t k = 0;
  const size_t head = first % 128 == 0 ? 0 : (n < 128 - first % 128 ? n : 128 - first % 128);
  if (head > 0) TernarizeScalar(g, head, first, limit, scale, key, out);
  k = head;
  if (k + 128 <= n) {
    __m256i rk0[kTernaryPhiloxRounds], rk1[kTernaryPhiloxRounds];
    uint32_t k0 = static_cast<uint32_t>(key.seed), k1 = static_cast<uint32_t>(key.seed >> 32);
    for (int r = 0; r < kTernaryPhiloxRounds; ++r) {
      rk0[r] = _mm256_set1_epi32(static_cast<int>(k0));
      rk1[r] = _mm256_set1_epi32(static_cast<int>(k1));
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i c1 = _mm256_set1_epi32(static_cast<int>(key.partition));
    const __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(key.step)));
    const __m256i c3 = _mm256_set1_epi32(static_cast<int>(key.worker));
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i low16 = _mm256_set1_epi32(0xffff);
    const __m256 limit_v = _mm256_set1_ps(limit);
    const __m256 scale_v = _mm256_set1_ps(scale);
    for (; k + 128 <= n; k += 128) {
      const uint64_t e0 = first + k;
      const __m256i base = _mm256_set1_epi32(static_cast<int>((e0 >> 7) * 16));
      const PhiloxLanes pa = Philox8(_mm256_add_epi32(base, lane), c1, c2, c3, rk0, rk1);
      const PhiloxLanes pb =
          Philox8(_mm256_add_epi32(base, _mm256_add_epi32(lane, _mm256_set1_epi32(8))), c1, c2, c3,
                  rk0, rk1);
      for (int h = 0; h < 2; ++h) {
        for (int w = 0; w < 4; ++w) {
          const int m = 64 * h + 16 * w;
          uint32_t plus = 0, minus = 0;
          for (int set = 0; set < 2; ++set) {
            const __m256i word = set == 0 ? pa.x[w] : pb.x[w];
            const __m256i draw =
                h == 0 ? _mm256_and_si256(word, low16) : _mm256_srli_epi32(word, 16);
            const __m256 v = _mm256_loadu_ps(g + k + m + 8 * set);
            const __m256 a = _mm256_min_ps(_mm256_and_ps(v, abs_mask), limit_v);
            const __m256i thr = _mm256_cvttps_epi32(_mm256_round_ps(
                _mm256_mul_ps(a, scale_v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            // Both are below 2^17, so the signed compare is the unsigned one.
            const uint32_t b = static_cast<uint32_t>(
                _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(thr, draw))));
            const uint32_t neg = static_cast<uint32_t>(_mm256_movemask_ps(v));
            plus |= (b & ~neg) << (8 * set);
            minus |= (b & neg) << (8 * set);
          }
          const uint32_t packed = SpreadBits(plus) | (SpreadBits(minus) << 1);
          std::memcpy(out + (k + m) / 4, &packed, 4);
        }
      }
    }
  }
  if (k < n) TernarizeScalar(g + k, n - k, first + k, limit, scale, key, out + k / 4);
}

void DecodeTernaryAddAvx2(const uint8_t* data, size_t n, float scaler, float* out) {
  const __m256 table = _mm256_setr_ps(0.0f, scaler, -scaler, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f);
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i three = _mm256_set1_epi32(3);
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    uint16_t bits;
    std::memcpy(&bits, data + k / 4, 2);
    const __m256i codes =
        _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(bits), shifts), three);
    const __m256 v = _mm256_permutevar8x32_ps(table, codes);
    _mm256_storeu_ps(out + k, _mm256_add_ps(_mm256_loadu_ps(out + k), v));
  }
  if (k < n) ScalarKernels().decode_ternary_add(data + k / 4, n - k, scaler, out + k);
}

// Four int16 code values per byte of TERNARY_2BIT data (0b11 cannot occur: validated).
struct ByteCodeTable {
  uint64_t entry[256];
  constexpr ByteCodeTable() : entry() {
    constexpr uint16_t kValues[4] = {0, 1, 0xffff, 0};
    for (int b = 0; b < 256; ++b) {
      uint64_t e = 0;
      for (int i = 0; i < 4; ++i)
        e |= static_cast<uint64_t>(kValues[(b >> (2 * i)) & 3]) << (16 * i);
      entry[b] = e;
    }
  }
};
constexpr ByteCodeTable kByteCodes;

template <bool kAccumulate>
void TernaryCodesAvx2(const uint8_t* data, size_t n, int16_t* sums) {
  size_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const uint8_t* d = data + k / 4;
    const __m256i codes = _mm256_setr_epi64x(
        static_cast<int64_t>(kByteCodes.entry[d[0]]), static_cast<int64_t>(kByteCodes.entry[d[1]]),
        static_cast<int64_t>(kByteCodes.entry[d[2]]), static_cast<int64_t>(kByteCodes.entry[d[3]]));
    __m256i* s = reinterpret_cast<__m256i*>(sums + k);
    _mm256_storeu_si256(s, kAccumulate ? _mm256_add_epi16(_mm256_loadu_si256(s), codes) : codes);
  }
  if (k < n) {
    const CodecKernels& scalar = ScalarKernels();
    (kAccumulate ? scalar.add_ternary_codes : scalar.store_ternary_codes)(data + k / 4, n - k,
                                                                          sums + k);
  }
}

// 32 code bytes -> 64 field bytes, as TernaryNibblesAvx512.
template <bool kStore>
void TernaryNibblesAvx2(const uint8_t* data, size_t field_bytes, uint8_t base, uint8_t* fields) {
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kNibbleDeltas)));
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i from = _mm256_set1_epi8(static_cast<char>(base));
  size_t i = 0;
  for (; i + 64 <= field_bytes; i += 64) {
    const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i / 2));
    const __m256i d_even = _mm256_shuffle_epi8(table, _mm256_and_si256(codes, low));
    const __m256i d_odd =
        _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(codes, 4), low));
    // Lane j of `lo` holds field bytes 32j..32j+15, lane j of `hi` 32j+16..32j+31.
    const __m256i lo = _mm256_unpacklo_epi8(d_even, d_odd);
    const __m256i hi = _mm256_unpackhi_epi8(d_even, d_odd);
    const __m256i d0 = _mm256_permute2x128_si256(lo, hi, 0x20);
    const __m256i d1 = _mm256_permute2x128_si256(lo, hi, 0x31);
    auto* out0 = reinterpret_cast<__m256i*>(fields + i);
    auto* out1 = reinterpret_cast<__m256i*>(fields + i + 32);
    const __m256i f0 = kStore ? from : _mm256_loadu_si256(out0);
    const __m256i f1 = kStore ? from : _mm256_loadu_si256(out1);
    _mm256_storeu_si256(out0, _mm256_add_epi8(f0, d0));
    _mm256_storeu_si256(out1, _mm256_add_epi8(f1, d1));
  }
  if (i < field_bytes)
    TernaryNibblesScalar(data + i / 2, field_bytes - i, base, kStore, fields + i);
}

void AddTernaryNibblesAvx2(const uint8_t* data, size_t field_bytes, uint8_t* fields) {
  TernaryNibblesAvx2<false>(data, field_bytes, 0, fields);
}

bool HasInvalidTernaryCodeAvx2(const uint8_t* data, size_t bytes) {
  const __m256i low_bits = _mm256_set1_epi8(0x55);
  __m256i bad = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + i));
    bad = _mm256_or_si256(bad,
                          _mm256_and_si256(_mm256_and_si256(v, _mm256_srli_epi16(v, 1)), low_bits));
  }
  uint8_t tail = 0;
  for (; i < bytes; ++i) tail |= data[i] & (data[i] >> 1) & 0x55u;
  return !_mm256_testz_si256(bad, bad) || tail != 0;
}

// Shuffle indices and shifts that pull 8 consecutive `bits`-wide fields (8 * bits = a whole
// number of bytes <= 16) out of a 16-byte window broadcast to both 128-bit halves.
struct FieldLayout {
  __m256i index;
  __m256i shift;
  __m256i mask;
  size_t group_bytes;  // bits
};

FieldLayout MakeFieldLayout(int bits) {
  alignas(32) uint8_t index[32];
  alignas(32) uint32_t shift[8];
  for (int i = 0; i < 8; ++i) {
    const int bit = i * bits;
    for (int j = 0; j < 4; ++j) {
      const int byte = (bit >> 3) + j;
      // pshufb works within 128-bit halves, so indices are relative to the half; bytes past
      // the window are never part of the field (its last byte is < bits <= 16): zero them.
      index[4 * i + j] = byte < 16 ? static_cast<uint8_t>(byte) : 0x80;
    }
    shift[i] = static_cast<uint32_t>(bit & 7);
  }
  return FieldLayout{_mm256_load_si256(reinterpret_cast<const __m256i*>(index)),
                     _mm256_load_si256(reinterpret_cast<const __m256i*>(shift)),
                     _mm256_set1_epi32(static_cast<int>((1u << bits) - 1u)),
                     static_cast<size_t>(bits)};
}

inline __m256i ExtractFields(const uint8_t* group, const FieldLayout& layout) {
  const __m256i window =
      _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(group)));
  const __m256i gathered = _mm256_shuffle_epi8(window, layout.index);
  return _mm256_and_si256(_mm256_srlv_epi32(gathered, layout.shift), layout.mask);
}

uint32_t IntSumMaxFieldAvx2(const uint8_t* data, size_t n, int bits) {
  const size_t bytes = (n * bits + 7) / 8;
  const FieldLayout layout = MakeFieldLayout(bits);
  __m256i mx = _mm256_setzero_si256();
  size_t k = 0;
  for (; k + 8 <= n && (k / 8) * layout.group_bytes + 16 <= bytes; k += 8) {
    mx = _mm256_max_epu32(mx, ExtractFields(data + (k / 8) * layout.group_bytes, layout));
  }
  alignas(32) uint32_t m8[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(m8), mx);
  uint32_t max_field = 0;
  for (uint32_t m : m8) max_field = m > max_field ? m : max_field;
  const uint32_t tail_max = k < n ? IntSumMaxFieldRange(data, bytes, k, n, bits) : 0;
  return max_field > tail_max ? max_field : tail_max;
}

template <bool kAccumulate>
void DecodeIntSumAvx2(const uint8_t* data, size_t n, int bits, int contributors, float scale,
                      float* out) {
  const size_t bytes = (n * bits + 7) / 8;
  const FieldLayout layout = MakeFieldLayout(bits);
  const __m256i offset = _mm256_set1_epi32(contributors);
  const __m256 scale_v = _mm256_set1_ps(scale);
  size_t k = 0;
  for (; k + 8 <= n && (k / 8) * layout.group_bytes + 16 <= bytes; k += 8) {
    const __m256i fields = ExtractFields(data + (k / 8) * layout.group_bytes, layout);
    const __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(fields, offset)), scale_v);
    const __m256 base = kAccumulate ? _mm256_loadu_ps(out + k) : _mm256_setzero_ps();
    _mm256_storeu_ps(out + k, _mm256_add_ps(base, v));
  }
  if (k < n) DecodeIntSumAddRange(data, bytes, k, n, bits, contributors, scale, out, kAccumulate);
}

// 4-bit fields (N = 4..7, the common downlink) from 32 sums at a time; other widths, and the tail,
// through the scalar kernel.
bool EncodeIntSumAvx2(const int16_t* sums, size_t n, int bits, int contributors, uint8_t* out) {
  if (bits != 4) return EncodeIntSumScalar(sums, n, bits, contributors, out);
  const __m256i offset = _mm256_set1_epi16(static_cast<int16_t>(contributors));
  const __m256i low_byte = _mm256_set1_epi32(0xff);
  __m256i max_field = _mm256_setzero_si256();  // unsigned: a sum below -N wraps to a large field
  size_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const __m256i a =
        _mm256_add_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + k)), offset);
    const __m256i b = _mm256_add_epi16(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums + k + 16)), offset);
    max_field = _mm256_max_epu16(max_field, _mm256_max_epu16(a, b));
    // 32-bit lane j holds fields 2j and 2j+1; its low byte becomes field 2j | field 2j+1 << 4.
    const __m256i pa = _mm256_and_si256(_mm256_or_si256(a, _mm256_srli_epi32(a, 12)), low_byte);
    const __m256i pb = _mm256_and_si256(_mm256_or_si256(b, _mm256_srli_epi32(b, 12)), low_byte);
    // packus interleaves 128-bit lanes (a0-3 b0-3 | a4-7 b4-7); 0xD8 restores a0-7 | b0-7.
    const __m256i words = _mm256_permute4x64_epi64(_mm256_packus_epi32(pa, pb), 0xD8);
    _mm_storeu_si128(
        reinterpret_cast<__m128i*>(out + k / 2),
        _mm_packus_epi16(_mm256_castsi256_si128(words), _mm256_extracti128_si256(words, 1)));
  }
  const __m256i top = _mm256_set1_epi16(static_cast<int16_t>(2 * contributors));
  bool in_range =
      _mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_max_epu16(max_field, top), top)) == -1;
  if (k < n) in_range &= EncodeIntSumScalar(sums + k, n - k, bits, contributors, out + k / 2);
  return in_range;
}

uint32_t RadixMaxWordAvx2(const uint8_t* data, size_t words) {
  __m256i mx = _mm256_setzero_si256();
  size_t j = 0;
  for (; j + 16 <= words; j += 16) {
    mx = _mm256_max_epu16(mx, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + 2 * j)));
  }
  alignas(32) uint16_t lanes[16];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), mx);
  uint32_t max_word = 0;
  for (uint16_t v : lanes) max_word = v > max_word ? v : max_word;
  for (; j < words; ++j) {
    const uint32_t w = data[2 * j] | static_cast<uint32_t>(data[2 * j + 1]) << 8;
    max_word = w > max_word ? w : max_word;
  }
  return max_word;
}

// As DecodeIntSumRadixAvx512, a block as two halves of 16 words.
template <bool kAccumulate>
void DecodeIntSumRadixAvx2(const uint8_t* data, size_t blocks, const RadixLayout& layout,
                           float scale, float* out) {
  const __m256i multiplier = _mm256_set1_epi16(static_cast<int16_t>(layout.multiplier));
  const __m128i shift = _mm_cvtsi32_si128(layout.shift);
  const __m256i radix = _mm256_set1_epi16(static_cast<int16_t>(layout.radix));
  const __m256i offset = _mm256_set1_epi16(static_cast<int16_t>(layout.contributors));
  const __m256 scale_v = _mm256_set1_ps(scale);
  const size_t per_block = kRadixBlockWords * static_cast<size_t>(layout.digits);
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t half = 0; half < 2; ++half) {
      __m256i x = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(data + b * kRadixBlockBytes + 32 * half));
      float* o = out + b * per_block + 16 * half;
      for (int d = 0; d < layout.digits; ++d, o += kRadixBlockWords) {
        const __m256i q = _mm256_srl_epi16(_mm256_mulhi_epu16(x, multiplier), shift);
        const __m256i k =
            _mm256_sub_epi16(_mm256_sub_epi16(x, _mm256_mullo_epi16(q, radix)), offset);
        x = q;
        const __m256 lo = _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(k))), scale_v);
        const __m256 hi = _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm256_extracti128_si256(k, 1))), scale_v);
        const __m256 base_lo = kAccumulate ? _mm256_loadu_ps(o) : _mm256_setzero_ps();
        const __m256 base_hi = kAccumulate ? _mm256_loadu_ps(o + 8) : _mm256_setzero_ps();
        _mm256_storeu_ps(o, _mm256_add_ps(base_lo, lo));
        _mm256_storeu_ps(o + 8, _mm256_add_ps(base_hi, hi));
      }
    }
  }
}

// As PackNibblesRadixAvx512, 16 words at a time: 8 field bytes, each doubled (byte j / 2 in
// 16-bit lane j), low nibbles in even lanes and high nibbles in odd ones.
void PackNibblesRadixAvx2(const uint8_t* fields, size_t blocks, const RadixLayout& layout,
                          uint8_t* out) {
  const __m256i low = _mm256_set1_epi16(0x0F);
  const __m256i radix = _mm256_set1_epi16(static_cast<int16_t>(layout.radix));
  const size_t block_field_bytes = 16 * static_cast<size_t>(layout.digits);
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t half = 0; half < 2; ++half) {
      const uint8_t* f = fields + b * block_field_bytes + 8 * half;
      __m256i acc = _mm256_setzero_si256();
      for (int d = layout.digits - 1; d >= 0; --d) {
        const __m128i bytes =
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(f + 16 * static_cast<size_t>(d)));
        const __m256i spread = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(bytes, bytes));
        const __m256i digit =
            _mm256_blend_epi16(_mm256_and_si256(spread, low), _mm256_srli_epi16(spread, 4), 0xAA);
        acc = _mm256_add_epi16(_mm256_mullo_epi16(acc, radix), digit);
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * kRadixBlockBytes + 32 * half), acc);
    }
  }
}

// The exponent-all-ones lanes of 8 values.
inline __m256i NonFiniteLanes(__m256i v, __m256i exponent) {
  return _mm256_cmpeq_epi32(_mm256_and_si256(v, exponent), exponent);
}

// Four vectors per iteration: independent loads and compares keep the loop at memory speed.
bool Fp32AnyNonFiniteAvx2(const uint8_t* data, size_t n) {
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  size_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const auto* p = reinterpret_cast<const __m256i*>(data + 4 * k);
    const __m256i b0 = NonFiniteLanes(_mm256_loadu_si256(p), exponent);
    const __m256i b1 = NonFiniteLanes(_mm256_loadu_si256(p + 1), exponent);
    const __m256i b2 = NonFiniteLanes(_mm256_loadu_si256(p + 2), exponent);
    const __m256i b3 = NonFiniteLanes(_mm256_loadu_si256(p + 3), exponent);
    bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_or_si256(b0, b1), _mm256_or_si256(b2, b3)));
  }
  for (; k + 8 <= n; k += 8) {
    bad = _mm256_or_si256(
        bad, NonFiniteLanes(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(data + 4 * k)),
                            exponent));
  }
  return !_mm256_testz_si256(bad, bad) || Fp32AnyNonFiniteScalar(data + 4 * k, n - k);
}

void Fp32AddAvx2(const uint8_t* data, size_t n, float* out) {
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 v = _mm256_loadu_ps(reinterpret_cast<const float*>(data + 4 * k));
    _mm256_storeu_ps(out + k, _mm256_add_ps(_mm256_loadu_ps(out + k), v));
  }
  Fp32AddScalar(data + 4 * k, n - k, out + k);
}

bool Fp32DivideAvx2(float* sums, size_t n, float divisor) {
  const __m256 d = _mm256_set1_ps(divisor);
  const __m256i exponent = _mm256_set1_epi32(0x7f800000);
  __m256i bad = _mm256_setzero_si256();
  size_t k = 0;
  for (; k + 8 <= n; k += 8) {
    const __m256 q = _mm256_div_ps(_mm256_loadu_ps(sums + k), d);
    _mm256_storeu_ps(sums + k, q);
    bad = _mm256_or_si256(bad, NonFiniteLanes(_mm256_castps_si256(q), exponent));
  }
  const bool tail_finite = Fp32DivideScalar(sums + k, n - k, divisor);
  return _mm256_testz_si256(bad, bad) && tail_finite;
}

}  // namespace

const CodecKernels& Avx2Kernels() {
  static constexpr CodecKernels kKernels = {
      StatsAvx2,
      TernarizeAvx2,
      DecodeTernaryAddAvx2,
      TernaryCodesAvx2<true>,
      TernaryCodesAvx2<false>,
      HasInvalidTernaryCodeAvx2,
      IntSumMaxFieldAvx2,
      DecodeIntSumAvx2<true>,
      DecodeIntSumAvx2<false>,
      EncodeIntSumAvx2,
      AddTernaryNibblesAvx2,
      TernaryNibblesAvx2<true>,
      RadixMaxWordAvx2,
      DecodeIntSumRadixAvx2<true>,
      DecodeIntSumRadixAvx2<false>,
      PackNibblesRadixAvx2,
      Fp32AnyNonFiniteAvx2,
      Fp32AddAvx2,
      Fp32DivideAvx2,
  };
  return kKernels;
}

}  // namespace ternps::common::internal
