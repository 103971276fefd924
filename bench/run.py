#!/usr/bin/env python3
"""Conveyor benchmark harness: W3 (CSV -> drop a column -> Parquet).

One command, from the repository root:

    python3 bench/run.py            # 1M rows
    python3 bench/run.py --rows 10000000

It builds the release binaries, creates its own virtual environment
(bench/.venv) with the Python peers from PyPI, generates the data
deterministically (bench/gen.py), runs every tool the same number of times,
checks every output's row count, prints a table of figures and ratios
measured in this run, and writes bench/results/w3_<rows>.json.

Measured per tool: median wall seconds, input MB/s, peak RSS of each process.
Tools:
  raw-arrow          the single-process arrow-rs ceiling (etl/examples/raw_pipeline.rs)
  conveyor-embedded  `conveyor run` with no broker (one process, every role)
  conveyor-cluster   a worker node process + `conveyor run --config` on RabbitMQ
  polars, duckdb     single-process peers, installed in bench/.venv

W1/W2 (tiny flows, against Celery) are in bench/flows.py. Not yet measured
(issue 4): W4, the raw lapin ceiling, the reference pika+pandas design and
Prefect.
"""
import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
PEERS = ["polars==2.1.0", "duckdb==2.0.1"]
DROP = "note"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def timed(cmd, cwd=None, env=None):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS MB, stdout)."""
    with tempfile.NamedTemporaryFile("r") as t:
        start = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name, *cmd], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed ({out.returncode}):\n{out.stderr[-2000:]}")
        rss_kb = int(t.read().strip().splitlines()[-1])
    return seconds, rss_kb / 1024, out.stdout


def ensure_venv():
    py = VENV / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", str(VENV)])
    sh([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEERS])
    return py


def parquet_rows(py, path):
    code = f"import polars as pl; print(pl.scan_parquet({str(path)!r}).select(pl.len()).collect().item())"
    return int(subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True).stdout)


def broker_up():
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3, help="runs per tool; the median counts")
    args = ap.parse_args()

    print("building release binaries ...", file=sys.stderr)
    sh(["cargo", "build", "--release", "-q", "-p", "conveyor-node"], cwd=ROOT)
    sh(["cargo", "build", "--release", "-q", "-p", "conveyor-etl", "--example", "raw_pipeline"], cwd=ROOT)
    conveyor = ROOT / "target/release/conveyor"
    raw = ROOT / "target/release/examples/raw_pipeline"
    print("installing peers into bench/.venv ...", file=sys.stderr)
    py = ensure_venv()

    data = BENCH / "data" / f"rows_{args.rows}.csv"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {data} ...", file=sys.stderr)
        sh([sys.executable, str(BENCH / "gen.py"), "--rows", str(args.rows), "--out", str(data)])
    mb = data.stat().st_size / 1e6
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    flow = work / "w3.toml"
    flow.write_text(
        f'[flow]\nname = "w3"\n[tasks.extract]\nkind = "extract"\npath = "{data}"\n'
        f'[tasks.drop]\nkind = "transform"\ninput = "extract"\nsteps = [{{ drop = ["{DROP}"] }}]\n'
        f'[tasks.load]\nkind = "load"\ninput = "drop"\npath = "w3.parquet"\n'
    )

    def run_raw(out):
        return timed([str(raw), str(data), DROP, str(out)])

    def run_embedded(out):
        shutil.rmtree(work / "out", ignore_errors=True)
        s, rss, _ = timed([str(conveyor), "run", str(flow)], cwd=work)
        shutil.move(str(work / "out" / "w3.parquet"), out)
        return s, rss, ""

    def run_polars(out):
        code = f"import polars as pl; pl.read_csv({str(data)!r}).drop({DROP!r}).write_parquet({str(out)!r})"
        return timed([str(py), "-c", code])

    def run_duckdb(out):
        code = ("import duckdb; duckdb.sql(\"COPY (SELECT * EXCLUDE (" + DROP + ") FROM read_csv_auto('"
                + str(data) + "')) TO '" + str(out) + "' (FORMAT PARQUET)\")")
        return timed([str(py), "-c", code])

    cluster = None
    ns = f"bench-{os.getpid()}"
    if broker_up():
        storage = work / "cluster"
        common = (f'[broker]\nurl = "amqp://guest:guest@127.0.0.1:5672/%2f"\nnamespace = "{ns}"\n'
                  f'[storage]\nartifacts = "{storage}/artifacts"\noutput_root = "{storage}/out"\n')
        (work / "worker.toml").write_text(f'[node]\nname = "bench-worker"\n{common}[workers]\nkinds = ["extract", "transform", "load"]\n')
        (work / "client.toml").write_text(f'[node]\nname = "bench-client"\n{common}')
        worker = subprocess.Popen([str(conveyor), "node", "--config", str(work / "worker.toml")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.5)

        def run_cluster(out):
            shutil.rmtree(storage / "out", ignore_errors=True)
            s, rss, _ = timed([str(conveyor), "run", str(flow), "--config", str(work / "client.toml")], cwd=work)
            shutil.move(str(storage / "out" / "w3.parquet"), out)
            return s, rss, ""
        cluster = (worker, run_cluster)

    tools = [("raw-arrow", run_raw), ("conveyor-embedded", run_embedded)]
    if cluster:
        tools.append(("conveyor-cluster", cluster[1]))
    tools += [("polars", run_polars), ("duckdb", run_duckdb)]

    results = []
    try:
        for name, fn in tools:
            times, rsses = [], []
            for i in range(args.runs):
                out = work / f"{name}-{i}.parquet"
                s, rss, _ = fn(out)
                rows = parquet_rows(py, out)
                if rows != args.rows:
                    raise RuntimeError(f"{name} wrote {rows} rows, expected {args.rows}")
                out.unlink()
                times.append(s)
                rsses.append(rss)
            entry = {"tool": name, "seconds": statistics.median(times), "runs": times,
                     "mb_per_s": mb / statistics.median(times), "peak_rss_mb": max(rsses)}
            if name == "conveyor-cluster":
                status = Path(f"/proc/{cluster[0].pid}/status").read_text()
                hwm = next(l for l in status.splitlines() if l.startswith("VmHWM"))
                entry["worker_peak_rss_mb"] = int(hwm.split()[1]) / 1024
            results.append(entry)
            print(f"  {name}: {entry['seconds']:.2f}s", file=sys.stderr)
    finally:
        if cluster:
            cluster[0].terminate()
            cluster[0].wait()
            # Best effort: leave the shared broker as we found it.
            if shutil.which("rabbitmqctl"):
                for q in [f"{ns}.tasks.{k}" for k in ("extract", "transform", "load")] + [f"{ns}.dead"]:
                    subprocess.run(["rabbitmqctl", "delete_queue", q], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    ceiling = next(r["seconds"] for r in results if r["tool"] == "raw-arrow")
    for r in results:
        r["vs_raw_arrow"] = r["seconds"] / ceiling
    report = {
        "workload": "W3: CSV -> drop a column -> Parquet",
        "rows": args.rows, "input_mb": mb, "runs_per_tool": args.runs,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "cpu": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                                 if l.startswith("model name")), "?")},
        "versions": {"conveyor": subprocess.run([str(conveyor), "--version"], capture_output=True, text=True).stdout.strip(),
                     "peers": PEERS, "python": platform.python_version()},
        "results": results,
    }
    (BENCH / "results").mkdir(exist_ok=True)
    path = BENCH / "results" / f"w3_{args.rows}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nW3 CSV -> drop '{DROP}' -> Parquet, {args.rows:,} rows, {mb:.0f} MB, median of {args.runs} runs")
    print(f"{'tool':<20}{'seconds':>9}{'MB/s':>8}{'x raw-arrow':>13}  peak RSS MB")
    for r in results:
        rss = f"{r['peak_rss_mb']:.0f}"
        if "worker_peak_rss_mb" in r:
            rss = f"client {rss}, worker {r['worker_peak_rss_mb']:.0f}"
        print(f"{r['tool']:<20}{r['seconds']:>9.2f}{r['mb_per_s']:>8.0f}{r['vs_raw_arrow']:>13.2f}  {rss}")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
