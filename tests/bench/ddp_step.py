#!/usr/bin/env python3
"""PyTorch DDP steps for tests/bench/netbench.sh: the ternps DDP communication hook
(ternps.ddp, --shards) against DDP's own gloo all-reduce (no --shards) on the same links, with
a model of resnet50's real parameter shapes (161 tensors, 64 to 2.4M elements).

The model is a chain of one "layer" per parameter tensor, in resnet50's order. A layer's
forward passes its input on; its backward hands autograd a fixed random gradient and, with --backward_seconds B, sleeps its share of B (shares proportional to
the tensor's size), as an accelerator's backward leaves the CPU free. The chain makes autograd
compute the gradients in reverse order, layer by layer, as a real backward pass does, so DDP's
buckets fill, and its hook is called, while later layers are still "computing".

Each rank runs, after one first step (DDP's bucket rebuild happens there; timed apart):
  --steps steps without backward time (the exchange alone),
  --steps steps with backward time B (exchange and backward together), and
  --steps steps with backward time B under DDP's no_sync() (the backward alone);
and prints one JSON line with the p50 and mean of each, the first step's time, bytes each way
and the process's CPU time per step. Overlap: with B, a step that overlaps fully takes
max(B, exchange alone); one that does not, B + exchange alone.
"""
import argparse
import json
import resource
import time

import torch
import torch.distributed as dist


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def resnet50_shapes():
    """(name, elements) of torchvision's resnet50 parameters, in named_parameters() order."""
    t = []

    def conv(name, cin, cout, k):
        t.append((name + ".weight", cin * cout * k * k))

    def norm(name, c):
        t.extend([(name + ".weight", c), (name + ".bias", c)])

    conv("conv1", 3, 64, 7)
    norm("bn1", 64)
    cin = 64
    for stage, blocks in enumerate([3, 4, 6, 3]):
        width = 64 << stage
        for b in range(blocks):
            p = f"layer{stage + 1}.{b}"
            conv(p + ".conv1", cin, width, 1)
            norm(p + ".bn1", width)
            conv(p + ".conv2", width, width, 3)
            norm(p + ".bn2", width)
            conv(p + ".conv3", width, 4 * width, 1)
            norm(p + ".bn3", 4 * width)
            if b == 0:
                conv(p + ".downsample.0", cin, 4 * width, 1)
                norm(p + ".downsample.1", 4 * width)
            cin = 4 * width
    t.extend([("fc.weight", 2048 * 1000), ("fc.bias", 1000)])
    return t


class _Layer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, p, c, sleep):
        ctx.c = c
        ctx.sleep = sleep
        return h.clone()

    @staticmethod
    def backward(ctx, grad):
        if ctx.sleep[0] > 0:
            time.sleep(ctx.sleep[0])  # the accelerator computing this layer's gradient
        # The upstream gradient is 1 all along the chain: the layer's gradient is c itself (no
        # CPU spent on it, as when an accelerator computes it).
        return grad, ctx.c, None, None


class Chain(torch.nn.Module):
    def __init__(self, shapes):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.params = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.zeros(n)) for _, n in shapes])
        self.c = [torch.randn(n, generator=g) * 1e-3 for _, n in shapes]
        total = sum(n for _, n in shapes)
        self.share = [n / total for _, n in shapes]
        self.sleeps = [[0.0] for _ in shapes]

    def set_backward_seconds(self, seconds):
        for s, share in zip(self.sleeps, self.share):
            s[0] = seconds * share

    def forward(self):
        h = torch.ones(1, requires_grad=True)
        for p, c, s in zip(self.params, self.c, self.sleeps):
            h = _Layer.apply(h, p, c, s)
        return h.sum()


