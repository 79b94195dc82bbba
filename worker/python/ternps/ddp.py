"""A PyTorch DistributedDataParallel communication hook that averages gradients through ternps
shards with TernGrad instead of an all-reduce, while the backward pass still runs.

    import ternps.ddp
    model = torch.nn.parallel.DistributedDataParallel(net)   # any process group (gloo)
    ternps.ddp.register(model, shards=["10.0.0.5:7070", "10.0.0.6:7070"])

`register` takes the rank and the world size from the model's process group, the job id from
TORCHELASTIC_RUN_ID when torchrun sets a real one (plain torchrun sets "none": then pass
job_id=...), and the shards from TERNPS_SHARDS (comma-separated) when not given. Other keyword
arguments are ternps.Worker's options (codec, seed, token_file, ...).

How it works. The hook registers every parameter that requires a gradient as one ternps
tensor, in reverse `named_parameters()` order: the order a backward pass computes them, so
the order the worker sends its calls in is the order their gradients become ready (every worker
registers the same list). Each bucket DDP hands it is marked ready at once (a streaming step,
ternps/worker.h): its statistics, scaler sharing, encoding and push start on the library's
threads while backward goes on computing the next buckets, and the bucket's future resolves
(from a library thread, taking the GIL only for that) when its averages are written into the
bucket. The hook call of the iteration's last bucket waits for the whole step, which is where
DDP waits anyway.

What it handles:
- any number of buckets, in any order, and DDP's rebuild of the buckets after the first
  iteration (parameters are found by identity, not by position);
- `no_sync()`: DDP does not call the hook then; the accumulated gradient goes through the next
  synchronized iteration;
- `static_graph=True`;
- `find_unused_parameters=True`: DDP still hands the hook every parameter, the unused ones with
  a zero gradient (what torch 1.13 does, tested), so the exchange is the same;
- CPU float32 buckets in place (no copy); float16/bfloat16 buckets are exchanged as float32
  and written back in their dtype; CUDA buckets go through host memory (copied out, averaged,
  copied back), which works without a CUDA build of ternps but is not the device codec;
- a failure in any bucket: every future of the iteration fails (none hangs), with the
  ternps error. A worker whose step failed has missed averages its peers applied: the next
  iteration raises (FAILED_PRECONDITION) instead of letting the replicas diverge silently,
  until `hook.recover()` rebuilds the model.

Recovery. Pass the optimizer (`register(model, optimizer=opt, snapshot_interval=K)`; SGD, with
or without momentum, dampening 0): every K steps one worker's parameters and momentum buffers
are snapshotted on the shards, and the shards keep every average since. After a failed step
(backward raised; e.g. ABORTED: this worker was dropped), or in a process restarted into a
running job (its model made afresh with the job's seed), call `hook.recover()` outside the
backward pass: it joins again, loads the newest snapshot and replays every average since
through `optimizer.step()`, so the parameters and momentum buffers are bit for bit its peers'.
A learning-rate schedule must then be a function of the step (`hook.worker.step_index`).
Partitions without a snapshot yet start from the parameters the model has: only a model made
afresh with the job's seed has those right, so a worker whose step failed before the first
snapshot cannot recover.

Constraints: world_size is the number of DDP processes, each one ternps worker (rank = DDP
rank). DDP's own process group still does its bookkeeping (the initial broadcast, the bucket
rebuild); the gradients go through the shards only.
"""

import os

import torch

from ternps import Worker, TernpsError

__all__ = ["TernGradHook", "register", "terngrad_hook"]


def terngrad_hook(state, bucket):
    """The communication hook; `state` is a TernGradHook."""
    return state.on_bucket(bucket)


