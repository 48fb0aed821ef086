#!/usr/bin/env python3
"""Summarises the benchmarks as markdown tables (python3 standard library only).

Reads, under $CARGO_TARGET_DIR (default $HOME/.cache/eventdriven-target, as scripts/bench.sh)
or under the criterion directory given as the first argument:

- criterion's results (`criterion/<group>/<bench>/new/`): for every group holding an
  `eventdriven` benchmark, the median point estimate of each benchmark (`estimates.json`) and
  its throughput (`benchmark.json`);
- `ed-bench/latency.json` (the `latency` bench: round-trip percentiles, unloaded and loaded);
- `ed-bench/spawn.json` (the `spawn` bench: spawning idle actors, memory per actor).

Ratios are always **contender time / eventdriven time**: above 1 the contender takes longer
than eventdriven (eventdriven is faster), below 1 it is quicker (tokio at 0.40 = eventdriven
takes 2.5 x as long as raw tokio). For the other frameworks this reads "x times eventdriven's
time"; for tokio it is the same number as "eventdriven runs at x of tokio's throughput".

    scripts/bench_table.py [CRITERION_DIR] [--spread]
    scripts/bench_table.py --bridges RUN_DIR...

--spread adds, per benchmark, the fastest, median and slowest of criterion's samples (time
per iteration), which shows a bimodal workload that a median alone hides.

--bridges summarises the `bridges` bench (scripts/bench-bridges.sh): each RUN_DIR holds one
run's criterion groups `bridge_<broker>_<workload>`; per benchmark it prints the median of the
runs' medians, and the ratio raw / eventdriven of those (a ratio of 0.91 or more is the
"within 10 % of the raw client" target: eventdriven takes at most 1.1 x the raw time).
"""

import json
import os
import sys
from pathlib import Path

OURS = "eventdriven"
# Column order; anything else found in a group (controls) is listed after these.
CONTENDERS = ["eventdriven", "tokio", "kameo", "actix", "ractor", "xtra"]
GROUPS = ["tell_1to1", "ask_round_trip", "fanout_1to8", "monolith_10k"]
UNITS = {
    "tell_1to1": "per message",
    "ask_round_trip": "per round trip",
    "fanout_1to8": "per delivery",
    "monolith_10k": "per order",
}

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


def ordered(names):
    known = [n for n in CONTENDERS if n in names]
    return known + sorted(n for n in names if n not in CONTENDERS)


