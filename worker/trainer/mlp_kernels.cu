#include "worker/trainer/mlp_kernels.cuh"

namespace ternps::worker::cuda {
namespace {

constexpr int kThreads = 256;

int Blocks(long long n) {
  const long long b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < 65535 ? (b < 1 ? 1 : b) : 65535);
}

__global__ void BiasActivationKernel(float* a, const float* bias, int rows, int cols, bool relu) {
  const long long n = static_cast<long long>(rows) * cols;
  for (long long k = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<long long>(gridDim.x) * blockDim.x) {
    float v = a[k] + bias[k % cols];
    a[k] = relu && v < 0.0f ? 0.0f : v;
  }
}

__global__ void SoftmaxXentKernel(const float* logits, const uint8_t* labels, int rows, int classes,
                                  float* delta, float* loss) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= rows) return;
  const float* z = logits + static_cast<long long>(i) * classes;
  float m = z[0];
  for (int c = 1; c < classes; ++c) m = fmaxf(m, z[c]);
  double sum = 0.0;
  for (int c = 0; c < classes; ++c) sum += exp(static_cast<double>(z[c] - m));
  for (int c = 0; c < classes; ++c) {
    const double p = exp(static_cast<double>(z[c] - m)) / sum;
    delta[static_cast<long long>(i) * classes + c] =
        static_cast<float>((p - (c == labels[i] ? 1.0 : 0.0)) / rows);
  }
  loss[i] = static_cast<float>(log(sum) - static_cast<double>(z[labels[i]] - m));
}

__global__ void ReluBackwardKernel(float* delta, const float* a, int n) {
  for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += gridDim.x * blockDim.x) {
    if (a[k] <= 0.0f) delta[k] = 0.0f;
  }
}

__global__ void BiasGradKernel(const float* d, int rows, int cols, float* db) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= cols) return;
  float s = 0.0f;
  for (int i = 0; i < rows; ++i) s += d[static_cast<long long>(i) * cols + o];
  db[o] = s;
}

}  // namespace

cudaError_t LaunchBiasActivation(float* a, const float* bias, int rows, int cols, bool relu,
                                 cudaStream_t stream) {
  BiasActivationKernel<<<Blocks(static_cast<long long>(rows) * cols), kThreads, 0, stream>>>(
      a, bias, rows, cols, relu);
  return cudaGetLastError();
}

cudaError_t LaunchSoftmaxXent(const float* logits, const uint8_t* labels, int rows, int classes,
                              float* delta, float* loss, cudaStream_t stream) {
  SoftmaxXentKernel<<<Blocks(rows), kThreads, 0, stream>>>(logits, labels, rows, classes, delta,
                                                           loss);
  return cudaGetLastError();
}

cudaError_t LaunchReluBackward(float* delta, const float* a, int n, cudaStream_t stream) {
  ReluBackwardKernel<<<Blocks(n), kThreads, 0, stream>>>(delta, a, n);
  return cudaGetLastError();
}

cudaError_t LaunchBiasGrad(const float* d, int rows, int cols, float* db, cudaStream_t stream) {
  BiasGradKernel<<<Blocks(cols), kThreads, 0, stream>>>(d, rows, cols, db);
  return cudaGetLastError();
}

}  // namespace ternps::worker::cuda
