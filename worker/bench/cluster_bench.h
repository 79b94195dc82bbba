// `ternps-bench cluster`: S ternps-server processes and W in-process workers on loopback exchange
// synthetic gradients of a model profile, terngrad and fp32 in the same run. JSON lines on stdout.
#ifndef TERNPS_WORKER_BENCH_CLUSTER_BENCH_H_
#define TERNPS_WORKER_BENCH_CLUSTER_BENCH_H_

namespace ternps::bench {

// Runs the cluster benchmark with the flags of cluster_bench.cc; `argv0` locates ternps-server
// (next to ternps-bench unless --server_binary is given). Returns the process exit code.
int RunClusterBench(const char* argv0);

}  // namespace ternps::bench

#endif  // TERNPS_WORKER_BENCH_CLUSTER_BENCH_H_
