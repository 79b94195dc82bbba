// Integration: the shard's protocol over real gRPC with raw stubs and with the worker library:
// per-partition completion, the step timeout and readmission, and every malformed request class
// of the wire format in proto/ternps/v1/ternps.proto (after which an honest step still gives
// exact averages).
#include <atomic>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/codec/int_sum.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "ternps/v1/ternps.grpc.pb.h"
#include "ternps/worker.h"
#include "tests/integration/cluster.h"

namespace ternps {
namespace {

using ::testing::HasSubstr;
namespace v1 = ::ternps::v1;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// A raw client of one shard: builds requests by hand, so tests can send anything.
class RawClient {
 public:
  explicit RawClient(const std::string& address)
      : stub_(v1::ParameterServer::NewStub(
            grpc::CreateChannel(address, grpc::InsecureChannelCredentials()))) {}

  grpc::Status Join(const v1::JoinRequest& request, v1::JoinResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    return stub_->Join(&context, request, response);
  }
  grpc::Status ShareScalers(const v1::ShareScalersRequest& request,
                            v1::ShareScalersResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    return stub_->ShareScalers(&context, request, response);
  }
  grpc::Status PushPull(const v1::PushPullRequest& request, v1::PushPullResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    return stub_->PushPull(&context, request, response);
  }

  // A call answered later: Start it, then Wait for it.
  template <typename Request, typename Response>
  class Async {
   public:
    Request request;
    Response response;
    grpc::Status status;
    grpc::ClientContext context;
    absl::Notification done;
    // Optional: notified (once) by whichever of several calls sharing it finishes first.
    struct FirstDone {
      std::atomic<bool> fired{false};
      absl::Notification notification;
    };
    FirstDone* first_done = nullptr;
    void Finished(grpc::Status st) {
      status = std::move(st);
      FirstDone* any = first_done;  // read before `done`: the call may be destroyed after it
      done.Notify();
      if (any != nullptr && !any->fired.exchange(true)) any->notification.Notify();
    }
    grpc::Status Wait() {
      done.WaitForNotification();  // bounded by the call's deadline
      return status;
    }
  };
  using AsyncPush = Async<v1::PushPullRequest, v1::PushPullResponse>;
  using AsyncScalers = Async<v1::ShareScalersRequest, v1::ShareScalersResponse>;

  void Start(AsyncPush* call) {
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    stub_->async()->PushPull(&call->context, &call->request, &call->response,
                             [call](grpc::Status st) { call->Finished(std::move(st)); });
  }
  void Start(AsyncScalers* call) {
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    stub_->async()->ShareScalers(&call->context, &call->request, &call->response,
                                 [call](grpc::Status st) { call->Finished(std::move(st)); });
  }

