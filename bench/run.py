#!/usr/bin/env python3
"""Conveyor benchmark harness: W3 (CSV -> drop a column -> Parquet, and -> CSV).

One command, from the repository root (bench/all.py runs this and everything else):

    python3 bench/run.py                          # 1M rows, 3 runs, Parquet and CSV
    python3 bench/run.py --rows 10000000 --runs 1

It builds the release binaries, creates bench/.venv with the Python peers from
PyPI, generates the data deterministically (bench/gen.py), runs every tool the
same number of times, checks every output's row count and that the dropped
column is gone (Parquet and CSV read back with polars, which honours quoted
newlines), prints a table and writes bench/results/w3_<rows>.json.

Measured per tool and output format: median wall seconds, input MB/s, peak RSS
of each process (long-running worker nodes: VmHWM from /proc before they stop).
Tools:
  raw-arrow               arrow-rs alone, one process (etl/examples/raw_pipeline.rs);
                          Parquet only: the example has no CSV writer
  conveyor-embedded       `conveyor run` with no broker (one process, every role)
  conveyor-embedded-p2    the same with `partitions = 2` on the extract
  conveyor-1-worker       one worker node process (default concurrency: one per
                          core and kind) + `conveyor run --config client.toml`
  conveyor-2-workers-p2   two worker node processes (concurrency 1 per kind each),
                          `partitions = 2`, + the client; the gathered load writes one file
  conveyor-embedded-fused, conveyor-embedded-fused-p2, conveyor-2-workers-fused-p2
                          the same with `fuse = true`: each (partition of the) flow
                          reads, drops and writes in one task, one pass
  polars, duckdb          single-process peers, installed in bench/.venv
  reference-pika-pandas   bench/reference.py bench_w3 (pika publisher + pandas daemons),
                          only with --reference (bench/all.py: at 1M only)

Importable: bench_w3(...) (see its docstring), ensure_data, ensure_venv, build,
Workers, delete_namespace, amqp_url, broker_up.
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
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
PEERS = ["polars==2.1.0", "duckdb==2.0.1"]
DROP = "note"
FORMATS = ("parquet", "csv")
CONVEYOR = ROOT / "target/release/conveyor"
RAW = ROOT / "target/release/examples/raw_pipeline"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def amqp_url():
    return os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


def broker_up(url=None):
    u = urlparse(url or amqp_url())
    try:
        socket.create_connection((u.hostname or "127.0.0.1", u.port or 5672), timeout=2).close()
        return True
    except OSError:
        return False


def build():
    log("building release binaries ...")
    sh(["cargo", "build", "--release", "-q", "-p", "conveyor-node", "-p", "conveyor-bench-ceiling"], cwd=ROOT)
    sh(["cargo", "build", "--release", "-q", "-p", "conveyor-etl", "--example", "raw_pipeline"], cwd=ROOT)


def ensure_venv(peers=PEERS):
    py = VENV / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", str(VENV)])
    sh([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *peers])
    return py


def ensure_data(rows):
    data = BENCH / "data" / f"rows_{rows}.csv"
    if not data.exists():
        data.parent.mkdir(parents=True, exist_ok=True)
        log(f"generating {data} ...")
        tmp = data.with_suffix(".csv.tmp")
        sh([sys.executable, str(BENCH / "gen.py"), "--rows", str(rows), "--out", str(tmp)])
        tmp.rename(data)
    return data


def timed(cmd, cwd=None, env=None):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS MB, stdout)."""
    with tempfile.NamedTemporaryFile("r") as t:
        start = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name, *cmd], cwd=cwd, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n"
                               f"{out.stdout[-1500:]}\n{out.stderr[-2500:]}")
        rss_kb = int(t.read().strip().splitlines()[-1])
    return seconds, rss_kb / 1024, out.stdout


CHECK = r'''
import csv, json, sys, polars as pl
out = []
for p in sys.argv[1:]:
    if p.endswith(".parquet"):
        n = pl.scan_parquet(p).select(pl.len()).collect().item()
        cols = list(pl.read_parquet_schema(p).keys())
    else:
        # A full CSV parse (quoted newlines stay inside their record), not a line count.
        with open(p, newline="", encoding="utf-8") as f:
            cols = next(csv.reader(f))
        n = pl.read_csv(p, infer_schema=False, columns=[cols[0]]).height
    out.append({"rows": n, "columns": cols})
print(json.dumps(out))
'''


