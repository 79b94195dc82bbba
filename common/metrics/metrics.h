// Prometheus metrics of ternps (the names are listed in the README) through prometheus-cpp, and the
// pull endpoint that serves them. Every labelled child is resolved once, when the metrics object is
// built; the hot path only touches atomics.
//
//   auto endpoint = MetricsEndpoint::Start("127.0.0.1:0");   // absl::StatusOr<unique_ptr<...>>
//   auto metrics = ServerMetrics::Create(*(*endpoint)->registry(), /*shard=*/0);
//   metrics->received_bytes->Increment(n);
//   (*endpoint)->port();   // the chosen port; /metrics is served there
//
// Thread-safe (prometheus-cpp metrics are).
#ifndef TERNPS_COMMON_METRICS_METRICS_H_
#define TERNPS_COMMON_METRICS_METRICS_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace ternps::common {

// Latency buckets from 1 ms to 65.5 s, doubling (17 buckets).
std::vector<double> LatencyBuckets();

class MetricsEndpoint {
 public:
  // Serves /metrics on `address` (host:port; port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& address);
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }
  int port() const { return port_; }

 private:
  MetricsEndpoint() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::shared_ptr<prometheus::Registry> registry_;
  int port_ = 0;
};

// The shard's metrics. Pointers stay valid as long as the registry lives.
struct ServerMetrics {
  // The rpc methods and status codes of ternps_server_requests_total{method,code}.
  static constexpr std::array<absl::string_view, 7> kMethods = {
      "Join", "ShareScalers", "PushPull", "Leave", "GetStatus", "PutSnapshot", "GetRecovery"};
  static constexpr int kCodes = 17;  // grpc::StatusCode 0..16

  static std::unique_ptr<ServerMetrics> Create(prometheus::Registry& registry, uint32_t shard);

  prometheus::Counter* received_bytes;
  prometheus::Counter* sent_bytes;
  prometheus::Counter* dense_bytes;
  prometheus::Histogram* step_seconds;
  prometheus::Histogram* straggler_wait_seconds;
  prometheus::Histogram* aggregate_seconds;
  prometheus::Gauge* workers;
  prometheus::Gauge* step;
  prometheus::Counter* worker_timeouts;
  // requests[method][code]
  std::array<std::array<prometheus::Counter*, kCodes>, kMethods.size()> requests;

  void CountRequest(int method, int code) {
    if (code < 0 || code >= kCodes) code = 2;  // UNKNOWN
    requests[method][code]->Increment();
  }
};

// A worker's metrics.
struct WorkerMetrics {
  static std::unique_ptr<WorkerMetrics> Create(prometheus::Registry& registry, uint32_t rank);

  prometheus::Histogram* step_seconds;
  prometheus::Histogram* compute_seconds;
  prometheus::Histogram* encode_seconds;
  prometheus::Histogram* communication_seconds;
  prometheus::Counter* sent_bytes;
  prometheus::Counter* received_bytes;
  prometheus::Counter* dense_bytes;
  prometheus::Counter* steps;
  prometheus::Gauge* bandwidth_bytes_per_second;

  // Records one completed step (seconds; wire and dense bytes of its gradient exchange).
  void RecordStep(double step_s, double compute_s, double encode_s, double communication_s,
                  uint64_t sent, uint64_t received, uint64_t dense);
};

}  // namespace ternps::common

#endif  // TERNPS_COMMON_METRICS_METRICS_H_
