"""The ternps Python package against real shards (ctest label `python`).

- A mixed job: a C++ worker (ternps_test_peer, libternps_worker) and a Python worker
  (ternps.Worker) in one job receive identical averages, step by step, for both codecs; the
  FP32 tensor's average is also checked against numpy's (g0 + g1) / 2.
- Torch tensors are stepped in place (no copy): the tensor object holds the average; two
  workers in two threads of one process step together (step() releases the GIL).
- Bad gradient buffers are refused with TernpsError naming the field, before anything is sent.
- The pure-Python client (ternps.client, generated stubs + numpy) in a job with a C++ worker:
  both decode identical averages.

Usage: mixed_job_test.py BIN_DIR   (PYTHONPATH must reach the built package: build/python)
"""

import concurrent.futures
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np
import torch  # tests/run.sh installs python3-torch

import ternps
import ternps.client

BIN_DIR = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
TENSORS = [("w", 20000), ("b", 100)]
STEPS = 4


def gradient(rank, step):
    """What ternps_test_peer steps (see tests/python/cpp_peer.cc), with libm's sin."""
    return [np.array([math.sin(0.37 * i + 1.3 * rank + 0.71 * step + t) * (1.0 + rank)
                      for i in range(n)], dtype=np.float64).astype(np.float32)
            for t, (_, n) in enumerate(TENSORS)]


