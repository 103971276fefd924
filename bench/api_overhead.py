#!/usr/bin/env python3
"""W1 with the HTTP API and metrics on against off, alternating, in one run.

    python3 bench/api_overhead.py                 # 4 rounds of 2000 flows each way
    python3 bench/api_overhead.py --rounds 3 --w1 1000 --no-build

Each round runs bench/flows.py's Conveyor W1 (N tiny three-task flows at
once) and W2 (flows one at a time) twice, in alternating order:
  off  the coordinator node with `[api] listen = "off"` and no `[metrics]`;
  on   the coordinator serving the API, both nodes serving /metrics, and a
       poller that, once a second while the flows run, asks for the first
       page of runs, the newest run, and both nodes' /metrics, as a dashboard
       and a Prometheus scraper would.
The first round is a warm-up (this machine's first W1 of a series runs
fast) and is left out of the medians. Prints each round and the medians of
flows/s, CPU ms per task and W2 p50; writes bench/results/api_overhead.json.
"""
import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flows  # noqa: E402

ROOT = flows.ROOT


def spare_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def poller(urls, stats):
    """Fetches every URL once a second until the block ends; counts answers."""
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            for url in urls:
                try:
                    with urllib.request.urlopen(url, timeout=5) as r:
                        r.read()
                    stats["ok"] += 1
                except Exception as e:  # noqa: BLE001 - counted and shown
                    stats["errors"] += 1
                    stats["last_error"] = f"{url}: {e}"
            stop.wait(1.0)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def one(py, conveyor, w1, w2, conc, on):
    work = Path(tempfile.mkdtemp(prefix="conveyor-apiab-"))
    try:
        if not on:
            return flows.bench_conveyor(py, conveyor, work, w1, w2, conc, coord_extra='[api]\nlisten = "off"\n'), None
        api, m_coord, m_worker = spare_port(), spare_port(), spare_port()
        stats = {"ok": 0, "errors": 0}
        base = f"http://127.0.0.1:{api}"
        urls = [f"{base}/api/v1/runs?limit=50", f"http://127.0.0.1:{m_coord}/metrics",
                f"http://127.0.0.1:{m_worker}/metrics"]
        r = flows.bench_conveyor(
            py, conveyor, work, w1, w2, conc,
            coord_extra=f'[api]\nlisten = "127.0.0.1:{api}"\n[metrics]\nlisten = "127.0.0.1:{m_coord}"\n',
            worker_extra=f'[metrics]\nlisten = "127.0.0.1:{m_worker}"\n',
            during=lambda: poller(urls, stats))
        return r, stats
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="rounds of off+on, the first being a warm-up")
    ap.add_argument("--w1", type=int, default=2000, help="flows submitted at once per run")
    ap.add_argument("--w2", type=int, default=50, help="flows one at a time per run")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    args = ap.parse_args()
    if not args.no_build:
        print("building the release binary ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "conveyor-node"], cwd=ROOT, check=True)
    conveyor = ROOT / "target/release/conveyor"
    py = flows.ensure_venv()
    rows = []
    for rnd in range(args.rounds):
        order = [False, True] if rnd % 2 == 0 else [True, False]
        for on in order:
            r, stats = one(py, conveyor, args.w1, args.w2, args.concurrency, on)
            row = {"round": rnd, "api": "on" if on else "off", "flows_per_s": r["w1_flows_per_s"],
                   "cpu_ms_per_task": r["w1_cpu_ms_per_task"], "w2_p50_ms": r["w2_p50_ms"], "poll": stats}
            rows.append(row)
            poll = f"  polls ok {stats['ok']} errors {stats['errors']}" if stats else ""
            print(f"round {rnd} api {row['api']:<3} {row['flows_per_s']:8.0f} flows/s "
                  f"{row['cpu_ms_per_task']:6.2f} CPU ms/task  W2 p50 {row['w2_p50_ms']:6.1f} ms{poll}",
                  flush=True)
            if stats and stats["errors"]:
                print(f"  last poll error: {stats.get('last_error')}", flush=True)
    counted = [r for r in rows if r["round"] > 0] or rows
    print(f"\nmedians over rounds 1..{args.rounds - 1} ({args.w1} flows per W1 run):")
    summary = {}
    for mode in ("off", "on"):
        rs = [r for r in counted if r["api"] == mode]
        summary[mode] = {k: statistics.median(r[k] for r in rs) for k in ("flows_per_s", "cpu_ms_per_task", "w2_p50_ms")}
        s = summary[mode]
        print(f"  api {mode:<3} {s['flows_per_s']:8.0f} flows/s {s['cpu_ms_per_task']:6.2f} CPU ms/task "
              f"W2 p50 {s['w2_p50_ms']:6.1f} ms")
    ratio = summary["on"]["flows_per_s"] / summary["off"]["flows_per_s"]
    print(f"  on/off flows/s: {ratio:.2f}")
    spread = [r["flows_per_s"] for r in counted if r["api"] == "off"]
    if len(spread) > 1:
        print(f"  off runs spread: {min(spread):.0f}..{max(spread):.0f} flows/s")
    out = ROOT / "bench" / "results" / "api_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "medians": summary, "on_off_ratio": ratio,
                               "cpus": os.cpu_count()}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
