#include "server/aggregator.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "common/util/check.h"

namespace ternps::server {

using common::PayloadView;

PartitionAggregator::PartitionAggregator(const PartitionConfig& config)
    : config_(config),
      log_({.partition_id = config.id,
            .keep_recovery = config.keep_recovery,
            .state_bytes = config.state_bytes,
            .store = config.store}) {}

namespace {

// `buffer` if nobody else holds it any more (answers and gRPC slices of earlier steps have let
// go), else a fresh one put in its place.
AverageBytes& Unshared(std::shared_ptr<AverageBytes>& buffer) {
  if (buffer == nullptr || buffer.use_count() > 1) {
    buffer = std::make_shared<AverageBytes>();
  } else {
    // The other owners' last reads happen before their release of the count just read.
    std::atomic_thread_fence(std::memory_order_acquire);
  }
  return *buffer;
}

// "partitions[2]": a request field named in error messages.
std::string Field(const char* list, int index) { return absl::StrCat(list, "[", index, "]"); }

}  // namespace

absl::Status PartitionAggregator::CheckStep(uint64_t step, const char* list, int index) const {
  const uint64_t base = base_step();
  if (step < base) {
    return absl::FailedPreconditionError(absl::StrCat("step: ", step, " is already complete for ",
                                                      Field(list, index), " (partition ",
                                                      config_.id, " is at step ", base, ")"));
  }
  if (step > base + 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("step: ", step, " is too far ahead for ", Field(list, index), " (partition ",
                     config_.id, " is at step ", base, "; at most one step ahead is accepted)"));
  }
  return absl::OkStatus();
}

uint64_t PartitionAggregator::FirstOpenStep() const {
  uint64_t step = base_step();
  while (sharing()) {
    const Slot& slot = slots_[step % 2];
    if (!slot.active || slot.step != step || !slot.scalers_done) break;
    ++step;
  }
  return step;
}

PartitionAggregator::Slot& PartitionAggregator::SlotFor(uint64_t step, uint32_t world_size) {
  Slot& slot = slots_[step % 2];
  if (slot.active) {
    TERNPS_CHECK(slot.step == step, "partition ", config_.id, ": slot of step ", slot.step,
                 " reused for step ", step);
    return slot;
  }
  slot.active = true;
  slot.step = step;
  slot.deadline = config_.clock->Now() + config_.step_timeout;
  slot.offered.assign(RankWords(world_size), 0);
  slot.pushed.assign(RankWords(world_size), 0);
  slot.shared_scaler = 0.0f;
  slot.scalers_done = !sharing();
  slot.pushes = 0;
  slot.next_rank = 0;
  slot.summed_any = false;
  slot.deferred_count = 0;
  return slot;
}

absl::Status PartitionAggregator::CheckOffer(uint32_t rank, uint64_t step, int index,
                                             bool may_repeat) {
  constexpr const char* kList = "partition_ids";
  if (!sharing()) {
    return absl::FailedPreconditionError(
        absl::StrCat(Field(kList, index), ": partition ", config_.id,
                     " does not use scaler sharing (FP32 or no sharing)"));
  }
  if (step < base_step() && log_.Replayable(rank, step, may_repeat) != nullptr) {
    return absl::OkStatus();
  }
  if (absl::Status st = CheckStep(step, kList, index); !st.ok()) return st;
  const Slot& slot = slots_[step % 2];
  if (slot.active && slot.step == step && TestRank(slot.offered, rank) && !may_repeat) {
    return absl::AlreadyExistsError(absl::StrCat(Field(kList, index), ": worker_rank ", rank,
                                                 " already offered its scaler of partition ",
                                                 config_.id, " for step ", step));
  }
  return absl::OkStatus();
}

