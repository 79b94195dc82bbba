"""Builds ternps._ternps (and libternps_worker) with the repository's CMake build for
`pip install ./worker/python`; see pyproject.toml. Only the extension's build is here."""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def build_dir():
    """The CMake build the package comes from: $TERNPS_BUILD_DIR (already built, e.g. by
    tests/run.sh), else build/pip (configured and built here)."""
    return os.path.abspath(os.environ.get("TERNPS_BUILD_DIR") or os.path.join(ROOT, "build", "pip"))


def cmake_build(target):
    out = build_dir()
    if not os.environ.get("TERNPS_BUILD_DIR"):
        subprocess.check_call(["cmake", "-S", ROOT, "-B", out, "-DCMAKE_BUILD_TYPE=Release",
                               f"-DPython3_EXECUTABLE={sys.executable}", "-DTERNPS_PYTHON=ON"])
    subprocess.check_call(["cmake", "--build", out, "--target", target, "--parallel",
                           str(os.cpu_count() or 2)])
    return out


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class BuildExt(build_ext):
    def build_extension(self, ext):
        out = cmake_build("ternps_python")
        module = glob.glob(os.path.join(out, "python", "ternps", "_ternps*.so"))
        if not module:
            raise RuntimeError(f"{out}: no ternps/_ternps*.so after the build")
        dest = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy2(module[0], dest)
        # The module finds libternps_worker through $ORIGIN (CMake sets that RPATH).
        for lib in glob.glob(os.path.join(out, "lib", "libternps_worker.so*")):
            target = os.path.join(os.path.dirname(dest), os.path.basename(lib))
            if os.path.islink(lib):
                continue  # the soname's file is copied; the links are not needed
            shutil.copy2(lib, target)
            soname = subprocess.run(["objdump", "-p", lib], capture_output=True, text=True)
            for line in soname.stdout.splitlines():
                if line.strip().startswith("SONAME"):
                    name = line.split()[1]
                    if name != os.path.basename(lib):
                        shutil.copy2(lib, os.path.join(os.path.dirname(dest), name))


class BuildPy(build_py):
    """Adds the generated protocol stubs (ternps.v1) from the CMake build."""

    def run(self):
        out = cmake_build("ternps_python_stubs")
        stubs = os.path.join(out, "python", "ternps", "v1")
        dest = os.path.join(self.build_lib, "ternps", "v1")
        os.makedirs(dest, exist_ok=True)
        for f in ("__init__.py", "ternps_pb2.py", "ternps_pb2_grpc.py"):
            shutil.copy2(os.path.join(stubs, f), dest)
        super().run()


setup(ext_modules=[CMakeExtension("ternps._ternps")],
      cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
