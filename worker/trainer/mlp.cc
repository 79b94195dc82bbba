#include "worker/trainer/mlp.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "absl/strings/str_cat.h"

namespace ternps::worker {

Mlp::Mlp(std::vector<int> sizes, uint64_t seed) : sizes_(std::move(sizes)) {
  std::mt19937_64 rng(seed);
  for (size_t l = 0; l + 1 < sizes_.size(); ++l) {
    const int in = sizes_[l];
    const int out = sizes_[l + 1];
    // He-uniform for ReLU layers: U(-sqrt(6/in), sqrt(6/in)); biases 0.
    std::uniform_real_distribution<float> init(-std::sqrt(6.0f / in), std::sqrt(6.0f / in));
    std::vector<float> w(size_t(out) * in);
    for (float& v : w) v = init(rng);
    params_.push_back(std::move(w));
    params_.emplace_back(out, 0.0f);
  }
  for (const auto& p : params_) {
    grads_.emplace_back(p.size(), 0.0f);
    velocity_.emplace_back(p.size(), 0.0f);
  }
  activations_.resize(sizes_.size());
  deltas_.resize(sizes_.size());
}

std::vector<TensorInfo> Mlp::Tensors() const {
  std::vector<TensorInfo> tensors;
  for (size_t l = 0; l + 1 < sizes_.size(); ++l) {
    tensors.push_back({absl::StrCat("fc", l + 1, ".weight"), params_[2 * l].size(), false});
    tensors.push_back({absl::StrCat("fc", l + 1, ".bias"), params_[2 * l + 1].size(), false});
  }
  return tensors;
}

std::vector<absl::Span<float>> Mlp::Gradients() {
  std::vector<absl::Span<float>> spans;
  for (auto& g : grads_) spans.push_back(absl::MakeSpan(g));
  return spans;
}

std::vector<absl::Span<float>> Mlp::State() {
  std::vector<absl::Span<float>> spans;
  for (size_t t = 0; t < params_.size(); ++t) {
    spans.push_back(absl::MakeSpan(params_[t]));
    spans.push_back(absl::MakeSpan(velocity_[t]));
  }
  return spans;
}

size_t Mlp::parameter_count() const {
  size_t n = 0;
  for (const auto& p : params_) n += p.size();
  return n;
}

const float* Mlp::Forward(const float* images, int batch) {
  const float* input = images;
  const size_t layers = sizes_.size() - 1;
  for (size_t l = 0; l < layers; ++l) {
    const int in = sizes_[l];
    const int out = sizes_[l + 1];
    std::vector<float>& a = activations_[l + 1];
    a.resize(size_t(batch) * out);
    const std::vector<float>& bias = params_[2 * l + 1];
    for (int i = 0; i < batch; ++i) std::memcpy(&a[size_t(i) * out], bias.data(), out * 4);
    // a = input (batch x in) * W^T (in x out) + bias
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, out, in, 1.0f, input, in,
                params_[2 * l].data(), in, 1.0f, a.data(), out);
    if (l + 1 < layers) {
      for (float& v : a) v = v > 0.0f ? v : 0.0f;
    }
    input = a.data();
  }
  return activations_[layers].data();
}

float Mlp::ComputeGradients(const float* images, const uint8_t* labels, int batch) {
  const size_t layers = sizes_.size() - 1;
  const int classes = sizes_.back();
  const float* logits = Forward(images, batch);
  // Softmax cross-entropy; delta = (softmax - onehot) / batch.
  std::vector<float>& delta = deltas_[layers];
  delta.resize(size_t(batch) * classes);
  double loss = 0.0;
  for (int i = 0; i < batch; ++i) {
    const float* z = logits + size_t(i) * classes;
    float* d = &delta[size_t(i) * classes];
    const float m = *std::max_element(z, z + classes);
    double sum = 0.0;
    for (int c = 0; c < classes; ++c) sum += std::exp(double(z[c] - m));
    for (int c = 0; c < classes; ++c) {
      const double p = std::exp(double(z[c] - m)) / sum;
      d[c] = static_cast<float>((p - (c == labels[i] ? 1.0 : 0.0)) / batch);
    }
    loss += std::log(sum) - double(z[labels[i]] - m);
  }
  for (size_t l = layers; l-- > 0;) {
    const int in = sizes_[l];
    const int out = sizes_[l + 1];
    const float* input = l == 0 ? images : activations_[l].data();
    const float* d = deltas_[l + 1].data();
    // dW (out x in) = d^T (out x batch) * input (batch x in); db = column sums of d.
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, batch, 1.0f, d, out, input, in,
                0.0f, grads_[2 * l].data(), in);
    std::vector<float>& db = grads_[2 * l + 1];
    std::fill(db.begin(), db.end(), 0.0f);
    for (int i = 0; i < batch; ++i) {
      for (int o = 0; o < out; ++o) db[o] += d[size_t(i) * out + o];
    }
    if (l > 0) {
      // d_prev (batch x in) = d (batch x out) * W (out x in), masked by ReLU.
      std::vector<float>& prev = deltas_[l];
      prev.resize(size_t(batch) * in);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, in, out, 1.0f, d, out,
                  params_[2 * l].data(), in, 0.0f, prev.data(), in);
      const std::vector<float>& a = activations_[l];
      for (size_t k = 0; k < prev.size(); ++k) {
        if (a[k] <= 0.0f) prev[k] = 0.0f;
      }
    }
  }
  return static_cast<float>(loss / batch);
}

void Mlp::Apply(float lr, float momentum, float weight_decay) {
  for (size_t t = 0; t < params_.size(); ++t) {
    std::vector<float>& w = params_[t];
    std::vector<float>& v = velocity_[t];
    const std::vector<float>& g = grads_[t];
    // No decay on biases.
    const float wd = (t % 2 == 0) ? weight_decay : 0.0f;
    for (size_t k = 0; k < w.size(); ++k) {
      v[k] = momentum * v[k] + (g[k] + wd * w[k]);
      w[k] -= lr * v[k];
    }
  }
}

Mlp::Evaluation Mlp::Evaluate(const Dataset& data) {
  constexpr int kBatch = 500;
  const int classes = sizes_.back();
  double loss = 0.0;
  int correct = 0;
  for (int start = 0; start < data.count; start += kBatch) {
    const int batch = std::min(kBatch, data.count - start);
    const float* logits = Forward(&data.images[size_t(start) * kImagePixels], batch);
    ScoreLogits(logits, &data.labels[start], batch, classes, &loss, &correct);
  }
  return {loss / data.count, double(correct) / data.count};
}

uint64_t Mlp::Checksum() const { return ParameterChecksum(params_); }

void ScoreLogits(const float* logits, const uint8_t* labels, int rows, int classes, double* loss,
                 int* correct) {
  for (int i = 0; i < rows; ++i) {
    const float* z = logits + size_t(i) * classes;
    const int label = labels[i];
    const float m = *std::max_element(z, z + classes);
    double sum = 0.0;
    for (int c = 0; c < classes; ++c) sum += std::exp(double(z[c] - m));
    *loss += std::log(sum) - double(z[label] - m);
    if (std::max_element(z, z + classes) - z == label) ++*correct;
  }
}

uint64_t ParameterChecksum(const std::vector<std::vector<float>>& params) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const auto& p : params) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(p.data());
    for (size_t i = 0; i < p.size() * sizeof(float); ++i) {
      h ^= bytes[i];
      h *= 0x100000001b3ull;
    }
  }
  return h;
}

}  // namespace ternps::worker
