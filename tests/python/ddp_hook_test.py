"""The DDP hook's cases, against a real ternps-server (ctest label `python`).

Exactness: with the fp32 codec and 2 workers, the shard's average (a + b) / 2 has the same bits
as DDP's all-reduce (a / 2 + b / 2), so a model trained through the hook must end bit-identical
to one trained through gloo, case by case:
- many buckets (bucket_cap_mb tiny) and DDP's bucket rebuild after the first iteration;
- no_sync() accumulation for one iteration out of three;
- static_graph=True;
- find_unused_parameters=True with a layer that takes no part in the loss;
- gradient_as_bucket_view=True.
Then: a bucket holding a parameter the hook was not built with fails every future of the
iteration (backward raises, nothing hangs) and the next iteration is refused with a clear
error; float16 and bfloat16 buckets (a bucket stand-in: Debian's CPU torch cannot run a half
precision model in DDP over gloo) come back as the float32 average in their dtype; register()
finds the rank and world size itself and refuses to guess a job id under plain torchrun.

Usage: ddp_hook_test.py BIN_DIR   (PYTHONPATH must reach the built package: build/python)
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN_DIR = sys.argv.pop(1) if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else \
    "build/bin"
WORLD = 2
CASES = ["buckets", "no_sync", "static_graph", "find_unused", "bucket_view"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the child: one DDP rank running every case -------------------------------------------------

def child(rank, master, shard, out):
    import hashlib
    import torch
    import torch.distributed as dist
    import ternps.ddp

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://{master}", rank=rank,
                            world_size=WORLD)
    results = {}
    for case in CASES:
        torch.manual_seed(5)

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Linear(20, 64)
                self.b = torch.nn.Linear(64, 64)
                self.unused = torch.nn.Linear(64, 64)
                self.c = torch.nn.Linear(64, 10)

            def forward(self, x):
                h = torch.relu(self.a(x))
                h = torch.relu(self.b(h))
                if case != "find_unused":
                    h = h + 0.0 * self.unused(h)  # used (with a zero contribution)
                return self.c(h)

        net = Net()
        kwargs = {"bucket_cap_mb": 0.004}  # ~1000 floats: several buckets
        if case == "static_graph":
            kwargs["static_graph"] = True
        if case == "find_unused":
            kwargs["find_unused_parameters"] = True
        if case == "bucket_view":
            kwargs["gradient_as_bucket_view"] = True
        model = torch.nn.parallel.DistributedDataParallel(net, **kwargs)
        hook = None
        if shard:
            hook = ternps.ddp.register(model, shards=[shard], job_id=f"hook-{case}",
                                       codec="fp32", threads=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(100 + rank)
        for it in range(6):
            x = torch.randn(16, 20, generator=g)
            y = torch.randint(0, 10, (16,), generator=g)
            if case == "no_sync" and it % 3 == 1:
                with model.no_sync():
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                continue
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        steps = None
        if hook is not None:
            steps = hook.worker.last_step()["step"]
            hook.close()
        digest = hashlib.blake2b(digest_size=8)
        for p in net.parameters():
            digest.update(p.detach().numpy().tobytes())
        results[case] = digest.hexdigest()
        if hook is not None:
            results[case + "_steps"] = steps
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(results, f)


# --- the tests ----------------------------------------------------------------------------------

class FlatBucket:
    """What DDP hands a hook (the torch.distributed.GradBucket methods the hook uses): the
    parameters' current gradients, copied into one flat buffer that gradients() views."""

    def __init__(self, params):
        import torch
        self.params = params
        self.buf = torch.cat([p.grad.reshape(-1) for p in params])

    def buffer(self):
        return self.buf

    def parameters(self):
        return self.params

    def gradients(self):
        out, at = [], 0
        for p in self.params:
            out.append(self.buf[at:at + p.numel()].view_as(p))
            at += p.numel()
        return out