def summary(values):
    ordered = sorted(values)
    return sum(values) / len(values), ordered[len(ordered) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world_size", type=int, required=True)
    ap.add_argument("--master", required=True, help="host:port of rank 0's rendezvous")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backward_seconds", type=float, default=0.0,
                    help="emulated backward time per step (0: only the exchange is measured)")
    ap.add_argument("--bucket_cap_mb", type=float, default=25.0)
    ap.add_argument("--bucket_view", action="store_true",
                    help="DDP's gradient_as_bucket_view=True (saves two copies per step)")
    ap.add_argument("--threads", type=int, default=2, help="the ternps worker's threads")
    ap.add_argument("--shards", default="", help="ternps shards; empty: DDP's gloo all-reduce")
    ap.add_argument("--job_id", default="ddp-bench")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=args.rank,
                            world_size=args.world_size)
    shapes = resnet50_shapes()
    net = Chain(shapes)
    model = torch.nn.parallel.DistributedDataParallel(
        net, bucket_cap_mb=args.bucket_cap_mb, gradient_as_bucket_view=args.bucket_view)
    hook = None
    if args.shards:
        import ternps.ddp
        hook = ternps.ddp.register(model, shards=args.shards.split(","), job_id=args.job_id,
                                   threads=args.threads)
    totals = {"sent": 0, "received": 0}
    marks = []  # (seconds into the step, elements) per hook call of the step being timed
    if hook is not None:
        on_bucket = hook.on_bucket

        def timed_on_bucket(bucket):
            marks.append((time.perf_counter(), bucket.buffer().numel()))
            return on_bucket(bucket)
        hook.on_bucket = timed_on_bucket

    def one_step(no_sync=False):
        model.zero_grad(set_to_none=False)
        dist.barrier()
        marks.clear()
        c0, t0 = cpu_seconds(), time.perf_counter()
        totals["t0"] = t0
        if no_sync:
            with model.no_sync():
                model().backward()
        else:
            model().backward()
        t1, c1 = time.perf_counter(), cpu_seconds()
        if hook is not None and not no_sync:
            stats = hook.worker.last_step()
            totals["sent"] += stats["sent_bytes"]
            totals["received"] += stats["received_bytes"]
        return t1 - t0, c1 - c0

    first, _ = one_step()
    exchange, cpu = zip(*[one_step() for _ in range(args.steps)])
    timeline_exchange = None
    if hook is not None:
        stats = hook.worker.last_step()
        timeline_exchange = {
            "buckets": [(round(t - totals["t0"], 4), n) for t, n in marks],
            "step_seconds": round(stats["seconds"], 4),
            "statistics_end": round(stats["statistics_end"], 4),
            "calls": [(c["shard"], round(c["encoded"], 4), round(c["answered"], 4),
                       round(c["decoded"], 4)) for c in stats["calls"]]}
    row = {"bench": "ddp_worker", "rank": args.rank, "world_size": args.world_size,
           "exchange": "ternps terngrad" if args.shards else "gloo all-reduce",
           "model": "resnet50 shapes", "tensors": len(shapes),
           "elements": sum(n for _, n in shapes), "bucket_cap_mb": args.bucket_cap_mb,
           "bucket_view": args.bucket_view, "threads": args.threads,
           "steps": args.steps, "first_step_seconds": first}
    row["step_seconds_mean"], row["step_seconds_p50"] = summary(exchange)
    row["cpu_seconds_per_step"] = sum(cpu) / len(cpu)
    if hook is not None:
        row["sent_bytes_per_step"] = totals["sent"] / (args.steps + 1)
        row["received_bytes_per_step"] = totals["received"] / (args.steps + 1)
    else:  # a ring all-reduce sends and receives 2(N-1)/N of the gradient per rank
        row["sent_bytes_per_step"] = (2.0 * (args.world_size - 1) / args.world_size * 4 *
                                      row["elements"])
    if timeline_exchange is not None:
        row["timeline_exchange"] = timeline_exchange
    if args.backward_seconds > 0:
        net.set_backward_seconds(args.backward_seconds)
        both = [one_step()[0] for _ in range(args.steps)]
        if hook is not None:
            # The last of those steps: when each bucket was handed over, and when the calls
            # were sent and answered (seconds since the step's first bucket).
            stats = hook.worker.last_step()
            row["timeline"] = {
                "buckets": [(round(t - totals["t0"], 4), n) for t, n in marks],
                "step_seconds": round(stats["seconds"], 4),
                "calls": [(c["shard"], round(c["encoded"], 4), round(c["answered"], 4),
                           round(c["decoded"], 4)) for c in stats["calls"]]}
        alone = [one_step(no_sync=True)[0] for _ in range(args.steps)]
        row["backward_seconds"] = args.backward_seconds
        row["with_backward_step_seconds_mean"], row["with_backward_step_seconds_p50"] = \
            summary(both)
        row["backward_alone_seconds_mean"], row["backward_alone_seconds_p50"] = summary(alone)
        floor = max(row["backward_alone_seconds_p50"], row["step_seconds_p50"])
        row["overlap_ratio_p50"] = row["with_backward_step_seconds_p50"] / floor
        row["no_overlap_seconds_p50"] = (row["backward_alone_seconds_p50"] +
                                         row["step_seconds_p50"])
    if hook is not None:
        hook.close()
    dist.destroy_process_group()
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
