#include "worker/trainer/model.h"

#include <dlfcn.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "ternps/config.h"

namespace ternps::worker {
namespace {

class CpuModel final : public Model {
 public:
  CpuModel(std::vector<int> sizes, uint64_t seed) : mlp_(std::move(sizes), seed) {}
  std::vector<TensorInfo> Tensors() const override { return mlp_.Tensors(); }
  std::vector<absl::Span<float>> Gradients() override { return mlp_.Gradients(); }
  bool on_device() const override { return false; }
  absl::StatusOr<std::vector<absl::Span<float>>> State() override { return mlp_.State(); }
  size_t parameter_count() const override { return mlp_.parameter_count(); }
  absl::StatusOr<float> ComputeGradients(const float* images, const uint8_t* labels,
                                         int batch) override {
    return mlp_.ComputeGradients(images, labels, batch);
  }
  absl::Status Apply(float lr, float momentum, float weight_decay) override {
    mlp_.Apply(lr, momentum, weight_decay);
    return absl::OkStatus();
  }
  absl::StatusOr<Mlp::Evaluation> Evaluate(const Dataset& data) override {
    return mlp_.Evaluate(data);
  }
  absl::StatusOr<uint64_t> Checksum() override { return mlp_.Checksum(); }

 private:
  Mlp mlp_;
};

}  // namespace

std::unique_ptr<Model> MakeCpuModel(std::vector<int> sizes, uint64_t seed) {
  return std::make_unique<CpuModel>(std::move(sizes), seed);
}

absl::StatusOr<std::unique_ptr<Model>> MakeCudaModel(std::vector<int> sizes, uint64_t seed) {
#if TERNPS_HAVE_CUDA
  // The CUDA model lives in a module loaded only here: a process that trains on the CPU never
  // loads the CUDA runtime or cuBLAS (with them loaded, prometheus-cpp's HTTP server failed to
  // start or crashed in our tests). The module sits in ../lib relative to this executable.
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  std::string dir = n > 0 ? std::string(self, n) : std::string();
  dir = dir.substr(0, dir.rfind('/'));
  const std::string path = dir.substr(0, dir.rfind('/')) + "/lib/libternps_trainer_cuda.so";
  void* module = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (module == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("--device=cuda: cannot load ", path, ": ", dlerror()));
  }
  using Create = Model* (*)(const int*, int, uint64_t, char*, size_t);
  auto create = reinterpret_cast<Create>(dlsym(module, "TernpsCreateCudaModel"));
  if (create == nullptr) {
    return absl::InternalError(absl::StrCat(path, ": no TernpsCreateCudaModel"));
  }
  char error[1024] = {0};
  Model* model = create(sizes.data(), static_cast<int>(sizes.size()), seed, error, sizeof(error));
  if (model == nullptr) return absl::FailedPreconditionError(error);
  return std::unique_ptr<Model>(model);
#else
  (void)sizes;
  (void)seed;
  return absl::UnimplementedError("--device=cuda: this build has no CUDA (TERNPS_CUDA)");
#endif
}

}  // namespace ternps::worker
