// The Exchange on the CPU: statistics in parallel on the calling thread and the worker's pool, SIMD
// ternarization into the request's payload buffers, decoding straight into the caller's gradient
// buffers.
#include <algorithm>
#include <atomic>
#include <bit>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/blocking_counter.h"
#include "common/codec/fp32.h"
#include "common/codec/int_sum.h"
#include "worker/client/exchange.h"

namespace ternps::worker {
namespace {

namespace v1 = ::ternps::v1;

class HostExchange final : public Exchange {
 public:
  HostExchange(const common::JobSpec& spec, common::ThreadPool& pool)
      : plan_(spec.plan), pool_(pool) {}

  absl::Status Begin(void*) override { return absl::OkStatus(); }

  // The calling thread computes partitions too, taking them from a shared counter with the pool's
  // threads: in a streaming step the pool may be busy encoding earlier calls, and the statistics
  // of newly ready ones (which their ShareScalers round waits for) must not queue behind them.
  absl::Status Stats(Gradients gradients, absl::Span<const uint32_t> compressed,
                     std::vector<common::PartitionStats>& stats, uint32_t* bad) override {
    std::vector<absl::Status> errors(compressed.size());
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i = next.fetch_add(1); i < compressed.size(); i = next.fetch_add(1)) {
        const uint32_t p = compressed[i];
        absl::StatusOr<common::PartitionStats> st =
            common::ComputeStats(PartitionSlice(plan_, gradients, p));
        if (st.ok()) {
          stats[p] = *st;
        } else {
          errors[i] = st.status();
        }
      }
    };
    const int helpers = static_cast<int>(
        std::min<size_t>(compressed.empty() ? 0 : compressed.size() - 1, pool_.size()));
    absl::BlockingCounter done(helpers);
    for (int h = 0; h < helpers; ++h) {
      pool_.Schedule([&] {
        work();
        done.DecrementCount();
      });
    }
    work();
    done.Wait();
    for (size_t i = 0; i < compressed.size(); ++i) {
      if (!errors[i].ok()) {
        *bad = compressed[i];
        return errors[i];
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<int> StartEncode(Gradients, absl::Span<const uint32_t>,
                                  const EncodeParams&) override {
    return 0;  // the work happens in FinishEncode, on the calling pool thread
  }

  absl::Status FinishEncode(int, Gradients gradients, absl::Span<const uint32_t> partitions,
                            const EncodeParams& params,
                            absl::Span<const absl::Span<uint8_t>> out) override {
    for (size_t i = 0; i < partitions.size(); ++i) {
      const uint32_t p = partitions[i];
      if (!plan_.partition(p).compressed) continue;  // FP32: sent in place (UplinkInPlace)
      common::TernaryKey key = params.key_base;
      key.partition = p;
      const absl::Status st =
          common::Ternarize(PartitionSlice(plan_, gradients, p), (*params.clips)[p],
                            (*params.scalers)[p], key, out[i]);
      if (!st.ok()) {
        return absl::Status(st.code(), absl::StrCat("encoding partition ", p, ": ", st.message()));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Decode(Gradients gradients, uint32_t p, const Average& avg) override {
    const absl::Span<float> out = PartitionSlice(plan_, gradients, p);
    absl::Status st;
    switch (avg.encoding) {
      case v1::FP32:
        common::ForEachRun(avg.pieces, 4, [&](common::Piece run, size_t element) {
          if (st.ok()) {
            st = common::DecodeFp32OnePass(run, out.subspan(element, run.size() / 4), element);
          }
        });
        break;
      case v1::INT_SUM:
        // Groups of 8 fields (`bits` bytes), each run a payload of its own.
        common::ForEachBlockRun(
            avg.pieces, static_cast<size_t>(common::IntSumBits(avg.contributors)), 8, out.size(),
            [&](common::Piece run, size_t first, size_t n) {
              if (st.ok()) {
                st = common::DecodeIntSumOnePass(run, avg.contributors, avg.scaler,
                                                 out.subspan(first, n), first);
              }
            });
        break;
      case v1::INT_SUM_RADIX:
        common::ForEachBlockRun(avg.pieces, common::kIntSumRadixBlockBytes,
                                common::IntSumRadixBlockElements(avg.contributors), out.size(),
                                [&](common::Piece run, size_t first, size_t n) {
                                  if (st.ok()) {
                                    st = common::DecodeIntSumRadixOnePass(
                                        run, avg.contributors, avg.scaler, out.subspan(first, n),
                                        first);
                                  }
                                });
        break;
      default:  // TERNARY_2BIT
        std::fill(out.begin(), out.end(), 0.0f);
        common::DecodeValidatedTernaryAdd(avg.bytes, avg.scaler, out);
        break;
    }
    return st;
  }

  absl::Status End() override { return absl::OkStatus(); }
  absl::Span<const uint8_t> UplinkInPlace(Gradients gradients, uint32_t p) const override {
    if (plan_.partition(p).compressed) return {};
    static_assert(std::endian::native == std::endian::little,
                  "FP32 payloads are the gradients' bytes on little-endian hosts only");
    const absl::Span<const float> g = PartitionSlice(plan_, gradients, p);
    return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(g.data()), g.size() * 4);
  }
  // `encoding` is the route's downlink: an INT_SUM route's INT_SUM_RADIX answers decode from
  // pieces too (Decode above).
  bool DecodesPieces(v1::Encoding encoding) const override {
    return encoding == v1::FP32 || encoding == v1::INT_SUM;
  }

 private:
  const common::PartitionPlan& plan_;
  common::ThreadPool& pool_;
};

}  // namespace

std::unique_ptr<Exchange> MakeHostExchange(const common::JobSpec& spec, common::ThreadPool& pool) {
  return std::make_unique<HostExchange>(spec, pool);
}

}  // namespace ternps::worker
