#include "common/rpc/credentials.h"

#include "absl/strings/str_cat.h"
#include "common/util/file.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace ternps::common {

absl::StatusOr<std::shared_ptr<grpc::experimental::CertificateProviderInterface>> WatchTlsFiles(
    const TlsFiles& files, const TlsFiles& names, absl::Duration reload_interval,
    absl::string_view interval_name) {
  // Read once here for a clear error now; the watcher then re-reads them every reload_interval.
  for (const auto& [file, name] :
       {std::pair{&files.ca, &names.ca}, std::pair{&files.cert, &names.cert},
        std::pair{&files.key, &names.key}}) {
    if (file->empty()) continue;
    if (absl::StatusOr<std::string> pem = ReadFileToString(*file, *name); !pem.ok()) {
      return pem.status();
    }
  }
  const int64_t seconds = absl::ToInt64Seconds(reload_interval);
  if (seconds < 1) {
    return absl::InvalidArgumentError(absl::StrCat(interval_name, ": must be at least 1s"));
  }
  return std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.ca, static_cast<unsigned int>(seconds));
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ClientCredentials(
    const TlsFiles& files, const TlsFiles& names, absl::Duration reload_interval) {
  if (files.ca.empty()) {
    if (!files.cert.empty() || !files.key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(names.ca, ": needed with ", names.cert, "/",
                                                     names.key, " (TLS is on when it is set)"));
    }
    return grpc::InsecureChannelCredentials();
  }
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(names.cert, "/", names.key, ": give both or neither"));
  }
  absl::StatusOr<std::shared_ptr<grpc::experimental::CertificateProviderInterface>> watcher =
      WatchTlsFiles(files, names, reload_interval, "tls reload interval");
  if (!watcher.ok()) return watcher.status();
  grpc::experimental::TlsChannelCredentialsOptions tls;
  tls.set_certificate_provider(*std::move(watcher));
  tls.watch_root_certs();
  if (!files.cert.empty()) tls.watch_identity_key_cert_pairs();
  tls.set_verify_server_certs(true);
  return grpc::experimental::TlsCredentials(tls);
}

}  // namespace ternps::common
