// `ternps-bench codec`: single-threaded CPU codec throughput, JSON lines on stdout.
#ifndef TERNPS_WORKER_BENCH_CODEC_BENCH_H_
#define TERNPS_WORKER_BENCH_CODEC_BENCH_H_

namespace ternps::bench {

// Runs the codec benchmark with the flags of codec_bench.cc; returns the process exit code.
int RunCodecBench();

}  // namespace ternps::bench

#endif  // TERNPS_WORKER_BENCH_CODEC_BENCH_H_
