// DeviceExchange's factory registry: libternps_worker itself has no CUDA; the CUDA implementation
// lives in libternps_worker_cuda (ternps::worker_cuda), which registers itself when loaded, so
// processes that never use a GPU never load the CUDA runtime.
#include "worker/client/device_exchange.h"

#include <atomic>

#include "absl/status/status.h"

namespace ternps::worker {
namespace {

std::atomic<DeviceExchange::Factory> factory{nullptr};
std::atomic<bool (*)()> available{nullptr};

}  // namespace

void DeviceExchange::Register(Factory create, bool (*is_available)()) {
  factory.store(create);
  available.store(is_available);
}

bool DeviceExchange::Available() {
  bool (*check)() = available.load();
  return check != nullptr && check();
}

absl::StatusOr<std::unique_ptr<DeviceExchange>> DeviceExchange::Create(
    const common::PartitionPlan& plan, uint32_t world_size, bool fp32_averages) {
  Factory create = factory.load();
  if (create == nullptr) {
    return absl::UnimplementedError(
        "gradients on a CUDA device: link ternps::worker_cuda (libternps_worker_cuda, built "
        "with TERNPS_CUDA) into this program");
  }
  return create(plan, world_size, fp32_averages);
}

}  // namespace ternps::worker
