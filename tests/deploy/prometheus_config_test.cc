// The Prometheus material in deploy/ is valid and matches the metrics the code exports:
// `promtool check config` on the scrape configs, `promtool check rules` on the alert rules, every
// PromQL expression of the Grafana dashboard parsed by promtool (as recording rules), and every
// ternps_* metric name they use is one the server or worker exports. A broken expression is
// rejected, so the check can fail.
#include <cstdlib>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/metrics/metrics.h"
#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace ternps {
namespace {

const std::string kDeploy = std::string(TERNPS_SOURCE_DIR) + "/deploy";

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs promtool with `args`; returns its exit code and puts its output in *out.
int Promtool(const std::string& args, std::string* out) {
  const std::string log = ::testing::TempDir() + "/promtool.log";
  const int rc = std::system(absl::StrCat("promtool ", args, " > ", log, " 2>&1").c_str());
  *out = Read(log);
  return rc;
}

std::vector<std::string> DashboardExpressions() {
  const std::string json = Read(kDeploy + "/grafana/ternps-dashboard.json");
  static const std::regex kExpr(R"re("expr":\s*"((?:[^"\\]|\\.)*)")re");
  std::vector<std::string> exprs;
  for (auto it = std::sregex_iterator(json.begin(), json.end(), kExpr);
       it != std::sregex_iterator(); ++it) {
    exprs.push_back(absl::StrReplaceAll((*it)[1].str(), {{"\\\"", "\""}, {"\\\\", "\\"}}));
  }
  return exprs;
}

// Writes expressions as recording rules, so promtool parses them.
std::string RulesFile(const std::vector<std::string>& exprs, const std::string& name) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream out(path);
  out << "groups:\n  - name: dashboard\n    rules:\n";
  for (size_t i = 0; i < exprs.size(); ++i) {
    out << "      - record: dashboard:expr_" << i << "\n        expr: '"
        << absl::StrReplaceAll(exprs[i], {{"'", "''"}}) << "'\n";
  }
  return path;
}

TEST(PrometheusConfigTest, ScrapeConfigsAreValid) {
  std::string out;
  EXPECT_EQ(Promtool("check config " + kDeploy + "/prometheus/prometheus-local.yml", &out), 0)
      << out;
  EXPECT_EQ(Promtool("check config " + kDeploy + "/prometheus/prometheus-k8s.yml", &out), 0) << out;
}

TEST(PrometheusConfigTest, AlertRulesAreValid) {
  std::string out;
  EXPECT_EQ(Promtool("check rules " + kDeploy + "/prometheus/alerts.yml", &out), 0) << out;
  EXPECT_NE(out.find("SUCCESS: 5 rules found"), std::string::npos) << out;
}

TEST(PrometheusConfigTest, DashboardExpressionsParse) {
  const std::vector<std::string> exprs = DashboardExpressions();
  ASSERT_GE(exprs.size(), 7u);
  std::string out;
  EXPECT_EQ(Promtool("check rules " + RulesFile(exprs, "dashboard-rules.yml"), &out), 0) << out;
  // The check can fail: one unbalanced parenthesis is rejected.
  EXPECT_NE(Promtool("check rules " + RulesFile({"sum(rate(x[5m])"}, "broken-rules.yml"), &out), 0)
      << out;
}

TEST(PrometheusConfigTest, EveryMetricNameUsedIsExported) {
  prometheus::Registry registry;
  common::ServerMetrics::Create(registry, 0);
  common::WorkerMetrics::Create(registry, 0);
  const std::string page = prometheus::TextSerializer().Serialize(registry.Collect());
  std::set<std::string> exported;
  static const std::regex kName(R"re(^(ternps_[a-z_]+)[{ ])re", std::regex::multiline);
  for (auto it = std::sregex_iterator(page.begin(), page.end(), kName);
       it != std::sregex_iterator(); ++it) {
    exported.insert((*it)[1].str());
  }
  ASSERT_GT(exported.size(), 20u);
  std::string used = Read(kDeploy + "/prometheus/alerts.yml");
  for (const std::string& e : DashboardExpressions()) used += "\n" + e;
  static const std::regex kUse(R"re(ternps_[a-z_]+)re");
  int checked = 0;
  for (auto it = std::sregex_iterator(used.begin(), used.end(), kUse); it != std::sregex_iterator();
       ++it, ++checked) {
    EXPECT_TRUE(exported.count((*it).str()) > 0) << (*it).str() << " is not exported";
  }
  EXPECT_GT(checked, 10);
}

}  // namespace
}  // namespace ternps
