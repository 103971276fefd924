#!/usr/bin/env python3
"""The raw lapin request/reply ceiling of benchmark issue 4.

One command, from the repository root, with RabbitMQ on 127.0.0.1:5672
(CONVEYOR_TEST_AMQP_URL overrides):

    python3 bench/ceiling.py
    python3 bench/ceiling.py --requests-one 1000 --requests-many 10000 --inflight 256

It builds bench/ceiling (`amqp-ceiling`), starts `amqp-ceiling serve` as its
own process (the worker's part), runs `amqp-ceiling drive` (the
coordinator's part) once with one request in flight (the W2-like latency
ceiling) and once with many (the W1-like throughput ceiling), stops the
server and deletes the namespace.

Same AMQP settings as Conveyor (actors/transport/src/amqp.rs): durable
quorum task queues with x-delivery-limit 5 and a dead-letter exchange,
a durable reply queue (classic, as Conveyor's; --reply-queue-type quorum for
a quorum one), persistent messages, publisher confirms with `mandatory`,
manual acks (the responder acks a request once its reply is confirmed; the
driver publishes the next request, confirmed, then acks the reply), prefetch
= concurrency = available parallelism on the responder (Conveyor's worker
defaults) and 256 on the reply queue (Conveyor's coordinator). Three task
queues (extract, transform, load); request i goes to kind i mod 3.

A Conveyor flow is three tasks, each one request and one reply, so
flows_per_s = rr_per_s / 3. CPU seconds are per process: `serve` and the
broker (beam.smp, when it runs on this machine) from /proc/PID/stat
(utime + stime) before and after each drive run, `drive` from wait4's rusage
(it includes its connect and 100 warm-up round trips).

Importable: bench_ceiling(url, requests_one=2000, requests_many=20000,
inflight=64, build=True) -> dict.
"""
import argparse
import json
import os
import select
import signal
import subprocess
import sys
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("CONVEYOR_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PACKAGE = "conveyor-bench-ceiling"
BINARY = "amqp-ceiling"
TASKS_PER_FLOW = 3


def build_binary():
    subprocess.run(["cargo", "build", "--release", "-p", PACKAGE], cwd=ROOT, check=True)


def binary_path():
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    path = Path(json.loads(meta.stdout)["target_directory"]) / "release" / BINARY
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build it with cargo build --release -p {PACKAGE}")
    return path


def proc_cpu_seconds(pid):
    """utime + stime of a live process, in seconds (None if unreadable)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 (1-based) of stat.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pid():
    """The pid of RabbitMQ's Erlang VM if it runs on this machine."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


def delta(after, before):
    return None if after is None or before is None else round(after - before, 3)


def redact(url):
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"


def common_args(url, namespace):
    return ["--url", url, "--namespace", namespace]


def start_server(binary, url, namespace, concurrency, started):
    cmd = [str(binary), "serve", *common_args(url, namespace)]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    if started:
        cmd.append("--started")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line:
        stop_server(proc)
        raise RuntimeError(f"amqp-ceiling serve did not become ready (exit code {proc.returncode})")
    return proc, json.loads(line)


def stop_server(proc):
    """SIGTERM, then the server's own CPU seconds from wait4 (None if it was killed)."""
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGTERM)
    for _ in range(100):
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return round(usage.ru_utime + usage.ru_stime, 3)
        select.select([], [], [], 0.1)
    proc.kill()
    proc.wait()
    return None