def digest(arrays):
    """64-bit FNV-1a over the float32 bytes, in order (as ternps_test_peer prints it)."""
    h = 0xcbf29ce484222325
    for a in arrays:
        for byte in a.tobytes():
            h = ((h ^ byte) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


class Shard:
    """A ternps-server on a free loopback port."""

    def __init__(self, workdir, extra=()):
        port_file = os.path.join(workdir, "port")
        if os.path.exists(port_file):
            os.remove(port_file)
        self.log = open(os.path.join(workdir, "shard.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(BIN_DIR, "ternps-server"), "--listen=127.0.0.1:0",
             f"--port_file={port_file}", "--quiet", *extra], stdout=self.log, stderr=self.log)
        def port():
            if not os.path.exists(port_file):
                return ""
            with open(port_file) as f:
                return f.read().strip()

        deadline = time.monotonic() + 30
        while not port():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ternps-server did not start")
            time.sleep(0.01)  # waiting for the port file, which appears once it serves
        self.address = "127.0.0.1:" + port()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class MixedJobTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.shard = Shard(self.dir.name)

    def tearDown(self):
        self.shard.stop()
        self.dir.cleanup()

    def run_mixed(self, codec, job):
        peer = subprocess.Popen(
            [os.path.join(BIN_DIR, "ternps_test_peer"), self.shard.address, "0", "2", job,
             str(STEPS), codec], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        python_digests = []
        with ternps.Worker(job_id=job, rank=1, world_size=2, shards=[self.shard.address],
                           tensors=TENSORS, codec=codec, seed=7, threads=1,
                           connect_timeout=30) as worker:
            for step in range(STEPS):
                mine = gradient(1, step)
                grads = [g.copy() for g in mine]
                worker.step(grads)
                self.assertEqual(worker.step_index, step + 1)
                stats = worker.last_step()
                self.assertEqual(stats["min_contributors"], 2)
                # The FP32 tensor (too small to compress) is the exact float32 average.
                theirs = gradient(0, step)
                np.testing.assert_array_equal(grads[1], (theirs[1] + mine[1]) / np.float32(2))
                self.assertFalse(np.array_equal(grads[0], mine[0]), "w was not averaged")
                python_digests.append(f"step {step} {digest(grads)}")
            worker.leave()
        out, err = peer.communicate(timeout=60)
        self.assertEqual(peer.returncode, 0, err)
        cpp_digests = [l for l in out.splitlines() if l.startswith("step ")]
        self.assertEqual(cpp_digests, python_digests)

    def test_cpp_and_python_workers_receive_identical_averages_terngrad(self):
        self.run_mixed("terngrad", "mixed-terngrad")

    def test_cpp_and_python_workers_receive_identical_averages_fp32(self):
        self.run_mixed("fp32", "mixed-fp32")

    def run_pure_python(self, codec, job):
        peer = subprocess.Popen(
            [os.path.join(BIN_DIR, "ternps_test_peer"), self.shard.address, "0", "2", job,
             str(STEPS), codec], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        client = ternps.client.Client(job_id=job, rank=1, world_size=2,
                                      shards=[self.shard.address], tensors=TENSORS, codec=codec,
                                      seed=7, rpc_timeout=60)
        # The client sent partition_elements 0 and no min_compress_elements ("the default") and
        # plans with what the shard resolved (JoinResponse.settings), not with its own defaults;
        # the digests below match the C++ peer's only if that plan is the shard's.
        resolved = client.settings.codec
        self.assertEqual(resolved.partition_elements, 1 << 20 if codec == "terngrad" else 1 << 18)
        self.assertEqual(resolved.min_compress_elements, 4096)
        self.assertEqual(len(client.partitions),
                         sum(-(-n // resolved.partition_elements) for _, n in TENSORS))
        digests = []
        for step in range(STEPS):
            averages = client.step(gradient(1, step))
            digests.append(f"step {step} {digest(averages)}")
        client.leave()
        out, err = peer.communicate(timeout=60)
        self.assertEqual(peer.returncode, 0, err)
        self.assertEqual([l for l in out.splitlines() if l.startswith("step ")], digests)

    def test_the_pure_python_client_and_a_cpp_worker_receive_identical_averages(self):
        """The client built from the generated stubs alone (its own ternarization and random
        stream, its own INT_SUM decoding) decodes exactly the averages the C++ worker does."""
        self.run_pure_python("terngrad", "pure-terngrad")
        self.run_pure_python("fp32", "pure-fp32")

    def test_workers_that_disagree_on_int_sum_radix_are_refused_naming_the_field(self):
        """Radix-packed averages are a job setting: a later Join asking for the other layout is
        FAILED_PRECONDITION naming codec.int_sum_radix, from either Python client."""
        with ternps.Worker(job_id="radix", rank=0, world_size=2, shards=[self.shard.address],
                           tensors=TENSORS, seed=7, threads=1, connect_timeout=30):
            with self.assertRaises(ternps.TernpsError) as caught:
                ternps.Worker(job_id="radix", rank=1, world_size=2, shards=[self.shard.address],
                              tensors=TENSORS, seed=7, threads=1, connect_timeout=30,
                              int_sum_radix=False)
            self.assertEqual(caught.exception.code, "FAILED_PRECONDITION")
            self.assertIn("codec.int_sum_radix", caught.exception.message)
            with self.assertRaises(ternps.TernpsError) as caught:
                ternps.client.Client(job_id="radix", rank=1, world_size=2,
                                     shards=[self.shard.address], tensors=TENSORS, seed=7,
                                     rpc_timeout=30, int_sum_radix=False)
            self.assertEqual(caught.exception.code, "FAILED_PRECONDITION")
            self.assertIn("codec.int_sum_radix", caught.exception.message)

    def test_torch_tensors_are_stepped_in_place_with_the_gil_released(self):
        """Two Python workers of one job in two threads: each step waits for the other, so
        this finishes only if step() releases the GIL. Rank 1 steps torch tensors, which end
        holding the average in their own memory."""
        common = dict(job_id="torch", world_size=2, shards=[self.shard.address],
                      tensors=TENSORS, codec="fp32", threads=1)
        other = {}

        def rank0():
            with ternps.Worker(rank=0, **common) as worker:
                worker.step([np.full(20000, 1.0, np.float32), np.full(100, 5.0, np.float32)])
                other["step"] = worker.step_index
                worker.leave()

        thread = threading.Thread(target=rank0)
        thread.start()
        with ternps.Worker(rank=1, **common) as worker:
            w = torch.full((200, 100), 3.0)  # any shape: the element count matters
            b = torch.zeros(100, requires_grad=True)
            b.grad = torch.full((100,), 7.0)
            pointers = (w.data_ptr(), b.grad.data_ptr())
            worker.step([w, b.grad])
            worker.leave()
        thread.join(timeout=60)
        self.assertFalse(thread.is_alive())
        self.assertEqual(other.get("step"), 1)
        self.assertEqual((w.data_ptr(), b.grad.data_ptr()), pointers)
        self.assertTrue(bool((w == 2.0).all()), w)
        self.assertTrue(bool((b.grad == 6.0).all()), b.grad)

    def test_bad_buffers_are_refused_naming_the_field(self):
        with ternps.Worker(job_id="bad", rank=0, world_size=1, shards=[self.shard.address],
                           tensors=TENSORS, threads=1) as worker:
            cases = [
                ([np.zeros(20000, np.float64), np.zeros(100, np.float32)],
                 "gradients[0]: dtype float64, expected float32"),
                ([np.zeros(40000, np.float32)[::2], np.zeros(100, np.float32)],
                 "gradients[0]: must be C-contiguous and writable"),
                ([np.zeros(20000, np.float32), np.zeros(99, np.float32)],
                 "gradients[1]: 99 elements"),
                ([np.zeros(20000, np.float32), [0.0] * 100],
                 "gradients[1]: not a numpy array or CPU tensor"),
            ]
            for grads, want in cases:
                with self.assertRaises(ternps.TernpsError) as raised:
                    worker.step(grads)
                self.assertEqual(raised.exception.code, "INVALID_ARGUMENT")
                self.assertIn(want, raised.exception.message)
            self.assertEqual(worker.step_index, 0)
            worker.leave()

    def test_mutual_tls(self):
        """The package's TLS options against a shard that requires client certificates
        (certificates made now by tests/worker/make_certs.sh)."""
        certs = os.path.join(self.dir.name, "certs")
        subprocess.run(["bash", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                             "worker", "make_certs.sh"), certs], check=True)
        f = lambda name: os.path.join(certs, name)
        tls = Shard(self.dir.name, [f"--tls_cert={f('server.pem')}",
                                    f"--tls_key={f('server.key')}",
                                    f"--tls_client_ca={f('ca.pem')}"])
        try:
            with ternps.Worker(job_id="tls", rank=0, world_size=1, shards=[tls.address],
                               tensors=TENSORS, threads=1, tls_ca_file=f("ca.pem"),
                               tls_cert_file=f("client.pem"),
                               tls_key_file=f("client.key")) as worker:
                worker.step([np.ones(20000, np.float32), np.ones(100, np.float32)])
                self.assertEqual(worker.step_index, 1)
                worker.leave()
            with self.assertRaises(ternps.TernpsError) as raised:
                ternps.Worker(job_id="tls2", rank=0, world_size=1, shards=[tls.address],
                              tensors=TENSORS, tls_ca_file=f("ca.pem"), connect_timeout=1)
            self.assertEqual(raised.exception.code, "UNAVAILABLE")
            self.assertIn("refuses this worker's certificate", raised.exception.message)
            # The pure-Python client over the same mutual TLS.
            client = ternps.client.Client(job_id="tls3", rank=0, world_size=1,
                                          shards=[tls.address], tensors=TENSORS,
                                          tls_ca=f("ca.pem"), tls_cert=f("client.pem"),
                                          tls_key=f("client.key"))
            ones = [np.ones(20000, np.float32), np.ones(100, np.float32)]
            averages = client.step(ones)
            np.testing.assert_array_equal(averages[1], ones[1])
            client.leave()
        finally:
            tls.stop()

    def test_job_tokens(self):
        """The package's and the pure-Python client's token_file: a Worker and a Client with
        the job's token train together; without it, or with another, they are refused."""
        def token_file(name, token):
            path = os.path.join(self.dir.name, name)
            with open(path, "w") as f:
                f.write(token + "\n")
            return path
        good = token_file("good", "6a1f0c9e2b7d4a8f6a1f0c9e2b7d4a8f")
        other = token_file("other", "ffffffffffffffffffffffffffffffff")
        with ternps.Worker(job_id="tok", rank=0, world_size=2, shards=[self.shard.address],
                           tensors=TENSORS, threads=1, token_file=good) as worker:
            with self.assertRaises(ternps.TernpsError) as raised:
                ternps.client.Client(job_id="tok", rank=1, world_size=2,
                                     shards=[self.shard.address], tensors=TENSORS)
            self.assertEqual(raised.exception.code, "UNAUTHENTICATED")
            with self.assertRaises(ternps.TernpsError) as raised:
                ternps.Worker(job_id="tok", rank=1, world_size=2, shards=[self.shard.address],
                              tensors=TENSORS, token_file=other)
            self.assertEqual(raised.exception.code, "PERMISSION_DENIED")
            self.assertNotIn("ffffffff", raised.exception.message)
            client = ternps.client.Client(job_id="tok", rank=1, world_size=2,
                                          shards=[self.shard.address], tensors=TENSORS,
                                          token_file=good)
            pool = concurrent.futures.ThreadPoolExecutor(1)
            theirs = pool.submit(client.step, gradient(1, 0))
            mine = [g.copy() for g in gradient(0, 0)]
            worker.step(mine)
            averages = theirs.result(timeout=60)
            self.assertEqual(digest(mine), digest(averages))
            client.leave()
            worker.leave()

    def test_an_unreachable_shard_is_an_error_with_its_code(self):
        with self.assertRaises(ternps.TernpsError) as raised:
            ternps.Worker(job_id="x", rank=0, world_size=1, shards=["127.0.0.1:1"],
                          tensors=TENSORS, connect_timeout=0.5)
        self.assertEqual(raised.exception.code, "UNAVAILABLE")
        self.assertIn("unreachable", raised.exception.message)


if __name__ == "__main__":
    unittest.main(verbosity=2)
