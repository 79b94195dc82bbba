#!/usr/bin/env python3
"""Fashion-MNIST with PyTorch DistributedDataParallel, gradients averaged through ternps shards
with TernGrad (ternps.ddp.TernGradHook), or with DDP's default all-reduce (no --shards).

One process per rank:

    python3 ddp_fashion_mnist.py --rank 0 --world_size 2 --shards 127.0.0.1:7070 --job_id j &
    python3 ddp_fashion_mnist.py --rank 1 --world_size 2 --shards 127.0.0.1:7070 --job_id j

Under torchrun (rank, world size and rendezvous from its environment; with --standalone or
--rdzv_id it sets a real TORCHELASTIC_RUN_ID, which becomes the job id):

    TERNPS_SHARDS=127.0.0.1:7070 torchrun --standalone --nproc_per_node 2 ddp_fashion_mnist.py

(Debian's torchrun, torch 1.13 under Python 3.11, crashes unless given --redirects=2 --tee=2.)

Each rank trains on its own slice of the training set (a seeded shuffle per epoch), a
784-HIDDEN-10 MLP (--model mlp) or a small CNN (--model cnn: two 5x5 convolutions with 16 and
32 channels, max-pooling, a 512-10 linear layer) with SGD + momentum, the same initial model on
every rank (DDP broadcasts rank 0's). --curve_file writes the loss of every step and the test
accuracy of every epoch (JSON lines). Rank 0 prints progress per epoch; every rank writes a JSON summary (--summary_file)
whose last line on stdout is the same: test accuracy, mean step time, model checksum.
"""

import argparse
import gzip
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

