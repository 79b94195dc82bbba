// ternps-healthcheck: asks a gRPC server's standard health service (grpc.health.v1.Health/Check)
// whether it is SERVING; exits 0 if so, 1 otherwise (2 for bad flags). For container
// HEALTHCHECKs, where Kubernetes' built-in gRPC probe is not available, and for shards that serve
// TLS (--tls_ca, and --tls_cert/--tls_key for mutual TLS), which that probe cannot check.
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/rpc/credentials.h"
#include "common/util/flags_help.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"

ABSL_FLAG(std::string, address, "127.0.0.1:7070", "host:port of the server to check");
ABSL_FLAG(std::string, service, "", "Service name to ask about (empty: the whole server)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(3), "Deadline of the check");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA certificates of the server's certificate; turns TLS on (a shard started with "
          "--tls_cert)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate chain, for a shard that requires one (--tls_client_ca)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "With --tls_ca: the name the server's certificate must carry, when it is not the host "
          "of --address (a probe that dials 127.0.0.1 while the certificate names the Service)");

int main(int argc, char** argv) {
  ternps::common::SetUsage(
      "Exits 0 if the gRPC server at --address reports SERVING on grpc.health.v1.Health.\n"
      "Usage: ternps-healthcheck --address=127.0.0.1:7070");
  ternps::common::ParseFlags(argc, argv);
  // HealthCheckRequest { string service = 1; } encoded by hand: tag 0x0A, length, bytes.
  const std::string service = absl::GetFlag(FLAGS_service);
  if (service.size() > 127) {
    std::fprintf(stderr, "ternps-healthcheck: --service longer than 127 bytes\n");
    return 2;
  }
  std::string request;
  if (!service.empty()) {
    request.push_back('\x0a');
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::Slice slice(request);
  grpc::ByteBuffer request_buffer(&slice, 1);
  grpc::ByteBuffer response_buffer;
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ternps::common::ClientCredentials(
          {.ca = absl::GetFlag(FLAGS_tls_ca),
           .cert = absl::GetFlag(FLAGS_tls_cert),
           .key = absl::GetFlag(FLAGS_tls_key)},
          {.ca = "--tls_ca", .cert = "--tls_cert", .key = "--tls_key"});
  if (!credentials.ok()) {
    std::fprintf(stderr, "ternps-healthcheck: %s\n",
                 std::string(credentials.status().message()).c_str());
    return 2;
  }
  grpc::ChannelArguments args;
  if (const std::string name = absl::GetFlag(FLAGS_tls_server_name); !name.empty()) {
    args.SetSslTargetNameOverride(name);
  }
  grpc::GenericStub stub(
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_address), *credentials, args));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::GetFlag(FLAGS_timeout)));
  absl::Notification done;
  grpc::Status status;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response_buffer, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();  // bounded by the deadline
  if (!status.ok()) {
    std::fprintf(stderr, "ternps-healthcheck: %s: %s\n", absl::GetFlag(FLAGS_address).c_str(),
                 status.error_message().c_str());
    return 1;
  }
  std::vector<grpc::Slice> slices;
  std::string response;
  if (response_buffer.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      response.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  // HealthCheckResponse { ServingStatus status = 1; }: SERVING = 1 is the bytes 0x08 0x01.
  if (response == std::string("\x08\x01", 2)) {
    std::printf("SERVING\n");
    return 0;
  }
  std::fprintf(stderr, "ternps-healthcheck: %s is not SERVING\n",
               absl::GetFlag(FLAGS_address).c_str());
  return 1;
}
