#!/usr/bin/env python3
"""Conveyor's whole benchmark (issue 4) in one run: every figure, every ratio, every target.

From a fresh clone, with a Rust toolchain, python3 (with venv) and RabbitMQ on
amqp://guest:guest@127.0.0.1:5672/%2f (CONVEYOR_TEST_AMQP_URL overrides):

    python3 bench/all.py            # full size: W3 at 1M (3 runs) and 10M (1 run); ~20-30 min
    python3 bench/all.py --quick    # shrunk: W3 at 100k (3 runs) and 1M (1 run), fewer flows

It builds the release binaries (conveyor-node, conveyor-bench-ceiling, conveyor-etl's
raw_pipeline example), creates/updates bench/.venv with every Python peer (pinned),
generates the data (bench/gen.py), then runs:
  1. ceilings: raw arrow (W3's raw-arrow rows) and the raw lapin request/reply ceiling
     (bench/ceiling.py) with one and many requests in flight, at responder concurrency 16
     (the setting of Conveyor's W1 worker in bench/flows.py; the W1 ratio uses it) and 2
     (Conveyor's default on this 2-core machine, one per core), and at 16 with the
     responder's `started` update that a Conveyor worker also publishes;
  2. W3 (bench/run.py): CSV -> drop `note` -> Parquet and -> CSV, every tool;
  3. W1/W2 (bench/flows.py for Conveyor and Celery, bench/reference.py for the reference
     design and Prefect W2);
  4. W4 cold start (bench/w4.py).
It writes bench/results/all.json and bench/results/all.md (printed too): the tables and a
targets table (met / missed, with the figures behind each). Without a reachable broker the
broker parts are skipped and say so.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import run  # noqa: E402
import w4  # noqa: E402

W1_CONCURRENCY = 16  # bench/flows.py's default --concurrency for Conveyor's worker
CEILING_INFLIGHT = 256  # "many": more than 3 queues x 16 prefetch, and the coordinator's reply prefetch


def log(msg):
    run.log(f"[{time.strftime('%H:%M:%S')}] {msg}")


def all_peers():
    import flows
    import reference
    peers = {}
    for spec in run.PEERS + flows.PEERS + reference.PEERS + reference.PREFECT:
        peers[spec.split("==")[0]] = spec
    return list(peers.values())


def out_of(cmd):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (done.stdout.strip() or done.stderr.strip()).splitlines()[0] if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def machine():
    info = Path("/proc/cpuinfo").read_text().splitlines()
    mem = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    return {"cpu": next((l.split(":", 1)[1].strip() for l in info if l.startswith("model name")), "?"),
            "cores": os.cpu_count(), "ram_gb": round(int(mem.split()[1]) / 1024 / 1024, 1),
            "kernel": platform.release(), "platform": platform.platform()}


def versions(py, peers):
    code = ("import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    names = [p.split("==")[0] for p in peers]
    got = subprocess.run([str(py), "-c", code, *names], capture_output=True, text=True)
    rabbit = out_of(["rabbitmqctl", "version"]) if shutil.which("rabbitmqctl") else None
    return {"conveyor": out_of([str(run.CONVEYOR), "--version"]), "rustc": out_of(["rustc", "--version"]),
            "cargo": out_of(["cargo", "--version"]), "rabbitmq": rabbit or "unknown (rabbitmqctl version failed)",
            "python": platform.python_version(), "venv_python": out_of([str(py), "--version"]),
            "peers": json.loads(got.stdout) if got.returncode == 0 else got.stderr[-500:], "pins": peers}


def section(report, name, fn):
    """Runs one part; a failure is recorded with its error text (no figures made up) and the run goes on."""
    log(f"{name} ...")
    t = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as e:
        report[name] = {"error": f"{type(e).__name__}: {e}"[-4000:], "traceback": traceback.format_exc()[-4000:]}
        log(f"{name} FAILED: {report[name]['error'][-1500:]}")
    report.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t, 1)


def ceilings(url, a):
    import ceiling
    out = {}
    for key, conc, started in (("c16", W1_CONCURRENCY, False), ("c2", 2, False), ("c16_started", W1_CONCURRENCY, True)):
        log(f"  lapin ceiling concurrency {conc}{' with started' if started else ''}")
        out[key] = ceiling.bench_ceiling(url, a.ceiling_one, a.ceiling_many, CEILING_INFLIGHT, build=False,
                                         concurrency=conc, started=started)
    return out


def flows_part(py, url, a):
    import flows
    import reference
    flows.URL = url  # its Conveyor client and nodes, and its Celery app
    res = {}
    work = Path(tempfile.mkdtemp(prefix="conveyor-all-flows-"))
    try:
        log(f"  conveyor W1 {a.w1} / W2 {a.w2}")
        try:
            res["conveyor"] = flows.bench_conveyor(py, run.CONVEYOR, work, a.w1, a.w2, W1_CONCURRENCY)
            res["conveyor"]["worker_concurrency"] = W1_CONCURRENCY
        except Exception as e:
            res["conveyor"] = {"system": "conveyor", "error": f"{type(e).__name__}: {e}"[-3000:]}
        log(f"  conveyor fused W1 {a.w1} / W2 {a.w2}")
        try:
            res["conveyor-fused"] = flows.bench_conveyor(py, run.CONVEYOR, work, a.w1, a.w2, W1_CONCURRENCY,
                                                         fuse=True)
            res["conveyor-fused"]["worker_concurrency"] = W1_CONCURRENCY
        except Exception as e:
            res["conveyor-fused"] = {"system": "conveyor-fused", "error": f"{type(e).__name__}: {e}"[-3000:]}
        log(f"  celery W1 {a.celery_w1} / W2 {a.w2}")
        work2 = Path(tempfile.mkdtemp(prefix="conveyor-all-celery-"))
        try:
            res["celery"] = flows.bench_celery(py, work2, a.celery_w1, a.w2)
        except Exception as e:
            res["celery"] = {"system": "celery", "error": f"{type(e).__name__}: {e}"[-3000:]}
        finally:
            shutil.rmtree(work2, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"  reference W1 {a.ref_w1} / W2 {a.ref_w2}")
    try:
        res["reference"] = reference.bench_flows(py, a.ref_w1, a.ref_w2, url)
    except Exception as e:
        res["reference"] = {"system": "reference-pika-pandas", "error": f"{type(e).__name__}: {e}"[-3000:]}
    log(f"  prefect W2 {a.prefect_w2}")
    res["prefect"] = reference.bench_prefect_w2(py, a.prefect_w2, url)
    return res


# ----------------------------------------------------------------------------------------------
# Tables


def f(x, nd=2, none="–"):
    if x is None or (isinstance(x, float) and x != x):
        return none
    return f"{x:,.{nd}f}"


def md_table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def w3_get(rep, size, tool, fmt):
    w3 = rep.get(f"w3_{size}")
    if not isinstance(w3, dict) or "results" not in w3:
        return None
    return next((r for r in w3["results"] if r["tool"] == tool and r["format"] == fmt), None)


def conveyor_rows(rep, size, fmt):
    w3 = rep.get(f"w3_{size}")
    if not isinstance(w3, dict) or "results" not in w3:
        return []
    return [r for r in w3["results"] if r["tool"].startswith("conveyor") and r["format"] == fmt]


def targets(rep, small, large):
    out = []

    def add(target, figures, met):
        out.append((target, figures, "n/a" if met is None else ("**met**" if met else "**missed**")))

    fl = rep.get("flows", {}) if isinstance(rep.get("flows"), dict) else {}
    ce = fl.get("celery", {})
    ceil = (rep.get("ceilings") or {}).get("c16", {}).get("many", {}) if isinstance(rep.get("ceilings"), dict) else {}
    cef, clf = ce.get("w1_flows_per_s"), ceil.get("flows_per_s")
    # The flow as written (three tasks), and the same flow with `fuse = true` (one task).
    for key, how in (("conveyor", "three tasks"), ("conveyor-fused", "fused, `fuse = true`")):
        cv = fl.get(key, {})
        cvf = cv.get("w1_flows_per_s")
        if cvf and cef:
            add(f"W1 ≥ 20× Celery flows/s ({how})", f"Conveyor {f(cvf, 0)} flows/s ({cv['w1_flows']} flows) ÷ Celery "
                f"{f(cef, 0)} ({ce['w1_flows']} flows) = {f(cvf / cef)}×", cvf / cef >= 20)
        else:
            add(f"W1 ≥ 20× Celery flows/s ({how})",
                f"not measured: {cv.get('error') or ce.get('error') or 'no broker'}", None)
        if cvf and clf:
            add(f"W1 ≥ 50 % of the raw lapin ceiling, same settings ({how})",
                f"Conveyor {f(cvf, 0)} flows/s ÷ ceiling {f(clf, 0)} flows/s (responder concurrency "
                f"{W1_CONCURRENCY}, {CEILING_INFLIGHT} in flight) = {f(100 * cvf / clf, 1)} %", cvf / clf >= 0.5)
        else:
            add(f"W1 ≥ 50 % of the raw lapin ceiling, same settings ({how})", "not measured", None)
        p50 = cv.get("w2_p50_ms")
        add(f"W2 p50 ≤ 5 ms ({how})",
            f"Conveyor p50 {f(p50)} ms (p99 {f(cv.get('w2_p99_ms'))} ms, {cv.get('w2_flows')} flows)"
            if p50 else "not measured", None if p50 is None else p50 <= 5)

    s_lbl, l_lbl = f"{small:,}", f"{large:,}"
    for fmt in ("parquet", "csv"):
        rows = conveyor_rows(rep, small, fmt)
        best = min(rows, key=lambda r: r["seconds"]) if rows else None
        allc = ", ".join(f"{r['tool']} {f(r['seconds'])} s" for r in rows)
        raw = w3_get(rep, small, "raw-arrow", "parquet")
        if fmt == "parquet":
            if best and raw:
                add(f"W3 at {s_lbl}: ≤ 1.3× raw arrow (Parquet)",
                    f"best {best['tool']} {f(best['seconds'])} s ÷ raw arrow {f(raw['seconds'])} s = "
                    f"{f(best['seconds'] / raw['seconds'])}× (all: {allc})", best["seconds"] / raw["seconds"] <= 1.3)
            else:
                add(f"W3 at {s_lbl}: ≤ 1.3× raw arrow (Parquet)", "not measured", None)
        ref = w3_get(rep, small, "reference-pika-pandas", fmt)
        if best and ref:
            add(f"W3 at {s_lbl}: ≥ 10× faster than the reference design ({fmt})",
                f"reference {f(ref['seconds'])} s ÷ best {best['tool']} {f(best['seconds'])} s = "
                f"{f(ref['seconds'] / best['seconds'], 1)}×", ref["seconds"] / best["seconds"] >= 10)
        else:
            add(f"W3 at {s_lbl}: ≥ 10× faster than the reference design ({fmt})", "not measured", None)
        duck = w3_get(rep, small, "duckdb", fmt)
        if best and duck:
            add(f"W3 at {s_lbl}: ahead of DuckDB ({fmt})",
                f"best {best['tool']} {f(best['seconds'])} s vs DuckDB {f(duck['seconds'])} s "
                f"({f(best['seconds'] / duck['seconds'])}×; all: {allc})", best["seconds"] < duck["seconds"])
        else:
            add(f"W3 at {s_lbl}: ahead of DuckDB ({fmt})", "not measured", None)
        twos = [r for r in (w3_get(rep, large, t, fmt) for t in ("conveyor-2-workers-p2",
                                                                   "conveyor-2-workers-fused-p2")) if r]
        two = min(twos, key=lambda r: r["seconds"]) if twos else None
        pol = w3_get(rep, large, "polars", fmt)
        if two and pol:
            add(f"W3 at {l_lbl}, two worker processes: faster than polars ({fmt})",
                f"best {two['tool']} {f(two['seconds'])} s vs polars {f(pol['seconds'])} s "
                f"({f(two['seconds'] / pol['seconds'])}×; all: "
                + ", ".join(f"{r['tool']} {f(r['seconds'])} s" for r in twos) + ")",
                two["seconds"] < pol["seconds"])
        else:
            add(f"W3 at {l_lbl}, two worker processes: faster than polars ({fmt})", "not measured", None)
    workers = [(r["tool"], r["format"], x) for fmt in ("parquet", "csv") for r in conveyor_rows(rep, large, fmt)
               if "worker_peak_rss_mb" in r for x in r["worker_peak_rss_mb"]]
    emb = [(r["tool"], r["format"], r["peak_rss_mb"]) for fmt in ("parquet", "csv")
           for r in conveyor_rows(rep, large, fmt) if "worker_peak_rss_mb" not in r]
    if workers:
        worst = max(workers, key=lambda t: t[2])
        add(f"Peak RSS per worker ≤ 300 MB at {l_lbl}",
            f"max worker node {f(worst[2], 0)} MB ({worst[0]}, {worst[1]}); all worker nodes: "
            + ", ".join(f"{t}/{fm} {f(x, 0)}" for t, fm, x in workers)
            + "; embedded (one process, every role): " + ", ".join(f"{t}/{fm} {f(x, 0)}" for t, fm, x in emb),
            worst[2] <= 300)
    else:
        add(f"Peak RSS per worker ≤ 300 MB at {l_lbl}", "not measured", None)
    return out


def render(rep, a):
    small, large = a.sizes
    m, v = rep["machine"], rep["versions"]
    md = [f"# Conveyor benchmark (issue 4): one run, {rep['started']}", ""]
    if a.quick:
        md += [f"**Quick run** (`--quick`): sizes shrunk (W3 at {small:,} and {large:,} rows, fewer flows); "
               "the issue's targets are stated for 1M / 10M rows.", ""]
    md += [f"Command: `{rep['command']}`; total {f(rep.get('total_seconds'), 0)} s.", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, kernel {m['kernel']}. "
           "Shared and noisy (other builds run on it).", "",
           f"Versions: {v['conveyor']}; {v['rustc']}; RabbitMQ {v['rabbitmq']}; Python {v['python']}; "
           + ", ".join(f"{k} {x}" for k, x in (v["peers"].items() if isinstance(v["peers"], dict) else [])) + ".", ""]
    if not rep["broker_up"]:
        md += [f"**RabbitMQ was not reachable at {rep['broker']}: every broker part is skipped** "
               "(lapin ceiling, Conveyor across processes, Celery, reference design, Prefect).", ""]

    # Targets first.
    md += ["## Targets", "", md_table(["target", "figures", "result"], rep["targets"]), ""]

    # Ceilings.
    md += ["## 1. Ceilings", "", "Raw arrow (etl/examples/raw_pipeline.rs, CSV -> drop -> Parquet, one process):", ""]
    rows = []
    for size in a.sizes:
        r = w3_get(rep, size, "raw-arrow", "parquet")
        if r:
            rows.append([f"{size:,}", f(r["seconds"]), f(r["mb_per_s"], 0), f(r["peak_rss_mb"], 0), len(r["runs"])])
    md += [md_table(["rows", "seconds", "MB/s", "peak RSS MB", "runs"], rows), ""]
    c = rep.get("ceilings")
    if isinstance(c, dict) and "error" not in c and c:
        md += ["Raw lapin request/reply (bench/ceiling.py; Conveyor's AMQP settings; 3 task queues; a flow = 3 "
               f"round trips). **The W1 ratio uses responder concurrency {W1_CONCURRENCY}, {CEILING_INFLIGHT} in "
               f"flight**, the setting of Conveyor's W1 worker (concurrency {W1_CONCURRENCY} per kind).", ""]
        rows = []
        for key, label in (("c16", f"concurrency {W1_CONCURRENCY} (W1 setting)"), ("c2", "concurrency 2 (Conveyor default here)"),
                           ("c16_started", f"concurrency {W1_CONCURRENCY} + `started` update")):
            if key not in c:
                continue
            for mode in ("one", "many"):
                x = c[key][mode]
                rows.append([label, mode, x["inflight"], x["requests"], f(x["rr_per_s"], 0), f(x["flows_per_s"], 0),
                             f(x["p50_ms"]), f(x["p99_ms"]), f(x.get("client_cpu_ms_per_rr"), 3)])
        md += [md_table(["responder", "mode", "in flight", "requests", "rr/s", "flows/s", "p50 ms", "p99 ms",
                         "client CPU ms/rr"], rows), ""]
    elif isinstance(c, dict) and "error" in c:
        md += [f"Lapin ceiling FAILED: `{c['error'][-800:]}`", ""]
    else:
        md += ["Lapin ceiling skipped: no broker.", ""]

    # W3.
    for size in a.sizes:
        w3 = rep.get(f"w3_{size}")
        md += [f"## 2. W3 at {size:,} rows", ""]
        if not isinstance(w3, dict) or "results" not in w3:
            md += [f"FAILED: `{(w3 or {}).get('error', 'not run')[-1500:]}`", ""]
            continue
        md += [f"CSV ({f(w3['input_mb'], 0)} MB) -> drop `note` -> Parquet / CSV, end to end (process start to exit), "
               f"median of {w3['runs_per_tool']} run(s); every output's rows checked = {size:,} and `note` gone. "
               "× raw arrow is against raw arrow's Parquet time (it has no CSV writer); × polars is against polars "
               "with the same output. Peak RSS per process (worker nodes: VmHWM).", ""]
        rows = []
        for r in w3["results"]:
            rows.append([r["tool"], r["format"], f(r["seconds"]), f(r["mb_per_s"], 0), f(r["vs_raw_arrow"]),
                         f(r["vs_polars"]), run.rss_text(r), " ".join(f(t) for t in r["runs"])])
        md += [md_table(["tool", "output", "seconds", "MB/s", "× raw arrow", "× polars", "peak RSS MB", "runs s"], rows), ""]
        for s in w3.get("skipped", []):
            md.append(f"- skipped {s['tool']} ({s['format']}): {s['why']}")
        md.append("")
    if a.no_reference_large:
        md += [f"Reference design at {large:,} rows: skipped. Each of its three daemons loads the whole file into "
               "pandas and extract and transform each write a full intermediate CSV (at 1M: ≈16 s, ≈300 MB per daemon; "
               "at 10M that is >3 GB of RAM and minutes per run); it runs at the smaller size only.", ""]

    # W1/W2.
    md += ["## 3. W1 and W2: tiny three-task flows", ""]
    fl = rep.get("flows")
    if isinstance(fl, dict) and "error" not in fl:
        ceil = (rep.get("ceilings") or {}).get("c16", {}).get("many", {}) if isinstance(rep.get("ceilings"), dict) else {}
        ceil2 = (rep.get("ceilings") or {}).get("c2", {}).get("many", {}) if isinstance(rep.get("ceilings"), dict) else {}
        cef = fl.get("celery", {}).get("w1_flows_per_s")
        rows = []
        for key in ("conveyor", "conveyor-fused", "celery", "reference", "prefect"):
            r = fl.get(key, {})
            name = r.get("system", key)
            if "error" in r or "skipped" in r:
                rows.append([name] + ["–"] * 9 + [f"{'FAILED' if 'error' in r else 'skipped'}: {(r.get('error') or r.get('skipped'))[-300:]}"])
                continue
            w1 = r.get("w1_flows_per_s")
            rows.append([name, r.get("w1_flows", "–"), f(w1, 0), f(w1 / cef if w1 and cef else None),
                         f(100 * w1 / ceil["flows_per_s"] if w1 and ceil.get("flows_per_s") else None, 1),
                         f(100 * w1 / ceil2["flows_per_s"] if w1 and ceil2.get("flows_per_s") else None, 1),
                         f(r.get("w1_cpu_ms_per_task")), r.get("w2_flows", "–"), f(r.get("w2_p50_ms")),
                         f(r.get("w2_p99_ms")), ""])
        if ceil:
            rows.append([f"lapin ceiling (concurrency {W1_CONCURRENCY}, many / one in flight)", ceil.get("requests", 0) // 3,
                         f(ceil["flows_per_s"], 0), f(ceil["flows_per_s"] / cef if cef else None), "100.0", "", "", "",
                         f(3 * c["c16"]["one"]["p50_ms"]) if "c16" in c else "–", f(3 * c["c16"]["one"]["p99_ms"]) if "c16" in c else "–",
                         "W2 columns: 3 × the one-in-flight round trip"])
        md += ["Conveyor: coordinator node + one worker node (concurrency 16 per kind), client over the wire "
               "contract (bench/flows.py); conveyor-fused: the same flows with `fuse = true` (one task per flow; "
               "CPU ms/task still divides by three). Celery: prefork, concurrency 2, chain of 3 tasks. Reference: 3 pandas "
               f"daemons, W1 over {fl.get('reference', {}).get('w1_publishers', '?')} publisher processes. Prefect: "
               "the reference's tasks as a Prefect 3 flow (W2 only).", "",
               md_table(["system", "W1 flows", "W1 flows/s", "× Celery", f"% ceiling c{W1_CONCURRENCY}", "% ceiling c2",
                         "CPU ms/task", "W2 flows", "W2 p50 ms", "W2 p99 ms", "note"], rows), ""]
        for key in ("conveyor", "conveyor-fused"):
            p50 = fl.get(key, {}).get("w2_p50_ms")
            if p50:
                md += [f"W2 p50 vs 5 ms: {key} {f(p50)} ms = {f(p50 / 5)}× the 5 ms target.", ""]
    else:
        md += [f"FAILED or skipped: `{(fl or {}).get('error', 'no broker') if isinstance(fl, dict) else fl}`", ""]

    # W4.
    md += ["## 4. W4 cold start (process start -> first flow done)", ""]
    w = rep.get("w4")
    if isinstance(w, dict) and "error" not in w:
        rows = []
        for k, x in w.items():
            rows.append([k, f(x["ms"], 0) if "ms" in x else "–", " ".join(f(t, 0) for t in x.get("runs_ms", [])),
                         x.get("skipped", "")[-300:]])
        pf = (fl or {}).get("prefect", {}) if isinstance(fl, dict) else {}
        if "first_flow_ms" in pf:
            rows.append(["prefect (first flow in a fresh publisher, after its imports; daemons already up)",
                         f(pf["first_flow_ms"], 0), "1 run", "from bench_prefect_w2"])
        md += [md_table(["system", "median ms", "runs ms", "note"], rows), ""]
    else:
        md += [f"FAILED: `{(w or {}).get('error', 'not run')}`", ""]

    errs = [(k, v["error"]) for k, v in rep.items() if isinstance(v, dict) and "error" in v]
    if errs:
        md += ["## Failures", ""] + [f"- {k}: `{e[-1500:]}`" for k, e in errs] + [""]
    return "\n".join(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shrunk sizes (a few minutes)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    ap.add_argument("--only", default="ceilings,w3,flows,w4", help="comma list of parts to run")
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.small_runs, a.large_runs = (100_000, 1_000_000), 3, 1
        a.w1, a.celery_w1, a.w2, a.ref_w1, a.ref_w2, a.prefect_w2 = 1000, 300, 50, 100, 30, 10
        a.ceiling_one, a.ceiling_many, a.w4_reps = 500, 5000, 1
    else:
        a.sizes, a.small_runs, a.large_runs = (1_000_000, 10_000_000), 3, 1
        a.w1, a.celery_w1, a.w2, a.ref_w1, a.ref_w2, a.prefect_w2 = 10_000, 1_000, 200, 400, 100, 30
        a.ceiling_one, a.ceiling_many, a.w4_reps = 2000, 20000, 3
    a.no_reference_large = True
    parts = set(a.only.split(","))
    t0 = time.perf_counter()
    url = run.amqp_url()
    rep = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": "python3 bench/all.py" + (" --quick" if a.quick else ""),
           "broker": url.split("@")[-1], "machine": machine()}
    if not a.no_build:
        log("building release binaries (conveyor-node, conveyor-bench-ceiling, raw_pipeline) ...")
        run.build()
    peers = all_peers()
    log(f"creating/updating bench/.venv: {' '.join(peers)} ...")
    py = run.ensure_venv(peers)
    rep["versions"] = versions(py, peers)
    for size in a.sizes:
        run.ensure_data(size)
    rep["broker_up"] = up = run.broker_up(url)
    if not up:
        log(f"RabbitMQ is NOT reachable at {rep['broker']}: skipping the broker parts")

    if "ceilings" in parts:
        if up:
            section(rep, "ceilings", lambda: ceilings(url, a))
        else:
            rep["ceilings"] = {}
    if "w3" in parts:
        small, large = a.sizes
        section(rep, f"w3_{small}", lambda: run.bench_w3(py, run.ensure_data(small), small, a.small_runs, url=url,
                                                          reference=True, broker=up))
        section(rep, f"w3_{large}", lambda: run.bench_w3(py, run.ensure_data(large), large, a.large_runs, url=url,
                                                          reference=False, broker=up))
    if "flows" in parts:
        if up:
            section(rep, "flows", lambda: flows_part(py, url, a))
        else:
            rep["flows"] = {"error": f"skipped: RabbitMQ is not reachable at {rep['broker']}"}
    if "w4" in parts:
        section(rep, "w4", lambda: w4.bench_w4(py, url=url, reps=a.w4_reps, broker=up))
    if up:  # what bench/flows.py and the others leave on the broker (exchanges, mostly): this run's names only
        pid = os.getpid()
        rep["broker_leftovers_deleted"] = run.sweep([f"bench-w3-{pid}-", f"bench-w4-{pid}-", f"bench-w4-celery-{pid}-",
                                                     f"bench-flows-{pid}.", f"bench-celery-{pid}", f"ref-{pid}-"], py, url)
    rep["total_seconds"] = time.perf_counter() - t0
    rep["targets"] = targets(rep, *a.sizes)
    md = render(rep, a)
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "all.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
    (out / "all.md").write_text(md + "\n")
    print(md)
    print(f"\nwrote {(out / 'all.json').relative_to(ROOT)} and {(out / 'all.md').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
