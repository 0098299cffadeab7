"""Compare two run databases row for row: every table, the schema and ``PRAGMA user_version``.

Used to show that a change to the logging stack records exactly what it recorded before: run the same
workload from the two trees (a guest run is deterministic) and compare the two files.  Host wall-clock
columns (``runs.started_at`` and ``runs.ended_at`` by default) are left out, since they cannot match.

Usage: ``python tools/compare_databases.py A.db B.db [--ignore TABLE.COLUMN ...]``.  Prints one line per
difference (at most ``--show`` of each kind) and exits 1 if there is any, 0 if the files are the same.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

HOST_TIME = ("runs.started_at", "runs.ended_at")


def schema(conn: sqlite3.Connection) -> list[tuple[str, str, str, str | None]]:
    """Every table, index, view and trigger: (type, name, table, SQL), sorted by type and name."""
    return sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))


def rows(conn: sqlite3.Connection, table: str, ignore: set[str]) -> tuple[list[str], list[tuple[object, ...]]]:
    """The table's columns (less the ignored ones) and its rows in rowid order."""
    columns = [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")') if f"{table}.{row[1]}" not in ignore]
    select = ", ".join(f'"{c}"' for c in columns)
    return columns, conn.execute(f'SELECT {select} FROM "{table}" ORDER BY rowid').fetchall()


def compare(a: Path, b: Path, ignore: set[str], show: int) -> list[str]:
    """Lines describing each difference between the files (empty: the same)."""
    ca, cb = sqlite3.connect(f"file:{a}?mode=ro", uri=True), sqlite3.connect(f"file:{b}?mode=ro", uri=True)
    out: list[str] = []
    for pragma in ("user_version",):
        va, vb = ca.execute(f"PRAGMA {pragma}").fetchone()[0], cb.execute(f"PRAGMA {pragma}").fetchone()[0]
        if va != vb:
            out.append(f"PRAGMA {pragma}: {va} != {vb}")
    sa, sb = schema(ca), schema(cb)
    if sa != sb:
        out += [f"schema only in A: {s}" for s in sa if s not in sb][:show]
        out += [f"schema only in B: {s}" for s in sb if s not in sa][:show]
    tables = sorted(name for kind, name, _t, _s in sa if kind == "table" and (kind, name, _t, _s) in sb)
    for table in tables:
        cols_a, rows_a = rows(ca, table, ignore)
        cols_b, rows_b = rows(cb, table, ignore)
        if cols_a != cols_b:
            out.append(f"{table}: columns differ: {cols_a} != {cols_b}")
            continue
        if len(rows_a) != len(rows_b):
            out.append(f"{table}: {len(rows_a)} rows != {len(rows_b)} rows")
        differing = [(i, ra, rb) for i, (ra, rb) in enumerate(zip(rows_a, rows_b, strict=False)) if ra != rb]
        for i, ra, rb in differing[:show]:
            changed = [f"{c}: {x!r} != {y!r}" for c, x, y in zip(cols_a, ra, rb, strict=True) if x != y]
            out.append(f"{table} row {i + 1}: " + "; ".join(changed))
        if len(differing) > show:
            out.append(f"{table}: {len(differing) - show} more rows differ")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--ignore", nargs="*", default=list(HOST_TIME), help="TABLE.COLUMN to leave out")
    parser.add_argument("--show", type=int, default=5, help="differences shown of each kind")
    options = parser.parse_args()
    for path in (options.a, options.b):
        if not path.is_file():
            sys.exit(f"error: {path} is not a file")
    differences = compare(options.a, options.b, set(options.ignore), options.show)
    for line in differences:
        print(line)
    verdict = "different" if differences else "identical"
    print(f"{verdict}: {options.a} and {options.b}")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
