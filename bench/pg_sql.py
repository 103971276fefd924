#!/usr/bin/env python3
"""Issue 13's benchmark, everything in one run: PostgreSQL loads and extracts, SQL steps.

One command, from the repository root, with PostgreSQL at 127.0.0.1:5432 (user postgres,
trust auth; CONVEYOR_TEST_PG_URL overrides the admin URL, postgres://.../postgres):

    python3 bench/pg_sql.py                      # 10M orders rows, one run per tool
    python3 bench/pg_sql.py --rows 100000 --runs 3
    python3 bench/pg_sql.py --sections load --tools psql-copy,conveyor-fused

It builds the release binary (`cargo build --release -p conveyor-node`, skipped with
--no-build), creates bench/.venv-pg with the Python peers from PyPI (pinned, PEERS), generates
the data once under bench/data/pg_sql/ (bench/gen_orders.py: orders id, code, customer_id,
amount numeric(12,2), name, ts; customers 100,000 rows), then runs three sections, each tool
`--runs` times (the median counts), checks every result, prints a table and writes
bench/results/pg_sql_<rows>.json and .md.

Sections (each on a database of its own, dropped and made again at the start):
  load     CSV -> PostgreSQL table `orders` (created beforehand with the same DDL for every
           tool; dropped, made again and CHECKPOINTed before each run), database
           conveyor_bench_load. Tools:
             psql-copy           psql `\\copy orders FROM 'file' (FORMAT csv, HEADER)`: the ceiling
             conveyor            `conveyor run` (embedded, release) of extract CSV -> load
                                 postgres (mode append): two tasks, an Arrow IPC artifact between
             conveyor-fused      the same with `fuse = true`: one task, one pass
             conveyor-fused-p2   fused, `partitions = 2`: two tasks parse the CSV at once, each
                                 writes a Parquet part; the gather COPYs both in one transaction
             conveyor-fused-staged  fused, mode replace: COPY into a TEMP staging table, then
                                 INSERT ... SELECT into the target (the path of replace, upsert,
                                 and of an append whose column types differ from the rows')
             polars-adbc         pl.read_csv(schema) + DataFrame.write_database(engine="adbc"),
                                 the ADBC PostgreSQL driver (binary COPY)
             pandas-to_sql       pd.read_csv + DataFrame.to_sql(method="multi", chunksize=10000)
                                 through SQLAlchemy + psycopg2; above --pandas-rows rows it runs
                                 on the first --pandas-rows rows and its time at the full size is
                                 extrapolated linearly (said so in the table)
           Check: every table's count, sum(id), sum(amount) and a checksum of every value of every
           row (sum of hashtext of the row's text) equal the \\copy table's; after a Conveyor
           run, no table but `orders` and `conveyor_commits` may be left (staging dropped).
  extract  PostgreSQL `SELECT * FROM orders` -> Parquet file, database conveyor_bench_extract
           (loaded once with \\copy, VACUUM ANALYZEd). Tools:
             psql-copy-out       `\\copy (SELECT * FROM orders) TO '/dev/null' (FORMAT binary)`:
                                 the server's export alone, no Parquet (a ceiling, not a peer)
             conveyor, conveyor-fused, conveyor-fused-p2 (partition_by = "id", partitions = 2)
             polars-connectorx   pl.read_database_uri(engine="connectorx") + write_parquet
             polars-connectorx-p2  the same with partition_on="id", partition_num=2
             polars-adbc         pl.read_database_uri(engine="adbc") + write_parquet
           Check: every file's row count and sum(id).
  sql      Two queries over the orders CSV and customers.csv (100,000 rows), result to Parquet,
           the same SQL text for every tool:
             groupby  SELECT customer_id, count(*), sum(amount) FROM orders GROUP BY customer_id
             join     orders JOIN customers ON customer_id, grouped by region and segment
           Tools: conveyor (extract CSV(s) -> transform with one `sql` step -> load Parquet),
           conveyor-p2 (the orders extract with partitions = 2), duckdb (read_csv with the same
           column types, COPY (query) TO parquet), polars (SQLContext over scan_csv, collect,
           write_parquet). Check: every result, sorted, equals DuckDB's value for value.

Each run is a new process timed by /usr/bin/time (wall seconds, and the peak RSS of that
process; the PostgreSQL server's own work and memory are in the wall time, not in the RSS).
A tool that fails is reported with its error and the run goes on.
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
import run  # noqa: E402  (timed, log)

VENV = BENCH / ".venv-pg"
PEERS = ["polars==2.1.0", "duckdb==2.0.1", "pandas==3.1.1", "pyarrow==26.0.1", "sqlalchemy==2.1.9",
         "psycopg2-binary==2.9.13", "connectorx==0.4.6", "adbc-driver-manager==1.13.0",
         "adbc-driver-postgresql==1.13.0"]
DATA = BENCH / "data" / "pg_sql"
CONVEYOR = ROOT / "target/release/conveyor"
CUSTOMERS = 100_000
ADMIN_URL = os.environ.get("CONVEYOR_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")

ORDERS_COLUMNS = [("id", "int64", "bigint", "BIGINT"), ("code", "string", "text", "VARCHAR"),
                  ("customer_id", "int64", "bigint", "BIGINT"),
                  ("amount", "decimal(12,2)", "numeric(12,2)", "DECIMAL(12,2)"),
                  ("name", "string", "text", "VARCHAR"), ("ts", "timestamp", "timestamp", "TIMESTAMP")]
CUSTOMERS_COLUMNS = [("customer_id", "int64", "bigint", "BIGINT"), ("name", "string", "text", "VARCHAR"),
                     ("region", "string", "text", "VARCHAR"), ("segment", "string", "text", "VARCHAR")]
ORDERS_DDL = "CREATE TABLE orders (" + ", ".join(f"{c} {pg}" for c, _, pg, _ in ORDERS_COLUMNS) + ")"
ROW_CHECK = ("SELECT count(*) || ' rows, sum(id) ' || coalesce(sum(id), 0) || ', sum(amount) ' "
             "|| coalesce(sum(amount), 0) || ', row checksum ' "
             "|| coalesce(sum(hashtext(concat_ws('|', id, code, customer_id, amount, name, ts))), 0) FROM orders")
QUERIES = {
    "groupby": "SELECT customer_id, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer_id",
    "join": ("SELECT c.region, c.segment, count(*) AS n, sum(o.amount) AS total "
             "FROM orders o JOIN customers c ON o.customer_id = c.customer_id GROUP BY c.region, c.segment"),
}
QUERY_KEYS = {"groupby": ["customer_id"], "join": ["region", "segment"]}
SECTIONS = ("load", "extract", "sql")


def log(msg):
    run.log(f"[{time.strftime('%H:%M:%S')}] {msg}")


def db_url(db):
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + db


def psql(db, sql, *extra):
    """Runs `sql` (or a psql meta-command) with psql on database `db`; returns its stdout, stripped."""
    done = subprocess.run(["psql", db_url(db), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", *extra, "-c", sql],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"psql {db}: {sql[:200]}: {done.stderr.strip()[-1500:]}")
    return done.stdout.strip()


def fresh_database(db):
    psql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql("postgres", f'CREATE DATABASE "{db}"')


def reset_orders(db):
    """An empty `orders` table and nothing else in the database's public schema."""
    psql(db, "DROP SCHEMA public CASCADE")
    psql(db, "CREATE SCHEMA public")
    psql(db, ORDERS_DDL)
    psql(db, "CHECKPOINT")


