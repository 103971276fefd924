#!/usr/bin/env python3
"""Deterministic orders and customers CSVs for bench/pg_sql.py (issue 13).

Runs in the benchmark's venv (numpy and polars; bench/pg_sql.py creates it):

    bench/.venv-pg/bin/python bench/gen_orders.py orders --rows 10000000 --out orders.csv
    bench/.venv-pg/bin/python bench/gen_orders.py customers --rows 100000 --out customers.csv

orders: id,code,customer_id,amount,name,ts
  id           0 .. rows-1
  code         seven digits, zero-padded ("0012345"): must stay text
  customer_id  uniform in 0 .. customers-1 (--customers, default 100,000)
  amount       a decimal with two places, -100.00 .. 999,999.99 (numeric(12,2))
  name         two words, some with Unicode, some quoted (a comma, or a "nickname")
  ts           a timestamp in 2026 to the second, ISO 8601 ("2026-03-04T05:06:07")
customers: customer_id,name,region,segment (region: eight cities, segment: A..D)

The same arguments and seed give the same bytes (numpy's PCG64 stream).
"""
import argparse

import numpy as np
import polars as pl

FIRST = ["Anna", "Björn", "Chloé", "Dmitri", "Eva", "François", "Grzegorz", "Hana", "Ines", "José",
         "Kenji", "Łucja", "Mateo", "Nour", "Olga", "Priya", "Quentin", "Renée", "Søren", "Zoë"]
LAST = ["Smith", "Müller", "García", "Nowak", "Øvergaard", "Dubois", "Rossi", "Yılmaz", "Silva",
        "Kowalski", "O'Brien", "Smith, Jr.", "Nguyễn", "Andersson", "\"Ace\" Ito", "Papadopoulos"]
REGIONS = ["Zürich", "São Paulo", "Kraków", "Chennai", "Oslo", "Nairobi", "Québec", "München"]
SEGMENTS = ["A", "B", "C", "D"]
CHUNK = 1_000_000
START = 1767225600  # 2026-01-01T00:00:00Z


def orders(rows, customers, out, seed):
    rng = np.random.default_rng(seed)
    first, last = pl.Series(FIRST), pl.Series(LAST)
    with open(out, "wb") as f:
        for lo in range(0, rows, CHUNK):
            n = min(CHUNK, rows - lo)
            cents = rng.integers(-10_000, 100_000_000, n)
            df = pl.DataFrame({
                "id": np.arange(lo, lo + n, dtype=np.int64),
                "code": rng.integers(0, 10_000_000, n),
                "customer_id": rng.integers(0, customers, n),
                "cents": cents,
                "first": first.gather(rng.integers(0, len(FIRST), n)),
                "last": last.gather(rng.integers(0, len(LAST), n)),
                "secs": rng.integers(0, 365 * 86_400, n) + START,
            })
            df = df.select(
                "id",
                pl.col("code").cast(pl.String).str.zfill(7).alias("code"),
                "customer_id",
                pl.format("{}{}.{}", pl.when(pl.col("cents") < 0).then(pl.lit("-")).otherwise(pl.lit("")),
                          pl.col("cents").abs() // 100,
                          (pl.col("cents").abs() % 100).cast(pl.String).str.zfill(2)).alias("amount"),
                pl.format("{} {}", "first", "last").alias("name"),
                pl.from_epoch("secs", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S").alias("ts"),
            )
            df.write_csv(f, include_header=lo == 0)


def customers(rows, out, seed):
    rng = np.random.default_rng(seed + 1)
    df = pl.DataFrame({
        "customer_id": np.arange(rows, dtype=np.int64),
        "first": pl.Series(FIRST).gather(rng.integers(0, len(FIRST), rows)),
        "last": pl.Series(LAST).gather(rng.integers(0, len(LAST), rows)),
        "region": pl.Series(REGIONS).gather(rng.integers(0, len(REGIONS), rows)),
        "segment": pl.Series(SEGMENTS).gather(rng.integers(0, len(SEGMENTS), rows)),
    })
    df.select("customer_id", pl.format("{} {}", "first", "last").alias("name"), "region", "segment").write_csv(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["orders", "customers"])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261130)
    args = ap.parse_args()
    if args.what == "orders":
        orders(args.rows, args.customers, args.out, args.seed)
    else:
        customers(args.rows, args.out, args.seed)


if __name__ == "__main__":
    main()
