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

__all__ = ["Worker", "TernpsError", "option_names", "__version__"]

__version__ = "0.1.0"  # the CMake project's version (a test checks they agree)


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


def _options(job_id, rank, world_size, shards, tensors, options):
    """A _ternps.WorkerOptions from ternps.Worker's arguments: every keyword must be one of its
    attributes (the one list of the settings, with the C++ defaults)."""
    o = _ternps.WorkerOptions()
    o.job_id = str(job_id)
    o.rank = int(rank)
    o.world_size = int(world_size)
    o.shards = [str(s) for s in shards]
    o.tensors = [tuple(t) for t in tensors]
    for name, value in options.items():
        if name.startswith("_") or name in _FIXED or not hasattr(o, name):
            raise TypeError(f"Worker: unknown option {name!r}; the options are "
                            f"{', '.join(option_names())}")
        setattr(o, name, value)
    return o


_FIXED = ("job_id", "rank", "world_size", "shards", "tensors")


def option_names():
    """The keyword options of ternps.Worker (ternps::worker::WorkerOptions' settings)."""
    return [n for n in dir(_ternps.WorkerOptions)
            if not n.startswith("_") and n not in _FIXED]


class Worker:
    """One worker of a ternps job (a C++ ternps::worker::Worker underneath).

    Connects to every shard (retrying for connect_timeout seconds while one is starting).
    tensors: the model's tensors in order, as (name, elements) or (name, elements, keep_fp32),
    identical on every worker. The keyword options are ternps::worker::WorkerOptions' settings
    under their C++ names, with its defaults (`ternps.option_names()` lists them; the header
    ternps/worker.h documents each): codec ("terngrad" or "fp32"), clip_sigmas,
    scaler_sharing, partition_elements, min_compress_elements, ternary_downlink, seed,
    int_sum_radix, threads, max_call_bytes, calls_in_flight_per_shard, channels_per_shard,
    snapshot_interval, state_slots, connect_timeout / rpc_timeout / leave_timeout (seconds),
    tls_ca_file, tls_cert_file, tls_key_file, token_file, restart_ended_job. An unknown keyword
    raises TypeError.

    Threads: one thread drives a worker (step, start_step/mark_ready/finish_step, rejoin,
    leave). A call from a second thread while one is inside is refused (TernpsError
    FAILED_PRECONDITION); close() from another thread waits for the call in progress. Every
    call releases the GIL while it runs.
    """

    def __init__(self, job_id, rank, world_size, shards, tensors, **options):
        self._tensors = [(str(t[0]), int(t[1])) for t in tensors]
        self._impl = _ternps.Worker(_options(job_id, rank, world_size, shards, tensors, options))

    def step(self, gradients):
        """Exchanges one gradient: gradients[i] is tensor i's buffer; on return each holds
        the average over the contributing workers. Raises TernpsError on failure (the
        buffers' contents are then unspecified)."""
        self._impl.step([_as_array(g, i) for i, g in enumerate(gradients)])

    def start_step(self):
        """Starts a streaming step (finishing one in progress first; raises its error if it
        failed). Then mark_ready() the tensors as their gradients are computed, and
        finish_step()."""
        self._impl.start_step()

    def mark_ready(self, tensors, gradients, written=None):
        """Hands over the gradients of `tensors` (indexes into the tensor list; one float32 CPU
        buffer each) and returns at once: their exchange starts while the caller goes on.
        `written(code, message)` is called once from a worker thread when all of them hold
        their averages (code None) or the step failed (code: the gRPC status code's name); it
        must not call the worker's step methods. The buffers must not be touched until then."""
        self._impl.mark_ready([int(t) for t in tensors],
                              [_as_array(g, i) for i, g in enumerate(gradients)], written)

    def finish_step(self):
        """Waits for the streaming step's end; raises its error (a tensor never marked fails
        the step, naming it)."""
        self._impl.finish_step()

    def offer_state(self, state):
        """Recovery: call right after each optimizer update with the worker's state, one
        float32 buffer per (tensor, slot), tensor-major: state[i * state_slots + j] is slot j
        (0: the parameters) of tensor i. The worker whose turn it is (every snapshot_interval
        steps) uploads it to the shards; the others return at once."""
        self._impl.offer_state([_as_array(s, i) for i, s in enumerate(state)])

    def recover(self, state, gradients, apply):
        """Rebuilds the peers' exact state after joining a running job (or rejoin()): `state`
        (laid out as in offer_state) must hold the job's initial state (the model made afresh
        with the job's seed); for each step t the peers completed, the average of step t is
        written into `gradients` and apply(t) must run the same optimizer update the peers ran
        after step t. Afterwards `state` is bit for bit its peers'. Needs snapshot_interval > 0."""
        self._impl.recover([_as_array(s, i) for i, s in enumerate(state)],
                           [_as_array(g, i) for i, g in enumerate(gradients)], apply)

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
