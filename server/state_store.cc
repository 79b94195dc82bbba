#include "server/state_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "common/rpc/job_token.h"
#include "common/spec/job_spec.h"
#include "common/util/file.h"

namespace ternps::server {
namespace {

static_assert(std::endian::native == std::endian::little,
              "state files are written in host order: little-endian hosts only");

namespace v1 = ::ternps::v1;

constexpr uint32_t kJobMagic = 0x424F4A54;       // "TJOB"
constexpr uint32_t kSnapshotMagic = 0x50414E53;  // "SNAP"
constexpr uint32_t kRecordMagic = 0x43455254;    // "TREC"
// Job file versions: 2 adds the token digest after the registration; version 1 files (written
// before job tokens) are still read, as jobs without a token.
constexpr uint32_t kJobVersion = 2;

uint32_t Crc(absl::string_view bytes) {
  uLong crc = crc32(0L, Z_NULL, 0);
  // zlib takes uInt lengths: feed large inputs in pieces.
  while (!bytes.empty()) {
    const size_t n = std::min<size_t>(bytes.size(), size_t{1} << 30);
    crc = crc32(crc, reinterpret_cast<const Bytef*>(bytes.data()), static_cast<uInt>(n));
    bytes.remove_prefix(n);
  }
  return static_cast<uint32_t>(crc);
}

template <typename T>
void Put(std::string* out, T value) {
  out->append(reinterpret_cast<const char*>(&value), sizeof(T));
}

// Reads fixed-size fields from a byte string; any read past the end fails the reader for good.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : bytes_(bytes) {}
  template <typename T>
  bool Get(T* value) {
    if (bytes_.size() < sizeof(T)) return ok_ = false;
    std::memcpy(value, bytes_.data(), sizeof(T));
    bytes_.remove_prefix(sizeof(T));
    return ok_;
  }
  bool Take(size_t n, absl::string_view* out) {
    if (bytes_.size() < n) return ok_ = false;
    *out = bytes_.substr(0, n);
    bytes_.remove_prefix(n);
    return ok_;
  }
  size_t remaining() const { return bytes_.size(); }

 private:
  absl::string_view bytes_;
  bool ok_ = true;
};

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat("state_dir: ", what, " ", path, ": ", std::strerror(errno)));
}

// The fault-injection hook (SetDiskFaultHookForTesting); `hooked` spares the lock when unset.
std::atomic<bool> hooked{false};
absl::Mutex hook_mu;
DiskFaultHook& Hook() ABSL_EXCLUSIVE_LOCKS_REQUIRED(hook_mu) {
  static DiskFaultHook* hook = new DiskFaultHook;
  return *hook;
}

// True (errno set) if the hook fails `op` on `path`.
bool Injected(DiskOp op, const std::string& path) {
  if (!hooked.load(std::memory_order_acquire)) return false;
  absl::MutexLock lock(&hook_mu);
  const int err = Hook() ? Hook()(op, path) : 0;
  if (err == 0) return false;
  errno = err;
  return true;
}

int OpenFile(const std::string& path, int flags) {
  if (Injected(DiskOp::kCreate, path)) return -1;
  return open(path.c_str(), flags, 0644);
}

int SyncData(int fd, const std::string& path) {
  return Injected(DiskOp::kSync, path) ? -1 : fdatasync(fd);
}

int SyncFile(int fd, const std::string& path) {
  return Injected(DiskOp::kSync, path) ? -1 : fsync(fd);
}

