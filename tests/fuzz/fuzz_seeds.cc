// Writes the fuzz targets' seed corpora: fuzz_seeds OUT_DIR GOLDEN_FILE makes OUT_DIR/codec (every
// payload of tests/data/codec_golden.txt with its parameters), OUT_DIR/wire (PushPull requests and
// answers of the engine target's job), OUT_DIR/engine (a valid request of every method for that
// job, with its token) and OUT_DIR/state (the files a durable shard of that job wrote). The
// fuzzers start from these and mutate them.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/engine.h"
#include "tests/fuzz/fuzz_job.h"
#include "tests/fuzz/state_base.h"

namespace {

namespace v1 = ::ternps::v1;

int written = 0;

bool Write(const std::string& dir, const std::string& name, const std::string& bytes) {
  mkdir(dir.c_str(), 0755);
  std::ofstream out(dir + "/" + name, std::ios::binary | std::ios::trunc);
  out << bytes;
  ++written;
  return out.good();
}

// codec_fuzz inputs from the golden vectors: encoding, elements, contributors, scaler, bytes.
bool CodecSeeds(const std::string& dir, const std::string& golden) {
  std::ifstream in(golden);
  if (!in) {
    std::fprintf(stderr, "fuzz_seeds: cannot read %s\n", golden.c_str());
    return false;
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  int n = 0;
  for (absl::string_view block : absl::StrSplit(text, "\n\n")) {
    std::map<std::string, std::string> kv;
    for (absl::string_view line : absl::StrSplit(block, '\n')) {
      if (line.empty() || line[0] == '#') continue;
      std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(": ", 1));
      if (parts.size() == 2) kv[parts[0]] = parts[1];
    }
    if (!kv.count("encoding") || !kv.count("bytes")) continue;
    uint32_t elements = 0, contributors = 0, scaler_bits = 0;
    (void)absl::SimpleAtoi(kv["elements"], &elements);
    (void)absl::SimpleAtoi(kv["contributors"], &contributors);
    (void)absl::SimpleHexAtoi(kv["scaler"], &scaler_bits);
    std::string input;
    input.push_back(kv["encoding"] == "TERNARY_2BIT" ? 0 : kv["encoding"] == "INT_SUM" ? 1 : 2);
    input.push_back(static_cast<char>(elements & 0xff));
    input.push_back(static_cast<char>(elements >> 8));
    input.push_back(static_cast<char>(contributors & 0xff));
    input.push_back(static_cast<char>(contributors >> 8));
    input.append(reinterpret_cast<const char*>(&scaler_bits), 4);
    for (absl::string_view byte : absl::StrSplit(kv["bytes"], ' ', absl::SkipEmpty())) {
      uint32_t b = 0;
      (void)absl::SimpleHexAtoi(byte, &b);
      input.push_back(static_cast<char>(b));
    }
    if (!Write(dir, absl::StrCat("golden-", n++), input)) return false;
  }
  return n > 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: fuzz_seeds OUT_DIR GOLDEN_FILE\n");
    return 2;
  }
  const std::string out = argv[1];
  mkdir(out.c_str(), 0755);
  if (!CodecSeeds(out + "/codec", argv[2])) return 1;

  // The engine target's job, joined by its ranks: the epochs its requests carry.
  ternps::server::ShardConfig config;
  config.run_reaper = false;
  ternps::server::Engine engine(config);
  absl::StatusOr<std::vector<uint64_t>> joined = ternps::fuzz::JoinAll(engine);
  if (!joined.ok()) {
    std::fprintf(stderr, "fuzz_seeds: %s\n", joined.status().ToString().c_str());
    return 1;
  }
  const std::vector<uint64_t>& epochs = *joined;
  const v1::PushPullRequest push = ternps::fuzz::JobPush(0, epochs[0], 0);
  const v1::PutSnapshotRequest snapshot = ternps::fuzz::JobSnapshot(0, epochs[0], 2, '\0');
  // The answer every rank would get to that push.
  v1::PushPullResponse answer;
  answer.set_step(0);
  for (const v1::PartitionPayload& payload : push.partitions()) {
    v1::PartitionPayload* average = answer.add_averages();
    *average = payload;
    average->set_contributors(ternps::fuzz::kWorld);
  }
  v1::GetRecoveryRequest recovery;
  recovery.set_job_id(ternps::fuzz::kJob);
  recovery.set_epoch(epochs[0]);
  recovery.set_to_step(2);
  const ternps::common::JobSpec spec = ternps::fuzz::JobSpec();
  for (const ternps::common::Partition& p : spec.plan.partitions()) {
    recovery.add_partition_ids(p.id);
  }
  v1::LeaveRequest leave;
  leave.set_job_id(ternps::fuzz::kJob);
  leave.set_worker_rank(2);
  leave.set_epoch(epochs[2]);
  v1::GetStatusRequest status;
  status.set_job_id(ternps::fuzz::kJob);

  const std::string wire = out + "/wire";
  bool ok = Write(wire, "request", std::string(1, '\0') + push.SerializeAsString());
  ok &= Write(wire, "request-cut", std::string(1, '\x2a') + push.SerializeAsString());
  ok &= Write(wire, "response", std::string(1, '\1') + answer.SerializeAsString());

  using ternps::fuzz::EngineInput;
  const std::string e = out + "/engine";
  for (uint8_t token = 0; token < 3; ++token) {
    ok &=
        Write(e, absl::StrCat("join-", token),
              EngineInput(ternps::fuzz::kJoin, token,
                          ternps::fuzz::JobJoin(token % ternps::fuzz::kWorld).SerializeAsString()));
  }
  for (uint32_t r = 0; r < ternps::fuzz::kWorld; ++r) {
    ok &= Write(e, absl::StrCat("share-", r),
                EngineInput(ternps::fuzz::kShareScalers, 1,
                            ternps::fuzz::JobShare(r, epochs[r], 0).SerializeAsString()));
    ok &= Write(e, absl::StrCat("push-", r),
                EngineInput(ternps::fuzz::kPushPull, 1,
                            ternps::fuzz::JobPush(r, epochs[r], 0).SerializeAsString()));
  }
  ok &= Write(e, "leave", EngineInput(ternps::fuzz::kLeave, 1, leave.SerializeAsString()));
  ok &= Write(e, "snapshot",
              EngineInput(ternps::fuzz::kPutSnapshot, 1, snapshot.SerializeAsString()));
  ok &= Write(e, "recovery",
              EngineInput(ternps::fuzz::kGetRecovery, 1, recovery.SerializeAsString()));
  ok &= Write(e, "status", EngineInput(ternps::fuzz::kGetStatus, 1, status.SerializeAsString()));
  ok &= Write(e, "tick", EngineInput(ternps::fuzz::kTick, 0, ""));

  // state_fuzz: each file of a real durable shard's state, unchanged, behind its index.
  const ternps::fuzz::Base base = ternps::fuzz::MakeBase();
  for (size_t i = 0; i < base.files.size(); ++i) {
    ok &= Write(out + "/state", base.files[i].first,
                std::string(1, static_cast<char>(i)) + base.files[i].second);
  }
  std::printf("fuzz_seeds: %d seeds in %s\n", written, out.c_str());
  return ok ? 0 : 1;
}