def user_tables(db):
    out = psql(db, "SELECT schemaname || '.' || tablename FROM pg_tables "
                   "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")
    return out.splitlines()


def ensure_venv():
    py = VENV / "bin" / "python"
    if not py.exists():
        run.sh([sys.executable, "-m", "venv", str(VENV)])
    run.sh([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEERS])
    return py


def ensure_data(py, rows):
    DATA.mkdir(parents=True, exist_ok=True)
    out = {}
    for what, n, extra in (("orders", rows, ["--customers", str(CUSTOMERS)]), ("customers", CUSTOMERS, [])):
        path = DATA / f"{what}_{n}.csv"
        if not path.exists():
            log(f"generating {path} ...")
            tmp = path.with_suffix(".csv.tmp")
            run.sh([str(py), str(BENCH / "gen_orders.py"), what, "--rows", str(n), "--out", str(tmp), *extra])
            tmp.rename(path)
        out[what] = path
    return out["orders"], out["customers"]


def toml_str(s):
    return json.dumps(str(s))


def schema_toml(columns):
    return "{ " + ", ".join(f"{c} = {toml_str(t)}" for c, t, _, _ in columns) + " }"


# ----------------------------------------------------------------------------------------------
# Flows for `conveyor run` (embedded). The PostgreSQL URL comes from the environment (PG_URL).


