// A cold start as on Kubernetes: the worker (the real ternps-worker trainer) starts while its
// shard's name does not resolve yet (the shard's pod is still Pending), says what it waits for,
// and trains once the name appears, instead of exiting.
//
// The name is made to appear through a private /etc/hosts: the worker runs under
// `unshare --mount` with a copy of /etc/hosts bind-mounted over the real one, and the test
// appends the shard's name to that copy once the worker has said it waits. Needs root (CI runs
// as root); skipped otherwise.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "server/shard_server.h"
#include "tests/worker/child_process.h"

namespace ternps {
namespace {

using testing::ChildProcess;
using testing::ReadFile;

TEST(DnsTest, AWorkerStartedBeforeItsShardsNameResolvesWaitsAndTrains) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root (a private /etc/hosts through unshare --mount)";
  char tmpl[] = "/tmp/ternps-dns-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string hosts = dir + "/hosts";
  const std::string log = dir + "/worker.log";
  ASSERT_EQ(std::system(absl::StrCat("cp /etc/hosts ", hosts).c_str()), 0);
  ChildProcess probe(
      {"unshare", "--mount", "--", "sh", "-c", absl::StrCat("mount --bind ", hosts, " /etc/hosts")},
      dir + "/probe.log");
  if (probe.Wait() != 0) {
    GTEST_SKIP() << "unshare --mount is not available here: " << ReadFile(dir + "/probe.log");
  }
  const std::string name = "ternps-shard-not-yet-scheduled";
  ASSERT_EQ(ReadFile(hosts).find(name), std::string::npos);

  server::ShardServerOptions options;
  options.listen = "127.0.0.1:0";
  auto shard = server::ShardServer::Start(options);
  ASSERT_TRUE(shard.ok()) << shard.status();
  const std::string port = (*shard)->address().substr((*shard)->address().rfind(':') + 1);

  const std::string worker =
      absl::StrCat(TERNPS_BIN_DIR, "/ternps-worker --shards=", name, ":", port,
                   " --rank=0 --world_size=1 --epochs=1 "
                   "--max_steps_per_epoch=3 --job_id=dns "
                   "--connect_timeout=120s --quiet");
  ChildProcess child({"unshare", "--mount", "--", "sh", "-c",
                      absl::StrCat("mount --bind ", hosts, " /etc/hosts && exec ", worker)},
                     log);
  // Wait for the worker to say it waits for the name (its first progress line, after 2 s).
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  while (!absl::StrContains(ReadFile(log), "does not resolve yet") && absl::Now() < give_up) {
    if (child.Exited()) FAIL() << "the worker exited: " << ReadFile(log);
    absl::SleepFor(absl::Milliseconds(20));  // polling the log for an event, with a bound
  }
  ASSERT_TRUE(absl::StrContains(ReadFile(log), "does not resolve yet")) << ReadFile(log);
  EXPECT_TRUE(absl::StrContains(ReadFile(log), absl::StrCat("host '", name, "'"))) << ReadFile(log);
  // The shard's pod is scheduled: its name appears (in place, so the bind mount sees it).
  {
    std::ofstream out(hosts, std::ios::app);
    out << "127.0.0.1 " << name << "\n";
  }
  const int status = child.Wait();
  const std::string output = ReadFile(log);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  EXPECT_TRUE(absl::StrContains(output, "\"summary\": \"ternps-worker\"")) << output;
  EXPECT_TRUE(absl::StrContains(output, "\"steps\": 3")) << output;
  if (!HasFailure()) std::system(absl::StrCat("rm -rf ", dir).c_str());
}

}  // namespace
}  // namespace ternps