absl::Status PartitionAggregator::CheckPush(uint32_t rank, uint64_t step,
                                            const PayloadView& payload, int index,
                                            bool may_repeat) {
  constexpr const char* kList = "partitions";
  if (step < base_step()) {
    if (const RecoveryLog::Entry* e = log_.Replayable(rank, step, may_repeat); e != nullptr) {
      if (sharing() && payload.scaler != e->average.head.scaler) {
        return absl::InvalidArgumentError(absl::StrCat(
            Field(kList, index), ".scaler: ", payload.scaler, " differs from the shared scaler ",
            e->average.head.scaler, " of partition ", config_.id, " for step ", step));
      }
      return absl::OkStatus();
    }
  }
  if (absl::Status st = CheckStep(step, kList, index); !st.ok()) return st;
  const Slot& slot = slots_[step % 2];
  const bool current = slot.active && slot.step == step;
  if (current && TestRank(slot.pushed, rank) && !may_repeat) {
    return absl::AlreadyExistsError(absl::StrCat(Field(kList, index), ": worker_rank ", rank,
                                                 " already pushed partition ", config_.id,
                                                 " for step ", step));
  }
  if (sharing()) {
    if (!current || !slot.scalers_done) {
      return absl::FailedPreconditionError(absl::StrCat(
          Field(kList, index), ": the shared scaler of partition ", config_.id, " for step ", step,
          " is not settled yet; call ShareScalers and wait for its answer first"));
    }
    if (payload.scaler != slot.shared_scaler) {
      return absl::InvalidArgumentError(absl::StrCat(
          Field(kList, index), ".scaler: ", payload.scaler, " differs from the shared scaler ",
          slot.shared_scaler, " of partition ", config_.id, " for step ", step));
    }
  }
  return absl::OkStatus();
}

void PartitionAggregator::Offer(uint32_t rank, uint64_t step, float scaler,
                                std::shared_ptr<PendingCall<ternps::v1::ShareScalersResponse>> call,
                                int index, const MembershipView& view, Finisher& finisher) {
  ternps::v1::ShareScalersResponse* r = call->response();
  if (step < base_step()) {  // a repeat of a completed step (CheckOffer): from the log
    const RecoveryLog::Entry& e = log_.Replay(rank, step, finisher);
    r->set_shared_scalers(index, e.average.head.scaler);
    call->NoteContributors(e.average.head.contributors);
    finisher.PartDone(std::move(call));
    return;
  }
  Slot& slot = SlotFor(step, view.world_size);
  const bool repeat = TestRank(slot.offered, rank);  // CheckOffer allowed it (may_repeat)
  SetRank(slot.offered, rank);
  if (slot.scalers_done) {  // a rank readmitted after the others settled: take the settled one
    r->set_shared_scalers(index, slot.shared_scaler);
    call->NoteContributors(static_cast<uint32_t>(CountRanks(slot.offered)));
    finisher.PartDone(std::move(call));
    return;
  }
  if (!repeat) slot.shared_scaler = std::max(slot.shared_scaler, scaler);
  slot.scaler_waiters.push_back({std::move(call), index});
  TryComplete(view, finisher, nullptr);
}

