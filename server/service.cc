#include "server/service.h"

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/rpc/job_token.h"
#include "common/rpc/status.h"
#include "common/wire/push_pull_wire.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "server/answer.h"

namespace ternps::server {
namespace {

void Count(ShardObserver* observer, Method method, const absl::Status& status) {
  if (observer != nullptr) observer->RequestDone(method, status.code());
}

// The job token the call carries (empty: none); UNAUTHENTICATED for malformed `authorization`
// metadata.
absl::StatusOr<std::string> CallToken(const grpc::CallbackServerContext* context) {
  std::vector<absl::string_view> values;
  const auto range = context->client_metadata().equal_range(
      grpc::string_ref(common::kJobTokenMetadataKey.data(), common::kJobTokenMetadataKey.size()));
  for (auto it = range.first; it != range.second; ++it) {
    values.emplace_back(it->second.data(), it->second.size());
  }
  return common::JobTokenFromMetadata(values);
}

// `call(token)` with the call's token, or its error as the result.
template <typename Call>
auto WithToken(const grpc::CallbackServerContext* context, Call call) -> decltype(call("")) {
  absl::StatusOr<std::string> token = CallToken(context);
  if (!token.ok()) return token.status();
  return call(*token);
}

// Answers a synchronous engine result.
template <typename Response>
grpc::ServerUnaryReactor* FinishWith(grpc::CallbackServerContext* context,
                                     absl::StatusOr<Response> result, Response* response,
                                     ShardObserver* observer, Method method) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Count(observer, method, result.status());
  if (result.ok()) *response = *std::move(result);
  reactor->Finish(common::ToGrpcStatus(result.status()));
  return reactor;
}

DoneCallback FinishLater(grpc::ServerUnaryReactor* reactor, ShardObserver* observer,
                         Method method) {
  return [reactor, observer, method](absl::Status status) {
    Count(observer, method, status);
    reactor->Finish(common::ToGrpcStatus(status));
  };
}

// A request's bytes as the pieces (slices) gRPC received them in, referenced, not copied.
class RequestPieces {
 public:
  explicit RequestPieces(const grpc::ByteBuffer& buffer) {
    (void)buffer.Dump(&slices_);
    pieces_.reserve(slices_.size());
    for (const grpc::Slice& s : slices_) pieces_.emplace_back(s.begin(), s.size());
  }
  absl::Span<const common::Piece> pieces() const { return pieces_; }

 private:
  std::vector<grpc::Slice> slices_;
  std::vector<common::Piece> pieces_;
};

// The answer as protobuf wire bytes: small heads copied into slices, each average's bytes as a
// slice that holds a reference to them (released when gRPC has sent it).
grpc::ByteBuffer Serialize(const PushPullAnswer& answer) {
  std::vector<grpc::Slice> slices;
  slices.reserve(2 * answer.averages.size() + 1);
  std::string head;
  common::AppendPushPullResponseHead(answer.step, &head);
  for (const AnsweredAverage& a : answer.averages) {
    const size_t n = a.bytes == nullptr ? 0 : a.bytes->size();
    common::AppendPayloadHead(common::kResponseAveragesField, a.head, n, &head);
    slices.emplace_back(head.data(), head.size());
    head.clear();
    if (n == 0) continue;
    auto* ref = new std::shared_ptr<const AverageBytes>(a.bytes);
    slices.emplace_back(
        const_cast<uint8_t*>(a.bytes->data()), n,
        [](void* p) { delete static_cast<std::shared_ptr<const AverageBytes>*>(p); }, ref);
  }
  if (!head.empty()) slices.emplace_back(head.data(), head.size());
  return grpc::ByteBuffer(slices.data(), slices.size());
}

}  // namespace

grpc::ServerUnaryReactor* ParameterServerService::Join(grpc::CallbackServerContext* context,
                                                       const ternps::v1::JoinRequest* request,
                                                       ternps::v1::JoinResponse* response) {
  return FinishWith(
      context, WithToken(context, [&](absl::string_view t) { return engine_->Join(*request, t); }),
      response, observer(), Method::kJoin);
}