def flow_load(csv, fuse, partitions, mode="append"):
    head = f'[flow]\nname = "bench_csv_to_pg"\n' + ("fuse = true\n" if fuse else "")
    part = f"partitions = {partitions}\n" if partitions > 1 else ""
    return (head + f'[tasks.extract]\nkind = "extract"\npath = {toml_str(csv)}\n{part}'
            f"schema = {schema_toml(ORDERS_COLUMNS)}\n"
            '[tasks.load]\nkind = "load"\ninput = "extract"\n'
            'postgres = { url = "${env:PG_URL}", table = "public.orders", mode = "%s" }\n' % mode)


def flow_extract(fuse, partitions):
    head = f'[flow]\nname = "bench_pg_to_parquet"\n' + ("fuse = true\n" if fuse else "")
    part = f'partition_by = "id"\npartitions = {partitions}\n' if partitions > 1 else ""
    return (head + '[tasks.extract]\nkind = "extract"\n'
            'postgres = { url = "${env:PG_URL}", query = "SELECT * FROM orders" }\n' + part +
            '[tasks.load]\nkind = "load"\ninput = "extract"\npath = "orders.parquet"\n')


def flow_sql(query_name, orders, customers, partitions):
    part = f"partitions = {partitions}\n" if partitions > 1 else ""
    text = (f'[flow]\nname = "bench_sql_{query_name}"\n'
            f'[tasks.orders]\nkind = "extract"\npath = {toml_str(orders)}\n{part}'
            f"schema = {schema_toml(ORDERS_COLUMNS)}\n")
    inputs = 'orders = "orders"'
    if "customers" in QUERIES[query_name]:
        text += (f'[tasks.customers]\nkind = "extract"\npath = {toml_str(customers)}\n'
                 f"schema = {schema_toml(CUSTOMERS_COLUMNS)}\n")
        inputs += ', customers = "customers"'
    return (text + f'[tasks.query]\nkind = "transform"\ninputs = {{ {inputs} }}\n'
            f"steps = [{{ sql = {toml_str(QUERIES[query_name])} }}]\n"
            '[tasks.load]\nkind = "load"\ninput = "query"\npath = "result.parquet"\n')


# ----------------------------------------------------------------------------------------------
# The Python peers: each a fresh process of the venv's python, arguments in argv.

POLARS_SCHEMA = r'''
import polars as pl
ORDERS = {"id": pl.Int64, "code": pl.String, "customer_id": pl.Int64, "amount": pl.Decimal(12, 2),
          "name": pl.String, "ts": pl.Datetime("us")}
CUSTOMERS = {"customer_id": pl.Int64, "name": pl.String, "region": pl.String, "segment": pl.String}
'''

PANDAS_LOAD = r'''
import sys, pandas as pd, sqlalchemy as sa
path, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
df = pd.read_csv(path, nrows=n, dtype={"code": str, "name": str}, parse_dates=["ts"], keep_default_na=False)
engine = sa.create_engine(url)
df.to_sql("orders", engine, if_exists="append", index=False, method="multi", chunksize=10_000)
'''

POLARS_LOAD = POLARS_SCHEMA + r'''
import sys
path, uri = sys.argv[1], sys.argv[2]
df = pl.read_csv(path, schema=ORDERS)
df.write_database("orders", uri, engine="adbc", if_table_exists="append")
'''