absl::Status WriteAll(int fd, absl::string_view bytes, const std::string& path) {
  while (!bytes.empty()) {
    // An injected fault leaves half the bytes written, as a full disk can.
    if (Injected(DiskOp::kWrite, path)) {
      const int err = errno;
      if (write(fd, bytes.data(), bytes.size() / 2) < 0) {
        // The injected error is the one reported.
      }
      errno = err;
      return Errno("cannot write", path);
    }
    const ssize_t n = write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("cannot write", path);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status SyncDir(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Errno("cannot open", dir);
  const int rc = SyncFile(fd, dir);
  close(fd);
  if (rc != 0) return Errno("cannot fsync", dir);
  return absl::OkStatus();
}

// Writes `path` durably: a temporary file, fsync, rename over `path`, fsync of the directory.
absl::Status WriteFileDurably(const std::string& dir, const std::string& path,
                              absl::string_view bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = OpenFile(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return Errno("cannot create", tmp);
  absl::Status st = WriteAll(fd, bytes, tmp);
  if (st.ok() && SyncFile(fd, tmp) != 0) st = Errno("cannot fsync", tmp);
  close(fd);
  if (st.ok() && (Injected(DiskOp::kRename, tmp) || rename(tmp.c_str(), path.c_str()) != 0)) {
    st = Errno("cannot rename", tmp);
  }
  if (!st.ok()) {
    unlink(tmp.c_str());
    return st;
  }
  return SyncDir(dir);
}

void RemoveTree(const std::string& dir) {
  // A failure only leaves files behind (the next run of the id replaces them).
  if (Injected(DiskOp::kRemove, dir)) return;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      unlink((dir + "/" + name).c_str());
    }
    closedir(d);
  }
  rmdir(dir.c_str());
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (const dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string JobDirName(absl::string_view job_id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name = "job-";
  for (const unsigned char c : job_id) {
    name.push_back(kHex[c >> 4]);
    name.push_back(kHex[c & 15]);
  }
  return name;
}

std::string JobFile(absl::string_view registration, uint64_t incarnation,
                    absl::string_view token_digest) {
  std::string out;
  Put(&out, kJobMagic);
  Put(&out, kJobVersion);
  Put(&out, incarnation);
  Put<uint64_t>(&out, registration.size());
  out.append(registration.data(), registration.size());
  Put<uint32_t>(&out, static_cast<uint32_t>(token_digest.size()));
  out.append(token_digest.data(), token_digest.size());
  Put(&out, Crc(out));
  return out;
}

// The registration, incarnation and token digest in a job file.
absl::Status ParseJobFile(const std::string& path, absl::string_view bytes,
                          v1::JoinRequest* registration, uint64_t* incarnation,
                          std::string* token_digest) {
  Reader r(bytes);
  uint32_t magic = 0, version = 0, crc = 0, digest_size = 0;
  uint64_t size = 0;
  absl::string_view body, digest;
  bool ok = r.Get(&magic) && magic == kJobMagic && r.Get(&version) &&
            (version == 1 || version == kJobVersion) && r.Get(incarnation) && r.Get(&size) &&
            r.Take(size, &body);
  if (ok && version >= 2) {
    ok = r.Get(&digest_size) && (digest_size == 0 || digest_size == common::kJobTokenDigestBytes) &&
         r.Take(digest_size, &digest);
  }
  if (!ok || !r.Get(&crc) || r.remaining() != 0) {
    return absl::DataLossError(absl::StrCat(path, ": not a ternps job file of version 1 or ",
                                            kJobVersion, " (magic, version or length)"));
  }
  if (Crc(bytes.substr(0, bytes.size() - 4)) != crc) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch"));
  }
  if (!registration->ParseFromString(std::string(body))) {
    return absl::DataLossError(absl::StrCat(path, ": the registration is not a JoinRequest"));
  }
  token_digest->assign(digest.data(), digest.size());
  return absl::OkStatus();
}

// OK if `head` and its bytes are an average `shape`'s partition can have answered.
absl::Status CheckEntry(const LoadedPartition::Entry& e, const PartitionShape& shape) {
  const common::PayloadView& h = e.head;
  if (h.partition_id != shape.id || h.elements != shape.elements) {
    return absl::DataLossError(absl::StrCat("partition ", h.partition_id, " of ", h.elements,
                                            " elements, expected ", shape.id, " of ",
                                            shape.elements));
  }
  if (h.contributors < 1 || h.contributors > shape.world_size) {
    return absl::DataLossError(
        absl::StrCat("contributors ", h.contributors, " outside [1, ", shape.world_size, "]"));
  }
  const v1::Encoding encoding = common::AverageEncoding(shape.downlink, shape.int_sum_radix,
                                                        static_cast<int>(h.contributors));
  if (h.encoding != encoding) {
    return absl::DataLossError(
        absl::StrCat("encoding ", h.encoding, ", expected ", v1::Encoding_Name(encoding)));
  }
  if (e.pushed.size() != (shape.world_size + 63) / 64) {
    return absl::DataLossError(absl::StrCat("rank set of ", e.pushed.size(), " words"));
  }
  if (!e.has_bytes) return absl::OkStatus();
  const size_t expected =
      common::PayloadBytes(encoding, shape.elements, static_cast<int>(h.contributors));
  if (e.bytes.size() != expected) {
    return absl::DataLossError(
        absl::StrCat("data of ", e.bytes.size(), " bytes, expected ", expected));
  }
  const auto data =
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(e.bytes.data()), e.bytes.size());
  switch (encoding) {
    case v1::INT_SUM:
      if (absl::Status st = common::ValidateScaler(h.scaler); !st.ok()) return st;
      return common::ValidateIntSum(data, shape.elements, static_cast<int>(h.contributors));
    case v1::INT_SUM_RADIX:
      if (absl::Status st = common::ValidateScaler(h.scaler); !st.ok()) return st;
      return common::ValidateIntSumRadix(data, shape.elements, static_cast<int>(h.contributors));
    case v1::TERNARY_2BIT:
      if (absl::Status st = common::ValidateScaler(h.scaler); !st.ok()) return st;
      return common::ValidateTernary(data, shape.elements);
    default:
      return common::ValidateFp32(data, shape.elements);
  }
}

// Parses the record at `*offset` of a segment and moves past it; false at the end or at a torn
// or corrupt record.
bool NextRecord(absl::string_view all, size_t* offset, LoadedPartition::Entry* e) {
  const absl::string_view rest = all.substr(*offset);
  uint32_t magic = 0, length = 0, encoding = 0, flags = 0, words = 0, crc = 0;
  Reader head(rest);
  if (!head.Get(&magic) || magic != kRecordMagic || !head.Get(&length) || length < 12 ||
      length > rest.size()) {
    return false;
  }
  const absl::string_view record = rest.substr(0, length);
  std::memcpy(&crc, record.data() + length - 4, 4);
  if (Crc(record.substr(0, length - 4)) != crc) return false;
  Reader body(record.substr(8, length - 12));
  uint64_t size = 0;
  absl::string_view bytes;
  if (!body.Get(&e->step) || !body.Get(&e->head.partition_id) || !body.Get(&encoding) ||
      !body.Get(&e->head.scaler) || !body.Get(&e->head.elements) ||
      !body.Get(&e->head.contributors) || !body.Get(&flags) || !body.Get(&words) || words > 1024) {
    return false;
  }
  e->head.encoding = static_cast<int>(encoding);
  e->has_bytes = (flags & 1) != 0;
  e->pushed.assign(words, 0);
  for (uint64_t& w : e->pushed) {
    if (!body.Get(&w)) return false;
  }
  if (!body.Get(&size) || !body.Take(size, &bytes) || body.remaining() != 0) return false;
  e->bytes.assign(bytes.data(), bytes.size());
  *offset += length;
  return true;
}

}  // namespace