 private:
  std::unique_ptr<v1::ParameterServer::Stub> stub_;
};

v1::JoinRequest JoinFor(const std::string& job, uint32_t rank, uint32_t world,
                        const std::vector<std::pair<std::string, uint64_t>>& tensors,
                        v1::Codec codec, uint32_t partition_elements) {
  v1::JoinRequest r;
  r.set_job_id(job);
  r.set_worker_rank(rank);
  r.set_world_size(world);
  for (const auto& [name, n] : tensors) {
    v1::TensorSpec* t = r.add_tensors();
    t->set_name(name);
    t->set_elements(n);
  }
  r.mutable_codec()->set_codec(codec);
  r.mutable_codec()->set_partition_elements(partition_elements);
  r.set_shard_index(0);
  r.set_shard_count(1);
  return r;
}

v1::PartitionPayload Fp32Payload(uint32_t id, const std::vector<float>& values) {
  v1::PartitionPayload p;
  p.set_partition_id(id);
  p.set_encoding(v1::FP32);
  p.set_elements(static_cast<uint32_t>(values.size()));
  p.set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  return p;
}

v1::PartitionPayload TernaryPayload(uint32_t id, uint32_t n, float scaler, uint8_t fill) {
  v1::PartitionPayload p;
  p.set_partition_id(id);
  p.set_encoding(v1::TERNARY_2BIT);
  p.set_elements(n);
  p.set_scaler(scaler);
  std::string data((n + 3) / 4, static_cast<char>(fill));
  if (n % 4 != 0) {  // clear the padding bits of the last byte
    data.back() = static_cast<char>(static_cast<uint8_t>(fill) & ((1u << (2 * (n % 4))) - 1u));
  }
  p.set_data(data);
  return p;
}

float FloatAt(const std::string& data, size_t k) {
  float v;
  std::memcpy(&v, data.data() + 4 * k, 4);
  return v;
}

// Once every worker pushed partition p, p's average comes back although partition q of the same
// step has not been pushed by anyone: the q pushes are only sent after the p answers arrived.
TEST(ProtocolTest, PartitionCompletesWithoutTheOthersOfItsStep) {
  testing::TestCluster cluster(1);
  RawClient client(cluster.addresses()[0]);
  const std::vector<std::pair<std::string, uint64_t>> tensors = {{"p", 100}, {"q", 100}};
  std::vector<uint64_t> epochs;
  for (uint32_t r = 0; r < 2; ++r) {
    v1::JoinResponse joined;
    ASSERT_TRUE(client.Join(JoinFor("order", r, 2, tensors, v1::CODEC_FP32, 0), &joined).ok());
    ASSERT_EQ(joined.owned_partitions_size(), 2);
    epochs.push_back(joined.epoch());
  }
  auto push = [&](uint32_t rank, uint32_t partition, float value) {
    auto call = std::make_unique<RawClient::AsyncPush>();
    call->request.set_job_id("order");
    call->request.set_worker_rank(rank);
    call->request.set_epoch(epochs[rank]);
    call->request.set_step(0);
    *call->request.add_partitions() = Fp32Payload(partition, std::vector<float>(100, value));
    client.Start(call.get());
    return call;
  };
  auto p0 = push(0, 0, 1.0f);
  auto p1 = push(1, 0, 3.0f);
  ASSERT_TRUE(p0->Wait().ok()) << p0->status.error_message();
  ASSERT_TRUE(p1->Wait().ok()) << p1->status.error_message();
  for (auto* call : {p0.get(), p1.get()}) {
    ASSERT_EQ(call->response.averages_size(), 1);
    EXPECT_EQ(call->response.averages(0).partition_id(), 0u);
    EXPECT_EQ(call->response.averages(0).contributors(), 2u);
    EXPECT_EQ(FloatAt(call->response.averages(0).data(), 0), 2.0f);
  }
  auto q0 = push(0, 1, 5.0f);
  auto q1 = push(1, 1, 7.0f);
  ASSERT_TRUE(q0->Wait().ok());
  ASSERT_TRUE(q1->Wait().ok());
  EXPECT_EQ(FloatAt(q1->response.averages(0).data(), 99), 6.0f);
}

// A worker that stops pushing is dropped after the step timeout; the others finish the step with
// W-1 contributors; the late worker gets ABORTED, Joins again and continues with everyone.
TEST(ProtocolTest, StepTimeoutDropsTheLateWorkerWhichCanRejoin) {
  constexpr uint32_t kWorld = 3;
  // Generous against scheduling skew between the two honest workers on a loaded machine.
  testing::TestCluster cluster(2, /*step_timeout=*/absl::Milliseconds(1500));
  std::vector<std::unique_ptr<worker::Worker>> workers(kWorld);
  for (uint32_t r = 0; r < kWorld; ++r) {
    worker::WorkerOptions options;
    options.job_id = "timeout";
    options.rank = r;
    options.world_size = kWorld;
    options.shards = cluster.addresses();
    options.tensors = {{"w", 50000}, {"b", 50}};
    options.codec.partition_elements = 16384;
    auto w = worker::Worker::Connect(options);
    ASSERT_TRUE(w.ok()) << w.status();
    workers[r] = *std::move(w);
  }
  std::vector<std::vector<float>> grads(kWorld * 2);
  auto step = [&](uint32_t r) {
    grads[2 * r].assign(50000, 0.001f * static_cast<float>(r + 1));
    grads[2 * r + 1].assign(50, 1.0f);
    std::vector<absl::Span<float>> spans = {absl::MakeSpan(grads[2 * r]),
                                            absl::MakeSpan(grads[2 * r + 1])};
    return workers[r]->Step(spans);
  };
  // Step 0 without worker 2.
  std::vector<absl::Status> status(kWorld);
  testing::RunWorkers(2, [&](uint32_t r) { status[r] = step(r); });
  ASSERT_TRUE(status[0].ok()) << status[0];
  ASSERT_TRUE(status[1].ok()) << status[1];
  EXPECT_EQ(workers[0]->last_step().min_contributors, 2u);
  EXPECT_EQ(grads[1][0], 1.0f);  // the FP32 tensor's average over the two
  // The late worker's step 0 is refused; it rejoins at step 1.
  const absl::Status late = step(2);
  EXPECT_EQ(late.code(), absl::StatusCode::kAborted) << late;
  EXPECT_THAT(std::string(late.message()), HasSubstr("dropped"));
  ASSERT_TRUE(workers[2]->Rejoin().ok());
  EXPECT_EQ(workers[2]->step(), 1u);
  // Step 1 with all three again.
  testing::RunWorkers(kWorld, [&](uint32_t r) { status[r] = step(r); });
  for (uint32_t r = 0; r < kWorld; ++r) {
    ASSERT_TRUE(status[r].ok()) << status[r];
    EXPECT_EQ(workers[r]->last_step().min_contributors, kWorld);
    EXPECT_EQ(grads[2 * r], grads[0]);
  }
}

class MalformedRequestTest : public ::testing::Test {
 protected:
  // One shard, 2 workers, TernGrad with sharing: "w" (8190 elements: partitions 0 of 4096 and
  // 1 of 4094, so the last byte has padding bits) and "b" (10 elements, FP32, partition 2).
  void SetUp() override {
    for (uint32_t r = 0; r < 2; ++r) {
      v1::JoinResponse joined;
      ASSERT_TRUE(client_.Join(Join(r), &joined).ok());
      epochs_[r] = joined.epoch();
    }
    // Step 0 scalers: rank 0 offers 0.5 and 0.25, rank 1 offers 1.0 and 0.125.
    std::vector<std::unique_ptr<RawClient::AsyncScalers>> calls;
    const float offers[2][2] = {{0.5f, 0.25f}, {1.0f, 0.125f}};
    for (uint32_t r = 0; r < 2; ++r) {
      auto call = std::make_unique<RawClient::AsyncScalers>();
      call->request = Scalers(r, 0, {0, 1}, {offers[r][0], offers[r][1]});
      client_.Start(call.get());
      calls.push_back(std::move(call));
    }
    for (auto& call : calls) {
      ASSERT_TRUE(call->Wait().ok()) << call->status.error_message();
      ASSERT_EQ(call->response.shared_scalers_size(), 2);
      EXPECT_EQ(call->response.shared_scalers(0), 1.0f);
      EXPECT_EQ(call->response.shared_scalers(1), 0.25f);
    }
  }

