"""Host cost of system calls made from many addresses against the same calls made from one.

A hand-assembled guest program (tools/arm_svc_program.py) makes getpid calls from one SVC
instruction or from N distinct ones.  Four programs: N calls from one address (``1 x N``), 2N
from one (``1 x 2N``), one call from each of N addresses (``N x 1``) and two from each (``N x 2``).
Each is run as a user runs it, ``python -m qppsuite run -q --plugins
osi_linux,syscalls,syscalls_logger``, a fresh interpreter each time; the four alternate, and
medians of wall and CPU time are printed, with

- the headline ratio ``N x 1`` / ``1 x N`` (new code, a bigger program file, one return hook
  made and dropped per call, against one address);
- the host CPU of one more call at steady state, from one address (``1 x 2N`` - ``1 x N``, over
  N) and from N addresses already run once (``N x 2`` - ``N x 1``, over N): the guest work and
  code are the same in both differences except for the addresses, so a bounded design gives a
  figure that does not grow with N.

Before issue 9 the syscalls plugin kept one engine hook per return address for the whole run,
so the many-address cost per call grew with the number of addresses.

Usage: ``python bench/return_hooks.py [--calls N] [--rounds R] [--tree DIR]`` (N at most 32767;
DIR: another checkout to measure instead of this one, e.g. a ``git worktree`` of an older commit).
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
    parser.add_argument("--calls", type=int, default=10_000, help="N, the addresses and calls (at most 32767)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    options = parser.parse_args()
    n = options.calls
    shapes = {"1 x N": (1, n), "1 x 2N": (1, 2 * n), "N x 1": (n, 1), "N x 2": (n, 2)}
    programs = {label: uudecode_command(program(*shape), "/tmp/p") + "/tmp/p" for label, shape in shapes.items()}
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; N = {n}")
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in programs}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(options.rounds):
            for label, cmd in programs.items():
                got = timed(options.tree.resolve(), cmd, Path(tmp) / f"{round_no}-{len(times[label])}.db")
                times[label].append(got)
                print(f"round {round_no + 1} {label}: {got[0]:.2f} s wall, {got[1]:.2f} s CPU")
    wall = {label: statistics.median(t[0] for t in ts) for label, ts in times.items()}
    cpu = {label: statistics.median(t[1] for t in ts) for label, ts in times.items()}
    for label in programs:
        print(f"median {label}: {wall[label]:.2f} s wall, {cpu[label]:.2f} s CPU")
    print(f"N x 1 / 1 x N: {wall['N x 1'] / wall['1 x N']:.2f}x wall, {cpu['N x 1'] / cpu['1 x N']:.2f}x CPU")
    one = (cpu["1 x 2N"] - cpu["1 x N"]) / n * 1e6
    many = (cpu["N x 2"] - cpu["N x 1"]) / n * 1e6
    print(f"CPU per further call: {one:.0f} us from one address, {many:.0f} us from {n} addresses ({many / one:.2f}x)")

if __name__ == "__main__":
    main()
