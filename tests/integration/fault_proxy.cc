#include "tests/integration/fault_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ternps::testing {
namespace {

void Die(const char* what) {
  std::fprintf(stderr, "FaultProxy: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

// Makes the close of `fd` send a reset instead of an orderly end, and wakes the forwarding
// thread's poll (SHUT_RD sends nothing to the peer); that thread then closes it.
void ResetSocket(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  shutdown(fd, SHUT_RD);
}

}  // namespace

FaultProxy::FaultProxy(const std::string& target) {
  const size_t colon = target.rfind(':');
  target_port_ = std::atoi(target.substr(colon + 1).c_str());
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) Die("socket");
  const int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("bind");
  if (listen(listen_fd_, 64) != 0) Die("listen");
  socklen_t len = sizeof(addr);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  if (pipe2(wake_, O_CLOEXEC) != 0) Die("pipe2");
  accept_thread_ = std::thread([this] { AcceptLoop(); });
}

FaultProxy::~FaultProxy() {
  stop_ = true;
  const char byte = 0;
  (void)!write(wake_[1], &byte, 1);
  accept_thread_.join();
  std::vector<std::unique_ptr<Link>> links;
  {
    absl::MutexLock lock(&mu_);
    ResetLocked();
    links = std::move(links_);
  }
  for (auto& link : links) link->thread.join();
  close(listen_fd_);
  close(wake_[0]);
  close(wake_[1]);
}

void FaultProxy::AcceptLoop() {
  for (;;) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      Die("poll");
    }
    if (stop_) return;
    if (!(fds[0].revents & POLLIN)) continue;
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    const int server = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(target_port_));
    if (server < 0 || connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ResetSocket(client);
      close(client);
      if (server >= 0) close(server);
      continue;
    }
    const int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto link = std::make_unique<Link>();
    link->client = client;
    link->server = server;
    Link* raw = link.get();
    ++connections_;
    absl::MutexLock lock(&mu_);
    link->thread = std::thread([this, raw] { Forward(raw); });
    links_.push_back(std::move(link));
  }
}

void FaultProxy::Forward(Link* link) {
  char buffer[64 << 10];
  for (;;) {
    // In a black hole nothing is read: the senders' kernel buffers fill and they stall, as behind
    // a peer that stopped answering. Polled at 5 ms so the hole can close again.
    const bool hole = black_hole_.load();
    pollfd fds[2] = {{link->client, static_cast<short>(hole ? 0 : POLLIN), 0},
                     {link->server, static_cast<short>(hole ? 0 : POLLIN), 0}};
    const int ready = poll(fds, 2, hole ? 5 : 100);
    if (link->reset || stop_) break;
    if (ready <= 0) continue;
    bool closed = false;
    for (int i = 0; i < 2 && !closed; ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const int from = i == 0 ? link->client : link->server;
      const int to = i == 0 ? link->server : link->client;
      const ssize_t n = read(from, buffer, sizeof(buffer));
      if (n <= 0) {
        closed = true;
        break;
      }
      // The emulated link: its latency, then its rate (sleeps that shape traffic, nothing waits
      // on them).
      if (const int64_t delay = delay_ns_.load(); delay > 0) {
        absl::SleepFor(absl::Nanoseconds(delay));
      }
      if (const uint64_t rate = rate_.load(); rate > 0) {
        absl::SleepFor(absl::Seconds(static_cast<double>(n) / static_cast<double>(rate)));
      }
      if (i == 0) {
        // Up to the next mark only, so a reset lands where the mark says.
        size_t chunk = static_cast<size_t>(n);
        bool reset_now = false;
        {
          absl::MutexLock lock(&mu_);
          const uint64_t before = upstream_bytes_.load();
          if (!marks_.empty() && before + chunk >= marks_.front()) {
            chunk = static_cast<size_t>(marks_.front() - before);
            marks_.erase(marks_.begin());
            reset_now = true;
          }
          upstream_bytes_ += chunk;
        }
        for (size_t off = 0; off < chunk;) {
          const ssize_t w = write(to, buffer + off, chunk - off);
          if (w <= 0) {
            closed = true;
            break;
          }
          off += static_cast<size_t>(w);
        }
        if (reset_now) {
          absl::MutexLock lock(&mu_);
          ResetLocked();
        }
      } else {
        for (ssize_t off = 0; off < n;) {
          const ssize_t w = write(to, buffer + off, static_cast<size_t>(n - off));
          if (w <= 0) {
            closed = true;
            break;
          }
          off += w;
        }
      }
    }
    if (closed || link->reset) break;
  }
  // From here on ResetLocked leaves this link alone (its descriptors are about to be closed and
  // their numbers reused). A reset link's sockets have SO_LINGER 0: closing them sends the
  // reset; an ended one closes normally.
  {
    absl::MutexLock lock(&mu_);
    link->reset.exchange(true);
  }
  close(link->client);
  close(link->server);
}

void FaultProxy::ResetLocked() {
  for (auto& link : links_) {
    if (link->reset.exchange(true)) continue;
    ResetSocket(link->client);
    ResetSocket(link->server);
  }
  ++resets_;
}

void FaultProxy::ResetAll() {
  absl::MutexLock lock(&mu_);
  ResetLocked();
}

void FaultProxy::ResetAtUpstreamBytes(std::vector<uint64_t> marks) {
  absl::MutexLock lock(&mu_);
  marks_ = std::move(marks);
}

void FaultProxy::SetBlackHole(bool on) { black_hole_ = on; }

void FaultProxy::SetDelay(absl::Duration delay) { delay_ns_ = absl::ToInt64Nanoseconds(delay); }

void FaultProxy::SetRate(uint64_t bytes_per_second) { rate_ = bytes_per_second; }

}  // namespace ternps::testing
