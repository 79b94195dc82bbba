#!/usr/bin/env python3
"""The GPU check's verdict, from the step logs tests/gpu/device_check.sh writes.

    verdict.py LOGS_DIR [--seconds N]      # the table, then PASS or FAIL; exit 0 on PASS
    verdict.py --step preflight LOGS_DIR   # one step's verdict; exit 0 if it passed

Each step's log is LOGS_DIR/<step>.log; device_check.sh ends it with "ternps-check-exit: RC"
(124: timed out). A step whose log is missing did not run. Every step reads one of:
  pass            what the step checks held (and, for test binaries, at least one test ran
                  and none was skipped)
  FAIL            anything else: a non-zero exit, a timeout, a skipped test, no tests, a
                  sanitizer error summary, a missing shared library, accuracy off by > 1 point
  not available   the tool refused this machine (compute-sanitizer on some GPUs)
  not yet         the capability is not built yet (none at the moment)
The verdict is PASS only if no step reads FAIL and every step ran.
"""
import json
import re
import sys
from pathlib import Path

TESTS = ["test_codec_device", "test_philox_device", "test_step_on_device"]
SANITIZERS = ["sanitizer_memcheck", "sanitizer_racecheck"]
STEPS = ["preflight"] + TESTS + ["bench", "training", "python", "ddp_cuda"] + SANITIZERS
# The bench's checks at the largest size (the kernels' loop paths).
BENCH_CHECKS = ["stats", "ternarize", "decode_ternary", "decode_int_sum", "decode_int_sum_radix"]
BENCH_CHECK_ELEMENTS = 1 << 28
ACCURACY_POINTS = 1.0
# What compute-sanitizer prints where it cannot instrument this machine's device (a driver or
# device it does not support, or profiling not permitted), as opposed to errors it found.
SANITIZER_REFUSALS = [
    "device not supported", "not supported on this", "didn't initialize", "did not initialize",
    "insufficient permissions", "ERR_NVGPUCTRPERM", "Target application terminated before first "
    "instrumented API call", "Unable to find injection library", "failed to initialize",
]


def exit_code(text):
    m = re.findall(r"^ternps-check-exit: (\d+)$", text, re.M)
    return int(m[-1]) if m else None


def exited(text):
    """None when the command exited 0, else the reason."""
    rc = exit_code(text)
    if rc is None:
        return "no exit status (the step did not finish)"
    if rc == 124 or rc == 137:
        limit = re.findall(r"^ternps-check-limit: (\d+)$", text, re.M)
        return f"timed out after {limit[-1] if limit else '?'} s"
    if rc != 0:
        return f"exit {rc}"
    return None


def gtest_counts(text):
    """(passed, skipped, failed, ran_header) from GoogleTest's summary lines."""
    passed = sum(int(n) for n in re.findall(r"^\[  PASSED  \] (\d+) tests?", text, re.M))
    skipped = sum(int(n) for n in re.findall(r"^\[  SKIPPED \] (\d+) tests?", text, re.M))
    failed = sum(int(n) for n in re.findall(r"^\[  FAILED  \] (\d+) tests?", text, re.M))
    ran = bool(re.search(r"^\[==========\] \d+ tests? from .* ran", text, re.M))
    return passed, skipped, failed, ran


def judge_tests(text):
    passed, skipped, failed, ran = gtest_counts(text)
    if "No tests were found" in text:
        return "FAIL", "No tests were found"
    if failed:
        return "FAIL", f"{failed} failed"
    if skipped:
        return "FAIL", f"{skipped} skipped (a skip counts as a failure here)"
    why = exited(text)
    if why:
        return "FAIL", why
    if not ran or passed == 0:
        return "FAIL", "no test ran"
    return "pass", f"{passed} passed"


