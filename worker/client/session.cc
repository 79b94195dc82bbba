#include "worker/client/session.h"

#include <netdb.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/mutex.h"
#include "common/rpc/credentials.h"
#include "common/rpc/job_token.h"
#include "common/rpc/status.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "worker/client/answer_checks.h"

namespace ternps::worker {

namespace v1 = ::ternps::v1;

namespace {

// A gRPC target with a scheme ("dns:///...", "unix:...", "ipv4:..."): left to gRPC.
bool HasScheme(const std::string& address) {
  return absl::StrContains(address, "://") || absl::StartsWith(address, "unix:") ||
         absl::StartsWith(address, "ipv4:") || absl::StartsWith(address, "ipv6:");
}

// The host of a host:port target ("" for a target with a scheme).
std::string HostOf(const std::string& address) {
  if (HasScheme(address)) return "";
  std::string host = address.substr(0, address.rfind(':'));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host;
}

// OK if `address` (shards[index]) is well-formed: host:port with a port in 1..65535 and a host
// that is a DNS name or an IP address, or a gRPC target with a scheme ("dns:///...", "unix:...",
// "ipv4:...") left to gRPC. Checked before connecting so that a typo fails at once. Whether the
// name resolves is not checked here: on Kubernetes a shard's name appears only once its pod is
// scheduled, so Join waits for it (up to connect_timeout).
}  // namespace

absl::Status CheckShardAddress(const std::string& address, size_t index) {
  const std::string field = absl::StrCat("shards[", index, "]: '", address, "'");
  if (HasScheme(address)) return absl::OkStatus();
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat(field, " is not host:port"));
  }
  const std::string port = address.substr(colon + 1);
  uint32_t port_number = 0;
  if (!absl::SimpleAtoi(port, &port_number) || port_number < 1 || port_number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": port '", port, "' is not a number in [1, 65535]"));
  }
  const std::string host = HostOf(address);
  const bool bracketed = address.front() == '[';
  for (const char c : host) {
    const bool name_char = absl::ascii_isalnum(c) || c == '.' || c == '-' || c == '_';
    const bool ipv6_char = bracketed && (absl::ascii_isxdigit(c) || c == ':' || c == '.');
    if (!name_char && !ipv6_char) {
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": host '", host, "' is neither a DNS name nor an IP address (character '",
          std::string(1, c), "')"));
    }
  }
  if (host.empty() || host.size() > 253) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": host '", host, "' must have 1 to 253 characters"));
  }
  return absl::OkStatus();
}

namespace {

// OK once `host` resolves; the resolver's message otherwise.
absl::Status Resolve(const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.c_str(), nullptr, &hints, &result);
  if (rc != 0) return absl::UnavailableError(gai_strerror(rc));
  freeaddrinfo(result);
  return absl::OkStatus();
}

}  // namespace

Session::Session(const WorkerOptions& options, const common::JobSpec& spec, v1::JoinRequest join)
    : options_(options), spec_(spec), join_(std::move(join)) {
  join_.set_plan_checksum(spec_.plan.Checksum());
}

Session::~Session() = default;

std::string Session::ShardName(uint32_t shard) const {
  return absl::StrCat("shard ", shard, " (", options_.shards[shard], ")");
}

std::unique_ptr<grpc::ClientContext> Session::NewContext(absl::Time deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(deadline));
  if (!authorization_.empty()) {
    context->AddMetadata(std::string(common::kJobTokenMetadataKey), authorization_);
  }
  return context;
}

absl::Status Session::Open() {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials = common::ClientCredentials(
      {.ca = options_.tls_ca_file, .cert = options_.tls_cert_file, .key = options_.tls_key_file},
      {.ca = "tls_ca_file", .cert = "tls_cert_file", .key = "tls_key_file"});
  if (!credentials.ok()) return credentials.status();
  if (!options_.token_file.empty()) {
    absl::StatusOr<std::string> token = common::ReadJobToken(options_.token_file, "token_file");
    if (!token.ok()) return token.status();
    authorization_ = common::BearerValue(*token);
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // Reconnect quickly to a shard that starts late or restarts (gRPC's default backoff grows to
  // 120 s between attempts). Not GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: despite its name gRPC takes it
  // as the shortest time a connection attempt may take (default 20 s), and at 100 ms handshakes
  // behind a busy link, or over a long round trip with TLS, time out.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  for (const std::string& address : options_.shards) {
    std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(address, *credentials, args);
    stubs_.push_back(v1::ParameterServer::NewStub(channel));
    std::vector<Connection>& shard = connections_.emplace_back();
    for (int c = 0; c < options_.channels_per_shard; ++c) {
      if (c > 0) {
        // gRPC shares one connection between channels with the same target and arguments unless
        // each has its own subchannel pool.
        grpc::ChannelArguments own = args;
        own.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
        channel = grpc::CreateCustomChannel(address, *credentials, own);
      }
      shard.push_back({channel, std::make_unique<grpc::GenericStub>(channel)});
    }
  }
  {
    std::vector<v1::ParameterServer::Stub*> stubs;
    for (const auto& stub : stubs_) stubs.push_back(stub.get());
    watches_ =
        std::make_unique<ShardWatches>(std::move(stubs), options_.job_id, options_.rank,
                                       [this] { return NewContext(absl::InfiniteFuture()); });
  }
  epochs_.reset(new std::atomic<uint64_t>[options_.shards.size()]);
  for (size_t s = 0; s < options_.shards.size(); ++s) epochs_[s] = 0;
  return absl::OkStatus();
}

