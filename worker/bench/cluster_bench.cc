#include "worker/bench/cluster_bench.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/metrics/metrics.h"
#include "ternps/worker.h"
#include "worker/bench/model_profiles.h"

ABSL_FLAG(std::string, profile, "resnet50", "cluster: resnet50 | alexnet | vgg16");
ABSL_FLAG(int, workers, 4, "cluster: number of workers W (threads of this process)");
ABSL_FLAG(int, shards, 2, "cluster: number of shards S (ternps-server processes)");
ABSL_FLAG(int, steps, 5, "cluster: measured steps per codec (after one warm-up step)");
ABSL_FLAG(std::string, codecs, "terngrad,fp32", "cluster: codecs to run, in order");
ABSL_FLAG(int, worker_threads, 1, "cluster: encode/decode threads per worker");
ABSL_FLAG(uint64_t, max_call_bytes, 512u << 10, "cluster, worker: payload bytes per PushPull call");
ABSL_FLAG(int, calls_in_flight, ternps::worker::WorkerOptions{}.calls_in_flight_per_shard,
          "cluster, worker: PushPull calls in flight per shard (0: no limit; see WorkerOptions)");
ABSL_FLAG(bool, int_sum_radix, ternps::CodecConfig{}.int_sum_radix,
          "cluster, worker: TernGrad averages as INT_SUM_RADIX where smaller (N = 4: 3.2 bits per "
          "element against 4)");
ABSL_FLAG(int, channels_per_shard, ternps::worker::WorkerOptions{}.channels_per_shard,
          "cluster, worker: TCP connections per shard (see WorkerOptions)");
ABSL_FLAG(std::string, metrics, "off",
          "cluster: off | on (shards and workers export Prometheus metrics) | both (each codec "
          "off then on, plus a cluster_metrics_overhead row)");
ABSL_FLAG(std::string, server_binary, "", "cluster: ternps-server path (default: next to this)");
ABSL_FLAG(uint32_t, snapshot_interval, 0,
          "cluster: recovery snapshots every this many steps (0: off); each worker's step time "
          "then includes its OfferState (the state is its gradient buffers, one slot)");
ABSL_FLAG(bool, recover, false,
          "cluster: after the steps, the last rank is replaced by a fresh worker that recovers "
          "the model from the shards (needs --snapshot_interval); prints a cluster_recovery line "
          "with the time it took");
ABSL_FLAG(std::string, server_args, "", "cluster: extra ternps-server flags, comma-separated");

ABSL_DECLARE_FLAG(uint32_t, partition_elements);

namespace ternps::bench {
namespace {

// One ternps-server child process on 127.0.0.1 with a port chosen by the kernel.
class ServerProcess {
 public:
  ~ServerProcess() { Stop(); }

