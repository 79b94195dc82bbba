// ternps-worker: a data-parallel trainer. Trains an MLP on Fashion-MNIST, each worker on its own
// slice of the training set, exchanging gradients through the ternps parameter server.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/metrics/metrics.h"
#include "common/util/flags_help.h"
#include "common/util/process.h"
#include "ternps/worker.h"
#include "worker/trainer/fashion_mnist.h"
#include "worker/trainer/mlp.h"
#include "worker/trainer/model.h"

ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificates to check the shards' certificates against; turns TLS on");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of this worker, for shards that require client certificates "
          "(with --tls_key and --tls_ca)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, token_file, "",
          "File holding the job's token (16-1024 printable ASCII bytes, e.g. `openssl rand -hex "
          "32`), sent with every call; the first Join fixes it. Empty: no token");
ABSL_FLAG(std::string, shards, "127.0.0.1:7070",
          "Comma-separated host:port of every shard, shard 0 first");
ABSL_FLAG(uint32_t, rank, 0, "This worker's rank in [0, world_size)");
ABSL_FLAG(uint32_t, world_size, 1, "Number of workers");
ABSL_FLAG(std::string, job_id, "fashion-mnist", "Job identifier shared by all workers");
ABSL_FLAG(std::string, codec, "terngrad", "terngrad | fp32 (the uncompressed baseline)");
ABSL_FLAG(bool, scaler_sharing, true, "TernGrad: share the max scaler (exact INT_SUM downlink)");
ABSL_FLAG(bool, int_sum_radix, ternps::CodecConfig{}.int_sum_radix,
          "TernGrad with scaler sharing: averages as INT_SUM_RADIX where smaller (N = 4: 3.2 bits "
          "per element against 4); every worker of a job must agree");
ABSL_FLAG(float, clip_sigmas, 2.5f, "TernGrad: clip at this many standard deviations (0: off)");
ABSL_FLAG(std::string, device, "cpu", "cpu | cuda");
ABSL_FLAG(int, epochs, 5, "Training epochs");
ABSL_FLAG(int, batch_size, 32, "Per-worker batch size");
ABSL_FLAG(float, lr, 0.05f, "Learning rate (peak, see --lr_schedule)");
ABSL_FLAG(std::string, lr_schedule, "cosine",
          "constant | cosine (decays the rate to 0 over the run, step by step)");
ABSL_FLAG(uint32_t, partition_elements, 0,
          "Elements per partition (TernGrad: each partition has its own scaler); 0: the codec's "
          "default (TernGrad 1048576, fp32 262144)");
ABSL_FLAG(float, momentum, 0.9f, "SGD momentum");
ABSL_FLAG(float, weight_decay, 5e-4f, "L2 weight decay (weights, not biases)");
ABSL_FLAG(std::string, hidden, "512,256", "Hidden layer sizes, comma-separated");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the model init, the data order and the rounding streams");
ABSL_FLAG(std::string, data_dir, "/usr/share/datasets/fashion-mnist",
          "Directory with the Fashion-MNIST IDX .gz files");
ABSL_FLAG(int, max_steps_per_epoch, 0, "Stop each epoch after this many steps (0: full epoch)");
ABSL_FLAG(int, snapshot_interval, -1,
          "Recovery: steps between state snapshots kept by the shards; 0: off (a restarted or "
          "readmitted worker then cannot rebuild its peers' model and exits); -1: 50 on the CPU, "
          "0 with --device=cuda (whose model cannot hand its state over yet)");
ABSL_FLAG(int, threads, 2, "Encode/decode threads of the client library");

namespace {
// Test-only, not a flag (kept out of --help): TERNPS_TEST_CRASH_AT_STEP=N makes the process kill
// itself with SIGKILL before pushing step N (> 0), as a crash would (no Leave, no cleanup). Used
// by tests/worker/recovery_test.cc and deploy/local/run.sh --chaos.
uint64_t TestCrashAtStep() {
  const char* v = std::getenv("TERNPS_TEST_CRASH_AT_STEP");
  return v == nullptr ? 0 : std::strtoull(v, nullptr, 10);
}
}  // namespace
ABSL_FLAG(uint64_t, max_call_bytes, ternps::worker::WorkerOptions{}.max_call_bytes,
          "Payload bytes per PushPull call (partitions are grouped up to this)");