  v1::JoinRequest Join(uint32_t rank) {
    return JoinFor("malformed", rank, 2, {{"w", 8190}, {"b", 10}}, v1::CODEC_TERNGRAD, 4096);
  }
  v1::ShareScalersRequest Scalers(uint32_t rank, uint64_t step, std::vector<uint32_t> ids,
                                  std::vector<float> scalers) {
    v1::ShareScalersRequest r;
    r.set_job_id("malformed");
    r.set_worker_rank(rank);
    r.set_epoch(epochs_[rank]);
    r.set_step(step);
    for (uint32_t id : ids) r.add_partition_ids(id);
    for (float s : scalers) r.add_scalers(s);
    return r;
  }
  v1::PushPullRequest Push(uint32_t rank, uint64_t step, std::vector<v1::PartitionPayload> parts) {
    v1::PushPullRequest r;
    r.set_job_id("malformed");
    r.set_worker_rank(rank);
    r.set_epoch(epochs_[rank]);
    r.set_step(step);
    for (auto& p : parts) *r.add_partitions() = std::move(p);
    return r;
  }
  // The honest pushes of step 0: rank 0 all +1 codes, rank 1 all zero; FP32 1.0 and 3.0.
  std::vector<v1::PartitionPayload> Honest(uint32_t rank) {
    return {TernaryPayload(0, 4096, 1.0f, rank == 0 ? 0x55 : 0x00),
            TernaryPayload(1, 4094, 0.25f, rank == 0 ? 0x55 : 0x00),
            Fp32Payload(2, std::vector<float>(10, rank == 0 ? 1.0f : 3.0f))};
  }
  void ExpectRejected(const v1::PushPullRequest& request, grpc::StatusCode code,
                      const std::string& needle) {
    v1::PushPullResponse response;
    const grpc::Status st = client_.PushPull(request, &response);
    EXPECT_EQ(st.error_code(), code) << needle << ": " << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(needle));
  }

