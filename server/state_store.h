// Durable recovery state of a shard (ternps-server --state_dir): per job its registration, and per
// owned partition its latest snapshot and the log of the averages it answered since, so that a
// restarted shard resumes its jobs where they were.
//
//   <state_dir>/job-<hex of job_id>/job          registration: the first JoinRequest, incarnation,
//                                                the SHA-256 of its job token (if it had one)
//   <state_dir>/job-<hex of job_id>/p<id>.snap   latest snapshot (written to .tmp, fsync, rename)
//   <state_dir>/job-<hex of job_id>/p<id>-<first step>.log   averages, one record per step
//
// Every file and record carries a CRC-32 of its bytes. A log record is appended under its
// partition's lock and fdatasync'd (Sync, once for all partitions a request completed, outside the
// locks) before the average it holds is answered, so whatever any worker has received survives a
// crash; a torn last record (a crash mid-write) fails its checksum and is dropped on load. A new
// segment starts at every snapshot; segments wholly before the snapshot are deleted.
//
// What is read back is untrusted: every field is checked against the job's spec and a bad file
// gives an error naming the file and the field (the job is then not restored), never a crash.
//
//   absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Create(dir, first_join);
//   PartitionStore* p = (*store)->Partition(3);
//   p->Append(record);                       // durable when it returns OK
//   std::vector<StoredJob> jobs = LoadJobs(dir, &problems);   // at start-up
//
// A failed write, sync or segment change breaks the job's store for good (StoreFault): from then on
// Append and Sync fail with that first error, so no average that might not be on disk is ever
// answered (the shard stops the job and reloads it from what is durable; see server/job.h). A
// failed fdatasync is not retried on the same file: after one, Linux may have dropped the dirty
// pages and a second fdatasync can succeed without writing them; CutToDurable cuts the open
// segment back to what the last successful sync covered instead.
//
// Thread safety: a PartitionStore is driven under its partition's lock, except WriteSnapshot,
// which serializes itself, and Sync and CutToDurable, which may run beside it; JobStore::Partition
// and Remove are thread-safe.
#ifndef TERNPS_SERVER_STATE_STORE_H_
#define TERNPS_SERVER_STATE_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/wire/push_pull_wire.h"
#include "server/pending_call.h"
#include "ternps/v1/ternps.pb.h"

namespace ternps::server {

// One logged average: what step `step` of a partition answered, and which ranks contributed.
struct LoggedAverage {
  uint64_t step = 0;
  std::vector<uint64_t> pushed;  // RankBits of the contributors
  common::PayloadView head;      // every field but the pieces
  bool has_bytes = false;        // false: the step failed without an average
  absl::Span<const uint8_t> bytes;
};

// What a partition's files hold, checked against its spec.
struct LoadedPartition {
  uint64_t snapshot_step = 0;
  std::string snapshot;  // empty: none yet (the initial state)
  struct Entry {
    uint64_t step;
    std::vector<uint64_t> pushed;
    common::PayloadView head;
    bool has_bytes;
    std::string bytes;
  };
  std::vector<Entry> log;  // steps snapshot_step, snapshot_step + 1, ... in order
};

// What a partition's records must match.
struct PartitionShape {
  uint32_t id = 0;
  uint32_t elements = 0;
  ternps::v1::Encoding downlink = ternps::v1::FP32;  // the route's (INT_SUM for either kind)
  bool int_sum_radix = false;                        // the job's CodecConfig::int_sum_radix
  uint32_t world_size = 1;
  size_t state_bytes = 0;
};

// The first failure of a job's files (an average's write or sync, a segment change), shared by the
// job's partitions. Thread-safe.
class StoreFault {
 public:
  // Keeps the first error; later ones are its consequences.
  void Set(const absl::Status& status) ABSL_LOCKS_EXCLUDED(mu_);
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  // The first error (OK if none).
  absl::Status status() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  std::atomic<bool> failed_{false};
  mutable absl::Mutex mu_;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// Test hook (fault injection): called before every file operation of the state store with the
// operation and the path; a nonzero return is taken as the operation's errno (EIO, ENOSPC, ...).
// Null: none (the default). Not for production use; thread-safe.
enum class DiskOp { kCreate, kWrite, kSync, kRename, kRemove };
using DiskFaultHook = std::function<int(DiskOp op, const std::string& path)>;
void SetDiskFaultHookForTesting(DiskFaultHook hook);

class PartitionStore : public SyncTarget {
 public:
  // `sync_averages` false: Sync does not fdatasync (records survive a crash of the process, not
  // of the machine); snapshots and segment changes are synced either way. `fault`: shared with
  // the job's other partitions (null: this store's own).
  PartitionStore(std::string dir, uint32_t id, bool sync_averages = true,
                 std::shared_ptr<StoreFault> fault = nullptr)
      : dir_(std::move(dir)),
        id_(id),
        sync_averages_(sync_averages),
        fault_(fault != nullptr ? std::move(fault) : std::make_shared<StoreFault>()) {}
  ~PartitionStore();
  PartitionStore(const PartitionStore&) = delete;
  PartitionStore& operator=(const PartitionStore&) = delete;

