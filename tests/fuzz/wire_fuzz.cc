// libFuzzer target: the PushPull wire reader (common/wire), which parses untrusted requests on
// the shard and answers on the worker without protobuf, against protobuf itself.
//
// Input: byte 0 picks request or response (bit 0) and where the bytes are cut into pieces (as
// gRPC slices cut them; bits 1-7), the rest is the message. Checked: parsing never crashes, the
// same bytes cut differently parse alike, and whatever both this reader and protobuf accept has
// the same fields in both.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/wire/push_pull_wire.h"
#include "ternps/v1/ternps.pb.h"

namespace {

using ternps::common::PayloadView;
using ternps::common::Piece;

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "wire_fuzz: %s\n", what);
  __builtin_trap();
}

std::string Data(const PayloadView& p) {
  std::vector<uint8_t> scratch;
  const absl::Span<const uint8_t> d = p.Gather(&scratch);
  return std::string(reinterpret_cast<const char*>(d.data()), d.size());
}

void Same(const PayloadView& v, const ternps::v1::PartitionPayload& p) {
  const float scaler = p.scaler();  // compared bit for bit (NaN payloads included)
  if (v.partition_id != p.partition_id() || v.encoding != p.encoding() ||
      v.elements != p.elements() || v.contributors != p.contributors() || Data(v) != p.data() ||
      std::memcmp(&v.scaler, &scaler, 4) != 0) {
    Fail("a payload differs from protobuf's parse");
  }
}

// The message cut into pieces at positions derived from `cuts`.
std::vector<Piece> Cut(const uint8_t* data, size_t size, uint8_t cuts) {
  std::vector<Piece> pieces;
  size_t at = 0;
  for (int i = 0; i < 3 && at < size; ++i) {
    const size_t len = (cuts >> (2 * i) & 3) == 0
                           ? size - at
                           : std::min(size - at, size_t{1} + (cuts * (i + 7)) % 97);
    pieces.emplace_back(data + at, len);
    at += len;
  }
  if (at < size) pieces.emplace_back(data + at, size - at);
  return pieces;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool request = (data[0] & 1) == 0;
  const uint8_t cuts = data[0] >> 1;
  ++data;
  --size;
  const std::vector<Piece> pieces = Cut(data, size, cuts);
  const Piece whole(data, size);
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  if (request) {
    ternps::common::PushPullRequestView cut, one;
    const bool ok = ternps::common::ParsePushPullRequest(pieces, &cut).ok();
    if (ternps::common::ParsePushPullRequest(whole, &one).ok() != ok) {
      Fail("cutting the request into pieces changed whether it parses");
    }
    ternps::v1::PushPullRequest pb;
    if (!ok || !pb.ParseFromString(bytes)) return 0;
    if (cut.job_id != pb.job_id() || cut.worker_rank != pb.worker_rank() ||
        cut.epoch != pb.epoch() || cut.step != pb.step() ||
        cut.partitions.size() != static_cast<size_t>(pb.partitions_size())) {
      Fail("the request's fields differ from protobuf's parse");
    }
    for (int i = 0; i < pb.partitions_size(); ++i) Same(cut.partitions[i], pb.partitions(i));
  } else {
    ternps::common::PushPullResponseView cut, one;
    const bool ok = ternps::common::ParsePushPullResponse(pieces, &cut).ok();
    if (ternps::common::ParsePushPullResponse(whole, &one).ok() != ok) {
      Fail("cutting the response into pieces changed whether it parses");
    }
    ternps::v1::PushPullResponse pb;
    if (!ok || !pb.ParseFromString(bytes)) return 0;
    if (cut.step != pb.step() || cut.averages.size() != static_cast<size_t>(pb.averages_size())) {
      Fail("the response's fields differ from protobuf's parse");
    }
    for (int i = 0; i < pb.averages_size(); ++i) Same(cut.averages[i], pb.averages(i));
  }
  return 0;
}
