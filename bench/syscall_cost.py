"""Host cost per system call of ``osi_linux,syscalls,syscalls_logger``: this tree against another checkout.

For each tree, ``python -m qppsuite run -q`` runs the 40,000-call ``dd`` bare and with the full
stack, as a user runs it (a fresh interpreter each time, start-up included).  The extra host CPU time
of the traced run, divided by the calls it logged, is that tree's cost per call.  Trees and runs
alternate, A then B, every round; the figure is the median over rounds.  The machine is shared and
noisy: CPU time (the child's user + system time) moves less than wall time, and both are printed.

Usage: ``python bench/syscall_cost.py --base DIR [--rounds N]``, where DIR is another checkout of
qppsuite (``git worktree add /tmp/base COMMIT``); both use the image cache of this user.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DD = "dd if=/dev/zero of=/dev/null bs=1 count=20000"
STACK = "osi_linux,syscalls,syscalls_logger"


def timed(tree: Path, db: Path | None, cmd: str | None = DD) -> tuple[float, float]:
    """(wall s, CPU s) of one ``qppsuite run`` of ``cmd`` (None: the default workload) from ``tree``, as a
    user runs it (a fresh interpreter); traced by the full stack when ``db`` is given."""
    return timed_run(tree, ["--plugins", STACK, "-p", f"syscalls_logger:db={db}"] if db is not None else [], cmd)


def timed_run(tree: Path, options: list[str], cmd: str | None = DD) -> tuple[float, float]:
    """(wall s, CPU s) of one ``python -m qppsuite run -q [--cmd CMD] OPTIONS`` from ``tree`` (a fresh
    interpreter, as a user runs it; CPU: the child's user + system time)."""
    args = [sys.executable, "-m", "qppsuite", "run", "-q", *(["--cmd", cmd] if cmd is not None else []), *options]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(args, cwd=tree, check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def per_call(tree: Path, work: Path) -> tuple[float, float, int]:
    """(wall µs, CPU µs, calls logged) added per call by the stack in one bare/traced pair."""
    db = work / f"{tree.name}-{time.monotonic_ns()}.db"
    bare_wall, bare_cpu = timed(tree, None)
    wall, cpu = timed(tree, db)
    calls = sqlite3.connect(db).execute("SELECT COUNT(*) FROM syscalls").fetchone()[0]
    return 1e6 * (wall - bare_wall) / calls, 1e6 * (cpu - bare_cpu) / calls, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (A)")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    trees = {"A (base)": options.base.resolve(), "B (this tree)": Path(__file__).resolve().parent.parent}
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; {DD}")
    results: dict[str, list[tuple[float, float, int]]] = {label: [] for label in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(options.rounds):
            for label, tree in trees.items():
                got = per_call(tree, Path(tmp))
                results[label].append(got)
                print(
                    f"round {round_no + 1} {label}: {got[1]:.1f} µs CPU, {got[0]:.1f} µs wall per call ({got[2]} calls)"
                )
    medians = {
        label: (statistics.median(r[1] for r in rs), statistics.median(r[0] for r in rs))
        for label, rs in results.items()
    }
    for label, (cpu, wall) in medians.items():
        print(f"{label}: median {cpu:.1f} µs CPU, {wall:.1f} µs wall per call")
    a, b = medians["A (base)"], medians["B (this tree)"]
    print(f"B / A per call: {b[0] / a[0]:.2f}x CPU, {b[1] / a[1]:.2f}x wall (medians of each tree)")
    pairs = [rb[1] / ra[1] for ra, rb in zip(results["A (base)"], results["B (this tree)"], strict=True)]
    print(f"B / A per call: {statistics.median(pairs):.2f}x CPU (median of the {len(pairs)} rounds' ratios)")


if __name__ == "__main__":
    main()