def check_outputs(py, paths):
    """[{rows, columns}] of Parquet/CSV files, read with polars in the venv."""
    done = subprocess.run([str(py), "-c", CHECK, *map(str, paths)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def vm_hwm_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def delete_namespace(ns):
    """Deletes every queue named `<ns>.*` (needs rabbitmqctl on this machine); returns how many."""
    if not shutil.which("rabbitmqctl"):
        return None
    out = subprocess.run(["rabbitmqctl", "list_queues", "-q", "--no-table-headers", "name"],
                         capture_output=True, text=True)
    names = [q for q in out.stdout.split() if q.startswith(ns + ".")]
    for q in names:
        subprocess.run(["rabbitmqctl", "delete_queue", q], capture_output=True)
    return len(names)


SWEEP = r'''
import sys, pika
conn = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
for kind, name in (a.split(":", 1) for a in sys.argv[2:]):
    ch = conn.channel()
    (ch.queue_delete if kind == "q" else ch.exchange_delete)(name)
conn.close()
'''


def sweep(prefixes, py=VENV / "bin" / "python", url=None):
    """Deletes the queues and exchanges whose names start with any of `prefixes` (listed with
    rabbitmqctl, deleted with pika from the venv); returns the names, or None without rabbitmqctl."""
    if not shutil.which("rabbitmqctl"):
        return None
    names = []
    for what, kind in (("list_queues", "q"), ("list_exchanges", "x")):
        out = subprocess.run(["rabbitmqctl", what, "-q", "--no-table-headers", "name"], capture_output=True, text=True)
        names += [(kind, n) for n in out.stdout.split() if n.startswith(tuple(prefixes))]
    if names:
        subprocess.run([str(py), "-c", SWEEP, url or amqp_url(), *(f"{k}:{n}" for k, n in names)],
                       capture_output=True, timeout=120)
    return [n for _, n in names]


def node_common(url, ns, storage):
    return (f'[broker]\nurl = "{url}"\nnamespace = "{ns}"\n'
            f'[storage]\nartifacts = "{storage}/artifacts"\noutput_root = "{storage}/out"\n')


class Workers:
    """`count` worker node processes (every kind) on a fresh namespace, sharing `storage`.

    concurrency None: the node's default (one per core and kind). On exit: reads each
    worker's VmHWM (peak_rss_mb), stops them (SIGTERM) and deletes the namespace's queues.
    Also writes client.toml (`client_config`) for `conveyor run --config`."""

    def __init__(self, conveyor, work, url, count, concurrency=None, tag="w"):
        self.conveyor, self.work, self.url, self.count, self.conc = conveyor, Path(work), url, count, concurrency
        self.ns = f"bench-{tag}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.storage = self.work / f"store-{self.ns}"
        self.procs, self.peak_rss_mb, self.started = [], [], None

    def __enter__(self):
        common = node_common(self.url, self.ns, self.storage)
        conc = ""
        if self.conc:
            conc = "[workers.concurrency]\n" + "".join(f"{k} = {self.conc}\n" for k in ("extract", "transform", "load"))
        self.client_config = self.work / f"client-{self.ns}.toml"
        self.client_config.write_text(f'[node]\nname = "bench-client"\n{common}')
        self.started = time.perf_counter()
        for i in range(self.count):
            cfg = self.work / f"worker-{self.ns}-{i}.toml"
            cfg.write_text(f'[node]\nname = "bench-worker-{i}"\n{common}'
                           f'[workers]\nkinds = ["extract", "transform", "load"]\n'
                           f'input_roots = ["{BENCH / "data"}"]\n{conc}')
            self.procs.append(subprocess.Popen(
                [str(self.conveyor), "node", "--config", str(cfg)], env=dict(os.environ, CONVEYOR_LOG="warn"),
                stdout=subprocess.DEVNULL, stderr=open(self.work / f"worker-{self.ns}-{i}.log", "w")))
        return self

    def out(self, name):
        return self.storage / "out" / name

    def clear_artifacts(self):
        art = self.storage / "artifacts"
        if art.exists():
            for child in art.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)

    def alive(self):
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"worker {i} exited ({p.returncode}):\n"
                                   f"{(self.work / f'worker-{self.ns}-{i}.log').read_text()[-2000:]}")

    def __exit__(self, *exc):
        for p in self.procs:
            try:
                self.peak_rss_mb.append(vm_hwm_mb(p.pid) if p.poll() is None else float("nan"))
            except OSError:
                self.peak_rss_mb.append(float("nan"))
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        sweep([self.ns + "."], url=self.url)
        shutil.rmtree(self.storage, ignore_errors=True)


def flow_text(data, fmt, partitions=1, fuse=False):
    part = f"partitions = {partitions}\n" if partitions > 1 else ""
    fused = "fuse = true\n" if fuse else ""
    return (f'[flow]\nname = "w3"\n{fused}[tasks.extract]\nkind = "extract"\npath = "{data}"\n{part}'
            f'[tasks.drop]\nkind = "transform"\ninput = "extract"\nsteps = [{{ drop = ["{DROP}"] }}]\n'
            f'[tasks.load]\nkind = "load"\ninput = "drop"\npath = "w3.{fmt}"\n')


