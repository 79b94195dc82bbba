// libFuzzer target: what a durable shard reads back from --state_dir at start-up (job files,
// snapshots, log segments: server/state_store.h), which may be damaged, truncated or written by
// someone else.
//
// The first input builds a real state directory: a durable engine serves the job of fuzz_job.h
// for two steps, takes a snapshot and serves two more, then stops (its files stay, as after a
// crash). Each input then replaces one of those files (byte 0 picks which; the rest is the new
// contents) in a fresh copy and starts an engine on it. Checked: the restore never crashes or leaks
// (ASan), and a job is either restored or reported as a problem naming its file.
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "server/engine.h"
#include "tests/fuzz/state_base.h"

using ternps::fuzz::Base;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Base base = ternps::fuzz::MakeBase();
  static const std::string root = ternps::fuzz::TempDir();
  if (size < 1) return 0;
  const std::string job_dir = ternps::server::ShardStateDir(root, 0) + "/" + base.job_dir_name;
  std::error_code ignored;
  std::filesystem::remove_all(ternps::server::ShardStateDir(root, 0), ignored);
  std::filesystem::create_directories(job_dir, ignored);
  const size_t replaced = data[0] % base.files.size();
  for (size_t i = 0; i < base.files.size(); ++i) {
    std::ofstream out(job_dir + "/" + base.files[i].first, std::ios::binary | std::ios::trunc);
    if (i == replaced) {
      out.write(reinterpret_cast<const char*>(data + 1), static_cast<std::streamsize>(size - 1));
    } else {
      out << base.files[i].second;
    }
  }
  ternps::server::Engine engine(ternps::fuzz::Config(root));
  const ternps::server::Engine::Restored& restored = engine.restored();
  if (restored.jobs.size() + restored.problems.size() != 1) {
    ternps::fuzz::Fail("the job was neither restored nor reported");
  }
  for (const std::string& problem : restored.problems) {
    if (problem.find(root) == std::string::npos)
      ternps::fuzz::Fail("a problem that names no file: " + problem);
  }
  return 0;
}
