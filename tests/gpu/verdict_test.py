#!/usr/bin/env python3
"""The GPU check's verdict logic (tests/gpu/verdict.py) on canned step logs, no GPU needed.

A clean set of logs, shaped like the real tools' output, must read PASS; each broken copy (a
skipped test, "No tests were found", a sanitizer error summary, a missing shared library, an
accuracy 2 points under the CPU run, a bench check that differs, a timeout, a step that never
ran) must read FAIL; a sanitizer that refuses the device reads "not available" and does not
fail the check. So a verdict that always says FAIL fails this test, and so does one that
always says PASS.
"""
import json
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

VERDICT = Path(__file__).with_name("verdict.py")


def gtest_log(passed, skipped=0, failed=0, suites=1):
    total = passed + skipped + failed
    lines = [f"[==========] Running {total} tests from {suites} test suites.",
             "[----------] Global test environment set-up."]
    for i in range(passed):
        lines += [f"[ RUN      ] Suite.Case{i}", f"[       OK ] Suite.Case{i} (12 ms)"]
    for i in range(skipped):
        lines += [f"[ RUN      ] Suite.Skipped{i}", "no CUDA device",
                  f"[  SKIPPED ] Suite.Skipped{i} (0 ms)"]
    for i in range(failed):
        lines += [f"[ RUN      ] Suite.Broken{i}", f"[  FAILED  ] Suite.Broken{i} (3 ms)"]
    lines += [f"[==========] {total} tests from {suites} test suites ran. (40 ms total)",
              f"[  PASSED  ] {passed} tests."]
    if skipped:
        lines.append(f"[  SKIPPED ] {skipped} tests, listed below:")
    if failed:
        lines.append(f"[  FAILED  ] {failed} tests, listed below:")
    return "\n".join(lines) + "\n"


def ended(body, rc=0, seconds=3, limit=90):
    return body + f"ternps-check-exit: {rc}\nternps-check-seconds: {seconds}\nternps-check-limit: {limit}\n"


def bench_rows(broken=None):
    rows = []
    for n in (1 << 26, 1 << 28):
        rows.append({"bench": "cuda_d2d_copy", "device": "cuda", "elements": n, "repeats": 5,
                     "seconds": 0.0003 * n / (1 << 26), "gbps": 3400.0, "ratio_to_d2d_copy": 1.0})
        rows.append({"bench": "cuda_encode", "device": "cuda", "elements": n, "repeats": 5,
                     "seconds": 0.0004, "gbps": 2500.0, "ratio_to_d2d_copy": 0.74})
        rows.append({"bench": "cuda_decode_int_sum", "device": "cuda", "elements": n,
                     "repeats": 5, "seconds": 0.0005, "gbps": 2200.0, "ratio_to_d2d_copy": 0.65})
        for check in ("stats", "ternarize", "decode_ternary", "decode_int_sum",
                      "decode_int_sum_radix"):
            bad = broken == check and n == 1 << 28
            rows.append({"bench": "cuda_check", "device": "cuda", "check": check, "elements": n,
                         "ok": not bad, "first_difference": 16777217 if bad else -1})
    return "".join(json.dumps(r) + "\n" for r in rows)


def summary(device, rank, accuracy, checksum):
    return json.dumps({"summary": "ternps-worker", "rank": rank, "world_size": 2,
                       "device": device, "codec": "terngrad", "test_accuracy": accuracy,
                       "model_checksum": checksum})


def training_log(cuda_acc=0.8123, cpu_acc=0.8151, cuda_sums=("aa", "aa"), exits=(0, 0, 0, 0)):
    lines = [f"worker cuda 0 exit {exits[0]}", f"worker cuda 1 exit {exits[1]}",
             f"worker cpu 0 exit {exits[2]}", f"worker cpu 1 exit {exits[3]}"]
    for r in (0, 1):
        lines.append(f"summary cuda {r} {summary('cuda', r, cuda_acc, cuda_sums[r])}")
    for r in (0, 1):
        lines.append(f"summary cpu {r} {summary('cpu', r, cpu_acc, 'bb')}")
    return "\n".join(lines) + "\n"


