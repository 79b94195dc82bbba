// What a PushPull is answered with, without protobuf in between: per partition the average's
// fields and its encoded bytes, which are shared by every call the average answers and by the
// gRPC slices that carry them (service.cc sends them without copying), and which the partition's
// aggregator reuses once nobody holds them any more.
//
//   PushPullAnswer answer;   // filled by the engine, one entry per requested partition
//   ToProto(answer, &response);   // for callers that use the generated classes
//
// Thread safety: AverageBytes is written by its aggregator before it is shared, then only read.
#ifndef TERNPS_SERVER_ANSWER_H_
#define TERNPS_SERVER_ANSWER_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/types/span.h"
#include "common/wire/push_pull_wire.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::server {

// A byte buffer that grows without zero-filling (it is always written whole before it is read).
class AverageBytes {
 public:
  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return size_; }
  absl::Span<uint8_t> span() { return absl::MakeSpan(data_.get(), size_); }
  absl::Span<const uint8_t> span() const { return absl::MakeConstSpan(data_.get(), size_); }
  // Makes room for n bytes (contents unspecified).
  void Resize(size_t n) {
    if (n > capacity_) {
      data_.reset(new uint8_t[n]);
      capacity_ = n;
    }
    size_ = n;
  }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

struct AnsweredAverage {
  common::PayloadView head;  // every field but data
  std::shared_ptr<const AverageBytes> bytes;
};

struct PushPullAnswer {
  uint64_t step = 0;
  std::vector<AnsweredAverage> averages;  // request order
};

// The generated-class forms, for in-process callers, tests and recovery (copies the bytes).
void ToProto(const AnsweredAverage& average, ternps::v1::PartitionPayload* payload);
void ToProto(const PushPullAnswer& answer, ternps::v1::PushPullResponse* response);
// A view of `request` (pointing into it; `request` must outlive the view).
common::PushPullRequestView ViewOf(const ternps::v1::PushPullRequest& request);

}  // namespace ternps::server

#endif  // TERNPS_SERVER_ANSWER_H_
