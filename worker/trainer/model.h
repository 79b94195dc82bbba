// What the trainer needs of a model, on whichever device it lives: the CPU Mlp (mlp.h) or the
// CUDA MlpCuda (mlp_cuda.h).
//
//   std::unique_ptr<Model> model = ...;
//   absl::StatusOr<float> loss = model->ComputeGradients(images, labels, batch);
//   worker->Step(model->Gradients()) or StepOnDevice(...) as model->on_device() says;
//   absl::Status st = model->Apply(lr, momentum, weight_decay);
//
// Thread-compatible.
#ifndef TERNPS_WORKER_TRAINER_MODEL_H_
#define TERNPS_WORKER_TRAINER_MODEL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ternps/worker.h"
#include "worker/trainer/fashion_mnist.h"
#include "worker/trainer/mlp.h"

namespace ternps::worker {

class Model {
 public:
  virtual ~Model() = default;
  virtual std::vector<TensorInfo> Tensors() const = 0;
  // Gradient buffers in Tensors() order: host memory, or device memory when on_device().
  virtual std::vector<absl::Span<float>> Gradients() = 0;
  virtual bool on_device() const = 0;
  // The cudaStream_t the model queues its work on (for Worker::StepOnDevice); null on the host.
  virtual void* cuda_stream() const { return nullptr; }
  // Host spans of the recovery state (Worker::Recover; kStateSlots per tensor), or
  // UNIMPLEMENTED for a model that cannot expose it.
  static constexpr uint32_t kStateSlots = 2;
  virtual absl::StatusOr<std::vector<absl::Span<float>>> State() = 0;
  virtual size_t parameter_count() const = 0;
  // `images` and `labels` are host memory (batch rows).
  virtual absl::StatusOr<float> ComputeGradients(const float* images, const uint8_t* labels,
                                                 int batch) = 0;
  virtual absl::Status Apply(float lr, float momentum, float weight_decay) = 0;
  virtual absl::StatusOr<Mlp::Evaluation> Evaluate(const Dataset& data) = 0;
  virtual absl::StatusOr<uint64_t> Checksum() = 0;
};

// The CPU model.
std::unique_ptr<Model> MakeCpuModel(std::vector<int> sizes, uint64_t seed);
// The CUDA model (cuBLAS); UNIMPLEMENTED in a build without CUDA.
absl::StatusOr<std::unique_ptr<Model>> MakeCudaModel(std::vector<int> sizes, uint64_t seed);

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_TRAINER_MODEL_H_
