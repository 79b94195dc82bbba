// Job tokens end to end: real gRPC over loopback between libternps_worker and a shard. Workers
// that read the job's token from their token_file train together; a worker without it is
// UNAUTHENTICATED, one with another token PERMISSION_DENIED; a bad token file is refused before
// anything is sent; malformed `authorization` metadata is UNAUTHENTICATED; a worker of another
// job cannot make this job's ranks leave.
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "gtest/gtest.h"
#include "server/shard_server.h"
#include "ternps/v1/ternps.grpc.pb.h"
#include "ternps/worker.h"

namespace ternps {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "4f9c1d0e8b7a6f5e4d3c2b1a09f8e7d6";
constexpr char kOtherToken[] = "0000000000000000000000000000000b";

class JobTokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ternps-token-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    server::ShardServerOptions options;
    options.listen = "127.0.0.1:0";
    absl::StatusOr<std::unique_ptr<server::ShardServer>> shard =
        server::ShardServer::Start(options);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = *std::move(shard);
  }
  void TearDown() override {
    shard_.reset();
    std::system(absl::StrCat("rm -rf ", dir_).c_str());
  }

  std::string TokenFile(const std::string& name, const std::string& contents) {
    const std::string path = absl::StrCat(dir_, "/", name);
    std::ofstream(path) << contents;
    return path;
  }

  worker::WorkerOptions Options(uint32_t rank, const std::string& token_file) const {
    worker::WorkerOptions options;
    options.job_id = "guarded";
    options.rank = rank;
    options.world_size = 2;
    options.shards = {shard_->address()};
    options.tensors = {{"w", 8192}};
    options.connect_timeout = absl::Seconds(5);
    options.token_file = token_file;
    return options;
  }

  std::string dir_;
  std::unique_ptr<server::ShardServer> shard_;
};

TEST_F(JobTokenTest, WorkersWithTheTokenTrainAndOthersAreRefused) {
  const std::string good = TokenFile("good", absl::StrCat(kToken, "\n"));
  absl::StatusOr<std::unique_ptr<worker::Worker>> w0 = worker::Worker::Connect(Options(0, good));
  ASSERT_TRUE(w0.ok()) << w0.status();

  // Rank 1 without a token, then with another job's token: refused at Join.
  absl::StatusOr<std::unique_ptr<worker::Worker>> refused = worker::Worker::Connect(Options(1, ""));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("requires a job token"));
  refused = worker::Worker::Connect(Options(1, TokenFile("other", kOtherToken)));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), Not(HasSubstr(kOtherToken)));
  EXPECT_THAT(std::string(refused.status().message()), Not(HasSubstr(kToken)));

  // The real rank 1, and a step of both.
  absl::StatusOr<std::unique_ptr<worker::Worker>> w1 = worker::Worker::Connect(Options(1, good));
  ASSERT_TRUE(w1.ok()) << w1.status();
  std::vector<float> g0(8192, 1.0f), g1(8192, 3.0f);
  absl::Status st1;
  std::thread t([&] {
    std::vector<absl::Span<float>> grads = {absl::MakeSpan(g1)};
    st1 = (*w1)->Step(grads);
  });
  std::vector<absl::Span<float>> grads = {absl::MakeSpan(g0)};
  const absl::Status st0 = (*w0)->Step(grads);
  t.join();
  ASSERT_TRUE(st0.ok()) << st0;
  ASSERT_TRUE(st1.ok()) << st1;
  EXPECT_EQ(g0, g1);

  // A worker of another job, on the same shard, cannot make rank 1 of this job leave.
  auto stub = v1::ParameterServer::NewStub(
      grpc::CreateChannel(shard_->address(), grpc::InsecureChannelCredentials()));
  v1::JoinRequest other_join;
  other_join.set_job_id("intruder");
  other_join.set_world_size(1);
  other_join.set_shard_count(1);
  other_join.add_tensors()->set_name("w");
  other_join.mutable_tensors(0)->set_elements(16);
  other_join.mutable_codec()->set_codec(v1::CODEC_FP32);
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", absl::StrCat("Bearer ", kOtherToken));
    v1::JoinResponse joined;
    ASSERT_TRUE(stub->Join(&context, other_join, &joined).ok());
  }
  absl::StatusOr<std::shared_ptr<server::Job>> job = shard_->engine().FindJob("guarded");
  ASSERT_TRUE(job.ok());
  v1::LeaveRequest leave;
  leave.set_job_id("guarded");
  leave.set_worker_rank(1);
  leave.set_epoch((*job)->View()->epoch);
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", absl::StrCat("Bearer ", kOtherToken));
    v1::LeaveResponse left;
    const grpc::Status st = stub->Leave(&context, leave, &left);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::PERMISSION_DENIED) << st.error_message();
  }
  EXPECT_EQ((*job)->LiveWorkers(), 2);

  // Malformed metadata: another scheme, a token too short, two values.
  for (const std::vector<std::string>& values : std::vector<std::vector<std::string>>{
           {absl::StrCat("Basic ", kToken)},
           {"Bearer short"},
           {absl::StrCat("Bearer ", kToken), absl::StrCat("Bearer ", kToken)}}) {
    grpc::ClientContext context;
    for (const std::string& v : values) context.AddMetadata("authorization", v);
    v1::GetStatusRequest request;
    request.set_job_id("guarded");
    v1::GetStatusResponse status;
    const grpc::Status st = stub->GetStatus(&context, request, &status);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED) << values[0];
    EXPECT_THAT(st.error_message(), HasSubstr("authorization: ")) << values[0];
  }
}

TEST_F(JobTokenTest, ABadTokenFileIsRefusedBeforeAnythingIsSent) {
  struct Case {
    std::string file;
    std::string message;
  };
  for (const Case& c : {Case{"/nonexistent/token", "token_file: cannot read"},
                        Case{TokenFile("short", "abc\n"), "the token has 3 bytes"},
                        Case{TokenFile("space", "0123456789 abcdef0123"), "byte 10"}}) {
    absl::StatusOr<std::unique_ptr<worker::Worker>> w = worker::Worker::Connect(Options(0, c.file));
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << w.status();
    EXPECT_THAT(std::string(w.status().message()), HasSubstr(c.message));
  }
  EXPECT_EQ(shard_->engine().FindJob("guarded").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace ternps
