"""What the full syscall-tracing stack costs a guest run, against the same run with no plugins.

Two workloads, each booted bare and then with osi_linux,syscalls,syscalls_logger
back to back in this one process, so both sides see the same machine load:

* the default workload (process creation, files, /proc, a socket, modules);
* ``dd if=/dev/zero of=/dev/null bs=1 count=20000``: about 40,000 system calls
  in a few seconds of guest time, the worst case for per-call overhead.

It prints the slowdown ratio (time with the stack / bare) and the syscalls
logged per wall second of the traced run.  Target: at most 1.5x on the dd run.
The machine is shared, so bare and traced boots alternate ``--repeat`` times and
the best of each is kept, for wall time and for this process's CPU time (which
a busy neighbour inflates less).  ``--profile FILE`` also writes cProfile stats
of a traced dd run.

Usage: ``python bench/syscalls.py [--repeat N] [--profile FILE]``.
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from qppsuite.core.image import open_image
from qppsuite.session import DEFAULT_IMAGE, RunOptions, RunResult, run

STACK = ["osi_linux", "syscalls", "syscalls_logger"]
DD = "dd if=/dev/zero of=/dev/null bs=1 count=20000"
TARGET = 1.5


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float
    insns: int


@dataclass(frozen=True)
class Pair:
    label: str
    bare: Timing
    traced: Timing
    logged: int

    @property
    def ratio(self) -> float:
        return self.traced.wall / self.bare.wall

    @property
    def cpu_ratio(self) -> float:
        return self.traced.cpu / self.bare.cpu


def _boot(cmd: str | None, plugins: list[str], db: Path | None) -> RunResult:
    args = {"syscalls_logger": {"db": str(db)}} if db is not None else {}
    result = run(RunOptions(cmd=cmd, plugins=plugins, plugin_args=args), None, image=open_image(DEFAULT_IMAGE))
    if not result.ok:
        sys.exit(f"run failed: {result.reason}")
    return result


def _timed(cmd: str | None, plugins: list[str], db: Path | None) -> Timing:
    cpu = time.process_time()
    result = _boot(cmd, plugins, db)
    return Timing(result.wall_seconds, time.process_time() - cpu, result.insn_count)


def _best(timings: list[Timing]) -> Timing:
    return Timing(min(t.wall for t in timings), min(t.cpu for t in timings), timings[0].insns)


def _logged(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM syscalls").fetchone()[0])
    finally:
        conn.close()


def measure(label: str, cmd: str | None, work: Path, repeat: int) -> Pair:
    bare: list[Timing] = []
    traced: list[Timing] = []
    logged = 0
    for i in range(repeat):
        db = work / f"{label}-{i}.db"
        bare.append(_timed(cmd, [], None))
        traced.append(_timed(cmd, STACK, db))
        logged = _logged(db)
    return Pair(label, _best(bare), _best(traced), logged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="bare/traced boots per workload (best is kept)")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of a traced dd run here")
    options = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, image {DEFAULT_IMAGE}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = [
            measure("default workload", None, work, options.repeat),
            measure("dd bs=1 count=20000", DD, work, options.repeat),
        ]
        print(f"best of {options.repeat} alternating boots each")
        print(
            f"{'run':<22} {'bare s':>7} {'traced s':>8} {'ratio':>6} {'bare cpu':>8} {'traced cpu':>10} "
            f"{'cpu ratio':>9} {'syscalls':>8} {'logged/s':>8}"
        )
        for p in pairs:
            print(
                f"{p.label:<22} {p.bare.wall:7.2f} {p.traced.wall:8.2f} {p.ratio:5.2f}x {p.bare.cpu:8.2f} "
                f"{p.traced.cpu:10.2f} {p.cpu_ratio:8.2f}x {p.logged:8d} {p.logged / p.traced.wall:8.0f}"
            )
        heavy = pairs[1]
        verdict = "meets" if heavy.ratio <= TARGET else "misses"
        print(
            f"syscall-heavy run: {heavy.ratio:.2f}x wall ({heavy.cpu_ratio:.2f}x cpu), {verdict} the {TARGET}x target"
        )
        if options.profile is not None:
            profiler = cProfile.Profile()
            profiler.runcall(_boot, DD, STACK, work / "profile.db")
            profiler.dump_stats(options.profile)
            print(f"profile of a traced dd run: {options.profile}")


if __name__ == "__main__":
    main()
