#!/usr/bin/env python3
"""The chaos soak (tests/bench/chaos.sh runs this): 2 durable shards, 4 ternps-worker processes,
and a seeded, shuffled series of faults, N of each kind:

  worker_kill   kill -9 a random running worker; it is started again 1 s later (same rank: it
                joins the running job and recovers the model from the shards)
  shard_kill    kill -9 a shard; it is started again 1 s later with the same port and
                --state_dir (it restores its jobs; the workers reconnect)
  reset         every connection to a shard reset (RST) through its proxy (ternps_fault_proxy)
  black_hole    a shard's proxy forwards nothing for step_timeout + 2 s (connections stay open)

Before it, the same job runs once without faults (same seed) for the reference accuracy. Prints
one JSON line per fault (when, which, the job's step then, how long the fault lasted, and how long
from its start until the job was two steps further) and a summary line; exits 1 unless every worker finished with the same model checksum,
the accuracy is within --max_accuracy_gap of the reference, and every process that lived through
the whole run ended within 10% of its resident memory after warm-up.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

KINDS = ["worker_kill", "shard_kill", "reset", "black_hole"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Proc:
    """A process the soak watches: its resident memory after warm-up and at its last sample."""

    def __init__(self, name, args, log):
        self.name = name
        self.args = args
        self.log = log
        self.popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.started = time.monotonic()
        self.warm_rss = None
        self.last_rss = None

    def sample(self, warmup):
        rss = rss_bytes(self.popen.pid)
        if rss is None or self.popen.poll() is not None:
            return
        if self.warm_rss is None and time.monotonic() - self.started >= warmup:
            self.warm_rss = rss
        if self.warm_rss is not None:
            self.last_rss = rss


class Cluster:
    def __init__(self, bins, work, args, with_proxies):
        self.bins = bins
        self.work = work
        self.args = args
        self.ports = [free_port(), free_port()]
        self.metrics = [free_port(), free_port()]
        self.lock = threading.Lock()
        self.shards = [None, None]
        self.procs = []  # every process started, for the memory check
        for s in range(2):
            self.start_shard(s)
        self.proxies = []
        self.controls = []
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        if with_proxies:
            addresses = []
            for s in range(2):
                proxy = subprocess.Popen([bins["proxy"], f"127.0.0.1:{self.ports[s]}"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                addresses.append(proxy.stdout.readline().strip())
                self.proxies.append(proxy)
        self.addresses = addresses
        self.workers = [None] * 4
        self.finished = [False] * 4
        self.failed = []
        self.restarts = [0] * 4

    def start_shard(self, s):
        log = open(os.path.join(self.work, f"shard{s}.log"), "a")
        args = [self.bins["server"], f"--listen=127.0.0.1:{self.ports[s]}", f"--shard_index={s}",
                "--shard_count=2", f"--state_dir={self.work}/state",
                f"--step_timeout={self.args.step_timeout}s",
                f"--metrics_address=127.0.0.1:{self.metrics[s]}"]
        proc = Proc(f"shard{s}", args, log)
        with self.lock:
            self.shards[s] = proc
            self.procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.ports[s]), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"shard {s} did not start")

    def worker_args(self, rank):
        a = self.args
        return [self.bins["worker"], f"--shards={','.join(self.addresses)}", f"--rank={rank}",
                "--world_size=4", "--job_id=chaos", f"--epochs={a.epochs}",
                f"--snapshot_interval={a.snapshot_interval}", f"--seed={a.seed}", "--quiet",
                "--connect_timeout=120s", "--rpc_timeout=120s",
                f"--summary_file={self.work}/summary{rank}.json"]

    def run_worker(self, rank):
        """Runs rank `rank` until it finishes, starting it again after each kill by the soak."""
        while True:
            log = open(os.path.join(self.work, f"worker{rank}.log"), "a")
            proc = Proc(f"worker{rank}", self.worker_args(rank), log)
            with self.lock:
                self.workers[rank] = proc
                self.procs.append(proc)
            rc = proc.popen.wait()
            if rc == 0:
                with self.lock:
                    self.finished[rank] = True
                return
            if rc == -signal.SIGKILL:
                time.sleep(1.0)  # restarted after a second, as a pod would be
                with self.lock:
                    self.restarts[rank] += 1
                continue
            with self.lock:
                self.failed.append((rank, rc))
            return

    def step(self):
        """The job's step: the lower of the two shards' (None while one cannot be asked)."""
        steps = []
        for s in range(2):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics[s]}/metrics",
                                            timeout=0.5) as r:
                    text = r.read().decode()
                m = re.search(r"^ternps_server_step(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
                if m:
                    steps.append(int(float(m.group(1))))
            except Exception:  # a shard that is down right now
                pass
        return min(steps) if len(steps) == 2 else None

    def stop(self):
        for p in self.proxies:
            try:
                p.stdin.close()
            except OSError:
                pass
            p.wait(timeout=10)
        for s in range(2):
            if self.shards[s] is not None and self.shards[s].popen.poll() is None:
                self.shards[s].popen.send_signal(signal.SIGTERM)
                self.shards[s].popen.wait(timeout=30)


def run_job(bins, work, args, faults):
    """One job; with `faults`, the soak. Returns (summaries, timeline, cluster)."""
    os.makedirs(work, exist_ok=True)
    cluster = Cluster(bins, work, args, with_proxies=faults is not None)
    threads = [threading.Thread(target=cluster.run_worker, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    timeline = []
    done = threading.Event()

    def monitor():
        while not done.is_set():
            with cluster.lock:
                procs = list(cluster.procs)
            for p in procs:
                p.sample(args.warmup)
            done.wait(1.0)

    mon = threading.Thread(target=monitor)
    mon.start()
    # Fashion-MNIST: 60000 training images, batches of 32 per worker, 4 workers.
    total_steps = args.epochs * (60000 // (32 * 4))
    rng = random.Random(args.seed)
    start = time.monotonic()
    if faults is not None:
        time.sleep(args.warmup)
        for kind in faults:
            with cluster.lock:
                if all(cluster.finished) or cluster.failed:
                    break
            step = cluster.step()
            for _ in range(50):  # a shard restarted by the last fault may still be starting
                if step is not None:
                    break
                time.sleep(0.1)
                step = cluster.step()
            if step is not None and step > 0.9 * total_steps:
                break  # a worker killed after its peers finished could not rejoin
            t0 = time.monotonic()
            target = inject(cluster, kind, rng, args)
            lasted = time.monotonic() - t0
            resumed = wait_progress(cluster, step, args, t0)
            timeline.append({"fault": kind, "target": target, "at_s": round(t0 - start, 1),
                             "step": step, "fault_lasted_s": round(lasted, 2),
                             "resumed_after_s": resumed})
            print(json.dumps({"chaos_fault": len(timeline), **timeline[-1]}), flush=True)
            time.sleep(args.interval)
    for t in threads:
        t.join()
    done.set()
    mon.join()
    cluster.stop()
    summaries = []
    for r in range(4):
        path = os.path.join(work, f"summary{r}.json")
        summaries.append(json.load(open(path)) if os.path.exists(path) else None)
    return summaries, timeline, cluster


def inject(cluster, kind, rng, args):
    if kind == "worker_kill":
        with cluster.lock:
            live = [r for r in range(4) if not cluster.finished[r] and cluster.workers[r]]
        rank = rng.choice(live)
        cluster.workers[rank].popen.send_signal(signal.SIGKILL)
        return f"worker {rank}"
    s = rng.randrange(2)
    if kind == "shard_kill":
        cluster.shards[s].popen.send_signal(signal.SIGKILL)
        cluster.shards[s].popen.wait()
        time.sleep(1.0)
        cluster.start_shard(s)
    elif kind == "reset":
        cluster.proxies[s].stdin.write("reset\n")
        cluster.proxies[s].stdin.flush()
    else:
        cluster.proxies[s].stdin.write("hole\n")
        cluster.proxies[s].stdin.flush()
        time.sleep(args.step_timeout + 2)  # the fault's length
        cluster.proxies[s].stdin.write("unhole\n")
        cluster.proxies[s].stdin.flush()
    return f"shard {s}"


def wait_progress(cluster, step, args, t0):
    """Seconds from `t0` (the fault) until the job is two steps past `step` (None if it never
    got there)."""
    while time.monotonic() - t0 < 10 * args.step_timeout + 120:
        now = cluster.step()
        if step is None or (now is not None and now >= step + 2):
            return round(time.monotonic() - t0, 2)
        with cluster.lock:
            if all(cluster.finished) or cluster.failed:
                return None
        time.sleep(0.1)
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build-dir", default=os.path.join(os.path.dirname(__file__), "../../build"))
    p.add_argument("--faults-per-kind", type=int, default=10)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--step-timeout", dest="step_timeout", type=int, default=5)
    p.add_argument("--snapshot-interval", dest="snapshot_interval", type=int, default=50)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between faults")
    p.add_argument("--warmup", type=float, default=8.0)
    p.add_argument("--max-accuracy-gap", dest="max_gap", type=float, default=0.005)
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the logs (printed at the end)")
    args = p.parse_args()
    bin_dir = os.path.abspath(os.path.join(args.build_dir, "bin"))
    bins = {"server": f"{bin_dir}/ternps-server", "worker": f"{bin_dir}/ternps-worker",
            "proxy": f"{bin_dir}/ternps_fault_proxy"}
    for b in bins.values():
        if not os.access(b, os.X_OK):
            sys.exit(f"chaos: {b} missing: build first")
    work = tempfile.mkdtemp(prefix="ternps-chaos-")
    ok = True
    try:
        reference = None
        if not args.skip_reference:
            ref, _, _ = run_job(bins, os.path.join(work, "reference"), args, None)
            reference = ref[0]["test_accuracy"] if ref[0] else None
            print(json.dumps({"chaos_reference": {"test_accuracy": reference,
                                                  "model_checksum": ref[0] and
                                                  ref[0]["model_checksum"]}}), flush=True)
        faults = [k for k in KINDS for _ in range(args.faults_per_kind)]
        random.Random(args.seed).shuffle(faults)
        summaries, timeline, cluster = run_job(bins, os.path.join(work, "chaos"), args, faults)
        checksums = {s["model_checksum"] for s in summaries if s}
        accuracy = [s["test_accuracy"] for s in summaries if s]
        # A process killed by the soak ended early: only the ones that lived to the end count.
        survivors = [{"process": q.name, "warm_rss": q.warm_rss, "end_rss": q.last_rss,
                      "ratio": round(q.last_rss / q.warm_rss, 3)}
                     for q in cluster.procs
                     if q.warm_rss and q.last_rss and q.popen.returncode in (0, -signal.SIGTERM)]
        by_kind = {k: [t["resumed_after_s"] for t in timeline if t["fault"] == k] for k in KINDS}
        result = {
            "chaos_summary": True,
            "faults": len(timeline),
            "faults_by_kind": {k: len(v) for k, v in by_kind.items()},
            "resumed_after_s_by_kind": by_kind,
            "worker_restarts": cluster.restarts,
            "failed_workers": cluster.failed,
            "finished": sum(1 for s in summaries if s),
            "replicas_identical": len(checksums) == 1 and all(summaries),
            "test_accuracy": accuracy[0] if accuracy else None,
            "reference_accuracy": reference,
            "memory": survivors,
        }
        ok = (result["replicas_identical"] and not cluster.failed and
              all(m["ratio"] <= 1.10 for m in survivors) and
              (reference is None or abs(accuracy[0] - reference) <= args.max_gap))
        result["ok"] = ok
        print(json.dumps(result), flush=True)
    finally:
        if args.keep:
            print(f"chaos: logs in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
