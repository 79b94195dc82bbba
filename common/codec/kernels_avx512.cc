// AVX-512 (F/BW/DQ/VL/VBMI) + BMI2 codec kernels. Compiled with those flags; called only when the
// CPU has them (isa.cc). Bit-identical to kernels_scalar.cc.
//
// Ternarization runs 16 Philox4x32-7 instances (kTernaryPhiloxRounds) side by side, one per 32-bit
// lane: lane i of output word w gives the 16-bit draws of elements 16w+i (low half) and 64+16w+i
// (high half) of a 128-element block (see ternary_element.h), so each draw vector lines up with 16
// consecutive gradient values without any shuffle.
#include <immintrin.h>

#include <cstring>

#include "common/codec/kernels.h"

namespace ternps::common::internal {
namespace {

struct PhiloxLanes {
  __m512i x[4];
};

// Philox4x32 (kTernaryPhiloxRounds rounds) on 16 counters (c0 + lane, c1, c2, c3) with round keys
// rk0/rk1. The state is kept "unpacked": two vectors of 8 instances, each value in the low half of
// a 64-bit lane, so one VPMULUDQ yields a full 64-bit product (lo in place, hi after one shift) and
// the high halves may hold garbage that VPMULUDQ ignores. The 16 results are packed back once at
// the end.
inline PhiloxLanes Philox16(__m512i c0, __m512i c1, __m512i c2, __m512i c3, const __m512i* rk0,
                            const __m512i* rk1) {
  const __m512i m0 = _mm512_set1_epi64(kPhiloxM0);
  const __m512i m1 = _mm512_set1_epi64(kPhiloxM1);
  // Even lanes (instances 0, 2, ...) in e*, odd lanes (1, 3, ...) in o*.
  __m512i e0 = c0, e1 = c1, e2 = c2, e3 = c3;
  __m512i o0 = _mm512_srli_epi64(c0, 32), o1 = e1, o2 = e2, o3 = e3;
  for (int r = 0; r < kTernaryPhiloxRounds; ++r) {
    const __m512i pe0 = _mm512_mul_epu32(e0, m0), pe1 = _mm512_mul_epu32(e2, m1);
    const __m512i po0 = _mm512_mul_epu32(o0, m0), po1 = _mm512_mul_epu32(o2, m1);
    e0 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(pe1, 32), e1, rk0[r], 0x96);
    o0 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(po1, 32), o1, rk0[r], 0x96);
    e2 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(pe0, 32), e3, rk1[r], 0x96);
    o2 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(po0, 32), o3, rk1[r], 0x96);
    e1 = pe1;
    o1 = po1;
    e3 = pe0;
    o3 = po0;
  }
  // Lane 2j <- low half of e's 64-bit lane j, lane 2j+1 <- low half of o's lane j.
  const __m512i interleave =
      _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
  return PhiloxLanes{{_mm512_permutex2var_epi32(e0, interleave, o0),
                      _mm512_permutex2var_epi32(e1, interleave, o1),
                      _mm512_permutex2var_epi32(e2, interleave, o2),
                      _mm512_permutex2var_epi32(e3, interleave, o3)}};
}

void StatsAvx512(const float* g, size_t n, StatsLanes* lanes) {
  static_assert(kStatsLanes == 32);
  __m512d sum[4], sq[4];
  for (int i = 0; i < 4; ++i) sum[i] = sq[i] = _mm512_setzero_pd();
  __m512 mx = _mm512_setzero_ps();
  const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
  size_t k = 0;
  for (; k + 32 <= n; k += 32) {
    for (int half = 0; half < 2; ++half) {
      const __m512 v = _mm512_loadu_ps(g + k + 16 * half);
      const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
      const __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
      sum[2 * half] = _mm512_add_pd(sum[2 * half], lo);
      sum[2 * half + 1] = _mm512_add_pd(sum[2 * half + 1], hi);
      // fmadd == add(mul): a float squared is exact in a double.
      sq[2 * half] = _mm512_fmadd_pd(lo, lo, sq[2 * half]);
      sq[2 * half + 1] = _mm512_fmadd_pd(hi, hi, sq[2 * half + 1]);
      mx = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask)),
                         mx);
    }
  }
  for (int i = 0; i < 4; ++i) {
    _mm512_storeu_pd(lanes->sum + 8 * i, sum[i]);
    _mm512_storeu_pd(lanes->sum_squares + 8 * i, sq[i]);
  }
  lanes->max_abs = _mm512_reduce_max_ps(mx);
  StatsTail(g, k, n, lanes, &lanes->max_abs);
}

