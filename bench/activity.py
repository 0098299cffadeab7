"""What proc_events and file_activity cost a run of the default workload: whole processes, median of pairs.

Every run is run as a user runs it (``python -m qppsuite run -q``, a fresh interpreter each time,
start-up included), alternating with its baseline every pair:

* ``osi_linux,syscalls`` (what both plugins require, with no listener) against a bare run;
* ``proc_events`` alone (it loads osi_linux and syscalls, and opens its own run database) against a bare run;
* ``file_activity`` alone (likewise) against a bare run;
* the logger stack ``osi_linux,syscalls,syscalls_logger`` with both plugins, writing into the logger's
  database, against the logger stack alone: what the two plugins add to a logged run.

Printed per configuration: each pair's ratio of wall and CPU time (the child's user + system time,
which a busy neighbour moves less), and the median of the pairs' ratios.

Usage: ``python bench/activity.py [--pairs N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
from pathlib import Path

from syscall_cost import STACK, timed_run

TREE = Path(__file__).resolve().parent.parent


def configurations(work: Path) -> dict[str, tuple[list[str], list[str]]]:
    """Label -> (the baseline's ``qppsuite run`` options, the measured run's); every database goes into ``work``."""
    logged = ["--plugins", STACK, "-p", f"syscalls_logger:db={work / 'logger.db'}"]
    return {
        "osi_linux,syscalls against bare": ([], ["--plugins", "osi_linux,syscalls"]),
        "proc_events against bare": ([], ["--plugins", "proc_events", "-p", f"proc_events:db={work / 'p.db'}"]),
        "file_activity against bare": ([], ["--plugins", "file_activity", "-p", f"file_activity:db={work / 'f.db'}"]),
        "logger stack + proc_events + file_activity against the logger stack": (
            logged,
            ["--plugins", f"{STACK},proc_events,file_activity", "-p", f"syscalls_logger:db={work / 'all.db'}"],
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="bare/with-plugin pairs per configuration (default: 3)")
    options = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=TREE, capture_output=True, text=True)
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"commit {commit.stdout.strip()}; default workload"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for label, (baseline, measured) in configurations(Path(tmp)).items():
            walls, cpus = [], []
            for pair in range(options.pairs):
                base_wall, base_cpu = timed_run(TREE, baseline, None)
                wall, cpu = timed_run(TREE, measured, None)
                walls.append(wall / base_wall)
                cpus.append(cpu / base_cpu)
                print(
                    f"{label}, pair {pair + 1}: baseline {base_wall:.2f} s wall {base_cpu:.2f} s CPU, measured "
                    f"{wall:.2f} s wall {cpu:.2f} s CPU: {walls[-1]:.2f}x wall, {cpus[-1]:.2f}x CPU"
                )
            print(f"{label}: median {statistics.median(walls):.2f}x wall, {statistics.median(cpus):.2f}x CPU")


if __name__ == "__main__":
    main()