absl::Status Session::WaitForName(uint32_t s, absl::Time first, absl::Time deadline) {
  const std::string host = HostOf(options_.shards[s]);
  if (host.empty()) return absl::OkStatus();  // a target with a scheme: gRPC resolves it
  absl::Duration backoff = absl::Milliseconds(50);
  absl::Time next_log = first + kFirstWaitLog;
  for (;;) {
    const absl::Status st = Resolve(host);
    if (st.ok()) return st;
    if (absl::Now() + backoff >= deadline) {
      return absl::UnavailableError(absl::StrCat(
          ShardName(s), " Join: host '", host, "' did not resolve within ",
          absl::FormatDuration(absl::Trunc(absl::Now() - first, absl::Milliseconds(100))),
          " (connect_timeout): ", st.message()));
    }
    LogWaiting(s, absl::StrCat("host '", host, "' does not resolve yet (", st.message(), ")"),
               deadline, next_log);
    absl::SleepFor(backoff);  // a retry delay, not synchronization
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

void Session::LogWaiting(uint32_t s, absl::string_view why, absl::Time deadline,
                         absl::Time& next_log) const {
  const absl::Time now = absl::Now();
  if (now < next_log) return;
  Log(absl::StrCat("waiting for ", ShardName(s), ": ", why, "; retrying for ",
                   absl::FormatDuration(absl::Trunc(deadline - now, absl::Seconds(1))),
                   " more (connect_timeout)"));
  next_log = now + kWaitLogInterval;
}

void Session::Log(std::string_view line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "ternps worker %u: %.*s\n", options_.rank, static_cast<int>(line.size()),
                 line.data());
  }
}

absl::StatusOr<v1::JoinResponse> Session::JoinShard(uint32_t s, bool rejoin, bool resume) {
  const common::PartitionPlan& plan = spec_.plan;
  join_.set_shard_index(s);
  join_.set_rejoin(rejoin);
  join_.set_resume_epoch(resume ? epochs_[s].load() : 0);
  v1::JoinResponse response;
  // Retried while the shard cannot be reached (still starting, restarting), up to the connect
  // timeout; each attempt fails fast, so the error says why (connection refused, ...).
  const absl::Time first = absl::Now();
  const absl::Time deadline = first + options_.connect_timeout;
  if (absl::Status resolved = WaitForName(s, first, deadline); !resolved.ok()) return resolved;
  absl::Duration backoff = absl::Milliseconds(20);
  grpc::Status st;
  std::string cause;  // the last attempt's reason that is not our own deadline cutting it off
  absl::Time next_log = first + kFirstWaitLog;
  for (;;) {
    std::unique_ptr<grpc::ClientContext> context = NewContext(deadline);
    st = stubs_[s]->Join(context.get(), join_, &response);
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE &&
        !absl::StrContains(st.error_message(), "shutdown")) {
      cause = st.error_message();
    }
    // A shard that is shutting down may also cancel the call (this worker never cancels a Join).
    if (st.error_code() == grpc::StatusCode::CANCELLED) {
      st = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the shard cancelled the call (shutting down)");
    }
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE || absl::Now() + backoff >= deadline) {
      break;
    }
    // Something answers there, but not in HTTP/2: not a shard that is still starting.
    if (absl::StrContains(cause, "Failed parsing HTTP/2")) {
      return absl::FailedPreconditionError(
          absl::StrCat(ShardName(s), " Join: the peer does not speak gRPC (", cause,
                       "); is this the shard's address and port?"));
    }
    LogWaiting(s, cause, deadline, next_log);
    absl::SleepFor(backoff);  // a retry delay, not synchronization
    backoff = std::min(backoff * 2, absl::Milliseconds(500));
  }
  if (st.error_code() == grpc::StatusCode::UNAVAILABLE) {
    if (cause.empty()) cause = st.error_message();
    // A TLS refusal by the shard reaches the client only as a closed connection: say what to check.
    std::string hint;
    if (absl::StrContains(cause, "Socket closed")) {
      hint = options_.tls_ca_file.empty()
                 ? " (if the shard uses TLS, set tls_ca_file: it closes plaintext connections)"
                 : " (with TLS the shard closes the connection when it refuses this worker's "
                   "certificate: missing, expired or not signed by its --tls_client_ca)";
    }
    return absl::UnavailableError(absl::StrCat(
        ShardName(s), " Join: unreachable for ",
        absl::FormatDuration(absl::Trunc(absl::Now() - first, absl::Milliseconds(100))),
        " (connect_timeout): ", cause, hint));
  }
  if (!st.ok()) return common::FromGrpcStatus(st, absl::StrCat(ShardName(s), " Join"));
  if (absl::Status checked = CheckJoinAnswer(response, plan, s); !checked.ok()) {
    return absl::Status(checked.code(), absl::StrCat(ShardName(s), " Join: ", checked.message()));
  }
  // The Join went over the first connection. Connect the others now too, while the links are
  // quiet: a PushPull call on a connection that is not up yet fails at once when its handshake
  // outlasts gRPC's connect timeout (seen at the first step over busy 1 Gbit/s links), and after
  // a lost connection they come back on their own backoff only.
  for (size_t c = 1; c < connections_[s].size(); ++c) {
    if (!connections_[s][c].channel->WaitForConnected(absl::ToChronoTime(deadline))) {
      return absl::UnavailableError(
          absl::StrCat(ShardName(s), ": connection ", c + 1, " of ", connections_[s].size(),
                       " not up within connect_timeout (the Join on the first one succeeded)"));
    }
  }
  epochs_[s].store(response.epoch());
  // Open while this worker is in the job: the shard notices at once if this process dies.
  watches_->Watch(s, response.epoch());
  return response;
}