def bench_w3(py, data, rows, runs=3, formats=FORMATS, conveyor=CONVEYOR, raw=RAW, url=None,
             reference=False, broker=True):
    """W3 over `data` (a CSV of `rows` rows) for every tool and output format.

    Returns {"rows", "input_mb", "runs_per_tool", "results": [...], "skipped": [...]}; each result:
    tool, format, seconds (median), runs (all), mb_per_s, peak_rss_mb (max of the processes),
    and per tool: client_peak_rss_mb / worker_peak_rss_mb (list, one per worker process),
    vs_raw_arrow (÷ raw-arrow Parquet at this size), vs_polars (÷ polars, same format)."""
    url = url or amqp_url()
    mb = data.stat().st_size / 1e6
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-w3-"))
    flows = {}
    for fmt in formats:
        for p in (1, 2):
            for fuse in (False, True):
                flows[fmt, p, fuse] = work / f"w3-p{p}{'-fused' if fuse else ''}.{fmt}.toml"
                flows[fmt, p, fuse].write_text(flow_text(data, fmt, p, fuse))
    results, skipped = [], []

    def check(name, fmt, out):
        [meta] = check_outputs(py, [out])
        if meta["rows"] != rows or DROP in meta["columns"]:
            raise RuntimeError(f"{name} ({fmt}) wrote {meta['rows']} rows, columns {meta['columns']}; "
                               f"expected {rows} rows without {DROP!r}")

    def measure(name, fmt, fn, extra=None):
        """fn(out) -> (seconds, peak RSS MB); runs it `runs` times, checks each output."""
        times, rsses = [], []
        for i in range(runs):
            out = work / f"{name}-{i}.{fmt}"
            s, rss = fn(out)
            check(name, fmt, out)
            out.unlink()
            times.append(s)
            rsses.append(rss)
        entry = {"tool": name, "format": fmt, "seconds": statistics.median(times), "runs": times,
                 "mb_per_s": mb / statistics.median(times), "peak_rss_mb": max(rsses)}
        entry.update(extra or {})
        results.append(entry)
        log(f"  W3 {rows:,} {name} -> {fmt}: {entry['seconds']:.2f} s " + " ".join(f"{t:.2f}" for t in times))
        return entry

    def raw_run(out):
        s, rss, _ = timed([str(raw), str(data), DROP, str(out)])
        return s, rss

    def embedded(fmt, parts, fuse=False):
        def run(out):
            shutil.rmtree(work / "out", ignore_errors=True)
            s, rss, _ = timed([str(conveyor), "run", str(flows[fmt, parts, fuse])], cwd=work)
            shutil.move(str(work / "out" / f"w3.{fmt}"), out)
            return s, rss
        return run

    def polars_run(fmt):
        write = "write_parquet" if fmt == "parquet" else "write_csv"

        def run(out):
            code = f"import polars as pl; pl.read_csv({str(data)!r}).drop({DROP!r}).{write}({str(out)!r})"
            s, rss, _ = timed([str(py), "-c", code])
            return s, rss
        return run

    def duckdb_run(fmt):
        opts = "FORMAT PARQUET" if fmt == "parquet" else "FORMAT CSV, HEADER"

        def run(out):
            code = ("import duckdb; duckdb.sql(\"COPY (SELECT * EXCLUDE (" + DROP + ") FROM read_csv_auto('"
                    + str(data) + "')) TO '" + str(out) + "' (" + opts + ")\")")
            s, rss, _ = timed([str(py), "-c", code])
            return s, rss
        return run

    def cluster(name, fmt, count, conc, parts, fuse=False):
        with Workers(conveyor, work, url, count, conc, tag="w3") as w:
            time.sleep(2)  # the workers connect and declare their queues
            w.alive()

            def run(out):
                s, rss, _ = timed([str(conveyor), "run", str(flows[fmt, parts, fuse]), "--config", str(w.client_config)],
                                  cwd=work, env=dict(os.environ, CONVEYOR_LOG="warn"))
                shutil.move(str(w.out(f"w3.{fmt}")), out)
                w.clear_artifacts()
                w.alive()
                return s, rss
            entry = measure(name, fmt, run, {"workers": count, "worker_concurrency": conc or os.cpu_count(),
                                             "partitions": parts, "fused": fuse})
        entry["client_peak_rss_mb"] = entry["peak_rss_mb"]
        entry["worker_peak_rss_mb"] = w.peak_rss_mb
        entry["peak_rss_mb"] = max([entry["peak_rss_mb"], *w.peak_rss_mb])

    try:
        if "parquet" in formats:
            measure("raw-arrow", "parquet", raw_run)
        if "csv" in formats:
            skipped.append({"tool": "raw-arrow", "format": "csv",
                            "why": "etl/examples/raw_pipeline.rs writes Parquet only"})
        for fmt in formats:
            measure("conveyor-embedded", fmt, embedded(fmt, 1), {"partitions": 1})
            measure("conveyor-embedded-p2", fmt, embedded(fmt, 2), {"partitions": 2})
            measure("conveyor-embedded-fused", fmt, embedded(fmt, 1, True), {"partitions": 1, "fused": True})
            measure("conveyor-embedded-fused-p2", fmt, embedded(fmt, 2, True), {"partitions": 2, "fused": True})
            if broker:
                cluster("conveyor-1-worker", fmt, 1, None, 1)
                cluster("conveyor-2-workers-p2", fmt, 2, 1, 2)
                cluster("conveyor-2-workers-fused-p2", fmt, 2, 1, 2, True)
            measure("polars", fmt, polars_run(fmt))
            measure("duckdb", fmt, duckdb_run(fmt))
        if not broker:
            for name in ("conveyor-1-worker", "conveyor-2-workers-p2", "conveyor-2-workers-fused-p2"):
                skipped.append({"tool": name, "format": "both", "why": f"RabbitMQ is not reachable at {url}"})
        if reference and broker:
            sys.path.insert(0, str(BENCH))
            import reference as ref
            for fmt in formats:
                times, entries = [], []
                for i in range(runs):
                    r = ref.bench_w3(py, data, DROP, None, url, fmt=fmt)  # checks rows and columns itself
                    entries.append(r)
                    times.append(r["seconds"])
                med = statistics.median(times)
                results.append({"tool": "reference-pika-pandas", "format": fmt, "seconds": med, "runs": times,
                                "mb_per_s": mb / med, "peak_rss_mb": max(e["peak_rss_mb"] for e in entries),
                                "worker_peak_rss_mb": [max(e[f"{k}_peak_rss_mb"] for e in entries)
                                                       for k in ("extract", "transform", "load")],
                                "client_peak_rss_mb": max(e["publisher_peak_rss_mb"] for e in entries),
                                "task_s": [e["task_s"] for e in entries]})
                log(f"  W3 {rows:,} reference -> {fmt}: {med:.2f} s " + " ".join(f"{t:.2f}" for t in times))
        elif reference:
            skipped.append({"tool": "reference-pika-pandas", "format": "both",
                            "why": f"RabbitMQ is not reachable at {url}"})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    raw_s = next((r["seconds"] for r in results if r["tool"] == "raw-arrow"), None)
    for r in results:
        r["vs_raw_arrow"] = r["seconds"] / raw_s if raw_s else None
        pol = next((x["seconds"] for x in results if x["tool"] == "polars" and x["format"] == r["format"]), None)
        r["vs_polars"] = r["seconds"] / pol if pol else None
    return {"rows": rows, "input_mb": mb, "runs_per_tool": runs, "results": results, "skipped": skipped}


