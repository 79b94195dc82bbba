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

class PyWorker {
 public:
  PyWorker(const std::string& job_id, uint32_t rank, uint32_t world_size,
           const std::vector<std::string>& shards,
           const std::vector<std::pair<std::string, uint64_t>>& tensors, const std::string& codec,
           float clip_sigmas, bool scaler_sharing, uint32_t partition_elements,
           uint32_t min_compress_elements, uint64_t seed, uint32_t snapshot_interval,
           uint32_t state_slots, int threads, double connect_timeout, double rpc_timeout,
           const std::string& tls_ca, const std::string& tls_cert, const std::string& tls_key,
           const std::string& token_file, bool int_sum_radix) {
    ternps::worker::WorkerOptions options;
    options.job_id = job_id;
    options.rank = rank;
    options.world_size = world_size;
    options.shards = shards;
    for (const auto& [name, elements] : tensors) options.tensors.push_back({name, elements, false});
    if (codec == "terngrad") {
      options.codec.codec = ternps::CodecKind::kTernGrad;
    } else if (codec == "fp32") {
      options.codec.codec = ternps::CodecKind::kFp32;
    } else {
      throw StatusError{"INVALID_ARGUMENT",
                        absl::StrCat("codec: '", codec, "' is not 'terngrad' or 'fp32'")};
    }
    options.codec.clip_sigmas = clip_sigmas;
    options.codec.scaler_sharing = scaler_sharing;
    options.codec.int_sum_radix = int_sum_radix;
    options.codec.partition_elements = partition_elements;
    options.codec.min_compress_elements = min_compress_elements;
    options.codec.seed = seed;
    options.snapshot_interval = snapshot_interval;
    options.state_slots = state_slots;
    options.threads = threads;
    options.connect_timeout = absl::Seconds(connect_timeout);
    options.rpc_timeout = absl::Seconds(rpc_timeout);
    options.tls_ca_file = tls_ca;
    options.tls_cert_file = tls_cert;
    options.tls_key_file = tls_key;
    options.token_file = token_file;
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
    std::vector<py::array> keep;
    std::vector<absl::Span<float>> spans;
    keep.reserve(gradients.size());
    for (size_t i = 0; i < gradients.size(); ++i) {
      // Checked before viewing it as an array: constructing one from anything else would copy.
      if (!py::isinstance<py::array>(gradients[i])) {
        throw StatusError{"INVALID_ARGUMENT",
                          absl::StrCat("gradients[", i, "]: not a numpy array or CPU tensor")};
      }
      py::array a = py::reinterpret_borrow<py::array>(gradients[i]);
      if (!a.dtype().is(py::dtype::of<float>())) {
        throw StatusError{"INVALID_ARGUMENT",
                          absl::StrCat("gradients[", i, "]: dtype ",
                                       std::string(py::str(a.dtype())), ", expected float32")};
      }
      if (!(a.flags() & py::array::c_style) || !a.writeable()) {
        throw StatusError{"INVALID_ARGUMENT",
                          absl::StrCat("gradients[", i,
                                       "]: must be C-contiguous and writable (it is stepped in "
                                       "place; no copy is made)")};
      }
      spans.emplace_back(static_cast<float*>(a.mutable_data()), static_cast<size_t>(a.size()));
      keep.push_back(std::move(a));
    }
    WithoutGil([&](ternps::worker::Worker& w) { return w.Step(spans); });
  }

  void Rejoin() {
    WithoutGil([](ternps::worker::Worker& w) { return w.Rejoin(); });
  }

  void Leave() {
    WithoutGil([](ternps::worker::Worker& w) { return w.Leave(); });
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
  py::class_<PyWorker>(m, "Worker")
      .def(py::init<const std::string&, uint32_t, uint32_t, const std::vector<std::string>&,
                    const std::vector<std::pair<std::string, uint64_t>>&, const std::string&, float,
                    bool, uint32_t, uint32_t, uint64_t, uint32_t, uint32_t, int, double, double,
                    const std::string&, const std::string&, const std::string&, const std::string&,
                    bool>(),
           py::arg("job_id"), py::arg("rank"), py::arg("world_size"), py::arg("shards"),
           py::arg("tensors"), py::arg("codec"), py::arg("clip_sigmas"), py::arg("scaler_sharing"),
           py::arg("partition_elements"), py::arg("min_compress_elements"), py::arg("seed"),
           py::arg("snapshot_interval"), py::arg("state_slots"), py::arg("threads"),
           py::arg("connect_timeout"), py::arg("rpc_timeout"), py::arg("tls_ca"),
           py::arg("tls_cert"), py::arg("tls_key"), py::arg("token_file"), py::arg("int_sum_radix"))
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