def register(ddp_model, shards=None, job_id=None, optimizer=None, **worker_options):
    """Averages `ddp_model`'s gradients through ternps shards: builds a TernGradHook for its
    module (rank and world size from its process group) and registers it. Returns the hook
    (its `.worker` gives the figures of each step; `recover()` rebuilds the model after a
    failure; `close()` leaves the job). `optimizer`: for recovery (see the module's doc)."""
    import torch.distributed as dist
    if shards is None:
        env = os.environ.get("TERNPS_SHARDS", "")
        shards = [s for s in env.split(",") if s]
        if not shards:
            raise ValueError("shards: none given and TERNPS_SHARDS is not set "
                             "(host:port of each shard, comma-separated)")
    if job_id is None:
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "")
        if not run_id or run_id == "none":
            raise ValueError("job_id: required (TORCHELASTIC_RUN_ID is "
                             f"{repr(run_id) if run_id else 'not set'}; torchrun sets a real "
                             "one with --rdzv_id)")
        job_id = run_id
    group = ddp_model.process_group
    hook = TernGradHook(ddp_model.module, optimizer=optimizer, job_id=job_id,
                        rank=dist.get_rank(group), world_size=dist.get_world_size(group),
                        shards=shards, **worker_options)
    hook.register(ddp_model)
    return hook


class _Staged:
    """A bucket whose buffer is not CPU float32: exchanged through a float32 CPU copy."""

    def __init__(self, buffer):
        self.buffer = buffer
        self.host = buffer.detach().to(device="cpu", dtype=torch.float32).contiguous()

    def view(self, grad):
        offset = grad.storage_offset() - self.buffer.storage_offset()
        return self.host.narrow(0, offset, grad.numel())

    def write_back(self):
        self.buffer.copy_(self.host)