def run_drive(binary, url, namespace, requests, inflight, reply_queue_type, serve_pid, beam_pid):
    cmd = [
        str(binary), "drive", *common_args(url, namespace),
        "--requests", str(requests), "--inflight", str(inflight),
        "--reply-queue-type", reply_queue_type,
    ]
    serve_before, beam_before = proc_cpu_seconds(serve_pid), proc_cpu_seconds(beam_pid)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    serve_after, beam_after = proc_cpu_seconds(serve_pid), proc_cpu_seconds(beam_pid)
    if proc.returncode != 0:
        raise RuntimeError(f"amqp-ceiling drive --inflight {inflight} failed (exit code {proc.returncode})")
    figures = json.loads(out.strip().splitlines()[-1])
    figures["flows_per_s"] = round(figures["rr_per_s"] / TASKS_PER_FLOW, 1)
    figures["drive_cpu_s"] = round(usage.ru_utime + usage.ru_stime, 3)
    figures["serve_cpu_s"] = delta(serve_after, serve_before)
    figures["broker_cpu_s"] = delta(beam_after, beam_before)
    cpu = [figures["drive_cpu_s"], figures["serve_cpu_s"]]
    if None not in cpu:
        # Client-side CPU per round trip (drive + serve), warm-up included.
        figures["client_cpu_ms_per_rr"] = round(1000 * sum(cpu) / (requests + figures["warmup"]), 4)
    return figures


def bench_ceiling(url, requests_one=2000, requests_many=20000, inflight=64, build=True,
                  *, concurrency=None, started=False, reply_queue_type="classic"):
    """Runs the ceiling once with one request in flight and once with `inflight`.

    Keyword-only extras: `concurrency` (of `serve` per task queue; default the
    machine's available parallelism, like a Conveyor worker), `started` (the
    responder also publishes a transient confirmed `started` reply first, as a
    Conveyor worker does), `reply_queue_type` ("classic" as Conveyor, or "quorum").
    """
    if build:
        build_binary()
    binary = binary_path()
    namespace = f"ceiling-{uuid.uuid4().hex[:8]}"
    beam = broker_pid()
    server, ready = start_server(binary, url, namespace, concurrency, started)
    result = {
        "tool": BINARY,
        "broker": redact(url),
        "namespace": namespace,
        "settings": {
            "task_queues": "quorum, durable, x-delivery-limit 5, x-dead-letter-exchange",
            "task_queue_kinds": ready["kinds"],
            "reply_queue": f"{reply_queue_type}, durable",
            "persistent": True,
            "confirms": True,
            "mandatory": True,
            "manual_acks": True,
            "serve_concurrency": ready["concurrency"],
            "serve_prefetch": ready["prefetch"],
            "reply_prefetch": 256,
            "started_update": started,
            "cpus": os.cpu_count(),
        },
    }
    try:
        for mode, requests, k in (("one", requests_one, 1), ("many", requests_many, inflight)):
            result[mode] = run_drive(binary, url, namespace, requests, k, reply_queue_type, server.pid, beam)
    finally:
        result["serve_cpu_s_total"] = stop_server(server)
        subprocess.run([str(binary), "cleanup", *common_args(url, namespace)], check=False)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=URL)
    ap.add_argument("--requests-one", type=int, default=2000)
    ap.add_argument("--requests-many", type=int, default=20000)
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--concurrency", type=int)
    ap.add_argument("--started", action="store_true")
    ap.add_argument("--reply-queue-type", choices=["classic", "quorum"], default="classic")
    ap.add_argument("--json", type=Path, help="also write the result to this file")
    args = ap.parse_args()
    result = bench_ceiling(
        args.url, args.requests_one, args.requests_many, args.inflight, build=not args.no_build,
        concurrency=args.concurrency, started=args.started, reply_queue_type=args.reply_queue_type,
    )
    print(f"\nraw lapin request/reply ceiling on {result['broker']} ({result['settings']['reply_queue']} reply queue, "
          f"serve concurrency {result['settings']['serve_concurrency']} x {result['settings']['task_queue_kinds']} queues"
          f"{', started updates' if result['settings']['started_update'] else ''})")
    print(f"{'mode':<6}{'inflight':>9}{'requests':>10}{'rr/s':>10}{'flows/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'drive cpu':>11}{'serve cpu':>11}{'broker cpu':>12}")
    for mode in ("one", "many"):
        f = result[mode]
        print(f"{mode:<6}{f['inflight']:>9}{f['requests']:>10}{f['rr_per_s']:>10.1f}{f['flows_per_s']:>9.1f}"
              f"{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}{f['drive_cpu_s']:>10.2f}s{f['serve_cpu_s'] or 0:>10.2f}s"
              f"{f['broker_cpu_s'] or 0:>11.2f}s")
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
