// Conversions between absl::Status (used below the RPC layer) and grpc::Status (at the service and
// client boundary). The code and the message carry over unchanged; the numeric codes of the two
// libraries are the same canonical codes.
//
//   reactor->Finish(ToGrpcStatus(engine.Leave(request).status()));   // in a service method
//   absl::Status st = FromGrpcStatus(grpc_status, "shard 0 Join");   // in a client
//
// Thread-safe (pure functions).
#ifndef TERNPS_COMMON_RPC_STATUS_H_
#define TERNPS_COMMON_RPC_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace ternps::common {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);
// The same, with "context: " in front of the message (e.g. the shard address and rpc name).
absl::Status FromGrpcStatus(const grpc::Status& status, std::string_view context);

}  // namespace ternps::common

#endif  // TERNPS_COMMON_RPC_STATUS_H_
