#!/usr/bin/env python3
"""Conveyor benchmark harness: orchestration cost of tiny three-task flows.

One command, from the repository root, with RabbitMQ on 127.0.0.1:5672:

    python3 bench/flows.py                    # W1 10,000 flows, W2 200 flows
    python3 bench/flows.py --w1 2000 --w2 100 --celery-w1 500

It builds the release binary, creates bench/.venv with the Python peers from
PyPI, runs each system on the same broker, checks that every flow finished,
prints a table, and writes bench/results/flows.json.

Workloads (issue 4):
  W1  N tiny flows submitted at once: flows/s, and CPU-ms per task summed over
      the system's processes (coordinator and worker nodes; Celery's worker and
      its pool), not the benchmark's client.
  W2  tiny flows one at a time: latency p50 and p99 per flow.

Systems:
  conveyor  a coordinator node (SQLite) and one worker node (all kinds,
            --concurrency of each, default 16). The client speaks the wire
            contract (schemas/json/flow_submission.schema.json) with pika: it
            publishes FlowSubmissions and reads FlowEvents. Each tiny flow
            really runs: extract a 3-row CSV, drop a column, load a CSV, each
            output committed with fsyncs.
  conveyor-fused  the same flows with `fuse = true`: the three steps run as
            one task in one pass (one task message and one result per flow).
            CPU-ms per task still divides by three tasks per flow.
  celery    Celery 5 on the same broker: a chain of three near-empty tasks
            with acks_late, one prefork worker with concurrency 2, no result
            backend (the last task marks the flow done with a file, which the
            client watches).

The raw lapin ceiling (bench/ceiling.py), the pika+pandas reference design
(bench/reference.py) and the full table are run by bench/all.py.
"""
import argparse
import contextlib
import json
import os
import shutil
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
PEERS = ["pika==1.3.2", "celery==5.4.0"]
URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")


def celery_url(url):
    """The same broker in Celery's spelling (vhost `/` is `//`, not `/%2f`)."""
    return url[: -len("/%2f")] + "//" if url.endswith("/%2f") else url


def ensure_venv():
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEERS], check=True)
    return py