void TernarizeAvx512(const float* g, size_t n, uint64_t first, float limit, float scale,
                     const TernaryKey& key, uint8_t* out) {
  size_t k = 0;
  const size_t head = first % 128 == 0 ? 0 : (n < 128 - first % 128 ? n : 128 - first % 128);
  if (head > 0) TernarizeScalar(g, head, first, limit, scale, key, out);
  k = head;
  if (k + 128 <= n) {
    __m512i rk0[kTernaryPhiloxRounds], rk1[kTernaryPhiloxRounds];
    uint32_t k0 = static_cast<uint32_t>(key.seed), k1 = static_cast<uint32_t>(key.seed >> 32);
    for (int r = 0; r < kTernaryPhiloxRounds; ++r) {
      rk0[r] = _mm512_set1_epi64(k0);  // low halves matter (unpacked Philox state)
      rk1[r] = _mm512_set1_epi64(k1);
      k0 += kPhiloxW0;
      k1 += kPhiloxW1;
    }
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i c1 = _mm512_set1_epi64(key.partition);
    const __m512i c2 = _mm512_set1_epi64(static_cast<uint32_t>(key.step));
    const __m512i c3 = _mm512_set1_epi64(key.worker);
    const __m512i low16 = _mm512_set1_epi32(0xffff);
    const __m512 limit_v = _mm512_set1_ps(limit);
    const __m512 scale_v = _mm512_set1_ps(scale);
    for (; k + 128 <= n; k += 128) {
      const uint64_t e0 = first + k;
      const __m512i c0 =
          _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>((e0 >> 7) * 16)), lane);
      const PhiloxLanes p = Philox16(c0, c1, c2, c3, rk0, rk1);
      for (int h = 0; h < 2; ++h) {
        for (int w = 0; w < 4; w += 2) {  // groups w and w+1 are 32 consecutive elements
          uint64_t plus = 0, minus = 0;
          for (int j = 0; j < 2; ++j) {
            const int m = 64 * h + 16 * (w + j);
            const __m512i draw =
                h == 0 ? _mm512_and_si512(p.x[w + j], low16) : _mm512_srli_epi32(p.x[w + j], 16);
            const __m512 v = _mm512_loadu_ps(g + k + m);
            // VRANGEPS imm 0b1010: the smaller absolute value, sign cleared = min(|v|, limit).
            const __m512 a = _mm512_range_ps(v, limit_v, 0x0A);
            const __m512i thr = _mm512_cvt_roundps_epi32(
                _mm512_mul_ps(a, scale_v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            const __mmask16 b = _mm512_cmplt_epu32_mask(draw, thr);
            const __mmask16 neg = _mm512_movepi32_mask(_mm512_castps_si512(v));
            plus |= static_cast<uint64_t>(_cvtmask16_u32(_kandn_mask16(neg, b))) << (16 * j);
            minus |= static_cast<uint64_t>(_cvtmask16_u32(_kand_mask16(neg, b))) << (16 * j);
          }
          const uint64_t word =
              _pdep_u64(plus, 0x5555555555555555ull) | _pdep_u64(minus, 0xAAAAAAAAAAAAAAAAull);
          std::memcpy(out + (k + 64 * h + 16 * w) / 4, &word, 8);
        }
      }
    }
  }
  if (k < n) TernarizeScalar(g + k, n - k, first + k, limit, scale, key, out + k / 4);
}

