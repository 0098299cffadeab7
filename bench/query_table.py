"""How long ``qppsuite syscalls DB`` takes to show 40,000 calls: whole processes, as a user runs them.

The database is a real run's: the default image runs a shell loop (``echo $i > /tmp/f; read x < /tmp/f``,
about 23 calls an iteration) with osi_linux, syscalls, syscalls_logger (``only=command``) and file_activity,
so that the view also rebuilds each fd's path.  Each view is ``python -m qppsuite syscalls DB --limit 40000``
in a fresh interpreter (start-up included), its output to a file; printed: every time and the median.

Usage: ``python bench/query_table.py [--db FILE] [--repeat N]``; without ``--db`` the run is made first
(about a minute and a half), in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TREE = Path(__file__).resolve().parent.parent
ROWS = 40_000
LOOP = "i=0; while [ $i -lt 2000 ]; do echo $i > /tmp/f; read x < /tmp/f; i=$((i+1)); done"
VIEWS = {"table": [], "csv": ["--format", "csv"], "json": ["--format", "json"]}


def make_run(db: Path) -> None:
    """The run whose database the views read."""
    subprocess.run(
        [sys.executable, "-m", "qppsuite", "run", "-q", "--cmd", LOOP, "--plugins",
         "osi_linux,syscalls,syscalls_logger,file_activity", "-p", f"syscalls_logger:db={db}",
         "-p", "syscalls_logger:only=command"],
        cwd=TREE, check=True,
    )  # fmt: skip


def timed_view(db: Path, options: list[str], out: Path) -> float:
    """Wall seconds of one ``qppsuite syscalls`` process showing ROWS calls."""
    with out.open("w") as sink:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "qppsuite", "syscalls", str(db), "--limit", str(ROWS), *options],
            cwd=TREE, stdout=sink, check=True,
        )  # fmt: skip
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a run database with at least 40,000 calls (default: make one)")
    parser.add_argument("--repeat", type=int, default=5, help="processes per view (default: 5)")
    options = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=TREE, capture_output=True, text=True)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"commit {commit.stdout.strip()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        db = options.db or Path(tmp) / "loop.db"
        if options.db is None:
            make_run(db)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            (calls,) = conn.execute("SELECT COUNT(*) FROM syscalls").fetchone()
        if calls < ROWS:
            raise SystemExit(f"{db} holds {calls} calls, fewer than {ROWS}")
        print(f"{db}: {calls} calls; showing {ROWS}")
        for label, view in VIEWS.items():
            times = [timed_view(db, view, Path(tmp) / f"out.{label}") for _ in range(options.repeat)]
            lines = sum(1 for _ in (Path(tmp) / f"out.{label}").open())
            each = ", ".join(f"{t:.2f}" for t in times)
            print(f"{label:>5}: median {statistics.median(times):.2f} s ({each}), {lines} lines")


if __name__ == "__main__":
    main()