POLARS_EXTRACT = r'''
import sys, polars as pl
uri, engine, parts, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
kw = {"partition_on": "id", "partition_num": parts} if parts > 1 else {}
pl.read_database_uri("SELECT * FROM orders", uri, engine=engine, **kw).write_parquet(out)
'''

DUCKDB_SQL = r'''
import json, sys, duckdb
orders, customers, query, out, ocols, ccols = sys.argv[1:7]
con = duckdb.connect()
for name, path, cols in (("orders", orders, ocols), ("customers", customers, ccols)):
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv('{path}', header = true, columns = {cols})")
con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)")
'''

POLARS_SQL = POLARS_SCHEMA + r'''
import sys
orders, customers, query, out = sys.argv[1:5]
ctx = pl.SQLContext(orders=pl.scan_csv(orders, schema=ORDERS), customers=pl.scan_csv(customers, schema=CUSTOMERS))
ctx.execute(query).collect().write_parquet(out)
'''

CHECK_PARQUET = r'''
import hashlib, json, sys, polars as pl
mode, path = sys.argv[1], sys.argv[2]
df = pl.read_parquet(path)
if mode == "orders":
    print(json.dumps({"rows": df.height, "sum_id": int(df["id"].sum()), "columns": df.columns,
                      "types": {c: str(t) for c, t in df.schema.items()}}))
else:
    keys = json.loads(sys.argv[3])
    norm = df.select(*[pl.col(k) for k in keys], pl.col("n").cast(pl.Int64),
                     pl.col("total").cast(pl.Decimal(38, 2)).cast(pl.String)).sort(keys)
    print(json.dumps({"rows": df.height, "digest": hashlib.sha256(norm.write_csv().encode()).hexdigest(),
                      "columns": df.columns, "types": {c: str(t) for c, t in df.schema.items()}}))
'''