ABSL_FLAG(int, calls_in_flight, ternps::worker::WorkerOptions{}.calls_in_flight_per_shard,
          "PushPull calls in flight per shard (0: no limit)");
ABSL_FLAG(int, channels_per_shard, ternps::worker::WorkerOptions{}.channels_per_shard,
          "TCP connections per shard; PushPull calls take turns on them");
ABSL_FLAG(absl::Duration, connect_timeout, absl::Seconds(60),
          "How long to wait for the shards to come up");
ABSL_FLAG(bool, restart_ended_job, false,
          "Run --job_id again although the shards remember that a job of that id ended (they "
          "refuse a late worker of an ended job by default)");
ABSL_FLAG(absl::Duration, rpc_timeout, absl::Seconds(180), "Deadline of each call");
ABSL_FLAG(std::string, summary_file, "", "Also write the final JSON summary to this file");
ABSL_FLAG(bool, quiet, false, "Print only the final summary");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port for the Prometheus /metrics endpoint, port 0 picks a free one (see "
          "--metrics_port_file); empty: no metrics");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, write the chosen metrics port to this file once serving");

namespace {

using ternps::worker::CodecKind;
using ternps::worker::Dataset;
using ternps::worker::kImagePixels;

int Fail(const std::string& message) {
  std::fprintf(stderr, "ternps-worker: %s\n", message.c_str());
  return 1;
}

std::string Human(double bytes) {
  if (bytes >= 1e6) return absl::StrFormat("%.2f MB", bytes / 1e6);
  if (bytes >= 1e3) return absl::StrFormat("%.1f kB", bytes / 1e3);
  return absl::StrFormat("%.0f B", bytes);
}

}  // namespace