PartitionStore::~PartitionStore() {
  absl::MutexLock lock(&fd_mu_);
  if (fd_ >= 0) close(fd_);
}

std::string PartitionStore::SegmentPath(uint64_t first_step) const {
  return absl::StrCat(dir_, "/p", id_, "-", first_step, ".log");
}

absl::Status PartitionStore::Fail(absl::Status st) {
  fault_->Set(st);
  return st;
}

absl::Status PartitionStore::OpenSegment(uint64_t first_step) {
  const std::string path = SegmentPath(first_step);
  const int fd = OpenFile(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC);
  if (fd < 0) return Fail(Errno("cannot create", path));
  {
    absl::MutexLock lock(&fd_mu_);
    if (fd_ >= 0) {
      // Records not synced yet may be in the old segment.
      const int rc = SyncData(fd_, open_path_);
      if (rc != 0) {
        const absl::Status st = Errno("cannot fdatasync", open_path_);
        close(fd);
        unlink(path.c_str());
        // The old segment stays the open one (CutToDurable cuts it back).
        return Fail(st);
      }
      close(fd_);
    }
    fd_ = fd;
    open_path_ = path;
    written_ = 0;
    durable_ = 0;
    ++segment_;
  }
  segments_[first_step] = path;
  if (absl::Status st = SyncDir(dir_); !st.ok()) return Fail(st);
  return absl::OkStatus();
}

