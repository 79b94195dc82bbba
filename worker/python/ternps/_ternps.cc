// ternps._ternps: the Python bindings of libternps_worker (pybind11). The Python-facing API is
// ternps.Worker (ternps/__init__.py), which wraps this module's Worker and accepts torch tensors
// as well; see worker/python/README.md.
//
// Gradients are stepped in place: each must be a C-contiguous, writable float32 buffer (a numpy
// array, or a CPU torch tensor's numpy() view), whose memory the C++ library reads and overwrites
// with the average while the GIL is released. Errors are raised as ternps.TernpsError carrying
// the gRPC status code's name ("UNAVAILABLE", ...).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/codec/int_sum.h"
#include "common/codec/ternary.h"
#include "ternps/worker.h"

namespace py = pybind11;

namespace {

// An absl::Status on its way to Python (translated into ternps.TernpsError).
struct StatusError {
  std::string code;
  std::string message;
};

void ThrowIfError(const absl::Status& st) {
  if (st.ok()) return;
  throw StatusError{absl::StatusCodeToString(st.code()), std::string(st.message())};
}

// The worker's options as Python sees them: every ternps::worker::WorkerOptions setting, under
// its C++ name (the codec's settings flattened; durations in seconds; `codec` "terngrad" or
// "fp32"; tensors as (name, elements[, keep_fp32]) tuples). This is the one list of the options:
// ternps.Worker's keyword arguments are these attributes, with these defaults.
void BindOptions(py::module_& m) {
  using ternps::worker::WorkerOptions;
  auto seconds = [](absl::Duration WorkerOptions::*field) {
    return std::make_pair(
        [field](const WorkerOptions& o) { return absl::ToDoubleSeconds(o.*field); },
        [field](WorkerOptions& o, double s) {
          if (!(s > 0)) throw py::value_error("a timeout must be > 0 seconds");
          o.*field = absl::Seconds(s);
        });
  };
  py::class_<WorkerOptions> c(m, "WorkerOptions",
                              "ternps::worker::WorkerOptions (ternps/worker.h documents each).");
  c.def(py::init<>())
      .def_readwrite("job_id", &WorkerOptions::job_id)
      .def_readwrite("rank", &WorkerOptions::rank)
      .def_readwrite("world_size", &WorkerOptions::world_size)
      .def_readwrite("shards", &WorkerOptions::shards, "host:port of shard i at index i")
      .def_property(
          "tensors",
          [](const WorkerOptions& o) {
            py::list out;
            for (const auto& t : o.tensors)
              out.append(py::make_tuple(t.name, t.elements, t.keep_fp32));
            return out;
          },
          [](WorkerOptions& o, const py::iterable& tensors) {
            o.tensors.clear();
            size_t i = 0;
            for (const py::handle& item : tensors) {
              const py::tuple t = py::reinterpret_borrow<py::object>(item).cast<py::tuple>();
              if (t.size() != 2 && t.size() != 3) {
                throw py::value_error(
                    absl::StrCat("tensors[", i, "]: expected (name, elements[, keep_fp32])"));
              }
              o.tensors.push_back({t[0].cast<std::string>(), t[1].cast<uint64_t>(),
                                   t.size() == 3 && t[2].cast<bool>()});
              ++i;
            }
          },
          "(name, elements[, keep_fp32]) per tensor, identical on every worker")
      .def_property(
          "codec",
          [](const WorkerOptions& o) {
            return o.codec.codec == ternps::CodecKind::kFp32 ? "fp32" : "terngrad";
          },
          [](WorkerOptions& o, const std::string& codec) {
            if (codec == "terngrad") {
              o.codec.codec = ternps::CodecKind::kTernGrad;
            } else if (codec == "fp32") {
              o.codec.codec = ternps::CodecKind::kFp32;
            } else {
              throw StatusError{"INVALID_ARGUMENT",
                                absl::StrCat("codec: '", codec, "' is not 'terngrad' or 'fp32'")};
            }
          },
          "'terngrad' or 'fp32'");
#define TERNPS_CODEC_FIELD(name)                                  \
  c.def_property(                                                 \
      #name, [](const WorkerOptions& o) { return o.codec.name; }, \
      [](WorkerOptions& o, decltype(ternps::CodecConfig::name) v) { o.codec.name = v; })
  TERNPS_CODEC_FIELD(clip_sigmas);
  TERNPS_CODEC_FIELD(scaler_sharing);
  TERNPS_CODEC_FIELD(partition_elements);
  TERNPS_CODEC_FIELD(min_compress_elements);
  TERNPS_CODEC_FIELD(ternary_downlink);
  TERNPS_CODEC_FIELD(seed);
  TERNPS_CODEC_FIELD(int_sum_radix);
#undef TERNPS_CODEC_FIELD
  auto [connect_get, connect_set] = seconds(&WorkerOptions::connect_timeout);
  auto [rpc_get, rpc_set] = seconds(&WorkerOptions::rpc_timeout);
  auto [leave_get, leave_set] = seconds(&WorkerOptions::leave_timeout);
  c.def_property("connect_timeout", connect_get, connect_set, "seconds")
      .def_property("rpc_timeout", rpc_get, rpc_set, "seconds")
      .def_property("leave_timeout", leave_get, leave_set, "seconds")
      .def_readwrite("threads", &WorkerOptions::threads)
      .def_readwrite("max_call_bytes", &WorkerOptions::max_call_bytes)
      .def_readwrite("calls_in_flight_per_shard", &WorkerOptions::calls_in_flight_per_shard)
      .def_readwrite("channels_per_shard", &WorkerOptions::channels_per_shard)
      .def_readwrite("snapshot_interval", &WorkerOptions::snapshot_interval)
      .def_readwrite("tls_ca_file", &WorkerOptions::tls_ca_file)
      .def_readwrite("tls_cert_file", &WorkerOptions::tls_cert_file)
      .def_readwrite("tls_key_file", &WorkerOptions::tls_key_file)
      .def_readwrite("token_file", &WorkerOptions::token_file)
      .def_readwrite("state_slots", &WorkerOptions::state_slots)
      .def_readwrite("restart_ended_job", &WorkerOptions::restart_ended_job);
}

// A Python callable called from a worker thread: the GIL is taken to call it and to release it.
// While the interpreter shuts down it is neither called nor released (its threads may be gone).
class PyCallback {
 public:
  PyCallback(py::object fn, std::vector<py::object> keep)
      : fn_(std::move(fn)), keep_(std::move(keep)) {}
  ~PyCallback() {
    if (!Alive()) {
      fn_.release();  // leaked: no GIL can be taken any more
      for (py::object& o : keep_) o.release();
      return;
    }
    py::gil_scoped_acquire gil;
    fn_ = py::object();
    keep_.clear();
  }
  // fn(None, "") on success, fn(code name, message) on failure; exceptions are reported as
  // unraisable (they cannot propagate into the worker's thread).
  void operator()(const absl::Status& st) {
    if (!Alive()) return;
    py::gil_scoped_acquire gil;
    try {
      if (st.ok()) {
        fn_(py::none(), "");
      } else {
        fn_(absl::StatusCodeToString(st.code()), std::string(st.message()));
      }
    } catch (py::error_already_set& e) {
      e.discard_as_unraisable("ternps: a mark_ready callback");
    }
  }

