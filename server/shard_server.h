// A running shard: the engine behind a gRPC server with the ParameterServer service, the standard
// health service and server reflection. Used by ternps-server's main and by in-process tests.
//
//   absl::StatusOr<std::unique_ptr<ShardServer>> shard = ShardServer::Start(options);
//   std::string address = (*shard)->address();   // 127.0.0.1:<chosen port>
//   (*shard)->Shutdown(absl::Seconds(5));         // drain, then fail what still waits
//
// Thread-safe.
#ifndef TERNPS_SERVER_SHARD_SERVER_H_
#define TERNPS_SERVER_SHARD_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/metrics/metrics.h"
#include "grpcpp/server.h"
#include "server/engine.h"
#include "server/metrics_observer.h"
#include "server/service.h"
#include "server/state_store.h"

namespace ternps::server {

struct ShardServerOptions {
  // host:port; port 0 picks a free one.
  std::string listen = "127.0.0.1:0";
  ShardConfig shard;
  // PEM files for TLS; both empty: plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  // PEM CA certificates; when set (with tls_cert/tls_key), every client must present a
  // certificate signed by one of them (mutual TLS).
  std::string tls_client_ca_file;
  // How often the TLS files are read again: a rotated certificate, key or CA (written in place or
  // swapped in, as Kubernetes does with Secret volumes) is used for new connections from then on.
  absl::Duration tls_reload_interval = absl::Seconds(60);
  // host:port for the Prometheus /metrics endpoint (port 0 picks one); empty: no metrics.
  std::string metrics_address;
  // Let several processes bind the same port (SO_REUSEPORT). Off: a port someone else holds is
  // refused at start-up.
  bool reuse_port = false;
};

// The largest request a shard accepts: one FP32 partition of the largest size plus framing.
int MaxMessageBytes(uint32_t max_partition_elements);

class ShardServer {
 public:
  static absl::StatusOr<std::unique_ptr<ShardServer>> Start(const ShardServerOptions& options);
  ~ShardServer();  // Shutdown(0)

  int port() const { return port_; }
  // host:port with the chosen port.
  const std::string& address() const { return address_; }
  Engine& engine() { return *engine_; }
  // The /metrics port, 0 without metrics.
  int metrics_port() const { return metrics_endpoint_ ? metrics_endpoint_->port() : 0; }

  // Stops accepting calls, lets in-flight ones finish for up to `drain`, then fails those still
  // waiting for other workers (UNAVAILABLE) and returns. Idempotent.
  void Shutdown(absl::Duration drain);
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  ShardServer() = default;

  // Declared before the engine, which records into them: destroyed after it.
  std::unique_ptr<StateDirLock> state_lock_;  // held while the engine may write there
  std::unique_ptr<common::MetricsEndpoint> metrics_endpoint_;
  std::unique_ptr<common::ServerMetrics> metrics_;
  std::unique_ptr<MetricsObserver> observer_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ParameterServerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string address_;
  absl::Mutex mu_;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ternps::server

#endif  // TERNPS_SERVER_SHARD_SERVER_H_