void PartitionAggregator::Push(uint32_t rank, uint64_t step, const PayloadView& payload,
                               std::shared_ptr<PendingCall<PushPullAnswer>> call, int index,
                               const MembershipView& view, Finisher& finisher,
                               std::vector<CompletionStats>* completed) {
  if (step < base_step()) {  // a repeat of a completed step (CheckPush): from the log
    call->response()->averages[index] = log_.Replay(rank, step, finisher).average;
    finisher.PartDone(std::move(call));
    return;
  }
  Slot& slot = SlotFor(step, view.world_size);
  if (TestRank(slot.pushed, rank)) {
    // A repeat that CheckPush allowed (may_repeat): summed once already; answered with the rest.
    slot.push_waiters.push_back({std::move(call), index});
    return;
  }
  const size_t n = config_.elements;
  const absl::Span<const common::Piece> pieces = payload.pieces;
  // The caller validated the whole request (ValidatePushPull), so the payload is summed without
  // checking it again.
  const absl::Time apply_start = config_.clock->Now();
  const bool first = slot.pushes == 0;
  if (first) {
    slot.first_push = apply_start;
    slot.apply = absl::ZeroDuration();
  }
  switch (config_.route.aggregation) {
    case common::Aggregation::kIntSum: {
      // The first push stores its codes (every element: the payload was validated whole), so the
      // sums are never zero-filled; later pushes add theirs.
      if (first) {
        const int world = static_cast<int>(view.world_size);
        slot.packed_offset = common::IntSumBits(world) == 4 ? world : 0;
      } else if (slot.packed_offset != 0 && slot.pushes >= slot.packed_offset) {
        UnpackIntSums(slot);  // more pushes than the fields have room for (never at world size N)
      }
      if (slot.packed_offset != 0) {
        if (first) Unshared(slot.packed).Resize(common::IntSumBytes(n, slot.packed_offset));
        const absl::Span<uint8_t> fields = slot.packed->span();
        common::ForEachRun(pieces, 1, [&](common::Piece run, size_t byte) {
          const absl::Span<uint8_t> out =
              fields.subspan(2 * byte, std::min(2 * run.size(), fields.size() - 2 * byte));
          if (first) {
            common::StoreValidatedTernaryNibbles(run, slot.packed_offset, out);
          } else {
            common::AddValidatedTernaryNibbles(run, out);
          }
        });
        if (first && n % 2 == 1) fields.back() &= 0x0F;  // the unused nibble is 0 on the wire
        break;
      }
      if (first) slot.int_sums.resize(n);
      const absl::Span<int16_t> sums = absl::MakeSpan(slot.int_sums);
      common::ForEachRun(pieces, 1, [&](common::Piece run, size_t byte) {
        const size_t k = std::min(4 * run.size(), n - 4 * byte);
        if (first) {
          common::StoreValidatedTernaryCodes(run, sums.subspan(4 * byte, k));
        } else {
          common::AddValidatedTernaryCodes(run, sums.subspan(4 * byte, k));
        }
      });
      break;
    }
    case common::Aggregation::kTernaryFloat:
    case common::Aggregation::kFp32: {
      if (rank == slot.next_rank) {
        SumFloatPush(slot, pieces, payload.scaler);
        ++slot.next_rank;
        SumDeferred(slot, /*all=*/false);
      } else {  // a rank before it has not pushed yet: kept until it has
        if (slot.deferred_count == slot.deferred.size()) slot.deferred.emplace_back();
        Slot::Deferred& d = slot.deferred[slot.deferred_count++];
        d.rank = rank;
        d.scaler = payload.scaler;
        d.bytes.clear();
        for (const common::Piece& piece : pieces) {
          d.bytes.insert(d.bytes.end(), piece.begin(), piece.end());
        }
      }
      break;
    }
  }
  SetRank(slot.pushed, rank);
  ++slot.pushes;
  slot.last_push = apply_start;
  slot.apply += config_.clock->Now() - apply_start;
  slot.push_waiters.push_back({std::move(call), index});
  TryComplete(view, finisher, completed);
}

void PartitionAggregator::SumFloatPush(Slot& slot, absl::Span<const common::Piece> pieces,
                                       float scaler) {
  const size_t n = config_.elements;
  const bool first = !slot.summed_any;
  const absl::Span<float> sums = FloatSums(slot, first);
  slot.summed_any = true;
  if (config_.route.aggregation == common::Aggregation::kTernaryFloat) {
    if (first) std::fill(sums.begin(), sums.end(), 0.0f);
    common::ForEachRun(pieces, 1, [&](common::Piece run, size_t byte) {
      const size_t k = std::min(4 * run.size(), n - 4 * byte);
      common::DecodeValidatedTernaryAdd(run, scaler, sums.subspan(4 * byte, k));
    });
    return;
  }
  common::ForEachRun(pieces, 4, [&](common::Piece run, size_t element) {
    const absl::Span<float> out = sums.subspan(element, run.size() / 4);
    if (first) {
      common::CopyValidatedFp32(run, out);
    } else {
      common::AddValidatedFp32(run, out);
    }
  });
}