  testing::TestCluster cluster_{1};
  RawClient client_{cluster_.addresses()[0]};
  uint64_t epochs_[2] = {0, 0};
};

TEST_F(MalformedRequestTest, EveryClassIsRejectedAndTheNextHonestStepIsExact) {
  using grpc::StatusCode;
  auto honest = [&](uint32_t r) { return Honest(r); };
  // Job, worker and epoch.
  {
    auto r = Push(0, 0, honest(0));
    r.set_job_id("nope");
    ExpectRejected(r, StatusCode::NOT_FOUND, "job_id");
    r.set_job_id("bad id!");
    ExpectRejected(r, StatusCode::INVALID_ARGUMENT, "job_id");
  }
  {
    auto r = Push(0, 0, honest(0));
    r.set_worker_rank(7);
    ExpectRejected(r, StatusCode::INVALID_ARGUMENT, "worker_rank");
  }
  {
    auto r = Push(0, 0, honest(0));
    r.set_epoch(epochs_[0] + 5);
    ExpectRejected(r, StatusCode::INVALID_ARGUMENT, "epoch");
  }
  // Partition ids, sizes and encodings.
  {
    auto parts = honest(0);
    parts[0].set_partition_id(99);
    ExpectRejected(Push(0, 0, parts), StatusCode::NOT_FOUND, "partitions[0].partition_id");
  }
  {
    auto parts = honest(0);
    parts[1] = parts[0];
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "appears twice");
  }
  {
    auto parts = honest(0);
    parts[0].set_elements(4095);
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[0].elements");
  }
  {
    auto parts = honest(0);
    parts[0] = Fp32Payload(0, std::vector<float>(4096, 0.0f));
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[0].encoding");
  }
  {
    auto parts = honest(0);
    parts[2].set_contributors(2);
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[2].contributors");
  }
  // Payload bytes: length, code 11, padding bits, FP32 values.
  {
    auto parts = honest(0);
    parts[0].mutable_data()->push_back(0);
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[0].data");
  }
  {
    auto parts = honest(0);
    (*parts[0].mutable_data())[100] = static_cast<char>(0x0C);  // element 401 = 0b11
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[0].data");
  }
  {
    auto parts = honest(0);
    parts[1].mutable_data()->back() = static_cast<char>(0x40);  // a padding bit of element 4095
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[1].data");
  }
  {
    auto parts = honest(0);
    std::vector<float> values(10, 1.0f);
    values[3] = kNaN;
    parts[2] = Fp32Payload(2, values);
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[2].data");
  }
  // Scalers: not finite, negative, not the shared one.
  for (float bad : {kNaN, std::numeric_limits<float>::infinity(), -1.0f}) {
    auto parts = honest(0);
    parts[0].set_scaler(bad);
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[0].scaler");
  }
  {
    auto parts = honest(0);
    parts[1].set_scaler(0.5f);
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "shared scaler");
  }
  // Steps: too far ahead; the next step before its scalers are shared.
  ExpectRejected(Push(0, 2, honest(0)), StatusCode::FAILED_PRECONDITION, "too far ahead");
  ExpectRejected(Push(0, 1, honest(0)), StatusCode::FAILED_PRECONDITION, "ShareScalers");
  // ShareScalers: mismatched lists, bad scaler, FP32 partition, repeated offer.
  {
    v1::ShareScalersResponse response;
    EXPECT_EQ(client_.ShareScalers(Scalers(0, 1, {0, 1}, {1.0f}), &response).error_code(),
              StatusCode::INVALID_ARGUMENT);
    const grpc::Status neg = client_.ShareScalers(Scalers(0, 1, {0}, {-1.0f}), &response);
    EXPECT_EQ(neg.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(neg.error_message(), HasSubstr("scalers[0]"));
    EXPECT_EQ(client_.ShareScalers(Scalers(0, 1, {2}, {1.0f}), &response).error_code(),
              StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(client_.ShareScalers(Scalers(0, 0, {0}, {1.0f}), &response).error_code(),
              StatusCode::ALREADY_EXISTS);
  }
  // Registration mismatches at Join.
  {
    v1::JoinResponse joined;
    auto j = Join(1);
    j.mutable_tensors(0)->set_elements(8191);
    grpc::Status st = client_.Join(j, &joined);
    EXPECT_EQ(st.error_code(), StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(st.error_message(), HasSubstr("tensors[0].elements"));
    j = Join(1);
    j.set_world_size(3);
    EXPECT_EQ(client_.Join(j, &joined).error_code(), StatusCode::FAILED_PRECONDITION);
    j = Join(1);
    j.set_shard_count(2);
    EXPECT_EQ(client_.Join(j, &joined).error_code(), StatusCode::FAILED_PRECONDITION);
    j = Join(1);
    j.set_plan_checksum(12345);
    st = client_.Join(j, &joined);
    EXPECT_EQ(st.error_code(), StatusCode::FAILED_PRECONDITION);
    EXPECT_THAT(st.error_message(), HasSubstr("plan_checksum"));
    j = JoinFor("other", 0, 2, {{"", 10}}, v1::CODEC_TERNGRAD, 4096);
    st = client_.Join(j, &joined);
    EXPECT_EQ(st.error_code(), StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(st.error_message(), HasSubstr("tensors[0].name"));
    j = JoinFor("other", 0, 2, {{"x", 10}}, v1::CODEC_TERNGRAD, 4096);
    j.mutable_codec()->set_clip_sigmas(kNaN);
    st = client_.Join(j, &joined);
    EXPECT_THAT(st.error_message(), HasSubstr("codec.clip_sigmas"));
  }
  // A call whose first partition is fine and whose last is not: nothing of it may be summed.
  {
    auto parts = honest(0);
    parts[2].set_elements(11);
    ExpectRejected(Push(0, 0, parts), StatusCode::INVALID_ARGUMENT, "partitions[2].elements");
  }
  // The honest step, with rank 0's push sent twice concurrently: neither can complete before
  // rank 1 pushes, so whichever the shard records second is answered ALREADY_EXISTS at once;
  // only then does rank 1 push, and the recorded one gets the average.
  RawClient::AsyncPush::FirstDone first_done;
  RawClient::AsyncPush first;
  first.request = Push(0, 0, honest(0));
  first.first_done = &first_done;
  RawClient::AsyncPush repeat;
  repeat.request = Push(0, 0, honest(0));
  repeat.first_done = &first_done;
  client_.Start(&first);
  client_.Start(&repeat);
  first_done.notification.WaitForNotification();
  RawClient::AsyncPush second;
  second.request = Push(1, 0, honest(1));
  client_.Start(&second);
  const grpc::Status a = first.Wait();
  const grpc::Status b = repeat.Wait();
  ASSERT_TRUE(second.Wait().ok()) << second.status.error_message();
  ASSERT_NE(a.ok(), b.ok()) << a.error_message() << " / " << b.error_message();
  EXPECT_EQ((a.ok() ? b : a).error_code(), StatusCode::ALREADY_EXISTS);
  RawClient::AsyncPush& answered = a.ok() ? first : repeat;
  for (auto* call : {&answered, &second}) {
    const auto& avg = call->response.averages();
    ASSERT_EQ(avg.size(), 3);
    // Partition 0: codes sum to 1 everywhere, N = 2, scaler 1.0: INT_SUM fields of 3 (k + N).
    EXPECT_EQ(avg[0].encoding(), v1::INT_SUM);
    EXPECT_EQ(avg[0].contributors(), 2u);
    EXPECT_EQ(avg[0].scaler(), 1.0f);
    std::vector<float> decoded(4096, 0.0f);
    ASSERT_TRUE(common::DecodeIntSumAdd(
                    absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(avg[0].data().data()),
                                        avg[0].data().size()),
                    2, avg[0].scaler(), absl::MakeSpan(decoded))
                    .ok());
    for (float v : decoded) ASSERT_EQ(v, 0.5f);
    EXPECT_EQ(avg[1].scaler(), 0.25f);
    EXPECT_EQ(avg[2].encoding(), v1::FP32);
    for (size_t k = 0; k < 10; ++k) ASSERT_EQ(FloatAt(avg[2].data(), k), 2.0f);
  }
  // Step 0 is complete now: pushing it again is stale.
  ExpectRejected(Push(0, 0, honest(0)), StatusCode::FAILED_PRECONDITION, "already complete");
}

TEST_F(MalformedRequestTest, CallsBeforeJoinAreRefused) {
  v1::JoinResponse joined;
  ASSERT_TRUE(client_.Join(JoinFor("half", 0, 2, {{"x", 10}}, v1::CODEC_FP32, 0), &joined).ok());
  v1::PushPullRequest r;
  r.set_job_id("half");
  r.set_worker_rank(1);
  r.set_epoch(joined.epoch());
  *r.add_partitions() = Fp32Payload(0, std::vector<float>(10, 1.0f));
  ExpectRejected(r, grpc::StatusCode::FAILED_PRECONDITION, "Join first");
}

}  // namespace
}  // namespace ternps