  // Reads the snapshot and every log segment (DATA_LOSS naming the file and field for a record
  // that does not fit `shape`; a torn or corrupt tail is dropped, not an error), then opens a new
  // segment at the first step not logged.
  absl::StatusOr<LoadedPartition> Load(const PartitionShape& shape);
  // Appends one record (INTERNAL with the file and errno if it cannot be written, or the store's
  // earlier failure); it is durable once a Sync that began after this returned has succeeded.
  absl::Status Append(const LoggedAverage& average) ABSL_LOCKS_EXCLUDED(fd_mu_);
  // Makes every appended record durable (fdatasync); cheap when nothing was appended since. Fails
  // (for good) once any write, sync or segment change of the job's store failed. Thread-safe, and
  // may run while another thread appends.
  absl::Status Sync() override ABSL_LOCKS_EXCLUDED(fd_mu_);
  // After a failure: truncates the open segment to the records the last successful Sync covered
  // (what may not be on disk is not read back by a later Load). Idempotent; thread-safe.
  absl::Status CutToDurable() ABSL_LOCKS_EXCLUDED(fd_mu_);
  // Writes the snapshot of the state at the start of `step` durably; an older step than the one
  // on disk is ignored.
  absl::Status WriteSnapshot(uint64_t step, absl::string_view state) ABSL_LOCKS_EXCLUDED(snap_mu_);
  // After a snapshot at `snapshot_step` took effect: later records go to a new segment starting at
  // `next_step`, and segments holding only steps before the snapshot are deleted.
  absl::Status StartSegment(uint64_t next_step, uint64_t snapshot_step);

 private:
  std::string SegmentPath(uint64_t first_step) const;
  // Makes the segment starting at `first_step` the one appended to (the previous one is synced
  // first).
  absl::Status OpenSegment(uint64_t first_step) ABSL_LOCKS_EXCLUDED(fd_mu_);
  // Records `st` (not OK) as the job store's failure and returns it.
  absl::Status Fail(absl::Status st);