def rss_text(r):
    if "worker_peak_rss_mb" in r:
        return (f"client {r['client_peak_rss_mb']:.0f}, workers "
                + " / ".join(f"{x:.0f}" for x in r["worker_peak_rss_mb"]))
    return f"{r['peak_rss_mb']:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3, help="runs per tool; the median counts")
    ap.add_argument("--formats", default="parquet,csv")
    ap.add_argument("--reference", action="store_true", help="also the pika+pandas reference design")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        build()
    log("installing peers into bench/.venv ...")
    py = ensure_venv(PEERS + (["pika==1.3.2", "pandas==3.1.1", "pyarrow==26.0.1"] if args.reference else []))
    data = ensure_data(args.rows)
    up = broker_up()
    if not up:
        log(f"RabbitMQ is not reachable at {amqp_url()}: skipping the across-process runs")
    report = bench_w3(py, data, args.rows, args.runs, tuple(args.formats.split(",")), reference=args.reference,
                      broker=up)
    report["workload"] = "W3: CSV -> drop a column -> Parquet / CSV"
    report["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    (BENCH / "results").mkdir(exist_ok=True)
    path = BENCH / "results" / f"w3_{args.rows}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nW3 CSV -> drop '{DROP}', {args.rows:,} rows, {report['input_mb']:.0f} MB, median of {args.runs} runs")
    print(f"{'tool':<24}{'out':<8}{'seconds':>9}{'MB/s':>8}{'x raw':>8}{'x polars':>9}  peak RSS MB")
    for r in report["results"]:
        raw = f"{r['vs_raw_arrow']:.2f}" if r["vs_raw_arrow"] else "-"
        pol = f"{r['vs_polars']:.2f}" if r["vs_polars"] else "-"
        print(f"{r['tool']:<24}{r['format']:<8}{r['seconds']:>9.2f}{r['mb_per_s']:>8.0f}{raw:>8}{pol:>9}  {rss_text(r)}")
    for s in report["skipped"]:
        print(f"skipped: {s['tool']} ({s['format']}): {s['why']}")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
