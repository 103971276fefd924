#!/usr/bin/env python3
"""The reference design of issue 4, rebuilt and measured: pika publisher + pandas daemons.

    python3 bench/reference.py --rows 1000000 [--w1 400] [--w2 100] [--publishers 4] [--prefect]

Prints the figures and a JSON document. Importable: bench/run.py and bench/flows.py call
ensure_peers, bench_w3, bench_flows and bench_prefect_w2 (all run from the system python;
pika, pandas and Prefect run only in the venv's python `py`, in child processes).

The design is the seed's (shared/seed/000_*.txt, the CivicDataLab article, and the same
authors' TasksRpcClient / publish_task_and_process_result). Faithful here:
- per task, a NEW BlockingConnection (heartbeat=999), exchange_declare of the topic
  exchange, a durable reply queue with a basic_consume (auto_ack), a `get-ack` probe published
  with reply_to and a correlation id, `process_data_events(time_limit=2)`, "No worker to pick
  the task" if nothing came back, else the task as JSON {"context", "data_path"} and a wait
  without a time limit for the result;
- the flow runs extract -> transform -> load one after the other; only file paths travel
  (extract and transform write CSV temp files, see bench/ref_worker.py);
- the three daemons, one per kind (bench/ref_worker.py), one process each.
Note: process_data_events(time_limit=2) returns as soon as the probe's reply arrives; the
2 s is an upper bound, paid in full only when no worker answers.

Changed for the benchmark:
- every name carries a namespace (`<ns>.topic_logs`, `<ns>.<kind>`, `<ns>.reply.<id>`);
  the seed's server-named reply queues leak (durable, never deleted, connection never
  closed): here they are auto_delete and each task's connection is closed;
- a worker's error string raises at once (the seed logs it and lets it flow on as a path);
- the wait for the result loops until a reply is there (the seed returns whatever event woke
  it); the harness bounds every publisher process with a timeout instead of waiting forever;
- the seed's Prefect tasks also save a Django model (set_task_model_values): left out;
- no Prefect by default (the issue's "optionally driven by a Prefect flow"): plain function
  calls in the same order; bench_prefect_w2 runs the same tasks as a Prefect 3 @flow of
  @tasks, with Prefect's ephemeral local server (no `prefect server` to run).
"""
import argparse
import csv
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
VENV = BENCH / ".venv"
WORKER = BENCH / "ref_worker.py"
PEERS = ["pika==1.3.2", "pandas==3.1.1", "pyarrow==26.0.1"]
PREFECT = ["prefect==3.9.1"]
URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
KINDS = ("extract", "transform", "load")
DROP = "note"
TINY = "a,b,c\n1,x,007\n2,y,008\n3,z,009\n"
FAILED = "Worker failed with an error - "

# ---------------------------------------------------------------------------------------
# Publisher side: runs in the venv's python (`reference.py _publish ...`), imports pika.


class TasksRpcClient:
    """The seed's publisher: one connection, reply queue and probe per task."""

    def __init__(self, url, ns, task_name, context, data_path):
        import pika
        self.pika = pika
        params = pika.URLParameters(url)
        params.heartbeat = 999
        self.connection = pika.BlockingConnection(params)
        self.routing_key, self.context, self.data_path = task_name, context, data_path
        self.exchange = f"{ns}.topic_logs"
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange=self.exchange, exchange_type="topic")
        self.callback_queue = f"{ns}.reply.{uuid.uuid4().hex}"
        self.channel.queue_declare(queue=self.callback_queue, exclusive=False, durable=True, auto_delete=True)
        self.channel.basic_consume(queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True)
        self.response = None
        self.corr_id = None

    def on_response(self, ch, method, props, body):
        if self.corr_id == props.correlation_id:
            self.response = body

    def publish(self, body):
        self.channel.basic_publish(exchange=self.exchange, routing_key=self.routing_key, body=body,
                                   properties=self.pika.BasicProperties(reply_to=self.callback_queue,
                                                                        correlation_id=self.corr_id))

    def call(self):
        self.response = None
        self.corr_id = str(uuid.uuid4())
        self.publish(b"get-ack")  # first see if a worker is up
        self.connection.process_data_events(time_limit=2)
        if self.response is None:
            return (FAILED + "No worker to pick the task").encode("utf-8")
        self.response = None
        self.publish(json.dumps({"context": self.context, "data_path": self.data_path}))
        while self.response is None:
            self.connection.process_data_events(time_limit=None)
        return self.response