absl::StatusOr<LoadedPartition> PartitionStore::Load(const PartitionShape& shape) {
  LoadedPartition out;
  const std::string snap_path = absl::StrCat(dir_, "/p", id_, ".snap");
  if (access(snap_path.c_str(), F_OK) == 0) {
    absl::StatusOr<std::string> bytes = common::ReadFileToString(snap_path, "state_dir");
    if (!bytes.ok()) return bytes.status();
    Reader r(*bytes);
    uint32_t magic = 0, partition = 0, crc = 0;
    uint64_t size = 0;
    absl::string_view state;
    if (!r.Get(&magic) || magic != kSnapshotMagic || !r.Get(&partition) ||
        !r.Get(&out.snapshot_step) || !r.Get(&size) || !r.Take(size, &state) || !r.Get(&crc) ||
        r.remaining() != 0) {
      return absl::DataLossError(absl::StrCat(snap_path, ": not a snapshot file"));
    }
    if (Crc(absl::string_view(*bytes).substr(0, bytes->size() - 4)) != crc) {
      return absl::DataLossError(absl::StrCat(snap_path, ": checksum mismatch"));
    }
    if (partition != shape.id || state.size() != shape.state_bytes) {
      return absl::DataLossError(absl::StrCat(snap_path, ": partition ", partition, " with ",
                                              state.size(), " bytes, expected partition ", shape.id,
                                              " with ", shape.state_bytes));
    }
    out.snapshot.assign(state.data(), state.size());
    absl::MutexLock lock(&snap_mu_);
    snapshot_on_disk_ = out.snapshot_step;
  }
  // Segments in order of their first step; records before the snapshot are skipped.
  const std::string prefix = absl::StrCat("p", id_, "-");
  for (const std::string& name : ListDir(dir_)) {
    absl::string_view rest = name;
    uint64_t first = 0;
    if (!absl::ConsumePrefix(&rest, prefix) || !absl::ConsumeSuffix(&rest, ".log") ||
        !absl::SimpleAtoi(rest, &first)) {
      continue;
    }
    segments_[first] = absl::StrCat(dir_, "/", name);
  }
  bool stopped = false;  // a gap in the steps: nothing after it is used
  for (const auto& [first, path] : segments_) {
    if (stopped) break;
    absl::StatusOr<std::string> bytes = common::ReadFileToString(path, "state_dir");
    if (!bytes.ok()) return bytes.status();
    size_t offset = 0;
    LoadedPartition::Entry e;
    while (NextRecord(*bytes, &offset, &e)) {
      if (e.step < out.snapshot_step) continue;
      const uint64_t next = out.snapshot_step + out.log.size();
      if (e.step != next) {
        stopped = true;
        break;
      }
      if (absl::Status st = CheckEntry(e, shape); !st.ok()) {
        return absl::DataLossError(
            absl::StrCat(path, ": record of step ", e.step, ": ", st.message()));
      }
      out.log.push_back(std::move(e));
      e = LoadedPartition::Entry();
    }
    // A torn tail (a crash mid-append; its average was never answered): cut off, so that the
    // segments after this one still load next time.
    if (!stopped && offset != bytes->size() &&
        truncate(path.c_str(), static_cast<off_t>(offset)) != 0) {
      return Errno("cannot truncate", path);
    }
  }
  // Later records go to a new segment; segments past a gap or a torn record hold nothing usable.
  const uint64_t next = out.snapshot_step + out.log.size();
  for (auto it = segments_.lower_bound(next); it != segments_.end();) {
    unlink(it->second.c_str());
    it = segments_.erase(it);
  }
  if (absl::Status st = OpenSegment(next); !st.ok()) return st;
  return out;
}

absl::Status PartitionStore::Append(const LoggedAverage& a) {
  if (fault_->failed()) return fault_->status();
  bool open = false;
  {
    absl::MutexLock lock(&fd_mu_);
    open = fd_ >= 0;
  }
  if (!open) {
    if (absl::Status st = OpenSegment(a.step); !st.ok()) return st;
  }
  std::string& r = record_;
  r.clear();
  Put(&r, kRecordMagic);
  Put<uint32_t>(&r, 0);  // length, below
  Put(&r, a.step);
  Put(&r, a.head.partition_id);
  Put(&r, static_cast<uint32_t>(a.head.encoding));
  Put(&r, a.head.scaler);
  Put(&r, a.head.elements);
  Put(&r, a.head.contributors);
  Put<uint32_t>(&r, a.has_bytes ? 1 : 0);
  Put(&r, static_cast<uint32_t>(a.pushed.size()));
  for (const uint64_t w : a.pushed) Put(&r, w);
  Put<uint64_t>(&r, a.has_bytes ? a.bytes.size() : 0);
  if (a.has_bytes) r.append(reinterpret_cast<const char*>(a.bytes.data()), a.bytes.size());
  const uint32_t length = static_cast<uint32_t>(r.size() + 4);
  std::memcpy(r.data() + 4, &length, 4);
  Put(&r, Crc(r));
  {
    absl::MutexLock lock(&fd_mu_);
    if (fd_ < 0)
      return Fail(absl::InternalError(absl::StrCat("state_dir: ", open_path_, " is closed")));
    if (absl::Status st = WriteAll(fd_, r, open_path_); !st.ok()) return Fail(st);
    written_ += r.size();
  }
  appended_.fetch_add(1, std::memory_order_release);
  return absl::OkStatus();
}

