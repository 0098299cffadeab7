"""What ``net_activity`` costs a run, against the same run with no plugins: whole processes.

Each run is ``python -m qppsuite run -q`` as a user runs it (a fresh interpreter, start-up included),
bare, with ``--plugins osi_linux,syscalls`` (what net_activity stacks on, listened to by nobody: the
floor of any plugin built on them) and with ``--plugins net_activity`` (which loads those two and opens
the run database itself), in turn every round, on two workloads:

* the default workload (process creation, files, /proc, modules, and one busybox nc exchange over
  loopback TCP: about 15 network events);
* ``dd if=/dev/zero of=/dev/null bs=1 count=20000``: about 40,000 reads and writes on files, each
  a call net_activity listens to and must dismiss as no socket I/O, its worst case.

Printed per workload: each round's ratios to the bare run of wall and CPU time (the child's user +
system time, which a busy neighbour moves less), their medians over the rounds, and the events recorded.

Usage: ``python bench/net_activity.py [--rounds N] [--dd-rounds N]``.
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

from syscall_cost import DD, timed_run

TREE = Path(__file__).resolve().parent.parent
FLOOR = "osi_linux,syscalls"
"""What net_activity stacks on, loaded with no listener: the floor any plugin built on them pays."""


def events(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM net_events").fetchone()[0])
    finally:
        conn.close()


def measure(label: str, cmd: str | None, rounds: int, work: Path) -> None:
    walls, cpus, floors = [], [], []
    for round_no in range(rounds):
        db = work / f"{time.monotonic_ns()}.db"
        bare_wall, bare_cpu = timed_run(TREE, [], cmd)
        floor_wall, floor_cpu = timed_run(TREE, ["--plugins", FLOOR], cmd)
        wall, cpu = timed_run(TREE, ["--plugins", "net_activity", "-p", f"net_activity:db={db}"], cmd)
        walls.append(wall / bare_wall)
        cpus.append(cpu / bare_cpu)
        floors.append(floor_cpu / bare_cpu)
        print(
            f"{label}, round {round_no + 1}: bare {bare_wall:.2f} s wall {bare_cpu:.2f} s CPU; {FLOOR} "
            f"{floor_wall:.2f} s wall {floor_cpu:.2f} s CPU; net_activity {wall:.2f} s wall {cpu:.2f} s CPU "
            f"({events(db)} events): {walls[-1]:.2f}x wall, {cpus[-1]:.2f}x CPU ({FLOOR}: {floors[-1]:.2f}x CPU)",
            flush=True,
        )
    print(
        f"{label}: median of {rounds} rounds, net_activity against bare {statistics.median(walls):.2f}x wall, "
        f"{statistics.median(cpus):.2f}x CPU; {FLOOR} alone {statistics.median(floors):.2f}x CPU"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the default workload (default: 5)")
    parser.add_argument("--dd-rounds", type=int, default=3, help="rounds of the dd workload (default: 3; 0: skip it)")
    options = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        measure("default workload", None, options.rounds, Path(tmp))
        if options.dd_rounds:
            measure(DD, DD, options.dd_rounds, Path(tmp))


if __name__ == "__main__":
    main()