def check_parquet(py, mode, path, keys=None):
    done = subprocess.run([str(py), "-c", CHECK_PARQUET, mode, str(path), json.dumps(keys or [])],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"reading {path} back failed: {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout)


# ----------------------------------------------------------------------------------------------


class Section:
    """Runs tools `runs` times each, keeps their medians; a failing tool is recorded, not fatal."""

    def __init__(self, name, rows, runs, only):
        self.name, self.rows, self.runs, self.only = name, rows, runs, only
        self.results = []

    def measure(self, tool, fn, rows=None, **extra):
        """fn(i) -> (seconds, peak RSS MB, note or None); raises on a wrong result."""
        if self.only and tool not in self.only:
            return None
        rows = rows or self.rows
        times, rsses, notes = [], [], []
        entry = {"tool": tool, "rows": rows, **extra}
        try:
            for i in range(self.runs):
                s, rss, note = fn(i)
                times.append(s)
                rsses.append(rss)
                if note:
                    notes.append(note)
            med = statistics.median(times)
            entry.update(seconds=med, runs=times, rows_per_s=rows / med, peak_rss_mb=max(rsses))
            if notes:
                entry["note"] = notes[-1]
            log(f"  {self.name} {tool}: {med:.2f} s ({rows / med:,.0f} rows/s) " + " ".join(f"{t:.2f}" for t in times))
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {e}"[-3000:]
            entry["traceback"] = traceback.format_exc()[-3000:]
            log(f"  {self.name} {tool} FAILED: {entry['error'][-1500:]}")
        self.results.append(entry)
        return entry

    def get(self, tool):
        return next((r for r in self.results if r["tool"] == tool and "seconds" in r), None)


def conveyor_run(flow_text, work, env):
    """`conveyor run flow.toml` (embedded) in a fresh directory under `work`; returns (s, rss, dir)."""
    d = work / f"run-{time.monotonic_ns()}"
    d.mkdir()
    flow = d / "flow.toml"
    flow.write_text(flow_text)
    s, rss, _ = run.timed([str(CONVEYOR), "run", str(flow)], cwd=d, env=env)
    return s, rss, d


def bench_load(py, orders, rows, runs, pandas_rows, only, work):
    db = "conveyor_bench_load"
    sec = Section("load", rows, runs, only)
    fresh_database(db)
    url = db_url(db)
    env = dict(os.environ, PG_URL=url, CONVEYOR_LOG="warn")
    expected = {}

    def copy(i):
        reset_orders(db)
        s, rss, _ = run.timed(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                               f"\\copy orders FROM '{orders}' WITH (FORMAT csv, HEADER true)"])
        got = psql(db, ROW_CHECK)
        expected.setdefault("all", got)
        if got != expected["all"]:
            raise RuntimeError(f"\\copy run {i} gave {got}, an earlier run {expected['all']}")
        expected.setdefault("head", psql(db, ROW_CHECK + f" WHERE id < {min(rows, pandas_rows)}"))
        return s, rss, None

    def check(tool, where=""):
        got = psql(db, ROW_CHECK + where)
        want = expected["head" if where else "all"]
        if got != want:
            raise RuntimeError(f"{tool} loaded {got}; \\copy loaded {want}")

    ceiling = sec.measure("psql-copy", copy)
    if not ceiling and (only is None or any(t != "psql-copy" for t in only)):
        # The check needs the \copy figures even when psql-copy is not asked for.
        copy(0)

    def conveyor(fuse, parts, mode="append"):
        def go(i):
            reset_orders(db)
            s, rss, _ = conveyor_run(flow_load(orders, fuse, parts, mode), work, env)
            check("conveyor")
            left = [t for t in user_tables(db) if t not in ("public.orders", "public.conveyor_commits")]
            fences = psql(db, "SELECT count(*) FROM conveyor_commits") if "public.conveyor_commits" in \
                user_tables(db) else "no conveyor_commits table"
            if left:
                raise RuntimeError(f"left behind after the run: {left} (fences: {fences})")
            return s, rss, f"fences {fences}"
        return go

    sec.measure("conveyor", conveyor(False, 1))
    sec.measure("conveyor-fused", conveyor(True, 1), fused=True)
    sec.measure("conveyor-fused-p2", conveyor(True, 2), fused=True, partitions=2)
    # mode = "replace" into the same empty table: the rows go through the
    # staging table, then INSERT ... SELECT (the path of replace, upsert and
    # an append whose column types differ).
    sec.measure("conveyor-fused-staged", conveyor(True, 1, "replace"), fused=True)

    def polars(i):
        reset_orders(db)
        s, rss, _ = run.timed([str(py), "-c", POLARS_LOAD, str(orders), url.replace("postgres://", "postgresql://")])
        check("polars-adbc")
        return s, rss, None

    sec.measure("polars-adbc", polars, engine="adbc (adbc-driver-postgresql, binary COPY)")

    n = min(rows, pandas_rows)

    def pandas(i):
        reset_orders(db)
        s, rss, _ = run.timed([str(py), "-c", PANDAS_LOAD, str(orders),
                               url.replace("postgres://", "postgresql+psycopg2://"), str(n)])
        check("pandas-to_sql", f" WHERE id < {n}" if n < rows else "")
        note = None
        if n < rows:
            note = f"measured on the first {n:,} rows; at {rows:,}: ~{s * rows / n:,.0f} s extrapolated"
        return s, rss, note

    sec.measure("pandas-to_sql", pandas, rows=n, extrapolated=n < rows,
                method="to_sql(method='multi', chunksize=10000), SQLAlchemy + psycopg2")
    reset_orders(db)
    base = sec.get("psql-copy")
    for r in sec.results:
        if base and "rows_per_s" in r:
            r["pct_of_copy"] = 100 * r["rows_per_s"] / base["rows_per_s"]
    return sec.results


