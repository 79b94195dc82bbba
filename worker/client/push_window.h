// The window of one step's PushPull calls: which call of each shard may start, in what order, how
// many at once, and what was lost with a connection. It starts nothing itself: a Transport (gRPC
// in the worker, a fake in push_window_test) does, so the rules are tested without a network.
//
// Every worker takes a shard's calls into its window in the same order (the call plan's),
// whatever order their encodings finish in. (Calls taken together by two threads may reach gRPC
// in either order; neither waits for the other.) So the oldest incomplete partition is in flight
// from every worker, and a window of calls cannot deadlock (it could if each worker sent in the
// order its encodes finished, the shard waiting for one partition from some workers and another
// from the rest).
#ifndef TERNPS_WORKER_CLIENT_PUSH_WINDOW_H_
#define TERNPS_WORKER_CLIENT_PUSH_WINDOW_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace ternps::worker {

class PushWindow {
 public:
  class Transport {
   public:
    virtual ~Transport() = default;
    // Makes `call` cancellable (the worker creates its gRPC context). Called with the window's
    // lock held, so Cancel cannot miss a call that is about to start; must not call the window.
    virtual void Prepare(size_t call) = 0;
    // Starts `call` (prepared); its end must be reported with Finished. Called without the lock.
    virtual void Start(size_t call) = 0;
    // Cancels a prepared call that has not finished (it still reports Finished). With the lock.
    virtual void Cancel(size_t call) = 0;
    // `call` will not be sent in this round: the step was cancelled, or its shard's connection
    // was lost (then it is kept for Requeue). Without the lock.
    virtual void Held(size_t call) = 0;
  };

  // `shard_of_call[i]`: the shard of call i; a shard's calls are sent in index order. At most
  // `limit_per_shard` calls per shard in flight (0: no limit).
  PushWindow(std::vector<uint32_t> shard_of_call, uint32_t shards, int limit_per_shard,
             Transport* transport);

  // A new step: every call waits for its encoding; nothing lost, nothing cancelled.
  void Begin() ABSL_LOCKS_EXCLUDED(mu_);
  // `call` is encoded (`sendable`) or failed to encode (never sent); starts the calls of its
  // shard that are next in order while the shard has room.
  void Encoded(size_t call, bool sendable) ABSL_LOCKS_EXCLUDED(mu_);
  // How a call ended, as far as the window cares.
  enum class Ending {
    kDone,         // answered, or failed for good (the caller fails the step)
    kUnavailable,  // the connection was lost (the shard may be restarting)
    kCancelled,    // cancelled: by CancelAll, or else by the connection going away
  };
  struct Finish {
    bool lost = false;        // to be resent after its shard is joined again
    bool first_loss = false;  // the first loss of its shard this round
  };
  // The transport reports that `call` ended. The shard's next calls take its place (held if the
  // shard is lost).
  Finish Finished(size_t call, Ending ending) ABSL_LOCKS_EXCLUDED(mu_);
  // `call`'s answer is decoded: a Requeue does not send it again.
  void Answered(size_t call) ABSL_LOCKS_EXCLUDED(mu_);
  // The step failed: cancels the calls in flight and sends nothing more.
  void CancelAll() ABSL_LOCKS_EXCLUDED(mu_);
  bool cancelled() const ABSL_LOCKS_EXCLUDED(mu_);

  // Shards with a call that lost its connection this round, in shard order.
  std::vector<uint32_t> LostShards() const ABSL_LOCKS_EXCLUDED(mu_);
  // Lost shards not joined again yet; MarkReconnected records that they were.
  std::vector<uint32_t> ShardsToReconnect() const ABSL_LOCKS_EXCLUDED(mu_);
  void MarkReconnected(const std::vector<uint32_t>& shards) ABSL_LOCKS_EXCLUDED(mu_);
  // A new round for `shards` (reconnected, nothing of theirs in flight): their calls that are
  // not answered, in order, are sent again. Returns them, for the caller to rebuild their
  // requests before calling SendNext for each shard.
  std::vector<size_t> Requeue(const std::vector<uint32_t>& shards) ABSL_LOCKS_EXCLUDED(mu_);
  // Starts `shard`'s next calls while it has room.
  void SendNext(uint32_t shard) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  enum class Encoding { kNotYet, kReady, kFailed };
  struct Call {
    Encoding encoding = Encoding::kNotYet;
    bool in_call = false;  // prepared and not finished
    bool lost = false;     // lost its connection this round (to be resent)
    bool answered = false;
  };
  struct Flight {
    int in_flight = 0;
    std::vector<size_t> order;  // the shard's calls of this round, in order
    size_t next = 0;            // how far sending got
    bool lost = false;          // a call lost its connection: nothing more is sent this round
    bool reconnected = false;   // joined again since
  };
  // Takes `shard`'s next calls in order while they are encoded and it has room; prepares them,
  // or holds them (and every later encoded one) when the step is cancelled or the shard lost.
  void TakeNextLocked(uint32_t shard, std::vector<size_t>* start, std::vector<size_t>* held)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run(const std::vector<size_t>& start, const std::vector<size_t>& held)
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::vector<uint32_t> shard_of_call_;
  const int limit_;
  Transport* const transport_;
  mutable absl::Mutex mu_;
  std::vector<Call> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<Flight> flights_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace ternps::worker

#endif  // TERNPS_WORKER_CLIENT_PUSH_WINDOW_H_
