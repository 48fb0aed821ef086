#!/usr/bin/env python3
"""Summarises the core benchmarks as a markdown table (python3 standard library only).

Reads criterion's results under $CARGO_TARGET_DIR/criterion (default
$HOME/.cache/eventdriven-target, as scripts/bench.sh), or under the directory given as the
first argument: for every group with both an `eventdriven` and a `tokio` benchmark, the
median point estimate of `new/estimates.json` and the throughput of `new/benchmark.json`.

The ratio column is tokio's median time divided by eventdriven's: above 1 eventdriven is
faster, below 1 it is slower (0.50 = eventdriven takes twice as long as raw tokio).

Any other benchmark in a group (a control such as `tokio_envelope`) is listed in a second
table with the same ratio against that group's `eventdriven`.

    scripts/bench_table.py [CRITERION_DIR] [--spread]

--spread adds, per benchmark, the fastest, median and slowest of criterion's samples (time
per iteration), which shows a bimodal workload that a median alone hides.
"""

import json
import os
import sys
from pathlib import Path

OURS, BASELINE = "eventdriven", "tokio"


ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SPREAD = "--spread" in sys.argv[1:]


def criterion_dir() -> Path:
    if ARGS:
        return Path(ARGS[0])
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "eventdriven-target"
    )
    return Path(target) / "criterion"


def load(bench: Path):
    """(median ns per iteration, elements per iteration or None), or None if absent."""
    estimates = bench / "new" / "estimates.json"
    if not estimates.is_file():
        return None
    median = json.loads(estimates.read_text())["median"]["point_estimate"]
    elements = None
    meta = bench / "new" / "benchmark.json"
    if meta.is_file():
        throughput = json.loads(meta.read_text()).get("throughput") or {}
        elements = throughput.get("Elements")
    return median, elements


def spread(bench: Path):
    """(fastest, median, slowest) sample, in ns per iteration, or None."""
    sample = bench / "new" / "sample.json"
    if not sample.is_file():
        return None
    data = json.loads(sample.read_text())
    per_iter = sorted(t / i for i, t in zip(data["iters"], data["times"]))
    return per_iter[0], per_iter[len(per_iter) // 2], per_iter[-1]


def fmt_time(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.1f} ns"


def fmt_rate(per_second: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if per_second >= scale:
            return f"{per_second / scale:.2f} {unit}/s"
    return f"{per_second:.0f} /s"


def main() -> int:
    root = criterion_dir()
    if not root.is_dir():
        print(f"no criterion results in {root}: run scripts/bench.sh first", file=sys.stderr)
        return 1
    rows, controls, spreads = [], [], []
    for group in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "report"):
        ours, base = load(group / OURS), load(group / BASELINE)
        if ours is None or base is None:
            continue
        (ours_ns, elements), (base_ns, _) = ours, base
        n = elements or 1
        rows.append(
            "| {} | {} | {} | {} | {} | {} | {} | **{:.2f}** |".format(
                group.name,
                n,
                fmt_time(ours_ns),
                fmt_time(base_ns),
                fmt_time(ours_ns / n),
                fmt_time(base_ns / n),
                f"{fmt_rate(n * 1e9 / ours_ns)} / {fmt_rate(n * 1e9 / base_ns)}",
                base_ns / ours_ns,
            )
        )
        for bench in sorted(p for p in group.iterdir() if p.is_dir() and p.name != "report"):
            found = spread(bench)
            if found is not None:
                lo, mid, hi = (fmt_time(x) for x in found)
                spreads.append(f"| {group.name} | {bench.name} | {lo} | {mid} | {hi} |")
        for other in sorted(p for p in group.iterdir() if p.is_dir()):
            if other.name in (OURS, BASELINE, "report"):
                continue
            found = load(other)
            if found is None:
                continue
            other_ns = found[0]
            controls.append(
                f"| {group.name} | {other.name} | {fmt_time(other_ns)} "
                f"| {fmt_time(other_ns / n)} | {other_ns / ours_ns:.2f} |"
            )
    if not rows:
        print(f"no group with both `{OURS}` and `{BASELINE}` in {root}", file=sys.stderr)
        return 1
    print(f"Medians from {root}.")
    print(f"Ratio = {BASELINE} time / {OURS} time: above 1 {OURS} is faster, below 1 slower.")
    print()
    print(
        "| workload | msgs/iter | eventdriven median | tokio median "
        "| eventdriven per msg | tokio per msg | throughput (ed / tokio) | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    if controls:
        print()
        print(f"Controls (ratio = control time / {OURS} time, same sense as above):")
        print()
        print("| workload | control | median | per msg | ratio |")
        print("|---|---|---:|---:|---:|")
        for row in controls:
            print(row)
    if SPREAD and spreads:
        print()
        print("Spread of the samples (time per iteration):")
        print()
        print("| workload | benchmark | fastest | median | slowest |")
        print("|---|---|---:|---:|---:|")
        for row in spreads:
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
