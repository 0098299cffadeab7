"""What the coverage plugin costs, as a user runs it: ``python -m qppsuite run -q ...`` with and without it.

Each workload runs in pairs, bare (``--plugins osi_linux``, which coverage requires) then with coverage
(``--plugins osi_linux,coverage``), alternating, so a busy neighbour on a shared machine weighs on both
halves of a pair alike; the ratio printed is the median of the pairs' ratios, of wall time and of the
child process's CPU time.  The workloads:

* ``default, nothing chosen``: the default workload with ``process=`` a name no process has: what the
  task-change and address-space tracking costs alone;
* ``default, sh chosen``: the same workload covering every ``sh`` (its shells and their fork children);
* ``python3 -c``: two short python3 scripts in the oracle image, covering ``python3``: a ``print``, and an
  ``import json``, which compiles json's sources in the guest (the image holds no ``.pyc``).

Every run writes its drcov files and database into a temporary directory.  Usage:
``python bench/coverage.py [--pairs N]`` (the images must be built: ``qppsuite image build`` and
``qppsuite image build debian-armhf+strace+perl-base+python3+pigz --packages strace,perl-base,python3,pigz``).
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
from dataclasses import dataclass
from pathlib import Path

ORACLE = "debian-armhf+strace+perl-base+python3+pigz"
PYTHON_CMD = "python3 -c 'print(sum(range(1000)))'"
#: json is compiled from source in the guest (the image has no .pyc: no maintainer script ran py3compile).
PYTHON_JSON_CMD = "python3 -c 'import json; print(json.dumps({\"sum\": sum(range(1000))}))'"


@dataclass(frozen=True)
class Workload:
    name: str
    image: str
    cmd: str | None
    process: str


WORKLOADS = (
    Workload("default, nothing chosen", "debian-armhf", None, "no-such-program"),
    Workload("default, sh chosen", "debian-armhf", None, "sh"),
    Workload("python3 -c print, python3 chosen", ORACLE, PYTHON_CMD, "python3"),
    Workload("python3 -c import json, python3 chosen", ORACLE, PYTHON_JSON_CMD, "python3"),
)


def timed_run(workload: Workload, covered: bool, scratch: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``qppsuite run -q`` of ``workload``; raises if the run fails."""
    args = [sys.executable, "-m", "qppsuite", "run", "-q", workload.image]
    if workload.cmd is not None:
        args += ["--cmd", workload.cmd]
    if covered:
        out = Path(tempfile.mkdtemp(dir=scratch))
        args += ["--plugins", "osi_linux,coverage", "-p", f"coverage:process={workload.process}"]
        args += ["-p", f"coverage:out={out}", "-p", f"coverage:db={out / 'run.db'}"]
    else:
        args += ["--plugins", "osi_linux"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, cwd=scratch)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3, help="bare/covered pairs per workload (default 3)")
    options = parser.parse_args()
    print(
        f"# {time.strftime('%a %b %d %H:%M:%S UTC %Y', time.gmtime())}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    )
    print("| Workload | bare wall s | covered wall s | wall ratio | bare CPU s | covered CPU s | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for workload in WORKLOADS:
            bare: list[tuple[float, float]] = []
            covered: list[tuple[float, float]] = []
            for _ in range(options.pairs):
                bare.append(timed_run(workload, False, scratch))
                covered.append(timed_run(workload, True, scratch))
            wall_ratio = statistics.median(c[0] / b[0] for b, c in zip(bare, covered, strict=True))
            cpu_ratio = statistics.median(c[1] / b[1] for b, c in zip(bare, covered, strict=True))
            print(
                f"| {workload.name} | {statistics.median(b[0] for b in bare):.2f} | "
                f"{statistics.median(c[0] for c in covered):.2f} | **{wall_ratio:.2f}x** | "
                f"{statistics.median(b[1] for b in bare):.2f} | {statistics.median(c[1] for c in covered):.2f} | "
                f"**{cpu_ratio:.2f}x** |",
                flush=True,
            )


if __name__ == "__main__":
    main()
