// The hand-written PushPull wire reader and writers against protobuf's generated code: the same
// bytes both ways, and untrusted bytes never crash the reader.
#include "common/wire/push_pull_wire.h"

#include <algorithm>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::common {
namespace {

namespace v1 = ::ternps::v1;

absl::Span<const uint8_t> Bytes(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

v1::PushPullRequest Sample() {
  v1::PushPullRequest r;
  r.set_job_id("job-1");
  r.set_worker_rank(3);
  r.set_epoch(uint64_t{1} << 40);
  r.set_step(12345678901ull);
  for (int i = 0; i < 3; ++i) {
    v1::PartitionPayload* p = r.add_partitions();
    p->set_partition_id(7 * i + 1);
    p->set_encoding(i == 2 ? v1::FP32 : v1::TERNARY_2BIT);
    p->set_scaler(i == 2 ? 0.0f : 0.25f * (i + 1));
    p->set_elements(1000 + i);
    p->set_data(std::string(300 + 200 * i, static_cast<char>('a' + i)));
  }
  return r;
}

TEST(PushPullWireTest, ReadsWhatProtobufWrites) {
  const v1::PushPullRequest r = Sample();
  const std::string wire = r.SerializeAsString();
  PushPullRequestView view;
  ASSERT_TRUE(ParsePushPullRequest(Bytes(wire), &view).ok());
  EXPECT_EQ(view.job_id, "job-1");
  EXPECT_EQ(view.worker_rank, 3u);
  EXPECT_EQ(view.epoch, uint64_t{1} << 40);
  EXPECT_EQ(view.step, 12345678901ull);
  ASSERT_EQ(view.partitions.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const PayloadView& p = view.partitions[i];
    EXPECT_EQ(p.partition_id, r.partitions(i).partition_id());
    EXPECT_EQ(p.encoding, r.partitions(i).encoding());
    EXPECT_EQ(p.scaler, r.partitions(i).scaler());
    EXPECT_EQ(p.elements, r.partitions(i).elements());
    ASSERT_EQ(p.pieces.size(), 1u);
    const Piece data = p.pieces[0];
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(data.data()), data.size()),
              r.partitions(i).data());
    // The data is a view into the received bytes, not a copy.
    EXPECT_GE(data.data(), Bytes(wire).data());
    EXPECT_LE(data.data() + data.size(), Bytes(wire).data() + wire.size());
  }
}

TEST(PushPullWireTest, ProtobufReadsWhatTheWritersWrite) {
  const v1::PushPullRequest r = Sample();
  std::string wire;
  AppendPushPullRequestHead(r.job_id(), r.worker_rank(), r.epoch(), r.step(), &wire);
  for (const v1::PartitionPayload& p : r.partitions()) {
    PayloadView head{.partition_id = p.partition_id(),
                     .encoding = p.encoding(),
                     .scaler = p.scaler(),
                     .elements = p.elements(),
                     .contributors = p.contributors(),
                     .pieces = {}};
    AppendPayloadHead(kRequestPartitionsField, head, p.data().size(), &wire);
    wire += p.data();  // on the wire: a separate slice
  }
  v1::PushPullRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  EXPECT_EQ(parsed.SerializeAsString(), r.SerializeAsString());

  v1::PushPullResponse response;
  response.set_step(9);
  v1::PartitionPayload* avg = response.add_averages();
  avg->set_partition_id(2);
  avg->set_encoding(v1::INT_SUM);
  avg->set_scaler(1.5f);
  avg->set_elements(64);
  avg->set_contributors(4);
  avg->set_data(std::string(32, '\x44'));
  std::string out;
  AppendPushPullResponseHead(9, &out);
  AppendPayloadHead(kResponseAveragesField,
                    {.partition_id = 2,
                     .encoding = v1::INT_SUM,
                     .scaler = 1.5f,
                     .elements = 64,
                     .contributors = 4,
                     .pieces = {}},
                    32, &out);
  out += std::string(32, '\x44');
  v1::PushPullResponse back;
  ASSERT_TRUE(back.ParseFromString(out));
  EXPECT_EQ(back.SerializeAsString(), response.SerializeAsString());
  PushPullResponseView view;
  ASSERT_TRUE(ParsePushPullResponse(Bytes(response.SerializeAsString()), &view).ok());
  ASSERT_EQ(view.averages.size(), 1u);
  EXPECT_EQ(view.averages[0].contributors, 4u);
  EXPECT_EQ(view.step, 9u);
}