int main(int argc, char** argv) {
  ternps::common::ConfigureBinaryProcess();
  ternps::common::SetUsage(
      "Trains an MLP on Fashion-MNIST through a ternps parameter server.\n"
      "Usage: ternps-worker --shards=127.0.0.1:7070,127.0.0.1:7071 --rank=0 --world_size=4");
  ternps::common::ParseFlags(argc, argv);
  const uint32_t rank = absl::GetFlag(FLAGS_rank);
  const uint32_t world = absl::GetFlag(FLAGS_world_size);
  const bool quiet = absl::GetFlag(FLAGS_quiet);
  const bool lead = rank == 0 && !quiet;
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda") {
    return Fail(absl::StrCat("--device=", device, ": expected cpu or cuda"));
  }
  const std::string codec_name = absl::GetFlag(FLAGS_codec);
  if (codec_name != "terngrad" && codec_name != "fp32") {
    return Fail(absl::StrCat("--codec=", codec_name, ": expected terngrad or fp32"));
  }
  std::vector<int> sizes = {kImagePixels};
  for (absl::string_view h : absl::StrSplit(absl::GetFlag(FLAGS_hidden), ',', absl::SkipEmpty())) {
    int n = 0;
    if (!absl::SimpleAtoi(h, &n) || n < 1 || n > 65536) {
      return Fail(absl::StrCat("--hidden: '", std::string(h), "' is not a size in [1, 65536]"));
    }
    sizes.push_back(n);
  }
  sizes.push_back(ternps::worker::kClasses);
  const std::string schedule = absl::GetFlag(FLAGS_lr_schedule);
  if (schedule != "constant" && schedule != "cosine") {
    return Fail(absl::StrCat("--lr_schedule=", schedule, ": expected constant or cosine"));
  }
  const int batch = absl::GetFlag(FLAGS_batch_size);
  const int epochs = absl::GetFlag(FLAGS_epochs);
  if (batch < 1 || epochs < 1 || world < 1 || rank >= world) {
    return Fail("--batch_size and --epochs must be >= 1 and --rank below --world_size");
  }
  openblas_set_num_threads(1);  // several workers share the machine's cores

  absl::StatusOr<Dataset> train = ternps::worker::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir),
                                                                   ternps::worker::Split::kTrain);
  if (!train.ok()) return Fail(std::string(train.status().message()));
  absl::StatusOr<Dataset> test =
      ternps::worker::LoadFashionMnist(absl::GetFlag(FLAGS_data_dir), ternps::worker::Split::kTest);
  if (!test.ok()) return Fail(std::string(test.status().message()));

  std::unique_ptr<ternps::common::MetricsEndpoint> metrics_endpoint;
  std::unique_ptr<ternps::common::WorkerMetrics> metrics;
  if (!absl::GetFlag(FLAGS_metrics_address).empty()) {
    auto endpoint = ternps::common::MetricsEndpoint::Start(absl::GetFlag(FLAGS_metrics_address));
    if (!endpoint.ok()) return Fail(endpoint.status().ToString());
    metrics_endpoint = *std::move(endpoint);
    metrics = ternps::common::WorkerMetrics::Create(*metrics_endpoint->registry(), rank);
    const std::string port_file = absl::GetFlag(FLAGS_metrics_port_file);
    if (!port_file.empty()) {
      std::ofstream out(port_file + ".tmp");
      out << metrics_endpoint->port() << "\n";
      out.close();
      if (!out || std::rename((port_file + ".tmp").c_str(), port_file.c_str()) != 0) {
        return Fail(absl::StrCat("--metrics_port_file: cannot write '", port_file, "'"));
      }
    }
  }
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  // Every worker's model starts identical (the job's initial state, which recovery also starts
  // from).
  auto new_model = [&]() -> absl::StatusOr<std::unique_ptr<ternps::worker::Model>> {
    if (device == "cuda") return ternps::worker::MakeCudaModel(sizes, seed);
    return ternps::worker::MakeCpuModel(sizes, seed);
  };
  absl::StatusOr<std::unique_ptr<ternps::worker::Model>> first_model = new_model();
  if (!first_model.ok()) return Fail(first_model.status().ToString());
  std::unique_ptr<ternps::worker::Model> model_holder = *std::move(first_model);
  ternps::worker::Model* model_ptr = model_holder.get();
  const int snapshot_flag = absl::GetFlag(FLAGS_snapshot_interval);
  if (snapshot_flag < -1) return Fail("--snapshot_interval: must be >= 0 (or -1: the default)");
  const bool has_state = model_ptr->State().ok();
  if (snapshot_flag > 0 && !has_state) return Fail(model_ptr->State().status().ToString());
  const uint32_t snapshot_interval =
      snapshot_flag >= 0 ? static_cast<uint32_t>(snapshot_flag) : (has_state ? 50 : 0);
  ternps::worker::WorkerOptions options;
  options.job_id = absl::GetFlag(FLAGS_job_id);
  options.rank = rank;
  options.world_size = world;
  options.shards = absl::StrSplit(absl::GetFlag(FLAGS_shards), ',', absl::SkipEmpty());
  options.tensors = model_ptr->Tensors();
  options.codec.codec = codec_name == "fp32" ? CodecKind::kFp32 : CodecKind::kTernGrad;
  options.codec.scaler_sharing = absl::GetFlag(FLAGS_scaler_sharing);
  options.codec.int_sum_radix = absl::GetFlag(FLAGS_int_sum_radix);
  options.codec.clip_sigmas = absl::GetFlag(FLAGS_clip_sigmas);
  options.codec.seed = seed;
  options.codec.partition_elements = absl::GetFlag(FLAGS_partition_elements);
  options.threads = absl::GetFlag(FLAGS_threads);
  options.max_call_bytes = absl::GetFlag(FLAGS_max_call_bytes);
  options.calls_in_flight_per_shard = absl::GetFlag(FLAGS_calls_in_flight);
  options.channels_per_shard = absl::GetFlag(FLAGS_channels_per_shard);
  options.connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  options.restart_ended_job = absl::GetFlag(FLAGS_restart_ended_job);
  options.tls_ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.token_file = absl::GetFlag(FLAGS_token_file);
  options.rpc_timeout = absl::GetFlag(FLAGS_rpc_timeout);
  options.snapshot_interval = snapshot_interval;
  options.state_slots = ternps::worker::Model::kStateSlots;
  if (lead) {
    std::printf("ternps-worker: %zu parameters (MLP %s), %u workers, %zu shards, codec %s\n",
                model_ptr->parameter_count(), absl::GetFlag(FLAGS_hidden).c_str(), world,
                options.shards.size(), codec_name.c_str());
    std::fflush(stdout);
  }
  absl::StatusOr<std::unique_ptr<ternps::worker::Worker>> worker =
      ternps::worker::Worker::Connect(options);
  if (!worker.ok()) return Fail(worker.status().ToString());

  // This worker's slice of the training set; the same number of steps on every worker.
  const int begin = static_cast<int>(uint64_t{rank} * train->count / world);
  const int end = static_cast<int>(uint64_t{rank + 1} * train->count / world);
  int steps_per_epoch = train->count / static_cast<int>(world) / batch;
  if (absl::GetFlag(FLAGS_max_steps_per_epoch) > 0) {
    steps_per_epoch = std::min(steps_per_epoch, absl::GetFlag(FLAGS_max_steps_per_epoch));
  }
  const uint64_t total_steps = uint64_t(epochs) * steps_per_epoch;
  // Everything a step uses is a function of the job's step number (the data order of its epoch,
  // the learning rate), so a worker that recovers at any step replays and continues exactly as
  // its peers do.
  auto lr_at = [&](uint64_t step) {
    const double progress = double(step) / double(total_steps);
    return schedule == "cosine" ? static_cast<float>(absl::GetFlag(FLAGS_lr) * 0.5 *
                                                     (1.0 + std::cos(3.14159265358979 * progress)))
                                : absl::GetFlag(FLAGS_lr);
  };
  auto apply = [&](uint64_t step) {
    return model_ptr->Apply(lr_at(step), absl::GetFlag(FLAGS_momentum),
                            absl::GetFlag(FLAGS_weight_decay));
  };
  // Rebuilds the peers' model at the worker's current step from the shards' snapshot and the
  // averages since (the replay starts from the initial model).
  auto recover = [&](absl::string_view why) -> absl::Status {
    const uint64_t at = (*worker)->step();
    absl::StatusOr<std::unique_ptr<ternps::worker::Model>> fresh = new_model();
    if (!fresh.ok()) return fresh.status();
    model_holder = *std::move(fresh);
    model_ptr = model_holder.get();
    absl::StatusOr<std::vector<absl::Span<float>>> state = model_ptr->State();
    if (!state.ok()) return state.status();
    const absl::Time t0 = absl::Now();
    if (absl::Status st = (*worker)->Recover(*state, model_ptr->Gradients(), apply); !st.ok()) {
      return st;
    }
    std::fprintf(stderr, "ternps-worker %u: %s: recovered the model at step %llu in %.2f s\n", rank,
                 std::string(why).c_str(), static_cast<unsigned long long>(at),
                 absl::ToDoubleSeconds(absl::Now() - t0));
    return absl::OkStatus();
  };
  // After ABORTED (dropped after a step timeout, or replaced): this worker missed averages its
  // peers applied. Joins again and rebuilds the model; again if it is dropped meanwhile.
  auto rejoin = [&](absl::Status st) {
    for (int attempt = 0; attempt < 5 && st.code() == absl::StatusCode::kAborted; ++attempt) {
      std::fprintf(stderr, "ternps-worker %u: %s; joining again\n", rank,
                   std::string(st.message()).c_str());
      st = (*worker)->Rejoin();
      if (st.ok() && snapshot_interval == 0) {
        return absl::FailedPreconditionError(
            "readmitted, but the job keeps no recovery state (--snapshot_interval=0): this "
            "worker's model would differ from its peers'");
      }
      if (st.ok()) st = recover("readmitted");
    }
    return st;
  };
  if ((*worker)->step() > 0) {
    if (snapshot_interval == 0) {
      return Fail(absl::StrCat("the job is at step ", (*worker)->step(),
                               " and keeps no recovery state (--snapshot_interval=0): this worker "
                               "cannot rebuild its peers' model"));
    }
    absl::Status st = recover("joined a running job");
    if (st.code() == absl::StatusCode::kAborted) st = rejoin(st);
    if (!st.ok()) return Fail(st.ToString());
  }
  std::vector<int> order(end - begin);
  int order_epoch = 0;
  std::vector<float> images(size_t(batch) * kImagePixels);
  std::vector<uint8_t> labels(batch);

  const absl::Time start = absl::Now();
  uint64_t steps = 0, sent = 0, received = 0, dense = 0;
  double step_seconds = 0.0;
  double max_step_seconds = 0.0;  // the slowest step (a dead peer, a reconnection)
  double last_loss = 0.0;
  double loss_sum = 0.0;
  int epoch_steps = 0;
  uint64_t epoch_sent = 0, epoch_received = 0;
  double epoch_step_seconds = 0.0;
  const uint64_t crash_at_step = TestCrashAtStep();
  for (uint64_t g = (*worker)->step(); g < total_steps; g = (*worker)->step()) {
    const int epoch = static_cast<int>(g / steps_per_epoch) + 1;
    const int s = static_cast<int>(g % steps_per_epoch);
    if (order_epoch != epoch) {  // this epoch's order of this worker's slice
      std::iota(order.begin(), order.end(), begin);
      std::mt19937_64 shuffle(seed * 1000003 + rank * 7919 + uint64_t(epoch));
      std::shuffle(order.begin(), order.end(), shuffle);
      order_epoch = epoch;
    }
    ternps::worker::Model& model = *model_ptr;
    for (int i = 0; i < batch; ++i) {
      const int item = order[size_t(s) * batch + i];
      std::copy_n(&train->images[size_t(item) * kImagePixels], kImagePixels,
                  &images[size_t(i) * kImagePixels]);
      labels[i] = train->labels[item];
    }
    if (g > 0 && g == crash_at_step) raise(SIGKILL);
    const absl::Time step_start = absl::Now();
    absl::StatusOr<float> loss = model.ComputeGradients(images.data(), labels.data(), batch);
    if (!loss.ok()) return Fail(loss.status().ToString());
    const double compute_seconds = absl::ToDoubleSeconds(absl::Now() - step_start);
    absl::Status st = model.on_device()
                          ? (*worker)->StepOnDevice(model.Gradients(), model.cuda_stream())
                          : (*worker)->Step(model.Gradients());
    if (st.code() == absl::StatusCode::kAborted) {
      st = rejoin(st);
      if (st.ok()) continue;
    }
    if (!st.ok()) return Fail(st.ToString());
    if (absl::Status applied = apply(g); !applied.ok()) return Fail(applied.ToString());
    if (snapshot_interval > 0) {
      absl::StatusOr<std::vector<absl::Span<float>>> state = model.State();
      st = state.ok() ? (*worker)->OfferState(*state) : state.status();
      if (st.code() == absl::StatusCode::kAborted) st = rejoin(st);
      if (!st.ok()) return Fail(st.ToString());
    }
    loss_sum += *loss;
    ++epoch_steps;
    const ternps::worker::StepStats stats = (*worker)->last_step();
    if (stats.reconnects > 0) {
      std::fprintf(stderr,
                   "ternps-worker %u: step %llu: lost a shard's connection; reconnected "
                   "(%u join(s)) and repeated the step's calls to it\n",
                   rank, static_cast<unsigned long long>(g), stats.reconnects);
    }
    if (metrics != nullptr) {
      metrics->RecordStep(absl::ToDoubleSeconds(absl::Now() - step_start), compute_seconds,
                          stats.encode_seconds, stats.communication_seconds, stats.sent_bytes,
                          stats.received_bytes, stats.dense_bytes);
    }
    ++steps;
    epoch_sent += stats.sent_bytes;
    epoch_received += stats.received_bytes;
    dense += stats.dense_bytes;
    epoch_step_seconds += stats.seconds;
    max_step_seconds = std::max(max_step_seconds, stats.seconds);
    if (s + 1 < steps_per_epoch) continue;
    // End of an epoch.
    sent += epoch_sent;
    received += epoch_received;
    step_seconds += epoch_step_seconds;
    last_loss = loss_sum / std::max(epoch_steps, 1);
    if (lead) {
      absl::StatusOr<ternps::worker::Mlp::Evaluation> evaluated = model.Evaluate(*test);
      if (!evaluated.ok()) return Fail(evaluated.status().ToString());
      const ternps::worker::Mlp::Evaluation eval = *evaluated;
      const double dense_step = double((*worker)->last_step().dense_bytes);
      const double up = double(epoch_sent) / std::max(epoch_steps, 1);
      const double down = double(epoch_received) / std::max(epoch_steps, 1);
      std::printf(
          "epoch %d/%d  train_loss %.4f  test_loss %.4f  test_accuracy %.4f  step %.2f ms  "
          "up %s/step (%.1fx less than fp32)  down %s/step (%.1fx)  %.0f s\n",
          epoch, epochs, last_loss, eval.loss, eval.accuracy,
          1e3 * epoch_step_seconds / std::max(epoch_steps, 1), Human(up).c_str(), dense_step / up,
          Human(down).c_str(), dense_step / down, absl::ToDoubleSeconds(absl::Now() - start));
      std::fflush(stdout);
    }
    loss_sum = 0.0;
    epoch_steps = 0;
    epoch_sent = epoch_received = 0;
    epoch_step_seconds = 0.0;
  }
  ternps::worker::Model& model = *model_ptr;
  absl::StatusOr<ternps::worker::Mlp::Evaluation> evaluated = model.Evaluate(*test);
  if (!evaluated.ok()) return Fail(evaluated.status().ToString());
  const ternps::worker::Mlp::Evaluation eval = *evaluated;
  absl::StatusOr<uint64_t> checksum = model.Checksum();
  if (!checksum.ok()) return Fail(checksum.status().ToString());
  if (absl::Status st = (*worker)->Leave(); !st.ok()) {
    std::fprintf(stderr, "ternps-worker %u: leave: %s\n", rank, st.ToString().c_str());
  }
  const double uplink_ratio = sent > 0 ? double(dense) / sent : 0.0;
  const double downlink_ratio = received > 0 ? double(dense) / received : 0.0;
  const double both = sent + received > 0 ? 2.0 * dense / double(sent + received) : 0.0;
  const std::string summary = absl::StrFormat(
      "{\"summary\": \"ternps-worker\", \"rank\": %u, \"world_size\": %u, \"shards\": %zu, "
      "\"device\": \"%s\", \"codec\": \"%s\", \"epochs\": %d, \"steps\": %u, \"test_accuracy\": "
      "%.4f, "
      "\"test_loss\": %.4f, \"train_loss\": %.4f, \"seconds\": %.1f, \"mean_step_ms\": %.3f, "
      "\"max_step_ms\": %.1f, "
      "\"uplink_bytes_per_step\": %.0f, \"downlink_bytes_per_step\": %.0f, "
      "\"dense_bytes_per_step\": %.0f, \"uplink_ratio\": %.2f, \"downlink_ratio\": %.2f, "
      "\"compression_ratio\": %.2f, \"model_checksum\": \"%016x\"}",
      rank, world, options.shards.size(), device, codec_name, epochs, steps, eval.accuracy,
      eval.loss, last_loss, absl::ToDoubleSeconds(absl::Now() - start),
      steps > 0 ? 1e3 * step_seconds / steps : 0.0, 1e3 * max_step_seconds,
      steps > 0 ? double(sent) / steps : 0.0, steps > 0 ? double(received) / steps : 0.0,
      steps > 0 ? double(dense) / steps : 0.0, uplink_ratio, downlink_ratio, both, *checksum);
  std::printf("%s\n", summary.c_str());
  const std::string summary_file = absl::GetFlag(FLAGS_summary_file);
  if (!summary_file.empty()) {
    std::ofstream out(summary_file);
    out << summary << "\n";
    if (!out) return Fail(absl::StrCat("--summary_file: cannot write '", summary_file, "'"));
  }
  return 0;
}
