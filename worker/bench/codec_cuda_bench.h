// `ternps-bench codec --device cuda`: CUDA codec throughput against a device-to-device copy in
// the same run (JSON lines). Built only with CUDA.
#ifndef TERNPS_WORKER_BENCH_CODEC_CUDA_BENCH_H_
#define TERNPS_WORKER_BENCH_CODEC_CUDA_BENCH_H_

#include <cstdint>
#include <vector>

namespace ternps::bench {

// Runs the device rows for each element count; returns the process exit code.
int RunCodecCudaBench(const std::vector<uint64_t>& elements, int repeats, int contributors);

}  // namespace ternps::bench

#endif  // TERNPS_WORKER_BENCH_CODEC_CUDA_BENCH_H_