void DecodeTernaryAddAvx512(const uint8_t* data, size_t n, float scaler, float* out) {
  const __m512 plus = _mm512_set1_ps(scaler);
  const __m512 minus = _mm512_set1_ps(-scaler);
  const __m512 zero = _mm512_setzero_ps();
  size_t k = 0;
  for (; k + 32 <= n; k += 32) {
    uint64_t word;
    std::memcpy(&word, data + k / 4, 8);
    const uint64_t p = _pext_u64(word, 0x5555555555555555ull);
    const uint64_t m = _pext_u64(word, 0xAAAAAAAAAAAAAAAAull);
    for (int half = 0; half < 2; ++half) {
      const __mmask16 pm = static_cast<__mmask16>(p >> (16 * half));
      const __mmask16 mm = static_cast<__mmask16>(m >> (16 * half));
      const __m512 v = _mm512_mask_mov_ps(_mm512_mask_mov_ps(zero, pm, plus), mm, minus);
      float* o = out + k + 16 * half;
      _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), v));
    }
  }
  if (k < n) ScalarKernels().decode_ternary_add(data + k / 4, n - k, scaler, out + k);
}

template <bool kAccumulate>
void TernaryCodesAvx512(const uint8_t* data, size_t n, int16_t* sums) {
  const __m512i one = _mm512_set1_epi16(1);
  size_t k = 0;
  for (; k + 32 <= n; k += 32) {
    uint64_t word;
    std::memcpy(&word, data + k / 4, 8);
    const __mmask32 p = static_cast<__mmask32>(_pext_u64(word, 0x5555555555555555ull));
    const __mmask32 m = static_cast<__mmask32>(_pext_u64(word, 0xAAAAAAAAAAAAAAAAull));
    __m512i s = kAccumulate ? _mm512_loadu_si512(sums + k) : _mm512_setzero_si512();
    s = _mm512_mask_add_epi16(s, p, s, one);
    s = _mm512_mask_sub_epi16(s, m, s, one);
    _mm512_storeu_si512(sums + k, s);
  }
  if (k < n) {
    const CodecKernels& scalar = ScalarKernels();
    (kAccumulate ? scalar.add_ternary_codes : scalar.store_ternary_codes)(data + k / 4, n - k,
                                                                          sums + k);
  }
}

// 64 code bytes -> 128 field bytes: each code nibble's delta byte (VPSHUFB from kNibbleDeltas),
// the low nibbles' and high nibbles' deltas interleaved back into element order.
template <bool kStore>
void TernaryNibblesAvx512(const uint8_t* data, size_t field_bytes, uint8_t base, uint8_t* fields) {
  const __m512i table =
      _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kNibbleDeltas)));
  const __m512i low = _mm512_set1_epi8(0x0F);
  const __m512i from = _mm512_set1_epi8(static_cast<char>(base));
  // unpacklo/hi interleave within 128-bit lanes: lane j of `lo` holds field bytes 32j..32j+15,
  // lane j of `hi` 32j+16..32j+31.
  const __m512i first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  size_t i = 0;
  for (; i + 128 <= field_bytes; i += 128) {
    const __m512i codes = _mm512_loadu_si512(data + i / 2);
    const __m512i d_even = _mm512_shuffle_epi8(table, _mm512_and_si512(codes, low));
    const __m512i d_odd =
        _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(codes, 4), low));
    const __m512i lo = _mm512_unpacklo_epi8(d_even, d_odd);
    const __m512i hi = _mm512_unpackhi_epi8(d_even, d_odd);
    const __m512i d0 = _mm512_permutex2var_epi64(lo, first, hi);
    const __m512i d1 = _mm512_permutex2var_epi64(lo, second, hi);
    const __m512i f0 = kStore ? from : _mm512_loadu_si512(fields + i);
    const __m512i f1 = kStore ? from : _mm512_loadu_si512(fields + i + 64);
    _mm512_storeu_si512(fields + i, _mm512_add_epi8(f0, d0));
    _mm512_storeu_si512(fields + i + 64, _mm512_add_epi8(f1, d1));
  }
  if (i < field_bytes)
    TernaryNibblesScalar(data + i / 2, field_bytes - i, base, kStore, fields + i);
}

void AddTernaryNibblesAvx512(const uint8_t* data, size_t field_bytes, uint8_t* fields) {
  TernaryNibblesAvx512<false>(data, field_bytes, 0, fields);
}