 private:
  static bool Alive() { return Py_IsInitialized() && !_Py_IsFinalizing(); }
  py::object fn_;
  std::vector<py::object> keep_;
};

// A C-contiguous, writable float32 numpy array's memory (what a step writes in place).
absl::Span<float> FloatBuffer(const py::handle& h, const char* field, size_t i) {
  // Checked before viewing it as an array: constructing one from anything else would copy.
  if (!py::isinstance<py::array>(h)) {
    throw StatusError{"INVALID_ARGUMENT",
                      absl::StrCat(field, "[", i, "]: not a numpy array or CPU tensor")};
  }
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!a.dtype().is(py::dtype::of<float>())) {
    throw StatusError{"INVALID_ARGUMENT",
                      absl::StrCat(field, "[", i, "]: dtype ", std::string(py::str(a.dtype())),
                                   ", expected float32")};
  }
  if (!(a.flags() & py::array::c_style) || !a.writeable()) {
    throw StatusError{"INVALID_ARGUMENT",
                      absl::StrCat(field, "[", i,
                                   "]: must be C-contiguous and writable (it is stepped in "
                                   "place; no copy is made)")};
  }
  return absl::MakeSpan(static_cast<float*>(a.mutable_data()), static_cast<size_t>(a.size()));
}

// FloatBuffer of every item of `list` (field[i] in errors). The list keeps the arrays alive.
std::vector<absl::Span<float>> FloatBuffers(const py::list& list, const char* field) {
  std::vector<absl::Span<float>> spans;
  spans.reserve(list.size());
  for (size_t i = 0; i < list.size(); ++i) spans.push_back(FloatBuffer(list[i], field, i));
  return spans;
}

