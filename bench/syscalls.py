"""What the full syscall-tracing stack costs a run, against the same run with no plugins: whole processes.

Two workloads, each run as a user runs it (``python -m qppsuite run -q``, a
fresh interpreter each time, start-up included), bare and then with
``osi_linux,syscalls,syscalls_logger``, alternating every round:

* the default workload (process creation, files, /proc, a socket, modules);
* ``dd if=/dev/zero of=/dev/null bs=1 count=20000``: about 40,000 system calls
  in a few seconds of guest time, the worst case for per-call overhead.

Printed per workload: each round's traced/bare ratio of wall and CPU time (the
child's user + system time, which a busy neighbour moves less), the median of
the rounds' ratios, and the host CPU the stack adds per system call logged.
Targets (issue 10): at most 1.2x on dd, and at most 30 µs of host CPU per call.

Usage: ``python bench/syscalls.py [--rounds N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from syscall_cost import DD, timed

TREE = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.2
TARGET_US_PER_CALL = 30.0
WORKLOADS = {"default workload": None, "dd bs=1 count=20000": DD}


def logged(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM syscalls").fetchone()[0])
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="bare/traced pairs per workload (default: 3)")
    options = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for label, cmd in WORKLOADS.items():
            walls, cpus, per_call = [], [], []
            for round_no in range(options.rounds):
                db = Path(tmp) / f"{time.monotonic_ns()}.db"
                bare_wall, bare_cpu = timed(TREE, None, cmd)
                wall, cpu = timed(TREE, db, cmd)
                calls = logged(db)
                walls.append(wall / bare_wall)
                cpus.append(cpu / bare_cpu)
                per_call.append(1e6 * (cpu - bare_cpu) / calls)
                print(
                    f"{label}, round {round_no + 1}: bare {bare_wall:.2f} s wall {bare_cpu:.2f} s CPU, traced "
                    f"{wall:.2f} s wall {cpu:.2f} s CPU ({calls} calls): {walls[-1]:.2f}x wall, {cpus[-1]:.2f}x CPU, "
                    f"{per_call[-1]:.0f} µs CPU per call"
                )
            print(
                f"{label}: median {statistics.median(walls):.2f}x wall, {statistics.median(cpus):.2f}x CPU, "
                f"{statistics.median(per_call):.0f} µs of host CPU per call "
                f"(targets: {TARGET_RATIO}x on dd, {TARGET_US_PER_CALL:.0f} µs per call)"
            )


if __name__ == "__main__":
    main()
