"""One job, run as its own ``python -m qppsuite run`` process, and what its end means.

The process is the job's isolation: a kernel panic, a hang, a blown budget or a crash of qppsuite itself ends
that process only.  It runs in a session of its own (a Ctrl-C at the terminal reaches the batch, which stops
it) and dies with the thread that started it (``PR_SET_PDEATHSIG``: a worker killed under it takes it along).
Its wall-clock budget is given to the run (``--timeout``: the run stops itself and records ``timeout``), and a
process still alive :data:`KILL_GRACE_S` later is killed with its whole process group.  Its working directory is
the job's own :data:`WORK_DIR`, so what a plugin writes at a relative path (coverage's ``coverage/``) stays with
that job; every path the batch gives it is absolute.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qppsuite.batch import outdir
from qppsuite.batch.jobs import Job
from qppsuite.cache import cache_dir
from qppsuite.cli.terminal import visible
from qppsuite.errors import GuestStopped, guest_stopped
from qppsuite.images.bundle import images_dir
from qppsuite.session import DEFAULT_IMAGE

#: Seconds past a job's wall-clock budget before its process group is killed (the run stops itself first).
KILL_GRACE_S = 30.0
#: Seconds between a polite SIGTERM and SIGKILL when a job is stopped.
TERM_GRACE_S = 5.0
_POLL_S = 0.1
#: What a result takes from the run's ``runs`` row (none: no database plugin, or it failed before the run).
_RUN_ROW = ("stop_reason", "stop_message", "insn_count", "started_from")
#: The run process's working directory, in the job's directory: files its plugins write at relative paths.
WORK_DIR = "work"
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored for the block: a second Ctrl-C while running processes are being stopped does
    not leave them running.  Off the main thread (where no handler can be set) it changes nothing."""
    signums = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the thread that started it ends."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def run_job(
    job: Job,
    directory: Path,
    *,
    attempts: int,
    image: str | None = None,
    cache: str | None = None,
    stop: threading.Event | None = None,
    started: Callable[[int], None] | None = None,
) -> dict[str, Any] | None:
    """Run ``job`` with its files in ``directory`` (cleared first) and return its result (the fields of
    result.json, docs/batch.md), or None if ``stop`` was set meanwhile: the process was stopped and the job
    has no result.  ``image`` replaces the job's image (a worker's copy), ``cache`` is the runs'
    ``QPPSUITE_CACHE``; ``started(pid)`` is called once the process runs.  A KeyboardInterrupt (Ray's
    cancel) stops the process and propagates."""
    directory = directory.absolute()  # the process runs elsewhere: every path it is given is absolute
    clear_attempt(directory)
    work = directory / WORK_DIR
    work.mkdir()
    cache_path = cache_dir(Path(cache) if cache else None)  # absolute, as its QPPSUITE_CACHE
    database = directory / outdir.DATABASE_FILE
    arguments = job.run_arguments(database, directory / outdir.CONSOLE_FILE, directory / outdir.COPIED_DIR,
                                  image or _image_path(job, cache_path))
    arguments += ["--label", job.label]  # its database names the job: outdir.run_mismatch checks it
    env = dict(os.environ, QPPSUITE_CACHE=str(cache_path))
    begun, wall_start = outdir.now_iso(), time.monotonic()
    with (directory / outdir.STDERR_FILE).open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "qppsuite", "run", *arguments],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=work,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    if started is not None:
        started(process.pid)
    killed_at = None
    try:
        deadline = wall_start + job.timeout_s + KILL_GRACE_S
        while process.poll() is None:
            if stop is not None and stop.is_set():
                _stop(process)
                return None
            if time.monotonic() > deadline:
                killed_at = time.monotonic() - wall_start
                _kill(process)
                break
            time.sleep(_POLL_S)
    except BaseException:
        _stop(process)
        raise
    if stop is not None and stop.is_set():
        return None  # it ended as the batch stopped: maybe because of the Ctrl-C; not a result
    wall = time.monotonic() - wall_start
    code = process.returncode
    run = outdir.last_run(database, _RUN_ROW) or _stop_of(code, directory / outdir.STDERR_FILE)
    return {
        "format": outdir.FORMAT,
        "id": job.id,
        "label": job.label,
        "sha256": job.sha256,
        "status": "ok" if code == 0 and killed_at is None else "failed",
        "reason": None if code == 0 and killed_at is None else _reason(job, code, killed_at, run, directory),
        "exit_code": code,
        "stop_reason": run.get("stop_reason"),
        "attempts": attempts,
        "started": begun,
        "ended": outdir.now_iso(),
        "wall_s": round(wall, 3),
        "insn_count": run.get("insn_count"),
        "insns_executed": _executed(run, image or job.spec.get("image"), cache),
        "worker": _worker(),
    }