class TernGradHook:
    """The hook's state: `TernGradHook(module, job_id=..., rank=..., ...).register(ddp_model)`
    (or `ternps.ddp.register(ddp_model, ...)`, which finds rank and world size itself).

    `module` is the network DDP wraps (its parameters define the ternps tensors); the keyword
    arguments are ternps.Worker's (job_id, rank, world_size, shards, codec, seed, ...).
    """

    def __init__(self, module, optimizer=None, **worker_options):
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("module: no parameter requires a gradient")
        named.reverse()  # the order backward computes them
        self._index = {id(p): i for i, (_, p) in enumerate(named)}
        self._names = [n for n, _ in named]
        self._params = [p for _, p in named]
        self._optimizer = None
        self._momentum = False
        if optimizer is not None and worker_options.get("snapshot_interval", 0) > 0:
            self._optimizer = optimizer
            self._momentum = self._check_optimizer(optimizer)
            worker_options.setdefault("state_slots", 2 if self._momentum else 1)
        self.worker = Worker(tensors=[(n, p.numel()) for n, p in named], **worker_options)
        self._marked = 0         # tensors marked in the current iteration
        self._in_step = False
        self._failure = None     # the error of a failed step, until the worker rejoins

    def register(self, ddp_model):
        """Registers the hook with a DistributedDataParallel model (before its first step)."""
        ddp_model.register_comm_hook(state=self, hook=terngrad_hook)

    def on_bucket(self, bucket):
        """One gradient bucket of the current iteration: marked ready now; a future of its
        buffer, resolved when the averages are in it."""
        buffer = bucket.buffer()
        future = (torch.futures.Future(devices=[buffer.device]) if buffer.is_cuda
                  else torch.futures.Future())
        try:
            self._mark(bucket, buffer, future)
        except TernpsError as e:
            if not future.done():
                future.set_exception(e)
        return future

    def _check_optimizer(self, optimizer):
        """Whether the optimizer keeps momentum buffers (state slot 1); refuses optimizers whose
        state the hook cannot snapshot and replay exactly. Creates the momentum buffers now
        (zeros, which SGD with dampening 0 treats exactly like its own first-step copy), so that
        every worker's state has them from step 0."""
        if type(optimizer) is not torch.optim.SGD:
            raise ValueError(f"optimizer: recovery supports torch.optim.SGD, not "
                             f"{type(optimizer).__name__}")
        mine = {id(p) for p in self._params}
        momentum = set()
        for group in optimizer.param_groups:
            if group["momentum"] and group["dampening"]:
                raise ValueError("optimizer: recovery needs dampening 0 with momentum")
            for p in group["params"]:
                if id(p) in mine:
                    momentum.add(bool(group["momentum"]))
        if len(momentum) > 1:
            raise ValueError("optimizer: momentum in some parameter groups and not others")
        with_momentum = momentum == {True}
        if with_momentum:
            for p in self._params:
                state = optimizer.state[p]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return with_momentum

    def _state(self):
        """The worker's state for recovery, tensor-major: parameters, then momentum buffers."""
        out = []
        for p in self._params:
            out.append(p.data)
            if self._momentum:
                out.append(self._optimizer.state[p]["momentum_buffer"])
        return out

    def recover(self):
        """Rebuilds this worker's parameters and momentum buffers from the shards (outside the
        backward pass): after a failed step (joins again first) or in a process that joined a
        running job. Needs `optimizer=` and snapshot_interval > 0."""
        if self._optimizer is None:
            raise TernpsError("FAILED_PRECONDITION",
                              "recover: the hook was built without optimizer= and "
                              "snapshot_interval > 0, so the shards keep nothing to recover from")
        if self._in_step:
            self._end_step(None)
        if self._failure is not None:
            self.worker.rejoin()
        grads = [torch.zeros_like(p, memory_format=torch.contiguous_format)
                 for p in self._params]
        saved = [p.grad for p in self._params]

        def apply(step):
            for p, g in zip(self._params, grads):
                p.grad = g
            self._optimizer.step()

        try:
            with torch.no_grad():
                self.worker.recover(self._state(), grads, apply)
        finally:
            for p, g in zip(self._params, saved):
                p.grad = g
        self._failure = None

    def _mark(self, bucket, buffer, future):
        if not self._in_step:
            if self._failure is not None:
                advice = ("call hook.recover() to rebuild the model from the shards"
                          if self._optimizer is not None else
                          "build the hook with optimizer= and snapshot_interval > 0 to be able "
                          "to recover, or restart the job from a checkpoint")
                raise TernpsError(
                    "FAILED_PRECONDITION",
                    f"an earlier step failed ({self._failure}): this worker missed averages its "
                    f"peers applied, so its replica would diverge; {advice}")
            if self._optimizer is not None:
                # The optimizer has applied the previous step's averages: the worker whose turn
                # it is snapshots the state on the shards.
                self.worker.offer_state(self._state())
            self.worker.start_step()
            self._in_step = True
            self._marked = 0
        staged = None
        if buffer.dtype != torch.float32 or buffer.device.type != "cpu":
            staged = _Staged(buffer)
        tensors, views = [], []
        for p, g in zip(bucket.parameters(), bucket.gradients()):
            i = self._index.get(id(p))
            if i is None:
                self._end_step(TernpsError("INVALID_ARGUMENT",
                                           "bucket: a parameter the hook was not built with"))
                raise self._failure
            tensors.append(i)
            views.append(staged.view(g) if staged is not None else g)

        def written(code, message):
            if code is not None:
                future.set_exception(TernpsError(code, message))
                return
            if staged is not None:
                staged.write_back()
            future.set_result(buffer)

        try:
            self.worker.mark_ready(tensors, views, written)
        except TernpsError as e:
            self._end_step(e)
            raise
        self._marked += len(tensors)
        if self._marked == len(self._index):
            # The iteration's last bucket: wait for the whole step here, where DDP would wait
            # for the futures anyway; the step's figures are then current.
            self._end_step(None)

    def _end_step(self, error):
        """Finishes the step (every future is told by then); remembers a failure."""
        self._in_step = False
        try:
            self.worker.finish_step()
        except TernpsError as e:
            error = error or e
        if error is not None and self._failure is None:
            self._failure = error

    def close(self):
        """Leaves the job (bounded) and releases the connections."""
        self.worker.close()