SANITIZER_CLEAN = ("========= COMPUTE-SANITIZER\n" + gtest_log(3) +
                   "========= ERROR SUMMARY: 0 errors\n")
RACECHECK_CLEAN = ("========= COMPUTE-SANITIZER\n" + gtest_log(3) +
                   "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n")


def clean_logs():
    return {
        "preflight": ended("host: Linux 6.8.0 x86_64, Ubuntu 24.04.1 LTS\n"
                           "gpu: NVIDIA H100 80GB HBM3, 570.86.15, Default, 81559 MiB\n"),
        "test_codec_device": ended(gtest_log(4)),
        "test_philox_device": ended(gtest_log(2)),
        "test_step_on_device": ended(gtest_log(2)),
        "bench": ended(bench_rows()),
        "training": ended(training_log(), limit=150),
        "python": ended("python: extension built\n"
                        "python: two workers exchanged 65536 elements; averages exact\n"),
        "ddp_cuda": ended("ddp_cuda: torch.float32 CUDA buckets of 65536 elements through the "
                          "hook; averages exact\n"
                          "ddp_cuda: torch.float16 CUDA buckets of 65536 elements through the "
                          "hook; averages exact\n"),
        "sanitizer_memcheck": ended(SANITIZER_CLEAN, limit=120),
        "sanitizer_racecheck": ended(RACECHECK_CLEAN, limit=120),
    }