def bench_extract(py, orders, rows, runs, only, work):
    db = "conveyor_bench_extract"
    sec = Section("extract", rows, runs, only)
    fresh_database(db)
    url = db_url(db)
    env = dict(os.environ, PG_URL=url, CONVEYOR_LOG="warn")
    log(f"  loading {rows:,} rows into {db} with \\copy (untimed) ...")
    reset_orders(db)
    psql(db, f"\\copy orders FROM '{orders}' WITH (FORMAT csv, HEADER true)")
    psql(db, "VACUUM ANALYZE orders")
    want_sum = int(psql(db, "SELECT sum(id) FROM orders"))

    def check(tool, path):
        got = check_parquet(py, "orders", path)
        if got["rows"] != rows or got["sum_id"] != want_sum:
            raise RuntimeError(f"{tool} wrote {got['rows']} rows, sum(id) {got['sum_id']}; "
                               f"the table has {rows} rows, sum(id) {want_sum}")
        return got

    def copy_out(i):
        psql(db, "CHECKPOINT")
        s, rss, _ = run.timed(["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                               "\\copy (SELECT * FROM orders) TO '/dev/null' WITH (FORMAT binary)"])
        return s, rss, None

    sec.measure("psql-copy-out", copy_out, what="the export alone to /dev/null, binary, no Parquet: a ceiling")

    def conveyor(fuse, parts):
        def go(i):
            psql(db, "CHECKPOINT")
            s, rss, d = conveyor_run(flow_extract(fuse, parts), work, env)
            got = check("conveyor", d / "out" / "orders.parquet")
            shutil.rmtree(d, ignore_errors=True)
            return s, rss, "types " + ", ".join(f"{k} {v}" for k, v in got["types"].items())
        return go

    sec.measure("conveyor", conveyor(False, 1))
    sec.measure("conveyor-fused", conveyor(True, 1), fused=True)
    sec.measure("conveyor-fused-p2", conveyor(True, 2), fused=True, partitions=2)

    def polars(engine, parts):
        def go(i):
            psql(db, "CHECKPOINT")
            out = work / f"polars-{engine}-{parts}.parquet"
            s, rss, _ = run.timed([str(py), "-c", POLARS_EXTRACT, url.replace("postgres://", "postgresql://"),
                                   engine, str(parts), str(out)])
            got = check(f"polars-{engine}", out)
            out.unlink()
            return s, rss, "types " + ", ".join(f"{k} {v}" for k, v in got["types"].items())
        return go

    sec.measure("polars-connectorx", polars("connectorx", 1))
    sec.measure("polars-connectorx-p2", polars("connectorx", 2), partitions=2)
    sec.measure("polars-adbc", polars("adbc", 1))
    psql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    base = sec.get("polars-connectorx")
    ceiling = sec.get("psql-copy-out")
    for r in sec.results:
        if "seconds" in r:
            r["x_polars_connectorx"] = r["seconds"] / base["seconds"] if base else None
            r["pct_of_copy_out"] = 100 * ceiling["seconds"] / r["seconds"] if ceiling else None
    return sec.results


def duck_columns(columns):
    return "{" + ", ".join(f"'{c}': '{d}'" for c, _, _, d in columns) + "}"


def bench_sql(py, orders, customers, rows, runs, only, work):
    out = {}
    for qname, query in QUERIES.items():
        sec = Section(f"sql {qname}", rows, runs, only)
        keys = QUERY_KEYS[qname]
        want = {}

        def check(tool, path):
            got = check_parquet(py, "result", path, keys)
            if "digest" not in want:
                want.update(got, tool=tool)
            elif got["digest"] != want["digest"]:
                raise RuntimeError(f"{tool}'s result ({got['rows']} rows) differs from {want['tool']}'s "
                                   f"({want['rows']} rows); types {got['types']} vs {want['types']}")
            return got

        def duck(i):
            o = work / f"duck-{qname}.parquet"
            s, rss, _ = run.timed([str(py), "-c", DUCKDB_SQL, str(orders), str(customers), query, str(o),
                                   duck_columns(ORDERS_COLUMNS), duck_columns(CUSTOMERS_COLUMNS)])
            got = check("duckdb", o)
            o.unlink()
            return s, rss, f"{got['rows']} result rows"

        def polars(i):
            o = work / f"polars-{qname}.parquet"
            s, rss, _ = run.timed([str(py), "-c", POLARS_SQL, str(orders), str(customers), query, str(o)])
            got = check("polars", o)
            o.unlink()
            return s, rss, f"{got['rows']} result rows"

        def conveyor(parts):
            def go(i):
                s, rss, d = conveyor_run(flow_sql(qname, orders, customers, parts), work,
                                         dict(os.environ, CONVEYOR_LOG="warn"))
                got = check("conveyor", d / "out" / "result.parquet")
                shutil.rmtree(d, ignore_errors=True)
                return s, rss, f"{got['rows']} result rows"
            return go

        sec.measure("duckdb", duck)
        sec.measure("polars", polars)
        sec.measure("conveyor", conveyor(1))
        sec.measure("conveyor-p2", conveyor(2), partitions=2)
        d, p = sec.get("duckdb"), sec.get("polars")
        for r in sec.results:
            if "seconds" in r:
                r["x_duckdb"] = r["seconds"] / d["seconds"] if d else None
                r["x_polars"] = r["seconds"] / p["seconds"] if p else None
        out[qname] = {"query": query, "results": sec.results}
    return out


# ----------------------------------------------------------------------------------------------


def fmt(x, nd=2):
    return "–" if x is None else f"{x:,.{nd}f}"


def md_table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def tables(rep):
    out = []
    rows = rep["rows"]
    load = rep.get("load")
    if isinstance(load, list):
        out.append(f"### CSV → PostgreSQL, {rows:,} rows ({rep['orders_mb']:.0f} MB CSV), "
                   f"median of {rep['runs']} run(s)")
        body = []
        for r in load:
            if "error" in r:
                body.append((r["tool"], "–", "–", "–", "–", "failed: " + r["error"].splitlines()[0][:200]))
                continue
            secs = fmt(r["seconds"])
            if r.get("extrapolated"):
                secs = f"~{r['seconds'] * rows / r['rows']:,.0f} (extrapolated; {fmt(r['seconds'])} for {r['rows']:,})"
            body.append((r["tool"], secs, f"{r['rows_per_s']:,.0f}", f"{fmt(r.get('pct_of_copy'), 1)} %",
                         f"{r['peak_rss_mb']:.0f}", r.get("note") or r.get("engine") or r.get("method") or ""))
        out.append(md_table(["tool", "seconds", "rows/s", "% of \\copy", "peak RSS MB", "note"], body))
    ext = rep.get("extract")
    if isinstance(ext, list):
        out.append(f"### PostgreSQL → Parquet, {rows:,} rows, median of {rep['runs']} run(s)")
        body = []
        for r in ext:
            if "error" in r:
                body.append((r["tool"], "–", "–", "–", "–", "–", "failed: " + r["error"].splitlines()[0][:200]))
                continue
            body.append((r["tool"], fmt(r["seconds"]), f"{r['rows_per_s']:,.0f}", fmt(r.get("x_polars_connectorx")),
                         f"{fmt(r.get('pct_of_copy_out'), 1)} %", f"{r['peak_rss_mb']:.0f}", r.get("what") or ""))
        out.append(md_table(["tool", "seconds", "rows/s", "× polars-connectorx", "% of \\copy out",
                             "peak RSS MB", "note"], body))
    sql = rep.get("sql")
    if isinstance(sql, dict) and "error" not in sql:
        for qname, q in sql.items():
            out.append(f"### SQL {qname}, {rows:,} orders × {CUSTOMERS:,} customers, CSV → Parquet, "
                       f"median of {rep['runs']} run(s)\n\n`{q['query']}`")
            body = []
            for r in q["results"]:
                if "error" in r:
                    body.append((r["tool"], "–", "–", "–", "–", "–", "failed: " + r["error"].splitlines()[0][:200]))
                    continue
                body.append((r["tool"], fmt(r["seconds"]), f"{r['rows_per_s']:,.0f}", fmt(r.get("x_duckdb")),
                             fmt(r.get("x_polars")), f"{r['peak_rss_mb']:.0f}", r.get("note") or ""))
            out.append(md_table(["tool", "seconds", "orders rows/s", "× duckdb", "× polars", "peak RSS MB",
                                 "note"], body))
    for name in SECTIONS:
        v = rep.get(name)
        if isinstance(v, dict) and "error" in v:
            out.append(f"{name}: FAILED: {v['error'][:500]}")
    return "\n\n".join(out)


def machine(py):
    info = Path("/proc/cpuinfo").read_text().splitlines()
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    code = "import importlib.metadata as m, json, sys; print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    got = subprocess.run([str(py), "-c", code, *(p.split("==")[0] for p in PEERS)], capture_output=True, text=True)
    settings = {}
    for s in ("server_version", "shared_buffers", "synchronous_commit", "fsync", "wal_level", "max_wal_size"):
        try:
            settings[s] = psql("postgres", f"SHOW {s}")
        except RuntimeError as e:
            settings[s] = str(e)
    try:
        conv = subprocess.run([str(CONVEYOR), "--version"], capture_output=True, text=True)
        conv = (conv.stdout or conv.stderr).strip()
    except OSError as e:
        conv = f"no conveyor binary: {e}"
    head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return {"cpu": next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?"),
            "cores": os.cpu_count(), "ram_gb": round(int(mem.split()[1]) / 1024 / 1024, 1),
            "kernel": platform.release(), "postgres": settings, "python": platform.python_version(),
            "peers": json.loads(got.stdout) if got.returncode == 0 else got.stderr[-500:],
            "conveyor": conv, "commit": head.stdout.strip()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000, help="orders rows (default 10M)")
    ap.add_argument("--runs", type=int, default=1, help="runs per tool; the median counts")
    ap.add_argument("--pandas-rows", type=int, default=1_000_000,
                    help="pandas to_sql runs on at most this many rows; above, its figure is extrapolated")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--tools", default=None, help="comma-separated tool names to run (default: all)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--conveyor", default=None,
                    help="the conveyor binary to run (default target/release/conveyor; a debug one only to "
                         "check that the flows work: its times mean nothing)")
    args = ap.parse_args()
    global CONVEYOR
    if args.conveyor:
        CONVEYOR = Path(args.conveyor).resolve()
    sections = args.sections.split(",")
    only = set(args.tools.split(",")) if args.tools else None
    started = time.perf_counter()
    if not args.no_build:
        log("building the release binary (cargo build --release -p conveyor-node) ...")
        run.sh(["cargo", "build", "--release", "-q", "-p", "conveyor-node"], cwd=ROOT)
    log(f"installing the peers into {VENV.relative_to(ROOT)} ...")
    py = ensure_venv()
    orders, customers = ensure_data(py, args.rows)
    rep = {"rows": args.rows, "runs": args.runs, "customers": CUSTOMERS, "orders_mb": orders.stat().st_size / 1e6,
           "command": "python3 bench/pg_sql.py " + " ".join(sys.argv[1:]), "machine": machine(py),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    work = Path(tempfile.mkdtemp(prefix="conveyor-bench-pg-sql-"))
    try:
        for name in sections:
            log(f"section {name} ...")
            t = time.perf_counter()
            try:
                if name == "load":
                    rep[name] = bench_load(py, orders, args.rows, args.runs, args.pandas_rows, only, work)
                elif name == "extract":
                    rep[name] = bench_extract(py, orders, args.rows, args.runs, only, work)
                elif name == "sql":
                    rep[name] = bench_sql(py, orders, customers, args.rows, args.runs, only, work)
                else:
                    raise SystemExit(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")
            except Exception as e:
                rep[name] = {"error": f"{type(e).__name__}: {e}"[-3000:], "traceback": traceback.format_exc()[-3000:]}
                log(f"section {name} FAILED: {rep[name]['error'][-1500:]}")
            rep.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rep["total_seconds"] = round(time.perf_counter() - started, 1)
    text = tables(rep)
    (BENCH / "results").mkdir(exist_ok=True)
    path = BENCH / "results" / f"pg_sql_{args.rows}.json"
    path.write_text(json.dumps(rep, indent=2) + "\n")
    path.with_suffix(".md").write_text(text + "\n")
    m = rep["machine"]
    print(f"\n{rep['command']}  ({rep['date']}, {rep['total_seconds']:.0f} s; {m['cores']} × {m['cpu']}, "
          f"{m['ram_gb']} GB; PostgreSQL {m['postgres'].get('server_version')}; {m['conveyor']} at {m['commit']})\n")
    print(text)
    print(f"\nwrote {path.relative_to(ROOT)} and {path.with_suffix('.md').relative_to(ROOT)}")


if __name__ == "__main__":
    main()
