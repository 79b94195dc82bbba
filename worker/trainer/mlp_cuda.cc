// The MLP of mlp.h on a CUDA device: cuBLAS for the products, mlp_kernels.cu for the rest, the
// codec's SGD kernel for the update. Same initial weights as Mlp for the same seed.
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/cuda/device_codec.h"
#include "worker/trainer/mlp_kernels.cuh"
#include "worker/trainer/model.h"

namespace ternps::worker {

using common::cuda::DeviceBuffer;

namespace {

absl::Status CublasStatus(cublasStatus_t st, const char* what) {
  if (st == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": cuBLAS status ", static_cast<int>(st)));
}
#define TERNPS_CUBLAS_RETURN_IF_ERROR(call)                                 \
  do {                                                                      \
    if (absl::Status st = CublasStatus((call), #call); !st.ok()) return st; \
  } while (0)

}  // namespace

class MlpCuda final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<Model>> Create(std::vector<int> sizes, uint64_t seed) {
    auto model = std::unique_ptr<MlpCuda>(new MlpCuda());
    if (absl::Status st = model->Init(std::move(sizes), seed); !st.ok()) return st;
    return std::unique_ptr<Model>(std::move(model));
  }
  ~MlpCuda() override {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }

  std::vector<TensorInfo> Tensors() const override { return tensors_; }
  std::vector<absl::Span<float>> Gradients() override {
    std::vector<absl::Span<float>> spans;
    for (auto& g : grads_) spans.push_back(g.span());
    return spans;
  }
  bool on_device() const override { return true; }
  void* cuda_stream() const override { return stream_.get(); }
  size_t parameter_count() const override {
    size_t n = 0;
    for (const auto& t : tensors_) n += t.elements;
    return n;
  }

  absl::StatusOr<float> ComputeGradients(const float* images, const uint8_t* labels,
                                         int batch) override {
    if (absl::Status st = Reserve(batch); !st.ok()) return st;
    const cudaStream_t s = stream_.get();
    TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
        input_.data(), images, sizeof(float) * batch * sizes_[0], cudaMemcpyHostToDevice, s));
    TERNPS_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(labels_.data(), labels, batch, cudaMemcpyHostToDevice, s));
    if (absl::Status st = Forward(input_.data(), batch); !st.ok()) return st;
    const size_t layers = sizes_.size() - 1;
    const int classes = sizes_.back();
    TERNPS_CUDA_RETURN_IF_ERROR(cuda::LaunchSoftmaxXent(acts_[layers].data(), labels_.data(), batch,
                                                        classes, deltas_[layers].data(),
                                                        losses_.data(), s));
    const float one = 1.0f, zero = 0.0f;
    for (size_t l = layers; l-- > 0;) {
      const int in = sizes_[l], out = sizes_[l + 1];
      const float* input = l == 0 ? input_.data() : acts_[l].data();
      const float* d = deltas_[l + 1].data();
      // dW (out x in, row-major) = d^T input  (see Forward for the column-major mapping).
      TERNPS_CUBLAS_RETURN_IF_ERROR(cublasSgemm(handle_, CUBLAS_OP_N, CUBLAS_OP_T, in, out, batch,
                                                &one, input, in, d, out, &zero,
                                                grads_[2 * l].data(), in));
      TERNPS_CUDA_RETURN_IF_ERROR(cuda::LaunchBiasGrad(d, batch, out, grads_[2 * l + 1].data(), s));
      if (l > 0) {
        // d_prev (batch x in) = d W, masked by the ReLU of layer l's output.
        TERNPS_CUBLAS_RETURN_IF_ERROR(cublasSgemm(handle_, CUBLAS_OP_N, CUBLAS_OP_N, in, batch, out,
                                                  &one, params_[2 * l].data(), in, d, out, &zero,
                                                  deltas_[l].data(), in));
        TERNPS_CUDA_RETURN_IF_ERROR(
            cuda::LaunchReluBackward(deltas_[l].data(), acts_[l].data(), batch * in, s));
      }
    }
    std::vector<float> losses(batch);
    TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(losses.data(), losses_.data(),
                                                sizeof(float) * batch, cudaMemcpyDeviceToHost, s));
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s));  // gradients complete, loss read
    double total = 0.0;
    for (float v : losses) total += v;
    return static_cast<float>(total / batch);
  }

  absl::Status Apply(float lr, float momentum, float weight_decay) override {
    for (size_t t = 0; t < params_.size(); ++t) {
      const float wd = t % 2 == 0 ? weight_decay : 0.0f;  // no decay on biases
      if (absl::Status st =
              common::cuda::DeviceSgd(params_[t].span(), velocity_[t].span(), grads_[t].span(), lr,
                                      momentum, wd, stream_.get());
          !st.ok()) {
        return st;
      }
    }
    return stream_.Synchronize();
  }

  absl::StatusOr<Mlp::Evaluation> Evaluate(const Dataset& data) override {
    constexpr int kBatch = 500;
    const int classes = sizes_.back();
    if (absl::Status st = Reserve(kBatch); !st.ok()) return st;
    double loss = 0.0;
    int correct = 0;
    std::vector<float> logits(static_cast<size_t>(kBatch) * classes);
    const size_t layers = sizes_.size() - 1;
    for (int start = 0; start < data.count; start += kBatch) {
      const int batch = std::min(kBatch, data.count - start);
      TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
          input_.data(), &data.images[static_cast<size_t>(start) * kImagePixels],
          sizeof(float) * batch * kImagePixels, cudaMemcpyHostToDevice, stream_.get()));
      if (absl::Status st = Forward(input_.data(), batch); !st.ok()) return st;
      TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits.data(), acts_[layers].data(),
                                                  sizeof(float) * batch * classes,
                                                  cudaMemcpyDeviceToHost, stream_.get()));
      TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
      ScoreLogits(logits.data(), &data.labels[start], batch, classes, &loss, &correct);
    }
    return Mlp::Evaluation{loss / data.count, double(correct) / data.count};
  }

  absl::StatusOr<std::vector<absl::Span<float>>> State() override {
    return absl::UnimplementedError(
        "--device=cuda: recovery (--snapshot_interval) needs the state in host memory; not "
        "implemented for the CUDA model yet");
  }
  absl::StatusOr<uint64_t> Checksum() override {
    // On the model's stream: ordered after every update queued there.
    std::vector<std::vector<float>> host;
    for (const auto& p : params_) {
      host.emplace_back(p.size());
      TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host.back().data(), p.data(),
                                                  sizeof(float) * p.size(), cudaMemcpyDeviceToHost,
                                                  stream_.get()));
    }
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    return ParameterChecksum(host);
  }

 private:
  MlpCuda() = default;

  absl::Status Init(std::vector<int> sizes, uint64_t seed) {
    sizes_ = std::move(sizes);
    auto stream = common::cuda::Stream::Create();
    if (!stream.ok()) return stream.status();
    stream_ = *std::move(stream);
    TERNPS_CUBLAS_RETURN_IF_ERROR(cublasCreate(&handle_));
    TERNPS_CUBLAS_RETURN_IF_ERROR(cublasSetStream(handle_, stream_.get()));
    TERNPS_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(handle_, CUBLAS_PEDANTIC_MATH));
    const Mlp host(sizes_, seed);  // the same initial weights as the CPU model
    tensors_ = host.Tensors();
    for (const std::vector<float>& p : host.parameters()) {
      auto param = DeviceBuffer<float>::Create(p.size());
      auto grad = DeviceBuffer<float>::Create(p.size());
      auto velocity = DeviceBuffer<float>::Create(p.size());
      if (!param.ok() || !grad.ok() || !velocity.ok()) {
        return absl::ResourceExhaustedError("cannot allocate the model on the device");
      }
      // On the model's stream (a non-blocking one, not ordered after the legacy stream's
      // cudaMemcpy/cudaMemset), and waited for: `host` is pageable and goes away below.
      TERNPS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(param->data(), p.data(), sizeof(float) * p.size(),
                                                  cudaMemcpyHostToDevice, stream_.get()));
      TERNPS_CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(velocity->data(), 0, sizeof(float) * p.size(), stream_.get()));
      params_.push_back(*std::move(param));
      grads_.push_back(*std::move(grad));
      velocity_.push_back(*std::move(velocity));
    }
    TERNPS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    acts_.resize(sizes_.size());
    deltas_.resize(sizes_.size());
    return absl::OkStatus();
  }

  // Activation buffers for up to `batch` rows.
  absl::Status Reserve(int batch) {
    if (batch <= capacity_) return absl::OkStatus();
    auto make = [](DeviceBuffer<float>& b, size_t n) -> absl::Status {
      auto created = DeviceBuffer<float>::Create(n);
      if (!created.ok()) return created.status();
      b = *std::move(created);
      return absl::OkStatus();
    };
    if (absl::Status st = make(input_, static_cast<size_t>(batch) * sizes_[0]); !st.ok()) return st;
    for (size_t l = 1; l < sizes_.size(); ++l) {
      if (absl::Status st = make(acts_[l], static_cast<size_t>(batch) * sizes_[l]); !st.ok()) {
        return st;
      }
      if (absl::Status st = make(deltas_[l], static_cast<size_t>(batch) * sizes_[l]); !st.ok()) {
        return st;
      }
    }
    if (absl::Status st = make(losses_, batch); !st.ok()) return st;
    auto labels = DeviceBuffer<uint8_t>::Create(batch);
    if (!labels.ok()) return labels.status();
    labels_ = *std::move(labels);
    capacity_ = batch;
    return absl::OkStatus();
  }

  // acts_[l+1] (batch x out, row-major) = act(input W^T + b). Column-major view: a row-major
  // X (r x c) is X^T (c x r, ld c), so out^T = W input^T with W's stored view (in x out) taken
  // transposed.
  absl::Status Forward(const float* input, int batch) {
    const float one = 1.0f, zero = 0.0f;
    const size_t layers = sizes_.size() - 1;
    for (size_t l = 0; l < layers; ++l) {
      const int in = sizes_[l], out = sizes_[l + 1];
      TERNPS_CUBLAS_RETURN_IF_ERROR(cublasSgemm(handle_, CUBLAS_OP_T, CUBLAS_OP_N, out, batch, in,
                                                &one, params_[2 * l].data(), in, input, in, &zero,
                                                acts_[l + 1].data(), out));
      TERNPS_CUDA_RETURN_IF_ERROR(cuda::LaunchBiasActivation(acts_[l + 1].data(),
                                                             params_[2 * l + 1].data(), batch, out,
                                                             l + 1 < layers, stream_.get()));
      input = acts_[l + 1].data();
    }
    return absl::OkStatus();
  }

  std::vector<int> sizes_;
  std::vector<TensorInfo> tensors_;
  common::cuda::Stream stream_;
  cublasHandle_t handle_ = nullptr;
  std::vector<DeviceBuffer<float>> params_, grads_, velocity_;
  std::vector<DeviceBuffer<float>> acts_, deltas_;  // [l]: layer l's output; [0] unused
  DeviceBuffer<float> input_, losses_;
  DeviceBuffer<uint8_t> labels_;
  int capacity_ = 0;
};

}  // namespace ternps::worker

// The module's entry point, found with dlsym by MakeCudaModel (model.cc). Returns the model, or
// null with the error in `error`.
extern "C" __attribute__((visibility("default"))) ternps::worker::Model* TernpsCreateCudaModel(
    const int* sizes, int count, uint64_t seed, char* error, size_t error_size) {
  auto fail = [&](const absl::Status& st) -> ternps::worker::Model* {
    std::snprintf(error, error_size, "%s", std::string(st.message()).c_str());
    return nullptr;
  };
  absl::StatusOr<int> devices = ternps::common::cuda::CudaDeviceCount();
  if (!devices.ok()) return fail(devices.status());
  if (*devices == 0) {
    return fail(absl::FailedPreconditionError("--device=cuda: no usable CUDA device"));
  }
  absl::StatusOr<std::unique_ptr<ternps::worker::Model>> model =
      ternps::worker::MlpCuda::Create(std::vector<int>(sizes, sizes + count), seed);
  if (!model.ok()) return fail(model.status());
  return model->release();
}