TEST(PushPullWireTest, UnknownFieldsAreSkippedAndMalformedBytesRefused) {
  const std::string with_unknown =
      Sample().SerializeAsString() + std::string("\xa0\x06\x05", 3);  // field 100, varint 5
  PushPullRequestView view;
  EXPECT_TRUE(ParsePushPullRequest(Bytes(with_unknown), &view).ok());
  EXPECT_EQ(view.partitions.size(), 3u);
  const std::string wire = Sample().SerializeAsString();
  // Every truncation of a valid message is either refused or parses a prefix; none crashes.
  for (size_t n = 0; n < wire.size(); ++n) {
    const absl::Status st = ParsePushPullRequest(Bytes(wire).subspan(0, n), &view);
    if (!st.ok()) {
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    }
  }
  EXPECT_FALSE(ParsePushPullRequest(Bytes(std::string("\x0b", 1)), &view).ok());   // group
  EXPECT_FALSE(ParsePushPullRequest(Bytes(std::string(11, '\xff')), &view).ok());  // varint
  EXPECT_FALSE(ParsePushPullRequest(Bytes(std::string("\x2a\x10\x08", 3)), &view).ok());
}

TEST(PushPullWireTest, RandomBytesNeverCrashTheReaders) {
  std::mt19937_64 rng(20261201);
  const std::string valid = Sample().SerializeAsString();
  PushPullRequestView request;
  PushPullResponseView response;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = valid;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) bytes.resize(rng() % bytes.size());
    (void)ParsePushPullRequest(Bytes(bytes), &request);
    (void)ParsePushPullResponse(Bytes(bytes), &response);
    // Whatever parsed stays inside the buffer.
    for (const PayloadView& p : request.partitions) {
      for (const Piece& data : p.pieces) {
        if (data.empty()) continue;
        ASSERT_GE(data.data(), Bytes(bytes).data());
        ASSERT_LE(data.data() + data.size(), Bytes(bytes).data() + bytes.size());
      }
    }
  }
}

// ForEachRun over every way of cutting 0..40 bytes into up to three pieces, for every unit size
// used (1, 3, 4, 5, 16): the runs hold whole units at the right offsets, in order, and with
// `tail` the bytes after the last whole unit come last; together they are the input.
TEST(ForEachRunTest, RunsCoverTheBytesInOrderAtUnitOffsets) {
  for (size_t unit : {size_t{1}, size_t{3}, size_t{4}, size_t{5}, size_t{16}}) {
    for (size_t size = 0; size <= 40; ++size) {
      std::vector<uint8_t> bytes(size);
      for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 1);
      for (size_t a = 0; a <= size; ++a) {
        for (size_t b = a; b <= size; ++b) {
          const std::vector<Piece> pieces = {Piece(bytes.data(), a), Piece(bytes.data() + a, b - a),
                                             Piece(bytes.data() + b, size - b)};
          for (bool tail : {false, true}) {
            std::vector<uint8_t> seen;
            bool short_run_last = true;
            ForEachRun(
                pieces, unit,
                [&](Piece run, size_t offset) {
                  EXPECT_TRUE(short_run_last) << "a short run before the end";
                  EXPECT_EQ(offset * unit, seen.size());
                  if (run.size() % unit != 0) short_run_last = false;
                  seen.insert(seen.end(), run.begin(), run.end());
                },
                tail);
            const size_t expected = tail ? size : size / unit * unit;
            ASSERT_EQ(seen.size(), expected) << "unit " << unit << " size " << size;
            EXPECT_TRUE(std::equal(seen.begin(), seen.end(), bytes.begin()))
                << "unit " << unit << " cuts " << a << "," << b;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace ternps::common
