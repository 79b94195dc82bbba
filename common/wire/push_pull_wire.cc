#include "common/wire/push_pull_wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ternps::common {
namespace {

enum WireType { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// A cursor over protobuf wire bytes; every read checks the bounds.
class Reader {
 public:
  explicit Reader(absl::Span<const uint8_t> bytes) : p_(bytes.data()), end_(p_ + bytes.size()) {}
  bool done() const { return p_ == end_; }

  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) return false;
      const uint8_t b = *p_++;
      result |= uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80u) == 0) {
        *v = result;
        return true;
      }
    }
    return false;  // more than 10 bytes
  }
  bool Fixed32(uint32_t* v) {
    if (end_ - p_ < 4) return false;
    *v = uint32_t{p_[0]} | uint32_t{p_[1]} << 8 | uint32_t{p_[2]} << 16 | uint32_t{p_[3]} << 24;
    p_ += 4;
    return true;
  }
  bool Bytes(absl::Span<const uint8_t>* out) {
    uint64_t n = 0;
    if (!Varint(&n) || n > static_cast<uint64_t>(end_ - p_)) return false;
    *out = absl::MakeConstSpan(p_, n);
    p_ += n;
    return true;
  }
  // Skips a field of an unknown number.
  bool Skip(int wire_type) {
    uint64_t v = 0;
    absl::Span<const uint8_t> s;
    switch (wire_type) {
      case kVarint:
        return Varint(&v);
      case kFixed64:
        if (end_ - p_ < 8) return false;
        p_ += 8;
        return true;
      case kLengthDelimited:
        return Bytes(&s);
      case kFixed32:
        if (end_ - p_ < 4) return false;
        p_ += 4;
        return true;
      default:  // groups (3, 4) and invalid types
        return false;
    }
  }
  // The next tag: field number and wire type.
  bool Tag(int* field, int* wire_type) {
    uint64_t tag = 0;
    if (!Varint(&tag) || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) return false;
    *field = static_cast<int>(tag >> 3);
    *wire_type = static_cast<int>(tag & 7);
    return true;
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

absl::Status Malformed(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(what, ": malformed protobuf encoding"));
}

// Reads a varint field of `wire_type` into a 32-bit value (protobuf truncates, as here).
bool Uint32Field(Reader& r, int wire_type, uint32_t* out) {
  uint64_t v = 0;
  if (wire_type != kVarint || !r.Varint(&v)) return false;
  *out = static_cast<uint32_t>(v);
  return true;
}

absl::Status ParsePayload(absl::Span<const uint8_t> bytes, absl::string_view where,
                          PayloadView* out) {
  Reader r(bytes);
  *out = PayloadView{};
  while (!r.done()) {
    int field = 0, type = 0;
    if (!r.Tag(&field, &type)) return Malformed(where);
    bool ok = true;
    switch (field) {
      case 1:
        ok = Uint32Field(r, type, &out->partition_id);
        break;
      case 2: {
        uint32_t e = 0;
        ok = Uint32Field(r, type, &e);
        out->encoding = static_cast<int>(e);
        break;
      }
      case 3: {
        uint32_t bits = 0;
        ok = type == kFixed32 && r.Fixed32(&bits);
        std::memcpy(&out->scaler, &bits, 4);
        break;
      }
      case 4:
        ok = Uint32Field(r, type, &out->elements);
        break;
      case 5:
        ok = Uint32Field(r, type, &out->contributors);
        break;
      case 6:
        ok = type == kLengthDelimited && r.Bytes(&out->data);
        break;
      default:
        ok = r.Skip(type);
    }
    if (!ok) return Malformed(where);
  }
  return absl::OkStatus();
}

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void PutTag(int field, int wire_type, std::string* out) {
  PutVarint((static_cast<uint64_t>(field) << 3) | wire_type, out);
}

}  // namespace

