// Launchers of the GPU MLP's elementwise kernels (mlp_kernels.cu); matrix products are cuBLAS.
// Row-major buffers, device pointers, asynchronous on `stream`.
#ifndef TERNPS_WORKER_TRAINER_MLP_KERNELS_CUH_
#define TERNPS_WORKER_TRAINER_MLP_KERNELS_CUH_

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ternps::worker::cuda {

// a[i][o] += bias[o], then ReLU if `relu`.
cudaError_t LaunchBiasActivation(float* a, const float* bias, int rows, int cols, bool relu,
                                 cudaStream_t stream);
// Softmax cross-entropy per row: delta = (softmax - onehot) / rows; loss[i] = -log p[label].
cudaError_t LaunchSoftmaxXent(const float* logits, const uint8_t* labels, int rows, int classes,
                              float* delta, float* loss, cudaStream_t stream);
// delta[k] = 0 where the layer's output a[k] <= 0.
cudaError_t LaunchReluBackward(float* delta, const float* a, int n, cudaStream_t stream);
// db[o] = sum_i d[i][o].
cudaError_t LaunchBiasGrad(const float* d, int rows, int cols, float* db, cudaStream_t stream);

}  // namespace ternps::worker::cuda

#endif  // TERNPS_WORKER_TRAINER_MLP_KERNELS_CUH_
