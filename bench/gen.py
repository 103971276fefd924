#!/usr/bin/env python3
"""Deterministic CSV generator for Conveyor's benchmarks.

Ten columns of mixed types, with the things that break naive tools: quoted
fields holding commas, quotes and newlines, Unicode, zero-padded codes that
must stay text, booleans, dates and decimals. The same --rows and --seed give
the same bytes on every machine.

    python3 bench/gen.py --rows 1000000 --out bench/data/rows_1m.csv
"""
import argparse
import random

CITIES = ["Zürich", "São Paulo", "Kraków", "Chennai", "Oslo", "Nairobi", "Québec", "München", "Åre", "Lagos"]
WORDS = ["alpha", "béta", "gamma", "δelta", "epsilon", "zeta", "ēta", "theta", "iota", "kappa", "naïve", "☃snow"]
CATEGORIES = ["A", "B", "C", "D", "E"]


def quote(field: str) -> str:
    if any(c in field for c in ',"\n'):
        return '"' + field.replace('"', '""') + '"'
    return field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    with open(args.out, "w", encoding="utf-8", newline="") as f:
        f.write("id,code,name,city,amount,qty,active,day,category,note\n")
        buf = []
        for i in range(args.rows):
            name = f"{rnd.choice(WORDS)} {rnd.choice(WORDS)}"
            city = rnd.choice(CITIES)
            if i % 7 == 0:
                city += ", district " + str(rnd.randint(1, 20))
            note_kind = i % 11
            if note_kind == 0:
                note = f'said "{rnd.choice(WORDS)}", then left'
            elif note_kind == 1:
                note = f"line one\nline two {i}"
            else:
                note = f"note {rnd.randint(0, 10**6)}"
            row = [
                str(i),
                f"{rnd.randint(0, 9999999):07d}",
                quote(name),
                quote(city),
                f"{rnd.randint(0, 10**7) / 100:.2f}",
                str(rnd.randint(-50, 5000)),
                "true" if rnd.random() < 0.5 else "false",
                f"2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                rnd.choice(CATEGORIES),
                quote(note),
            ]
            buf.append(",".join(row))
            if len(buf) == 10000:
                f.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf) + "\n")


if __name__ == "__main__":
    main()