  const std::string dir_;
  const uint32_t id_;
  const bool sync_averages_;
  const std::shared_ptr<StoreFault> fault_;
  absl::Mutex fd_mu_;
  int fd_ ABSL_GUARDED_BY(fd_mu_) = -1;            // the open segment
  std::string open_path_ ABSL_GUARDED_BY(fd_mu_);  // its path
  // Bytes in the open segment: written, and covered by the last successful Sync (a segment
  // starts durable at 0: its predecessor is synced before it opens).
  uint64_t written_ ABSL_GUARDED_BY(fd_mu_) = 0;
  uint64_t durable_ ABSL_GUARDED_BY(fd_mu_) = 0;
  uint64_t segment_ ABSL_GUARDED_BY(fd_mu_) = 0;  // counts segment changes
  std::atomic<uint64_t> appended_{0};             // records appended
  std::atomic<uint64_t> synced_{0};               // of which known durable
  std::map<uint64_t, std::string> segments_;      // first step -> path, the open one last
  std::string record_;                            // scratch for one record
  absl::Mutex snap_mu_;
  uint64_t snapshot_on_disk_ ABSL_GUARDED_BY(snap_mu_) = 0;
};

class JobStore {
 public:
  // A new job: replaces whatever an earlier job of the same id left, writes the registration and
  // the digest of its token (empty: none).
  static absl::StatusOr<std::unique_ptr<JobStore>> Create(const std::string& state_dir,
                                                          const ternps::v1::JoinRequest& join,
                                                          const std::string& token_digest);
  // Use Create or LoadJobs.
  JobStore(std::string dir, uint64_t incarnation, std::string token_digest)
      : dir_(std::move(dir)), incarnation_(incarnation), token_digest_(std::move(token_digest)) {}
  ~JobStore();
  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  const std::string& dir() const { return dir_; }
  // How many times the job was restored; epochs of this incarnation start above every earlier
  // one's.
  uint64_t incarnation() const { return incarnation_; }
  const std::string& token_digest() const { return token_digest_; }
  PartitionStore* Partition(uint32_t id) ABSL_LOCKS_EXCLUDED(mu_);
  // Whether partitions created from now on fdatasync their averages (PartitionStore).
  void set_sync_averages(bool sync) { sync_averages_ = sync; }
  // The first failure of any of its partitions' files.
  const StoreFault& fault() const { return *fault_; }
  // After a failure: every partition's open segment cut back to what is durable.
  void CutToDurable() ABSL_LOCKS_EXCLUDED(mu_);
  // The job is over: deletes its directory (no later restart restores it).
  void Remove() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  const std::string dir_;
  const uint64_t incarnation_;
  const std::string token_digest_;
  absl::Mutex mu_;
  std::map<uint32_t, std::unique_ptr<PartitionStore>> partitions_ ABSL_GUARDED_BY(mu_);
  bool removed_ ABSL_GUARDED_BY(mu_) = false;
  bool sync_averages_ = true;
  const std::shared_ptr<StoreFault> fault_ = std::make_shared<StoreFault>();
};

struct StoredJob {
  ternps::v1::JoinRequest registration;
  std::unique_ptr<JobStore> store;
};

// Every job under `state_dir` (a shard's directory, created if missing), each with its incarnation
// bumped on disk. A job directory that cannot be read is skipped with a line in `problems` naming
// it and why.
std::vector<StoredJob> LoadJobs(const std::string& state_dir, std::vector<std::string>* problems);
// One job directory of a shard (<state_dir>/job-<hex>), its incarnation bumped on disk: an error
// naming the file if it cannot be read or written.
absl::StatusOr<StoredJob> LoadJob(const std::string& dir);

// OK if `state_dir` exists or can be created and is writable (--state_dir).
absl::Status CheckStateDir(const std::string& state_dir);

// Where shard `shard_index` keeps its jobs under --state_dir: its own subdirectory, so that shards
// may share one volume.
std::string ShardStateDir(const std::string& state_dir, uint32_t shard_index);

// An exclusive lock on a shard's state directory (created if missing), held while the object
// lives: a second shard process with the same directory is refused at start-up
// (FAILED_PRECONDITION) instead of overwriting the first one's files.
class StateDirLock {
 public:
  static absl::StatusOr<std::unique_ptr<StateDirLock>> Acquire(const std::string& dir);
  ~StateDirLock();
  StateDirLock(const StateDirLock&) = delete;
  StateDirLock& operator=(const StateDirLock&) = delete;

 private:
  explicit StateDirLock(int fd) : fd_(fd) {}
  const int fd_;
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_STATE_STORE_H_
