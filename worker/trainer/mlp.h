// A multilayer perceptron (ReLU hidden layers, softmax cross-entropy) with SGD, momentum and
// weight decay; the matrix products go through BLAS (cblas_sgemm).
//
//   Mlp model({784, 512, 256, 10}, /*seed=*/1);
//   float loss = model.ComputeGradients(images, labels, batch);  // fills model.Gradients()
//   worker->Step(model.Gradients());                              // average over workers
//   model.Apply(lr, 0.9f, 5e-4f);
//
// Every replica created with the same sizes and seed starts identical, and stays identical when
// given the same averaged gradients. Thread-compatible.
#ifndef TERNPS_WORKER_TRAINER_MLP_H_
#define TERNPS_WORKER_TRAINER_MLP_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "ternps/worker.h"
#include "worker/trainer/fashion_mnist.h"

namespace ternps::worker {

// Adds the cross-entropy of `rows` logit rows to *loss and their correct argmaxes to *correct.
void ScoreLogits(const float* logits, const uint8_t* labels, int rows, int classes, double* loss,
                 int* correct);
// FNV-1a over the bytes of the parameters, in order.
uint64_t ParameterChecksum(const std::vector<std::vector<float>>& params);

class Mlp {
 public:
  Mlp(std::vector<int> sizes, uint64_t seed);

  // fc1.weight, fc1.bias, fc2.weight, ... in that order (weights are out x in, row-major).
  std::vector<TensorInfo> Tensors() const;
  // The gradient buffers, one per tensor, in Tensors() order.
  std::vector<absl::Span<float>> Gradients();
  size_t parameter_count() const;
  // The optimizer state for recovery (ternps::worker::State, 2 slots): per tensor its parameters,
  // then its momentum.
  std::vector<absl::Span<float>> State();

  // Forward and backward on `batch` images: fills Gradients() with the batch-mean gradient of the
  // cross-entropy loss (without weight decay) and returns that mean loss.
  float ComputeGradients(const float* images, const uint8_t* labels, int batch);
  // v = momentum * v + (g + weight_decay * w); w -= lr * v.
  void Apply(float lr, float momentum, float weight_decay);

  struct Evaluation {
    double loss = 0.0;
    double accuracy = 0.0;
  };
  Evaluation Evaluate(const Dataset& data);
  // FNV-1a over the parameters' bytes: equal on every replica that applied the same updates.
  uint64_t Checksum() const;
  // The parameters, 2l: weight (out x in), 2l+1: bias.
  const std::vector<std::vector<float>>& parameters() const { return params_; }

 private:
  // Fills activations_ for `batch` rows; returns the logits.
  const float* Forward(const float* images, int batch);

  std::vector<int> sizes_;
  std::vector<std::vector<float>> params_;  // 2l: weight, 2l+1: bias
  std::vector<std::vector<float>> grads_;
  std::vector<std::vector<float>> velocity_;
  std::vector<std::vector<float>> activations_;  // layer outputs; [0] unused (input)
  std::vector<std::vector<float>> deltas_;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_TRAINER_MLP_H_
