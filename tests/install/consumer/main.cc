// Uses the installed libternps_worker: bad options give a precise error, and an unreachable shard
// a deadline error, both without crashing.
#include <cstdio>

#include "ternps/worker.h"

int main() {
  ternps::worker::WorkerOptions options;
  options.tensors = {{"w", 100}};
  auto none = ternps::worker::Worker::Connect(options);
  if (none.ok() || none.status().code() != absl::StatusCode::kInvalidArgument) {
    std::fprintf(stderr, "expected INVALID_ARGUMENT for no shards\n");
    return 1;
  }
  options.shards = {"127.0.0.1:1"};
  options.connect_timeout = absl::Milliseconds(200);
  auto unreachable = ternps::worker::Worker::Connect(options);
  if (unreachable.ok()) {
    std::fprintf(stderr, "expected an error for an unreachable shard\n");
    return 1;
  }
  std::printf("consumer ok: %s | %s\n", none.status().ToString().c_str(),
              unreachable.status().ToString().c_str());
  return 0;
}
