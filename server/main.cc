// ternps-server: one parameter-server shard of a TernGrad job (flags: ternps-server --help).
#include <csignal>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/util/flags_help.h"
#include "common/util/process.h"
#include "server/shard_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7070",
          "host:port to serve gRPC on; port 0 picks a free port (see --port_file)");
ABSL_FLAG(uint32_t, shard_index, 0, "This shard's index in [0, shard_count)");
ABSL_FLAG(uint32_t, shard_count, 1, "Number of shards of the job");
ABSL_FLAG(absl::Duration, job_idle_timeout, absl::Seconds(180),
          "A job that receives no call for this long is removed (its id can be used again)");
ABSL_FLAG(absl::Duration, start_timeout, absl::Minutes(5),
          "A job's first step waits until every rank has joined; a job some rank has not joined "
          "this long after it was created ends with an error naming the missing ranks");
ABSL_FLAG(absl::Duration, ended_job_memory, absl::Minutes(30),
          "How long an ended job's id is remembered: a late Join for it (a worker restarted after "
          "its peers finished) is refused with why the job ended instead of starting it again "
          "alone, unless the worker sets restart_ended_job; 0: not remembered");
ABSL_FLAG(absl::Duration, step_timeout, absl::Seconds(60),
          "How long a partition waits for a worker's push (or scaler) after the first one "
          "arrived; the late worker is then dropped and must Join again");
ABSL_FLAG(uint32_t, max_world_size, 4096,
          "Largest world_size a job may register, at most 32767 (INT_SUM's limit)");
ABSL_FLAG(uint32_t, max_jobs, 16, "Jobs this shard serves at once (more Joins are refused)");
ABSL_FLAG(uint32_t, max_partition_elements, 1u << 24,
          "Largest partition_elements a job may use; sets the gRPC message size limit "
          "(4 bytes per element + 1 MiB)");
ABSL_FLAG(uint64_t, max_shard_elements, uint64_t{1} << 29,
          "Largest number of elements a job may place on this shard (memory bound: about "
          "4 bytes per element in flight)");
ABSL_FLAG(absl::Duration, disconnect_grace, absl::Seconds(2),
          "A worker whose connection closed (its Watch call ended: the process died) and that "
          "does not reconnect within this long is dropped then, not at the step timeout; 0: off");
ABSL_FLAG(uint64_t, max_recovery_bytes, uint64_t{4} << 30,
          "Largest recovery state a job may keep on this shard: a snapshot of its partitions here "
          "and snapshot_interval + 2 steps of their largest averages (a Join whose "
          "snapshot_interval needs more is refused, naming the largest that fits)");
ABSL_FLAG(std::string, port_file, "",
          "If set, write the chosen port to this file once serving (for --listen with port 0)");
ABSL_FLAG(std::string, metrics_address, "",
          "host:port for the Prometheus /metrics endpoint, port 0 picks a free one (see "
          "--metrics_port_file); empty: no metrics");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, write the chosen metrics port to this file once serving");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain for TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for TLS (with --tls_cert)");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA certificates: with --tls_cert/--tls_key, require every client to present a "
          "certificate signed by one of them (mutual TLS)");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Seconds(60),
          "How often --tls_cert, --tls_key and --tls_client_ca are read again (rotated files take "
          "effect for new connections without a restart); at least 1s");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "On SIGTERM/SIGINT: how long in-flight calls may finish before the rest are failed");
ABSL_FLAG(bool, reuse_port, false,
          "Allow other processes to bind the same --listen port (SO_REUSEPORT); off, a port "
          "already in use is an error");
ABSL_FLAG(std::string, state_dir, "",
          "Directory where jobs with recovery snapshots (snapshot_interval > 0) are written "
          "durably and restored from when the shard restarts (created if missing). Empty: state "
          "lives in memory only and a restarted shard has lost its jobs");
ABSL_FLAG(std::string, state_sync, "step",
          "With --state_dir: 'step' fdatasyncs every answered average before answering it (a "
          "restarted shard loses nothing, even after a power loss); 'none' only writes it (the "
          "page cache keeps it across a crash or kill of the shard process, not of the machine; "
          "cheaper per step)");
ABSL_FLAG(bool, require_job_token, false,
          "Refuse to start a job whose first Join carries no job token (UNAUTHENTICATED). Off: "
          "the first Join of a job decides whether it has a token; either way every later call "
          "of a job with a token must carry the same one");
ABSL_FLAG(bool, quiet, false, "Log only errors");

namespace {

bool WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << port << "\n";
    if (!out) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Signals are waited for by main (sigwait); block them before any other thread exists.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  ternps::common::ConfigureBinaryProcess();
  ternps::common::SetUsage(
      "One parameter-server shard of a ternps (TernGrad) job.\n"
      "Usage: ternps-server --listen=127.0.0.1:7070 --shard_index=0 --shard_count=2");
  ternps::common::ParseFlags(argc, argv);