namespace ternps {
namespace {

// With a window of calls in flight per shard, every worker must send a shard's calls in the same
// order: if each sent them in the order its encodes happened to finish, two workers could fill
// their windows with different partitions and each wait for the other (seen: fp32 training on 4
// workers hung at its first step). Many small single-partition calls, a window of 1, 4 encode
// threads per worker and 4 workers make different finishing orders likely; a hang fails on the
// call deadline.
TEST(CallWindowTest, WorkersNeverDeadlockOnTheirCallWindows) {
  constexpr uint32_t kWorld = 4;
  testing::TestCluster cluster(2);
  std::vector<absl::Status> status(kWorld);
  testing::RunWorkers(kWorld, [&](uint32_t rank) {
    worker::WorkerOptions options;
    options.job_id = "window";
    options.rank = rank;
    options.world_size = kWorld;
    options.shards = cluster.addresses();
    options.tensors = {{"w", 64 * 1024}};
    options.codec.codec = worker::CodecKind::kFp32;
    options.codec.partition_elements = 1024;  // 64 partitions, one per call
    options.max_call_bytes = 4096;
    options.calls_in_flight_per_shard = 1;
    options.threads = 4;
    options.rpc_timeout = absl::Seconds(20);
    auto w = worker::Worker::Connect(options);
    if (!w.ok()) {
      status[rank] = w.status();
      return;
    }
    std::vector<float> g(64 * 1024, 0.5f);
    std::vector<absl::Span<float>> spans = {absl::MakeSpan(g)};
    for (int step = 0; step < 30 && status[rank].ok(); ++step) status[rank] = (*w)->Step(spans);
  });
  for (uint32_t r = 0; r < kWorld; ++r) EXPECT_TRUE(status[r].ok()) << r << ": " << status[r];
}

}  // namespace
}  // namespace ternps

