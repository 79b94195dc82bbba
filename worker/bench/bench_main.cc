// ternps-bench: benchmarks that print one JSON object per line.
//
//   ternps-bench codec [--elements=16777216] [--isa=all] [--repeats=5]
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
#include "worker/bench/codec_bench.h"

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "ternps benchmarks; one JSON object per line on stdout.\n"
      "usage: ternps-bench SUBCOMMAND [flags]\n"
      "subcommands:\n"
      "  codec   CPU codec throughput (encode, decode-accumulate) against memcpy and\n"
      "          memory_read references, single-threaded\n"
      "Run with --help for the flags.");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() != 2) {
    std::fprintf(stderr, "ternps-bench: expected one subcommand (codec); see --help\n");
    return 2;
  }
  const std::string_view sub = args[1];
  if (sub == "codec") return ternps::bench::RunCodecBench();
  std::fprintf(stderr, "ternps-bench: unknown subcommand '%s' (expected: codec)\n", args[1]);
  return 2;
}