class Shard:
    def __init__(self, directory):
        port_file = os.path.join(directory, "port")
        self.log = open(os.path.join(directory, "shard.log"), "w")
        self.proc = subprocess.Popen([os.path.join(BIN_DIR, "ternps-server"),
                                      "--listen=127.0.0.1:0", f"--port_file={port_file}",
                                      "--quiet"], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if self.proc.poll() is not None:
                raise RuntimeError("ternps-server exited")
            if time.monotonic() > deadline:
                raise RuntimeError("ternps-server did not start")
            time.sleep(0.01)  # waiting for the port file, which appears once it serves
        with open(port_file) as f:
            self.address = "127.0.0.1:" + f.read().strip()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class DdpHookTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.shard = Shard(cls.dir.name)

    @classmethod
    def tearDownClass(cls):
        cls.shard.stop()
        cls.dir.cleanup()

    def run_ranks(self, name, shard):
        master = f"127.0.0.1:{free_port()}"
        procs = []
        for rank in range(WORLD):
            out = os.path.join(self.dir.name, f"{name}{rank}.json")
            procs.append((out, subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--child", str(rank), master,
                 shard, out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        results = []
        for rank, (out, p) in enumerate(procs):
            text, _ = p.communicate(timeout=600)
            self.assertEqual(p.returncode, 0, f"{name} rank {rank}:\n{text}")
            with open(out) as f:
                results.append(json.load(f))
        self.assertEqual(results[0], results[1], f"{name}: the replicas differ")
        return results[0]

    def test_every_ddp_mode_ends_bit_identical_to_the_all_reduce(self):
        gloo = self.run_ranks("gloo", "")
        hooked = self.run_ranks("hook", self.shard.address)
        for case in CASES:
            with self.subTest(case=case):
                self.assertEqual(hooked[case], gloo[case], f"{case}: the hook's model differs")
        # no_sync: 4 synchronized iterations out of 6; the others 6.
        self.assertEqual(hooked["no_sync_steps"], 3)  # last_step()["step"] is 0-based
        self.assertEqual(hooked["buckets_steps"], 5)

    def test_a_bad_bucket_fails_every_future_and_the_next_iteration_is_refused(self):
        import torch
        import ternps
        import ternps.ddp

        net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        stranger = torch.nn.Parameter(torch.ones(3))
        for p in list(net.parameters()) + [stranger]:
            p.grad = torch.ones_like(p)
        # world_size 2 and no peer: the first bucket cannot complete before the second fails.
        hook = ternps.ddp.TernGradHook(net, job_id="bad-bucket", rank=0, world_size=2,
                                       shards=[self.shard.address], codec="fp32", threads=1)
        params = list(net.parameters())
        first = hook.on_bucket(FlatBucket(params[2:]))      # fine on its own
        second = hook.on_bucket(FlatBucket([stranger]))    # unknown: the iteration fails
        with self.assertRaises(Exception) as e:
            first.wait()
        self.assertIn("not marked ready", str(e.exception))
        with self.assertRaises(Exception) as e:
            second.wait()
        self.assertIn("not built with", str(e.exception))
        third = hook.on_bucket(FlatBucket(params))
        with self.assertRaises(Exception) as e:
            third.wait()
        self.assertIn("missed averages", str(e.exception))
        hook.close()

    def test_half_precision_buckets_are_averaged_in_float32_and_written_back(self):
        import torch
        import ternps.ddp

        for dtype in (torch.float16, torch.bfloat16):
            with self.subTest(dtype=str(dtype)):
                grads, results, errors = [], [None, None], []

                class Bucket:
                    def __init__(self, p, buf):
                        self.p, self.buf = p, buf

                    def buffer(self):
                        return self.buf

                    def parameters(self):
                        return [self.p]

                    def gradients(self):
                        return [self.buf.view_as(self.p)]

                def run(rank):
                    try:
                        torch.manual_seed(rank)
                        p = torch.nn.Parameter(torch.zeros(5000))
                        buf = (torch.randn(5000) * 0.01).to(dtype)
                        grads.append((rank, buf.clone()))
                        hook = ternps.ddp.TernGradHook(
                            torch.nn.ParameterList([p]), job_id=f"half-{dtype}", rank=rank,
                            world_size=2, shards=[self.shard.address], codec="fp32",
                            threads=1)
                        fut = hook.on_bucket(Bucket(p, buf))
                        results[rank] = fut.wait()
                        hook.close()
                    except Exception as e:  # reported below
                        errors.append(e)

                threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                self.assertEqual(errors, [])
                by_rank = dict(grads)
                expected = ((by_rank[0].float() + by_rank[1].float()) / 2).to(dtype)
                for rank in range(2):
                    self.assertEqual(results[rank].dtype, dtype)
                    self.assertTrue(torch.equal(results[rank], expected),
                                    f"rank {rank}: not the float32 average in {dtype}")

    def test_a_worker_restarted_into_the_job_recovers_its_peers_model(self):
        """Two ranks (threads, each a hook over its own replica, buckets handed over as DDP
        would), SGD with momentum, snapshot_interval 3. Rank 1 leaves after 4 steps; a new rank
        1 (a restarted process: the model made afresh with the job's seed) joins the running job,
        calls hook.recover() and trains on. Both must end with the same parameters and momentum
        buffers, bit for bit."""
        import torch
        import ternps.ddp

        steps = 10
        results, errors = {}, []
        rejoined = threading.Event()
        common = dict(job_id="recover", world_size=2, shards=[self.shard.address],
                      codec="terngrad", snapshot_interval=3, threads=1, min_compress_elements=64)

        def replica():
            net = torch.nn.Sequential(torch.nn.Linear(30, 40), torch.nn.Tanh(),
                                      torch.nn.Linear(40, 5))
            # The job's seed: every process makes the same initial model (a generator of its
            # own: the threads must not share torch's global one).
            g = torch.Generator().manual_seed(11)
            with torch.no_grad():
                for p in net.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
            return net, opt

        def train(rank, hook, net, opt, until):
            params = list(net.parameters())
            while hook.worker.step_index < until:
                step = hook.worker.step_index
                g = torch.Generator().manual_seed(1000 * rank + step)  # data of (rank, step)
                x = torch.randn(8, 30, generator=g)
                opt.zero_grad()
                net(x).square().mean().backward()
                bucket = FlatBucket(params)
                hook.on_bucket(bucket).wait()
                for p, avg in zip(params, bucket.gradients()):
                    p.grad.copy_(avg)
                opt.step()
                if rank == 0:
                    results.setdefault("history", {})[step + 1] = state(net, opt)
                if rank == 0 and step == 5:
                    rejoined.wait(60)  # rank 0 waits for the new rank 1 to join

        def state(net, opt):
            return [p.detach().clone() for p in net.parameters()] + [
                opt.state[p]["momentum_buffer"].clone() for p in net.parameters()]

        def rank0():
            try:
                net, opt = replica()
                hook = ternps.ddp.TernGradHook(net, optimizer=opt, rank=0, **common)
                train(0, hook, net, opt, steps)
                results[0] = state(net, opt)
                hook.close()
            except Exception as e:  # reported below
                errors.append(e)

        def rank1():
            try:
                net, opt = replica()
                hook = ternps.ddp.TernGradHook(net, optimizer=opt, rank=1, **common)
                train(1, hook, net, opt, 4)
                hook.close()  # leaves: rank 0 goes on alone
                net, opt = replica()  # a restarted process
                hook = ternps.ddp.TernGradHook(net, optimizer=opt, rank=1, **common)
                rejoined.set()
                results["joined_at"] = hook.worker.step_index
                hook.recover()
                results["recovered"] = state(net, opt)
                train(1, hook, net, opt, steps)
                results[1] = state(net, opt)
                hook.close()
            except Exception as e:  # reported below
                errors.append(e)
                rejoined.set()

        threads = [threading.Thread(target=f) for f in (rank0, rank1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        self.assertGreaterEqual(results["joined_at"], 4, "the new rank 1 joined a running job")
        at = results["joined_at"]
        for i, (a, b) in enumerate(zip(results["history"][at], results["recovered"])):
            self.assertTrue(torch.equal(a, b), f"state tensor {i} differs right after recovery "
                            f"to step {at}: max diff {(a - b).abs().max()}")
        for i, (a, b) in enumerate(zip(results[0], results[1])):
            self.assertTrue(torch.equal(a, b), f"state tensor {i} differs after recovery")

    def test_register_needs_a_real_job_id_under_plain_torchrun(self):
        import ternps.ddp
        os.environ.pop("TERNPS_SHARDS", None)

        class Model:
            process_group = None

        os.environ["TORCHELASTIC_RUN_ID"] = "none"
        try:
            with self.assertRaises(ValueError) as e:
                ternps.ddp.register(Model(), shards=["127.0.0.1:1"])
            self.assertIn("job_id", str(e.exception))
        finally:
            del os.environ["TORCHELASTIC_RUN_ID"]
        with self.assertRaises(ValueError) as e:
            ternps.ddp.register(Model(), job_id="x")
        self.assertIn("TERNPS_SHARDS", str(e.exception))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        unittest.main()
