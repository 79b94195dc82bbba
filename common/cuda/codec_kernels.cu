#include "common/cuda/codec_kernels.cuh"

namespace ternps::common::cuda {
namespace {

constexpr unsigned kThreads = 256;

unsigned BlocksFor(size_t items, unsigned threads, unsigned cap) {
  const size_t blocks = (items + threads - 1) / threads;
  return static_cast<unsigned>(blocks < cap ? (blocks == 0 ? 1 : blocks) : cap);
}

// ---- statistics: per-block partial sums in a fixed order, then one block reduces them.

// Reduces every thread's (s, q, m) over the block in a fixed tree order into *out.
__device__ void BlockReduce(double s, double q, float m, DeviceStats* out) {
  __shared__ double sum[kThreads];
  __shared__ double sq[kThreads];
  __shared__ float mx[kThreads];
  sum[threadIdx.x] = s;
  sq[threadIdx.x] = q;
  mx[threadIdx.x] = m;
  __syncthreads();
  for (unsigned w = kThreads / 2; w > 0; w /= 2) {
    if (threadIdx.x < w) {
      sum[threadIdx.x] += sum[threadIdx.x + w];
      sq[threadIdx.x] += sq[threadIdx.x + w];
      mx[threadIdx.x] = fmaxf(mx[threadIdx.x], mx[threadIdx.x + w]);
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = DeviceStats{sum[0], sq[0], mx[0]};
}

__global__ void StatsPartialKernel(const float* g, size_t n, DeviceStats* partials) {
  double s = 0.0, q = 0.0;
  float m = 0.0f;
  const size_t stride = static_cast<size_t>(gridDim.x) * kThreads;
  for (size_t k = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x; k < n; k += stride) {
    const double x = g[k];
    s += x;
    q += x * x;
    m = fmaxf(m, fabsf(g[k]));
  }
  BlockReduce(s, q, m, &partials[blockIdx.x]);
}

__global__ void StatsFinalKernel(const DeviceStats* partials, unsigned count, DeviceStats* stats) {
  double s = 0.0, q = 0.0;
  float m = 0.0f;
  for (unsigned i = threadIdx.x; i < count; i += kThreads) {
    s += partials[i].sum;
    q += partials[i].sum_squares;
    m = fmaxf(m, partials[i].max_abs);
  }
  BlockReduce(s, q, m, stats);
}

// ---- ternarization: a thread is one Philox lane of a 128-element block (16 lanes), computes
// its block once and the 8 codes it serves (elements lane + 16w + 64h), stages them in shared
// memory, and the block packs 4 codes per byte with coalesced stores.

constexpr unsigned kLanesPerGroup = 16;
constexpr unsigned kGroupElements = 128;
constexpr unsigned kBlockElements = kThreads / kLanesPerGroup * kGroupElements;  // 2048

__global__ void TernarizeKernel(const float* g, size_t n, float limit, float scale, TernaryKey key,
                                uint8_t* out) {
  __shared__ uint8_t codes[kBlockElements];
  const unsigned lane = threadIdx.x % kLanesPerGroup;
  const unsigned group = threadIdx.x / kLanesPerGroup;
  const size_t bytes = (n + 3) / 4;
  for (size_t base = static_cast<size_t>(blockIdx.x) * kBlockElements; base < n;
       base += static_cast<size_t>(gridDim.x) * kBlockElements) {
    const size_t e0 = base + static_cast<size_t>(group) * kGroupElements;
    if (e0 < n) {
      const Philox4x32 block = TernaryBlock(key, e0 + lane);
#pragma unroll
      for (unsigned j = 0; j < 8; ++j) {
        const unsigned m = lane + 16 * (j & 3) + 64 * (j >> 2);
        const size_t e = e0 + m;
        uint8_t code = 0;
        if (e < n) {
          const float x = g[e];
          code = static_cast<uint8_t>(
              TernaryCode(x, TernaryThreshold(x, limit, scale), TernaryDraw(block, e)));
        }
        codes[group * kGroupElements + m] = code;
      }
    }
    __syncthreads();
    for (unsigned b = threadIdx.x; b < kBlockElements / 4; b += kThreads) {
      const size_t byte = base / 4 + b;
      if (byte < bytes) {
        const uint8_t* c = &codes[4 * b];
        // Elements past n were staged as 0 (or not at all, in a group past n: mask them).
        const size_t e = base + 4 * b;
        uint8_t v = 0;
#pragma unroll
        for (unsigned i = 0; i < 4; ++i) {
          if (e + i < n) v |= static_cast<uint8_t>(c[i] << (2 * i));
        }
        out[byte] = v;
      }
    }
    __syncthreads();
  }
}

// ---- decoding.

__device__ __forceinline__ uint32_t ReadFieldDevice(const uint8_t* data, size_t bytes, size_t k,
                                                    int bits) {
  const size_t bit = k * static_cast<size_t>(bits);
  const size_t byte = bit >> 3;
  uint32_t window = 0;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    if (byte + i < bytes) window |= static_cast<uint32_t>(data[byte + i]) << (8 * i);
  }
  return (window >> (bit & 7)) & ((1u << bits) - 1u);
}

__global__ void DecodeIntSumKernel(const uint8_t* data, size_t n, int bits, int contributors,
                                   float scale, bool accumulate, float* out) {
  const size_t bytes = (n * bits + 7) / 8;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t k = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    const int field = static_cast<int>(ReadFieldDevice(data, bytes, k, bits));
    const float v = __fmul_rn(static_cast<float>(field - contributors), scale);
    out[k] = __fadd_rn(accumulate ? out[k] : 0.0f, v);  // 0 + v: the CPU's zero-fill-and-add
  }
}

// INT_SUM_RADIX (common/codec/int_sum.h): element j's word and digit, then the digit by plain
// division (the layout is the CPU's; the value is computed exactly as DecodeIntSumKernel's).
__global__ void DecodeIntSumRadixKernel(const uint8_t* data, size_t n, int digits, int contributors,
                                        float scale, bool accumulate, float* out) {
  const uint32_t radix = 2u * static_cast<uint32_t>(contributors) + 1u;
  const size_t per_block = 32 * static_cast<size_t>(digits);
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t k = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    const size_t block = k / per_block, i = k % per_block;
    const size_t left = n - block * per_block;
    const size_t words = left >= per_block ? 32 : (left + digits - 1) / digits;
    const size_t w = block * 32 + i % words;
    uint32_t x = static_cast<uint32_t>(data[2 * w]) | static_cast<uint32_t>(data[2 * w + 1]) << 8;
    for (size_t d = i / words; d > 0; --d) x /= radix;
    const int field = static_cast<int>(x % radix);
    const float v = __fmul_rn(static_cast<float>(field - contributors), scale);
    out[k] = __fadd_rn(accumulate ? out[k] : 0.0f, v);  // 0 + v: the CPU's zero-fill-and-add
  }
}

__global__ void DecodeTernaryKernel(const uint8_t* data, size_t n, float scaler, bool accumulate,
                                    float* out) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t k = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    const uint32_t code = (data[k >> 2] >> (2 * (k & 3))) & 3u;
    const float v = code == 1 ? scaler : (code == 2 ? -scaler : 0.0f);
    out[k] = __fadd_rn(accumulate ? out[k] : 0.0f, v);  // 0 + v: the CPU's zero-fill-and-add
  }
}