def publish_task_and_process_result(url, ns, task_name, context, data_path):
    client = TasksRpcClient(url, ns, task_name, context, data_path)
    try:
        data = client.call().decode("utf-8")
    finally:
        client.connection.close()
    if data.startswith(FAILED):
        raise RuntimeError(f"{task_name}: {data}")
    return data


def etl_flow(url, ns, src, drop, out, fmt):
    """extract -> transform -> load, sequential; returns (output path, seconds per task)."""
    marks = [time.perf_counter()]
    path = publish_task_and_process_result(url, ns, "extract", {"url": src}, None)
    marks.append(time.perf_counter())
    path = publish_task_and_process_result(url, ns, "transform", {"columns": drop}, path)
    marks.append(time.perf_counter())
    path = publish_task_and_process_result(url, ns, "load", {"format": fmt, "output": out}, path)
    marks.append(time.perf_counter())
    return path, [b - a for a, b in zip(marks, marks[1:])]


def prefect_etl_flow():
    """The seed's shape in Prefect 3: a @flow calling three @tasks one after the other."""
    from prefect import flow, task

    @task
    def publish_extract(url, ns, src):
        return publish_task_and_process_result(url, ns, "extract", {"url": src}, None)

    @task
    def publish_transform(url, ns, drop, path):
        return publish_task_and_process_result(url, ns, "transform", {"columns": drop}, path)

    @task
    def publish_load(url, ns, out, fmt, path):
        return publish_task_and_process_result(url, ns, "load", {"format": fmt, "output": out}, path)

    @flow(name="etl_flow")
    def etl(url, ns, src, drop, out, fmt):
        return publish_load(url, ns, out, fmt, publish_transform(url, ns, drop, publish_extract(url, ns, src)))

    return lambda url, ns, src, drop, out, fmt: (etl(url, ns, src, drop, out, fmt), [])


def vm_hwm_mb(pid="self"):
    """Peak resident set (VmHWM) of a live process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid="self"):
    """utime + stime of a live process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publisher_main(argv):
    """`_publish w3 URL NS SRC DROP OUT FMT` or `_publish flows URL NS SRC OUTDIR N WARM PREFECT`.

    flows mode runs WARM untimed flows, prints READY, waits for a line on stdin, then runs N
    flows one after the other. Both modes print one `RESULT {json}` line."""
    mode, url, ns = argv[:3]
    if mode == "w3":
        src, drop, out, fmt = argv[3:7]
        cpu0 = cpu_s()
        path, tasks = etl_flow(url, ns, src, drop, out, fmt)
        result = {"flow_s": sum(tasks), "task_s": dict(zip(KINDS, tasks)), "output": path,
                  "peak_rss_mb": vm_hwm_mb(), "cpu_s": cpu_s() - cpu0}
    else:
        src, outdir, n, warm, use_prefect = argv[3], Path(argv[4]), int(argv[5]), int(argv[6]), argv[7] == "1"
        run = prefect_etl_flow() if use_prefect else lambda *a: etl_flow(*a)
        tag = uuid.uuid4().hex[:8]
        warm_ms = []
        for i in range(warm):
            t = time.perf_counter()
            run(url, ns, src, "b", str(outdir / f"warm-{tag}-{i}.csv"), "csv")
            warm_ms.append(1000 * (time.perf_counter() - t))
        print("READY", flush=True)
        sys.stdin.readline()
        cpu0, lat, outputs, errors = cpu_s(), [], [], []
        for i in range(n):
            t = time.perf_counter()
            try:
                outputs.append(run(url, ns, src, "b", str(outdir / f"{tag}-{i}.csv"), "csv")[0])
                lat.append(time.perf_counter() - t)
            except Exception as e:  # counted, not hidden: a probe that found no worker in 2 s
                errors.append(str(e))
        result = {"latencies": lat, "outputs": outputs, "failed": len(errors), "errors": errors[:3],
                  "warm_ms": warm_ms, "end_monotonic": time.monotonic(), "cpu_s": cpu_s() - cpu0}
    print("RESULT " + json.dumps(result), flush=True)