absl::Status PartitionStore::Sync() {
  if (fault_->failed()) return fault_->status();
  const uint64_t target = appended_.load(std::memory_order_acquire);
  if (synced_.load(std::memory_order_acquire) >= target) return absl::OkStatus();
  int fd = -1;
  std::string path;
  uint64_t written = 0;
  uint64_t segment = 0;
  {
    // A duplicate: the segment may be rotated (and its descriptor closed) meanwhile; rotation
    // syncs the old segment itself.
    absl::MutexLock lock(&fd_mu_);
    if (fd_ >= 0) fd = dup(fd_);
    path = open_path_;
    written = written_;
    segment = segment_;
  }
  if (fd < 0) return Fail(Errno("cannot sync", path));
  const int rc = sync_averages_ ? SyncData(fd, path) : 0;
  close(fd);
  if (rc != 0) return Fail(Errno("cannot fdatasync", path));
  // A failure elsewhere meanwhile (another partition, or a write to this segment after `written`)
  // leaves the store failed: nothing is answered from it any more.
  if (fault_->failed()) return fault_->status();
  {
    absl::MutexLock lock(&fd_mu_);
    if (segment == segment_) durable_ = std::max(durable_, written);
  }
  uint64_t synced = synced_.load(std::memory_order_relaxed);
  while (synced < target && !synced_.compare_exchange_weak(synced, target)) {
  }
  return absl::OkStatus();
}

absl::Status PartitionStore::CutToDurable() {
  absl::MutexLock lock(&fd_mu_);
  if (open_path_.empty() || written_ == durable_) return absl::OkStatus();
  if (truncate(open_path_.c_str(), static_cast<off_t>(durable_)) != 0) {
    return Errno("cannot truncate", open_path_);
  }
  written_ = durable_;
  return absl::OkStatus();
}

absl::Status PartitionStore::WriteSnapshot(uint64_t step, absl::string_view state) {
  if (fault_->failed()) return fault_->status();
  absl::MutexLock lock(&snap_mu_);
  if (step <= snapshot_on_disk_) return absl::OkStatus();
  std::string file;
  file.reserve(state.size() + 32);
  Put(&file, kSnapshotMagic);
  Put(&file, id_);
  Put(&file, step);
  Put<uint64_t>(&file, state.size());
  file.append(state.data(), state.size());
  Put(&file, Crc(file));
  if (absl::Status st = WriteFileDurably(dir_, absl::StrCat(dir_, "/p", id_, ".snap"), file);
      !st.ok()) {
    return Fail(st);
  }
  snapshot_on_disk_ = step;
  return absl::OkStatus();
}

absl::Status PartitionStore::StartSegment(uint64_t next_step, uint64_t snapshot_step) {
  if (fault_->failed()) return fault_->status();
  bool open = false;
  {
    absl::MutexLock lock(&fd_mu_);
    open = open_path_ == SegmentPath(next_step);
  }
  if (!open) {
    if (absl::Status st = OpenSegment(next_step); !st.ok()) return st;
  }
  // A segment ends where the next one begins: delete those that end before the snapshot.
  for (auto it = segments_.begin(); it != segments_.end();) {
    auto next = std::next(it);
    if (next == segments_.end() || next->first > snapshot_step) break;
    unlink(it->second.c_str());
    it = segments_.erase(it);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<JobStore>> JobStore::Create(const std::string& state_dir,
                                                           const v1::JoinRequest& join,
                                                           const std::string& token_digest) {
  const std::string dir = absl::StrCat(state_dir, "/", JobDirName(join.job_id()));
  RemoveTree(dir);  // an earlier run of the same id that ended without cleaning up
  if (mkdir(dir.c_str(), 0755) != 0) return Errno("cannot create", dir);
  if (absl::Status st =
          WriteFileDurably(dir, dir + "/job", JobFile(join.SerializeAsString(), 0, token_digest));
      !st.ok()) {
    return st;
  }
  if (absl::Status st = SyncDir(state_dir); !st.ok()) return st;
  return std::make_unique<JobStore>(dir, 0, token_digest);
}

JobStore::~JobStore() = default;

PartitionStore* JobStore::Partition(uint32_t id) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<PartitionStore>& p = partitions_[id];
  if (p == nullptr) p = std::make_unique<PartitionStore>(dir_, id, sync_averages_, fault_);
  return p.get();
}

void JobStore::CutToDurable() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, p] : partitions_) {
    if (absl::Status st = p->CutToDurable(); !st.ok()) {
      // Load then reads the tail back as if durable: the next restart is told by this line.
      std::fprintf(stderr, "ternps-server: %s\n", std::string(st.message()).c_str());
    }
  }
}