class VerdictTest(unittest.TestCase):
    def run_verdict(self, logs, remove=()):
        with tempfile.TemporaryDirectory() as d:
            for step, text in logs.items():
                if step not in remove:
                    Path(d, f"{step}.log").write_text(text)
            p = subprocess.run([sys.executable, str(VERDICT), d], capture_output=True, text=True)
        lines = p.stdout.strip().splitlines()
        self.assertTrue(lines, p.stderr)
        return p.returncode, lines[-1], p.stdout

    def assert_fails(self, logs, needle, remove=()):
        rc, last, out = self.run_verdict(logs, remove)
        self.assertEqual(rc, 1, out)
        self.assertTrue(last.startswith("FAIL"), out)
        self.assertIn(needle, out)

    def test_clean_set_passes(self):
        rc, last, out = self.run_verdict(clean_logs())
        self.assertEqual((rc, last), (0, "PASS"), out)

    def test_a_capability_not_built_yet_reads_not_yet(self):
        logs = clean_logs()
        logs["ddp_cuda"] = "ternps-check-not-yet: something\n"
        rc, last, out = self.run_verdict(logs)
        self.assertEqual((rc, last), (0, "PASS"), out)
        self.assertIn("not yet", out)  # distinct from pass and FAIL

    def test_ddp_cuda_without_exact_averages_fails(self):
        logs = clean_logs()
        logs["ddp_cuda"] = ended("ddp_cuda: torch.float32 CUDA buckets of 65536 elements "
                                 "through the hook; averages exact\n")
        self.assert_fails(logs, "not every dtype")

    def test_skipped_test_fails(self):
        logs = clean_logs()
        logs["test_step_on_device"] = ended(gtest_log(0, skipped=2))
        self.assert_fails(logs, "skipped")

    def test_a_pass_beside_a_skip_still_fails(self):
        logs = clean_logs()
        logs["test_codec_device"] = ended(gtest_log(3, skipped=1))
        self.assert_fails(logs, "1 skipped")

    def test_no_tests_found_fails(self):
        logs = clean_logs()
        logs["test_codec_device"] = ended("Test project /tmp/build-gpu\nNo tests were found!!!\n")
        self.assert_fails(logs, "No tests were found")

    def test_zero_tests_fails(self):
        logs = clean_logs()
        logs["test_philox_device"] = ended(gtest_log(0))
        self.assert_fails(logs, "no test ran")

    def test_failed_test_fails(self):
        logs = clean_logs()
        logs["test_codec_device"] = ended(gtest_log(3, failed=1), rc=1)
        self.assert_fails(logs, "1 failed")

    def test_sanitizer_error_summary_fails_even_with_exit_0(self):
        logs = clean_logs()
        logs["sanitizer_memcheck"] = ended(SANITIZER_CLEAN.replace("0 errors", "2 errors"))
        self.assert_fails(logs, "2 errors")

    def test_racecheck_errors_fail(self):
        logs = clean_logs()
        logs["sanitizer_racecheck"] = ended(RACECHECK_CLEAN.replace("(0 errors", "(1 errors"))
        self.assert_fails(logs, "1 errors")

    def test_sanitizer_without_summary_fails(self):
        logs = clean_logs()
        logs["sanitizer_memcheck"] = ended("========= COMPUTE-SANITIZER\nSegmentation fault\n",
                                           rc=139)
        self.assert_fails(logs, "exit 139")

    def test_sanitizer_refusal_is_not_available(self):
        logs = clean_logs()
        logs["sanitizer_memcheck"] = ended(
            "========= COMPUTE-SANITIZER\n========= Error: Device not supported\n", rc=1)
        rc, last, out = self.run_verdict(logs)
        self.assertEqual((rc, last), (0, "PASS"), out)
        self.assertIn("not available", out)

    def test_missing_shared_library_fails(self):
        logs = clean_logs()
        logs["preflight"] = ended(logs["preflight"].split("ternps-check-exit")[0] +
                                  "missing: ternps-server: libgrpc++.so.1.51 => not found\n")
        self.assert_fails(logs, "missing shared library: ternps-server: libgrpc++")

    def test_no_device_fails(self):
        logs = {"preflight": ended("host: Linux\nnvidia-smi: not found\n")}
        self.assert_fails(logs, "no CUDA device")

    def test_accuracy_two_points_under_the_cpu_fails(self):
        logs = clean_logs()
        logs["training"] = ended(training_log(cuda_acc=0.7951, cpu_acc=0.8151))
        self.assert_fails(logs, "-2.00 points")

    def test_accuracy_within_a_point_passes(self):
        logs = clean_logs()
        logs["training"] = ended(training_log(cuda_acc=0.8071, cpu_acc=0.8151))
        rc, last, out = self.run_verdict(logs)
        self.assertEqual((rc, last), (0, "PASS"), out)

    def test_replicas_that_differ_fail(self):
        logs = clean_logs()
        logs["training"] = ended(training_log(cuda_sums=("aa", "ab")))
        self.assert_fails(logs, "replicas differ")

    def test_worker_that_failed_fails(self):
        logs = clean_logs()
        logs["training"] = ended(training_log(exits=(0, 1, 0, 0)))
        self.assert_fails(logs, "cuda rank 1: exit 1")

    def test_bench_check_that_differs_fails(self):
        logs = clean_logs()
        logs["bench"] = ended(bench_rows(broken="ternarize"))
        self.assert_fails(logs, "ternarize at 268435456 elements differs")

    def test_bench_without_its_checks_fails(self):
        logs = clean_logs()
        logs["bench"] = ended("".join(l + "\n" for l in bench_rows().splitlines()
                                      if "cuda_check" not in l))
        self.assert_fails(logs, "no check of stats")

    def test_timeout_fails(self):
        logs = clean_logs()
        logs["python"] = ended("python: extension built\n", rc=124, limit=120)
        self.assert_fails(logs, "timed out after 120 s")

    def test_step_that_never_ran_fails(self):
        self.assert_fails(clean_logs(), "did not run", remove=("bench",))

    def test_step_cut_by_the_budget_fails(self):
        logs = clean_logs()
        logs["sanitizer_racecheck"] = "ternps-check-not-run: the 290 s budget was spent\n"
        self.assert_fails(logs, "budget was spent")


if __name__ == "__main__":
    unittest.main()