absl::Status ParsePushPullRequest(absl::Span<const uint8_t> bytes, PushPullRequestView* out) {
  Reader r(bytes);
  out->job_id = {};
  out->worker_rank = 0;
  out->epoch = 0;
  out->step = 0;
  out->partitions.clear();
  while (!r.done()) {
    int field = 0, type = 0;
    if (!r.Tag(&field, &type)) return Malformed("PushPullRequest");
    bool ok = true;
    absl::Span<const uint8_t> s;
    switch (field) {
      case 1:
        ok = type == kLengthDelimited && r.Bytes(&s);
        out->job_id = absl::string_view(reinterpret_cast<const char*>(s.data()), s.size());
        break;
      case 2:
        ok = Uint32Field(r, type, &out->worker_rank);
        break;
      case 3:
        ok = type == kVarint && r.Varint(&out->epoch);
        break;
      case 4:
        ok = type == kVarint && r.Varint(&out->step);
        break;
      case kRequestPartitionsField: {
        ok = type == kLengthDelimited && r.Bytes(&s);
        if (!ok) break;
        PayloadView p;
        if (absl::Status st =
                ParsePayload(s, absl::StrCat("partitions[", out->partitions.size(), "]"), &p);
            !st.ok()) {
          return st;
        }
        out->partitions.push_back(p);
        break;
      }
      default:
        ok = r.Skip(type);
    }
    if (!ok) return Malformed(absl::StrCat("PushPullRequest field ", field));
  }
  return absl::OkStatus();
}

absl::Status ParsePushPullResponse(absl::Span<const uint8_t> bytes, PushPullResponseView* out) {
  Reader r(bytes);
  out->step = 0;
  out->averages.clear();
  while (!r.done()) {
    int field = 0, type = 0;
    if (!r.Tag(&field, &type)) return Malformed("PushPullResponse");
    bool ok = true;
    absl::Span<const uint8_t> s;
    switch (field) {
      case 1:
        ok = type == kVarint && r.Varint(&out->step);
        break;
      case kResponseAveragesField: {
        ok = type == kLengthDelimited && r.Bytes(&s);
        if (!ok) break;
        PayloadView p;
        if (absl::Status st =
                ParsePayload(s, absl::StrCat("averages[", out->averages.size(), "]"), &p);
            !st.ok()) {
          return st;
        }
        out->averages.push_back(p);
        break;
      }
      default:
        ok = r.Skip(type);
    }
    if (!ok) return Malformed(absl::StrCat("PushPullResponse field ", field));
  }
  return absl::OkStatus();
}

void AppendPushPullRequestHead(absl::string_view job_id, uint32_t worker_rank, uint64_t epoch,
                               uint64_t step, std::string* out) {
  PutTag(1, kLengthDelimited, out);
  PutVarint(job_id.size(), out);
  out->append(job_id.data(), job_id.size());
  PutTag(2, kVarint, out);
  PutVarint(worker_rank, out);
  PutTag(3, kVarint, out);
  PutVarint(epoch, out);
  PutTag(4, kVarint, out);
  PutVarint(step, out);
}

void AppendPushPullResponseHead(uint64_t step, std::string* out) {
  PutTag(1, kVarint, out);
  PutVarint(step, out);
}

void AppendPayloadHead(int field, const PayloadView& p, size_t data_bytes, std::string* out) {
  std::string body;
  PutTag(1, kVarint, &body);
  PutVarint(p.partition_id, &body);
  PutTag(2, kVarint, &body);
  PutVarint(static_cast<uint32_t>(p.encoding), &body);
  PutTag(3, kFixed32, &body);
  uint32_t bits = 0;
  std::memcpy(&bits, &p.scaler, 4);
  for (int i = 0; i < 4; ++i) body.push_back(static_cast<char>(bits >> (8 * i)));
  PutTag(4, kVarint, &body);
  PutVarint(p.elements, &body);
  PutTag(5, kVarint, &body);
  PutVarint(p.contributors, &body);
  PutTag(6, kLengthDelimited, &body);
  PutVarint(data_bytes, &body);
  PutTag(field, kLengthDelimited, out);
  PutVarint(body.size() + data_bytes, out);
  out->append(body);
}

}  // namespace ternps::common
