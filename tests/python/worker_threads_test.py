"""One worker, several Python threads (ctest label `python`).

- A second thread calling into a worker while another is inside a step is refused with
  FAILED_PRECONDITION instead of entering the C++ worker (which one thread drives).
- close() while another thread is inside a step waits for that step instead of freeing the
  worker under it: the step completes with the right average, and later calls say "closed".
(The DDP hook's failure path is in ddp_hook_test.py.)

Usage: worker_threads_test.py BIN_DIR   (PYTHONPATH must reach the built package)
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np

import ternps

BIN_DIR = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"


class Shard:
    def __init__(self, directory):
        port_file = os.path.join(directory, "port")
        self.log = open(os.path.join(directory, "shard.log"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(BIN_DIR, "ternps-server"), "--listen=127.0.0.1:0",
             f"--port_file={port_file}", "--quiet"], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ternps-server did not start")
            time.sleep(0.01)  # waiting for the port file, which appears once it serves
        with open(port_file) as f:
            self.address = "127.0.0.1:" + f.read().strip()

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()


class WorkerThreadsTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.shard = Shard(self.dir.name)

    def tearDown(self):
        self.shard.close()
        self.dir.cleanup()

    def worker(self, rank):
        return ternps.Worker(job_id="threads", rank=rank, world_size=2,
                             shards=[self.shard.address], tensors=[("w", 1000)], codec="fp32")

    def test_a_second_thread_is_refused_and_close_waits_for_the_step(self):
        w0 = self.worker(0)
        w1 = self.worker(1)
        g0 = np.full(1000, 1.0, dtype=np.float32)
        g1 = np.full(1000, 3.0, dtype=np.float32)
        outcome = {}

        def step0():
            try:
                w0.step([g0])  # waits inside for rank 1's push
                outcome["step"] = "ok"
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                outcome["step"] = repr(e)

        stepping = threading.Thread(target=step0)
        stepping.start()
        # Until the stepping thread is inside: a call here either finds it there (refused) or
        # gets in first with gradients of the wrong size, which the worker refuses before
        # sending anything. Polled with a deadline; the step cannot finish before rank 1 steps.
        wrong = [np.zeros(7, dtype=np.float32)]
        deadline = time.monotonic() + 60
        refused = None
        while refused is None:
            self.assertLess(time.monotonic(), deadline, "the stepping thread never got inside")
            with self.assertRaises(ternps.TernpsError) as caught:
                w0.step(wrong)
            if caught.exception.code == "FAILED_PRECONDITION":
                refused = caught.exception
            else:
                self.assertEqual(caught.exception.code, "INVALID_ARGUMENT")
                time.sleep(0.001)  # let the stepping thread run; a retry, not synchronization
        self.assertIn("another thread", str(refused))

        closing = threading.Thread(target=w0.close)
        closing.start()  # waits for the step in progress
        w1.step([g1])
        stepping.join(60)
        closing.join(60)
        self.assertFalse(stepping.is_alive())
        self.assertFalse(closing.is_alive())
        self.assertEqual(outcome.get("step"), "ok")
        np.testing.assert_array_equal(g0, np.full(1000, 2.0, dtype=np.float32))
        np.testing.assert_array_equal(g1, np.full(1000, 2.0, dtype=np.float32))
        with self.assertRaises(ternps.TernpsError) as closed:
            w0.step([g0])
        self.assertIn("closed", str(closed.exception))
        w1.close()


if __name__ == "__main__":
    unittest.main()