__device__ __forceinline__ void SgdElement(float* w, float* v, float g, float lr, float momentum,
                                           float weight_decay) {
  const float vk = __fadd_rn(__fmul_rn(momentum, *v), __fadd_rn(g, __fmul_rn(weight_decay, *w)));
  *v = vk;
  *w = __fsub_rn(*w, __fmul_rn(lr, vk));
}

__global__ void SgdKernel(float* w, float* v, const float* g, size_t n, float lr, float momentum,
                          float weight_decay) {
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (size_t k = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += stride) {
    SgdElement(&w[k], &v[k], g[k], lr, momentum, weight_decay);
  }
}

__global__ void DelayKernel(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

constexpr unsigned kMaxGrid = 65535;

}  // namespace

cudaError_t LaunchStats(const float* g, size_t n, DeviceStats* partials, DeviceStats* stats,
                        cudaStream_t stream) {
  const unsigned blocks = BlocksFor(n, kThreads, kStatsBlocks);
  StatsPartialKernel<<<blocks, kThreads, 0, stream>>>(g, n, partials);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  StatsFinalKernel<<<1, kThreads, 0, stream>>>(partials, blocks, stats);
  return cudaGetLastError();
}

cudaError_t LaunchTernarize(const float* g, size_t n, float limit, float scale, TernaryKey key,
                            uint8_t* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  const unsigned blocks = BlocksFor(n, kBlockElements, kMaxGrid);
  TernarizeKernel<<<blocks, kThreads, 0, stream>>>(g, n, limit, scale, key, out);
  return cudaGetLastError();
}

cudaError_t LaunchDecodeIntSum(const uint8_t* data, size_t n, int bits, int contributors,
                               float scale, bool accumulate, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  DecodeIntSumKernel<<<BlocksFor(n, kThreads, kMaxGrid), kThreads, 0, stream>>>(
      data, n, bits, contributors, scale, accumulate, out);
  return cudaGetLastError();
}

cudaError_t LaunchDecodeIntSumRadix(const uint8_t* data, size_t n, int digits, int contributors,
                                    float scale, bool accumulate, float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  DecodeIntSumRadixKernel<<<BlocksFor(n, kThreads, kMaxGrid), kThreads, 0, stream>>>(
      data, n, digits, contributors, scale, accumulate, out);
  return cudaGetLastError();
}

cudaError_t LaunchDecodeTernary(const uint8_t* data, size_t n, float scaler, bool accumulate,
                                float* out, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  DecodeTernaryKernel<<<BlocksFor(n, kThreads, kMaxGrid), kThreads, 0, stream>>>(data, n, scaler,
                                                                                 accumulate, out);
  return cudaGetLastError();
}

cudaError_t LaunchSgd(float* w, float* v, const float* g, size_t n, float lr, float momentum,
                      float weight_decay, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  SgdKernel<<<BlocksFor(n, kThreads, kMaxGrid), kThreads, 0, stream>>>(w, v, g, n, lr, momentum,
                                                                       weight_decay);
  return cudaGetLastError();
}

cudaError_t LaunchDelay(long long cycles, cudaStream_t stream) {
  DelayKernel<<<1, 1, 0, stream>>>(cycles);
  return cudaGetLastError();
}

}  // namespace ternps::common::cuda
