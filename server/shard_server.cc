#include "server/shard_server.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/notification.h"
#include "common/rpc/credentials.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server_builder.h"

namespace ternps::server {
namespace {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(
    const ShardServerOptions& options) {
  if (options.tls_cert_file.empty() && options.tls_key_file.empty()) {
    if (!options.tls_client_ca_file.empty()) {
      return absl::InvalidArgumentError("tls_client_ca: needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls_cert/tls_key: give both or neither");
  }
  // Rotated certificates take effect without a restart: the watcher re-reads the files every
  // tls_reload_interval.
  absl::StatusOr<std::shared_ptr<grpc::experimental::CertificateProviderInterface>> files =
      common::WatchTlsFiles({.ca = options.tls_client_ca_file,
                             .cert = options.tls_cert_file,
                             .key = options.tls_key_file},
                            {.ca = "tls_client_ca", .cert = "tls_cert", .key = "tls_key"},
                            options.tls_reload_interval, "tls_reload_interval");
  if (!files.ok()) return files.status();
  grpc::experimental::TlsServerCredentialsOptions tls(*std::move(files));
  tls.watch_identity_key_cert_pairs();
  if (!options.tls_client_ca_file.empty()) {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

}  // namespace

int MaxMessageBytes(uint32_t max_partition_elements) {
  const uint64_t bytes = uint64_t{max_partition_elements} * 4 + (1u << 20);
  return bytes > INT32_MAX ? INT32_MAX : static_cast<int>(bytes);
}

absl::StatusOr<std::unique_ptr<ShardServer>> ShardServer::Start(const ShardServerOptions& options) {
  if (absl::Status st = ValidateShardConfig(options.shard); !st.ok()) return st;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds = Credentials(options);
  if (!creds.ok()) return creds.status();
  std::unique_ptr<ShardServer> shard(new ShardServer());
  ShardConfig config = options.shard;
  if (!options.metrics_address.empty()) {
    absl::StatusOr<std::unique_ptr<common::MetricsEndpoint>> endpoint =
        common::MetricsEndpoint::Start(options.metrics_address);
    if (!endpoint.ok()) return endpoint.status();
    shard->metrics_endpoint_ = *std::move(endpoint);
    shard->metrics_ =
        common::ServerMetrics::Create(*shard->metrics_endpoint_->registry(), config.shard_index);
    shard->observer_ = std::make_unique<MetricsObserver>(shard->metrics_.get(), config.clock);
    config.observer = shard->observer_.get();
  }
  if (!config.state_dir.empty()) {
    absl::StatusOr<std::unique_ptr<StateDirLock>> lock =
        StateDirLock::Acquire(ShardStateDir(config.state_dir, config.shard_index));
    if (!lock.ok()) return lock.status();
    shard->state_lock_ = *std::move(lock);
  }
  shard->engine_ = std::make_unique<Engine>(config);
  shard->service_ = std::make_unique<ParameterServerService>(shard->engine_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen, *creds, &shard->port_);
  builder.RegisterService(shard->service_.get());
  const int max_bytes = MaxMessageBytes(options.shard.max_partition_elements);
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  // gRPC sets SO_REUSEPORT by default: a second shard on the same port would start and the
  // kernel would split the workers' connections between the two.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, options.reuse_port ? 1 : 0);
  shard->server_ = builder.BuildAndStart();
  if (shard->server_ == nullptr || shard->port_ == 0) {
    shard->server_.reset();
    return absl::UnavailableError(
        absl::StrCat("listen: cannot listen on '", options.listen,
                     "' (address in use, not a local address, or malformed host:port)"));
  }
  const size_t colon = options.listen.rfind(':');
  shard->address_ = absl::StrCat(options.listen.substr(0, colon), ":", shard->port_);
  return shard;
}

ShardServer::~ShardServer() { Shutdown(absl::ZeroDuration()); }

void ShardServer::Shutdown(absl::Duration drain) {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
  }
  if (server_ == nullptr) {  // Start failed before serving
    if (engine_ != nullptr) engine_->Shutdown();
    return;
  }
  // grpc::Server::Shutdown waits for in-flight calls; calls waiting for absent workers only
  // end when the engine fails them, so do that once the drain time is over.
  absl::Notification drained;
  std::thread shutdown([&] {
    server_->Shutdown(std::chrono::system_clock::now() + absl::ToChronoMilliseconds(drain));
    drained.Notify();
  });
  if (!drained.WaitForNotificationWithTimeout(drain)) engine_->Shutdown();
  shutdown.join();
  engine_->Shutdown();
  server_->Wait();
}

void ShardServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace ternps::server
