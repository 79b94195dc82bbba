// The durable state files of a shard: what is written is read back exactly, a torn last record (a
// crash mid-append) is dropped and cut off, and a file that does not fit the partition is refused
// with DATA_LOSS naming the file, never trusted.
#include "server/state_store.h"

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/codec/int_sum.h"
#include "common/rpc/job_token.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ternps::server {
namespace {

namespace v1 = ::ternps::v1;
using ::testing::HasSubstr;

constexpr uint32_t kElements = 40;
constexpr uint32_t kWorld = 3;

class StateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ternps-state-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    v1::JoinRequest join;
    join.set_job_id("store");
    join.set_world_size(kWorld);
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Create(root_, join, "");
    ASSERT_TRUE(store.ok()) << store.status();
    dir_ = (*store)->dir();
    store_ = *std::move(store);
  }
  void TearDown() override {
    store_.reset();
    std::system(absl::StrCat("rm -rf ", root_).c_str());
  }

  static PartitionShape Shape() {
    return {.id = 2,
            .elements = kElements,
            .downlink = v1::INT_SUM,
            .world_size = kWorld,
            .state_bytes = 8 * kElements};
  }
  // A valid INT_SUM average of step `step`: every element's sum is (step % 3) - 1.
  static std::string Average(uint64_t step) {
    std::vector<int16_t> sums(kElements, static_cast<int16_t>(step % 3) - 1);
    std::string bytes(common::IntSumBytes(kElements, kWorld), '\0');
    EXPECT_TRUE(
        common::EncodeIntSum(sums, kWorld,
                             absl::MakeSpan(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()))
            .ok());
    return bytes;
  }
  static absl::Status Append(PartitionStore& p, uint64_t step, const std::string& bytes) {
    LoggedAverage a{
        .step = step,
        .pushed = {0b101},
        .head = {.partition_id = 2,
                 .encoding = v1::INT_SUM,
                 .scaler = 0.5f,
                 .elements = kElements,
                 .contributors = kWorld,
                 .pieces = {}},
        .has_bytes = true,
        .bytes = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())};
    return p.Append(a);
  }
  // A fresh store of the same directory, as a restarted shard has.
  absl::StatusOr<LoadedPartition> Reload() {
    reloaded_ = std::make_unique<PartitionStore>(dir_, 2);
    return reloaded_->Load(Shape());
  }
  std::string SegmentPath(uint64_t first) const {
    return absl::StrCat(dir_, "/p2-", first, ".log");
  }

  std::string root_;
  std::string dir_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<PartitionStore> reloaded_;
};

TEST_F(StateStoreTest, WhatIsWrittenIsReadBack) {
  PartitionStore& p = *store_->Partition(2);
  for (uint64_t step = 0; step < 4; ++step) ASSERT_TRUE(Append(p, step, Average(step)).ok());
  absl::StatusOr<LoadedPartition> loaded = Reload();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot_step, 0u);
  EXPECT_TRUE(loaded->snapshot.empty());
  ASSERT_EQ(loaded->log.size(), 4u);
  for (uint64_t step = 0; step < 4; ++step) {
    const LoadedPartition::Entry& e = loaded->log[step];
    EXPECT_EQ(e.step, step);
    EXPECT_EQ(e.bytes, Average(step));
    EXPECT_EQ(e.head.scaler, 0.5f);
    EXPECT_EQ(e.head.contributors, kWorld);
    EXPECT_EQ(e.pushed, std::vector<uint64_t>{0b101});
  }
}

// A snapshot at step 3 makes records before it useless: the next segment starts where the log is,
// segments wholly before the snapshot are deleted, and a reload starts at the snapshot.
TEST_F(StateStoreTest, ASnapshotStartsANewSegmentAndDropsTheOldOnes) {
  PartitionStore& p = *store_->Partition(2);
  for (uint64_t step = 0; step < 4; ++step) ASSERT_TRUE(Append(p, step, Average(step)).ok());
  const std::string state(8 * kElements, 's');
  ASSERT_TRUE(p.WriteSnapshot(3, state).ok());
  ASSERT_TRUE(p.StartSegment(4, 3).ok());
  EXPECT_EQ(access(SegmentPath(0).c_str(), F_OK), 0) << "holds step 3, after the snapshot";
  for (uint64_t step = 4; step < 7; ++step) ASSERT_TRUE(Append(p, step, Average(step)).ok());
  ASSERT_TRUE(p.WriteSnapshot(6, state).ok());
  ASSERT_TRUE(p.StartSegment(7, 6).ok());
  EXPECT_NE(access(SegmentPath(0).c_str(), F_OK), 0) << "steps 0-3 only: deleted";
  EXPECT_EQ(access(SegmentPath(4).c_str(), F_OK), 0);
  ASSERT_TRUE(p.WriteSnapshot(5, std::string(8 * kElements, 'o')).ok());  // older: ignored
  absl::StatusOr<LoadedPartition> loaded = Reload();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->snapshot_step, 6u);
  EXPECT_EQ(loaded->snapshot, state);
  ASSERT_EQ(loaded->log.size(), 1u);
  EXPECT_EQ(loaded->log[0].step, 6u);
}

