// The gRPC face of a shard: ternps.v1.ParameterServer on the callback API. Thin by design: each
// method hands the request to the Engine and converts its absl::Status to a grpc::Status.
// PushPull, the data path, is a raw method: its request is parsed straight from gRPC's buffer
// (common/wire; the payloads are summed from there) and its answer goes out as slices that alias
// the shard's encoded averages, so no payload byte is copied by protobuf on the way in or out.
//
//   Engine engine(config);
//   ParameterServerService service(&engine);
//   builder.RegisterService(&service);
//
// Thread-safe (the engine is).
#ifndef TERNPS_SERVER_SERVICE_H_
#define TERNPS_SERVER_SERVICE_H_

#include "server/engine.h"
#include "ternps/v1/ternps.grpc.pb.h"

namespace ternps::server {

class ParameterServerService final
    : public ternps::v1::ParameterServer::WithRawCallbackMethod_PushPull<
          ternps::v1::ParameterServer::CallbackService> {
 public:
  explicit ParameterServerService(Engine* engine) : engine_(engine) {}

  grpc::ServerUnaryReactor* Join(grpc::CallbackServerContext* context,
                                 const ternps::v1::JoinRequest* request,
                                 ternps::v1::JoinResponse* response) override;
  grpc::ServerUnaryReactor* ShareScalers(grpc::CallbackServerContext* context,
                                         const ternps::v1::ShareScalersRequest* request,
                                         ternps::v1::ShareScalersResponse* response) override;
  grpc::ServerUnaryReactor* PushPull(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Leave(grpc::CallbackServerContext* context,
                                  const ternps::v1::LeaveRequest* request,
                                  ternps::v1::LeaveResponse* response) override;
  grpc::ServerUnaryReactor* PutSnapshot(grpc::CallbackServerContext* context,
                                        const ternps::v1::PutSnapshotRequest* request,
                                        ternps::v1::PutSnapshotResponse* response) override;
  grpc::ServerUnaryReactor* GetRecovery(grpc::CallbackServerContext* context,
                                        const ternps::v1::GetRecoveryRequest* request,
                                        ternps::v1::GetRecoveryResponse* response) override;
  grpc::ServerUnaryReactor* Watch(grpc::CallbackServerContext* context,
                                  const ternps::v1::WatchRequest* request,
                                  ternps::v1::WatchResponse* response) override;
  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const ternps::v1::GetStatusRequest* request,
                                      ternps::v1::GetStatusResponse* response) override;

 private:
  ShardObserver* observer() const { return engine_->config().observer; }
  Engine* const engine_;
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_SERVICE_H_
