#include "worker/bench/codec_bench.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "ternps/codec_config.h"
#include "ternps/config.h"
#if TERNPS_HAVE_CUDA
#include "worker/bench/codec_cuda_bench.h"
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_split.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/isa.h"
#include "common/codec/ternary.h"

ABSL_FLAG(uint64_t, elements, 16u << 20, "codec: float32 elements per gradient");
ABSL_FLAG(uint32_t, partition_elements, 0,
          "codec, cluster, worker: elements per partition, 0: the codec's default (codec: when "
          "encoding, TernGrad's default; cluster, worker: the job's codec.partition_elements)");
ABSL_FLAG(std::string, isa, "all",
          "codec: kernel sets to measure: all, or a comma list of scalar,avx2,avx512");
ABSL_FLAG(int, repeats, 5, "codec: timed repetitions per row; the fastest is reported");
ABSL_FLAG(int, contributors, 4, "codec: N of the INT_SUM decode rows");
ABSL_FLAG(std::string, device, "cpu", "codec: cpu | cuda (the CUDA kernels, if built)");
ABSL_FLAG(std::string, cuda_elements, "67108864,268435456",
          "codec --device=cuda: element counts, comma-separated");
ABSL_FLAG(bool, cuda_check, true,
          "codec --device=cuda: also check the device's results against the CPU codec at each "
          "count (rows \"cuda_check\"; exit 1 on a difference)");

namespace ternps::bench {
namespace {

using common::Isa;
using Clock = std::chrono::steady_clock;

template <typename F>
double BestSeconds(int repeats, F&& f) {
  f();  // warm-up: page faults, caches
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// Read-only pass over memory at full vector width: the single-core read bandwidth reference.
// Integer sums vectorize without reassociation concerns; the body is compiled once per target.
__attribute__((always_inline)) inline uint64_t ReadSumBody(const uint64_t* p, size_t n) {
  uint64_t acc[8] = {};
  for (size_t i = 0; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) acc[j] += p[i + j];
  }
  uint64_t s = 0;
  for (uint64_t a : acc) s += a;
  return s;
}
__attribute__((target("avx512f"))) uint64_t ReadSumAvx512(const uint64_t* p, size_t n) {
  return ReadSumBody(p, n);
}
__attribute__((target("avx2"))) uint64_t ReadSumAvx2(const uint64_t* p, size_t n) {
  return ReadSumBody(p, n);
}
uint64_t ReadSum(const uint64_t* p, size_t n) {
  if (common::IsaSupported(Isa::kAvx512)) return ReadSumAvx512(p, n);
  if (common::IsaSupported(Isa::kAvx2)) return ReadSumAvx2(p, n);
  return ReadSumBody(p, n);
}

struct Row {
  std::string bench;
  std::string isa;
  double seconds;
  double bytes;  // float32 bytes processed (input for encode, output for decode)
};

void Print(const Row& row, size_t elements, size_t partition_elements, double read_gbps,
           int repeats) {
  const double gbps = row.bytes / row.seconds / 1e9;
  std::printf(
      "{\"bench\": \"%s\", \"device\": \"cpu\", \"isa\": \"%s\", \"elements\": %zu, "
      "\"partition_elements\": %zu, \"threads\": 1, \"repeats\": %d, \"seconds\": %.6f, "
      "\"gbps\": %.3f, \"ratio_to_memory_read\": %.3f}\n",
      row.bench.c_str(), row.isa.c_str(), elements, partition_elements, repeats, row.seconds, gbps,
      read_gbps > 0 ? gbps / read_gbps : 1.0);
  std::fflush(stdout);
}

}  // namespace

int RunCodecBench() {
  if (absl::GetFlag(FLAGS_device) == "cuda") {
#if TERNPS_HAVE_CUDA
    std::vector<uint64_t> counts;
    for (absl::string_view c : absl::StrSplit(absl::GetFlag(FLAGS_cuda_elements), ',')) {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(c, &n) || n == 0 || n > (uint64_t{1} << 31)) {
        std::fprintf(stderr, "ternps-bench: --cuda_elements: bad count '%s'\n",
                     std::string(c).c_str());
        return 2;
      }
      counts.push_back(n);
    }
    return RunCodecCudaBench(counts, absl::GetFlag(FLAGS_repeats),
                             absl::GetFlag(FLAGS_contributors), absl::GetFlag(FLAGS_cuda_check));
#else
    std::fprintf(stderr, "ternps-bench: --device=cuda: this build has no CUDA (TERNPS_CUDA)\n");
    return 2;
#endif
  }
  if (absl::GetFlag(FLAGS_device) != "cpu") {
    std::fprintf(stderr, "ternps-bench: --device must be cpu or cuda\n");
    return 2;
  }
  const size_t n = absl::GetFlag(FLAGS_elements);
  CodecConfig terngrad;  // the codec measured here
  terngrad.partition_elements = absl::GetFlag(FLAGS_partition_elements);
  const size_t part = std::max<size_t>(4, PartitionElements(terngrad) / 4 * 4);
  const int repeats = std::max(1, absl::GetFlag(FLAGS_repeats));
  const int contributors = absl::GetFlag(FLAGS_contributors);
  if (n == 0 || n % 8 != 0) {
    std::fprintf(stderr, "ternps-bench codec: --elements must be a positive multiple of 8\n");
    return 2;
  }
  if (common::IntSumBits(contributors) == 0) {
    std::fprintf(stderr, "ternps-bench codec: --contributors must be in [1, 32767]\n");
    return 2;
  }
  std::vector<Isa> isas;
  const std::string isa_flag = absl::GetFlag(FLAGS_isa);
  if (isa_flag == "all") {
    isas = common::SupportedIsas();
  } else {
    for (absl::string_view piece : absl::StrSplit(isa_flag, ',')) {
      const std::string_view name(piece.data(), piece.size());
      absl::StatusOr<Isa> isa = common::ParseIsa(name);
      if (!isa.ok() || *isa == Isa::kAuto || !common::IsaSupported(*isa)) {
        std::fprintf(stderr, "ternps-bench codec: --isa: '%.*s' is unknown or unsupported here\n",
                     static_cast<int>(name.size()), name.data());
        return 2;
      }
      isas.push_back(*isa);
    }
  }

