#include "worker/bench/worker_bench.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "ternps/worker.h"
#include "worker/bench/model_profiles.h"

ABSL_DECLARE_FLAG(std::string, profile);
ABSL_DECLARE_FLAG(int, steps);
ABSL_DECLARE_FLAG(int, worker_threads);
ABSL_DECLARE_FLAG(uint64_t, max_call_bytes);
ABSL_DECLARE_FLAG(uint32_t, partition_elements);
ABSL_DECLARE_FLAG(int, calls_in_flight);
ABSL_DECLARE_FLAG(int, channels_per_shard);
ABSL_DECLARE_FLAG(bool, int_sum_radix);
ABSL_FLAG(std::string, shard_addresses, "",
          "worker: host:port of every shard, comma-separated, shard i at index i");
ABSL_FLAG(uint32_t, rank, 0, "worker: this worker's rank");
ABSL_FLAG(uint32_t, world_size, 1, "worker: number of workers in the job");
ABSL_FLAG(std::string, codec, "terngrad", "worker: terngrad | fp32");
ABSL_FLAG(std::string, job_id, "bench", "worker: job id (one per run)");
ABSL_FLAG(bool, timeline, true, "worker: print a worker_step row per measured step");

namespace ternps::bench {
namespace {

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

// Page faults (first touches of memory) of this process so far.
long MinorFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

}  // namespace

int RunWorkerBench() {
  absl::StatusOr<std::vector<worker::TensorInfo>> tensors =
      ModelProfile(absl::GetFlag(FLAGS_profile));
  if (!tensors.ok()) {
    std::fprintf(stderr, "ternps-bench worker: %s\n",
                 std::string(tensors.status().message()).c_str());
    return 2;
  }
  const std::string codec = absl::GetFlag(FLAGS_codec);
  if (codec != "terngrad" && codec != "fp32") {
    std::fprintf(stderr, "ternps-bench worker: --codec must be terngrad or fp32\n");
    return 2;
  }
  worker::WorkerOptions options;
  options.job_id = absl::GetFlag(FLAGS_job_id);
  options.rank = absl::GetFlag(FLAGS_rank);
  options.world_size = absl::GetFlag(FLAGS_world_size);
  options.shards = absl::StrSplit(absl::GetFlag(FLAGS_shard_addresses), ',', absl::SkipEmpty());
  options.tensors = *tensors;
  options.codec.codec = codec == "fp32" ? worker::CodecKind::kFp32 : worker::CodecKind::kTernGrad;
  options.codec.seed = 1;
  options.codec.partition_elements = absl::GetFlag(FLAGS_partition_elements);
  options.codec.int_sum_radix = absl::GetFlag(FLAGS_int_sum_radix);
  options.threads = absl::GetFlag(FLAGS_worker_threads);
  options.max_call_bytes = absl::GetFlag(FLAGS_max_call_bytes);
  options.calls_in_flight_per_shard = absl::GetFlag(FLAGS_calls_in_flight);
  options.channels_per_shard = absl::GetFlag(FLAGS_channels_per_shard);
  const int steps = absl::GetFlag(FLAGS_steps);
  if (options.shards.empty() || steps < 1) {
    std::fprintf(stderr, "ternps-bench worker: --shard_addresses and --steps >= 1 are required\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<worker::Worker>> w = worker::Worker::Connect(options);
  if (!w.ok()) {
    std::fprintf(stderr, "ternps-bench worker: %s\n", w.status().ToString().c_str());
    return 1;
  }
  // Synthetic gradients: Gaussian with a per-tensor scale. Each step's averages are the next
  // step's gradients (restoring 4 bytes per element each step would put a memcpy of the whole
  // model on every worker's critical path, which a framework does not have); the work of a step
  // does not depend on the values.
  std::mt19937_64 rng(77 + options.rank);
  std::vector<std::vector<float>> grads;
  for (const auto& t : *tensors) {
    std::normal_distribution<float> normal(0.0f, 1e-3f * (1 + t.elements % 7));
    std::vector<float> v(t.elements);
    for (float& x : v) x = normal(rng);
    grads.push_back(std::move(v));
  }
  std::vector<absl::Span<float>> spans;
  for (auto& g : grads) spans.push_back(absl::MakeSpan(g));
  std::vector<double> seconds;
  double cpu_total = 0.0;
  uint64_t sent = 0, received = 0, dense = 0;
  for (int s = 0; s <= steps; ++s) {
    const double cpu0 = CpuSeconds();
    const long faults0 = MinorFaults();
    if (absl::Status st = (*w)->Step(spans); !st.ok()) {
      std::fprintf(stderr, "ternps-bench worker: step %d: %s\n", s, st.ToString().c_str());
      return 1;
    }
    const double cpu = CpuSeconds() - cpu0;
    const long faults = MinorFaults() - faults0;
    if (s == 0) continue;  // warm-up: connections, buffers, first-touch
    const worker::StepStats stats = (*w)->last_step();
    seconds.push_back(stats.seconds);
    cpu_total += cpu;
    sent += stats.sent_bytes;
    received += stats.received_bytes;
    dense += stats.dense_bytes;
    if (absl::GetFlag(FLAGS_timeline)) {
      std::string calls;
      for (const worker::StepStats::Call& c : stats.calls) {
        absl::StrAppend(&calls, calls.empty() ? "" : ", ",
                        absl::StrFormat("{\"shard\": %u, \"sent\": %llu, \"received\": %llu, "
                                        "\"encoded\": %.6f, \"answered\": %.6f, \"decoded\": %.6f}",
                                        c.shard, static_cast<unsigned long long>(c.sent_bytes),
                                        static_cast<unsigned long long>(c.received_bytes),
                                        c.encoded, c.answered, c.decoded));
      }
      std::printf(
          "{\"bench\": \"worker_step\", \"rank\": %u, \"step\": %llu, \"seconds\": %.6f, "
          "\"cpu_seconds\": %.6f, \"page_faults\": %ld, \"statistics_end\": %.6f, "
          "\"scalers_end\": %.6f, \"calls\": [%s]}\n",
          options.rank, static_cast<unsigned long long>(stats.step), stats.seconds, cpu, faults,
          stats.statistics_end, stats.scalers_end, calls.c_str());
    }
  }
  const absl::Status left = (*w)->Leave();
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  double mean = 0.0;
  for (double v : seconds) mean += v;
  mean /= seconds.size();
  std::printf(
      "{\"bench\": \"worker\", \"profile\": \"%s\", \"codec\": \"%s\", \"rank\": %u, "
      "\"world_size\": %u, \"shards\": %zu, \"steps\": %d, \"step_seconds_mean\": %.6f, "
      "\"step_seconds_p50\": %.6f, \"sent_bytes_per_step\": %.0f, "
      "\"received_bytes_per_step\": %.0f, \"dense_bytes_per_step\": %.0f, "
      "\"cpu_seconds_per_step\": %.6f}\n",
      absl::GetFlag(FLAGS_profile).c_str(), codec.c_str(), options.rank, options.world_size,
      options.shards.size(), steps, mean, sorted[sorted.size() / 2], double(sent) / steps,
      double(received) / steps, double(dense) / steps, cpu_total / steps);
  std::fflush(stdout);
  if (!left.ok()) {
    std::fprintf(stderr, "ternps-bench worker: leave: %s\n", left.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace ternps::bench
