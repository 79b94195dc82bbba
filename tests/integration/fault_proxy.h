// A TCP proxy for fault tests: listens on 127.0.0.1 (port 0) and forwards every connection to
// `target`, and on command resets every connection (RST to both ends), black-holes traffic (the
// connections stay open, nothing is forwarded, like a peer that stopped answering), or resets
// once the bytes sent towards the target pass given marks (so a reset lands inside a large push
// without timing it by the clock), or delays and throttles what it forwards.
//
//   FaultProxy proxy(shard.address());
//   options.shards = {proxy.address()};
//   proxy.ResetAtUpstreamBytes({1 << 20, 5 << 20});  // two resets, mid-push
//   proxy.ResetAll();                                 // one now
//   proxy.SetBlackHole(true); ...; proxy.SetBlackHole(false);
//   proxy.SetDelay(absl::Milliseconds(5)); proxy.SetRate(20 << 20);  // a slow, narrow link
//
// Thread-safe. One thread accepts; each connection has a thread that forwards both ways.
#ifndef TERNPS_TESTS_INTEGRATION_FAULT_PROXY_H_
#define TERNPS_TESTS_INTEGRATION_FAULT_PROXY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace ternps::testing {

class FaultProxy {
 public:
  // `target`: "127.0.0.1:port" (IPv4 loopback host:port).
  explicit FaultProxy(const std::string& target);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Resets every open connection now: both ends see ECONNRESET.
  void ResetAll();
  // Resets every open connection each time the bytes forwarded towards the target (all
  // connections together, since the proxy started) reach a mark; marks ascending.
  void ResetAtUpstreamBytes(std::vector<uint64_t> marks);
  // While on, nothing is forwarded either way (connections stay open; new ones are accepted).
  void SetBlackHole(bool on);
  // Each chunk read (up to 64 KiB) is forwarded `delay` later. Both directions of a connection
  // share its thread, so a chunk also waits behind the other direction's: a congested link.
  void SetDelay(absl::Duration delay);
  // At most `bytes_per_second` forwarded per connection (both directions together); 0: no limit.
  void SetRate(uint64_t bytes_per_second);
  uint64_t upstream_bytes() const { return upstream_bytes_.load(); }
  int resets() const { return resets_.load(); }
  int connections() const { return connections_.load(); }

 private:
  struct Link {
    int client = -1;
    int server = -1;
    std::atomic<bool> reset{false};
    std::thread thread;
  };
  void AcceptLoop();
  void Forward(Link* link);
  void ResetLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  int listen_fd_ = -1;
  int port_ = 0;
  int target_port_ = 0;
  int wake_[2] = {-1, -1};  // wakes the accept loop at destruction
  std::atomic<bool> stop_{false};
  std::atomic<bool> black_hole_{false};
  std::atomic<int64_t> delay_ns_{0};
  std::atomic<uint64_t> rate_{0};
  std::atomic<uint64_t> upstream_bytes_{0};
  std::atomic<int> resets_{0};
  std::atomic<int> connections_{0};
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Link>> links_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> marks_ ABSL_GUARDED_BY(mu_);  // pending, ascending
  std::thread accept_thread_;
};

}  // namespace ternps::testing

#endif  // TERNPS_TESTS_INTEGRATION_FAULT_PROXY_H_