grpc::ServerUnaryReactor* ParameterServerService::ShareScalers(
    grpc::CallbackServerContext* context, const ternps::v1::ShareScalersRequest* request,
    ternps::v1::ShareScalersResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  DoneCallback finish = FinishLater(reactor, observer(), Method::kShareScalers);
  absl::StatusOr<std::string> token = CallToken(context);
  if (!token.ok()) {
    finish(token.status());
    return reactor;
  }
  engine_->ShareScalers(*request, response, std::move(finish), *token);
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServerService::PushPull(grpc::CallbackServerContext* context,
                                                           const grpc::ByteBuffer* request,
                                                           grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  const RequestPieces bytes(*request);
  common::PushPullRequestView view;
  DoneCallback finish = FinishLater(reactor, observer(), Method::kPushPull);
  absl::StatusOr<std::string> token = CallToken(context);
  if (!token.ok()) {
    finish(token.status());
    return reactor;
  }
  if (absl::Status st = common::ParsePushPullRequest(bytes.pieces(), &view); !st.ok()) {
    finish(std::move(st));
    return reactor;
  }
  auto answer = std::make_shared<PushPullAnswer>();
  // The payloads are summed before PushPull returns; `bytes` may go then.
  engine_->PushPull(
      view, answer.get(),
      [response, answer, finish = std::move(finish)](absl::Status st) {
        if (st.ok()) *response = Serialize(*answer);
        finish(std::move(st));
      },
      *token);
  // The payloads have been summed. Give gRPC's receive buffers back now rather than when the call
  // ends (after the slowest worker's push): held, they make the allocator hand out fresh pages
  // for every message (page faults on every received byte). The request is this handler's to
  // read and nothing reads it after this.
  view.partitions.clear();
  const_cast<grpc::ByteBuffer*>(request)->Clear();
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServerService::Leave(grpc::CallbackServerContext* context,
                                                        const ternps::v1::LeaveRequest* request,
                                                        ternps::v1::LeaveResponse* response) {
  return FinishWith(
      context, WithToken(context, [&](absl::string_view t) { return engine_->Leave(*request, t); }),
      response, observer(), Method::kLeave);
}

grpc::ServerUnaryReactor* ParameterServerService::PutSnapshot(
    grpc::CallbackServerContext* context, const ternps::v1::PutSnapshotRequest* request,
    ternps::v1::PutSnapshotResponse* response) {
  // The request is this handler's: its state bytes move into the shard instead of being copied.
  return FinishWith(context,
                    WithToken(context,
                              [&](absl::string_view t) {
                                return engine_->PutSnapshot(
                                    const_cast<ternps::v1::PutSnapshotRequest&>(*request), t);
                              }),
                    response, observer(), Method::kPutSnapshot);
}

grpc::ServerUnaryReactor* ParameterServerService::GetRecovery(
    grpc::CallbackServerContext* context, const ternps::v1::GetRecoveryRequest* request,
    ternps::v1::GetRecoveryResponse* response) {
  return FinishWith(
      context,
      WithToken(context, [&](absl::string_view t) { return engine_->GetRecovery(*request, t); }),
      response, observer(), Method::kGetRecovery);
}

namespace {

// A Watch call, held until the job answers it (the rank left, the job ended) or gRPC cancels it
// (the worker's connection closed, or it cancelled): then the job notes the rank disconnected.
// Not counted in the call metrics (it lasts as long as the worker is in the job).
class WatchReactor final : public grpc::ServerUnaryReactor {
 public:
  WatchReactor(Engine* engine, const ternps::v1::WatchRequest& request)
      : engine_(engine), job_id_(request.job_id()), rank_(request.worker_rank()) {
    call_ = std::make_shared<PendingCall<ternps::v1::WatchResponse>>(
        &response_, 1, [this](absl::Status st) { Finish(common::ToGrpcStatus(st)); });
  }
  // Hands the call to the engine (or answers it at once with the refusal).
  void Start(const ternps::v1::WatchRequest& request, const grpc::CallbackServerContext* context) {
    absl::StatusOr<std::string> token = CallToken(context);
    if (!token.ok()) {
      call_->Fail(token.status());
      call_->Finish();
      return;
    }
    engine_->Watch(request, call_, *token);
  }
  void OnCancel() override {
    engine_->Unwatch(job_id_, rank_, call_.get());
    call_->Fail(absl::CancelledError("Watch cancelled"));
    call_->Finish();
  }
  void OnDone() override { delete this; }

 private:
  Engine* const engine_;
  const std::string job_id_;
  const uint32_t rank_;
  ternps::v1::WatchResponse response_;
  std::shared_ptr<PendingCall<ternps::v1::WatchResponse>> call_;
};

}  // namespace

grpc::ServerUnaryReactor* ParameterServerService::Watch(grpc::CallbackServerContext* context,
                                                        const ternps::v1::WatchRequest* request,
                                                        ternps::v1::WatchResponse*) {
  auto* reactor = new WatchReactor(engine_, *request);
  reactor->Start(*request, context);
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServerService::GetStatus(
    grpc::CallbackServerContext* context, const ternps::v1::GetStatusRequest* request,
    ternps::v1::GetStatusResponse* response) {
  return FinishWith(
      context,
      WithToken(context, [&](absl::string_view t) { return engine_->GetStatus(*request, t); }),
      response, observer(), Method::kGetStatus);
}

}  // namespace ternps::server
