#!/usr/bin/env python3
"""GET /api/v1/runs on a coordinator node with 1k and then 100k runs in its
history: p50 and p99 of a page of 50, for the first page, a deep page (by
cursor, half-way down the history), a state filter and a flow filter.
Target (issue 11): p99 <= 20 ms at 100k, and flat from 1k to 100k.
Beside each figure, the same query as the dashboard's HTML runs page
(GET /runs, issue 12: a page of 50 rows with the counts by state and the
filter form): target <= 100 ms server time at 100k.

The runs are written straight into the coordinator's database with sqlite3,
in the schema the node itself creates (it is started once on an empty
database first), so the run counts kept by the database's triggers are
filled as the node would fill them. Requests go over one kept-alive HTTP
connection, so the figures are the server's, not TCP set-up. Figures only;
nothing is asserted.

    cargo build --release -p conveyor-node   # or a debug build: slower figures
    python3 bench/api_list.py [--runs 1000,100000] [--requests 400]
"""
import argparse, http.client, json, os, random, re, shutil, signal, sqlite3
import subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOWS = [f"flow{i}" for i in range(10)]


def binary():
    for b in ("release", "debug"):
        p = os.path.join(ROOT, "target", b, "conveyor")
        if os.path.exists(p):
            return p
    sys.exit("build the conveyor binary first: cargo build --release -p conveyor-node")


def start_node(bin_path, work):
    log = open(os.path.join(work, "node.log"), "w+")
    proc = subprocess.Popen([bin_path, "node", "--config", os.path.join(work, "node.toml")],
                            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "CONVEYOR_LOG": "warn,conveyor_api=info"})
    deadline = time.time() + 30
    while time.time() < deadline:
        log.seek(0)
        m = re.search(r"API listening.*addr=([0-9.]+):([0-9]+)", log.read())
        if m:
            return proc, m.group(1), int(m.group(2))
        if proc.poll() is not None:
            log.seek(0)
            sys.exit("node exited:\n" + log.read())
        time.sleep(0.05)
    proc.kill()
    sys.exit("node never said where its API listens")


def stop_node(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def seed(db, n):
    """n finished runs, newest last, each with a report like a real one."""
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    rnd = random.Random(11)
    t0 = 1_700_000_000_000
    rows = []
    for i in range(n):
        flow = FLOWS[i % len(FLOWS)]
        state = rnd.choices(["Succeeded", "Failed", "Cancelled"], [90, 8, 2])[0]
        rid = f"{flow}-{i:012x}"
        created = t0 + i * 1000
        err = "task `load` failed: disk full" if state == "Failed" else None
        report = {"flow": flow, "flow_run": rid, "state": state, "elapsed_ms": 850, "tasks": [
            {"name": t, "kind": k, "state": "Succeeded", "attempts": 1, "node": "w1",
             "rows_in": 100000, "rows_out": 100000, "output": f"{rid}/{t}.arrow", "error": None}
            for t, k in (("extract", "extract"), ("transform", "transform"), ("load", "load"))]}
        if err:
            report["error"] = err
        rows.append((rid, flow, "f.toml", "[flow]\nname = \"x\"\n", "/srv/flows", state, "{}",
                     created, created + 900, json.dumps(report), created + 5, created + 855))
    c.execute("BEGIN")
    c.executemany("INSERT INTO flow_runs (id, flow, flow_file, flow_text, flow_base, state, snapshot,"
                  " created_ms, updated_ms, report, started_ms, ended_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    c.execute("COMMIT")
    c.close()
    return t0 + (n // 2) * 1000, f"{FLOWS[(n // 2) % len(FLOWS)]}-{n // 2:012x}"


def measure(host, port, path, requests):
    """p50 and p99 in ms of GET path, and the rows of the last page: the
    API's JSON runs, or the dashboard's `tr.run` rows (with its session
    cookie, kept from the first answer)."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    times = []
    cookie = None
    for i in range(requests + 20):
        t = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        res = conn.getresponse()
        body = res.read()
        set_cookie = res.getheader("Set-Cookie")
        if set_cookie and not cookie:
            cookie = set_cookie.split(";")[0]
        dt = time.perf_counter() - t
        if res.status != 200:
            sys.exit(f"GET {path}: {res.status} {body[:300]!r}")
        if i >= 20:  # warm-up
            times.append(dt * 1000)
    conn.close()
    times.sort()
    if path.startswith("/api/"):
        rows = len(json.loads(body)["runs"])
    else:
        rows = body.decode().count('<tr class="run"')
    return times[len(times) // 2], times[min(len(times) - 1, int(len(times) * 0.99))], rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="1000,100000")
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    bin_path = binary()
    print(f"binary: {os.path.relpath(bin_path, ROOT)}; {args.requests} requests per figure, one connection")
    print(f"{'':>7}  {'':<30} {'API /api/v1/runs':^22} {'page /runs (HTML)':^22}")
    print(f"{'runs':>7}  {'query':<30} {'p50 ms':>7} {'p99 ms':>7} {'rows':>5}  {'p50 ms':>7} {'p99 ms':>7} {'rows':>5}")
    for n in [int(x) for x in args.runs.split(",")]:
        work = tempfile.mkdtemp(prefix="conveyor-api-list-")
        with open(os.path.join(work, "node.toml"), "w") as f:
            f.write("[node]\nname = \"bench\"\n[coordinator]\n[workers]\nkinds = [\"extract\"]\n"
                    "[api]\nlisten = \"127.0.0.1:0\"\n[storage]\nartifacts = \"a\"\noutput_root = \"out\"\n")
        proc, _, _ = start_node(bin_path, work)  # creates the schema
        stop_node(proc)
        t = time.time()
        mid_ms, mid_id = seed(os.path.join(work, "coordinator.db"), n)
        seeded = time.time() - t
        proc, host, port = start_node(bin_path, work)
        try:
            queries = [
                ("first page", "/api/v1/runs?limit=50", "/runs"),
                ("deep page (cursor, half-way)", f"/api/v1/runs?limit=50&cursor={mid_ms}.{mid_id}",
                 f"/runs?cursor={mid_ms}.{mid_id}"),
                ("state=Failed", "/api/v1/runs?limit=50&state=Failed", "/runs?state=Failed"),
                ("flow=flow3", "/api/v1/runs?limit=50&flow=flow3", "/runs?flow=flow3"),
            ]
            for name, api, html in queries:
                a50, a99, arows = measure(host, port, api, args.requests)
                h50, h99, hrows = measure(host, port, html, args.requests)
                print(f"{n:>7}  {name:<30} {a50:>7.2f} {a99:>7.2f} {arows:>5}  {h50:>7.2f} {h99:>7.2f} {hrows:>5}")
        finally:
            stop_node(proc)
            shutil.rmtree(work, ignore_errors=True)
        print(f"         (seeded {n} runs in {seeded:.1f}s)")


if __name__ == "__main__":
    main()
