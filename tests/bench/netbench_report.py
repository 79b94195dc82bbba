#!/usr/bin/env python3
"""Summarizes tests/bench/netbench.sh's raw rows: one `netbench` JSON line per (system, W) and a
PNG of step time against W with the wire floors (TernGrad paper style). Rows of several rounds
(netbench.sh --rounds) are pooled for the step times and CPU figures; the ratio to gloo is the
median of the per-round ratios (each a system against the gloo run just before it), with their
range."""
import argparse
import collections
import json
import statistics


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", required=True)
    parser.add_argument("--rate_bps", type=float, required=True, help="link rate, 0: unshaped")
    parser.add_argument("--rate", default="")
    parser.add_argument("--profile", default="")
    parser.add_argument("--png", default="")
    args = parser.parse_args()

    rounds = collections.defaultdict(list)    # (system, W, round) -> per-rank summary rows
    workers = collections.defaultdict(list)   # (system, W) -> per-rank summary rows
    steps = collections.defaultdict(list)     # (system, W) -> worker_step rows
    shards = collections.defaultdict(list)    # (system, W) -> shard rows
    with open(args.raw) as f:
        for line in f:
            row = json.loads(line)
            key = (row["system"], row["W"])
            if row["bench"] in ("worker", "gloo_worker", "ddp_worker"):
                workers[key].append(row)
                rounds[key + (row.get("round", 1),)].append(row)
            elif row["bench"] == "worker_step":
                steps[key].append(row)
            elif row["bench"] == "shard":
                shards[key].append(row)

    summary = {}
    for key in sorted(workers, key=lambda k: (k[1], k[0])):
        system, w = key
        ranks = workers[key]
        mean = statistics.mean(r["step_seconds_mean"] for r in ranks)
        p50 = statistics.median(r["step_seconds_p50"] for r in ranks)
        up = max(r["sent_bytes_per_step"] for r in ranks)
        down = max(r.get("received_bytes_per_step", r["sent_bytes_per_step"]) for r in ranks)
        floor = max(up, down) * 8 / args.rate_bps if args.rate_bps else None
        # Per rank (per shard), averaged over the rounds.
        by_rank = collections.defaultdict(list)
        for r in ranks:
            by_rank[r.get("rank", 0)].append(r["cpu_seconds_per_step"])
        worker_cpu = [statistics.mean(by_rank[k]) for k in sorted(by_rank)]
        by_shard = collections.defaultdict(list)
        for r in shards.get(key, []):
            by_shard[r["shard"]].append(r["cpu_seconds_per_step"])
        shard_cpu = [statistics.mean(by_shard[k]) for k in sorted(by_shard)]
        n_rounds = len({r.get("round", 1) for r in ranks})
        moved = sum(r["sent_bytes_per_step"] + r.get("received_bytes_per_step",
                                                     r["sent_bytes_per_step"])
                    for r in ranks) / n_rounds
        cpu_total = sum(worker_cpu) + sum(shard_cpu)
        row = {
            "bench": "netbench", "profile": args.profile, "rate": args.rate or "off",
            "system": system, "W": w, "S": 0 if system in ("gloo", "ddp-gloo") else w,
            "step_seconds_p50": round(p50, 6), "step_seconds_mean": round(mean, 6),
            "wire_floor_seconds": round(floor, 6) if floor else None,
            "ratio_to_floor": round(mean / floor, 3) if floor else None,
            "up_bytes_per_worker_step": round(up), "down_bytes_per_worker_step": round(down),
            "worker_cpu_seconds_per_step": [round(c, 4) for c in worker_cpu],
            "shard_cpu_seconds_per_step": [round(c, 4) for c in shard_cpu],
            "cpu_ns_per_payload_byte": round(cpu_total / moved * 1e9, 3) if moved else None,
            "rounds": n_rounds,
        }
        timeline = steps.get(key)
        if timeline:
            def avg(f):
                return round(statistics.mean(f(t) for t in timeline), 6)
            row["timeline_mean_seconds"] = {
                "statistics_end": avg(lambda t: t["statistics_end"]),
                "scalers_end": avg(lambda t: t["scalers_end"]),
                "first_call_sent": avg(lambda t: min(c["encoded"] for c in t["calls"])),
                "last_call_sent": avg(lambda t: max(c["encoded"] for c in t["calls"])),
                "first_answer": avg(lambda t: min(c["answered"] for c in t["calls"])),
                "last_answer": avg(lambda t: max(c["answered"] for c in t["calls"])),
                "last_decoded": avg(lambda t: max(c["decoded"] for c in t["calls"])),
            }
        if ranks[0]["bench"] == "ddp_worker":
            # The first step (DDP's bucket rebuild, the hook's connections warming up) apart.
            row["first_step_seconds_mean"] = round(
                statistics.mean(r["first_step_seconds"] for r in ranks), 6)
            if "backward_seconds" in ranks[0]:
                for field in ("with_backward_step_seconds_p50", "backward_alone_seconds_p50",
                              "no_overlap_seconds_p50", "overlap_ratio_p50"):
                    row[field] = round(statistics.median(r[field] for r in ranks), 4)
                row["backward_seconds"] = ranks[0]["backward_seconds"]
        summary[key] = row
    for (system, w), row in summary.items():
        # DDP runs compare with DDP's own all-reduce, the rest with the bare gloo all-reduce.
        reference = "ddp-gloo" if system.startswith("ddp-") else "gloo"
        if system != reference and (reference, w) in summary:
            # Per round: gloo's mean step over this system's, both measured in that round.
            ratios, ratios_p50 = [], []
            for (s, sw, k), ranks in rounds.items():
                if (s, sw) != (system, w) or (reference, w, k) not in rounds:
                    continue
                ref = statistics.mean(r["step_seconds_mean"] for r in rounds[(reference, w, k)])
                ratios.append(ref / statistics.mean(r["step_seconds_mean"] for r in ranks))
                ref = statistics.median(r["step_seconds_p50"] for r in rounds[(reference, w, k)])
                ratios_p50.append(ref / statistics.median(r["step_seconds_p50"] for r in ranks))
            if ratios:
                row["speedup_vs_gloo"] = round(statistics.median(ratios), 3)
                row["speedup_vs_gloo_p50"] = round(statistics.median(ratios_p50), 3)
                if len(ratios) > 1:
                    row["speedup_vs_gloo_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        print(json.dumps(row), flush=True)

    if args.png and summary:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        colors = {"gloo": "tab:gray", "fp32": "tab:blue", "terngrad": "tab:red"}
        labels = {"gloo": "PyTorch gloo all-reduce (fp32)", "fp32": "ternps fp32",
                  "terngrad": "ternps TernGrad"}
        for system in ("gloo", "fp32", "terngrad"):
            points = sorted((w, r) for (s, w), r in summary.items() if s == system)
            if not points:
                continue
            ws = [w for w, _ in points]
            ax.plot(ws, [r["step_seconds_mean"] for _, r in points], "o-",
                    color=colors[system], label=labels[system])
            floors = [(w, r["wire_floor_seconds"]) for w, r in points if r["wire_floor_seconds"]]
            if floors:
                ax.plot([w for w, _ in floors], [f for _, f in floors], "--",
                        color=colors[system], alpha=0.6, label=f"{system} wire floor")
        ax.set_xlabel("workers W (ternps: S = W shards)")
        ax.set_ylabel("seconds per step (gradient exchange)")
        ax.set_xticks(sorted({w for _, w in summary}))
        ax.set_yscale("log")
        ax.set_title(f"{args.profile} gradient, {args.rate or 'unshaped'} links, MTU 1500")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