void StoreFault::Set(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (!status_.ok()) return;
  status_ = status;
  failed_.store(true, std::memory_order_release);
}

absl::Status StoreFault::status() const {
  absl::MutexLock lock(&mu_);
  return status_;
}

void SetDiskFaultHookForTesting(DiskFaultHook hook) {
  absl::MutexLock lock(&hook_mu);
  hooked.store(hook != nullptr, std::memory_order_release);
  Hook() = std::move(hook);
}

void JobStore::Remove() {
  absl::MutexLock lock(&mu_);
  if (removed_) return;
  removed_ = true;
  partitions_.clear();  // closes the segments
  RemoveTree(dir_);
}

absl::StatusOr<StoredJob> LoadJob(const std::string& dir) {
  const std::string path = dir + "/job";
  absl::StatusOr<std::string> bytes = common::ReadFileToString(path, "state_dir");
  if (!bytes.ok()) return bytes.status();
  StoredJob job;
  uint64_t incarnation = 0;
  std::string digest;
  if (absl::Status st = ParseJobFile(path, *bytes, &job.registration, &incarnation, &digest);
      !st.ok()) {
    return st;
  }
  const std::string name = dir.substr(dir.rfind('/') + 1);
  if (JobDirName(job.registration.job_id()) != name) {
    return absl::DataLossError(absl::StrCat(path, ": job_id '", job.registration.job_id(),
                                            "' does not match the directory name"));
  }
  // Written before the job serves: epochs of this incarnation are above the last one's.
  ++incarnation;
  if (absl::Status st = WriteFileDurably(
          dir, path, JobFile(job.registration.SerializeAsString(), incarnation, digest));
      !st.ok()) {
    return st;
  }
  job.store = std::make_unique<JobStore>(dir, incarnation, std::move(digest));
  return job;
}

std::vector<StoredJob> LoadJobs(const std::string& state_dir, std::vector<std::string>* problems) {
  std::vector<StoredJob> jobs;
  if (mkdir(state_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    problems->push_back(std::string(Errno("cannot create", state_dir).message()));
    return jobs;
  }
  for (const std::string& name : ListDir(state_dir)) {
    if (!absl::StartsWith(name, "job-")) continue;
    absl::StatusOr<StoredJob> job = LoadJob(absl::StrCat(state_dir, "/", name));
    if (!job.ok()) {
      problems->push_back(std::string(job.status().message()));
      continue;
    }
    jobs.push_back(*std::move(job));
  }
  return jobs;
}

std::string ShardStateDir(const std::string& state_dir, uint32_t shard_index) {
  return absl::StrCat(state_dir, "/shard-", shard_index);
}

absl::StatusOr<std::unique_ptr<StateDirLock>> StateDirLock::Acquire(const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return Errno("cannot create", dir);
  const std::string path = dir + "/LOCK";
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot create", path);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "--state_dir: ", dir, " is in use by another ternps-server with the same shard index"));
  }
  return std::unique_ptr<StateDirLock>(new StateDirLock(fd));
}

StateDirLock::~StateDirLock() { close(fd_); }

absl::Status CheckStateDir(const std::string& state_dir) {
  struct stat info;
  if (stat(state_dir.c_str(), &info) != 0) {
    if (mkdir(state_dir.c_str(), 0755) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--state_dir: cannot create '", state_dir, "': ", std::strerror(errno)));
    }
  } else if (!S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--state_dir: '", state_dir, "' is not a directory"));
  }
  if (access(state_dir.c_str(), W_OK | X_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--state_dir: '", state_dir, "' is not writable: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace ternps::server
