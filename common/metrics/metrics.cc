#include "common/metrics/metrics.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"

namespace ternps::common {
namespace {

constexpr absl::string_view kCodeNames[ServerMetrics::kCodes] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

prometheus::Histogram* Latency(prometheus::Registry& registry, const std::string& name,
                               const std::string& help, const prometheus::Labels& labels) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(registry).Add(
      labels, LatencyBuckets());
}
prometheus::Counter* Counter(prometheus::Registry& registry, const std::string& name,
                             const std::string& help, const prometheus::Labels& labels) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add(labels);
}
prometheus::Gauge* Gauge(prometheus::Registry& registry, const std::string& name,
                         const std::string& help, const prometheus::Labels& labels) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add(labels);
}

}  // namespace

std::vector<double> LatencyBuckets() {
  std::vector<double> buckets;
  for (double b = 0.001; b < 70.0; b *= 2) buckets.push_back(b);
  return buckets;
}

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& address) {
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  try {
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics_address: cannot serve on '", address, "': ", e.what()));
  }
  endpoint->registry_ = std::make_shared<prometheus::Registry>();
  endpoint->exposer_->RegisterCollectable(endpoint->registry_);
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty()) return absl::UnavailableError("metrics_address: no listening port");
  endpoint->port_ = ports.front();
  return endpoint;
}

std::unique_ptr<ServerMetrics> ServerMetrics::Create(prometheus::Registry& r, uint32_t shard) {
  auto m = std::make_unique<ServerMetrics>();
  const prometheus::Labels labels = {{"shard", absl::StrCat(shard)}};
  m->received_bytes = Counter(r, "ternps_server_received_bytes_total",
                              "Wire payload bytes of the pushes this shard accepted", labels);
  m->sent_bytes = Counter(r, "ternps_server_sent_bytes_total",
                          "Wire payload bytes of the averages this shard sent", labels);
  m->dense_bytes = Counter(r, "ternps_server_dense_bytes_total",
                           "Float32-equivalent bytes of the pushes this shard accepted", labels);
  m->step_seconds = Latency(r, "ternps_server_step_seconds",
                            "First push of a step to the last average of that step sent", labels);
  m->straggler_wait_seconds = Latency(r, "ternps_server_straggler_wait_seconds",
                                      "First to last push of one partition and step", labels);
  m->aggregate_seconds = Latency(r, "ternps_server_aggregate_seconds",
                                 "Decode + sum + encode time of one partition and step", labels);
  m->workers = Gauge(r, "ternps_server_workers", "Live workers, over all jobs", labels);
  m->step = Gauge(r, "ternps_server_step", "The newest step being aggregated", labels);
  m->worker_timeouts = Counter(r, "ternps_server_worker_timeouts_total",
                               "Workers dropped from a live set by the step timeout", labels);
  auto& family = prometheus::BuildCounter()
                     .Name("ternps_server_requests_total")
                     .Help("Finished rpcs by method and status code")
                     .Register(r);
  for (size_t method = 0; method < kMethods.size(); ++method) {
    for (int code = 0; code < kCodes; ++code) {
      m->requests[method][code] = &family.Add({{"shard", absl::StrCat(shard)},
                                               {"method", std::string(kMethods[method])},
                                               {"code", std::string(kCodeNames[code])}});
    }
  }
  return m;
}

std::unique_ptr<WorkerMetrics> WorkerMetrics::Create(prometheus::Registry& r, uint32_t rank) {
  auto m = std::make_unique<WorkerMetrics>();
  const prometheus::Labels labels = {{"rank", absl::StrCat(rank)}};
  m->step_seconds = Latency(r, "ternps_worker_step_seconds",
                            "A whole training step: compute and gradient exchange", labels);
  m->compute_seconds =
      Latency(r, "ternps_worker_compute_seconds", "Forward and backward pass of one step", labels);
  m->encode_seconds =
      Latency(r, "ternps_worker_encode_seconds",
              "Statistics and ternarization of one step (summed over threads)", labels);
  m->communication_seconds =
      Latency(r, "ternps_worker_communication_seconds",
              "Scaler exchange to the last average decoded (overlaps later encodes)", labels);
  m->sent_bytes = Counter(r, "ternps_worker_sent_bytes_total", "Wire payload bytes pushed", labels);
  m->received_bytes =
      Counter(r, "ternps_worker_received_bytes_total", "Wire payload bytes of averages", labels);
  m->dense_bytes = Counter(r, "ternps_worker_dense_bytes_total",
                           "Float32-equivalent bytes of the gradients pushed", labels);
  m->steps = Counter(r, "ternps_worker_steps_total", "Gradient exchanges completed", labels);
  m->bandwidth_bytes_per_second =
      Gauge(r, "ternps_worker_bandwidth_bytes_per_second",
            "Wire bytes (both directions) over the last step's exchange time", labels);
  return m;
}

void WorkerMetrics::RecordStep(double step_s, double compute_s, double encode_s,
                               double communication_s, uint64_t sent, uint64_t received,
                               uint64_t dense) {
  step_seconds->Observe(step_s);
  compute_seconds->Observe(compute_s);
  encode_seconds->Observe(encode_s);
  communication_seconds->Observe(communication_s);
  sent_bytes->Increment(static_cast<double>(sent));
  received_bytes->Increment(static_cast<double>(received));
  dense_bytes->Increment(static_cast<double>(dense));
  steps->Increment();
  if (communication_s > 0) {
    bandwidth_bytes_per_second->Set(static_cast<double>(sent + received) / communication_s);
  }
}

}  // namespace ternps::common