  ternps::server::ShardServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.shard.shard_index = absl::GetFlag(FLAGS_shard_index);
  options.shard.shard_count = absl::GetFlag(FLAGS_shard_count);
  options.shard.step_timeout = absl::GetFlag(FLAGS_step_timeout);
  options.shard.job_idle_timeout = absl::GetFlag(FLAGS_job_idle_timeout);
  options.shard.start_timeout = absl::GetFlag(FLAGS_start_timeout);
  options.shard.ended_job_memory = absl::GetFlag(FLAGS_ended_job_memory);
  options.shard.max_world_size = absl::GetFlag(FLAGS_max_world_size);
  options.shard.max_jobs = absl::GetFlag(FLAGS_max_jobs);
  options.shard.max_partition_elements = absl::GetFlag(FLAGS_max_partition_elements);
  options.shard.max_shard_elements = absl::GetFlag(FLAGS_max_shard_elements);
  options.shard.max_recovery_bytes = absl::GetFlag(FLAGS_max_recovery_bytes);
  options.shard.disconnect_grace = absl::GetFlag(FLAGS_disconnect_grace);
  options.tls_cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key_file = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  options.tls_reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  options.reuse_port = absl::GetFlag(FLAGS_reuse_port);
  options.metrics_address = absl::GetFlag(FLAGS_metrics_address);
  options.shard.state_dir = absl::GetFlag(FLAGS_state_dir);
  const std::string state_sync = absl::GetFlag(FLAGS_state_sync);
  if (state_sync != "step" && state_sync != "none") {
    std::fprintf(stderr, "ternps-server: --state_sync: '%s' is not 'step' or 'none'\n",
                 state_sync.c_str());
    return 2;
  }
  options.shard.state_sync = state_sync == "step";
  options.shard.require_job_token = absl::GetFlag(FLAGS_require_job_token);
  if (absl::Status st = ternps::server::ValidateShardConfig(options.shard); !st.ok()) {
    std::fprintf(stderr, "ternps-server: %s\n", std::string(st.message()).c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_drain_timeout) < absl::ZeroDuration()) {
    std::fprintf(stderr, "ternps-server: --drain_timeout: must not be negative\n");
    return 2;
  }
  absl::StatusOr<std::unique_ptr<ternps::server::ShardServer>> shard =
      ternps::server::ShardServer::Start(options);
  if (!shard.ok()) {
    std::fprintf(stderr, "ternps-server: %s\n", std::string(shard.status().message()).c_str());
    return 1;
  }
  const ternps::server::Engine::Restored& restored = (*shard)->engine().restored();
  for (const std::string& problem : restored.problems) {
    std::fprintf(stderr, "ternps-server: --state_dir: %s\n", problem.c_str());
  }
  if (!absl::GetFlag(FLAGS_quiet) && !options.shard.state_dir.empty()) {
    std::fprintf(stderr, "ternps-server: restored %zu job(s) from %s%s%s\n", restored.jobs.size(),
                 options.shard.state_dir.c_str(), restored.jobs.empty() ? "" : ": ",
                 absl::StrJoin(restored.jobs, ", ").c_str());
  }
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() && !WritePortFile(port_file, (*shard)->port())) {
    std::fprintf(stderr, "ternps-server: --port_file: cannot write '%s'\n", port_file.c_str());
    return 1;
  }
  const std::string metrics_port_file = absl::GetFlag(FLAGS_metrics_port_file);
  if (!metrics_port_file.empty() && !WritePortFile(metrics_port_file, (*shard)->metrics_port())) {
    std::fprintf(stderr, "ternps-server: --metrics_port_file: cannot write '%s'\n",
                 metrics_port_file.c_str());
    return 1;
  }
  if (!absl::GetFlag(FLAGS_quiet)) {
    const std::string metrics =
        (*shard)->metrics_port() > 0
            ? absl::StrCat(", metrics on 127.0.0.1:", (*shard)->metrics_port(), "/metrics")
            : "";
    std::fprintf(stderr, "ternps-server: shard %u of %u serving on %s (step timeout %s)%s\n",
                 options.shard.shard_index, options.shard.shard_count, (*shard)->address().c_str(),
                 absl::FormatDuration(options.shard.step_timeout).c_str(), metrics.c_str());
  }
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  if (!absl::GetFlag(FLAGS_quiet)) {
    std::fprintf(stderr, "ternps-server: %s received, draining (up to %s)\n",
                 signal_number == SIGTERM ? "SIGTERM" : "SIGINT",
                 absl::FormatDuration(absl::GetFlag(FLAGS_drain_timeout)).c_str());
  }
  (*shard)->Shutdown(absl::GetFlag(FLAGS_drain_timeout));
  shard->reset();
  if (!absl::GetFlag(FLAGS_quiet)) std::fprintf(stderr, "ternps-server: stopped\n");
  return 0;
}
