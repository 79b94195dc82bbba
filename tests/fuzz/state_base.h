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

#include "common/codec/fp32.h"
#include "common/codec/ternary.h"
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
    std::vector<uint64_t> epochs;
    for (uint32_t r = 0; r < ternps::fuzz::kWorld; ++r) {
      absl::StatusOr<ternps::v1::JoinResponse> joined =
          engine.Join(ternps::fuzz::JobJoin(r), ternps::fuzz::kToken);
      if (!joined.ok()) Fail(joined.status().ToString());
      epochs.push_back(joined->epoch());
    }
    absl::StatusOr<ternps::common::JobSpec> spec =
        ternps::common::ResolveJobSpec(ternps::fuzz::JobJoin(0), {.shard_count = 1});
    if (!spec.ok()) Fail(spec.status().ToString());
    auto run_step = [&](uint64_t step) {
      std::vector<ternps::v1::ShareScalersResponse> shared(ternps::fuzz::kWorld);
      std::vector<ternps::v1::PushPullResponse> answers(ternps::fuzz::kWorld);
      int answered = 0;
      for (uint32_t r = 0; r < ternps::fuzz::kWorld; ++r) {
        ternps::v1::ShareScalersRequest share;
        share.set_job_id(ternps::fuzz::kJob);
        share.set_worker_rank(r);
        share.set_epoch(epochs[r]);
        share.set_step(step);
        for (const ternps::common::Partition& p : spec->plan.partitions()) {
          if (!p.compressed) continue;
          share.add_partition_ids(p.id);
          share.add_scalers(0.5f);
        }
        engine.ShareScalers(
            share, &shared[r], [](absl::Status) {}, ternps::fuzz::kToken);
      }
      for (uint32_t r = 0; r < ternps::fuzz::kWorld; ++r) {
        ternps::v1::PushPullRequest push;
        push.set_job_id(ternps::fuzz::kJob);
        push.set_worker_rank(r);
        push.set_epoch(epochs[r]);
        push.set_step(step);
        for (const ternps::common::Partition& p : spec->plan.partitions()) {
          ternps::v1::PartitionPayload* payload = push.add_partitions();
          payload->set_partition_id(p.id);
          payload->set_elements(p.elements);
          if (p.compressed) {
            payload->set_encoding(ternps::v1::TERNARY_2BIT);
            payload->set_scaler(0.5f);
            payload->set_data(std::string(ternps::common::TernaryBytes(p.elements), '\x55'));
          } else {
            payload->set_encoding(ternps::v1::FP32);
            payload->set_data(std::string(ternps::common::Fp32Bytes(p.elements), '\0'));
          }
        }
        engine.PushPull(
            push, &answers[r], [&answered](absl::Status st) { answered += st.ok(); },
            ternps::fuzz::kToken);
      }
      if (answered != static_cast<int>(ternps::fuzz::kWorld)) Fail("a step of the base failed");
    };
    run_step(0);
    run_step(1);
    // Rank (2 / K) % world_size snapshots at step 2 (K = 2).
    ternps::v1::PutSnapshotRequest snapshot;
    snapshot.set_job_id(ternps::fuzz::kJob);
    snapshot.set_worker_rank(1);
    snapshot.set_epoch(epochs[1]);
    snapshot.set_step(2);
    for (const ternps::common::Partition& p : spec->plan.partitions()) {
      ternps::v1::PartitionState* state = snapshot.add_partitions();
      state->set_partition_id(p.id);
      state->set_data(std::string(4 * p.elements, '\x01'));
    }
    if (absl::Status st = engine.PutSnapshot(snapshot, ternps::fuzz::kToken).status(); !st.ok()) {
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