def cleanup_main(argv):
    """`_cleanup URL NS`: deletes the daemons' queues and the exchange of namespace NS."""
    import pika
    url, ns = argv
    conn = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for kind in KINDS:
            conn.channel().queue_delete(f"{ns}.{kind}")
        conn.channel().exchange_delete(f"{ns}.topic_logs")
    finally:
        conn.close()


def parquet_main(argv):
    """`_parquet PATH`: row count and column names of a Parquet file."""
    import pyarrow.parquet as pq
    f = pq.ParquetFile(argv[0])
    print(json.dumps({"rows": f.metadata.num_rows, "columns": f.schema_arrow.names}))


# ---------------------------------------------------------------------------------------
# Harness side: system python, no third-party imports.


def ensure_peers(py=VENV / "bin" / "python", prefect=False):
    """Creates the venv of `py` if missing (as bench/run.py does) and pip-installs the peers
    (and Prefect 3 with prefect=True) from PyPI. Returns py as a Path."""
    py = Path(py)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(py.parent.parent)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEERS,
                    *(PREFECT if prefect else [])], check=True)
    return py


def new_namespace():
    return f"ref-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Daemons:
    """The three worker daemons (one process per kind) in `work`; stops them and deletes
    their queues and exchange on exit, whatever happened."""

    def __init__(self, py, ns, url, work):
        self.py, self.ns, self.url, self.work, self.procs = str(py), ns, url, Path(work), {}

    def __enter__(self):
        try:
            for kind in KINDS:
                log = open(self.work / f"{kind}.log", "w")
                self.procs[kind] = subprocess.Popen([self.py, "-u", str(WORKER), kind, "--ns", self.ns, "--url", self.url],
                                                    cwd=self.work, stdout=log, stderr=subprocess.STDOUT)
                log.close()
            deadline = time.monotonic() + 90
            for kind, p in self.procs.items():
                while "Awaiting RPC requests" not in (self.work / f"{kind}.log").read_text():
                    if p.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{kind} daemon did not start:\n{(self.work / f'{kind}.log').read_text()[-2000:]}")
                    time.sleep(0.05)
        except BaseException:
            self.__exit__()
            raise
        return self

    def pids(self):
        return [p.pid for p in self.procs.values()]

    def __exit__(self, *exc):
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        done = subprocess.run([self.py, __file__, "_cleanup", self.url, self.ns], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            print(f"warning: could not delete the queues of {self.ns}:\n{done.stderr[-1000:]}", file=sys.stderr)


def start_publisher(py, args, log, env=None):
    return subprocess.Popen([str(py), __file__, "_publish", *map(str, args)], stdin=subprocess.PIPE, env=env,
                            stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)


def stop_group(p):
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def read_line(p, prefix, timeout):
    """The first stdout line of p starting with prefix (other lines are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([p.stdout], [], [], left)[0]:
            raise TimeoutError(f"no {prefix} line from the publisher in {timeout} s")
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"publisher exited ({p.wait()}) before {prefix}")
        if line.startswith(prefix):
            return line[len(prefix):].strip()


def csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def tail(path, n=3000):
    return Path(path).read_text(errors="replace")[-n:] if Path(path).exists() else ""


def bench_w3(py, csv_path, drop=DROP, out_dir=None, amqp_url=URL, fmt="parquet"):
    """One flow extract -> drop `drop` -> load (Parquet) over csv_path, fresh daemons.

    Returns: tool, rows, input_mb, seconds (publisher process wall, start to exit, as run.py
    times a client), flow_s (first probe to load's reply), mb_per_s, task_s {kind: s},
    peak_rss_mb (max of all), publisher_peak_rss_mb, {kind}_peak_rss_mb, intermediate,
    output (kept in out_dir, or None: deleted), output_columns, namespace."""
    csv_path = Path(csv_path).resolve()
    rows_in = csv_rows(csv_path)
    work = Path(tempfile.mkdtemp(prefix="conveyor-ref-w3-"))
    out = Path(out_dir or work).resolve() / f"reference_w3.{fmt}"
    ns = new_namespace()
    try:
        with Daemons(py, ns, amqp_url, work) as d, open(work / "publisher.log", "w") as log:
            t0 = time.perf_counter()
            p = start_publisher(py, ["w3", amqp_url, ns, csv_path, drop, out, fmt], log)
            try:
                res = json.loads(read_line(p, "RESULT ", 3600))
                p.wait(timeout=60)
            finally:
                stop_group(p)
            seconds = time.perf_counter() - t0
            if p.returncode != 0:
                raise RuntimeError(f"publisher failed:\n{tail(work / 'publisher.log')}")
            rss = {f"{k}_peak_rss_mb": vm_hwm_mb(pid) for k, pid in zip(KINDS, d.pids())}
        if fmt == "parquet":
            meta = json.loads(subprocess.run([str(py), __file__, "_parquet", str(out)], check=True,
                                             capture_output=True, text=True).stdout)
        else:
            meta = {"rows": csv_rows(out), "columns": next(csv.reader(open(out, encoding="utf-8")))}
        if meta["rows"] != rows_in or drop in meta["columns"]:
            raise RuntimeError(f"reference wrote {meta['rows']} rows ({meta['columns']}), expected {rows_in} without {drop}")
        mb = csv_path.stat().st_size / 1e6
        return {"tool": "reference-pika-pandas", "rows": rows_in, "input_mb": mb, "seconds": seconds,
                "flow_s": res["flow_s"], "mb_per_s": mb / seconds, "task_s": res["task_s"],
                "peak_rss_mb": max(res["peak_rss_mb"], *rss.values()), "publisher_peak_rss_mb": res["peak_rss_mb"],
                **rss, "intermediate": "CSV temp files (pandas to_csv), paths on the wire",
                "output": str(out) if out_dir else None, "output_columns": meta["columns"], "namespace": ns}
    finally:
        shutil.rmtree(work, ignore_errors=True)  # daemons' temp CSVs; the output too unless out_dir


def _run_flows(py, d, url, ns, work, counts, warm, use_prefect, timeout, env=None):
    """Starts one publisher per entry of counts, releases them together, returns (results,
    wall seconds from release to the last flow's end, daemons' CPU seconds in between)."""
    out = work / "out"
    out.mkdir(exist_ok=True)
    logs = [open(work / f"publisher-{i}.log", "w") for i in range(len(counts))]
    pubs = [start_publisher(py, ["flows", url, ns, work / "tiny.csv", out, n, warm, int(use_prefect)], log, env)
            for n, log in zip(counts, logs)]
    try:
        for p in pubs:
            read_line(p, "READY", timeout)
        cpu0 = sum(cpu_s(pid) for pid in d.pids())
        t0 = time.monotonic()
        for p in pubs:
            p.stdin.write("go\n")
            p.stdin.flush()
        results = [json.loads(read_line(p, "RESULT ", timeout)) for p in pubs]
        cpu = sum(cpu_s(pid) for pid in d.pids()) - cpu0
        wall = max(r["end_monotonic"] for r in results) - t0
        for p in pubs:
            p.wait(timeout=120)
    except BaseException as e:
        raise RuntimeError(f"{e}\n{tail(work / 'publisher-0.log')}") from e
    finally:
        for p in pubs:
            stop_group(p)
        for log in logs:
            log.close()
    for r in results:  # each flow's output: the 3 rows, without column b
        for path in r["outputs"]:
            with open(path, newline="") as f:
                got = list(csv.reader(f))
            if got[0] != ["a", "c"] or len(got) != 4:
                raise RuntimeError(f"bad tiny output {path}: {got}")
    return results, wall, cpu


def _pct(lat, q):
    lat = sorted(lat)
    return 1000 * lat[min(len(lat) - 1, int(len(lat) * q))]


def bench_flows(py, w1_n, w2_n, amqp_url=URL, publishers=4, warm=5):
    """Tiny three-task flows (3-row CSV, drop column b, write CSV), same daemons for both.

    W2: one publisher, flows one after the other -> p50/p99 ms per flow.
    W1: w1_n flows split over `publishers` concurrent publisher processes (each sequential,
    as the seed's publisher is) -> flows/s, and CPU ms per task: of the daemons alone
    (w1_cpu_ms_per_task, comparable to bench/flows.py's "system" processes) and with the
    publishers, which play the coordinator's role here (w1_cpu_ms_per_task_with_publishers).
    Returns keys: system, w1_flows, w1_publishers, w1_failed, w1_errors, w1_seconds,
    w1_flows_per_s, w1_cpu_ms_per_task, w1_cpu_ms_per_task_with_publishers,
    w2_flows, w2_failed, w2_p50_ms, w2_p99_ms, w2_mean_ms, namespace."""
    work = Path(tempfile.mkdtemp(prefix="conveyor-ref-flows-"))
    (work / "tiny.csv").write_text(TINY)
    ns = new_namespace()
    try:
        with Daemons(py, ns, amqp_url, work) as d:
            [w2], _, _ = _run_flows(py, d, amqp_url, ns, work, [w2_n], warm, False, 120 + 10 * w2_n)
            counts = [w1_n // publishers + (i < w1_n % publishers) for i in range(publishers)]
            w1, w1_wall, w1_cpu = _run_flows(py, d, amqp_url, ns, work, counts, warm, False, 120 + 10 * w1_n)
        ok1 = sum(len(r["outputs"]) for r in w1)
        pub_cpu = sum(r["cpu_s"] for r in w1)
        return {"system": "reference-pika-pandas", "w1_flows": w1_n, "w1_publishers": publishers,
                "w1_failed": w1_n - ok1, "w1_errors": [e for r in w1 for e in r["errors"]][:3],
                "w1_seconds": w1_wall, "w1_flows_per_s": ok1 / w1_wall,
                "w1_cpu_ms_per_task": 1000 * w1_cpu / (3 * max(ok1, 1)),
                "w1_cpu_ms_per_task_with_publishers": 1000 * (w1_cpu + pub_cpu) / (3 * max(ok1, 1)),
                "w2_flows": w2_n, "w2_failed": w2["failed"], "w2_p50_ms": _pct(w2["latencies"], 0.5),
                "w2_p99_ms": _pct(w2["latencies"], 0.99), "w2_mean_ms": 1000 * statistics.mean(w2["latencies"]),
                "namespace": ns}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_prefect_w2(py, w2_n, amqp_url=URL, warm=3):
    """W2 with Prefect 3 driving the same three tasks (@flow of @tasks, ephemeral server in a
    temporary PREFECT_HOME). Returns system, prefect, w2_flows, w2_failed, w2_p50_ms,
    w2_p99_ms, w2_mean_ms, first_flow_ms (cold: includes starting Prefect's server),
    namespace; or {"system": ..., "skipped": reason} if Prefect is missing or fails."""
    name = "reference-pika-pandas+prefect"
    probe = subprocess.run([str(py), "-c", "import prefect; print(prefect.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {"system": name, "skipped": "prefect is not installed in the venv (ensure_peers(py, prefect=True))"}
    work = Path(tempfile.mkdtemp(prefix="conveyor-ref-prefect-"))
    (work / "tiny.csv").write_text(TINY)
    ns = new_namespace()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # ephemeral server
    env.update(PREFECT_HOME=str(work / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180")
    try:
        with Daemons(py, ns, amqp_url, work) as d:
            [r], _, _ = _run_flows(py, d, amqp_url, ns, work, [w2_n], warm, True, 300 + 20 * w2_n, env)
        return {"system": name, "prefect": probe.stdout.strip(), "w2_flows": w2_n, "w2_failed": r["failed"],
                "w2_p50_ms": _pct(r["latencies"], 0.5), "w2_p99_ms": _pct(r["latencies"], 0.99),
                "w2_mean_ms": 1000 * statistics.mean(r["latencies"]), "first_flow_ms": r["warm_ms"][0],
                "warm_ms": r["warm_ms"], "namespace": ns}
    except Exception as e:
        return {"system": name, "skipped": f"Prefect run failed: {str(e)[-1500:]}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def leftovers(prefix="ref-"):
    """Queues and exchanges on the broker whose name starts with prefix (needs rabbitmqctl), or None."""
    if not shutil.which("rabbitmqctl"):
        return None
    found = []
    for what in ("list_queues", "list_exchanges"):
        out = subprocess.run(["rabbitmqctl", what, "-q", "--no-table-headers", "name"], capture_output=True, text=True)
        if out.returncode != 0:
            return None
        found += [q for q in out.stdout.split() if q.startswith(prefix)]
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="W3 rows (0: skip W3)")
    ap.add_argument("--w1", type=int, default=400, help="W1 flows (0: skip W1 and W2)")
    ap.add_argument("--w2", type=int, default=100, help="W2 flows")
    ap.add_argument("--publishers", type=int, default=4, help="W1 concurrent publisher processes")
    ap.add_argument("--prefect", action="store_true", help="also W2 driven by Prefect 3 (installs it)")
    ap.add_argument("--url", default=URL)
    args = ap.parse_args()
    print("installing peers into bench/.venv ...", file=sys.stderr)
    py = ensure_peers(VENV / "bin" / "python", prefect=args.prefect)
    report = {"design": "reference: pika publisher (get-ack probe, 2 s limit) + pandas daemons, one per kind",
              "cpus": os.cpu_count(), "peers": PEERS + (PREFECT if args.prefect else []), "results": {}}
    if args.rows:
        data = BENCH / "data" / f"rows_{args.rows}.csv"
        if not data.exists():
            data.parent.mkdir(parents=True, exist_ok=True)
            print(f"generating {data} ...", file=sys.stderr)
            subprocess.run([sys.executable, str(BENCH / "gen.py"), "--rows", str(args.rows), "--out", str(data)], check=True)
        print("W3 ...", file=sys.stderr)
        report["results"]["w3"] = w3 = bench_w3(py, data, DROP, None, args.url)
        print(f"W3 {w3['rows']:,} rows, {w3['input_mb']:.0f} MB: {w3['seconds']:.2f} s ({w3['mb_per_s']:.1f} MB/s), flow "
              f"{w3['flow_s']:.2f} s = " + " + ".join(f"{k} {v:.2f}" for k, v in w3["task_s"].items()) +
              f"; peak RSS MB: publisher {w3['publisher_peak_rss_mb']:.0f}, " +
              ", ".join(f"{k} {w3[k + '_peak_rss_mb']:.0f}" for k in KINDS))
    if args.w1:
        print("W1/W2 ...", file=sys.stderr)
        report["results"]["flows"] = f = bench_flows(py, args.w1, args.w2, args.url, args.publishers)
        print(f"W2 {f['w2_flows']} flows one at a time: p50 {f['w2_p50_ms']:.1f} ms, p99 {f['w2_p99_ms']:.1f} ms "
              f"({f['w2_failed']} failed)")
        print(f"W1 {f['w1_flows']} flows over {f['w1_publishers']} publishers: {f['w1_flows_per_s']:.1f} flows/s, "
              f"CPU {f['w1_cpu_ms_per_task']:.2f} ms/task (daemons), {f['w1_cpu_ms_per_task_with_publishers']:.2f} "
              f"ms/task (with publishers), {f['w1_failed']} failed")
    if args.prefect:
        print("Prefect W2 ...", file=sys.stderr)
        report["results"]["prefect_w2"] = p = bench_prefect_w2(py, args.w2, args.url)
        if "skipped" in p:
            print(f"Prefect W2 skipped: {p['skipped']}")
        else:
            print(f"Prefect {p['prefect']} W2 {p['w2_flows']} flows: p50 {p['w2_p50_ms']:.0f} ms, p99 "
                  f"{p['w2_p99_ms']:.0f} ms, first (cold) flow {p['first_flow_ms']:.0f} ms")
    report["leftover_queues_and_exchanges"] = leftovers()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("_publish", "_cleanup", "_parquet"):
        {"_publish": publisher_main, "_cleanup": cleanup_main, "_parquet": parquet_main}[sys.argv[1]](sys.argv[2:])
    else:
        main()
