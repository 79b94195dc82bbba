// Layer lists of well-known models, for `ternps-bench cluster`: the tensors (name, elements) a
// data-parallel job would register, with the realistic mix of large weights and small biases and
// norms that decides how much travels compressed.
#ifndef TERNPS_WORKER_BENCH_MODEL_PROFILES_H_
#define TERNPS_WORKER_BENCH_MODEL_PROFILES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "ternps/worker.h"

namespace ternps::bench {

// resnet50 (25,557,032 parameters: convolutions, batch-norm scale/shift, fc), alexnet
// (61,100,840), vgg16 (138,357,544); torchvision's layer shapes.
absl::StatusOr<std::vector<worker::TensorInfo>> ModelProfile(const std::string& name);

}  // namespace ternps::bench

#endif  // TERNPS_WORKER_BENCH_MODEL_PROFILES_H_