class PyWorker {
 public:
  explicit PyWorker(const ternps::worker::WorkerOptions& options) {
    absl::StatusOr<std::unique_ptr<ternps::worker::Worker>> worker;
    {
      py::gil_scoped_release release;
      worker = ternps::worker::Worker::Connect(options);
    }
    ThrowIfError(worker.status());
    worker_ = *std::move(worker);
  }

  // Steps `gradients` (one buffer per tensor, in registration order) in place.
  void Step(const py::list& gradients) {
    const std::vector<absl::Span<float>> spans = FloatBuffers(gradients, "gradients");
    // `gradients` (the caller's list) keeps the arrays alive during the call.
    WithoutGil([&](ternps::worker::Worker& w) { return w.Step(spans); });
  }

  // The streaming step (ternps/worker.h: StartStep, MarkReady, FinishStep).
  void StartStep() {
    WithoutGil([](ternps::worker::Worker& w) { return w.StartStep(); });
  }
  // `written(code, message)` is called from a worker thread with the GIL (code None: the
  // averages are in the buffers); the buffers are kept alive until then.
  void MarkReady(const std::vector<uint32_t>& tensors, const py::list& gradients,
                 py::object written) {
    const std::vector<absl::Span<float>> spans = FloatBuffers(gradients, "gradients");
    std::vector<py::object> keep;  // the buffers, alive until written
    for (const py::handle& g : gradients) keep.push_back(py::reinterpret_borrow<py::object>(g));
    std::function<void(const absl::Status&)> callback;
    if (!written.is_none()) {
      auto holder = std::make_shared<PyCallback>(std::move(written), std::move(keep));
      callback = [holder](const absl::Status& st) { (*holder)(st); };
    }
    // The callback's last copy may be released on this thread, without the GIL: PyCallback
    // takes it.
    WithoutGil([&](ternps::worker::Worker& w) {
      absl::Status st = w.MarkReady(tensors, spans, std::move(callback));
      callback = nullptr;
      return st;
    });
  }
  void FinishStep() {
    WithoutGil([](ternps::worker::Worker& w) { return w.FinishStep(); });
  }

  void Rejoin() {
    WithoutGil([](ternps::worker::Worker& w) { return w.Rejoin(); });
  }

  void Leave() {
    WithoutGil([](ternps::worker::Worker& w) { return w.Leave(); });
  }

  // Recovery (ternps/worker.h: OfferState, Recover). `state`: one buffer per (tensor, slot),
  // tensor-major (state[i * state_slots + j]).
  void OfferState(const py::list& state) {
    const std::vector<absl::Span<float>> spans = FloatBuffers(state, "state");
    WithoutGil([&](ternps::worker::Worker& w) { return w.OfferState(spans); });
  }
  // apply(step) runs on the calling thread (the GIL taken for it); an exception it raises fails
  // the recovery (INTERNAL, with the exception's text).
  void Recover(const py::list& state, const py::list& gradients, py::object apply) {
    const std::vector<absl::Span<float>> state_spans = FloatBuffers(state, "state");
    const std::vector<absl::Span<float>> grad_spans = FloatBuffers(gradients, "gradients");
    auto call_apply = [&apply](uint64_t step) -> absl::Status {
      py::gil_scoped_acquire gil;
      try {
        apply(step);
      } catch (py::error_already_set& e) {
        return absl::InternalError(absl::StrCat("apply(", step, "): ", e.what()));
      }
      return absl::OkStatus();
    };
    WithoutGil(
        [&](ternps::worker::Worker& w) { return w.Recover(state_spans, grad_spans, call_apply); });
  }

  uint64_t step() const {
    return Read([](const ternps::worker::Worker& w) { return w.step(); });
  }
  uint32_t partitions() const {
    return Read([](const ternps::worker::Worker& w) { return w.partitions(); });
  }

  py::dict LastStep() const {
    const ternps::worker::StepStats s =
        Read([](const ternps::worker::Worker& w) { return w.last_step(); });
    py::dict d;
    d["step"] = s.step;
    d["seconds"] = s.seconds;
    d["sent_bytes"] = s.sent_bytes;
    d["received_bytes"] = s.received_bytes;
    d["dense_bytes"] = s.dense_bytes;
    d["encode_seconds"] = s.encode_seconds;
    d["decode_seconds"] = s.decode_seconds;
    d["scaler_seconds"] = s.scaler_seconds;
    d["communication_seconds"] = s.communication_seconds;
    d["min_contributors"] = s.min_contributors;
    d["statistics_end"] = s.statistics_end;
    d["scalers_end"] = s.scalers_end;
    py::list calls;  // per PushPull call, seconds since the step began
    for (const auto& c : s.calls) {
      py::dict call;
      call["shard"] = c.shard;
      call["sent_bytes"] = c.sent_bytes;
      call["received_bytes"] = c.received_bytes;
      call["encoded"] = c.encoded;
      call["answered"] = c.answered;
      call["decoded"] = c.decoded;
      calls.append(call);
    }
    d["calls"] = calls;
    d["reconnects"] = s.reconnects;
    return d;
  }

