// What a streaming step knows about its tensors: which are marked ready (their gradients are
// computed), which PushPull calls may start (every tensor they carry a part of is marked), and
// which of the caller's groups of tensors have all their averages written. Pure bookkeeping (no
// I/O, no threads, no lock of its own): the worker calls it under its step lock, and runs the
// callbacks it hands back outside that lock.
//
//   StepProgress progress(call_partitions, tensor_of_partition, tensors);
//   progress.Begin();
//   std::vector<size_t> ready = *progress.Mark({3, 4}, on_written);  // calls 3 and 4 may start
//   for (Written& w : progress.Decoded(call)) w(absl::OkStatus());     // groups now written
#ifndef TERNPS_WORKER_CLIENT_STEP_PROGRESS_H_
#define TERNPS_WORKER_CLIENT_STEP_PROGRESS_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace ternps::worker {

class StepProgress {
 public:
  // Called once per group: OK when every tensor of the group holds its average, else the step's
  // error (after which the group's buffers are unspecified).
  using Written = std::function<void(const absl::Status&)>;

  // call_partitions[c]: the partitions call c carries; tensor_of_partition[p]: the tensor
  // partition p is a slice of (< tensors). Every partition is in exactly one call.
  StepProgress(const std::vector<std::vector<uint32_t>>& call_partitions,
               const std::vector<uint32_t>& tensor_of_partition, uint32_t tensors);

  // A new step: nothing marked, no group.
  void Begin();
  // Marks `tensors` ready as one group; `written` (may be null) is called once all of them are
  // written. INVALID_ARGUMENT for no tensor, or (naming tensors[i]) an index out of range, one
  // listed twice, or one marked before in this step; nothing is marked then. Returns the calls that
  // became ready, in call order.
  absl::StatusOr<std::vector<size_t>> Mark(absl::Span<const uint32_t> tensors, Written written);
  // Call c's averages are all written: the callbacks of the groups now complete, in the order
  // the groups were marked.
  std::vector<Written> Decoded(size_t call);
  // The callbacks not handed out yet (the step failed): each is to be called once with the error.
  std::vector<Written> TakeUncalled();

  bool all_marked() const { return marked_count_ == tensors_; }
  // Up to `limit` tensors not marked yet, in index order.
  std::vector<uint32_t> Unmarked(size_t limit) const;

 private:
  struct Group {
    Written written;
    uint32_t left = 0;  // tensors of the group not written yet
    bool called = false;
  };

  uint32_t tensors_;
  std::vector<std::vector<uint32_t>> calls_of_tensor_;  // per tensor: the calls carrying it
  std::vector<std::vector<uint32_t>> tensors_of_call_;  // per call: its tensors, each once
  // Per step.
  std::vector<bool> marked_;
  uint32_t marked_count_ = 0;
  std::vector<uint32_t> call_unmarked_;  // per call: its tensors not marked yet
  std::vector<uint32_t> tensor_left_;    // per tensor: its calls not decoded yet
  std::vector<int> group_of_tensor_;     // per tensor: its group, -1 before it is marked
  std::vector<Group> groups_;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_STEP_PROGRESS_H_