def clear_attempt(directory: Path) -> None:
    """Remove what an earlier attempt left in the job's ``directory`` (:func:`outdir.clear_attempt`, and its
    :data:`WORK_DIR`)."""
    outdir.clear_attempt(directory)
    shutil.rmtree(directory / WORK_DIR, ignore_errors=True)


def _image_path(job: Job, cache: Path) -> str | None:
    """The job's image as an absolute path when it is a bare name the cache has no image of, which ``qppsuite
    run`` would look for in its working directory (the batch's, where the job's sha256 hashed it); None
    otherwise (a name in the cache, or a path the jobs file made absolute)."""
    name = str(job.spec.get("image", DEFAULT_IMAGE))
    if "/" in name or (images_dir(cache) / name).is_dir() or not Path(name).is_dir():
        return None
    return str(Path(name).absolute())


def _worker() -> str:
    """``host/pid`` of the process that ran the job (a Ray worker), plus the thread's name in a pool's thread."""
    thread = threading.current_thread()
    where = f"{socket.gethostname()}/{os.getpid()}"
    return where if thread is threading.main_thread() else f"{where}/{thread.name}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the job's process group (the run stops as on Ctrl-C), SIGKILL it if still there after a while."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(TERM_GRACE_S)
    except subprocess.TimeoutExpired:
        _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _stop_of(code: int, stderr: Path) -> dict[str, Any]:
    """The stop a run that left no runs row reported (a kernel that panicked while booting, before any plugin
    was loaded; a job without a database plugin): ``{"stop_reason", "stop_message"}`` from its
    :class:`~qppsuite.errors.GuestStopped` line and exit status, or {}."""
    if code != GuestStopped.exit_code:
        return {}
    try:
        text = stderr.read_bytes()[-8192:].decode(errors="replace")
    except OSError:
        return {}
    lines = [line for line in text.splitlines() if line.startswith("error: ")]
    stopped = guest_stopped(lines[-1]) if lines else None
    return {} if stopped is None else {"stop_reason": stopped[0], "stop_message": stopped[1]}


def _executed(run: dict[str, Any], image: str | None, cache: str | None) -> int | None:
    """Guest instructions this run executed: its count from power-on less what the snapshot it started from had
    already run (None if unknown)."""
    count = run.get("insn_count")
    if not isinstance(count, int):
        return None
    start = run.get("started_from")
    if not start:
        return count
    from qppsuite.core import snapshot
    from qppsuite.images.bundle import open_image

    try:
        bundle = open_image(image or DEFAULT_IMAGE, cache=Path(cache) if cache else None, verify=False)
        _key, before = snapshot.describe(cache_dir(Path(cache) if cache else None) / "snapshots" / bundle.name /
                                         f"{start}.snapshot")
    except Exception:  # a snapshot replaced meanwhile: the figure is unknown, not the job's failure
        return None
    return count - before


def _reason(job: Job, code: int, killed_at: float | None, run: dict[str, Any], directory: Path) -> str:
    """Why the job failed, one line."""
    if killed_at is not None:
        return f"timeout after {job.timeout_s:g} s wall (killed {killed_at:.0f} s after it started)"
    if code < 0:
        return f"worker crashed (signal {-code})"
    kind, message = run.get("stop_reason"), str(run.get("stop_message") or "")
    if kind == "panic":
        return "kernel panic: " + message.split("Kernel panic - not syncing:", 1)[-1].strip()
    if kind == "max_insns":
        return f"budget exceeded: {job.spec.get('budget', {}).get('instructions', run.get('insn_count'))} instructions"
    if kind == "timeout":
        return f"timeout after {job.timeout_s:g} s wall"
    if kind not in (None, "poweroff"):  # "interrupted by SIGTERM" says its kind already
        return visible(message) if message.startswith(kind) else f"{kind}: {visible(message)}"
    return f"exit {code}: {_last_line(directory / outdir.STDERR_FILE)}"


def _last_line(path: Path) -> str:
    try:
        text = path.read_bytes()[-4096:].decode(errors="replace")
    except OSError:
        return "(no stderr)"
    found = [line for line in text.splitlines() if line.strip() and not line.startswith("hint:")]
    line = visible(found[-1].strip()) if found else "(no stderr)"
    return line if len(line) <= 300 else line[:300] + "…"
