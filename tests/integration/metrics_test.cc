// Integration with a real Prometheus (the Debian package): it scrapes 2 shards and 2 training
// workers every second; the test queries its HTTP API until the series appear and then until
// they reach the final totals, which must agree with what the workers themselves counted
// (bytes the workers sent = bytes the shards received; steps). Every /metrics page passes
// `promtool check metrics`.
#include "common/metrics/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "ternps/worker.h"
#include "tests/integration/cluster.h"
#include "worker/trainer/fashion_mnist.h"
#include "worker/trainer/mlp.h"

extern char** environ;

namespace ternps {
namespace {

constexpr char kPrometheus[] = "/usr/bin/prometheus";
constexpr char kPromtool[] = "/usr/bin/promtool";

// GET http://127.0.0.1:port/path (HTTP/1.0); the body, or an empty string on failure.
std::string HttpGet(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string response;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[65536];
      ssize_t n;
      while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, n);
    }
  }
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.", 0) != 0 || response.find(" 200 ") > 12 ||
      body == std::string::npos) {
    return "";
  }
  return response.substr(body + 4);
}

// A port no one listens on right now (Prometheus cannot be told to pick one itself).
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '_' || c == '.' || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

// The value of a PromQL instant query that returns one sample; NaN if none.
double Query(int port, const std::string& promql) {
  const std::string body = HttpGet(port, "/api/v1/query?query=" + UrlEncode(promql));
  static const std::regex kValue(R"re("value":\[[0-9.e+]+,"([^"]+)"\])re");
  std::smatch m;
  if (!std::regex_search(body, m, kValue)) return std::nan("");
  return std::stod(m[1].str());
}

class PrometheusProcess {
 public:
  ~PrometheusProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      int status;
      waitpid(pid_, &status, 0);
    }
  }
  // Starts Prometheus scraping `jobs` (job name -> ports) every second; waits until it is ready.
  bool Start(const std::string& dir,
             const std::vector<std::pair<std::string, std::vector<int>>>& jobs) {
    std::ofstream config(dir + "/prometheus.yml");
    config << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n";
    for (const auto& [name, ports] : jobs) {
      std::vector<std::string> targets;
      for (int p : ports) targets.push_back(absl::StrCat("'127.0.0.1:", p, "'"));
      config << "  - job_name: " << name << "\n    static_configs:\n      - targets: ["
             << absl::StrJoin(targets, ", ") << "]\n";
    }
    config.close();
    for (int attempt = 0; attempt < 5 && port_ == 0; ++attempt) {
      const int port = FreePort();
      std::vector<std::string> args = {kPrometheus, "--config.file=" + dir + "/prometheus.yml",
                                       "--storage.tsdb.path=" + dir + "/data",
                                       absl::StrCat("--web.listen-address=127.0.0.1:", port),
                                       "--log.level=warn"};
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      if (posix_spawn(&pid_, kPrometheus, nullptr, nullptr, argv.data(), environ) != 0)
        return false;
      // Bounded wait for readiness; a start-up failure (port taken meanwhile) retries.
      for (int i = 0; i < 300; ++i) {
        if (HttpGet(port, "/-/ready").find("Ready") != std::string::npos) {
          port_ = port;
          break;
        }
        int status;
        if (waitpid(pid_, &status, WNOHANG) == pid_) {
          pid_ = 0;
          break;
        }
        absl::SleepFor(absl::Milliseconds(100));
      }
    }
    return port_ != 0;
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = 0;
  int port_ = 0;
};

// Runs `promtool check metrics` on a /metrics page; returns its output, "" when clean.
std::string Lint(const std::string& dir, const std::string& page, int index) {
  const std::string file = absl::StrCat(dir, "/metrics-", index, ".txt");
  std::ofstream(file) << page;
  const std::string out = file + ".lint";
  const int rc =
      std::system(absl::StrCat(kPromtool, " check metrics < ", file, " > ", out, " 2>&1").c_str());
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return rc == 0 && text.empty() ? "" : absl::StrCat("rc ", rc, ": ", text);
}

