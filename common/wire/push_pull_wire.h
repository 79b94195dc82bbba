// PushPull's messages on the wire without protobuf's copies: a reader that parses the protobuf
// encoding of a PushPullRequest / PushPullResponse into views whose data pieces point into the
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

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace ternps::common {

using Piece = absl::Span<const uint8_t>;

// A PartitionPayload whose data stays where it was received (or where the sender keeps it).
// Received messages come in pieces (gRPC slices), so the data is a list of spans, in order.
struct PayloadView {
  uint32_t partition_id = 0;
  int encoding = 0;  // ternps.v1.Encoding
  float scaler = 0.0f;
  uint32_t elements = 0;
  uint32_t contributors = 0;
  std::vector<Piece> pieces;  // the data; writers ignore it

  size_t data_size() const;
  // The data in one span: its only piece, or a copy of the pieces into `scratch`.
  absl::Span<const uint8_t> Gather(std::vector<uint8_t>* scratch) const;
};

// Calls fn(run, offset) for consecutive runs of whole `unit`-byte elements (unit <= 64) of
// `pieces`, offset in units from the start; a unit split across two pieces is passed alone from a
// small copy. With `tail`, bytes after the last whole unit are passed last as a short run (else
// they are ignored).
template <typename Fn>
void ForEachRun(absl::Span<const Piece> pieces, size_t unit, Fn fn, bool tail = false) {
  uint8_t carry[64];
  size_t carried = 0;
  size_t offset = 0;
  for (Piece piece : pieces) {
    if (carried > 0) {
      const size_t take = std::min(unit - carried, piece.size());
      std::memcpy(carry + carried, piece.data(), take);
      carried += take;
      piece.remove_prefix(take);
      if (carried < unit) continue;
      fn(Piece(carry, unit), offset);
      ++offset;
      carried = 0;
    }
    const size_t whole = piece.size() / unit * unit;
    if (whole > 0) {
      fn(piece.subspan(0, whole), offset);
      offset += whole / unit;
    }
    carried = piece.size() - whole;
    if (carried > 0) std::memcpy(carry, piece.data() + whole, carried);  // data() may be null
  }
  if (tail && carried > 0) fn(Piece(carry, carried), offset);
}

// Calls fn(run, first, n) over a payload of `elements` elements held in `pieces` and laid out in
// blocks of `block_bytes` bytes (<= 64) that hold `block_elements` elements each, the last block
// possibly shorter: INT_SUM's groups of 8 fields in `bits` bytes, INT_SUM_RADIX's 64-byte blocks of
// 32 m. Runs of whole blocks, then the short last block, each holding elements [first, first + n)
// as a payload of its own. (A payload of the wrong size gives some run a size that does not match
// its n, which that run's decoder refuses.)
template <typename Fn>
void ForEachBlockRun(absl::Span<const Piece> pieces, size_t block_bytes, size_t block_elements,
                     size_t elements, Fn fn) {
  ForEachRun(
      pieces, block_bytes,
      [&](Piece run, size_t block) {
        const size_t first = std::min(elements, block * block_elements);
        const size_t left = elements - first;
        fn(run, first,
           run.size() % block_bytes == 0 ? std::min(left, run.size() / block_bytes * block_elements)
                                         : left);
      },
      /*tail=*/true);
}

struct PushPullRequestView {
  absl::string_view job_id;
  std::string job_id_storage;  // when job_id arrived split across pieces
  uint32_t worker_rank = 0;
  uint64_t epoch = 0;
  uint64_t step = 0;
  std::vector<PayloadView> partitions;
};

struct PushPullResponseView {
  uint64_t step = 0;
  std::vector<PayloadView> averages;
};

// Parse the protobuf encoding in `pieces` (concatenated); the views point into them, which must
// outlive the views (and `out` must not be moved while job_id points into job_id_storage).
absl::Status ParsePushPullRequest(absl::Span<const Piece> pieces, PushPullRequestView* out);
absl::Status ParsePushPullResponse(absl::Span<const Piece> pieces, PushPullResponseView* out);
inline absl::Status ParsePushPullRequest(Piece bytes, PushPullRequestView* out) {
  return ParsePushPullRequest(absl::MakeConstSpan(&bytes, 1), out);
}
inline absl::Status ParsePushPullResponse(Piece bytes, PushPullResponseView* out) {
  return ParsePushPullResponse(absl::MakeConstSpan(&bytes, 1), out);
}

// Writers. A message is its head fields followed by one entry per payload, each entry being
// AppendPayloadHead's bytes immediately followed by the payload's `data_bytes` bytes.
// PushPullRequest fields 1-4 (job_id, worker_rank, epoch, step).
void AppendPushPullRequestHead(absl::string_view job_id, uint32_t worker_rank, uint64_t epoch,
                               uint64_t step, std::string* out);
// PushPullResponse field 1 (step).
void AppendPushPullResponseHead(uint64_t step, std::string* out);
// One entry of the repeated payload field `field` (kRequestPartitionsField or
// kResponseAveragesField): its tag and length, then every field of `payload` but the data, then
// the data's tag and length. `payload.pieces` is not read.
void AppendPayloadHead(int field, const PayloadView& payload, size_t data_bytes, std::string* out);

inline constexpr int kRequestPartitionsField = 5;  // PushPullRequest.partitions
inline constexpr int kResponseAveragesField = 2;   // PushPullResponse.averages

}  // namespace ternps::common

#endif  // TERNPS_COMMON_WIRE_PUSH_PULL_WIRE_H_
