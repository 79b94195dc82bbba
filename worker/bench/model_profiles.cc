#include "worker/bench/model_profiles.h"

#include "absl/strings/str_cat.h"

namespace ternps::bench {
namespace {

using Tensors = std::vector<worker::TensorInfo>;

void Conv(Tensors& t, const std::string& name, int in, int out, int k, bool bias) {
  t.push_back({name + ".weight", uint64_t(in) * out * k * k, false});
  if (bias) t.push_back({name + ".bias", uint64_t(out), false});
}
void Norm(Tensors& t, const std::string& name, int channels) {
  t.push_back({name + ".weight", uint64_t(channels), false});
  t.push_back({name + ".bias", uint64_t(channels), false});
}
void Linear(Tensors& t, const std::string& name, int in, int out) {
  t.push_back({name + ".weight", uint64_t(in) * out, false});
  t.push_back({name + ".bias", uint64_t(out), false});
}

Tensors ResNet50() {
  Tensors t;
  Conv(t, "conv1", 3, 64, 7, false);
  Norm(t, "bn1", 64);
  const int blocks[4] = {3, 4, 6, 3};
  int in = 64;
  for (int stage = 0; stage < 4; ++stage) {
    const int width = 64 << stage;
    for (int b = 0; b < blocks[stage]; ++b) {
      const std::string p = absl::StrCat("layer", stage + 1, ".", b);
      Conv(t, p + ".conv1", in, width, 1, false);
      Norm(t, p + ".bn1", width);
      Conv(t, p + ".conv2", width, width, 3, false);
      Norm(t, p + ".bn2", width);
      Conv(t, p + ".conv3", width, 4 * width, 1, false);
      Norm(t, p + ".bn3", 4 * width);
      if (b == 0) {
        Conv(t, p + ".downsample.0", in, 4 * width, 1, false);
        Norm(t, p + ".downsample.1", 4 * width);
      }
      in = 4 * width;
    }
  }
  Linear(t, "fc", 2048, 1000);
  return t;
}

Tensors AlexNet() {
  Tensors t;
  Conv(t, "features.0", 3, 64, 11, true);
  Conv(t, "features.3", 64, 192, 5, true);
  Conv(t, "features.6", 192, 384, 3, true);
  Conv(t, "features.8", 384, 256, 3, true);
  Conv(t, "features.10", 256, 256, 3, true);
  Linear(t, "classifier.1", 256 * 6 * 6, 4096);
  Linear(t, "classifier.4", 4096, 4096);
  Linear(t, "classifier.6", 4096, 1000);
  return t;
}

Tensors Vgg16() {
  Tensors t;
  const int widths[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512};
  int in = 3;
  int index = 0;
  for (const int w : widths) {
    if (w == 0) {
      ++index;  // max-pool
      continue;
    }
    Conv(t, absl::StrCat("features.", index), in, w, 3, true);
    in = w;
    index += 2;
  }
  Linear(t, "classifier.0", 512 * 7 * 7, 4096);
  Linear(t, "classifier.3", 4096, 4096);
  Linear(t, "classifier.6", 4096, 1000);
  return t;
}

}  // namespace

absl::StatusOr<std::vector<worker::TensorInfo>> ModelProfile(const std::string& name) {
  if (name == "resnet50") return ResNet50();
  if (name == "alexnet") return AlexNet();
  if (name == "vgg16") return Vgg16();
  return absl::InvalidArgumentError(
      absl::StrCat("--profile=", name, ": expected resnet50, alexnet or vgg16"));
}

}  // namespace ternps::bench
