#!/usr/bin/env python3
"""TernGrad against DDP's all-reduce on a small CNN (Fashion-MNIST, 4 DDP processes, same
seeds): test accuracy per epoch and training loss per step for both, drawn to a PNG.

    PYTHONPATH=build/python tests/bench/cnn_curves.py [--epochs 3] [--bin build/bin]
        [--out tests/bench/results]

Runs worker/python/examples/ddp_fashion_mnist.py --model cnn twice: through 2 local ternps
shards (the hook, TernGrad) and with DDP's gloo all-reduce; writes cnn-curves.png and
cnn-curves.jsonl (one summary row per exchange, with the final accuracies and their gap) in
--out. Nothing passes or fails here: the numbers are for reading.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "worker", "python", "examples", "ddp_fashion_mnist.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_shard(bin_dir, directory, index, count):
    port_file = os.path.join(directory, f"port{index}")
    log = open(os.path.join(directory, f"shard{index}.log"), "w")
    proc = subprocess.Popen([os.path.join(bin_dir, "ternps-server"), "--listen=127.0.0.1:0",
                             f"--port_file={port_file}", f"--shard_index={index}",
                             f"--shard_count={count}", "--quiet"], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"shard {index} did not start (see {log.name})")
        time.sleep(0.01)  # waiting for the port file, which appears once it serves
    with open(port_file) as f:
        return proc, "127.0.0.1:" + f.read().strip()


def train(name, shards, args, directory):
    master = f"127.0.0.1:{free_port()}"
    procs = []
    for rank in range(args.workers):
        cmd = [sys.executable, EXAMPLE, f"--rank={rank}", f"--world_size={args.workers}",
               f"--master={master}", "--model=cnn", f"--epochs={args.epochs}",
               f"--seed={args.seed}", f"--lr={args.lr}", f"--job_id=cnn-{name}",
               f"--curve_file={directory}/{name}{rank}.curve",
               f"--summary_file={directory}/{name}{rank}.json"]
        if shards:
            cmd.append(f"--shards={shards}")
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    for rank, p in enumerate(procs):
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{name} rank {rank} failed:\n{out}")
        if rank == 0:
            print(out, end="", file=sys.stderr)
    with open(f"{directory}/{name}0.json") as f:
        summary = json.load(f)
    losses, accuracy = [], []
    with open(f"{directory}/{name}0.curve") as f:
        for line in f:
            row = json.loads(line)
            if "loss" in row:
                losses.append(row["loss"])
            else:
                accuracy.append(row["test_accuracy"])
    return summary, losses, accuracy


def smooth(values, window=25):
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "bench", "results"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        shards = [start_shard(args.bin, directory, i, 2) for i in range(2)]
        try:
            hooked = train("terngrad", ",".join(a for _, a in shards), args, directory)
        finally:
            for proc, _ in shards:
                proc.terminate()
                proc.wait()
        reference = train("allreduce", "", args, directory)
    rows = []
    for name, (summary, _, accuracy) in (("ternps TernGrad hook", hooked),
                                         ("DDP gloo all-reduce", reference)):
        rows.append({"bench": "cnn_curves", "exchange": name, "workers": args.workers,
                     "epochs": args.epochs, "seed": args.seed, "accuracy_per_epoch": accuracy,
                     "test_accuracy": summary["test_accuracy"],
                     "mean_step_ms": summary["mean_step_ms"],
                     "model_checksum": summary["model_checksum"]})
    rows[0]["accuracy_gap_points"] = round(
        100 * (rows[0]["test_accuracy"] - rows[1]["test_accuracy"]), 2)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "cnn-curves.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for (label, color), (_, losses, accuracy) in zip(
            (("ternps TernGrad hook", "tab:red"), ("DDP gloo all-reduce", "tab:blue")),
            (hooked, reference)):
        loss_ax.plot(smooth(losses), label=label, color=color, linewidth=1)
        acc_ax.plot(range(1, len(accuracy) + 1), accuracy, marker="o", label=label,
                    color=color)
    loss_ax.set_xlabel("step (rank 0)")
    loss_ax.set_ylabel("training loss (25-step mean)")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("test accuracy")
    acc_ax.set_xticks(range(1, args.epochs + 1))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Fashion-MNIST CNN, {args.workers} DDP processes, same seeds")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "cnn-curves.png"), dpi=90)


if __name__ == "__main__":
    main()