  absl::Status Start(const std::string& binary, int index, int count, const std::string& dir,
                     const std::vector<std::string>& extra) {
    port_file_ = absl::StrCat(dir, "/shard-", index, ".port");
    std::remove(port_file_.c_str());  // a previous run's file would name a dead port
    std::vector<std::string> args = {binary,
                                     "--listen=127.0.0.1:0",
                                     absl::StrCat("--port_file=", port_file_),
                                     absl::StrCat("--shard_index=", index),
                                     absl::StrCat("--shard_count=", count),
                                     "--quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, binary.c_str(), nullptr, nullptr, argv.data(), environ) != 0) {
      pid_ = 0;
      return absl::NotFoundError(absl::StrCat("cannot start ", binary));
    }
    // Bounded wait for the port file (the server writes it once serving).
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (absl::Now() < deadline) {
      std::ifstream in(port_file_);
      int port = 0;
      if (in >> port && port > 0) {
        address_ = absl::StrCat("127.0.0.1:", port);
        return absl::OkStatus();
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        return absl::UnavailableError(absl::StrCat(binary, " exited during start-up"));
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
    return absl::DeadlineExceededError(absl::StrCat(binary, " did not publish its port in 30 s"));
  }
  const std::string& address() const { return address_; }
  // Peak resident set (VmHWM) in bytes.
  uint64_t PeakRssBytes() const {
    std::ifstream in(absl::StrCat("/proc/", pid_, "/status"));
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmHWM:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
    }
    return 0;
  }
  void Stop() {
    if (pid_ == 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = 0;
  }

 private:
  pid_t pid_ = 0;
  std::string port_file_;
  std::string address_;
};

std::string ServerBinary(const char* argv0) {
  std::string flag = absl::GetFlag(FLAGS_server_binary);
  if (!flag.empty()) return flag;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string path = n > 0 ? std::string(self, n) : std::string(argv0);
  return path.substr(0, path.rfind('/') + 1) + "ternps-server";
}

struct WorkerResult {
  absl::Status status;
  std::vector<double> step_seconds;
  uint64_t sent = 0, received = 0, dense = 0;
  double recover_seconds = -1.0;  // --recover, the last rank: its replacement's Recover
  uint64_t replayed = 0;          // steps it replayed
};

// --recover: joins the running job as `options.rank` again (a new session) and recovers the
// model into zeroed buffers (the bench's state is synthetic: the time is what is measured).
absl::Status ReplaceAndRecover(const worker::WorkerOptions& options,
                               const std::vector<worker::TensorInfo>& tensors, WorkerResult& out) {
  auto w = worker::Worker::Connect(options);
  if (!w.ok()) return w.status();
  std::vector<std::vector<float>> state, grads;
  std::vector<absl::Span<float>> state_spans, grad_spans;
  for (const auto& t : tensors) {
    state.emplace_back(t.elements, 0.0f);
    grads.emplace_back(t.elements, 0.0f);
  }
  for (auto& v : state) state_spans.push_back(absl::MakeSpan(v));
  for (auto& v : grads) grad_spans.push_back(absl::MakeSpan(v));
  const absl::Time start = absl::Now();
  absl::Status st = (*w)->Recover(state_spans, grad_spans, [&](uint64_t) {
    ++out.replayed;
    return absl::OkStatus();
  });
  out.recover_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  if (!st.ok()) return st;
  return (*w)->Leave();
}

// Runs one codec; returns the mean step time.
absl::StatusOr<double> RunCodec(const std::string& codec,
                                const std::vector<worker::TensorInfo>& tensors,
                                const std::string& server_binary, const std::string& dir, int run,
                                bool metrics) {
  const int shards = absl::GetFlag(FLAGS_shards);
  const int world = absl::GetFlag(FLAGS_workers);
  const int steps = absl::GetFlag(FLAGS_steps);
  std::vector<std::string> extra =
      absl::StrSplit(absl::GetFlag(FLAGS_server_args), ',', absl::SkipEmpty());
  if (metrics) extra.push_back("--metrics_address=127.0.0.1:0");
  std::vector<std::unique_ptr<ServerProcess>> servers;
  std::vector<std::string> addresses;
  for (int s = 0; s < shards; ++s) {
    servers.push_back(std::make_unique<ServerProcess>());
    if (absl::Status st = servers.back()->Start(server_binary, s, shards, dir, extra); !st.ok()) {
      return st;
    }
    addresses.push_back(servers.back()->address());
  }
  uint64_t elements = 0;
  for (const auto& t : tensors) elements += t.elements;
  std::vector<WorkerResult> results(world);
  std::vector<std::unique_ptr<common::MetricsEndpoint>> endpoints(world);
  std::vector<std::unique_ptr<common::WorkerMetrics>> worker_metrics(world);
  if (metrics) {
    for (int r = 0; r < world; ++r) {
      auto endpoint = common::MetricsEndpoint::Start("127.0.0.1:0");
      if (!endpoint.ok()) return endpoint.status();
      worker_metrics[r] = common::WorkerMetrics::Create(*(*endpoint)->registry(), r);
      endpoints[r] = *std::move(endpoint);
    }
  }
  const bool recover = absl::GetFlag(FLAGS_recover);
  absl::Notification recovered;
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      // The last rank tells the others when its replacement has recovered (or it failed).
      struct NotifyAtExit {
        absl::Notification* n;
        ~NotifyAtExit() {
          if (n != nullptr) n->Notify();
        }
      } notify_at_exit{recover && r + 1 == world ? &recovered : nullptr};
      WorkerResult& out = results[r];
      worker::WorkerOptions options;
      options.job_id = absl::StrCat("bench-", codec, "-", run);
      options.rank = static_cast<uint32_t>(r);
      options.world_size = static_cast<uint32_t>(world);
      options.shards = addresses;
      options.tensors = tensors;
      options.codec.codec =
          codec == "fp32" ? worker::CodecKind::kFp32 : worker::CodecKind::kTernGrad;
      options.threads = absl::GetFlag(FLAGS_worker_threads);
      options.max_call_bytes = absl::GetFlag(FLAGS_max_call_bytes);
      options.calls_in_flight_per_shard = absl::GetFlag(FLAGS_calls_in_flight);
      options.channels_per_shard = absl::GetFlag(FLAGS_channels_per_shard);
      options.codec.partition_elements = absl::GetFlag(FLAGS_partition_elements);
      options.codec.int_sum_radix = absl::GetFlag(FLAGS_int_sum_radix);
      options.snapshot_interval = absl::GetFlag(FLAGS_snapshot_interval);
      options.state_slots = 1;
      auto w = worker::Worker::Connect(options);
      if (!w.ok()) {
        out.status = w.status();
        return;
      }
      // Synthetic gradients: Gaussian with a per-tensor scale, a pristine copy restored each step.
      std::mt19937_64 rng(77 + r);
      std::vector<std::vector<float>> pristine, grads;
      for (const auto& t : tensors) {
        std::normal_distribution<float> normal(0.0f, 1e-3f * (1 + t.elements % 7));
        std::vector<float> v(t.elements);
        for (float& x : v) x = normal(rng);
        pristine.push_back(v);
        grads.push_back(std::move(v));
      }
      std::vector<absl::Span<float>> spans;
      for (auto& g : grads) spans.push_back(absl::MakeSpan(g));
      for (int s = 0; s <= steps; ++s) {
        for (size_t i = 0; i < grads.size(); ++i) {
          std::copy(pristine[i].begin(), pristine[i].end(), grads[i].begin());
        }
        if (absl::Status st = (*w)->Step(spans); !st.ok()) {
          out.status = st;
          return;
        }
        // The recovery upload (a no-op unless this worker is due), counted in the step.
        const absl::Time offer_start = absl::Now();
        if (absl::Status st = (*w)->OfferState(spans); !st.ok()) {
          out.status = st;
          return;
        }
        const double offer_seconds = absl::ToDoubleSeconds(absl::Now() - offer_start);
        if (s == 0) continue;  // warm-up
        worker::StepStats stats = (*w)->last_step();
        stats.seconds += offer_seconds;
        if (metrics) {
          worker_metrics[r]->RecordStep(stats.seconds, 0.0, stats.encode_seconds,
                                        stats.communication_seconds, stats.sent_bytes,
                                        stats.received_bytes, stats.dense_bytes);
        }
        out.step_seconds.push_back(stats.seconds);
        out.sent += stats.sent_bytes;
        out.received += stats.received_bytes;
        out.dense += stats.dense_bytes;
      }
      if (recover && r + 1 < world) recovered.WaitForNotification();
      if (recover && r + 1 == world) {
        // The last rank is replaced, as after kill -9 (its old session is abandoned, not left):
        // the new one joins the running job and rebuilds the model from the shards.
        out.status = ReplaceAndRecover(options, tensors, out);
        return;
      }
      out.status = (*w)->Leave();
    });
  }
  for (auto& t : threads) t.join();
  for (const WorkerResult& r : results) {
    if (!r.status.ok()) return r.status;
  }
  uint64_t rss = 0;
  for (const auto& s : servers) rss = std::max(rss, s->PeakRssBytes());
  for (auto& s : servers) s->Stop();
  std::vector<double> all;
  uint64_t sent = 0, received = 0, dense = 0;
  for (const WorkerResult& r : results) {
    all.insert(all.end(), r.step_seconds.begin(), r.step_seconds.end());
    sent += r.sent;
    received += r.received;
    dense += r.dense;
  }
  std::sort(all.begin(), all.end());
  double mean = 0.0;
  for (double v : all) mean += v;
  mean /= all.size();
  const double n = double(world) * steps;
  const double up = sent / n, down = received / n, dense_step = dense / n;
  // The state a shard needs by design: its share of the aggregation buffers for two steps
  // (int16 sums with sharing, float32 otherwise), plus every worker's request and answer of one
  // step in flight.
  const double sum_bytes = codec == "fp32" ? 4.0 : 2.0;
  const double design_state =
      2.0 * sum_bytes * double(elements) / shards + double(world) * (up + down) / shards;
  std::printf(
      "{\"bench\": \"cluster\", \"profile\": \"%s\", \"codec\": \"%s\", \"metrics\": %s, "
      "\"workers\": %d, "
      "\"shards\": %d, \"elements\": %llu, \"steps\": %d, \"step_seconds\": %.6f, "
      "\"step_seconds_p50\": %.6f, \"step_seconds_max\": %.6f, "
      "\"uplink_bytes_per_worker_step\": %.0f, \"downlink_bytes_per_worker_step\": %.0f, "
      "\"dense_bytes_per_worker_step\": %.0f, \"uplink_ratio\": %.2f, \"downlink_ratio\": %.2f, "
      "\"goodput_gbps\": %.4f, \"wire_up_gbps_per_pair\": %.4f, "
      "\"wire_down_gbps_per_pair\": %.4f, \"server_peak_rss_bytes\": %llu, "
      "\"server_design_state_bytes\": %.0f, \"rss_to_design_state\": %.2f}\n",
      absl::GetFlag(FLAGS_profile).c_str(), codec.c_str(), metrics ? "true" : "false", world,
      shards, static_cast<unsigned long long>(elements), steps, mean, all[all.size() / 2],
      all.back(), up, down, dense_step, dense_step / up, dense_step / down, dense_step / mean / 1e9,
      up / shards / mean / 1e9, down / shards / mean / 1e9, static_cast<unsigned long long>(rss),
      design_state, rss / design_state);
  if (recover) {
    const WorkerResult& last = results.back();
    std::printf(
        "{\"bench\": \"cluster_recovery\", \"profile\": \"%s\", \"codec\": \"%s\", "
        "\"workers\": %d, \"shards\": %d, \"elements\": %llu, \"snapshot_interval\": %u, "
        "\"to_step\": %d, \"replayed_steps\": %llu, \"recover_seconds\": %.3f}\n",
        absl::GetFlag(FLAGS_profile).c_str(), codec.c_str(), world, shards,
        static_cast<unsigned long long>(elements), absl::GetFlag(FLAGS_snapshot_interval),
        steps + 1, static_cast<unsigned long long>(last.replayed), last.recover_seconds);
  }
  std::fflush(stdout);
  return mean;
}

}  // namespace

