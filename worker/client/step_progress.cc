#include "worker/client/step_progress.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace ternps::worker {

StepProgress::StepProgress(const std::vector<std::vector<uint32_t>>& call_partitions,
                           const std::vector<uint32_t>& tensor_of_partition, uint32_t tensors)
    : tensors_(tensors), calls_of_tensor_(tensors), tensors_of_call_(call_partitions.size()) {
  for (size_t c = 0; c < call_partitions.size(); ++c) {
    std::vector<uint32_t>& of_call = tensors_of_call_[c];
    for (const uint32_t p : call_partitions[c]) of_call.push_back(tensor_of_partition[p]);
    std::sort(of_call.begin(), of_call.end());
    of_call.erase(std::unique(of_call.begin(), of_call.end()), of_call.end());
    for (const uint32_t t : of_call) calls_of_tensor_[t].push_back(static_cast<uint32_t>(c));
  }
  Begin();
}

void StepProgress::Begin() {
  marked_.assign(tensors_, false);
  marked_count_ = 0;
  call_unmarked_.resize(tensors_of_call_.size());
  for (size_t c = 0; c < tensors_of_call_.size(); ++c) {
    call_unmarked_[c] = static_cast<uint32_t>(tensors_of_call_[c].size());
  }
  tensor_left_.resize(tensors_);
  for (uint32_t t = 0; t < tensors_; ++t) {
    tensor_left_[t] = static_cast<uint32_t>(calls_of_tensor_[t].size());
  }
  group_of_tensor_.assign(tensors_, -1);
  groups_.clear();
}

absl::StatusOr<std::vector<size_t>> StepProgress::Mark(absl::Span<const uint32_t> tensors,
                                                       Written written) {
  if (tensors.empty()) return absl::InvalidArgumentError("tensors: empty");
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint32_t t = tensors[i];
    if (t >= tensors_) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "]: ", t, " is not below the job's ", tensors_, " tensors"));
    }
    if (marked_[t]) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensors[", i, "]: tensor ", t, " is already marked ready in this step"));
    }
    if (std::find(tensors.begin(), tensors.begin() + i, t) != tensors.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat("tensors[", i, "]: ", t, " is listed twice"));
    }
  }
  const int group = static_cast<int>(groups_.size());
  groups_.push_back({std::move(written), static_cast<uint32_t>(tensors.size()), false});
  std::vector<size_t> ready;
  for (const uint32_t t : tensors) {
    marked_[t] = true;
    ++marked_count_;
    group_of_tensor_[t] = group;
    for (const uint32_t c : calls_of_tensor_[t]) {
      if (--call_unmarked_[c] == 0) ready.push_back(c);
    }
  }
  std::sort(ready.begin(), ready.end());
  return ready;
}

std::vector<StepProgress::Written> StepProgress::Decoded(size_t call) {
  std::vector<int> complete;
  for (const uint32_t t : tensors_of_call_[call]) {
    if (--tensor_left_[t] != 0) continue;
    Group& g = groups_[group_of_tensor_[t]];
    if (--g.left == 0) complete.push_back(group_of_tensor_[t]);
  }
  std::sort(complete.begin(), complete.end());
  std::vector<Written> out;
  for (const int i : complete) {
    Group& g = groups_[i];
    g.called = true;
    if (g.written) out.push_back(std::move(g.written));
  }
  return out;
}

std::vector<StepProgress::Written> StepProgress::TakeUncalled() {
  std::vector<Written> out;
  for (Group& g : groups_) {
    if (g.called) continue;
    g.called = true;
    if (g.written) out.push_back(std::move(g.written));
  }
  return out;
}

std::vector<uint32_t> StepProgress::Unmarked(size_t limit) const {
  std::vector<uint32_t> out;
  for (uint32_t t = 0; t < tensors_ && out.size() < limit; ++t) {
    if (!marked_[t]) out.push_back(t);
  }
  return out;
}

}  // namespace ternps::worker