  // Leaves (bounded) and frees the connection now rather than when Python collects the object.
  // Waits, without the GIL, for a call another thread is making to finish.
  void Close() {
    py::gil_scoped_release release;
    std::unique_lock<std::shared_mutex> lock(life_mu_);
    worker_.reset();
  }

  // Leave takes up to 5 s: not with the GIL held, unless the interpreter is shutting down (its
  // threads may be gone then).
  ~PyWorker() {
    if (worker_ == nullptr) return;
    if (Py_IsInitialized() && !_Py_IsFinalizing()) {
      py::gil_scoped_release release;
      std::unique_lock<std::shared_mutex> lock(life_mu_);
      worker_.reset();
    } else {
      worker_.reset();
    }
  }

 private:
  // Runs call(worker) with the GIL released; raises its error. One thread drives a worker: a
  // second one calling while the first is inside is refused (FAILED_PRECONDITION), and Close
  // waits for the call in progress instead of freeing the worker under it.
  template <typename Call>
  void WithoutGil(Call call) {
    absl::Status st;
    bool busy = false;
    {
      py::gil_scoped_release release;
      std::shared_lock<std::shared_mutex> alive(life_mu_);
      std::unique_lock<std::mutex> driving(drive_mu_, std::try_to_lock);
      if (!driving.owns_lock()) {
        busy = true;
      } else if (worker_ == nullptr) {
        st = absl::FailedPreconditionError("the worker is closed");
      } else {
        st = call(*worker_);
      }
    }
    if (busy) {
      throw StatusError{"FAILED_PRECONDITION",
                        "another thread is inside a call on this worker (one thread drives a "
                        "worker: step, rejoin, leave)"};
    }
    ThrowIfError(st);
  }
  // Runs read(worker) for an accessor (safe beside a call in progress, not beside Close).
  template <typename Fn>
  auto Read(Fn read) const -> decltype(read(std::declval<const ternps::worker::Worker&>())) {
    std::shared_lock<std::shared_mutex> alive(life_mu_);
    if (worker_ == nullptr) throw StatusError{"FAILED_PRECONDITION", "the worker is closed"};
    return read(*worker_);
  }

  mutable std::shared_mutex life_mu_;  // shared: a call or an accessor; exclusive: Close
  std::mutex drive_mu_;                // held by the one thread inside a call
  std::unique_ptr<ternps::worker::Worker> worker_;
};

// The codec, for tests against the golden vectors (tests/data/codec_golden.txt) and for tools:
// the same C++ functions the worker and the shard use.
py::bytes AsBytes(const std::vector<uint8_t>& v) {
  return py::bytes(reinterpret_cast<const char*>(v.data()), v.size());
}
absl::Span<const uint8_t> AsSpan(const std::string& s) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// (sigma, max_abs, clip): ComputeStats and ClipThreshold.
py::tuple Stats(py::array_t<float, py::array::c_style | py::array::forcecast> g,
                float clip_sigmas) {
  absl::StatusOr<ternps::common::PartitionStats> st =
      ternps::common::ComputeStats(absl::MakeConstSpan(g.data(), g.size()));
  ThrowIfError(st.status());
  return py::make_tuple(st->sigma, st->max_abs, ternps::common::ClipThreshold(*st, clip_sigmas));
}

py::bytes Ternarize(py::array_t<float, py::array::c_style | py::array::forcecast> g, float clip,
                    float scaler, uint64_t seed, uint32_t worker, uint64_t step,
                    uint32_t partition) {
  std::vector<uint8_t> out(ternps::common::TernaryBytes(g.size()));
  ThrowIfError(ternps::common::Ternarize(
      absl::MakeConstSpan(g.data(), g.size()), clip, scaler,
      {.seed = seed, .worker = worker, .step = step, .partition = partition}, absl::MakeSpan(out)));
  return AsBytes(out);
}

py::array_t<float> DecodeTernary(const std::string& data, size_t n, float scaler) {
  py::array_t<float> out(n);
  std::fill(out.mutable_data(), out.mutable_data() + n, 0.0f);
  ThrowIfError(ternps::common::ValidateTernary(AsSpan(data), n));
  ThrowIfError(ternps::common::DecodeTernaryAdd(AsSpan(data), scaler,
                                                absl::MakeSpan(out.mutable_data(), n)));
  return out;
}

