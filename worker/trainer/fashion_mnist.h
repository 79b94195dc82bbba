// Fashion-MNIST from its IDX files (gzip-compressed, as the Debian package dataset-fashion-mnist
// ships them under /usr/share/datasets/fashion-mnist/): 60,000 training and 10,000 test images of
// 28x28 bytes, labels 0..9.
//
//   absl::StatusOr<Dataset> train = LoadFashionMnist(dir, Split::kTrain);
//
// The files are untrusted: wrong magic numbers, sizes, truncation or labels outside 0..9 give
// INVALID_ARGUMENT naming the file. Thread-compatible.
#ifndef TERNPS_WORKER_TRAINER_FASHION_MNIST_H_
#define TERNPS_WORKER_TRAINER_FASHION_MNIST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace ternps::worker {

inline constexpr int kImagePixels = 28 * 28;
inline constexpr int kClasses = 10;

struct Dataset {
  int count = 0;
  std::vector<float> images;    // count x 784, normalized (pixel/255 - mean) / std
  std::vector<uint8_t> labels;  // count
};

enum class Split { kTrain, kTest };

absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, Split split);

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_TRAINER_FASHION_MNIST_H_
