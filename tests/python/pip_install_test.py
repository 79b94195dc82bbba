"""`pip install ./worker/python` into a fresh virtual environment (ctest label `python`).

Offline and without build isolation, as a user on Debian does it: a venv made with
--system-site-packages (Debian's numpy, torch and pybind11), `pip install --no-build-isolation
--no-index "./worker/python[torch]"` (so the torch requirement must accept Debian's
1.13.0a0+gitunknown, or pip would look for another torch and fail offline). The package is
built from this build tree (TERNPS_BUILD_DIR: setup.py reuses it instead of building afresh).
Then, with the venv's interpreter: ternps imports from the venv (not from the build tree),
its __version__ is the CMake project's, the type stubs declare every WorkerOptions setting,
and a worker steps against a real ternps-server.

Usage: pip_install_test.py BIN_DIR BUILD_DIR PROJECT_VERSION
"""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

BIN_DIR, BUILD_DIR, VERSION = sys.argv[1:4]
del sys.argv[1:4]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CHECK = textwrap.dedent("""
    import os, subprocess, sys, time
    import numpy as np
    import ternps, ternps._ternps, ternps.ddp, ternps.v1.ternps_pb2
    venv, bin_dir, version, stubs_dir = sys.argv[1:5]
    assert ternps.__file__.startswith(venv), ternps.__file__
    assert ternps._ternps.__file__.startswith(venv), ternps._ternps.__file__
    assert ternps.__version__ == version, (ternps.__version__, version)
    with open(os.path.join(os.path.dirname(ternps.__file__), "_ternps.pyi")) as f:
        stub = f.read()
    missing = [n for n in dir(ternps._ternps.WorkerOptions)
               if not n.startswith("_") and f"    {n}:" not in stub]
    assert not missing, f"_ternps.pyi lacks {missing}"
    assert os.path.exists(os.path.join(os.path.dirname(ternps.__file__), "py.typed"))
    port_file = os.path.join(stubs_dir, "port")
    shard = subprocess.Popen([os.path.join(bin_dir, "ternps-server"), "--listen=127.0.0.1:0",
                              f"--port_file={port_file}", "--quiet"])
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            assert shard.poll() is None and time.monotonic() < deadline, "no shard"
            time.sleep(0.01)  # waiting for the port file, which appears once it serves
        address = "127.0.0.1:" + open(port_file).read().strip()
        with ternps.Worker(job_id="pip", rank=0, world_size=1, shards=[address],
                           tensors=[("w", 5000), ("b", 10)], calls_in_flight_per_shard=1,
                           threads=1) as w:
            g = [np.full(5000, 0.5, np.float32), np.full(10, 2.0, np.float32)]
            w.step(g)
            assert w.step_index == 1
            np.testing.assert_array_equal(g[1], np.full(10, 2.0, np.float32))
            w.leave()
    finally:
        shard.terminate()
        shard.wait()
    print("ok", ternps.__version__)
""")


class PipInstallTest(unittest.TestCase):
    def test_pip_installs_into_a_fresh_venv_offline(self):
        with tempfile.TemporaryDirectory() as tmp:
            venv = os.path.join(tmp, "venv")
            subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv],
                           check=True)
            env = dict(os.environ, TERNPS_BUILD_DIR=BUILD_DIR, PIP_NO_INPUT="1")
            env.pop("PYTHONPATH", None)  # the build tree's package must not be what imports
            out = subprocess.run(
                [os.path.join(venv, "bin", "pip"), "install", "--no-build-isolation",
                 "--no-index", os.path.join(ROOT, "worker", "python") + "[torch]"],
                env=env, capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            out = subprocess.run([os.path.join(venv, "bin", "python"), "-c", CHECK,
                                  os.path.realpath(venv), BIN_DIR, VERSION, tmp],
                                 env=env, capture_output=True, text=True, cwd=tmp)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            self.assertIn("ok " + VERSION, out.stdout)


if __name__ == "__main__":
    unittest.main()
