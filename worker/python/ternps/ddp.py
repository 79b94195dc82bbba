"""A PyTorch DistributedDataParallel communication hook that averages gradients through ternps
shards with TernGrad instead of an all-reduce.

    import ternps.ddp
    model = torch.nn.parallel.DistributedDataParallel(net)          # gloo process group
    hook = ternps.ddp.TernGradHook(net, job_id="mnist", rank=rank, world_size=world_size,
                                   shards=["127.0.0.1:7070", "127.0.0.1:7071"])
    hook.register(model)   # = model.register_comm_hook(state=hook, hook=ternps.ddp.terngrad_hook)

How it works: the hook registers every parameter of the model as one ternps tensor (in
`named_parameters()` order, so every worker registers the same list). DDP hands it gradient
buckets as they become ready; the hook notes where each parameter's gradient lies in its bucket
and, once the buckets of the iteration cover every parameter, runs one ternps step over those
views in place (no copy) and resolves every bucket's future with its (now averaged) buffer. DDP
waits for the futures only at the end of the backward pass, so holding the early ones back is
safe. Bucket order and DDP's rebuild of the buckets after the first iteration do not matter.

Constraints:
- world_size is the number of DDP processes, and each is one ternps worker (rank = DDP rank).
- Every parameter that requires a gradient must receive one in every iteration (a static graph;
  `find_unused_parameters=True` is refused with an error in the first iteration that misses
  one). CPU tensors, float32.
- The exchange starts when the last bucket is ready: communication does not overlap the
  backward pass yet, so `bucket_cap_mb` does not change what is sent.
- DDP's own process group (gloo) still does its bookkeeping (the initial broadcast of the
  parameters, the bucket rebuild); the gradients go through the shards only.
"""

import torch

from ternps import Worker, TernpsError

__all__ = ["TernGradHook", "terngrad_hook"]


def terngrad_hook(state, bucket):
    """The communication hook; `state` is a TernGradHook."""
    return state.on_bucket(bucket)


class TernGradHook:
    """The hook's state: `TernGradHook(...).register(ddp_model)`.

    `module` is the network DDP wraps (its parameters define the ternps tensors); the keyword
    arguments are ternps.Worker's (job_id, rank, world_size, shards, codec, seed, ...).
    """

    def __init__(self, module, **worker_options):
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("module: no parameter requires a gradient")
        self._index = {id(p): i for i, (_, p) in enumerate(named)}
        self._names = [n for n, _ in named]
        self.worker = Worker(tensors=[(n, p.numel()) for n, p in named], **worker_options)
        self._views = [None] * len(named)
        self._seen = 0
        self._pending = []

    def register(self, ddp_model):
        """Registers the hook with a DistributedDataParallel model (before its first step)."""
        ddp_model.register_comm_hook(state=self, hook=terngrad_hook)

    def on_bucket(self, bucket):
        """One gradient bucket of the current iteration; a future of its averaged buffer."""
        future = torch.futures.Future()
        self._pending.append((future, bucket))
        for p, g in zip(bucket.parameters(), bucket.gradients()):
            i = self._index.get(id(p))
            if i is None:
                # Every future of the iteration fails, the earlier buckets' too: DDP waits for
                # all of them, and one left unresolved would hang it.
                self._fail(TernpsError("INVALID_ARGUMENT",
                                       "bucket: a parameter the hook was not built with"))
                return future
            if self._views[i] is None:
                self._seen += 1
            self._views[i] = g
        if self._seen == len(self._views):
            self._exchange()
        elif bucket.is_last():
            missing = [n for n, v in zip(self._names, self._views) if v is None]
            self._fail(TernpsError(
                "FAILED_PRECONDITION",
                f"parameters without a gradient this iteration: {missing[:5]} (the ternps hook "
                "needs every parameter's gradient every iteration: a static graph)"))
        return future

    def _exchange(self):
        try:
            self.worker.step(self._views)  # in place, in the buckets' memory
        except TernpsError as e:
            self._fail(e)
            return
        pending = self._pending
        self._reset()
        for future, bucket in pending:
            future.set_result(bucket.buffer())

    def _fail(self, error):
        pending = self._pending
        self._reset()
        for future, _ in pending:
            future.set_exception(error)

    def _reset(self):
        self._views = [None] * len(self._views)
        self._seen = 0
        self._pending = []

    def close(self):
        """Leaves the job (bounded) and releases the connections."""
        self.worker.close()
