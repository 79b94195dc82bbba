#include "common/wire/push_pull_wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace ternps::common {
namespace {

enum WireType { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

// A cursor over protobuf wire bytes split in pieces, bounded by the end of the message (or
// submessage) it reads; every read checks the bounds.
class Reader {
 public:
  Reader(absl::Span<const Piece> pieces, size_t limit) : pieces_(pieces), left_(limit) { Settle(); }
  static Reader Whole(absl::Span<const Piece> pieces) {
    size_t total = 0;
    for (const Piece& p : pieces) total += p.size();
    return Reader(pieces, total);
  }
  bool done() const { return left_ == 0; }

  bool Byte(uint8_t* b) {
    if (left_ == 0) return false;
    *b = pieces_[index_][offset_];
    Advance(1);
    return true;
  }
  bool Varint(uint64_t* v) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b = 0;
      if (!Byte(&b)) return false;
      result |= uint64_t{b & 0x7fu} << shift;
      if ((b & 0x80u) == 0) {
        *v = result;
        return true;
      }
    }
    return false;  // more than 10 bytes
  }
  bool Fixed32(uint32_t* v) {
    uint32_t result = 0;
    for (int i = 0; i < 4; ++i) {
      uint8_t b = 0;
      if (!Byte(&b)) return false;
      result |= uint32_t{b} << (8 * i);
    }
    *v = result;
    return true;
  }
  // A length-delimited field's length, checked against what is left.
  bool Length(size_t* n) {
    uint64_t v = 0;
    if (!Varint(&v) || v > left_) return false;
    *n = static_cast<size_t>(v);
    return true;
  }
  // The next n bytes as pieces (views, no copy).
  void Take(size_t n, std::vector<Piece>* out) {
    while (n > 0) {
      const Piece& p = pieces_[index_];
      const size_t k = std::min(n, p.size() - offset_);
      out->push_back(p.subspan(offset_, k));
      Advance(k);
      n -= k;
    }
  }
  // A reader of the next n bytes (a submessage); this one moves past them.
  Reader Sub(size_t n) {
    Reader sub = *this;
    sub.left_ = n;
    Skip(n);
    return sub;
  }
  void Skip(size_t n) {
    while (n > 0) {
      const size_t k = std::min(n, pieces_[index_].size() - offset_);
      Advance(k);
      n -= k;
    }
  }
  // Skips a field of an unknown number.
  bool SkipField(int wire_type) {
    uint64_t v = 0;
    size_t n = 0;
    switch (wire_type) {
      case kVarint:
        return Varint(&v);
      case kFixed64:
        if (left_ < 8) return false;
        Skip(8);
        return true;
      case kLengthDelimited:
        if (!Length(&n)) return false;
        Skip(n);
        return true;
      case kFixed32:
        if (left_ < 4) return false;
        Skip(4);
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
  void Advance(size_t n) {
    offset_ += n;
    left_ -= n;
    Settle();
  }
  // Moves past exhausted (and empty) pieces while bytes are left.
  void Settle() {
    while (left_ > 0 && index_ < pieces_.size() && offset_ == pieces_[index_].size()) {
      ++index_;
      offset_ = 0;
    }
  }

  absl::Span<const Piece> pieces_;
  size_t index_ = 0;
  size_t offset_ = 0;
  size_t left_;
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

absl::Status ParsePayload(Reader r, absl::string_view where, PayloadView* out) {
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
      case 6: {
        size_t n = 0;
        ok = type == kLengthDelimited && r.Length(&n);
        if (!ok) break;
        out->pieces.clear();  // the last occurrence wins, as in protobuf
        r.Take(n, &out->pieces);
        break;
      }
      default:
        ok = r.SkipField(type);
    }
    if (!ok) return Malformed(where);
  }
  return absl::OkStatus();
}

// One entry of a repeated PartitionPayload field (`list` names it in errors), appended to `out`.
absl::Status ParsePayloadEntry(Reader& r, int wire_type, absl::string_view list,
                               std::vector<PayloadView>* out) {
  size_t n = 0;
  const std::string where = absl::StrCat(list, "[", out->size(), "]");
  if (wire_type != kLengthDelimited || !r.Length(&n)) return Malformed(where);
  out->emplace_back();
  return ParsePayload(r.Sub(n), where, &out->back());
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

size_t PayloadView::data_size() const {
  size_t n = 0;
  for (const Piece& p : pieces) n += p.size();
  return n;
}

absl::Span<const uint8_t> PayloadView::Gather(std::vector<uint8_t>* scratch) const {
  if (pieces.size() <= 1) return pieces.empty() ? Piece() : pieces[0];
  scratch->resize(data_size());
  size_t at = 0;
  for (const Piece& p : pieces) {
    std::memcpy(scratch->data() + at, p.data(), p.size());
    at += p.size();
  }
  return absl::MakeConstSpan(*scratch);
}

absl::Status ParsePushPullRequest(absl::Span<const Piece> pieces, PushPullRequestView* out) {
  Reader r = Reader::Whole(pieces);
  out->job_id = {};
  out->job_id_storage.clear();
  out->worker_rank = 0;
  out->epoch = 0;
  out->step = 0;
  out->partitions.clear();
  while (!r.done()) {
    int field = 0, type = 0;
    if (!r.Tag(&field, &type)) return Malformed("PushPullRequest");
    bool ok = true;
    size_t n = 0;
    switch (field) {
      case 1: {
        ok = type == kLengthDelimited && r.Length(&n);
        if (!ok) break;
        std::vector<Piece> name;
        r.Take(n, &name);
        if (name.size() == 1) {
          out->job_id = absl::string_view(reinterpret_cast<const char*>(name[0].data()), n);
        } else {
          out->job_id_storage.clear();
          for (const Piece& p : name) {
            out->job_id_storage.append(reinterpret_cast<const char*>(p.data()), p.size());
          }
          out->job_id = out->job_id_storage;
        }
        break;
      }
      case 2:
        ok = Uint32Field(r, type, &out->worker_rank);
        break;
      case 3:
        ok = type == kVarint && r.Varint(&out->epoch);
        break;
      case 4:
        ok = type == kVarint && r.Varint(&out->step);
        break;
      case kRequestPartitionsField:
        if (absl::Status st = ParsePayloadEntry(r, type, "partitions", &out->partitions);
            !st.ok()) {
          return st;
        }
        break;
      default:
        ok = r.SkipField(type);
    }
    if (!ok) return Malformed(absl::StrCat("PushPullRequest field ", field));
  }
  return absl::OkStatus();
}

absl::Status ParsePushPullResponse(absl::Span<const Piece> pieces, PushPullResponseView* out) {
  Reader r = Reader::Whole(pieces);
  out->step = 0;
  out->averages.clear();
  while (!r.done()) {
    int field = 0, type = 0;
    if (!r.Tag(&field, &type)) return Malformed("PushPullResponse");
    bool ok = true;
    switch (field) {
      case 1:
        ok = type == kVarint && r.Varint(&out->step);
        break;
      case kResponseAveragesField:
        if (absl::Status st = ParsePayloadEntry(r, type, "averages", &out->averages); !st.ok()) {
          return st;
        }
        break;
      default:
        ok = r.SkipField(type);
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
