#!/usr/bin/env python3
"""PyTorch gloo all-reduce of one gradient per step: the reference for tests/bench/netbench.sh.

Each rank all-reduces float32 buffers totalling --elements values (bucketed like PyTorch DDP, 25 MiB
buckets) per step, after one warm-up step, and prints a JSON line with the step times and the CPU
time of its process.
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world_size", type=int, required=True)
    parser.add_argument("--master", required=True, help="host:port of rank 0's rendezvous")
    parser.add_argument("--elements", type=int, required=True)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bucket_bytes", type=int, default=25 << 20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=args.rank,
                            world_size=args.world_size)
    per_bucket = args.bucket_bytes // 4
    sizes = [per_bucket] * (args.elements // per_bucket)
    if args.elements % per_bucket:
        sizes.append(args.elements % per_bucket)
    generator = torch.Generator().manual_seed(77 + args.rank)
    buckets = [torch.randn(n, generator=generator) * 1e-3 for n in sizes]
    seconds, cpu = [], []
    for step in range(args.steps + 1):
        dist.barrier()
        c0, t0 = cpu_seconds(), time.perf_counter()
        for b in buckets:
            dist.all_reduce(b)
        t1, c1 = time.perf_counter(), cpu_seconds()
        if step > 0:
            seconds.append(t1 - t0)
            cpu.append(c1 - c0)
    dist.destroy_process_group()
    ordered = sorted(seconds)
    print(json.dumps({
        "bench": "gloo_worker", "rank": args.rank, "world_size": args.world_size,
        "elements": args.elements, "steps": args.steps,
        "step_seconds_mean": sum(seconds) / len(seconds),
        "step_seconds_p50": ordered[len(ordered) // 2],
        # A ring all-reduce sends and receives 2(N-1)/N of the gradient per rank.
        "sent_bytes_per_step": 2.0 * (args.world_size - 1) / args.world_size * 4 * args.elements,
        "cpu_seconds_per_step": sum(cpu) / len(cpu),
    }), flush=True)


if __name__ == "__main__":
    main()