void PartitionAggregator::SumDeferred(Slot& slot, bool all) {
  auto begin = slot.deferred.begin();
  auto end = begin + static_cast<std::ptrdiff_t>(slot.deferred_count);
  std::sort(begin, end,
            [](const Slot::Deferred& a, const Slot::Deferred& b) { return a.rank < b.rank; });
  size_t taken = 0;
  for (auto it = begin; it != end; ++it) {
    if (!all && it->rank != slot.next_rank) break;
    const common::Piece piece(it->bytes.data(), it->bytes.size());
    SumFloatPush(slot, absl::MakeConstSpan(&piece, 1), it->scaler);
    slot.next_rank = it->rank + 1;
    ++taken;
  }
  // The ones left stay first, their buffers' capacity kept behind them.
  std::rotate(begin, begin + static_cast<std::ptrdiff_t>(taken), end);
  slot.deferred_count -= taken;
}

void PartitionAggregator::UnpackIntSums(Slot& slot) {
  const size_t n = config_.elements;
  const absl::Span<const uint8_t> fields = slot.packed->span();
  slot.int_sums.resize(n);
  for (size_t j = 0; j < n; ++j) {
    const int field = (fields[j / 2] >> (4 * (j % 2))) & 15;
    slot.int_sums[j] = static_cast<int16_t>(field - slot.packed_offset);
  }
  slot.packed_offset = 0;
}

absl::Span<float> PartitionAggregator::FloatSums(Slot& slot, bool first) {
  static_assert(std::endian::native == std::endian::little,
                "FP32 averages are sent from the sums' memory: little-endian hosts only");
  if (first) {
    Unshared(slot.float_sums).Resize(common::Fp32Bytes(config_.elements));
  }
  return absl::MakeSpan(reinterpret_cast<float*>(slot.float_sums->data()), config_.elements);
}

void PartitionAggregator::FailPushes(Slot& slot, const absl::Status& status, Finisher& finisher) {
  for (PushWaiter& w : slot.push_waiters) {
    w.call->Fail(status);
    finisher.PartDone(std::move(w.call));
  }
  slot.push_waiters.clear();
}

void PartitionAggregator::RestartDeadlines(absl::Time now) {
  for (Slot& slot : slots_) {
    if (slot.active) slot.deadline = now + config_.step_timeout;
  }
}

void PartitionAggregator::Recheck(const MembershipView& view, Finisher& finisher,
                                  std::vector<CompletionStats>* completed) {
  TryComplete(view, finisher, completed);
}

void PartitionAggregator::TryComplete(const MembershipView& view, Finisher& finisher,
                                      std::vector<CompletionStats>* completed) {
  // Steps complete in order: the base step first, then possibly the next one.
  for (int round = 0; round < 2; ++round) {
    const uint64_t base = base_step();
    Slot& slot = slots_[base % 2];
    if (!slot.active || slot.step != base) return;
    if (!slot.scalers_done) {
      if (slot.scaler_waiters.empty() || !view.AllRequiredIn(base, slot.offered)) return;
      slot.scalers_done = true;
      slot.deadline = config_.clock->Now() + config_.step_timeout;  // the push phase starts now
      const auto contributors = static_cast<uint32_t>(CountRanks(slot.offered));
      for (ScalerWaiter& w : slot.scaler_waiters) {
        ternps::v1::ShareScalersResponse* r = w.call->response();
        r->set_shared_scalers(w.index, slot.shared_scaler);
        // Several partitions answer one call, maybe under different locks at once: the call
        // reports the smallest number of contributors.
        w.call->NoteContributors(contributors);
        finisher.PartDone(std::move(w.call));
      }
      slot.scaler_waiters.clear();
    }
    if (slot.pushes == 0 || !view.AllRequiredIn(base, slot.pushed)) return;
    const CompletionStats stats = Complete(slot, finisher);
    if (completed != nullptr) completed->push_back(stats);
    slot.active = false;
    slot.deadline = absl::InfiniteFuture();
    base_step_.store(base + 1, std::memory_order_release);
  }
}