namespace ternps {
namespace {

// Established TCP connections whose remote end is 127.0.0.1:`port` (/proc/net/tcp, and
// /proc/net/tcp6 for IPv4-mapped sockets): this process's client sockets to an in-process shard.
int ConnectionsTo(int port) {
  int n = 0;
  for (const char* file : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(file);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      const std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      // f[2]: remote address:port in hex, f[3]: state, 01 = ESTABLISHED.
      if (f.size() < 4 || f[3] != "01") continue;
      const std::vector<std::string> remote = absl::StrSplit(f[2], ':');
      int remote_port = 0;
      if (remote.size() == 2 &&
          (remote[0] == "0100007F" || remote[0] == "0000000000000000FFFF00000100007F") &&
          absl::SimpleHexAtoi(remote[1], &remote_port) && remote_port == port) {
        ++n;
      }
    }
  }
  return n;
}

// channels_per_shard: the worker opens that many connections to each shard (gRPC would share
// one between identical channels), its calls take turns on them, and the averages are exact.
TEST(ChannelsTest, EachShardGetsItsOwnConnectionsAndTheAveragesAreExact) {
  for (const int channels : {1, 3}) {
    SCOPED_TRACE(channels);
    testing::TestCluster cluster(1);
    const std::string address = cluster.addresses()[0];
    int port = 0;
    ASSERT_TRUE(absl::SimpleAtoi(address.substr(address.rfind(':') + 1), &port));
    // The port may be one an earlier cluster of this process used, whose connections are still
    // closing (gRPC closes them asynchronously): wait until none is left to count.
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (ConnectionsTo(port) != 0) {
      ASSERT_LT(absl::Now(), deadline) << "connections to port " << port << " stay open";
      absl::SleepFor(absl::Milliseconds(10));
    }
    worker::WorkerOptions options;
    options.job_id = "channels";
    options.shards = cluster.addresses();
    options.tensors = {{"w", 64 * 1024}};
    options.codec.codec = worker::CodecKind::kFp32;
    options.codec.partition_elements = 1024;  // 64 partitions, one per call
    options.max_call_bytes = 4096;
    options.channels_per_shard = channels;
    auto w = worker::Worker::Connect(options);
    ASSERT_TRUE(w.ok()) << w.status();
    // Connected by Connect (Join), not by the first call: a handshake behind a busy link must not
    // fail the first step's calls.
    EXPECT_EQ(ConnectionsTo(port), channels);
    for (int step = 0; step < 3; ++step) {
      std::vector<float> g(64 * 1024);
      for (size_t i = 0; i < g.size(); ++i) g[i] = 0.25f * static_cast<float>(i % 97) - step;
      const std::vector<float> sent = g;
      std::vector<absl::Span<float>> spans = {absl::MakeSpan(g)};
      ASSERT_TRUE((*w)->Step(spans).ok());
      EXPECT_EQ(g, sent);  // one worker: the average is its own gradient
    }
    EXPECT_EQ(ConnectionsTo(port), channels);
  }
}

// int_sum_radix: four workers get their TernGrad averages as INT_SUM_RADIX (3.2 bits per element
// against 4), bit for bit the averages a job without it gets, in a fifth fewer received bytes.
TEST(RadixTest, FourWorkersGetTheSameAveragesInFewerBytes) {
  constexpr uint32_t kWorld = 4;
  constexpr size_t kElements = 200003;  // partitions of 65536 and a last one of 3395
  struct Run {
    std::vector<std::vector<float>> averages;  // rank 0's, per step
    uint64_t received = 0;                     // rank 0's, all steps
  };
  auto run = [&](bool radix) {
    Run out;
    testing::TestCluster cluster(2);
    std::vector<absl::Status> status(kWorld);
    testing::RunWorkers(kWorld, [&](uint32_t rank) {
      worker::WorkerOptions options;
      options.job_id = radix ? "radix" : "bits";
      options.rank = rank;
      options.world_size = kWorld;
      options.shards = cluster.addresses();
      options.tensors = {{"w", kElements}, {"b", 100}};
      options.codec.partition_elements = 65536;
      options.codec.seed = 5;
      options.codec.int_sum_radix = radix;
      auto w = worker::Worker::Connect(options);
      if (!w.ok()) {
        status[rank] = w.status();
        return;
      }
      for (int step = 0; step < 3 && status[rank].ok(); ++step) {
        std::vector<float> g(kElements), b(100, 0.5f * rank);
        for (size_t i = 0; i < g.size(); ++i) {
          g[i] = std::sin(0.001f * static_cast<float>(i * (rank + 1) + step));
        }
        std::vector<absl::Span<float>> spans = {absl::MakeSpan(g), absl::MakeSpan(b)};
        status[rank] = (*w)->Step(spans);
        if (rank == 0 && status[rank].ok()) {
          out.averages.push_back(g);
          out.received += (*w)->last_step().received_bytes;
        }
      }
    });
    for (uint32_t r = 0; r < kWorld; ++r) EXPECT_TRUE(status[r].ok()) << r << ": " << status[r];
    return out;
  };
  const Run bits = run(false);
  const Run radix = run(true);
  ASSERT_EQ(bits.averages.size(), 3u);
  ASSERT_EQ(radix.averages.size(), 3u);
  for (size_t step = 0; step < 3; ++step) {
    ASSERT_EQ(std::memcmp(bits.averages[step].data(), radix.averages[step].data(),
                          kElements * sizeof(float)),
              0)
        << "step " << step;
  }
  // Payloads: 4 bits against 16 bits per 5 elements; the rest (framing, the FP32 tensor) is small.
  const double ratio = static_cast<double>(radix.received) / static_cast<double>(bits.received);
  EXPECT_GT(ratio, 0.78);
  EXPECT_LT(ratio, 0.82);
}

TEST(ChannelsTest, ConnectRefusesACountOutOfRange) {
  for (const int channels : {0, -1, worker::kMaxChannelsPerShard + 1}) {
    worker::WorkerOptions options;
    options.shards = {"127.0.0.1:1"};
    options.tensors = {{"w", 8}};
    options.channels_per_shard = channels;
    auto w = worker::Worker::Connect(options);
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(w.status().message()), HasSubstr("channels_per_shard"));
  }
}

}  // namespace
}  // namespace ternps