  std::mt19937_64 rng(20261128);
  std::normal_distribution<float> normal(0.0f, 1e-3f);
  std::vector<float> grad(n), out(n), copy(n);
  for (float& g : grad) g = normal(rng);
  const double dense_bytes = 4.0 * static_cast<double>(n);

  uint64_t sink = 0;
  const double read_s = BestSeconds(
      repeats, [&] { sink += ReadSum(reinterpret_cast<const uint64_t*>(grad.data()), n / 2); });
  const double read_gbps = dense_bytes / read_s / 1e9;
  Print({"memory_read", "auto", read_s, dense_bytes}, n, part, read_gbps, repeats);
  const double copy_s =
      BestSeconds(repeats, [&] { std::memcpy(copy.data(), grad.data(), n * sizeof(float)); });
  Print({"memcpy", "auto", copy_s, dense_bytes}, n, part, read_gbps, repeats);

  std::vector<uint8_t> packed(common::TernaryBytes(n));
  std::vector<float> scalers((n + part - 1) / part);
  for (Isa isa : isas) {
    const std::string name(common::IsaName(isa));
    // Full encode per partition: statistics pass + clip + ternarize + pack.
    bool ok = true;
    const double enc_s = BestSeconds(repeats, [&] {
      for (size_t p = 0, off = 0; off < n; ++p, off += part) {
        const size_t len = std::min(part, n - off);
        absl::StatusOr<float> s = common::EncodeTernary(
            absl::MakeConstSpan(grad.data() + off, len), common::kDefaultClipSigmas,
            {.seed = 1, .worker = 0, .step = 7, .partition = static_cast<uint32_t>(p)},
            absl::MakeSpan(packed.data() + off / 4, common::TernaryBytes(len)), isa);
        scalers[p] = s.ok() ? *s : -1.0f;
      }
    });
    Print({"codec_encode", name, enc_s, dense_bytes}, n, part, read_gbps, repeats);
    // Its two halves, for diagnosis: the statistics pass, and ternarize + pack given the scaler.
    const double stats_s = BestSeconds(repeats, [&] {
      for (size_t off = 0; off < n; off += part) {
        const size_t len = std::min(part, n - off);
        sink += common::ComputeStats(absl::MakeConstSpan(grad.data() + off, len), isa)->elements;
      }
    });
    Print({"codec_encode_stats", name, stats_s, dense_bytes}, n, part, read_gbps, repeats);
    const double tern_s = BestSeconds(repeats, [&] {
      for (size_t p = 0, off = 0; off < n; ++p, off += part) {
        const size_t len = std::min(part, n - off);
        ok &= common::Ternarize(
                  absl::MakeConstSpan(grad.data() + off, len), 2.5e-3f, scalers[p],
                  {.seed = 1, .worker = 0, .step = 7, .partition = static_cast<uint32_t>(p)},
                  absl::MakeSpan(packed.data() + off / 4, common::TernaryBytes(len)), 0, isa)
                  .ok();
      }
    });
    Print({"codec_encode_ternarize", name, tern_s, dense_bytes}, n, part, read_gbps, repeats);

    // Decode-accumulate of one whole TERNARY_2BIT gradient (validation included).
    const double dec_s = BestSeconds(repeats, [&] {
      ok &= common::DecodeTernaryAdd(packed, 1e-3f, absl::MakeSpan(out), isa).ok();
    });
    Print({"codec_decode_ternary", name, dec_s, dense_bytes}, n, part, read_gbps, repeats);

    // Decode-accumulate of INT_SUM with N contributors (validation included).
    std::vector<uint8_t> sums_wire(common::IntSumBytes(n, contributors));
    {
      std::vector<int16_t> sums(n);
      std::uniform_int_distribution<int> k(-contributors, contributors);
      for (int16_t& s : sums) s = static_cast<int16_t>(k(rng));
      ok &= common::EncodeIntSum(sums, contributors, absl::MakeSpan(sums_wire)).ok();
    }
    const double sum_s = BestSeconds(repeats, [&] {
      ok &= common::DecodeIntSumAdd(sums_wire, contributors, 1e-3f, absl::MakeSpan(out), isa).ok();
    });
    Print({"codec_decode_int_sum", name, sum_s, dense_bytes}, n, part, read_gbps, repeats);

    // The shard's exact integer sum of one worker's codes (validation included).
    std::vector<int16_t> acc(n);
    const double add_s = BestSeconds(
        repeats, [&] { ok &= common::AddTernaryCodes(packed, absl::MakeSpan(acc), isa).ok(); });
    Print({"codec_add_codes", name, add_s, dense_bytes}, n, part, read_gbps, repeats);

    // The shard's INT_SUM packing for N = 4 (4-bit fields, the common downlink) of those sums
    // (which the repeats above accumulated: clamped back into [-4, 4]).
    for (int16_t& sum : acc) sum = std::clamp<int16_t>(sum, -4, 4);
    std::vector<uint8_t> int_sum(common::IntSumBytes(n, 4));
    const double pack_s = BestSeconds(
        repeats, [&] { ok &= common::EncodeIntSum(acc, 4, absl::MakeSpan(int_sum), isa).ok(); });
    Print({"codec_encode_int_sum", name, pack_s, dense_bytes}, n, part, read_gbps, repeats);
    // FP32: the shard's check of a push and its sum of a second push; the worker's one-pass
    // check-and-copy of an answer.
    const absl::Span<const uint8_t> fp32_wire(reinterpret_cast<const uint8_t*>(grad.data()),
                                              common::Fp32Bytes(n));
    const double check_s =
        BestSeconds(repeats, [&] { ok &= common::ValidateFp32(fp32_wire, n, 0, isa).ok(); });
    Print({"codec_check_fp32", name, check_s, dense_bytes}, n, part, read_gbps, repeats);
    const double add_fp32_s = BestSeconds(
        repeats, [&] { common::AddValidatedFp32(fp32_wire, absl::MakeSpan(out), isa); });
    Print({"codec_add_fp32", name, add_fp32_s, dense_bytes}, n, part, read_gbps, repeats);
    const double one_pass_s = BestSeconds(repeats, [&] {
      ok &= common::DecodeFp32OnePass(fp32_wire, absl::MakeSpan(out), 0, isa).ok();
    });
    Print({"codec_decode_fp32", name, one_pass_s, dense_bytes}, n, part, read_gbps, repeats);
    if (!ok || std::any_of(scalers.begin(), scalers.end(), [](float s) { return s < 0; })) {
      std::fprintf(stderr, "ternps-bench codec: a codec call failed (isa %s)\n", name.c_str());
      return 1;
    }
  }
  if (sink == 42) std::fprintf(stderr, " ");  // keeps the read pass from being optimized away
  return 0;
}

}  // namespace ternps::bench
