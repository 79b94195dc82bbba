// `ternps-bench codec --device cuda`: CUDA codec throughput against a device-to-device copy in
// the same run (JSON lines). Built only with CUDA.
#ifndef TERNPS_WORKER_BENCH_CODEC_CUDA_BENCH_H_
#define TERNPS_WORKER_BENCH_CODEC_CUDA_BENCH_H_

#include <cstdint>
#include <vector>

namespace ternps::bench {

// Runs the device rows for each element count, and with `check` compares the device's statistics,
// codes and decoded values with the CPU codec's for a partition of that many elements (rows
// "cuda_check"); returns the process exit code (1 if a check failed).
int RunCodecCudaBench(const std::vector<uint64_t>& elements, int repeats, int contributors,
                      bool check);

}  // namespace ternps::bench

#endif  // TERNPS_WORKER_BENCH_CODEC_CUDA_BENCH_H_
