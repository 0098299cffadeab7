"""`qppsuite batch` throughput: N short jobs with 1 worker and with 2, and Ray's cost against the thread pool.

Whole processes, as a user runs them: ``python -m qppsuite batch JOBS -o FRESH_DIR`` (every job runs: a fresh
output directory each time).  Each job is ``--cmd true`` from the ready snapshot with the default plugins
(``osi_linux,syscalls,syscalls_logger``, so each writes its database), each with its own label.

1. Speed-up: ``--pool --workers 1`` and ``--pool --workers 2`` on N jobs, alternating (which goes first
   alternates too), ``--pairs`` times; the median of the pairs' ratios (issue 15's target: at least 1.8).
2. Ray against the pool: ``--workers 2`` on a local Ray instance and ``--pool --workers 2``, on N and on 2N
   jobs, alternating; Ray's extra wall time at N and at 2N gives its fixed cost (start-up, shutdown) and its
   cost per job (the slope between the two sizes), medians of the pairs.

Each batch's CPU seconds (the batch process and the job processes it waited for) are printed too: on a machine
shared with other work the wall-clock speed-up depends on the load, the CPU cost per job does not.

Usage: ``python bench/batch.py [--jobs N] [--pairs P] [--no-ray]`` (``--no-ray``: the speed-up only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def jobs_file(directory: Path, count: int) -> Path:
    path = directory / f"jobs{count}.yaml"
    lines = ["defaults: {cmd: 'true', budget: {timeout: 120}}", "jobs:"]
    lines += [f"  - {{label: job{index}}}" for index in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return path


CPU_SECONDS: list[float] = []
"""The CPU seconds (user + system, the batch and every process it waited for) of each :func:`batch_wall` call."""


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def batch_wall(jobs: Path, *options: str) -> float:
    """Wall seconds of one whole ``qppsuite batch`` into a new output directory; every job must end ok.  Its CPU
    seconds are appended to :data:`CPU_SECONDS` (Ray's own daemons are not its children: not counted)."""
    out = Path(tempfile.mkdtemp(dir=jobs.parent, prefix="out-"))
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "batch", str(jobs), "-o", str(out), *options],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    CPU_SECONDS.append(_children_cpu() - cpu)
    results = [json.loads(p.read_text()) for p in out.glob("jobs/*/result.json")]
    if done.returncode != 0 or not all(r["status"] == "ok" for r in results):
        raise SystemExit(f"batch {' '.join(options)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="measure the speed-up only, not Ray against the pool")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qppsuite-bench-batch-") as scratch:
        small, large = jobs_file(Path(scratch), options.jobs), jobs_file(Path(scratch), 2 * options.jobs)
        batch_wall(small, "--pool", "--workers", "2")  # the ready snapshot made, the page cache warm
        speedups = []
        for pair in range(1, options.pairs + 1):
            runs = [("1", small, "--pool", "--workers", "1"), ("2", small, "--pool", "--workers", "2")]
            walls, cpus = {}, {}
            for name, path, *rest in runs if pair % 2 else runs[::-1]:
                walls[name] = batch_wall(path, *rest)
                cpus[name] = CPU_SECONDS[-1]
            speedups.append(walls["1"] / walls["2"])
            print(
                f"pair {pair}: {options.jobs} jobs, 1 worker {walls['1']:.2f} s ({cpus['1']:.2f} s CPU), "
                f"2 workers {walls['2']:.2f} s ({cpus['2']:.2f} s CPU): {speedups[-1]:.2f}x "
                f"({options.jobs / walls['2']:.2f} jobs/s with 2); load average {os.getloadavg()[0]:.1f}"
            )
        print(f"median speed-up with 2 workers: {statistics.median(speedups):.2f}x")
        if options.no_ray:
            return
        try:
            import ray  # noqa: F401
        except ImportError:
            print("Ray is not installed: no Ray comparison")
            return
        fixed, per_job = [], []
        for pair in range(1, options.pairs + 1):
            extra = {}
            for path, count in ((small, options.jobs), (large, 2 * options.jobs)):
                runs = [("pool", "--pool", "--workers", "2"), ("ray", "--workers", "2")]
                walls = {name: batch_wall(path, *rest) for name, *rest in (runs if pair % 2 else runs[::-1])}
                extra[count] = walls["ray"] - walls["pool"]
                print(f"pair {pair}: {count} jobs, pool {walls['pool']:.2f} s, Ray {walls['ray']:.2f} s")
            slope = (extra[2 * options.jobs] - extra[options.jobs]) / options.jobs
            per_job.append(slope)
            fixed.append(extra[options.jobs] - slope * options.jobs)
        print(
            f"Ray against the pool, medians of {options.pairs} pairs: fixed {statistics.median(fixed):.2f} s per "
            f"batch, {statistics.median(per_job) * 1000:+.0f} ms per job"
        )


if __name__ == "__main__":
    main()