CompletionStats PartitionAggregator::Complete(Slot& slot, Finisher& finisher) {
  const absl::Time start = config_.clock->Now();
  const size_t n = config_.elements;
  const int contributors = slot.pushes;
  const ternps::v1::Encoding encoding =
      common::AverageEncoding(config_.route.downlink, config_.int_sum_radix, contributors);
  common::PayloadView head{.partition_id = config_.id,
                           .encoding = encoding,
                           .scaler = 0.0f,
                           .elements = config_.elements,
                           .contributors = static_cast<uint32_t>(contributors),
                           .pieces = {}};
  CompletionStats stats;
  stats.step = slot.step;
  stats.straggler_wait = slot.last_push - slot.first_push;
  std::shared_ptr<AverageBytes> answer;
  const bool radix = encoding == ternps::v1::INT_SUM_RADIX;
  if (encoding == ternps::v1::INT_SUM || radix) {
    head.scaler = slot.shared_scaler;
    if (!radix && slot.packed_offset == contributors) {
      answer = slot.packed;  // fields k + N for N contributors: the answer as it is
    } else {
      // The bytes of an earlier step are reused once no answer (or gRPC slice) holds them.
      std::shared_ptr<AverageBytes>& spare = spare_[slot.step % 2];
      Unshared(spare).Resize(common::PayloadBytes(encoding, n, contributors));
      if (radix && slot.packed_offset == contributors) {
        // 4-bit fields k + N (N = 4): packed five to a word in one pass.
        common::PackValidatedIntSumRadix(slot.packed->span(), n, contributors, spare->span());
      } else {
        if (slot.packed_offset != 0) UnpackIntSums(slot);
        // Sums of validated pushes are in [-N, N]: always encodable.
        const absl::Status st =
            radix ? common::EncodeIntSumRadix(slot.int_sums, contributors, spare->span())
                  : common::EncodeIntSum(slot.int_sums, contributors, spare->span());
        TERNPS_CHECK(st.ok(), "partition ", config_.id, ": ", ternps::v1::Encoding_Name(encoding),
                     " encoding failed: ", st.ToString());
      }
      answer = spare;
    }
  } else {
    SumDeferred(slot, /*all=*/true);  // ranks after one that did not push this step
    const absl::Span<float> sums =
        absl::MakeSpan(reinterpret_cast<float*>(slot.float_sums->data()), n);
    // One push: validated finite, and x / 1 is x.
    const bool finite =
        contributors == 1 || common::DivideFp32(sums, static_cast<float>(contributors));
    if (!finite) {
      // Finite pushes can still overflow float32 when summed: no average to give.
      FailPushes(slot,
                 absl::InvalidArgumentError(absl::StrCat(
                     "partitions: the sum of partition ", config_.id, " at step ", slot.step,
                     " overflows float32 (gradients of magnitude near 3.4e38)")),
                 finisher);
      if (absl::Status st = log_.Add(slot.step, slot.pushed, head, nullptr, finisher); !st.ok()) {
        // The pushes are failed already; the next step's answers will fail the same way.
        std::fprintf(stderr, "ternps-server: partition %u: %s\n", config_.id,
                     std::string(st.message()).c_str());
      }
      stats.aggregate = slot.apply + (config_.clock->Now() - start);
      return stats;
    }
    if (config_.route.downlink == ternps::v1::TERNARY_2BIT) {
      std::shared_ptr<AverageBytes>& spare = spare_[slot.step % 2];
      Unshared(spare).Resize(common::TernaryBytes(n));
      const common::TernaryKey key{config_.seed, kShardStreamWorker, slot.step, config_.id};
      absl::StatusOr<float> scaler =
          common::EncodeTernary(sums, /*clip_sigmas=*/0.0f, key, spare->span());
      TERNPS_CHECK(scaler.ok(), "partition ", config_.id,
                   ": ternarizing a finite average failed: ", scaler.status().ToString());
      head.scaler = *scaler;
      answer = spare;
    } else {
      answer = slot.float_sums;  // sent as it is: the FP32 wire format is little-endian float32
    }
  }
  if (absl::Status st = log_.Add(slot.step, slot.pushed, head, answer, finisher); !st.ok()) {
    // Not durable: nobody may receive it (a restart would not know it was answered).
    FailPushes(slot, st, finisher);
    stats.aggregate = slot.apply + (config_.clock->Now() - start);
    return stats;
  }
  stats.aggregate = slot.apply + (config_.clock->Now() - start);
  stats.sent_bytes = answer->size() * slot.push_waiters.size();
  for (PushWaiter& w : slot.push_waiters) {
    w.call->response()->averages[w.index] = {head, answer};
    finisher.PartDone(std::move(w.call));
  }
  slot.push_waiters.clear();
  return stats;
}

