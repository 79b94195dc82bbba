#include "server/metrics_observer.h"

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ternps::server {
namespace {

class JobMetrics final : public JobObserver {
 public:
  JobMetrics(common::ServerMetrics* metrics, const common::Clock* clock, size_t owned_partitions)
      : metrics_(metrics), clock_(clock), owned_partitions_(owned_partitions) {}

  void PushAccepted(uint64_t step, uint64_t wire_bytes, uint64_t dense_bytes) override {
    metrics_->received_bytes->Increment(static_cast<double>(wire_bytes));
    metrics_->dense_bytes->Increment(static_cast<double>(dense_bytes));
    absl::MutexLock lock(&mu_);
    StepTiming& t = timing_[step % 2];
    if (t.step != step) t = {step, clock_->Now(), 0};
  }

  void PartitionCompleted(const CompletionStats& c) override {
    metrics_->sent_bytes->Increment(static_cast<double>(c.sent_bytes));
    metrics_->straggler_wait_seconds->Observe(absl::ToDoubleSeconds(c.straggler_wait));
    metrics_->aggregate_seconds->Observe(absl::ToDoubleSeconds(c.aggregate));
    absl::MutexLock lock(&mu_);
    StepTiming& t = timing_[c.step % 2];
    if (t.step == c.step && ++t.completed == owned_partitions_) {
      metrics_->step_seconds->Observe(absl::ToDoubleSeconds(clock_->Now() - t.first_push));
    }
  }

  void WorkersDropped(int count) override { metrics_->worker_timeouts->Increment(count); }

 private:
  // Per in-flight step (a shard holds two): its first push and how many owned partitions
  // completed it, for ternps_server_step_seconds.
  struct StepTiming {
    uint64_t step = UINT64_MAX;
    absl::Time first_push;
    size_t completed = 0;
  };

  common::ServerMetrics* const metrics_;
  const common::Clock* const clock_;
  const size_t owned_partitions_;
  absl::Mutex mu_;
  StepTiming timing_[2] ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<JobObserver> MetricsObserver::NewJob(size_t owned_partitions) {
  return std::make_unique<JobMetrics>(metrics_, clock_, owned_partitions);
}

void MetricsObserver::RequestDone(Method method, absl::StatusCode code) {
  metrics_->CountRequest(static_cast<int>(method), static_cast<int>(code));
}

void MetricsObserver::ShardState(int live_workers, uint64_t newest_step) {
  metrics_->workers->Set(live_workers);
  metrics_->step->Set(static_cast<double>(newest_step));
}

}  // namespace ternps::server
