// The durable state a shard of the fuzzed job leaves in --state_dir (for state_fuzz and the seeds
// fuzz_seeds writes for it): a real engine serves the job of fuzz_job.h for two steps, takes a
// snapshot, serves two more steps (logged), then stops, and its files are read back.
#ifndef TERNPS_TESTS_FUZZ_STATE_BASE_H_
#define TERNPS_TESTS_FUZZ_STATE_BASE_H_

#include <dirent.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "server/engine.h"
#include "tests/fuzz/fuzz_job.h"

namespace ternps::fuzz {

[[noreturn]] inline void Fail(const std::string& what) {
  fprintf(stderr, "state fuzz base: %s\n", what.c_str());
  __builtin_trap();
}

inline std::string TempDir() {
  char shm[] = "/dev/shm/ternps-state-fuzz-XXXXXX";
  char tmp[] = "/tmp/ternps-state-fuzz-XXXXXX";
  const char* dir = mkdtemp(shm);
  if (dir == nullptr) dir = mkdtemp(tmp);
  if (dir == nullptr) Fail("cannot create a directory");
  return dir;
}

inline std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') names.push_back(e->d_name);
    }
    closedir(d);
  }
  return names;
}

inline std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The job's files as a real durable shard left them: name -> contents.
struct Base {
  std::string job_dir_name;  // job-<hex of the id>
  std::vector<std::pair<std::string, std::string>> files;
};

inline ternps::server::ShardConfig Config(const std::string& state_dir) {
  ternps::server::ShardConfig config;
  config.run_reaper = false;
  config.state_dir = state_dir;
  config.state_sync = false;
  return config;
}

inline Base MakeBase() {
  const std::string dir = TempDir();
  {
    ternps::server::Engine engine(Config(dir));
    absl::StatusOr<std::vector<uint64_t>> epochs = JoinAll(engine);
    if (!epochs.ok()) Fail(epochs.status().ToString());
    auto run_step = [&](uint64_t step) {
      std::vector<ternps::v1::ShareScalersResponse> shared(kWorld);
      std::vector<ternps::v1::PushPullResponse> answers(kWorld);
      int answered = 0;
      for (uint32_t r = 0; r < kWorld; ++r) {
        engine.ShareScalers(
            JobShare(r, (*epochs)[r], step), &shared[r], [](absl::Status) {}, kToken);
      }
      for (uint32_t r = 0; r < kWorld; ++r) {
        engine.PushPull(
            JobPush(r, (*epochs)[r], step), &answers[r],
            [&answered](absl::Status st) { answered += st.ok(); }, kToken);
      }
      if (answered != static_cast<int>(kWorld)) Fail("a step of the base failed");
    };
    run_step(0);
    run_step(1);
    // Rank (2 / K) % world_size snapshots at step 2 (K = 2).
    ternps::v1::PutSnapshotRequest snapshot = JobSnapshot(1, (*epochs)[1], 2, '\x01');
    if (absl::Status st = engine.PutSnapshot(snapshot, kToken).status(); !st.ok()) {
      Fail("the base snapshot: " + st.ToString());
    }
    run_step(2);  // logged after the snapshot
    run_step(3);
  }  // the engine stops; its files stay
  Base base;
  const std::string shard_dir = ternps::server::ShardStateDir(dir, 0);
  for (const std::string& name : List(shard_dir)) {
    if (name.rfind("job-", 0) != 0) continue;
    base.job_dir_name = name;
    for (const std::string& file : List(shard_dir + "/" + name)) {
      base.files.emplace_back(file, Read(shard_dir + "/" + name + "/" + file));
    }
  }
  if (base.files.size() < 3) Fail("the base state has fewer than 3 files");
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return base;
}

}  // namespace ternps::fuzz

#endif  // TERNPS_TESTS_FUZZ_STATE_BASE_H_
