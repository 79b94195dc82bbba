// The channel credentials of a gRPC client of the shards: plaintext, TLS (a CA to check the
// shard's certificate) or mutual TLS (also a client certificate and key). Shared by
// libternps_worker and ternps-healthcheck.
//
//   absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds = common::ClientCredentials(
//       {.ca = ca_path, .cert = cert_path, .key = key_path},
//       {.ca = "tls_ca_file", .cert = "tls_cert_file", .key = "tls_key_file"});
#ifndef TERNPS_COMMON_RPC_CREDENTIALS_H_
#define TERNPS_COMMON_RPC_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"

namespace ternps::common {

// Three PEM file paths, or the names of the settings that give them (for error messages).
struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
};

// A watcher (gRPC's FileWatcherCertificateProvider) that reads `files` (empty ones are left out)
// again every `reload_interval`, after checking that each can be read now (INVALID_ARGUMENT naming
// it by `names`) and that the interval is at least 1 s (INVALID_ARGUMENT naming `interval_name`).
// Shared by the shard's server credentials and the clients'.
absl::StatusOr<std::shared_ptr<grpc::experimental::CertificateProviderInterface>> WatchTlsFiles(
    const TlsFiles& files, const TlsFiles& names, absl::Duration reload_interval,
    absl::string_view interval_name);

// TLS is on when `files.ca` is set; cert and key go together. INVALID_ARGUMENT naming the setting
// (from `names`) for a certificate without its key, a certificate without a CA, or a file that
// cannot be read. The files are read again every `reload_interval` (at least 1 s): rotated
// certificates are used for the next handshakes. The shard's certificate must name the host the
// channel dials (or the channel's SSL target name override).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const TlsFiles& files, const TlsFiles& names,
    absl::Duration reload_interval = absl::Seconds(60));

}  // namespace ternps::common

#endif  // TERNPS_COMMON_RPC_CREDENTIALS_H_