DATA_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def load(data_dir, kind):
    with gzip.open(os.path.join(data_dir, f"{kind}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(data_dir, f"{kind}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return (torch.from_numpy(images.astype(np.float32) / 255.0),
            torch.from_numpy(labels.astype(np.int64)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rank", type=int, default=int(os.environ.get("RANK", -1)),
                    help="default: $RANK (torchrun)")
    ap.add_argument("--world_size", type=int, default=int(os.environ.get("WORLD_SIZE", 0)),
                    help="default: $WORLD_SIZE (torchrun)")
    ap.add_argument("--shards", default=os.environ.get("TERNPS_SHARDS", ""),
                    help="ternps shard addresses, comma-separated (default: $TERNPS_SHARDS); "
                    "empty: DDP's all-reduce")
    ap.add_argument("--job_id", default=None,
                    help="the ternps job id (default: torchrun's TORCHELASTIC_RUN_ID)")
    ap.add_argument("--max_steps", type=int, default=0, help="stop after this many steps")
    ap.add_argument("--master", default="",
                    help="host:port of the gloo process group's rendezvous (rank 0 listens); "
                    "default: torchrun's MASTER_ADDR:MASTER_PORT, else 127.0.0.1:29500")
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--curve_file", default="", help="per-step loss, per-epoch accuracy")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch_size", type=int, default=32, help="per rank")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--codec", default="terngrad", choices=["terngrad", "fp32"])
    ap.add_argument("--data_dir", default=DATA_DIR)
    ap.add_argument("--summary_file", default="")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--tls_ca", default="", help="PEM CA of the shards' certificates (TLS)")
    ap.add_argument("--tls_cert", default="", help="PEM client certificate (mutual TLS)")
    ap.add_argument("--tls_key", default="", help="PEM key of --tls_cert")
    ap.add_argument("--token_file", default="", help="file holding the job's token")
    args = ap.parse_args()
    if args.rank < 0 or args.world_size < 1:
        ap.error("--rank and --world_size are required outside torchrun")
    if not args.master:
        args.master = (f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
                       if "MASTER_ADDR" in os.environ else "127.0.0.1:29500")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dist.init_process_group("gloo", init_method=f"tcp://{args.master}", rank=args.rank,
                            world_size=args.world_size)
    train_x, train_y = load(args.data_dir, "train")
    test_x, test_y = load(args.data_dir, "t10k")
    if args.model == "cnn":
        nn = torch.nn
        net = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 16, 5), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Flatten(), nn.Linear(512, 10))
    else:
        net = torch.nn.Sequential(torch.nn.Linear(784, args.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(args.hidden, 10))
    model = torch.nn.parallel.DistributedDataParallel(net)
    hook = None
    if args.shards:
        import ternps.ddp
        hook = ternps.ddp.register(model, shards=args.shards.split(","), job_id=args.job_id,
                                   codec=args.codec, seed=args.seed, threads=1,
                                   tls_ca_file=args.tls_ca, tls_cert_file=args.tls_cert,
                                   tls_key_file=args.tls_key, token_file=args.token_file)
    curve = open(args.curve_file, "w") if args.curve_file else None
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)

    steps_per_epoch = len(train_x) // (args.world_size * args.batch_size)
    step_seconds = 0.0
    steps = 0
    sent = received = dense = 0
    start = time.monotonic()
    for epoch in range(1, args.epochs + 1):
        g = torch.Generator().manual_seed(args.seed * 1000003 + epoch)
        order = torch.randperm(len(train_x), generator=g)
        mine = order[args.rank::args.world_size]
        loss_sum = 0.0
        epoch_steps = 0
        for s in range(steps_per_epoch):
            if args.max_steps and steps >= args.max_steps:
                break
            idx = mine[s * args.batch_size:(s + 1) * args.batch_size]
            t0 = time.monotonic()
            opt.zero_grad()
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            loss.backward()  # the hook averages the gradients here
            opt.step()
            step_seconds += time.monotonic() - t0
            steps += 1
            if hook is not None:
                stats = hook.worker.last_step()
                sent += stats["sent_bytes"]
                received += stats["received_bytes"]
                dense += stats["dense_bytes"]
            loss_sum += loss.item()
            epoch_steps += 1
            if curve is not None:
                curve.write(json.dumps({"step": steps, "loss": round(loss.item(), 5)}) + "\n")
        with torch.no_grad():
            accuracy = (net(test_x).argmax(1) == test_y).float().mean().item()
        if curve is not None:
            curve.write(json.dumps({"epoch": epoch, "test_accuracy": round(accuracy, 5)}) + "\n")
        if args.rank == 0:
            print(f"epoch {epoch}/{args.epochs}  train_loss {loss_sum / max(1, epoch_steps):.4f}  "
                  f"test_accuracy {accuracy:.4f}  step {1000 * step_seconds / steps:.2f} ms  "
                  f"{time.monotonic() - start:.0f} s", flush=True)
    checksum = hashlib.blake2b(digest_size=8)
    for p in net.parameters():
        checksum.update(p.detach().numpy().tobytes())
    if curve is not None:
        curve.close()
    summary = {"summary": "ternps-ddp", "rank": args.rank, "world_size": args.world_size,
               "model": args.model,
               "exchange": f"ternps {args.codec}" if args.shards else "gloo all-reduce",
               "epochs": args.epochs, "steps": steps, "test_accuracy": round(accuracy, 4),
               "mean_step_ms": round(1000 * step_seconds / steps, 3),
               "seconds": round(time.monotonic() - start, 1),
               "model_checksum": checksum.hexdigest()}
    if hook is not None and sent and received:
        summary.update({"uplink_bytes_per_step": sent // steps,
                        "downlink_bytes_per_step": received // steps,
                        "dense_bytes_per_step": dense // steps,
                        "uplink_ratio": round(dense / sent, 2),
                        "downlink_ratio": round(dense / received, 2),
                        "compression_ratio": round(2 * dense / (sent + received), 2)})
    if hook is not None:
        hook.worker.leave()
        hook.close()
    dist.destroy_process_group()
    line = json.dumps(summary)
    if args.summary_file:
        with open(args.summary_file, "w") as f:
            f.write(line + "\n")
    print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
