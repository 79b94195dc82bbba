#include "server/service.h"

#include <utility>

#include "common/rpc/status.h"

namespace ternps::server {
namespace {

enum Method { kJoin = 0, kShareScalers = 1, kPushPull = 2, kLeave = 3, kGetStatus = 4 };

void Count(common::ServerMetrics* metrics, Method method, const absl::Status& status) {
  if (metrics != nullptr) metrics->CountRequest(method, static_cast<int>(status.code()));
}

// Answers a synchronous engine result.
template <typename Response>
grpc::ServerUnaryReactor* FinishWith(grpc::CallbackServerContext* context,
                                     absl::StatusOr<Response> result, Response* response,
                                     common::ServerMetrics* metrics, Method method) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  Count(metrics, method, result.status());
  if (result.ok()) *response = *std::move(result);
  reactor->Finish(common::ToGrpcStatus(result.status()));
  return reactor;
}

DoneCallback FinishLater(grpc::ServerUnaryReactor* reactor, common::ServerMetrics* metrics,
                         Method method) {
  return [reactor, metrics, method](absl::Status status) {
    Count(metrics, method, status);
    reactor->Finish(common::ToGrpcStatus(status));
  };
}

}  // namespace

grpc::ServerUnaryReactor* ParameterServerService::Join(grpc::CallbackServerContext* context,
                                                       const ternps::v1::JoinRequest* request,
                                                       ternps::v1::JoinResponse* response) {
  return FinishWith(context, engine_->Join(*request), response, metrics(), kJoin);
}

grpc::ServerUnaryReactor* ParameterServerService::ShareScalers(
    grpc::CallbackServerContext* context, const ternps::v1::ShareScalersRequest* request,
    ternps::v1::ShareScalersResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  engine_->ShareScalers(*request, response, FinishLater(reactor, metrics(), kShareScalers));
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServerService::PushPull(
    grpc::CallbackServerContext* context, const ternps::v1::PushPullRequest* request,
    ternps::v1::PushPullResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  engine_->PushPull(*request, response, FinishLater(reactor, metrics(), kPushPull));
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServerService::Leave(grpc::CallbackServerContext* context,
                                                        const ternps::v1::LeaveRequest* request,
                                                        ternps::v1::LeaveResponse* response) {
  return FinishWith(context, engine_->Leave(*request), response, metrics(), kLeave);
}

grpc::ServerUnaryReactor* ParameterServerService::GetStatus(
    grpc::CallbackServerContext* context, const ternps::v1::GetStatusRequest* request,
    ternps::v1::GetStatusResponse* response) {
  return FinishWith(context, engine_->GetStatus(*request), response, metrics(), kGetStatus);
}

}  // namespace ternps::server