int RunClusterBench(const char* argv0) {
  absl::StatusOr<std::vector<worker::TensorInfo>> tensors =
      ModelProfile(absl::GetFlag(FLAGS_profile));
  if (!tensors.ok()) {
    std::fprintf(stderr, "ternps-bench: %s\n", std::string(tensors.status().message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_workers) < 1 || absl::GetFlag(FLAGS_shards) < 1 ||
      absl::GetFlag(FLAGS_steps) < 1) {
    std::fprintf(stderr, "ternps-bench: --workers, --shards and --steps must be >= 1\n");
    return 2;
  }
  char dir_template[] = "/tmp/ternps-bench.XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) {
    std::fprintf(stderr, "ternps-bench: cannot create a temporary directory\n");
    return 1;
  }
  const std::string binary = ServerBinary(argv0);
  const std::string metrics_mode = absl::GetFlag(FLAGS_metrics);
  if (metrics_mode != "off" && metrics_mode != "on" && metrics_mode != "both") {
    std::fprintf(stderr, "ternps-bench: --metrics must be off, on or both\n");
    return 2;
  }
  std::vector<bool> modes;
  if (metrics_mode != "on") modes.push_back(false);
  if (metrics_mode != "off") modes.push_back(true);
  int run = 0;
  for (absl::string_view codec : absl::StrSplit(absl::GetFlag(FLAGS_codecs), ',')) {
    if (codec != "terngrad" && codec != "fp32") {
      std::fprintf(stderr, "ternps-bench: --codecs: '%s' is not terngrad or fp32\n",
                   std::string(codec).c_str());
      return 2;
    }
    std::vector<double> means;
    for (const bool metrics : modes) {
      std::fprintf(stderr, "ternps-bench: cluster %s %s, %d workers x %d shards, metrics %s...\n",
                   absl::GetFlag(FLAGS_profile).c_str(), std::string(codec).c_str(),
                   absl::GetFlag(FLAGS_workers), absl::GetFlag(FLAGS_shards),
                   metrics ? "on" : "off");
      absl::StatusOr<double> mean =
          RunCodec(std::string(codec), *tensors, binary, dir, run++, metrics);
      if (!mean.ok()) {
        std::fprintf(stderr, "ternps-bench: cluster %s: %s\n", std::string(codec).c_str(),
                     mean.status().ToString().c_str());
        return 1;
      }
      means.push_back(*mean);
    }
    if (means.size() == 2) {
      // The metrics' own cost, timed directly (the on/off difference above is within the
      // machine's noise): one worker step records 4 histograms, 4 counters and a gauge; a shard
      // records, per push, 2 counters, and per completed partition 3 histogram/counter updates.
      prometheus::Registry registry;
      auto worker_metrics = common::WorkerMetrics::Create(registry, 0);
      auto server_metrics = common::ServerMetrics::Create(registry, 0);
      constexpr int kOps = 1000000;
      absl::Time t0 = absl::Now();
      for (int i = 0; i < kOps; ++i) {
        worker_metrics->RecordStep(0.1, 0.05, 0.01, 0.04, 1000, 2000, 16000);
      }
      const double worker_ns = absl::ToDoubleNanoseconds(absl::Now() - t0) / kOps;
      t0 = absl::Now();
      for (int i = 0; i < kOps; ++i) {
        server_metrics->received_bytes->Increment(1000);
        server_metrics->dense_bytes->Increment(16000);
        server_metrics->sent_bytes->Increment(2000);
        server_metrics->straggler_wait_seconds->Observe(0.01);
        server_metrics->aggregate_seconds->Observe(0.001);
        server_metrics->CountRequest(2, 0);
      }
      const double partition_ns = absl::ToDoubleNanoseconds(absl::Now() - t0) / kOps;
      CodecConfig settings;
      settings.codec = codec == "fp32" ? CodecKind::kFp32 : CodecKind::kTernGrad;
      settings.partition_elements = absl::GetFlag(FLAGS_partition_elements);
      const uint64_t size = PartitionElements(settings);
      uint64_t partitions = 0;
      for (const auto& t : *tensors) partitions += (t.elements + size - 1) / size;
      const double per_step_ns =
          worker_ns + partition_ns * double(partitions) / absl::GetFlag(FLAGS_shards);
      std::printf(
          "{\"bench\": \"metrics_cost\", \"codec\": \"%s\", \"worker_step_ns\": %.1f, "
          "\"shard_partition_ns\": %.1f, \"partitions\": %llu, \"per_step_ns\": %.1f, "
          "\"ratio_to_step_time\": %.8f}\n",
          std::string(codec).c_str(), worker_ns, partition_ns,
          static_cast<unsigned long long>(partitions), per_step_ns, per_step_ns / 1e9 / means[1]);
      std::printf(
          "{\"bench\": \"cluster_metrics_overhead\", \"profile\": \"%s\", \"codec\": \"%s\", "
          "\"step_seconds_off\": %.6f, \"step_seconds_on\": %.6f, \"ratio_on_to_off\": %.4f}\n",
          absl::GetFlag(FLAGS_profile).c_str(), std::string(codec).c_str(), means[0], means[1],
          means[1] / means[0]);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace ternps::bench