bool HasInvalidTernaryCodeAvx512(const uint8_t* data, size_t bytes) {
  const __m512i low_bits = _mm512_set1_epi8(0x55);
  __m512i bad = _mm512_setzero_si512();
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    const __m512i v = _mm512_loadu_si512(data + i);
    bad = _mm512_or_si512(bad,
                          _mm512_and_si512(_mm512_and_si512(v, _mm512_srli_epi16(v, 1)), low_bits));
  }
  uint8_t tail = 0;
  for (; i < bytes; ++i) tail |= data[i] & (data[i] >> 1) & 0x55u;
  return _mm512_test_epi64_mask(bad, bad) != 0 || tail != 0;
}

// Byte-permute indices and shifts that pull 512 / kLaneBits consecutive `bits`-wide fields out
// of a 64-byte window starting at the byte where the first of them starts, one field per lane.
// 32-bit lanes take any bits <= 16; 16-bit lanes (twice the fields per permute) take bits <= 9,
// where a field plus its bit offset fits in two bytes: the common N <= 255 payloads.
template <int kLaneBits>
struct FieldLayout {
  static constexpr int kLanes = 512 / kLaneBits;
  __m512i index;
  __m512i shift;
  __m512i mask;
  size_t group_bytes;  // kLanes * bits / 8
};

template <int kLaneBits>
FieldLayout<kLaneBits> MakeFieldLayout(int bits) {
  constexpr int kLaneBytes = kLaneBits / 8;
  alignas(64) uint8_t index[64];
  alignas(64) uint8_t shift[64] = {};  // little-endian lanes; a shift (< 8) fits the low byte
  for (int i = 0; i < FieldLayout<kLaneBits>::kLanes; ++i) {
    const int bit = i * bits;
    for (int j = 0; j < kLaneBytes; ++j) {
      index[kLaneBytes * i + j] = static_cast<uint8_t>((bit >> 3) + j);
    }
    shift[kLaneBytes * i] = static_cast<uint8_t>(bit & 7);
  }
  const uint32_t mask = (1u << bits) - 1u;
  return FieldLayout<kLaneBits>{_mm512_load_si512(index), _mm512_load_si512(shift),
                                kLaneBits == 32 ? _mm512_set1_epi32(static_cast<int>(mask))
                                                : _mm512_set1_epi16(static_cast<short>(mask)),
                                static_cast<size_t>(FieldLayout<kLaneBits>::kLanes * bits / 8)};
}

template <int kLaneBits>
inline __m512i ExtractFields(const uint8_t* group, const FieldLayout<kLaneBits>& layout) {
  const __m512i window = _mm512_loadu_si512(group);
  const __m512i gathered = _mm512_permutexvar_epi8(layout.index, window);
  const __m512i shifted = kLaneBits == 32 ? _mm512_srlv_epi32(gathered, layout.shift)
                                          : _mm512_srlv_epi16(gathered, layout.shift);
  return _mm512_and_si512(shifted, layout.mask);
}

inline constexpr int kMaxBits16 = 9;