def criterion_tables(root: Path) -> bool:
    groups = {}
    for group in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "report"):
        benches = {}
        for bench in group.iterdir():
            if bench.is_dir() and bench.name != "report":
                found = load(bench)
                if found is not None:
                    benches[bench.name] = (found, bench)
        if OURS in benches:
            groups[group.name] = benches
    if not groups:
        print(f"no criterion group with an `{OURS}` benchmark in {root}", file=sys.stderr)
        return False
    names = [g for g in GROUPS if g in groups] + sorted(g for g in groups if g not in GROUPS)
    columns = [c for c in CONTENDERS if any(c in groups[g] for g in names)]

    print(f"Criterion medians from {root}.")
    print(
        f"Ratio = contender time / {OURS} time (above 1: {OURS} is faster; below 1: slower)."
    )
    print()
    print("Median time per message (per round trip, delivery, order); ratio in brackets:")
    print()
    print("| workload | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for g in names:
        (ours_ns, elements), _ = groups[g][OURS]
        n = elements or 1
        cells = []
        for c in columns:
            if c not in groups[g]:
                cells.append("–")
                continue
            (ns, _), _ = groups[g][c]
            cell = fmt_time(ns / n)
            cells.append(f"**{cell}**" if c == OURS else f"{cell} ({ns / ours_ns:.2f})")
        print(f"| {g} | " + " | ".join(cells) + " |")

    print()
    print("Every benchmark (controls included):")
    print()
    print("| workload | contender | msgs/iter | median / iter | per msg | throughput | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|")
    spreads = []
    for g in names:
        (ours_ns, elements), _ = groups[g][OURS]
        n = elements or 1
        for c in ordered(groups[g].keys()):
            (ns, _), bench = groups[g][c]
            ratio = "1" if c == OURS else f"{ns / ours_ns:.2f}"
            print(
                f"| {g} | {c} | {n} | {fmt_time(ns)} | {fmt_time(ns / n)} "
                f"| {fmt_rate(n * 1e9 / ns)} | {ratio} |"
            )
            found = spread(bench)
            if found is not None:
                lo, mid, hi = (fmt_time(x) for x in found)
                spreads.append(f"| {g} | {c} | {lo} | {mid} | {hi} |")
    if SPREAD and spreads:
        print()
        print("Spread of the samples (time per iteration):")
        print()
        print("| workload | contender | fastest | median | slowest |")
        print("|---|---|---:|---:|---:|")
        for row in spreads:
            print(row)
    return True


def us(ns: float) -> str:
    return f"{ns / 1000:.2f} µs" if ns < 10_000 else f"{ns / 1000:.1f} µs"


def latency_table(path: Path) -> None:
    if not path.is_file():
        print(f"(no {path}: run `cargo bench -p eventdriven-benches --bench latency`)")
        return
    data = json.loads(path.read_text())
    results = data["contenders"]
    print(
        f"Round-trip latency ({data['round_trips']} timed round trips per round, "
        f"median over {data['rounds']} rounds); ratio = contender / {OURS}:"
    )
    print()
    print(
        "| contender | p50 | p90 | p99 | p99.9 | p99 ratio | loaded p50 | loaded p99 "
        "| loaded p99.9 | loaded p99 ratio | B's load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    ours = results.get(OURS)
    for name in ordered(results.keys()):
        r = results[name]
        u = r["unloaded"]
        row = [name, us(u["p50"]), us(u["p90"]), us(u["p99"]), us(u["p999"])]
        row.append(f"{u['p99'] / ours['unloaded']['p99']:.2f}" if ours else "")
        loaded = r.get("loaded")
        if loaded:
            row += [us(loaded["p50"]), us(loaded["p99"]), us(loaded["p999"])]
            row.append(f"{loaded['p99'] / ours['loaded']['p99']:.2f}" if ours else "")
            row.append(fmt_rate(r["load_msgs_per_s"]))
        else:
            row += ["–"] * 5
        print("| " + " | ".join(row) + " |")


def spawn_table(path: Path) -> None:
    if not path.is_file():
        print(f"(no {path}: run `cargo bench -p eventdriven-benches --bench spawn`)")
        return
    runs = {}
    for run in json.loads(path.read_text()):
        runs.setdefault(run["contender"], []).append(run)

    def median(values):
        values = sorted(values)
        return values[len(values) // 2]

    rows = {}
    for name, rs in runs.items():
        n = rs[0]["count"]
        rows[name] = {
            "n": n,
            "reps": len(rs),
            "spawn": median(r["spawn_ns"] for r in rs),
            "ready": median(r["ready_ns"] for r in rs),
            "mem": median((r["rss_after"] - r["rss_before"]) / n for r in rs),
        }
    ours = rows.get(OURS)
    any_row = next(iter(rows.values()))
    print(
        f"Spawning {any_row['n']} idle actors, one process per contender and run, median of "
        f"{any_row['reps']} runs; ratio = contender / {OURS}:"
    )
    print()
    print(
        "| contender | spawn | per actor | ratio | ready (all handled 1 msg) "
        "| memory per actor | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ordered(rows.keys()):
        r = rows[name]
        t_ratio = f"{r['spawn'] / ours['spawn']:.2f}" if ours else ""
        m_ratio = f"{r['mem'] / ours['mem']:.2f}" if ours else ""
        print(
            f"| {name} | {fmt_time(r['spawn'])} | {fmt_time(r['spawn'] / r['n'])} | {t_ratio} "
            f"| {fmt_time(r['ready'])} | {r['mem']:.0f} B | {m_ratio} |"
        )


def bridges_table(runs) -> int:
    """Median over runs of each `bridge_*` benchmark's median, with ratios to eventdriven."""
    found = {}  # (group, bench) -> [median ns per iteration, one per run]
    elements = {}
    for run in runs:
        for group in sorted(p for p in Path(run).iterdir() if p.is_dir()):
            if not group.name.startswith("bridge_"):
                continue
            for bench in group.iterdir():
                got = load(bench) if bench.is_dir() else None
                if got is not None:
                    found.setdefault((group.name, bench.name), []).append(got[0])
                    elements[group.name] = got[1] or 1
    if not found:
        print(f"no bridge_* criterion results in {' '.join(runs)}", file=sys.stderr)
        return 1

    def median(values):
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    groups = sorted({g for g, _ in found})
    rows = ["raw_sequential", "raw_pipelined"]
    print(
        f"Median of {len(runs)} runs' criterion medians; events/s; ratio = raw time / "
        f"{OURS} time (at least 0.91: {OURS} within 10 % of the raw client)."
    )
    print()
    print(f"| broker | workload | {OURS} | " + " | ".join(rows) + " | runs (events/s, " + OURS + ") |")
    print("|---|---|---:|" + "---:|" * len(rows) + "---|")
    for g in groups:
        _, broker, workload = g.split("_", 2)
        n = elements[g]
        ours = found.get((g, OURS))
        if not ours:
            continue
        ours_ns = median(ours)
        cells = [f"**{fmt_rate(n * 1e9 / ours_ns)}**"]
        for r in rows:
            theirs = found.get((g, r))
            if not theirs:
                cells.append("–")
                continue
            ns = median(theirs)
            cells.append(f"{fmt_rate(n * 1e9 / ns)} ({ns / ours_ns:.2f})")
        each = ", ".join(fmt_rate(n * 1e9 / ns) for ns in ours)
        print(f"| {broker} | {workload} | " + " | ".join(cells) + f" | {each} |")
    print()
    print("Every benchmark, per run (events/s):")
    print()
    print("| group | benchmark | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " |")
    print("|---|---|" + "---:|" * len(runs))
    for (g, b), values in sorted(found.items()):
        n = elements[g]
        print(f"| {g} | {b} | " + " | ".join(fmt_rate(n * 1e9 / ns) for ns in values) + " |")
    return 0


def main() -> int:
    if "--bridges" in sys.argv[1:]:
        return bridges_table(ARGS)
    root = criterion_dir()
    ok = root.is_dir() and criterion_tables(root)
    if not root.is_dir():
        print(f"no criterion results in {root}: run scripts/bench.sh first", file=sys.stderr)
    reports = root.parent / "ed-bench"
    print()
    latency_table(reports / "latency.json")
    print()
    spawn_table(reports / "spawn.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
