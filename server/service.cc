#include "server/service.h"

#include <utility>

#include "common/rpc/status.h"

namespace ternps::server {
namespace {

void Count(ShardObserver* observer, Method method, const absl::Status& status) {
  if (observer != nullptr) observer->RequestDone(method, status.code());
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

}  // namespace

grpc::ServerUnaryReactor* ParameterServerService::Join(grpc::CallbackServerContext* context,
                                                       const ternps::v1::JoinRequest* request,
                                                       ternps::v1::JoinResponse* response) {
  return FinishWith(context, engine_->Join(*request), response, observer(), Method::kJoin);
}

grpc::ServerUnaryReactor* ParameterServerService::ShareScalers(
    grpc::CallbackServerContext* context, const ternps::v1::ShareScalersRequest* request,
    ternps::v1::ShareScalersResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  engine_->ShareScalers(*request, response,
                        FinishLater(reactor, observer(), Method::kShareScalers));
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServerService::PushPull(
    grpc::CallbackServerContext* context, const ternps::v1::PushPullRequest* request,
    ternps::v1::PushPullResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  engine_->PushPull(*request, response, FinishLater(reactor, observer(), Method::kPushPull));
  return reactor;
}

grpc::ServerUnaryReactor* ParameterServerService::Leave(grpc::CallbackServerContext* context,
                                                        const ternps::v1::LeaveRequest* request,
                                                        ternps::v1::LeaveResponse* response) {
  return FinishWith(context, engine_->Leave(*request), response, observer(), Method::kLeave);
}

grpc::ServerUnaryReactor* ParameterServerService::GetStatus(
    grpc::CallbackServerContext* context, const ternps::v1::GetStatusRequest* request,
    ternps::v1::GetStatusResponse* response) {
  return FinishWith(context, engine_->GetStatus(*request), response, observer(),
                    Method::kGetStatus);
}

}  // namespace ternps::server
