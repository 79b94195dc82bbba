// TLS on both ends, with real handshakes over loopback: certificates are made fresh by
// tests/worker/make_certs.sh (openssl) for each run. A shard that requires client certificates
// (mutual TLS) serves a worker that trusts its CA and presents a certificate from the same CA;
// a worker with the wrong CA, without a client certificate, with an expired one, with one from
// another CA, or in plaintext is refused, with the cause in the error.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/shard_server.h"
#include "ternps/worker.h"

namespace ternps {
namespace {

using ::testing::HasSubstr;

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/ternps-tls-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = new std::string(tmpl);
    const std::string make =
        absl::StrCat("bash ", TERNPS_SOURCE_DIR, "/tests/worker/make_certs.sh ", *dir_);
    ASSERT_EQ(std::system(make.c_str()), 0) << make;
  }
  static void TearDownTestSuite() {
    std::system(absl::StrCat("rm -rf ", *dir_).c_str());
    delete dir_;
  }
  static std::string File(const std::string& name) { return absl::StrCat(*dir_, "/", name); }

  void SetUp() override {
    server::ShardServerOptions options;
    options.listen = "127.0.0.1:0";
    options.tls_cert_file = File("server.pem");
    options.tls_key_file = File("server.key");
    options.tls_client_ca_file = File("ca.pem");
    absl::StatusOr<std::unique_ptr<server::ShardServer>> shard =
        server::ShardServer::Start(options);
    ASSERT_TRUE(shard.ok()) << shard.status();
    shard_ = *std::move(shard);
  }

  // Connects a worker with these TLS files (empty: not set) and steps once.
  absl::Status ConnectAndStep(const std::string& ca, const std::string& cert,
                              const std::string& key, const std::string& job) {
    worker::WorkerOptions options;
    options.job_id = job;
    options.shards = {shard_->address()};
    options.tensors = {{"w", 8192}};
    options.connect_timeout = absl::Seconds(2);
    options.tls_ca_file = ca.empty() ? "" : File(ca);
    options.tls_cert_file = cert.empty() ? "" : File(cert);
    options.tls_key_file = key.empty() ? "" : File(key);
    absl::StatusOr<std::unique_ptr<worker::Worker>> w = worker::Worker::Connect(options);
    if (!w.ok()) return w.status();
    std::vector<float> g(8192, 0.5f);
    std::vector<absl::Span<float>> grads = {absl::MakeSpan(g)};
    return (*w)->Step(grads);
  }

  // Refused at the handshake: the worker retried until its connect timeout and names the cause.
  static void ExpectRefused(const absl::Status& st, const std::string& cause) {
    EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
    EXPECT_THAT(std::string(st.message()), HasSubstr("Join: unreachable for"));
    EXPECT_THAT(std::string(st.message()), HasSubstr(cause));
    std::fprintf(stderr, "refused: %s\n", std::string(st.message()).c_str());
  }

  static std::string* dir_;
  std::unique_ptr<server::ShardServer> shard_;
};

std::string* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, AWorkerWithTheRightCaAndACertificateTrains) {
  EXPECT_TRUE(ConnectAndStep("ca.pem", "client.pem", "client.key", "good").ok());
}

TEST_F(TlsTest, TheWrongCaIsRefused) {
  ExpectRefused(ConnectAndStep("other-ca.pem", "client.pem", "client.key", "wrong-ca"),
                "certificate verify failed");
}

// The shard's side of a refusal: gRPC logs each failed handshake with its cause on the shard's
// stderr (at ERROR, so also with --quiet). The shard runs in this process, so its log is
// captured here.
TEST_F(TlsTest, AClientWithoutACertificateIsRefused) {
  ::testing::internal::CaptureStderr();
  const absl::Status st = ConnectAndStep("ca.pem", "", "", "no-cert");
  const std::string log = ::testing::internal::GetCapturedStderr();
  ExpectRefused(st, "refuses this worker's certificate");
  EXPECT_THAT(log, HasSubstr("Handshake failed"));
  EXPECT_THAT(log, HasSubstr("peer did not return a certificate"));
}

TEST_F(TlsTest, AnExpiredCertificateIsRefused) {
  ::testing::internal::CaptureStderr();
  const absl::Status st = ConnectAndStep("ca.pem", "expired.pem", "expired.key", "expired");
  const std::string log = ::testing::internal::GetCapturedStderr();
  ExpectRefused(st, "refuses this worker's certificate");
  EXPECT_THAT(log, HasSubstr("certificate verify failed"));
}

