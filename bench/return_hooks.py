"""Host cost of system calls made from many addresses against the same calls made from one.

A hand-assembled guest program (tools/arm_svc_program.py) makes N getpid calls, either from one
SVC instruction (1 site, N rounds) or from N distinct ones (N sites, 1 round).  Each is run as a
user runs it, ``python -m qppsuite run -q --plugins osi_linux,syscalls,syscalls_logger``, a fresh
interpreter each time; the two alternate, and the ratio of the medians of their wall and CPU times
is printed.  Before issue 9 the syscalls plugin kept one engine hook per return address for the
whole run, so the many-address run cost grew with the number of addresses.

Usage: ``python bench/return_hooks.py [--calls N] [--rounds R] [--tree DIR]`` (DIR: another checkout
to measure instead of this one, e.g. a ``git worktree`` of an older commit).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from arm_svc_program import program, uudecode_command

STACK = "osi_linux,syscalls,syscalls_logger"
CLI_WITH_CMD_FILE = (
    "import runpy, sys; from pathlib import Path; "
    "sys.argv = ['qppsuite', *sys.argv[2:], '--cmd', Path(sys.argv[1]).read_text()]; "
    "runpy.run_module('qppsuite', run_name='__main__')"
)
"""``python -m qppsuite ARGS --cmd "$(cat FILE)"`` without passing the command through execve, whose
limit of 128 KiB per argument (MAX_ARG_STRLEN) a program with more than about 12,000 addresses exceeds."""


def timed(tree: Path, cmd: str, db: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one traced ``qppsuite run`` of ``cmd`` from ``tree``."""
    cmd_file = db.with_suffix(".cmd")
    cmd_file.write_text(cmd)
    args = [sys.executable, "-c", CLI_WITH_CMD_FILE, str(cmd_file), "run", "-q", "--plugins", STACK]
    args += ["-p", f"syscalls_logger:db={db}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(args, cwd=tree, check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="getpid calls per run (at most 65535)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    options = parser.parse_args()
    n = options.calls
    programs = {
        "one address": uudecode_command(program(1, n), "/tmp/p") + "/tmp/p",
        f"{n} addresses": uudecode_command(program(n, 1), "/tmp/p") + "/tmp/p",
    }
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; {n} getpid calls")
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in programs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(options.rounds):
            for label, cmd in programs.items():
                got = timed(options.tree.resolve(), cmd, Path(tmp) / f"{round_no}-{len(times[label])}.db")
                times[label].append(got)
                print(f"round {round_no + 1} {label}: {got[0]:.2f} s wall, {got[1]:.2f} s CPU")
    (one, many) = (
        (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)) for ts in times.values()
    )
    print(f"median: one address {one[0]:.2f} s wall / {one[1]:.2f} s CPU, {n} addresses {many[0]:.2f} / {many[1]:.2f}")
    print(f"many / one: {many[0] / one[0]:.2f}x wall, {many[1] / one[1]:.2f}x CPU")


if __name__ == "__main__":
    main()