def cpu_seconds(pids):
    """User + system CPU seconds of processes and their reaped children."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 (1-based) of stat.
        total += sum(int(x) for x in fields[11:15]) / tick
    return total


def tree(pid):
    """pid and all its descendants."""
    out = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += tree(int(child))
    return out


CLIENT = r'''
import json, sys, time, uuid, pika
mode, n, ns, base, csv, url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
fuse = "fuse = true\n" if len(sys.argv) > 7 and sys.argv[7] == "fuse" else ""
conn = pika.BlockingConnection(pika.URLParameters(url))
ch = conn.channel()
queue = f"{ns}.replies.bench-client"
ch.queue_declare(queue, durable=True)
ch.queue_bind(queue, f"{ns}.replies", routing_key=queue)
ch.confirm_delivery()
def submission(i):
    text = (f'[flow]\nname = "tiny{i}"\n{fuse}[tasks.e]\nkind = "extract"\npath = "{csv}"\n'
            f'[tasks.t]\nkind = "transform"\ninput = "e"\nsteps = [{{ drop = ["b"] }}]\n'
            f'[tasks.l]\nkind = "load"\ninput = "t"\npath = "tiny/{i}.csv"\n')
    return json.dumps({"schema_version": 2, "request_id": f"{mode}-{i}-{uuid.uuid4()}",
                       "flow_file": f"tiny{i}.toml", "flow_text": text, "flow_base": base,
                       "reply_to": queue, "client": "bench"}).encode()
props = pika.BasicProperties(delivery_mode=2)
def wait_finished(want):
    got = {}
    for method, _, body in ch.consume(queue, inactivity_timeout=300):
        if method is None:
            raise SystemExit(f"timed out with {len(got)} of {want} flows finished")
        ch.basic_ack(method.delivery_tag)
        ev = json.loads(body)
        if ev["event"]["event"] == "finished":
            got[ev["request_id"]] = ev["event"]["report"]["state"]
            if len(got) == want:
                break
        elif ev["event"]["event"] == "rejected":
            raise SystemExit(ev["event"]["error"])
    ch.cancel()
    return got
if mode == "w1":
    start = time.perf_counter()
    for i in range(n):
        ch.basic_publish(f"{ns}.submissions", "submit", submission(i), props)
    states = wait_finished(n)
    secs = time.perf_counter() - start
    print(json.dumps({"seconds": secs, "succeeded": sum(s == "Succeeded" for s in states.values())}))
else:
    lat = []
    ok = 0
    for i in range(n):
        start = time.perf_counter()
        ch.basic_publish(f"{ns}.submissions", "submit", submission(100000 + i), props)
        states = wait_finished(1)
        lat.append(time.perf_counter() - start)
        ok += sum(s == "Succeeded" for s in states.values())
    print(json.dumps({"latencies": lat, "succeeded": ok}))
ch.queue_delete(queue)
conn.close()
'''

CELERY_APP = r'''
import os
from celery import Celery
app = Celery("tiny", broker="{url}")
app.conf.task_acks_late = True
app.conf.worker_prefetch_multiplier = 1
app.conf.task_ignore_result = True
app.conf.task_default_queue = "{queue}"
DONE = "{done}"
@app.task
def extract(x):
    return [x, 1, 2]
@app.task
def transform(rows):
    return rows[:2]
@app.task
def load(rows):
    # The flow's end, seen by the client as a file (no result backend).
    open(os.path.join(DONE, str(rows[0])), "w").close()
'''

CELERY_CLIENT = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[3])
from tiny import app, extract, transform, load, DONE
from celery import chain
mode, n = sys.argv[1], int(sys.argv[2])
def wait_for(count, deadline):
    while len(os.listdir(DONE)) < count:
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out: {len(os.listdir(DONE))} of {count}")
        time.sleep(0.0005)
base = len(os.listdir(DONE))
if mode == "w1":
    start = time.perf_counter()
    for i in range(n):
        chain(extract.s(f"{mode}{n}-{i}"), transform.s(), load.s()).apply_async()
    wait_for(base + n, start + 900)
    print(json.dumps({"seconds": time.perf_counter() - start, "succeeded": len(os.listdir(DONE)) - base}))
else:
    lat = []
    for i in range(n):
        start = time.perf_counter()
        chain(extract.s(f"w2-{i}"), transform.s(), load.s()).apply_async()
        wait_for(base + i + 1, start + 60)
        lat.append(time.perf_counter() - start)
    print(json.dumps({"latencies": lat, "succeeded": len(os.listdir(DONE)) - base}))
'''


def run_client(py, args, pids):
    before = [cpu_seconds([p]) for p in pids]
    t0 = time.perf_counter()
    out = subprocess.run([str(py), *args], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout)
    result["cpu_s_per_process"] = [cpu_seconds([p]) - b for p, b in zip(pids, before)]
    result["system_cpu_s"] = sum(result["cpu_s_per_process"])
    result["wall_s"] = time.perf_counter() - t0
    return result


def summarize(name, w1, w1_n, w2, w2_n):
    if w1["succeeded"] != w1_n or w2["succeeded"] != w2_n:
        raise RuntimeError(f"{name}: not every flow succeeded: {w1['succeeded']}/{w1_n}, {w2['succeeded']}/{w2_n}")
    lat = sorted(w2["latencies"])
    return {
        "system": name,
        "w1_flows": w1_n,
        "w1_flows_per_s": w1_n / w1["seconds"],
        "w1_cpu_ms_per_task": 1000 * w1["system_cpu_s"] / (3 * w1_n),
        "w1_cpu_s_per_process": w1["cpu_s_per_process"],
        "w2_flows": w2_n,
        "w2_p50_ms": 1000 * statistics.median(lat),
        "w2_p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def bench_conveyor(py, conveyor, work, w1_n, w2_n, conc, fuse=False, coord_extra="", worker_extra="",
                   during=None):
    """The tiny flow as written (three tasks), or with `fuse = true` (one task
    doing the three steps in one pass; see the README's "Fusing").

    `coord_extra` and `worker_extra` are appended to the two node configs;
    `during`, if given, is a context manager entered while W1 and W2 run
    (bench/api_overhead.py polls the API and /metrics with it)."""
    ns = f"bench-flows-{os.getpid()}{'-fused' if fuse else ''}"
    store = work / ("conveyor-fused" if fuse else "conveyor")
    common = f'[broker]\nurl = "{URL}"\nnamespace = "{ns}"\n[storage]\nartifacts = "{store}/artifacts"\noutput_root = "{store}/out"\n'
    (work / "coord.toml").write_text(
        f'[node]\nname = "bench-coord"\n{common}[coordinator]\ndb = "{store}/coordinator.db"\n{coord_extra}')
    (work / "worker.toml").write_text(
        f'[node]\nname = "bench-worker"\n{common}[workers]\nkinds = ["extract", "transform", "load"]\ninput_roots = ["{work}"]\n[workers.concurrency]\nextract = {conc}\ntransform = {conc}\nload = {conc}\n{worker_extra}')
    csv = work / "tiny.csv"
    csv.write_text("a,b,c\n1,x,007\n2,y,008\n3,z,009\n")
    env = dict(os.environ, CONVEYOR_LOG="warn")
    nodes = [subprocess.Popen([str(conveyor), "node", "--config", str(work / f"{n}.toml")], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(work / f"{n}.log", "w"))
             for n in ("coord", "worker")]
    try:
        time.sleep(2.5)
        pids = [n.pid for n in nodes]
        client = work / "client.py"
        client.write_text(CLIENT)
        # Warm up (and check) with a few flows.
        extra = ["fuse"] if fuse else []
        run_client(py, [str(client), "w1", "10", ns, str(work), str(csv), URL, *extra], pids)
        with (during() if during else contextlib.nullcontext()):
            w1 = run_client(py, [str(client), "w1", str(w1_n), ns, str(work), str(csv), URL, *extra], pids)
            w2 = run_client(py, [str(client), "w2", str(w2_n), ns, str(work), str(csv), URL, *extra], pids)
        return summarize("conveyor-fused" if fuse else "conveyor", w1, w1_n, w2, w2_n)
    finally:
        for n in nodes:
            n.terminate()
            n.wait()
        if shutil.which("rabbitmqctl"):
            for q in [f"{ns}.tasks.{k}" for k in ("extract", "transform", "load")] + \
                     [f"{ns}.dead", f"{ns}.submissions", f"{ns}.replies.bench-coord"]:
                subprocess.run(["rabbitmqctl", "delete_queue", q], capture_output=True)


def bench_celery(py, work, w1_n, w2_n):
    queue = f"bench-celery-{os.getpid()}"
    app_dir = work / "celery"
    app_dir.mkdir()
    done = work / "celery-done"
    done.mkdir()
    (app_dir / "tiny.py").write_text(CELERY_APP.replace("{url}", celery_url(URL))
                                     .replace("{queue}", queue).replace("{done}", str(done)))
    worker = subprocess.Popen([str(VENV / "bin" / "celery"), "-A", "tiny", "worker", "-Q", queue,
                               "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip",
                               "--without-mingle", "--without-heartbeat"],
                              cwd=app_dir, stdout=subprocess.DEVNULL, stderr=open(work / "celery.log", "w"))
    try:
        time.sleep(6)
        client = work / "celery_client.py"
        client.write_text(CELERY_CLIENT)
        pids = tree(worker.pid)
        run_client(py, [str(client), "w1", "10", str(app_dir)], pids)
        w1 = run_client(py, [str(client), "w1", str(w1_n), str(app_dir)], pids)
        w2 = run_client(py, [str(client), "w2", str(w2_n), str(app_dir)], pids)
        return summarize("celery", w1, w1_n, w2, w2_n)
    finally:
        worker.terminate()
        worker.wait()
        if shutil.which("rabbitmqctl"):
            subprocess.run(["rabbitmqctl", "delete_queue", queue], capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--w1", type=int, default=10_000, help="flows submitted at once (Conveyor)")
    ap.add_argument("--w2", type=int, default=200, help="flows one at a time")
    ap.add_argument("--celery-w1", type=int, default=1_000, help="flows submitted at once (Celery)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binary")
    ap.add_argument("--conveyor-only", action="store_true", help="skip the Celery peer")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused (`fuse = true`) Conveyor run")
    ap.add_argument("--concurrency", type=int, default=16,
                    help="Conveyor worker tasks of each kind at once (tiny tasks wait on I/O, not CPU)")
    args = ap.parse_args()
    if not args.no_build:
        print("building the release binary ...", file=sys.stderr)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "conveyor-node"], cwd=ROOT, check=True)
    conveyor = ROOT / "target/release/conveyor"
    print("installing peers into bench/.venv ...", file=sys.stderr)
    py = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="conveyor-flows-"))
    try:
        print("conveyor ...", file=sys.stderr)
        results = [bench_conveyor(py, conveyor, work, args.w1, args.w2, args.concurrency)]
        if not args.no_fused:
            print("conveyor, fused ...", file=sys.stderr)
            results.append(bench_conveyor(py, conveyor, work, args.w1, args.w2, args.concurrency, fuse=True))
        if not args.conveyor_only:
            print("celery ...", file=sys.stderr)
            results.append(bench_celery(py, work, args.celery_w1, args.w2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    celery = next((r for r in results if r["system"] == "celery"), None)
    for r in results:
        r["w1_vs_celery"] = r["w1_flows_per_s"] / celery["w1_flows_per_s"] if celery else float("nan")
    report = {"workloads": "W1 tiny flows at once; W2 tiny flows one at a time", "cpus": os.cpu_count(),
              "versions": {"conveyor": subprocess.run([str(conveyor), "--version"], capture_output=True,
                                                      text=True).stdout.strip(), "peers": PEERS},
              "results": results}
    (BENCH / "results").mkdir(exist_ok=True)
    path = BENCH / "results" / "flows.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'system':<16}{'W1 flows':>9}{'flows/s':>10}{'x celery':>10}{'CPU ms/task':>13}"
          f"{'W2 p50 ms':>11}{'W2 p99 ms':>11}")
    for r in results:
        print(f"{r['system']:<16}{r['w1_flows']:>9}{r['w1_flows_per_s']:>10.0f}{r['w1_vs_celery']:>10.1f}"
              f"{r['w1_cpu_ms_per_task']:>13.2f}{r['w2_p50_ms']:>11.1f}{r['w2_p99_ms']:>11.1f}")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