namespace ternps {
namespace {

// PushPull is parsed from raw bytes on the shard: bytes that are not a PushPullRequest get
// INVALID_ARGUMENT over real gRPC, and the shard goes on serving.
TEST(RawPushPullTest, GarbageBytesAreRefusedAndTheShardServesOn) {
  testing::TestCluster cluster(1);
  auto channel = grpc::CreateChannel(cluster.addresses()[0], grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  const std::vector<std::string> garbage = {
      std::string("\x0b", 1),          // a group
      std::string(11, '\xff'),         // an overlong varint
      std::string("\x2a\x10\x08", 3),  // a submessage longer than the message
      std::string("\x0a\x05job", 5),   // a string longer than the message
      std::string(1000, '\x00'),       // field number 0
  };
  for (const std::string& bytes : garbage) {
    grpc::Slice slice(bytes.data(), bytes.size());
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::ClientContext context;
    absl::Notification done;
    grpc::Status status;
    stub.UnaryCall(&context, "/ternps.v1.ParameterServer/PushPull", grpc::StubOptions(), &request,
                   &response, [&](grpc::Status st) {
                     status = st;
                     done.Notify();
                   });
    done.WaitForNotification();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr("malformed protobuf encoding"));
  }
  // Still serving: a well-formed request for an unknown job gets NOT_FOUND naming it.
  auto typed = ternps::v1::ParameterServer::NewStub(channel);
  ternps::v1::PushPullRequest request;
  request.set_job_id("nobody");
  ternps::v1::PushPullResponse response;
  grpc::ClientContext context;
  const grpc::Status st = typed->PushPull(&context, request, &response);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(st.error_message(), HasSubstr("nobody"));
}

}  // namespace
}  // namespace ternps
