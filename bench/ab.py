#!/usr/bin/env python3
"""Before/after check of one change: W1 and W3 of two builds, run alternately.

Shared machines are noisy, so a change is judged by runs of the two builds
interleaved in the same session, never by figures taken on different days.

    git worktree add ../before <commit>      # and build its release binary there
    python3 bench/ab.py --before ../before --after . --rounds 3

Each of BEFORE and AFTER is a checkout with its release binary built
(target/release/conveyor). Per round, in before/after order:
  W3  `conveyor run` embedded over the same generated CSV (bench/gen.py, default
      1M rows): drop a column, write Parquet, and CSV; unfused and `fuse = true`.
      Wall seconds of each run, and its CPU seconds (user + system).
  W1  each checkout's own `bench/flows.py --no-build --conveyor-only` (its own
      client, since the wire contract may differ between the two builds):
      flows/s for N tiny flows at once, CPU-ms per task (coordinator and
      worker, the figure least moved by a noisy machine), and W2 p50 latency.
Prints the per-round figures and the medians, and writes
bench/results/ab.json. Needs RabbitMQ for W1 (skipped without it).
"""
import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def broker_up(host="127.0.0.1", port=5672):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def ensure_data(rows):
    data = BENCH / "data" / f"rows_{rows}.csv"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        log(f"generating {rows:,} rows into {data} ...")
        subprocess.run([sys.executable, str(BENCH / "gen.py"), "--rows", str(rows), "--out", str(data)], check=True)
    return data


def w3_flow(dir_, data, fmt, fuse):
    flow = dir_ / f"w3_{fmt}_{'fused' if fuse else 'plain'}.toml"
    flow.write_text(
        f'[flow]\nname = "w3"\nfuse = {"true" if fuse else "false"}\n'
        f'[tasks.extract]\nkind = "extract"\npath = "{data}"\n'
        f'[tasks.transform]\nkind = "transform"\ninput = "extract"\nsteps = [{{ drop = ["note"] }}]\n'
        f'[tasks.load]\nkind = "load"\ninput = "transform"\npath = "w3.{fmt}"\n'
    )
    return flow


def time_w3(binary, flow, work):
    out = work / "out"
    if out.exists():
        subprocess.run(["rm", "-rf", str(out), str(work / ".conveyor")], check=True)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([str(binary), "run", str(flow), "--json"], cwd=work, capture_output=True, text=True)
    took = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{binary} {flow.name} failed:\n{done.stderr}")
    report = json.loads(done.stdout)
    assert report["state"] == "Succeeded", report
    return took, cpu


def run_w1(checkout, flows, latency):
    done = subprocess.run(
        [sys.executable, str(checkout / "bench" / "flows.py"), "--no-build", "--conveyor-only", "--no-fused",
         "--w1", str(flows), "--w2", str(latency)],
        cwd=checkout, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"W1 in {checkout} failed:\n{done.stdout}\n{done.stderr}")
    report = json.loads((checkout / "bench" / "results" / "flows.json").read_text())
    row = next(r for r in report["results"] if r["system"] == "conveyor")
    return {"flows_per_s": row["w1_flows_per_s"], "w2_p50_ms": row["w2_p50_ms"],
            "cpu_ms_per_task": row["w1_cpu_ms_per_task"],
            # [coordinator, worker]
            "cpu_s_per_process": row["w1_cpu_s_per_process"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="checkout of the build before the change")
    ap.add_argument("--after", type=Path, default=ROOT, help="checkout of the build after it (default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1_000_000, help="W3 input rows")
    ap.add_argument("--w1", type=int, default=2000, help="W1 flows at once")
    ap.add_argument("--w2", type=int, default=100, help="W2 flows one at a time")
    ap.add_argument("--no-w1", action="store_true")
    args = ap.parse_args()
    builds = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name, checkout in builds.items():
        if not (checkout / "target/release/conveyor").exists():
            raise SystemExit(f"{name}: build {checkout}/target/release/conveyor first (cargo build --release -p conveyor-node)")
    data = ensure_data(args.rows)
    w1 = not args.no_w1 and broker_up()
    if not args.no_w1 and not w1:
        log("RabbitMQ is not reachable on 127.0.0.1:5672: skipping W1")
    work = Path(tempfile.mkdtemp(prefix="conveyor-ab-"))
    cases = [(fmt, fuse) for fmt in ("parquet", "csv") for fuse in (False, True)]
    flows = {case: w3_flow(work, data, *case) for case in cases}
    results = {name: {"w3": {f"{fmt}{'-fused' if fuse else ''}": [] for fmt, fuse in cases},
                      "w3_cpu": {f"{fmt}{'-fused' if fuse else ''}": [] for fmt, fuse in cases}, "w1": []}
               for name in builds}
    for r in range(1, args.rounds + 1):
        for name, checkout in builds.items():
            binary = checkout / "target/release/conveyor"
            for (fmt, fuse), flow in flows.items():
                took, cpu = time_w3(binary, flow, work)
                results[name]["w3"][f"{fmt}{'-fused' if fuse else ''}"].append(took)
                results[name]["w3_cpu"][f"{fmt}{'-fused' if fuse else ''}"].append(cpu)
                log(f"round {r} {name:<6} W3 {fmt:<7} {'fused' if fuse else 'plain'}: {took:.2f} s, CPU {cpu:.2f} s")
            if w1:
                figures = run_w1(checkout, args.w1, args.w2)
                results[name]["w1"].append(figures)
                log(f"round {r} {name:<6} W1 {figures['flows_per_s']:.0f} flows/s, "
                    f"{figures['cpu_ms_per_task']:.2f} CPU-ms/task (coordinator, worker CPU s: "
                    f"{' '.join(f'{x:.1f}' for x in figures['cpu_s_per_process'])}), W2 p50 {figures['w2_p50_ms']:.1f} ms")
    print(f"\nBefore/after, {args.rounds} alternating rounds; W3 over {args.rows:,} rows (median s, runs)")
    for figure, label in (("w3", "wall"), ("w3_cpu", "CPU ")):
        for key in results["before"][figure]:
            b, a = results["before"][figure][key], results["after"][figure][key]
            mb, ma = statistics.median(b), statistics.median(a)
            print(f"  W3 {key:<15} {label} before {mb:6.2f} ({' '.join(f'{x:.2f}' for x in b)})"
                  f"  after {ma:6.2f} ({' '.join(f'{x:.2f}' for x in a)})  after/before {ma / mb:.2f}")
    if w1:
        for metric, unit in (("flows_per_s", "flows/s"), ("cpu_ms_per_task", "CPU-ms/task"), ("w2_p50_ms", "ms")):
            b = [x[metric] for x in results["before"]["w1"]]
            a = [x[metric] for x in results["after"]["w1"]]
            mb, ma = statistics.median(b), statistics.median(a)
            print(f"  W1 {metric:<15} before {mb:6.2f} ({' '.join(f'{x:.2f}' for x in b)})"
                  f"  after {ma:6.2f} ({' '.join(f'{x:.2f}' for x in a)}) {unit}  after/before {ma / mb:.2f}")
    (BENCH / "results").mkdir(exist_ok=True)
    out = BENCH / "results" / "ab.json"
    out.write_text(json.dumps({"rounds": args.rounds, "rows": args.rows, "builds": {k: str(v) for k, v in builds.items()},
                               "results": results}, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
