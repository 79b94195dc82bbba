#!/usr/bin/env python3
"""PyTorch DDP steps of a synthetic model for tests/bench/netbench.sh: the cost of the ternps
DDP communication hook (ternps.ddp, --shards) against DDP's own gloo all-reduce (no --shards)
on the same links.

The model's parameters total --elements floats (1M-element tensors plus the remainder, and 16
small 512-element tensors that stay FP32 in ternps); its loss is sum(p * c) with a fixed random
c per parameter, so the gradients are c and the backward pass costs one pass over the
parameters. Each rank times --steps steps (after one warm-up step) of zero_grad, forward and
backward (DDP's exchange happens inside backward), and as many under DDP's no_sync() (the same
work without any exchange); it prints one JSON line: step time p50 and mean, the no-exchange
step time, bytes each way and the CPU time of its process per step.
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


class Synthetic(torch.nn.Module):
    def __init__(self, elements):
        super().__init__()
        sizes = [1 << 20] * (elements // (1 << 20))
        if elements % (1 << 20):
            sizes.append(elements % (1 << 20))
        sizes += [512] * 16
        g = torch.Generator().manual_seed(5)
        self.params = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.randn(n, generator=g) * 1e-2) for n in sizes])
        self.c = [torch.randn(n, generator=g) * 1e-3 for n in sizes]

    def forward(self):
        return sum((p * c).sum() for p, c in zip(self.params, self.c))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, required=True)
    ap.add_argument("--world_size", type=int, required=True)
    ap.add_argument("--master", required=True, help="host:port of rank 0's rendezvous")
    ap.add_argument("--elements", type=int, required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--shards", default="", help="ternps shards; empty: DDP's gloo all-reduce")
    ap.add_argument("--job_id", default="ddp-bench")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=args.rank,
                            world_size=args.world_size)
    net = Synthetic(args.elements)
    model = torch.nn.parallel.DistributedDataParallel(net)
    hook = None
    if args.shards:
        import ternps.ddp
        hook = ternps.ddp.TernGradHook(net, job_id=args.job_id, rank=args.rank,
                                       world_size=args.world_size,
                                       shards=args.shards.split(","), threads=1)
        hook.register(model)

    def one_step():
        model.zero_grad(set_to_none=False)
        model().backward()

    seconds, cpu, local = [], [], []
    sent = received = 0
    for step in range(args.steps + 1):
        dist.barrier()
        c0, t0 = cpu_seconds(), time.perf_counter()
        one_step()
        t1, c1 = time.perf_counter(), cpu_seconds()
        if step > 0:
            seconds.append(t1 - t0)
            cpu.append(c1 - c0)
            if hook is not None:
                stats = hook.worker.last_step()
                sent += stats["sent_bytes"]
                received += stats["received_bytes"]
    for _ in range(args.steps):
        t0 = time.perf_counter()
        with model.no_sync():
            one_step()
        local.append(time.perf_counter() - t0)
    if hook is not None:
        hook.worker.leave()
        hook.close()
    dist.destroy_process_group()
    ordered = sorted(seconds)
    row = {"bench": "ddp_worker", "rank": args.rank, "world_size": args.world_size,
           "exchange": "ternps terngrad" if args.shards else "gloo all-reduce",
           "elements": args.elements, "steps": args.steps,
           "step_seconds_mean": sum(seconds) / len(seconds),
           "step_seconds_p50": ordered[len(ordered) // 2],
           "no_exchange_step_seconds_mean": sum(local) / len(local),
           "cpu_seconds_per_step": sum(cpu) / len(cpu)}
    if hook is not None:
        row["sent_bytes_per_step"] = sent / args.steps
        row["received_bytes_per_step"] = received / args.steps
    else:  # a ring all-reduce sends and receives 2(N-1)/N of the gradient per rank
        row["sent_bytes_per_step"] = 2.0 * (args.world_size - 1) / args.world_size * 4 * args.elements
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
