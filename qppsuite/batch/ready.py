"""Ready snapshots made before a batch's jobs run, for the machines that several jobs share.

A run starts from its machine's ready snapshot (the booted guest waiting for work; image, RAM and boot arguments
make the machine), and boots to make it when it is missing.  Jobs that share a machine would each boot at once
to make the same snapshot, so the batch boots such a machine once beforehand (``qppsuite run IMAGE --cmd true``).
A machine only one job uses is left to that job: booting it beforehand would not save a boot.  The boots run
``parallel`` at a time, each its own process (in a session of its own, killed with the thread that started it);
Ctrl-C stops them.  A machine that fails to boot is left to its jobs to report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

from qppsuite.batch.execute import TERM_GRACE_S, die_with_parent, signals_ignored
from qppsuite.batch.jobs import Job
from qppsuite.session import DEFAULT_IMAGE

#: The command a machine's arguments are given to.
RUN = [sys.executable, "-m", "qppsuite", "run"]
#: A machine: (image, RAM in MiB, extra boot arguments).
Machine = tuple[str, int, str]
_POLL_S = 0.1


def machine_of(job: Job, cache: Path | None) -> Machine | None:
    """The machine ``job`` runs on, or None if its ready snapshot is in the cache already (or its image does not
    open: the job says what is wrong with it)."""
    from qppsuite.cli.run_cmd import image_ram_mib
    from qppsuite.errors import ImageError
    from qppsuite.session import RunOptions, ready_snapshot_file

    spec = job.spec
    image = str(spec.get("image", DEFAULT_IMAGE))
    ram = int(spec.get("ram") or image_ram_mib(image, cache))
    bootargs = str(spec.get("bootargs", ""))
    try:
        if ready_snapshot_file(RunOptions(image=image, cache=cache, ram_mib=ram, extra_bootargs=bootargs)).is_file():
            return None
    except ImageError:
        return None
    return image, ram, bootargs


def machines_to_prepare(jobs: list[Job], cache: Path | None) -> list[list[str]]:
    """``qppsuite run`` arguments, one per machine that two or more of ``jobs`` use and whose ready snapshot is
    missing, in the order of their first job; each boots, saves the snapshot and powers off (``--timeout``: the
    longest of its jobs' wall-clock budgets)."""
    shared: dict[Machine, list[Job]] = {}
    for job in jobs:
        machine = machine_of(job, cache)
        if machine is not None:
            shared.setdefault(machine, []).append(job)
    machines = []
    for (image, ram, bootargs), users in shared.items():
        if len(users) < 2:
            continue
        timeout = max(job.timeout_s for job in users)
        arguments = [image, "-q", "--cmd", "true", "--timeout", f"{timeout:g}", "--ram", str(ram)]
        if bootargs:
            arguments += ["--bootargs", bootargs]
        machines.append(arguments)
    return machines


def prepare(machines: list[list[str]], parallel: int, cache: Path | None) -> None:
    """Run :data:`RUN` with each of ``machines``' arguments, ``parallel`` at a time, until all have ended
    (their exit status is not looked at).  A KeyboardInterrupt (Ctrl-C) stops the running ones (SIGTERM to
    their process groups, SIGKILL :data:`TERM_GRACE_S` later) and propagates."""
    env = dict(os.environ) | ({"QPPSUITE_CACHE": str(cache)} if cache is not None else {})
    waiting = list(reversed(machines))
    running: list[subprocess.Popen[bytes]] = []
    try:
        while waiting or running:
            while waiting and len(running) < max(1, parallel):
                process = subprocess.Popen(
                    [*RUN, *waiting.pop()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, env=env, start_new_session=True, preexec_fn=die_with_parent,
                )
                running.append(process)
            time.sleep(_POLL_S)
            running = [process for process in running if process.poll() is None]
    except BaseException:
        _stop_all(running)
        raise


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, then SIGKILL those still there :data:`TERM_GRACE_S` later; all reaped."""
    with signals_ignored():  # a second Ctrl-C waits
        for process in processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
