#include "worker/trainer/fashion_mnist.h"

#include <zlib.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace ternps::worker {
namespace {

// Fashion-MNIST's training-set pixel mean and standard deviation (of pixel / 255).
constexpr float kMean = 0.2860f;
constexpr float kStd = 0.3530f;

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};

absl::StatusOr<std::vector<uint8_t>> ReadGzip(const std::string& path) {
  std::unique_ptr<gzFile_s, GzCloser> file(gzopen(path.c_str(), "rb"));
  if (file == nullptr) {
    return absl::NotFoundError(absl::StrCat(path,
                                            ": cannot open (install the Debian package "
                                            "dataset-fashion-mnist, or pass --data_dir)"));
  }
  std::vector<uint8_t> bytes;
  uint8_t buffer[1 << 16];
  while (true) {
    const int n = gzread(file.get(), buffer, sizeof(buffer));
    if (n < 0) return absl::InvalidArgumentError(absl::StrCat(path, ": corrupt gzip stream"));
    if (n == 0) break;
    bytes.insert(bytes.end(), buffer, buffer + n);
    if (bytes.size() > (size_t{256} << 20)) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 256 MiB"));
    }
  }
  return bytes;
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  const std::string images_path = absl::StrCat(dir, "/", prefix, "-images-idx3-ubyte.gz");
  const std::string labels_path = absl::StrCat(dir, "/", prefix, "-labels-idx1-ubyte.gz");
  absl::StatusOr<std::vector<uint8_t>> images = ReadGzip(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<std::vector<uint8_t>> labels = ReadGzip(labels_path);
  if (!labels.ok()) return labels.status();
  if (images->size() < 16 || BigEndian32(images->data()) != 0x00000803) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": not an IDX3 ubyte file"));
  }
  if (labels->size() < 8 || BigEndian32(labels->data()) != 0x00000801) {
    return absl::InvalidArgumentError(absl::StrCat(labels_path, ": not an IDX1 ubyte file"));
  }
  const uint32_t count = BigEndian32(images->data() + 4);
  const uint32_t rows = BigEndian32(images->data() + 8);
  const uint32_t cols = BigEndian32(images->data() + 12);
  if (rows != 28 || cols != 28) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, ": images are ", rows, "x", cols, ", expected 28x28"));
  }
  if (images->size() != 16 + uint64_t{count} * kImagePixels) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, ": ", images->size(), " bytes for ", count, " images"));
  }
  if (BigEndian32(labels->data() + 4) != count || labels->size() != 8 + uint64_t{count}) {
    return absl::InvalidArgumentError(
        absl::StrCat(labels_path, ": label count does not match ", count, " images"));
  }
  Dataset d;
  d.count = static_cast<int>(count);
  d.images.resize(size_t{count} * kImagePixels);
  for (size_t i = 0; i < d.images.size(); ++i) {
    d.images[i] = ((*images)[16 + i] / 255.0f - kMean) / kStd;
  }
  d.labels.assign(labels->begin() + 8, labels->end());
  for (uint32_t i = 0; i < count; ++i) {
    if (d.labels[i] >= kClasses) {
      return absl::InvalidArgumentError(
          absl::StrCat(labels_path, ": label ", int{d.labels[i]}, " of item ", i, " is not 0..9"));
    }
  }
  return d;
}

}  // namespace ternps::worker
