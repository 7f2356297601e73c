#!/usr/bin/env python3
"""Compares two release builds of nodenet's benchmarks side by side (a refactor must not slow
anything down): every round runs netlink-bench, apply-bench and service-bench of build A and of
build B, interleaved (A B in odd rounds, B A in even ones), and reports for each figure the
median of the in-round ratios B/A with their range.

    Benchmarks/scripts/compare-builds.py BEFORE_CHECKOUT AFTER_CHECKOUT [--rounds 5] [--only netlink,apply,service]

Each checkout needs `swift build -c release --product netlink-bench` (and apply-bench,
service-bench) done. Needs root (the benchmarks build namespaces of their own)."""
import json, statistics, subprocess, sys

args = sys.argv[1:]
rounds = 5
benches = {"netlink", "apply", "service"}
if "--only" in args:
    i = args.index("--only"); benches = set(args[i + 1].split(",")); del args[i:i + 2]
if "--rounds" in args:
    i = args.index("--rounds"); rounds = int(args[i + 1]); del args[i:i + 2]
if len(args) != 2:
    sys.exit(__doc__)
builds = {"A": args[0], "B": args[1]}

def run(build, bench, extra):
    out = subprocess.run([f"{builds[build]}/.build/release/{bench}", *extra, "--json"], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit(f"{bench} in {builds[build]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)

def figures(build):
    f = {}
    if "netlink" in benches:
        nb = run(build, "netlink-bench", ["--count", "100000", "--repeat", "1"])[0]
        f["netlink: add 100k routes s"] = nb["nodenetAddSeconds"]
        f["netlink: dump 100k routes s"] = nb["nodenetDumpSeconds"]
    if "apply" in benches:
        ab = run(build, "apply-bench", ["--repeat", "1"])
        f["apply: 250 pods + 1000 nodes s"] = ab["applySeconds"]
        f["apply: no-op re-apply s"] = ab["reapplySeconds"]
    sb = run(build, "service-bench", ["--sizes", "1,10000", "--seconds", "1", "--repeat", "1"]) if "service" in benches else {"sizes": []}
    for size in sb["sizes"]:
        n = size["services"]
        f[f"service: program {n} s"] = size["nodenetAddSeconds"]
        f[f"service: remove {n} s"] = size["nodenetRemoveSeconds"]
        f[f"service: conn median at {n} us"] = size["nodenet"]["medianMicroseconds"]
    return f

ratios, values = {}, {"A": {}, "B": {}}
for r in range(rounds):
    order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
    got = {b: figures(b) for b in order}
    for k in got["A"]:
        ratios.setdefault(k, []).append(got["B"][k] / got["A"][k])
        for b in "AB": values[b].setdefault(k, []).append(got[b][k])
    print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)

print(f"{'figure':36} {'A median':>10} {'B median':>10} {'B/A median':>10}  range")
for k, rs in ratios.items():
    print(f"{k:36} {statistics.median(values['A'][k]):10.4f} {statistics.median(values['B'][k]):10.4f} "
          f"{statistics.median(rs):10.3f}  {min(rs):.3f}-{max(rs):.3f}")