void PartitionAggregator::Restore(LoadedPartition loaded) {
  base_step_.store(log_.Restore(std::move(loaded)), std::memory_order_release);
}

void PartitionAggregator::CollectExpired(absl::Time now, const MembershipView& view,
                                         absl::Span<const std::atomic<int64_t>> active_ns,
                                         absl::Span<const std::atomic<int64_t>> disconnected_ns,
                                         absl::Duration grace, std::vector<uint32_t>* missing) {
  const int64_t silent_since = absl::ToUnixNanos(now - config_.step_timeout);
  const int64_t gone_since = absl::ToUnixNanos(now - grace);
  for (Slot& slot : slots_) {
    if (!slot.active) continue;
    const bool expired = slot.deadline <= now;
    const RankBits required = view.Required(slot.step);
    const RankBits& have = slot.scalers_done ? slot.pushed : slot.offered;
    for (uint32_t r = 0; r < view.world_size; ++r) {
      if (!TestRank(required, r) || TestRank(have, r)) continue;
      // Before the job started, a rank that has not joined yet is waited for (the engine's start
      // timeout ends a job that never starts), not dropped.
      if (!view.started && view.ranks[r].state == RankState::kExpected) continue;
      const int64_t disconnected = disconnected_ns[r].load(std::memory_order_relaxed);
      const bool joined = view.ranks[r].state == RankState::kJoined;
      if (expired || (joined && active_ns[r].load(std::memory_order_relaxed) <= silent_since) ||
          (joined && grace > absl::ZeroDuration() && disconnected <= gone_since)) {
        missing->push_back(r);
      }
    }
    // Whoever is missing gets dropped; the step completes with the rest at the next Recheck.
    if (expired) slot.deadline = now + config_.step_timeout;
  }
}

absl::Status PartitionAggregator::CheckSnapshot(uint64_t step, size_t bytes, int index) const {
  return log_.CheckSnapshot(step, bytes, index, base_step());
}

absl::Status PartitionAggregator::ApplySnapshot(uint64_t step, std::string state) {
  return log_.ApplySnapshot(step, std::move(state), base_step());
}

absl::Status PartitionAggregator::Recovery(uint64_t to_step, uint64_t from_step, int index,
                                           uint64_t* budget,
                                           ternps::v1::PartitionRecovery* out) const {
  return log_.Recovery(to_step, from_step, index, base_step(), budget, out);
}

void PartitionAggregator::FailAll(const absl::Status& status, Finisher& finisher) {
  for (Slot& slot : slots_) {
    for (ScalerWaiter& w : slot.scaler_waiters) {
      w.call->Fail(status);
      finisher.PartDone(std::move(w.call));
    }
    for (PushWaiter& w : slot.push_waiters) {
      w.call->Fail(status);
      finisher.PartDone(std::move(w.call));
    }
    slot.scaler_waiters.clear();
    slot.push_waiters.clear();
    slot.active = false;
  }
}

}  // namespace ternps::server