uint32_t IntSumMaxFieldAvx512(const uint8_t* data, size_t n, int bits) {
  const size_t bytes = (n * bits + 7) / 8;
  size_t k = 0;
  uint32_t simd_max = 0;
  // A group's 64-byte window must stay inside the payload.
  if (bits == 4) {  // N = 4..7, the common world sizes: 128 nibbles per load
    const __m512i low = _mm512_set1_epi8(0x0F);
    __m512i mx = _mm512_setzero_si512();
    for (; k + 128 <= n; k += 128) {
      const __m512i v = _mm512_loadu_si512(data + k / 2);
      mx = _mm512_max_epu8(mx, _mm512_max_epu8(_mm512_and_si512(v, low),
                                               _mm512_and_si512(_mm512_srli_epi16(v, 4), low)));
    }
    const __m256i half =
        _mm256_max_epu8(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
    const __m128i quarter =
        _mm_max_epu8(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
    simd_max = _mm512_reduce_max_epu32(_mm512_cvtepu8_epi32(quarter));
  } else if (bits <= kMaxBits16) {
    const FieldLayout<16> layout = MakeFieldLayout<16>(bits);
    __m512i mx0 = _mm512_setzero_si512();
    __m512i mx1 = _mm512_setzero_si512();
    for (; k + 64 <= n && (k / 32 + 1) * layout.group_bytes + 64 <= bytes; k += 64) {
      const uint8_t* group = data + (k / 32) * layout.group_bytes;
      mx0 = _mm512_max_epu16(mx0, ExtractFields(group, layout));
      mx1 = _mm512_max_epu16(mx1, ExtractFields(group + layout.group_bytes, layout));
    }
    const __m512i mx = _mm512_max_epu16(mx0, mx1);
    const __m256i half =
        _mm256_max_epu16(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
    simd_max = _mm512_reduce_max_epu32(_mm512_cvtepu16_epi32(half));
  } else {
    const FieldLayout<32> layout = MakeFieldLayout<32>(bits);
    __m512i mx = _mm512_setzero_si512();
    for (; k + 16 <= n && (k / 16) * layout.group_bytes + 64 <= bytes; k += 16) {
      mx = _mm512_max_epu32(mx, ExtractFields(data + (k / 16) * layout.group_bytes, layout));
    }
    simd_max = _mm512_reduce_max_epu32(mx);
  }
  const uint32_t tail_max = k < n ? IntSumMaxFieldRange(data, bytes, k, n, bits) : 0;
  return simd_max > tail_max ? simd_max : tail_max;
}

template <bool kAccumulate>
inline void AddScaled(__m512i fields32, __m512i offset, __m512 scale, float* out) {
  const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(fields32, offset)), scale);
  const __m512 base = kAccumulate ? _mm512_loadu_ps(out) : _mm512_setzero_ps();
  _mm512_storeu_ps(out, _mm512_add_ps(base, v));
}

template <bool kAccumulate>
void DecodeIntSumAvx512(const uint8_t* data, size_t n, int bits, int contributors, float scale,
                        float* out) {
  const size_t bytes = (n * bits + 7) / 8;
  const __m512i offset = _mm512_set1_epi32(contributors);
  const __m512 scale_v = _mm512_set1_ps(scale);
  size_t k = 0;
  if (bits <= kMaxBits16) {
    const FieldLayout<16> layout = MakeFieldLayout<16>(bits);
    for (; k + 32 <= n && (k / 32) * layout.group_bytes + 64 <= bytes; k += 32) {
      const __m512i fields = ExtractFields(data + (k / 32) * layout.group_bytes, layout);
      AddScaled<kAccumulate>(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(fields)), offset, scale_v,
                             out + k);
      AddScaled<kAccumulate>(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(fields, 1)), offset,
                             scale_v, out + k + 16);
    }
  } else {
    const FieldLayout<32> layout = MakeFieldLayout<32>(bits);
    for (; k + 16 <= n && (k / 16) * layout.group_bytes + 64 <= bytes; k += 16) {
      AddScaled<kAccumulate>(ExtractFields(data + (k / 16) * layout.group_bytes, layout), offset,
                             scale_v, out + k);
    }
  }
  if (k < n) DecodeIntSumAddRange(data, bytes, k, n, bits, contributors, scale, out, kAccumulate);
}

// 4-bit fields (N = 4..7, the common downlink) from 32 sums at a time; other widths, and the tail,
// through the scalar kernel.
bool EncodeIntSumAvx512(const int16_t* sums, size_t n, int bits, int contributors, uint8_t* out) {
  if (bits != 4) return EncodeIntSumScalar(sums, n, bits, contributors, out);
  const __m512i offset = _mm512_set1_epi16(static_cast<int16_t>(contributors));
  const __m512i top = _mm512_set1_epi16(static_cast<int16_t>(2 * contributors));
  __mmask32 bad = 0;
  size_t k = 0;
  for (; k + 32 <= n; k += 32) {
    const __m512i v = _mm512_add_epi16(_mm512_loadu_si512(sums + k), offset);
    bad |= _mm512_cmpgt_epu16_mask(v, top);  // a sum below -N wraps to a large unsigned field
    // 32-bit lane j holds fields 2j (low half) and 2j+1 (high half); its low byte becomes
    // field 2j | field 2j+1 << 4.
    const __m512i pairs = _mm512_or_si512(v, _mm512_srli_epi32(v, 12));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + k / 2), _mm512_cvtepi32_epi8(pairs));
  }
  bool in_range = bad == 0;
  if (k < n) in_range &= EncodeIntSumScalar(sums + k, n - k, bits, contributors, out + k / 2);
  return in_range;
}