py::bytes EncodeIntSum(py::array_t<int16_t, py::array::c_style | py::array::forcecast> sums,
                       int contributors) {
  std::vector<uint8_t> out(ternps::common::IntSumBytes(sums.size(), contributors));
  ThrowIfError(ternps::common::EncodeIntSum(absl::MakeConstSpan(sums.data(), sums.size()),
                                            contributors, absl::MakeSpan(out)));
  return AsBytes(out);
}

py::array_t<float> DecodeIntSum(const std::string& data, size_t n, int contributors, float scaler) {
  py::array_t<float> out(n);
  std::fill(out.mutable_data(), out.mutable_data() + n, 0.0f);
  ThrowIfError(ternps::common::ValidateIntSum(AsSpan(data), n, contributors));
  ThrowIfError(ternps::common::DecodeIntSumAdd(AsSpan(data), contributors, scaler,
                                               absl::MakeSpan(out.mutable_data(), n)));
  return out;
}

py::bytes EncodeIntSumRadix(py::array_t<int16_t, py::array::c_style | py::array::forcecast> sums,
                            int contributors) {
  std::vector<uint8_t> out(ternps::common::IntSumRadixBytes(sums.size(), contributors));
  ThrowIfError(ternps::common::EncodeIntSumRadix(absl::MakeConstSpan(sums.data(), sums.size()),
                                                 contributors, absl::MakeSpan(out)));
  return AsBytes(out);
}

py::array_t<float> DecodeIntSumRadix(const std::string& data, size_t n, int contributors,
                                     float scaler) {
  py::array_t<float> out(n);
  std::fill(out.mutable_data(), out.mutable_data() + n, 0.0f);
  ThrowIfError(ternps::common::DecodeIntSumRadixAdd(AsSpan(data), contributors, scaler,
                                                    absl::MakeSpan(out.mutable_data(), n)));
  return out;
}

}  // namespace

PYBIND11_MODULE(_ternps, m) {
  m.doc() = "Bindings of libternps_worker (use ternps.Worker).";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      py::object cls = py::module_::import("ternps.errors").attr("TernpsError");
      PyErr_SetObject(cls.ptr(), py::make_tuple(e.code, e.message).ptr());
    }
  });
  BindOptions(m);
  py::class_<PyWorker>(m, "Worker")
      .def(py::init<const ternps::worker::WorkerOptions&>(), py::arg("options"))
      .def("start_step", &PyWorker::StartStep)
      .def("mark_ready", &PyWorker::MarkReady, py::arg("tensors"), py::arg("gradients"),
           py::arg("written"))
      .def("finish_step", &PyWorker::FinishStep)
      .def("offer_state", &PyWorker::OfferState, py::arg("state"))
      .def("recover", &PyWorker::Recover, py::arg("state"), py::arg("gradients"), py::arg("apply"))
      .def("step", &PyWorker::Step, py::arg("gradients"))
      .def("rejoin", &PyWorker::Rejoin)
      .def("leave", &PyWorker::Leave)
      .def("close", &PyWorker::Close)
      .def_property_readonly("step_index", &PyWorker::step)
      .def_property_readonly("partitions", &PyWorker::partitions)
      .def("last_step", &PyWorker::LastStep);
  py::module_ codec =
      m.def_submodule("codec", "The wire codec (common/codec), as the C++ side runs it.");
  codec.def("stats", &Stats, py::arg("g"), py::arg("clip_sigmas"),
            "(sigma, max_abs, clip) of a partition");
  codec.def("ternarize", &Ternarize, py::arg("g"), py::arg("clip"), py::arg("scaler"),
            py::arg("seed"), py::arg("worker"), py::arg("step"), py::arg("partition"),
            "TERNARY_2BIT bytes of g (the Philox stream of the key)");
  codec.def("decode_ternary", &DecodeTernary, py::arg("data"), py::arg("n"), py::arg("scaler"));
  codec.def("encode_int_sum", &EncodeIntSum, py::arg("sums"), py::arg("contributors"));
  codec.def("decode_int_sum", &DecodeIntSum, py::arg("data"), py::arg("n"), py::arg("contributors"),
            py::arg("scaler"));
  codec.def("encode_int_sum_radix", &EncodeIntSumRadix, py::arg("sums"), py::arg("contributors"));
  codec.def("decode_int_sum_radix", &DecodeIntSumRadix, py::arg("data"), py::arg("n"),
            py::arg("contributors"), py::arg("scaler"));
}
