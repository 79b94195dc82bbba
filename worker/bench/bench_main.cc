// ternps-bench: benchmarks that print one JSON object per line.
//
//   ternps-bench codec [--elements=16777216] [--isa=all] [--repeats=5]
//   ternps-bench cluster [--profile=resnet50] [--workers=4] [--shards=2] [--steps=5]
//   ternps-bench worker --shard_addresses=H:P,... --rank=R --world_size=W [--codec=terngrad]
//
// Each figure is compared against reference rows (memcpy, memory_read) measured in the same
// process, so ratios hold on a noisy machine.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "common/util/flags_help.h"
#include "common/util/process.h"
#include "worker/bench/cluster_bench.h"
#include "worker/bench/codec_bench.h"
#include "worker/bench/worker_bench.h"

int main(int argc, char** argv) {
  ternps::common::ConfigureBinaryProcess();
  ternps::common::SetUsage(
      "ternps benchmarks; one JSON object per line on stdout.\n"
      "usage: ternps-bench SUBCOMMAND [flags]\n"
      "subcommands:\n"
      "  codec   CPU codec throughput (encode, decode-accumulate) against memcpy and\n"
      "          memory_read references, single-threaded\n"
      "  cluster S ternps-server processes x W workers on loopback exchanging a model\n"
      "          profile's synthetic gradients, terngrad and fp32 in one run\n"
      "  worker  one worker process stepping a profile's synthetic gradients against\n"
      "          running shards (per-step timeline and CPU time)\n"
      "Run with --help for the flags.");
  std::vector<char*> args = ternps::common::ParseFlags(argc, argv, "/bench/");
  if (args.size() != 2) {
    std::fprintf(stderr,
                 "ternps-bench: expected one subcommand (codec, cluster or worker); see --help\n");
    return 2;
  }
  const std::string_view sub = args[1];
  if (sub == "codec") return ternps::bench::RunCodecBench();
  if (sub == "cluster") return ternps::bench::RunClusterBench(argv[0]);
  if (sub == "worker") return ternps::bench::RunWorkerBench();
  std::fprintf(stderr,
               "ternps-bench: unknown subcommand '%s' (expected: codec, cluster or worker)\n",
               args[1]);
  return 2;
}