// A crash in the middle of an append leaves part of a record: it is not an average anybody
// received, so it is dropped and cut off, and appends after the restart load again.
TEST_F(StateStoreTest, ATornLastRecordIsDroppedAndCutOff) {
  PartitionStore& p = *store_->Partition(2);
  for (uint64_t step = 0; step < 3; ++step) ASSERT_TRUE(Append(p, step, Average(step)).ok());
  const off_t whole = [&] {
    std::ifstream in(SegmentPath(0), std::ios::ate | std::ios::binary);
    return static_cast<off_t>(in.tellg());
  }();
  ASSERT_TRUE(Append(p, 3, Average(3)).ok());
  ASSERT_EQ(truncate(SegmentPath(0).c_str(), whole + 17), 0);  // step 3 torn
  absl::StatusOr<LoadedPartition> loaded = Reload();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->log.size(), 3u);
  std::ifstream in(SegmentPath(0), std::ios::ate | std::ios::binary);
  EXPECT_EQ(static_cast<off_t>(in.tellg()), whole) << "the torn tail was not cut off";
  // The restarted store continues at step 3 in a new segment; both load next time.
  ASSERT_TRUE(Append(*reloaded_, 3, Average(3)).ok());
  loaded = Reload();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->log.size(), 4u);
}

TEST_F(StateStoreTest, ACorruptRecordEndsTheLogThere) {
  PartitionStore& p = *store_->Partition(2);
  for (uint64_t step = 0; step < 3; ++step) ASSERT_TRUE(Append(p, step, Average(step)).ok());
  {
    std::fstream f(SegmentPath(0), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);  // inside the last record's checksum
    f.put('\x7f');
  }
  absl::StatusOr<LoadedPartition> loaded = Reload();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->log.size(), 2u);
}

// Records that pass their checksum but do not fit the partition are refused, naming the file.
// A job with int_sum_radix logs INT_SUM_RADIX averages where they are smaller (2 of 3 workers
// here): they load back and are checked as such, and a job without it refuses them.
TEST_F(StateStoreTest, RadixAveragesAreLoggedAndChecked) {
  PartitionStore& p = *store_->Partition(2);
  const std::vector<int16_t> sums(kElements, -2);
  std::string bytes(common::IntSumRadixBytes(kElements, 2), '\0');
  ASSERT_TRUE(common::EncodeIntSumRadix(
                  sums, 2, absl::MakeSpan(reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()))
                  .ok());
  auto append = [&](PartitionStore& to, const std::string& data) {
    LoggedAverage a{
        .step = 0,
        .pushed = {0b11},
        .head = {.partition_id = 2,
                 .encoding = v1::INT_SUM_RADIX,
                 .scaler = 0.5f,
                 .elements = kElements,
                 .contributors = 2,
                 .pieces = {}},
        .has_bytes = true,
        .bytes = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size())};
    return to.Append(a);
  };
  ASSERT_TRUE(append(p, bytes).ok());
  PartitionShape shape = Shape();
  shape.int_sum_radix = true;
  PartitionStore reader(dir_, 2);
  absl::StatusOr<LoadedPartition> loaded = reader.Load(shape);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->log.size(), 1u);
  EXPECT_EQ(loaded->log[0].bytes, bytes);
  loaded = Reload();  // Shape(): a job without int_sum_radix
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("expected INT_SUM"));
  ASSERT_EQ(unlink(SegmentPath(0).c_str()), 0);
  PartitionStore again(dir_, 2);
  std::string bad = bytes;
  bad[0] = '\xff';  // word 0 = 65535 > 5^6
  bad[1] = '\xff';
  ASSERT_TRUE(append(again, bad).ok());
  PartitionStore reader2(dir_, 2);
  loaded = reader2.Load(shape);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("word 0"));
}