uint32_t RadixMaxWordAvx512(const uint8_t* data, size_t words) {
  __m512i mx = _mm512_setzero_si512();
  size_t j = 0;
  for (; j + 32 <= words; j += 32) {
    mx = _mm512_max_epu16(mx, _mm512_loadu_si512(data + 2 * j));
  }
  const __m256i half =
      _mm256_max_epu16(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
  uint32_t max_word = _mm512_reduce_max_epu32(_mm512_cvtepu16_epi32(half));
  for (; j < words; ++j) {
    const uint32_t w = data[2 * j] | static_cast<uint32_t>(data[2 * j + 1]) << 8;
    max_word = w > max_word ? w : max_word;
  }
  return max_word;
}

// A block's 32 words in 16-bit lanes: each digit is the remainder of one exact division by R
// (VPMULHUW and a shift; see RadixLayout), then widened to float in two halves of 16.
template <bool kAccumulate>
void DecodeIntSumRadixAvx512(const uint8_t* data, size_t blocks, const RadixLayout& layout,
                             float scale, float* out) {
  const __m512i multiplier = _mm512_set1_epi16(static_cast<int16_t>(layout.multiplier));
  const __m128i shift = _mm_cvtsi32_si128(layout.shift);
  const __m512i radix = _mm512_set1_epi16(static_cast<int16_t>(layout.radix));
  const __m512i offset = _mm512_set1_epi16(static_cast<int16_t>(layout.contributors));
  const __m512 scale_v = _mm512_set1_ps(scale);
  const size_t per_block = kRadixBlockWords * static_cast<size_t>(layout.digits);
  for (size_t b = 0; b < blocks; ++b) {
    __m512i x = _mm512_loadu_si512(data + b * kRadixBlockBytes);
    float* o = out + b * per_block;
    for (int d = 0; d < layout.digits; ++d, o += kRadixBlockWords) {
      const __m512i q = _mm512_srl_epi16(_mm512_mulhi_epu16(x, multiplier), shift);
      const __m512i k = _mm512_sub_epi16(_mm512_sub_epi16(x, _mm512_mullo_epi16(q, radix)), offset);
      x = q;
      const __m512 lo = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(k))), scale_v);
      const __m512 hi = _mm512_mul_ps(
          _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(k, 1))), scale_v);
      const __m512 base_lo = kAccumulate ? _mm512_loadu_ps(o) : _mm512_setzero_ps();
      const __m512 base_hi = kAccumulate ? _mm512_loadu_ps(o + 16) : _mm512_setzero_ps();
      _mm512_storeu_ps(o, _mm512_add_ps(base_lo, lo));
      _mm512_storeu_ps(o + 16, _mm512_add_ps(base_hi, hi));
    }
  }
}

// Digit d of a block is the 32 fields of 16 consecutive field bytes: byte j / 2 goes to 16-bit
// lane j (VPERMB, odd bytes zeroed), odd lanes take the high nibble; words are then built by
// Horner's rule from the top digit down.
void PackNibblesRadixAvx512(const uint8_t* fields, size_t blocks, const RadixLayout& layout,
                            uint8_t* out) {
  alignas(64) uint8_t index[64];
  alignas(64) uint16_t shifts[32];
  for (int j = 0; j < 32; ++j) {
    index[2 * j] = static_cast<uint8_t>(j / 2);
    index[2 * j + 1] = 0;
    shifts[j] = static_cast<uint16_t>(4 * (j % 2));
  }
  const __m512i index_v = _mm512_load_si512(index);
  const __m512i shift_v = _mm512_load_si512(shifts);
  const __m512i low = _mm512_set1_epi16(0x0F);
  const __m512i radix = _mm512_set1_epi16(static_cast<int16_t>(layout.radix));
  const __mmask64 even_bytes = 0x5555555555555555ull;
  const size_t block_field_bytes = 16 * static_cast<size_t>(layout.digits);
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* f = fields + b * block_field_bytes;
    __m512i acc = _mm512_setzero_si512();
    for (int d = layout.digits - 1; d >= 0; --d) {
      const __m512i bytes = _mm512_castsi128_si512(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(f + 16 * static_cast<size_t>(d))));
      const __m512i spread = _mm512_maskz_permutexvar_epi8(even_bytes, index_v, bytes);
      const __m512i digit = _mm512_and_si512(_mm512_srlv_epi16(spread, shift_v), low);
      acc = _mm512_add_epi16(_mm512_mullo_epi16(acc, radix), digit);
    }
    _mm512_storeu_si512(out + b * kRadixBlockBytes, acc);
  }
}

