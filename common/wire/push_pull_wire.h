// PushPull's messages on the wire without protobuf's copies: a reader that parses the protobuf
// encoding of a PushPullRequest / PushPullResponse into views whose `data` spans point into the
// received bytes, and writers that emit every field but the payload bytes, so the payloads can
// travel as separate gRPC slices aliasing the caller's own buffers. The bytes are exactly what
// protobuf produces and accepts for proto/ternps/v1/ternps.proto (v1 is unchanged; peers that
// use the generated classes interoperate).
//
//   PushPullRequestView request;
//   absl::Status st = ParsePushPullRequest(bytes, &request);   // INVALID_ARGUMENT naming a field
//   std::string head;
//   AppendPayloadHead(payload_fields, data.size(), &head);    // then send `data` as its own slice
//
// Parsing is for untrusted input: truncated or overlong varints and lengths, groups and wrong
// wire types are INVALID_ARGUMENT; unknown fields are skipped as protobuf does. Thread-safe (pure
// functions).
#ifndef TERNPS_COMMON_WIRE_PUSH_PULL_WIRE_H_
#define TERNPS_COMMON_WIRE_PUSH_PULL_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace ternps::common {

// A PartitionPayload whose data stays where it was received (or where the sender keeps it).
struct PayloadView {
  uint32_t partition_id = 0;
  int encoding = 0;  // ternps.v1.Encoding
  float scaler = 0.0f;
  uint32_t elements = 0;
  uint32_t contributors = 0;
  absl::Span<const uint8_t> data;
};

struct PushPullRequestView {
  absl::string_view job_id;
  uint32_t worker_rank = 0;
  uint64_t epoch = 0;
  uint64_t step = 0;
  std::vector<PayloadView> partitions;
};

struct PushPullResponseView {
  uint64_t step = 0;
  std::vector<PayloadView> averages;
};

// Parse the protobuf encoding in `bytes`; the views point into `bytes`, which must outlive them.
absl::Status ParsePushPullRequest(absl::Span<const uint8_t> bytes, PushPullRequestView* out);
absl::Status ParsePushPullResponse(absl::Span<const uint8_t> bytes, PushPullResponseView* out);

// Writers. A message is its head fields followed by one entry per payload, each entry being
// AppendPayloadHead's bytes immediately followed by the payload's `data_bytes` bytes.
// PushPullRequest fields 1-4 (job_id, worker_rank, epoch, step).
void AppendPushPullRequestHead(absl::string_view job_id, uint32_t worker_rank, uint64_t epoch,
                               uint64_t step, std::string* out);
// PushPullResponse field 1 (step).
void AppendPushPullResponseHead(uint64_t step, std::string* out);
// One entry of the repeated payload field `field` (kRequestPartitionsField or
// kResponseAveragesField): its tag and length, then every field of `payload` but the data, then
// the data's tag and length. `payload.data` is not read.
void AppendPayloadHead(int field, const PayloadView& payload, size_t data_bytes, std::string* out);

inline constexpr int kRequestPartitionsField = 5;  // PushPullRequest.partitions
inline constexpr int kResponseAveragesField = 2;   // PushPullResponse.averages

}  // namespace ternps::common

#endif  // TERNPS_COMMON_WIRE_PUSH_PULL_WIRE_H_