absl::StatusOr<uint64_t> Session::JoinAll(bool rejoin) {
  uint64_t start = 0;
  for (uint32_t s = 0; s < options_.shards.size(); ++s) {
    absl::StatusOr<v1::JoinResponse> response = JoinShard(s, rejoin);
    if (!response.ok()) return response.status();
    start = std::max(start, response->start_step());
  }
  return start;
}

absl::Status Session::Reconnect(const std::vector<uint32_t>& shards, uint64_t step) {
  for (const uint32_t s : shards) {
    ++reconnects_;
    absl::StatusOr<v1::JoinResponse> response = JoinShard(s, /*rejoin=*/true, /*resume=*/true);
    if (!response.ok()) {
      return absl::Status(response.status().code(),
                          absl::StrCat("reconnecting after a lost connection at step ", step, ": ",
                                       response.status().message()));
    }
    // A shard that restarted from its state directory continues each partition at the first step
    // it has not answered: this one, or the next if it answered this one to some worker.
    if (response->start_step() != step && response->start_step() != step + 1) {
      return absl::FailedPreconditionError(absl::StrCat(
          ShardName(s), " Join after a lost connection: the shard is at step ",
          response->start_step(), ", this worker at step ", step,
          response->start_step() < step ? " (the shard lost answered steps: its --state_dir?)"
                                        : " (the shard went on without this worker)"));
    }
  }
  return absl::OkStatus();
}

absl::Status Session::Leave(absl::Duration timeout) {
  // Every shard at once, under one deadline.
  const absl::Time deadline = absl::Now() + timeout;
  const size_t shards = stubs_.size();
  std::vector<v1::LeaveRequest> requests(shards);
  std::vector<v1::LeaveResponse> responses(shards);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts(shards);
  absl::BlockingCounter pending(static_cast<int>(shards));
  absl::Mutex error_mu;
  absl::Status first_error;  // the first shard's error wins
  for (uint32_t s = 0; s < shards; ++s) {
    requests[s].set_job_id(options_.job_id);
    requests[s].set_worker_rank(options_.rank);
    requests[s].set_epoch(epochs_[s].load());
    contexts[s] = NewContext(deadline);
    stubs_[s]->async()->Leave(
        contexts[s].get(), &requests[s], &responses[s], [&, s](grpc::Status st) {
          absl::Status left = common::FromGrpcStatus(st, absl::StrCat(ShardName(s), " Leave"));
          absl::MutexLock lock(&error_mu);
          if (first_error.ok()) first_error = std::move(left);
          pending.DecrementCount();
        });
  }
  pending.Wait();
  watches_->StopAll();  // after the Leave: a closed Watch before it would look like a death
  absl::MutexLock lock(&error_mu);
  return first_error;
}

}  // namespace ternps::worker