// The exponent-all-ones lanes of 16 values.
inline __mmask16 NonFiniteMask(__m512i v, __m512i exponent) {
  return _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, exponent), exponent);
}

// Four vectors per iteration: independent loads and compares keep the loop at memory speed.
bool Fp32AnyNonFiniteAvx512(const uint8_t* data, size_t n) {
  const __m512i exponent = _mm512_set1_epi32(0x7f800000);
  __mmask16 bad = 0;
  size_t k = 0;
  for (; k + 64 <= n; k += 64) {
    const uint8_t* p = data + 4 * k;
    const __mmask16 b0 = NonFiniteMask(_mm512_loadu_si512(p), exponent);
    const __mmask16 b1 = NonFiniteMask(_mm512_loadu_si512(p + 64), exponent);
    const __mmask16 b2 = NonFiniteMask(_mm512_loadu_si512(p + 128), exponent);
    const __mmask16 b3 = NonFiniteMask(_mm512_loadu_si512(p + 192), exponent);
    bad |= b0 | b1 | b2 | b3;
  }
  for (; k + 16 <= n; k += 16) bad |= NonFiniteMask(_mm512_loadu_si512(data + 4 * k), exponent);
  return bad != 0 || Fp32AnyNonFiniteScalar(data + 4 * k, n - k);
}

void Fp32AddAvx512(const uint8_t* data, size_t n, float* out) {
  size_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 v = _mm512_loadu_ps(data + 4 * k);
    _mm512_storeu_ps(out + k, _mm512_add_ps(_mm512_loadu_ps(out + k), v));
  }
  Fp32AddScalar(data + 4 * k, n - k, out + k);
}

bool Fp32DivideAvx512(float* sums, size_t n, float divisor) {
  const __m512 d = _mm512_set1_ps(divisor);
  const __m512i exponent = _mm512_set1_epi32(0x7f800000);
  __mmask16 bad = 0;
  size_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m512 q = _mm512_div_ps(_mm512_loadu_ps(sums + k), d);
    _mm512_storeu_ps(sums + k, q);
    bad |= NonFiniteMask(_mm512_castps_si512(q), exponent);
  }
  const bool tail_finite = Fp32DivideScalar(sums + k, n - k, divisor);
  return bad == 0 && tail_finite;
}

}  // namespace

const CodecKernels& Avx512Kernels() {
  static constexpr CodecKernels kKernels = {
      StatsAvx512,
      TernarizeAvx512,
      DecodeTernaryAddAvx512,
      TernaryCodesAvx512<true>,
      TernaryCodesAvx512<false>,
      HasInvalidTernaryCodeAvx512,
      IntSumMaxFieldAvx512,
      DecodeIntSumAvx512<true>,
      DecodeIntSumAvx512<false>,
      EncodeIntSumAvx512,
      AddTernaryNibblesAvx512,
      TernaryNibblesAvx512<true>,
      RadixMaxWordAvx512,
      DecodeIntSumRadixAvx512<true>,
      DecodeIntSumRadixAvx512<false>,
      PackNibblesRadixAvx512,
      Fp32AnyNonFiniteAvx512,
      Fp32AddAvx512,
      Fp32DivideAvx512,
  };
  return kKernels;
}

}  // namespace ternps::common::internal
