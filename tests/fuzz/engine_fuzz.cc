// libFuzzer target: whole requests through a shard's engine (the layer behind the gRPC service),
// durable (the state store writes what the requests change), with job tokens.
//
// Input (fuzz_job.h): a method byte, a token byte, then the request's protobuf bytes (PushPull's
// through the shard's own wire reader, as the service parses them). The engine serves the job of
// fuzz_job.h, joined by its three ranks; it is rebuilt every 256 inputs. Checked: nothing
// crashes or leaks (ASan), and every asynchronous call is answered exactly once (at the latest
// when the engine shuts down).
#include <stdlib.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/util/clock.h"
#include "common/wire/push_pull_wire.h"
#include "server/engine.h"
#include "tests/fuzz/fuzz_job.h"

namespace {

namespace v1 = ::ternps::v1;
using ternps::server::DoneCallback;

[[noreturn]] void Fail(const char* what) {
  fprintf(stderr, "engine_fuzz: %s\n", what);
  __builtin_trap();
}

class Harness {
 public:
  Harness() {
    // tmpfs where there is one: the state store's fsyncs cost nothing there.
    char shm[] = "/dev/shm/ternps-fuzz-XXXXXX";
    char tmp[] = "/tmp/ternps-fuzz-XXXXXX";
    const char* dir = mkdtemp(shm);
    if (dir == nullptr) dir = mkdtemp(tmp);
    if (dir == nullptr) Fail("cannot create a state directory");
    state_dir_ = dir;
    config_.clock = &clock_;
    config_.run_reaper = false;
    config_.step_timeout = absl::Minutes(1);
    config_.state_dir = state_dir_;
    config_.state_sync = false;
    config_.max_jobs = 4;
    config_.max_world_size = 16;
    config_.max_shard_elements = 1 << 18;
    Reset();
  }
  ~Harness() {
    engine_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(state_dir_, ignored);
  }

  void Run(const uint8_t* data, size_t size) {
    if (++inputs_ % 256 == 0) Reset();
    const auto method = static_cast<ternps::fuzz::Method>(data[0] % ternps::fuzz::kMethods);
    const char* tokens[] = {"", ternps::fuzz::kToken, ternps::fuzz::kOtherToken};
    const absl::string_view token = tokens[data[1] % 3];
    const std::string bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
    switch (method) {
      case ternps::fuzz::kJoin: {
        v1::JoinRequest r;
        if (r.ParseFromString(bytes)) (void)engine_->Join(r, token);
        break;
      }
      case ternps::fuzz::kShareScalers: {
        v1::ShareScalersRequest r;
        if (!r.ParseFromString(bytes)) break;
        auto response = std::make_shared<v1::ShareScalersResponse>();
        engine_->ShareScalers(r, response.get(), Track(response), token);
        break;
      }
      case ternps::fuzz::kPushPull: {
        const ternps::common::Piece piece(data + 2, size - 2);
        ternps::common::PushPullRequestView view;
        if (!ternps::common::ParsePushPullRequest(piece, &view).ok()) break;
        auto answer = std::make_shared<ternps::server::PushPullAnswer>();
        engine_->PushPull(view, answer.get(), Track(answer), token);
        break;
      }
      case ternps::fuzz::kLeave: {
        v1::LeaveRequest r;
        if (r.ParseFromString(bytes)) (void)engine_->Leave(r, token);
        break;
      }
      case ternps::fuzz::kPutSnapshot: {
        v1::PutSnapshotRequest r;
        if (r.ParseFromString(bytes)) (void)engine_->PutSnapshot(r, token);
        break;
      }
      case ternps::fuzz::kGetRecovery: {
        v1::GetRecoveryRequest r;
        if (r.ParseFromString(bytes)) (void)engine_->GetRecovery(r, token);
        break;
      }
      case ternps::fuzz::kGetStatus: {
        v1::GetStatusRequest r;
        if (r.ParseFromString(bytes)) (void)engine_->GetStatus(r, token);
        break;
      }
      default:
        clock_.Advance(config_.step_timeout);
        engine_->CheckTimeouts();
        break;
    }
  }

 private:
  // A callback that must run exactly once; it keeps `keep` (the response) alive until then.
  template <typename T>
  DoneCallback Track(std::shared_ptr<T> keep) {
    ++started_;
    auto once = std::make_shared<std::atomic<bool>>(false);
    return [this, once, keep](absl::Status) {
      if (once->exchange(true)) Fail("a call was answered twice");
      ++finished_;
    };
  }

  void Reset() {
    engine_.reset();  // shuts down: every waiting call is answered
    if (started_ != finished_) Fail("a call was never answered");
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(state_dir_, ignored)) {
      std::filesystem::remove_all(entry.path(), ignored);
    }
    engine_ = std::make_unique<ternps::server::Engine>(config_);
    if (!ternps::fuzz::JoinAll(*engine_).ok()) Fail("the job's own Join failed");
  }

  ternps::common::ManualClock clock_;
  ternps::server::ShardConfig config_;
  std::string state_dir_;
  std::unique_ptr<ternps::server::Engine> engine_;
  std::atomic<int64_t> started_{0};
  std::atomic<int64_t> finished_{0};
  int inputs_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Harness harness;  // destroyed at exit (its state directory removed)
  if (size < 2) return 0;
  harness.Run(data, size);
  return 0;
}