TEST_F(TlsTest, ACertificateFromAnotherCaIsRefused) {
  ::testing::internal::CaptureStderr();
  const absl::Status st = ConnectAndStep("ca.pem", "other.pem", "other.key", "other");
  const std::string log = ::testing::internal::GetCapturedStderr();
  ExpectRefused(st, "refuses this worker's certificate");
  EXPECT_THAT(log, HasSubstr("certificate verify failed"));
}

TEST_F(TlsTest, APlaintextClientIsRefused) {
  ::testing::internal::CaptureStderr();
  const absl::Status st = ConnectAndStep("", "", "", "plaintext");
  const std::string log = ::testing::internal::GetCapturedStderr();
  ExpectRefused(st, "if the shard uses TLS, set tls_ca_file");
  EXPECT_THAT(log, HasSubstr("wrong version number"));
}

// ternps-healthcheck checks a mutual-TLS shard with a client certificate, and is refused without;
// --tls_server_name sets the name the certificate is checked for.
TEST_F(TlsTest, TheHealthcheckSpeaksTls) {
  const std::string check =
      absl::StrCat(TERNPS_BIN_DIR, "/ternps-healthcheck --address=", shard_->address(),
                   " --timeout=2s --tls_ca=", File("ca.pem"));
  EXPECT_EQ(std::system(absl::StrCat(check, " --tls_cert=", File("client.pem"),
                                     " --tls_key=", File("client.key"))
                            .c_str()),
            0);
  EXPECT_NE(std::system((check + " 2>/dev/null").c_str()), 0);
  // --tls_server_name: the name checked against the certificate instead of the dialed host (the
  // test certificate names localhost, not ternps-server).
  const std::string with_cert =
      absl::StrCat(check, " --tls_cert=", File("client.pem"), " --tls_key=", File("client.key"));
  EXPECT_EQ(std::system((with_cert + " --tls_server_name=localhost").c_str()), 0);
  EXPECT_NE(std::system((with_cert + " --tls_server_name=ternps-server 2>/dev/null").c_str()), 0);
}

// Certificates rotate in clusters: the shard reads its files again every tls_reload_interval and
// uses what it finds for new connections, without a restart. It starts with a certificate the
// worker does not trust (signed by the other CA) and is refused; once the files are replaced by
// the good pair, a new worker is served.
TEST_F(TlsTest, ARotatedCertificateIsServedWithoutARestart) {
  const std::string cert = File("rotating.pem"), key = File("rotating.key");
  auto install = [&](const std::string& from) {
    // Key first, then the certificate, each by rename (what Kubernetes' Secret volumes do, and
    // what a reader never sees half-written).
    ASSERT_EQ(std::system(absl::StrCat("cp ", File(from + ".key"), " ", key, ".tmp && mv ", key,
                                       ".tmp ", key, " && cp ", File(from + ".pem"), " ", cert,
                                       ".tmp && mv ", cert, ".tmp ", cert)
                              .c_str()),
              0);
  };
  install("other");
  server::ShardServerOptions options;
  options.listen = "127.0.0.1:0";
  options.tls_cert_file = cert;
  options.tls_key_file = key;
  options.tls_client_ca_file = File("ca.pem");
  options.tls_reload_interval = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<server::ShardServer>> rotating =
      server::ShardServer::Start(options);
  ASSERT_TRUE(rotating.ok()) << rotating.status();
  shard_ = *std::move(rotating);
  ExpectRefused(ConnectAndStep("ca.pem", "client.pem", "client.key", "before"),
                "certificate verify failed");
  install("server");
  // The watcher picks the new files up within a reload interval; each attempt below waits up to
  // its connect timeout, so a few attempts bound the wait without sleeping.
  absl::Status st;
  for (int attempt = 0; attempt < 8; ++attempt) {
    st = ConnectAndStep("ca.pem", "client.pem", "client.key", absl::StrCat("after-", attempt));
    if (st.ok()) break;
  }
  EXPECT_TRUE(st.ok()) << st;
}

TEST_F(TlsTest, BadTlsOptionsFailAtOnceNamingTheOption) {
  absl::Status st = ConnectAndStep("ca.pem", "client.pem", "", "half");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("tls_cert_file/tls_key_file"));
  st = ConnectAndStep("missing.pem", "", "", "missing");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_THAT(std::string(st.message()), HasSubstr("tls_ca_file: cannot read"));
}

}  // namespace
}  // namespace ternps
