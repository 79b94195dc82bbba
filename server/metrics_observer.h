// The shard's Prometheus metrics as a ShardObserver: bytes, step / straggler / aggregate
// histograms, workers and step gauges, requests by method and code, worker timeouts.
//
//   auto metrics = common::ServerMetrics::Create(*endpoint->registry(), shard_index);
//   MetricsObserver observer(metrics.get(), &common::Clock::Real());
//   config.observer = &observer;
//
// Thread-safe.
#ifndef TERNPS_SERVER_METRICS_OBSERVER_H_
#define TERNPS_SERVER_METRICS_OBSERVER_H_

#include <memory>

#include "common/metrics/metrics.h"
#include "common/util/clock.h"
#include "server/observer.h"

namespace ternps::server {

class MetricsObserver final : public ShardObserver {
 public:
  // Neither is owned; both outlive the observer and every job observer it made.
  MetricsObserver(common::ServerMetrics* metrics, const common::Clock* clock)
      : metrics_(metrics), clock_(clock) {}

  std::unique_ptr<JobObserver> NewJob(size_t owned_partitions) override;
  void RequestDone(Method method, absl::StatusCode code) override;
  void ShardState(int live_workers, uint64_t newest_step) override;

 private:
  common::ServerMetrics* const metrics_;
  const common::Clock* const clock_;
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_METRICS_OBSERVER_H_
