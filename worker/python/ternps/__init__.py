"""ternps: TernGrad data-parallel training through a ternps parameter server.

    import numpy as np, ternps
    worker = ternps.Worker(job_id="mnist", rank=0, world_size=2,
                           shards=["127.0.0.1:7070"],
                           tensors=[("fc1.weight", 784 * 512), ("fc1.bias", 512)])
    grads = [np.zeros(784 * 512, np.float32), np.zeros(512, np.float32)]
    worker.step(grads)   # in place: each buffer now holds the average over the workers
    worker.leave()

Gradients are stepped in place without copies: numpy float32 arrays (C-contiguous,
writable, any shape) or CPU torch float32 tensors (contiguous). The step runs with the GIL
released. Failures raise ternps.TernpsError with the gRPC status code's name.
"""

from ternps.errors import TernpsError
from ternps import _ternps

__all__ = ["Worker", "TernpsError"]


def _as_array(g, i):
    """A zero-copy numpy view of a gradient buffer (torch tensors through .numpy())."""
    module = type(g).__module__
    if module.startswith("torch"):
        if g.device.type != "cpu":
            raise TernpsError("INVALID_ARGUMENT",
                              f"gradients[{i}]: a {g.device.type} tensor; the Python "
                              "package steps CPU tensors (copy it to the CPU first)")
        if not g.is_contiguous():
            raise TernpsError("INVALID_ARGUMENT",
                              f"gradients[{i}]: not contiguous (stepped in place; no copy "
                              "is made)")
        g = g.detach().numpy()  # shares the tensor's memory
    return g


class Worker:
    """One worker of a ternps job (a C++ ternps::worker::Worker underneath).

    Connects to every shard (retrying for connect_timeout seconds while one is starting).
    tensors: the model's tensors in order, as (name, elements) pairs, identical on every
    worker. codec: "terngrad" or "fp32". snapshot_interval / state_slots: recovery
    settings (see the C++ header); the Python package does not expose Recover yet.
    tls_ca, tls_cert, tls_key: PEM files; tls_ca turns TLS on, tls_cert/tls_key present a
    client certificate to shards that require one (mutual TLS). token_file: a file holding
    the job's token, sent with every call (the first Join fixes it; see the C++ header).
    int_sum_radix: averages come back radix-packed where that is smaller (CodecConfig in
    ternps/codec_config.h); a job setting, like the codec's.

    Threads: one thread drives a worker (step, rejoin, leave). A call from a second thread
    while one is inside is refused (TernpsError FAILED_PRECONDITION); close() from another
    thread waits for the call in progress. Every call releases the GIL while it runs.
    """

    def __init__(self, job_id, rank, world_size, shards, tensors, codec="terngrad",
                 clip_sigmas=2.5, scaler_sharing=True, partition_elements=0,
                 min_compress_elements=4096, seed=0, snapshot_interval=0, state_slots=1,
                 threads=2, connect_timeout=60.0, rpc_timeout=180.0, tls_ca="", tls_cert="",
                 tls_key="", token_file="", int_sum_radix=True):
        self._tensors = [(str(n), int(e)) for n, e in tensors]
        self._impl = _ternps.Worker(
            job_id, rank, world_size, list(shards), self._tensors, codec, clip_sigmas,
            scaler_sharing, partition_elements, min_compress_elements, seed,
            snapshot_interval, state_slots, threads, float(connect_timeout),
            float(rpc_timeout), tls_ca, tls_cert, tls_key, token_file, bool(int_sum_radix))

    def step(self, gradients):
        """Exchanges one gradient: gradients[i] is tensor i's buffer; on return each holds
        the average over the contributing workers. Raises TernpsError on failure (the
        buffers' contents are then unspecified)."""
        self._impl.step([_as_array(g, i) for i, g in enumerate(gradients)])

    def rejoin(self):
        """Joins every shard again after a failed step (ABORTED: dropped or replaced)."""
        self._impl.rejoin()

    def leave(self):
        """Leaves the job on every shard."""
        self._impl.leave()

    def close(self):
        """Leaves (if not done yet, bounded) and releases the connections now."""
        self._impl.close()

    @property
    def step_index(self):
        """The step the next step() exchanges."""
        return self._impl.step_index

    @property
    def partitions(self):
        return self._impl.partitions

    def last_step(self):
        """Figures of the last step: seconds, sent/received/dense bytes, phases, ..."""
        return self._impl.last_step()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
