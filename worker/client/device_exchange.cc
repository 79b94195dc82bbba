// The device Exchange's factory registry: libternps_worker itself has no CUDA; the CUDA
// implementation lives in libternps_worker_cuda (ternps::worker_cuda), which registers itself
// when loaded, so processes that never use a GPU never load the CUDA runtime.
#include <atomic>

#include "absl/status/status.h"
#include "worker/client/exchange.h"

namespace ternps::worker {
namespace {

std::atomic<DeviceExchangeFactory> factory{nullptr};
std::atomic<bool (*)()> available{nullptr};

}  // namespace

void RegisterDeviceExchange(DeviceExchangeFactory create, bool (*is_available)()) {
  factory.store(create);
  available.store(is_available);
}

bool DeviceExchangeAvailable() {
  bool (*check)() = available.load();
  return check != nullptr && check();
}

absl::StatusOr<std::unique_ptr<Exchange>> MakeDeviceExchange(const common::JobSpec& spec) {
  DeviceExchangeFactory create = factory.load();
  if (create == nullptr) {
    return absl::UnimplementedError(
        "gradients on a CUDA device: link ternps::worker_cuda (libternps_worker_cuda, built "
        "with TERNPS_CUDA) into this program");
  }
  return create(spec);
}

}  // namespace ternps::worker
