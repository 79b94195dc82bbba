// `ternps-bench worker`: one worker process stepping a model profile's synthetic gradients
// against running shards (the emulated-network benchmark, tests/bench/netbench.sh, starts one per
// network namespace). Prints one JSON row per step with the step's timeline and CPU time, and a
// summary row.
#ifndef TERNPS_WORKER_BENCH_WORKER_BENCH_H_
#define TERNPS_WORKER_BENCH_WORKER_BENCH_H_

namespace ternps::bench {

int RunWorkerBench();

}  // namespace ternps::bench

#endif  // TERNPS_WORKER_BENCH_WORKER_BENCH_H_
