"""How long ``qppsuite report`` takes on a 40,000-call run, as a user runs it (target: under 5 s).

The run: ``dd if=/dev/zero of=/dev/null bs=1 count=20000`` (20,000 reads and 20,000 writes) under the
logger stack with proc_events, file_activity and net_activity, made once with ``python -m qppsuite run -q`` into a
temporary directory.  Then ``python -m qppsuite report DB -o OUT`` runs ``--repeat`` times, each a fresh
interpreter (start-up, imports, the SQLite reads, the figures and writing the page included); printed:
the calls and processes in the database, each time, the median, and the page's size; then the median of
``qppsuite stats DB --plot PNG`` the same way.

Usage: ``python bench/report.py [--repeat N]``.
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
COMMAND = "dd if=/dev/zero of=/dev/null bs=1 count=20000"
PLUGINS = "osi_linux,syscalls,syscalls_logger,proc_events,file_activity,net_activity"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="report runs to time (default: 5)")
    options = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=TREE, capture_output=True, text=True)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"commit {commit.stdout.strip()}; {COMMAND!r} under {PLUGINS}"
    )
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    with tempfile.TemporaryDirectory() as tmp:
        db, out = Path(tmp) / "dd.db", Path(tmp) / "dd.html"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "qppsuite",
                "run",
                "-q",
                "--cmd",
                COMMAND,
                "--plugins",
                PLUGINS,
                "-p",
                f"syscalls_logger:db={db}",
            ],
            check=True,
            env=env,
        )
        with sqlite3.connect(db) as conn:
            calls = conn.execute("SELECT COUNT(*) FROM syscalls").fetchone()[0]
            processes = conn.execute("SELECT COUNT(*) FROM processes").fetchone()[0]
        print(f"database: {calls} calls, {processes} processes")
        stats_times = []
        for _ in range(options.repeat):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "qppsuite", "stats", str(db), "--plot", str(Path(tmp) / "dd.png")],
                check=True,
                env=env,
                capture_output=True,
            )
            stats_times.append(time.perf_counter() - start)
        shown = ", ".join(f"{t:.2f}" for t in stats_times)
        print(f"stats --plot: {shown} s; median {statistics.median(stats_times):.2f} s over {len(stats_times)}")
        times = []
        for _ in range(options.repeat):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "qppsuite", "report", str(db), "-o", str(out)],
                check=True,
                env=env,
                capture_output=True,
            )
            times.append(time.perf_counter() - start)
            print(f"  report: {times[-1]:.2f} s")
        print(f"median {statistics.median(times):.2f} s over {len(times)}; page {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
