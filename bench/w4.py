#!/usr/bin/env python3
"""W4 cold start: from process start to the first task (flow) done.

    python3 bench/w4.py [--reps 3]       (bench/all.py runs it too)

Each figure is the median of --reps cold starts (fresh processes every time):
  conveyor-embedded-1-task   wall time of `conveyor run` on a one-task flow (extract a
                             3-row CSV), no broker
  conveyor-embedded-tiny     the same on the tiny three-task flow (extract, drop a column,
                             load a CSV)
  conveyor-cross-process     start a fresh worker node process and at once `conveyor run
                             --config client.toml` on the tiny flow; from starting the
                             worker to the client's exit (the flow finished)
  celery                     start a Celery worker (bench/flows.py's app: prefork, concurrency
                             2) and at once a client that sends one chain of three tasks;
                             from starting the worker to the client seeing the flow's file
  reference-pika-pandas      start the three pandas daemons and a publisher process at once;
                             the publisher sends its first flow when the daemons say they
                             are ready (its get-ack probe fails with no daemon: the design
                             needs them up first); from starting the daemons to the flow's end
Prefect's first flow (bench/reference.py bench_prefect_w2's first_flow_ms) is reported by
bench/all.py with W2: it is measured inside the publisher process, after its imports.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import run  # noqa: E402

TINY = "a,b,c\n1,x,007\n2,y,008\n3,z,009\n"

CELERY_FIRST = r'''
import os, sys, time
sys.path.insert(0, sys.argv[1])
from tiny import extract, transform, load, DONE
from celery import chain
chain(extract.s("cold"), transform.s(), load.s()).apply_async()
deadline = time.monotonic() + 120
while not os.path.exists(os.path.join(DONE, "cold")):
    if time.monotonic() > deadline:
        raise SystemExit("timed out")
    time.sleep(0.001)
'''


def tiny_flow(csv):
    return (f'[flow]\nname = "tiny"\n[tasks.e]\nkind = "extract"\npath = "{csv}"\n'
            f'[tasks.t]\nkind = "transform"\ninput = "e"\nsteps = [{{ drop = ["b"] }}]\n'
            f'[tasks.l]\nkind = "load"\ninput = "t"\npath = "tiny.csv"\n')


def one_task_flow(csv):
    return f'[flow]\nname = "one"\n[tasks.e]\nkind = "extract"\npath = "{csv}"\n'


def med(xs):
    return {"ms": statistics.median(xs), "runs_ms": xs}


def conveyor_embedded(conveyor, work, flow, reps):
    out = []
    for _ in range(reps):
        shutil.rmtree(work / "out", ignore_errors=True)
        t = time.perf_counter()
        subprocess.run([str(conveyor), "run", str(flow)], cwd=work, check=True, capture_output=True)
        out.append(1000 * (time.perf_counter() - t))
    return med(out)


def conveyor_cross(conveyor, work, flow, url, reps):
    out = []
    for _ in range(reps):
        with run.Workers(conveyor, work, url, 1, None, tag="w4") as w:
            t = w.started
            done = subprocess.run([str(conveyor), "run", str(flow), "--config", str(w.client_config)], cwd=work,
                                  capture_output=True, text=True, env=dict(os.environ, CONVEYOR_LOG="warn"))
            ms = 1000 * (time.perf_counter() - t)
            if done.returncode != 0:
                raise RuntimeError(f"conveyor run failed ({done.returncode}): {done.stderr[-2000:]}")
        out.append(ms)
    return med(out)


def celery(py, work, reps):
    import flows
    out = []
    for i in range(reps):
        d = work / f"celery-{i}"
        app_dir, done = d / "app", d / "done"
        app_dir.mkdir(parents=True)
        done.mkdir()
        queue = f"bench-w4-celery-{os.getpid()}-{i}"
        (app_dir / "tiny.py").write_text(flows.CELERY_APP.replace("{url}", flows.celery_url(flows.URL))
                                         .replace("{queue}", queue).replace("{done}", str(done)))
        (d / "first.py").write_text(CELERY_FIRST)
        t = time.perf_counter()
        worker = subprocess.Popen([str(run.VENV / "bin" / "celery"), "-A", "tiny", "worker", "-Q", queue,
                                   "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip",
                                   "--without-mingle", "--without-heartbeat"],
                                  cwd=app_dir, stdout=subprocess.DEVNULL, stderr=open(d / "celery.log", "w"))
        try:
            client = subprocess.run([str(py), str(d / "first.py"), str(app_dir)], capture_output=True, text=True)
            ms = 1000 * (time.perf_counter() - t)
            if client.returncode != 0:
                raise RuntimeError(f"celery client failed: {client.stderr[-2000:]}")
        finally:
            worker.terminate()
            worker.wait()
            if shutil.which("rabbitmqctl"):
                subprocess.run(["rabbitmqctl", "delete_queue", queue], capture_output=True)
        out.append(ms)
    return med(out)


def reference(py, work, url, reps):
    import reference as ref
    out = []
    for i in range(reps):
        d = work / f"ref-{i}"
        (d / "out").mkdir(parents=True)
        (d / "tiny.csv").write_text(TINY)
        ns = ref.new_namespace()
        log = open(d / "publisher.log", "w")
        t = time.perf_counter()
        pub = ref.start_publisher(py, ["flows", url, ns, d / "tiny.csv", d / "out", 1, 0, 0], log)
        try:
            with ref.Daemons(py, ns, url, d):
                ref.read_line(pub, "READY", 120)
                pub.stdin.write("go\n")
                pub.stdin.flush()
                res = json.loads(ref.read_line(pub, "RESULT ", 120))
                ms = 1000 * (time.perf_counter() - t)
        finally:
            ref.stop_group(pub)
            log.close()
        if res["failed"] or len(res["outputs"]) != 1:
            raise RuntimeError(f"reference cold flow failed: {res['errors']}")
        out.append(ms)
    return med(out)


def bench_w4(py, conveyor=run.CONVEYOR, url=None, reps=3, broker=True):
    """Returns {name: {"ms": median, "runs_ms": [...]}} or {name: {"skipped": why}}."""
    url = url or run.amqp_url()
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-w4-"))
    res = {}
    try:
        csv = work / "tiny3.csv"
        csv.write_text(TINY)
        (work / "one.toml").write_text(one_task_flow(csv))
        (work / "tiny.toml").write_text(tiny_flow(csv))
        res["conveyor-embedded-1-task"] = conveyor_embedded(conveyor, work, work / "one.toml", reps)
        res["conveyor-embedded-tiny"] = conveyor_embedded(conveyor, work, work / "tiny.toml", reps)
        if broker:
            res["conveyor-cross-process"] = conveyor_cross(conveyor, work, work / "tiny.toml", url, reps)
            for name, fn in (("celery", lambda: celery(py, work, reps)),
                             ("reference-pika-pandas", lambda: reference(py, work, url, reps))):
                try:
                    res[name] = fn()
                except Exception as e:  # reported, not hidden
                    res[name] = {"skipped": f"failed: {str(e)[-1500:]}"}
        else:
            for name in ("conveyor-cross-process", "celery", "reference-pika-pandas"):
                res[name] = {"skipped": f"RabbitMQ is not reachable at {url}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        run.build()
    py = run.ensure_venv(run.PEERS + ["pika==1.3.2", "celery==5.4.0", "pandas==3.1.1", "pyarrow==26.0.1"])
    res = bench_w4(py, reps=args.reps, broker=run.broker_up())
    for k, v in res.items():
        print(f"{k:<28}" + (f"{v['ms']:8.0f} ms  runs " + " ".join(f"{x:.0f}" for x in v["runs_ms"])
                             if "ms" in v else f"skipped: {v['skipped']}"))


if __name__ == "__main__":
    main()