TEST_F(StateStoreTest, ARecordThatDoesNotFitThePartitionIsRefused) {
  PartitionStore& p = *store_->Partition(2);
  std::string bad = Average(0);
  bad[0] = '\xff';  // fields of 7 > 2N = 6
  ASSERT_TRUE(Append(p, 0, bad).ok());
  absl::StatusOr<LoadedPartition> loaded = Reload();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr(absl::StrCat(SegmentPath(0), ": record of step 0")));
  ASSERT_EQ(unlink(SegmentPath(0).c_str()), 0);
  PartitionStore again(dir_, 2);
  ASSERT_TRUE(Append(again, 0, Average(0).substr(1)).ok());  // short
  loaded = Reload();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("bytes, expected"));
}

TEST_F(StateStoreTest, ASnapshotOfTheWrongSizeOrChecksumIsRefused) {
  PartitionStore& p = *store_->Partition(2);
  ASSERT_TRUE(p.WriteSnapshot(4, std::string(8 * kElements - 4, 's')).ok());
  absl::StatusOr<LoadedPartition> loaded = Reload();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("p2.snap: partition 2 with"));
  ASSERT_TRUE(p.WriteSnapshot(5, std::string(8 * kElements, 's')).ok());
  {
    std::fstream f(dir_ + "/p2.snap", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('t');
  }
  loaded = Reload();
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss) << loaded.status();
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr("checksum mismatch"));
}

// Each load of a job bumps its incarnation on disk; a damaged job file is reported and skipped.
TEST_F(StateStoreTest, LoadingJobsBumpsTheirIncarnationAndSkipsDamagedOnes) {
  std::vector<std::string> problems;
  std::vector<StoredJob> jobs = LoadJobs(root_, &problems);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_TRUE(problems.empty());
  EXPECT_EQ(jobs[0].registration.job_id(), "store");
  EXPECT_EQ(jobs[0].store->incarnation(), 1u);
  jobs = LoadJobs(root_, &problems);
  EXPECT_EQ(jobs[0].store->incarnation(), 2u);
  {
    std::fstream f(dir_ + "/job", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(30);
    f.put('!');
  }
  jobs = LoadJobs(root_, &problems);
  EXPECT_TRUE(jobs.empty());
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_THAT(problems[0], HasSubstr(dir_ + "/job: checksum mismatch"));
}

// A job's token digest is written with its registration and read back at every load; job files
// of version 1 (before tokens) still load, as jobs without a token.
TEST_F(StateStoreTest, TheTokenDigestSurvivesALoadAndVersion1FilesStillLoad) {
  v1::JoinRequest join;
  join.set_job_id("locked");
  join.set_world_size(kWorld);
  const std::string digest = common::JobTokenDigest("0123456789abcdef0123");
  ASSERT_EQ(digest.size(), common::kJobTokenDigestBytes);
  ASSERT_TRUE(JobStore::Create(root_, join, digest).ok());
  std::vector<std::string> problems;
  std::vector<StoredJob> jobs = LoadJobs(root_, &problems);
  ASSERT_EQ(jobs.size(), 2u) << absl::StrJoin(problems, "; ");
  for (const StoredJob& job : jobs) {
    EXPECT_EQ(job.store->token_digest(),
              job.registration.job_id() == "locked" ? digest : std::string())
        << job.registration.job_id();
  }
  // The same digest again after the incarnation bump rewrote the file.
  jobs = LoadJobs(root_, &problems);
  for (const StoredJob& job : jobs) {
    if (job.registration.job_id() == "locked") {
      EXPECT_EQ(job.store->token_digest(), digest);
    }
  }

  // A version 1 file: magic, version, incarnation, registration length and bytes, CRC-32.
  std::string v1_file;
  auto put = [&v1_file](auto v) { v1_file.append(reinterpret_cast<const char*>(&v), sizeof v); };
  const std::string registration = jobs[0].registration.SerializeAsString();
  put(uint32_t{0x424F4A54});
  put(uint32_t{1});
  put(uint64_t{7});
  put(uint64_t{registration.size()});
  v1_file += registration;
  put(static_cast<uint32_t>(
      crc32(0, reinterpret_cast<const Bytef*>(v1_file.data()), static_cast<uInt>(v1_file.size()))));
  const std::string path = jobs[0].store->dir() + "/job";
  const std::string id = jobs[0].registration.job_id();
  jobs.clear();
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f << v1_file;
  }
  jobs = LoadJobs(root_, &problems);
  ASSERT_EQ(jobs.size(), 2u) << absl::StrJoin(problems, "; ");
  for (const StoredJob& job : jobs) {
    if (job.registration.job_id() != id) continue;
    EXPECT_EQ(job.store->incarnation(), 8u);
    EXPECT_TRUE(job.store->token_digest().empty());
  }
}

}  // namespace
}  // namespace ternps::server
