// The C++ side of the Python package's mixed-job test: a worker (libternps_worker) that steps
// deterministic synthetic gradients and prints, per step, a digest of the averages it received,
// so that tests/python/mixed_job_test.py can compare them with a Python worker's.
//
//   ternps_test_peer SHARDS RANK WORLD_SIZE JOB_ID STEPS CODEC
//
// Gradient element i of tensor t at step s for rank r: sin(0.37 i + 1.3 r + 0.71 s + t) * (1 + r),
// computed in double and rounded to float32 (the Python side computes the same with numpy).
// Prints "step S DIGEST" lines (64-bit FNV-1a over every average's float32 bytes, tensor order),
// then "done".
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "ternps/worker.h"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s SHARDS RANK WORLD_SIZE JOB_ID STEPS CODEC\n", argv[0]);
    return 2;
  }
  ternps::worker::WorkerOptions options;
  options.shards = absl::StrSplit(argv[1], ',');
  options.rank = static_cast<uint32_t>(std::atoi(argv[2]));
  options.world_size = static_cast<uint32_t>(std::atoi(argv[3]));
  options.job_id = argv[4];
  const int steps = std::atoi(argv[5]);
  options.codec.codec =
      std::string(argv[6]) == "fp32" ? ternps::CodecKind::kFp32 : ternps::CodecKind::kTernGrad;
  options.codec.seed = 7;
  options.tensors = {{"w", 20000}, {"b", 100}};
  options.threads = 1;
  auto worker = ternps::worker::Worker::Connect(options);
  if (!worker.ok()) {
    std::fprintf(stderr, "ternps_test_peer: %s\n", worker.status().ToString().c_str());
    return 1;
  }
  std::vector<std::vector<float>> grads;
  for (const auto& t : options.tensors) grads.emplace_back(t.elements);
  for (int s = 0; s < steps; ++s) {
    for (size_t t = 0; t < grads.size(); ++t) {
      for (size_t i = 0; i < grads[t].size(); ++i) {
        grads[t][i] = static_cast<float>(
            std::sin(0.37 * double(i) + 1.3 * options.rank + 0.71 * s + double(t)) *
            (1.0 + options.rank));
      }
    }
    std::vector<absl::Span<float>> spans;
    for (auto& g : grads) spans.emplace_back(g);
    if (absl::Status st = (*worker)->Step(spans); !st.ok()) {
      std::fprintf(stderr, "ternps_test_peer: step %d: %s\n", s, st.ToString().c_str());
      return 1;
    }
    uint64_t h = 0xcbf29ce484222325ull;
    for (const auto& g : grads) {
      const auto* bytes = reinterpret_cast<const unsigned char*>(g.data());
      for (size_t k = 0; k < 4 * g.size(); ++k) h = (h ^ bytes[k]) * 0x100000001b3ull;
    }
    std::printf("step %d %016llx\n", s, static_cast<unsigned long long>(h));
    std::fflush(stdout);
  }
  if (absl::Status st = (*worker)->Leave(); !st.ok()) {
    std::fprintf(stderr, "ternps_test_peer: leave: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("done\n");
  return 0;
}