TEST(MetricsTest, PrometheusScrapesAgreeWithWhatTheWorkersCounted) {
  if (access(kPrometheus, X_OK) != 0 || access(kPromtool, X_OK) != 0) {
    GTEST_FAIL() << "the Debian package 'prometheus' is not installed (tests/run.sh installs it)";
  }
  auto train = worker::LoadFashionMnist("/usr/share/datasets/fashion-mnist", worker::Split::kTrain);
  ASSERT_TRUE(train.ok()) << train.status();
  char dir_template[] = "/tmp/ternps-metrics-test.XXXXXX";
  const std::string dir = mkdtemp(dir_template);

  constexpr uint32_t kWorld = 2;
  constexpr int kSteps = 600;
  constexpr int kBatch = 32;
  testing::TestCluster cluster(2, absl::Seconds(60), /*metrics=*/true);
  std::vector<std::unique_ptr<common::MetricsEndpoint>> endpoints;
  std::vector<std::unique_ptr<common::WorkerMetrics>> metrics;
  for (uint32_t r = 0; r < kWorld; ++r) {
    auto e = common::MetricsEndpoint::Start("127.0.0.1:0");
    ASSERT_TRUE(e.ok()) << e.status();
    metrics.push_back(common::WorkerMetrics::Create(*(*e)->registry(), r));
    endpoints.push_back(*std::move(e));
  }
  PrometheusProcess prometheus;
  ASSERT_TRUE(prometheus.Start(
      dir, {{"ternps-server", {cluster.shard(0).metrics_port(), cluster.shard(1).metrics_port()}},
            {"ternps-worker", {endpoints[0]->port(), endpoints[1]->port()}}}))
      << "Prometheus did not start";

  // Training in the background; what the workers count themselves.
  std::vector<uint64_t> sent(kWorld), received(kWorld), dense(kWorld);
  std::vector<absl::Status> status(kWorld);
  std::thread training([&] {
    testing::RunWorkers(kWorld, [&](uint32_t rank) {
      worker::Mlp model({worker::kImagePixels, 128, worker::kClasses}, 3);
      worker::WorkerOptions options;
      options.job_id = "metrics-test";
      options.rank = rank;
      options.world_size = kWorld;
      options.shards = cluster.addresses();
      options.tensors = model.Tensors();
      options.threads = 1;
      auto w = worker::Worker::Connect(options);
      if (!w.ok()) {
        status[rank] = w.status();
        return;
      }
      const float* images = &train->images[size_t(rank) * 30000 * worker::kImagePixels];
      const uint8_t* labels = &train->labels[size_t(rank) * 30000];
      for (int s = 0; s < kSteps; ++s) {
        const size_t offset = size_t(s % 900) * kBatch;
        const absl::Time start = absl::Now();
        model.ComputeGradients(images + offset * worker::kImagePixels, labels + offset, kBatch);
        const double compute = absl::ToDoubleSeconds(absl::Now() - start);
        if (absl::Status st = (*w)->Step(model.Gradients()); !st.ok()) {
          status[rank] = st;
          return;
        }
        model.Apply(0.05f, 0.9f, 0.0f);
        const worker::StepStats stats = (*w)->last_step();
        metrics[rank]->RecordStep(absl::ToDoubleSeconds(absl::Now() - start), compute,
                                  stats.encode_seconds, stats.communication_seconds,
                                  stats.sent_bytes, stats.received_bytes, stats.dense_bytes);
        sent[rank] += stats.sent_bytes;
        received[rank] += stats.received_bytes;
        dense[rank] += stats.dense_bytes;
      }
      status[rank] = (*w)->Leave();
    });
  });
  // The series appear while the training runs (bounded wait: 60 s).
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline &&
         !(Query(prometheus.port(), "count(ternps_worker_steps_total)") == 2 &&
           Query(prometheus.port(), "count(ternps_server_received_bytes_total)") == 2)) {
    absl::SleepFor(absl::Milliseconds(200));  // polling an external server, not synchronizing
  }
  EXPECT_EQ(Query(prometheus.port(), "count(ternps_worker_steps_total)"), 2);
  training.join();
  for (const absl::Status& st : status) ASSERT_TRUE(st.ok()) << st;

  // Until Prometheus has scraped the final values (bounded), then they must agree exactly.
  const double want_sent = double(sent[0] + sent[1]);
  const double want_received = double(received[0] + received[1]);
  const double want_dense = double(dense[0] + dense[1]);
  const absl::Time final_deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < final_deadline &&
         !(Query(prometheus.port(), "sum(ternps_worker_steps_total)") == kWorld * kSteps &&
           Query(prometheus.port(), "sum(ternps_server_sent_bytes_total)") == want_received)) {
    absl::SleepFor(absl::Milliseconds(200));
  }
  const int port = prometheus.port();
  EXPECT_EQ(Query(port, "sum(ternps_worker_steps_total)"), kWorld * kSteps);
  EXPECT_EQ(Query(port, "sum(ternps_worker_sent_bytes_total)"), want_sent);
  EXPECT_EQ(Query(port, "sum(ternps_server_received_bytes_total)"), want_sent);
  EXPECT_EQ(Query(port, "sum(ternps_worker_received_bytes_total)"), want_received);
  EXPECT_EQ(Query(port, "sum(ternps_server_sent_bytes_total)"), want_received);
  EXPECT_EQ(Query(port, "sum(ternps_server_dense_bytes_total)"), want_dense);
  EXPECT_EQ(Query(port, "sum(ternps_worker_dense_bytes_total)"), want_dense);
  // Histograms counted every step; the compression ratio is computable in PromQL.
  EXPECT_EQ(Query(port, "sum(ternps_worker_step_seconds_count)"), kWorld * kSteps);
  EXPECT_GT(
      Query(port, "sum(ternps_server_dense_bytes_total) / sum(ternps_server_received_bytes_total)"),
      10.0);
  EXPECT_GT(Query(port, "sum(ternps_server_requests_total{method=\"PushPull\",code=\"OK\"})"), 0);

  // Every page is lint-clean.
  std::vector<int> ports = {cluster.shard(0).metrics_port(), cluster.shard(1).metrics_port(),
                            endpoints[0]->port(), endpoints[1]->port()};
  for (size_t i = 0; i < ports.size(); ++i) {
    const std::string page = HttpGet(ports[i], "/metrics");
    ASSERT_FALSE(page.empty()) << "no /metrics on port " << ports[i];
    EXPECT_EQ(Lint(dir, page, static_cast<int>(i)), "") << "port " << ports[i];
  }
  std::system(absl::StrCat("rm -rf '", dir, "'").c_str());
}

}  // namespace
}  // namespace ternps