def judge_preflight(text):
    missing = re.findall(r"^missing: (.*)$", text, re.M)
    if missing:
        return "FAIL", f"missing shared library: {missing[0]}" + (
            f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
    gpus = re.findall(r"^gpu: (.*)$", text, re.M)
    if not gpus:
        why = "nvidia-smi not found" if "nvidia-smi: not found" in text else "nvidia-smi lists none"
        return "FAIL", f"no CUDA device ({why})"
    why = exited(text)
    if why:
        return "FAIL", why
    return "pass", "; ".join(gpus)


def judge_sanitizer(text):
    if "ternps-check-not-available:" in text:
        return "not available", text.split("ternps-check-not-available:", 1)[1].splitlines()[0].strip()
    summaries = re.findall(r"ERROR SUMMARY: (\d+) errors?", text)
    races = re.findall(r"RACECHECK SUMMARY: .*?\((\d+) errors?", text)
    errors = sum(int(n) for n in summaries + races)
    if errors:
        return "FAIL", f"{errors} errors in the sanitizer's summary"
    if not summaries and not races:
        lower = text.lower()
        for refusal in SANITIZER_REFUSALS:
            if refusal.lower() in lower:
                return "not available", f"the tool refused the device ({refusal})"
        return "FAIL", exited(text) or "no error summary"
    verdict, detail = judge_tests(text)
    if verdict != "pass":
        return verdict, f"clean summary, but the tests under it: {detail}"
    return "pass", f"0 errors; {detail}"


def judge_bench(text):
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                return "FAIL", f"unreadable row: {line[:60]}"
    checks = [r for r in rows if r.get("bench") == "cuda_check"]
    bad = [r for r in checks if not r.get("ok")]
    if bad:
        r = bad[0]
        return "FAIL", (f"{r.get('check')} at {r.get('elements')} elements differs from the CPU "
                        f"codec (first at {r.get('first_difference')})")
    done = {r.get("check") for r in checks if r.get("elements") == BENCH_CHECK_ELEMENTS}
    missing = [c for c in BENCH_CHECKS if c not in done]
    if missing:
        return "FAIL", f"no check of {', '.join(missing)} at 2^28 elements"
    why = exited(text)
    if why:
        return "FAIL", why
    speed = {r["bench"]: r for r in rows
             if r.get("elements") == BENCH_CHECK_ELEMENTS and "gbps" in r}
    shown = [f"{name[5:]} {speed[name]['gbps']:.0f} GB/s ({speed[name].get('ratio_to_d2d_copy', 0):.2f} "
             "of a copy)" for name in ("cuda_encode", "cuda_decode_int_sum") if name in speed]
    return "pass", f"{len(checks)} checks equal the CPU codec; " + "; ".join(shown)


def judge_training(text):
    workers = re.findall(r"^worker (\w+) (\d+) exit (\d+)$", text, re.M)
    summaries = {}
    for device, rank, body in re.findall(r"^summary (\w+) (\d+) (.*)$", text, re.M):
        try:
            summaries[(device, int(rank))] = json.loads(body)
        except json.JSONDecodeError:
            pass
    failed = [f"{d} rank {r}: exit {rc}" for d, r, rc in workers if rc != "0"]
    if failed:
        return "FAIL", "; ".join(failed)
    acc = {}
    for device in ("cuda", "cpu"):
        runs = [summaries.get((device, r)) for r in (0, 1)]
        if None in runs:
            return "FAIL", f"no summary from every {device} worker"
        sums = {s.get("model_checksum") for s in runs}
        if len(sums) != 1:
            return "FAIL", f"{device} replicas differ ({len(sums)} model checksums)"
        acc[device] = runs[0].get("test_accuracy")
        if not isinstance(acc[device], (int, float)):
            return "FAIL", f"{device}: no test_accuracy"
    gap = 100.0 * (acc["cuda"] - acc["cpu"])
    if abs(gap) > ACCURACY_POINTS:
        return "FAIL", (f"cuda accuracy {acc['cuda']:.4f} is {gap:+.2f} points from the cpu run's "
                        f"{acc['cpu']:.4f} (at most {ACCURACY_POINTS:g})")
    why = exited(text)
    if why:
        return "FAIL", why
    return "pass", (f"cuda {acc['cuda']:.4f}, cpu {acc['cpu']:.4f} ({gap:+.2f} points); "
                    "replicas identical in each")


def judge_python(text):
    why = exited(text)
    if why:
        return "FAIL", why
    if "averages exact" not in text:
        return "FAIL", "no exchange reported"
    return "pass", "extension built and imported; exact averages"


def judge_ddp_cuda(text):
    if "ternps-check-not-yet:" in text:
        return "not yet", text.split("ternps-check-not-yet:", 1)[1].splitlines()[0].strip()
    why = exited(text)
    if why:
        return "FAIL", why
    exact = re.findall(r"^ddp_cuda: (\S+) CUDA buckets .* averages exact$", text, re.M)
    if len(exact) < 2:
        return "FAIL", "not every dtype reported exact averages"
    return "pass", "CUDA buckets through the hook: " + ", ".join(exact)


JUDGES = {"preflight": judge_preflight, "bench": judge_bench, "training": judge_training,
          "python": judge_python, "ddp_cuda": judge_ddp_cuda}


def judge(step, logs):
    path = logs / f"{step}.log"
    if not path.exists():
        return "FAIL", "did not run"
    text = path.read_text(errors="replace")
    if "ternps-check-not-run:" in text:
        return "FAIL", "not run: " + text.split("ternps-check-not-run:", 1)[1].splitlines()[0].strip()
    if step in SANITIZERS:
        return judge_sanitizer(text)
    if step in TESTS:
        return judge_tests(text)
    return JUDGES[step](text)


def main(argv):
    args = list(argv)
    only = None
    seconds = None
    if "--step" in args:
        i = args.index("--step")
        only = args[i + 1]
        del args[i:i + 2]
    if "--seconds" in args:
        i = args.index("--seconds")
        seconds = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or (only is not None and only not in STEPS):
        print(__doc__, file=sys.stderr)
        return 2
    logs = Path(args[0])
    if only is not None:
        verdict, detail = judge(only, logs)
        print(f"{only}: {verdict}: {detail}")
        return 0 if verdict == "pass" else 1
    results = [(step, *judge(step, logs)) for step in STEPS]
    failed = [step for step, verdict, _ in results if verdict == "FAIL"]
    header = "GPU check"
    if seconds is not None:
        header += f", {seconds} s"
    print(header)
    for step, verdict, detail in results:
        print(f"  {step:<22} {verdict:<14} {detail}")
    if results[0][1] == "FAIL":
        print("FAIL: preflight: " + results[0][2])
    elif failed:
        print("FAIL: " + ", ".join(failed))
    else:
        print("PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
