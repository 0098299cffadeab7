"""Dispatching a batch's jobs: a thread pool driving one ``qppsuite run`` process per job, or Ray tasks (a local
instance, or an existing cluster with ``--ray ADDRESS``), and the batch's resume and Ctrl-C rules.

Resume: a job whose result.json says ``ok`` for its current sha256, and whose run database (if it has one) holds
its run, is skipped (no process started); every other job runs again (its earlier attempt's files cleared
first).  Ctrl-C: running jobs are stopped and get no
result.json; finished jobs' results are already on disk; :class:`BatchInterrupted` says so.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qppsuite.batch import outdir, ready
from qppsuite.batch import scratch as scratch_dirs
from qppsuite.batch.execute import clear_attempt, run_job, signals_ignored
from qppsuite.batch.jobs import DATABASE_PLUGINS, Job
from qppsuite.batch.progress import BatchProgress
from qppsuite.batch.shipping import image_hash, pack, unpack
from qppsuite.cli.terminal import visible
from qppsuite.errors import QppsuiteError
from qppsuite.images.bundle import cache_dir
from qppsuite.session import DEFAULT_IMAGE


class BatchInterrupted(Exception):
    """Ctrl-C (or SIGTERM, SIGHUP) stopped the batch: :attr:`signum`; the summary so far is :attr:`summary`."""

    def __init__(self, summary: Summary, signum: int) -> None:
        super().__init__("interrupted")
        self.summary = summary
        self.signum = signum


class RayError(QppsuiteError):
    """A Ray cluster that cannot be reached or used."""


@dataclass
class Summary:
    """Counts of a batch: ``skipped`` jobs were complete already; ``not_run`` had no result when it ended."""

    total: int
    ok: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def not_run(self) -> int:
        return self.total - self.ok - self.failed - self.skipped


def ray_available() -> bool:
    """Whether Ray can be imported (the ``qppsuite[cluster]`` extra)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def run_batch(
    jobs: list[Job],
    out: Path,
    progress: BatchProgress,
    *,
    workers: int,
    use_ray: bool,
    ray_address: str | None = None,
    cache: Path | None = None,
) -> Summary:
    """Run the jobs not complete in ``out`` with ``workers`` at a time, writing each finished one's result.json;
    the counts.  :class:`BatchInterrupted` on Ctrl-C, once the running jobs are stopped."""
    try:
        outdir.write_batch(out, jobs)
    except OSError as exc:
        raise QppsuiteError(f"cannot write the batch's output directory {out}: {exc.strerror or exc}") from None
    summary = Summary(total=len(jobs))
    todo: list[tuple[Job, int]] = []
    for job in jobs:
        directory = outdir.job_dir(out, job.id)
        if outdir.is_complete(directory, job.sha256, database=any(name in DATABASE_PLUGINS for name in job.plugins)):
            summary.skipped += 1
            continue
        todo.append((job, outdir.attempts_made(directory, job.sha256) + 1))
    progress.skipped = summary.skipped
    if not todo:
        return summary
    received: list[int] = []
    try:
        with _signals_interrupt(received), progress:
            machines = ready.machines_to_prepare([job for job, _ in todo], cache)
            if machines:  # on a cluster too they boot here, on the driver's cores: its cache is what is shipped
                progress.preparing(len(machines))
                ready.prepare(machines, workers if ray_address is None else os.cpu_count() or 1, cache)
                progress.prepared()
            if use_ray:
                _run_ray(todo, out, progress, summary, workers, ray_address, cache)
            else:
                _run_pool(todo, out, progress, summary, workers, cache)
    except KeyboardInterrupt:
        raise BatchInterrupted(summary, received[0] if received else signal.SIGINT) from None
    return summary


#: The signals that stop a batch as Ctrl-C does: its running jobs stopped, the finished ones kept and merged.
STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _signals_interrupt(received: list[int]) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt in the batch (the signal appended to ``received``),
    so the running jobs are stopped and the finished ones kept, instead of the process ending at once."""

    def interrupt(signum: int, _frame: object) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in STOPPING}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _signals_kept(shutdown: Callable[[], object]) -> Iterator[None]:
    """The handlers of :data:`STOPPING` (:func:`_signals_interrupt`'s) as they were before the block, installed
    again after it.  ``ray.init`` replaces them: SIGTERM with a Python handler of its own (``sys.exit``) and,
    in the process's signal table, its C++ core's (which prints ``*** SIGTERM received at time=...``), so a
    SIGTERM would end the batch without stopping its jobs and merging the finished ones, as the pool's does.

    A signal during the block itself (``ray.init`` takes seconds) stops the batch as ours would, whichever
    handler took it: Ray's ``sys.exit(signum)`` is turned into our handler's KeyboardInterrupt (the signal
    recorded), and ``shutdown`` (``ray.shutdown``) stops what the half-done ``ray.init`` started."""
    ours = {signum: signal.getsignal(signum) for signum in STOPPING}

    def restore() -> None:
        for signum, handler in ours.items():
            if handler is not None:  # None: a handler not installed from Python, left as it is
                signal.signal(signum, handler)

    try:
        yield
    except SystemExit as exc:  # Ray's handler: sys.exit(signum)
        if exc.code not in STOPPING:
            raise
        with suppress(Exception):
            shutdown()
        restore()
        handler = ours.get(signal.Signals(exc.code))
        if callable(handler):
            handler(exc.code, None)  # ours records the signal and raises KeyboardInterrupt
        raise KeyboardInterrupt from None
    except KeyboardInterrupt:  # ours, before Ray installed its own
        with suppress(Exception):
            shutdown()
        raise
    finally:
        restore()


def _record(out: Path, result: dict[str, Any], progress: BatchProgress, summary: Summary,
            elapsed: float | None = None) -> None:
    """Write a finished job's result.json and count it; a result that cannot be written is the job's failure
    (the merge names it), not the batch's end.  ``elapsed``: seconds since the job was started (or submitted),
    shown when the result has no wall time of its own."""
    directory = outdir.job_dir(out, result["id"])
    try:
        directory.mkdir(parents=True, exist_ok=True)
        outdir.write_result(directory, result)
    except OSError as exc:
        result = result | {"status": "failed", "reason": f"cannot write its result.json: {exc.strerror or exc}"}
    if result["status"] == "ok":
        summary.ok += 1
    else:
        summary.failed += 1
    progress.job_finished(result, elapsed)


def _record_unrun(out: Path, result: dict[str, Any], progress: BatchProgress, summary: Summary) -> None:
    """Record the failure of a job the batch could not start, its earlier attempt's files cleared first (a
    database of an earlier version of the job must not be merged as this one's)."""
    with suppress(OSError):  # _record says what is wrong with the directory
        clear_attempt(outdir.job_dir(out, result["id"]))
    progress.running += 1  # job_finished counts it down
    _record(out, result, progress, summary)


def _note_attempt(out: Path, job: Job, attempts: int) -> None:
    """Count the attempt in the job's directory as it starts (pool) or is submitted (Ray), so that one killed
    mid-run, the batch with it, still counts on the next run.  A directory that cannot be written is left to
    the attempt to fail on (its result names why)."""
    with suppress(OSError):
        outdir.note_attempt(outdir.job_dir(out, job.id), job.sha256, attempts)


def _run_pool(
    todo: list[tuple[Job, int]], out: Path, progress: BatchProgress, summary: Summary, workers: int,
    cache: Path | None,
) -> None:
    """Threads, each driving one job's process at a time (the processes do the work, in parallel)."""
    stop = threading.Event()
    lock = threading.Lock()

    def started(_pid: int) -> None:
        with lock:
            progress.job_started()

    def one(job: Job, attempts: int) -> tuple[dict[str, Any], float] | None:
        """The job's result and the seconds it took, or None if the batch stopped first."""
        if stop.is_set():
            return None
        begun = time.monotonic()
        _note_attempt(out, job, attempts)
        try:
            result = run_job(job, outdir.job_dir(out, job.id), attempts=attempts,
                             cache=str(cache) if cache is not None else None, stop=stop, started=started)
        except Exception as exc:  # this job's own trouble (its directory, its arguments): the others go on
            result = _failed(job, attempts, "batch error", exc)
        return None if result is None else (result, time.monotonic() - begun)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qppsuite-batch")
    futures = [pool.submit(one, job, attempts) for job, attempts in todo]
    try:
        pending = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.2, return_when="FIRST_COMPLETED")
            for future in done:
                finished = future.result()
                if finished is not None:
                    result, elapsed = finished
                    with lock:
                        _record(out, result, progress, summary, elapsed)
    except BaseException:
        stop.set()
        with signals_ignored():
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _ray_task(job: Job, attempts: int, bundle: bytes, digest: str, cache: str | None) -> tuple[dict[str, Any],
                                                                                                dict[str, bytes]]:
    """On a Ray worker: the image unpacked once per worker cache (by hash), the job run in a scratch directory of
    that cache (:mod:`qppsuite.batch.scratch`), its result and files (relative names -> bytes) returned to the
    driver, which writes them."""
    image = unpack(bundle, digest, Path(cache) if cache else None)
    scratch = scratch_dirs.make(Path(cache) if cache else None, job.id)
    try:
        result = run_job(job, scratch, attempts=attempts, image=str(image), cache=cache)
        assert result is not None  # no stop event: only a cancel (KeyboardInterrupt) ends it early
        files = {
            path.relative_to(scratch).as_posix(): path.read_bytes() for path in scratch.rglob("*") if path.is_file()
        }
        return result, files
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


#: Ray tasks in flight (submitted, running or queued) per CPU of the cluster: enough queued for every CPU to
#: start its next job at once while the driver packs the next image or writes results, few enough that only
#: their images are in Ray's object store.
TASKS_PER_CPU = 2


def _image_of(job: Job) -> str:
    """The image ``job`` names (a name or a bundle path)."""
    return str(job.spec.get("image", DEFAULT_IMAGE))


def _shipped_by_image(
    todo: list[tuple[Job, int]], put: Callable[[bytes], Any], cache: Path | None,
) -> Generator[tuple[Job, int, tuple[Any, str] | Exception], None, None]:
    """``todo``'s jobs grouped by image (images in the order of their first job, each image's jobs in theirs),
    each with its image shipped: ``(object ref, sha256 of its manifest)``, or the exception that stopped its
    packing (an unreadable bundle, a file missing, a bad manifest: its jobs fail, not the batch).

    An image is packed and put (``put``, Ray's) only when its first job is drawn, and its ref is held only
    until its last job is: from then on only that image's submitted tasks hold it, and Ray frees it when they
    end.  So the driver holds one image's ref, and one image's packed bytes while it puts them."""
    groups: dict[str, list[tuple[Job, int]]] = {}
    for job, attempts in todo:
        groups.setdefault(_image_of(job), []).append((job, attempts))
    for image, members in groups.items():
        shipping: list[tuple[Any, str] | Exception] = []
        try:
            shipping.append((put(pack(image, cache)), image_hash(image, cache)))
        except Exception as exc:
            shipping.append(exc)
        for job, attempts in members[:-1]:
            yield job, attempts, shipping[0]
        job, attempts = members[-1]
        yield job, attempts, shipping.pop()  # popped: this frame no longer holds the ref once its last job has it


def _run_ray(
    todo: list[tuple[Job, int]], out: Path, progress: BatchProgress, summary: Summary, workers: int,
    address: str | None, cache: Path | None,
) -> None:
    """Ray tasks, one CPU each: a local instance of ``workers`` CPUs, or the cluster at ``address``; a local
    instance's workers share this machine's cache.  At most a window of tasks is in flight (:data:`TASKS_PER_CPU`
    per CPU of the cluster, at least ``workers``), more submitted as results arrive, the jobs of one image
    together; each image is packed and put in Ray's object store when its first job is submitted, and let go
    once its last one is (:func:`_shipped_by_image`).  Ctrl-C: the tasks in flight are cancelled, the jobs not
    submitted yet never start; neither gets a result."""
    import logging

    import ray

    logging.getLogger("ray").setLevel(logging.ERROR)  # its start-up notices are not the batch's output
    # Nor its "(raylet) A worker died…" lines, printed raw to stdout whatever log_to_driver says: a lost worker is
    # the job's result (worker crashed).  Ray (2.60) has no public switch for them: its error listener thread
    # prints to sys.stdout, past logging, log_to_driver and logging_config; its debugger uses this flag.  A Ray
    # without it is caught by test_batch_guest's test_a_dead_ray_worker_is_its_jobs_failure_and_ray_prints_nothing.
    worker_module = getattr(getattr(ray, "_private", None), "worker", None)
    if worker_module is not None and hasattr(worker_module, "_worker_logs_enabled"):
        worker_module._worker_logs_enabled = False
    if address is None:  # "local": a new instance, never a cluster another user started on this machine
        with _signals_kept(ray.shutdown):
            ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        worker_cache: str | None = str(cache_dir(cache))
    else:
        _reachable(address)
        # Ray's C++ client writes its retries to fd 2, past logging
        with _raw_stderr_kept() as raw, _signals_kept(ray.shutdown):
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except (ValueError, ConnectionError, RuntimeError, TimeoutError) as exc:
                raise _connect_error(address, exc, raw()) from None
        worker_cache = None  # each node's own cache: $QPPSUITE_CACHE or the XDG cache dir there
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        capacity = int(ray.cluster_resources().get("CPU", workers))
        window = max(workers, TASKS_PER_CPU * capacity)
        attempts_of = dict((job.id, attempts) for job, attempts in todo)
        feed = _shipped_by_image(todo, ray.put, cache)
        refs: dict[Any, tuple[Job, float]] = {}  # the tasks in flight, each with when it was submitted
        pending: list[Any] = []

        def submit_next() -> bool:
            """Submit the next job (its image packed and put first if it is its image's first); False when none
            is left.  Its locals, the image's ref among them, go when it returns."""
            item = next(feed, None)
            if item is None:
                return False
            job, attempts, shipped = item
            if isinstance(shipped, Exception):
                _record_unrun(out, _failed(job, attempts, f"cannot ship image {visible(_image_of(job))}", shipped),
                              progress, summary)
                return True
            _note_attempt(out, job, attempts)  # an earlier attempt's files stay until this one's arrive
            ref = task.remote(job, attempts, shipped[0], shipped[1], worker_cache)
            refs[ref] = job, time.monotonic()
            pending.append(ref)
            return True

        try:
            more = True
            while True:
                while more and len(pending) < window:
                    more = submit_next()
                if not pending:
                    break
                progress.running = min(len(pending), capacity)
                # every task ready within 0.2 s at once: one wait per round, not one per task over all pending
                done, pending[:] = ray.wait(pending, num_returns=len(pending), timeout=0.2)
                for ref in done:
                    job, submitted = refs.pop(ref)
                    try:
                        result, files = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died under the task, or the task failed
                        result, files = _ray_failure(ray, job, attempts_of[job.id], exc), {}
                    directory = outdir.job_dir(out, job.id)
                    try:
                        clear_attempt(directory)
                        outdir.write_outputs(directory, files)
                    except OSError as exc:
                        result = _failed(job, attempts_of[job.id], "batch error", exc)
                    progress.running = min(len(pending), capacity) + 1  # job_finished counts it down
                    _record(out, result, progress, summary, time.monotonic() - submitted)
        except BaseException:
            feed.close()  # the image being shipped, if any, is let go
            with signals_ignored():
                for ref in pending:
                    with suppress(Exception):
                        ray.cancel(ref)  # KeyboardInterrupt in the task: it stops its process
                with suppress(Exception):
                    ray.wait(pending, num_returns=len(pending), timeout=10)
            raise
    finally:
        ray.shutdown()
        if address is None:  # its workers are gone: what those killed under their tasks left goes too
            scratch_dirs.remove_stale(cache)


#: Seconds to wait for a cluster's head node to accept a connection and answer (Ray itself retries for minutes).
CONNECT_TIMEOUT_S = 10.0
#: What an HTTP/2 client sends first; a gRPC server (Ray's GCS, or its client server) answers with SETTINGS.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HTTP2_SETTINGS = 0x4


def _reachable(address: str) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) that accepts no TCP connection, or does but answers not as a
    gRPC server does, is one :class:`RayError` line within :data:`CONNECT_TIMEOUT_S` or so, not minutes of
    Ray's retries and its raw warnings; other address forms (``auto``) are left to Ray.  A cluster with TLS
    (:func:`_ray_uses_tls`) takes no plaintext preface: only its TCP connection is checked, the rest is Ray's."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    hint = "the head node's address, as `ray start --head` printed it (HOST:6379)"
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as connection:
            if _ray_uses_tls():
                return
            connection.sendall(_HTTP2_PREFACE + b"\0\0\0\x04\0\0\0\0\0")  # and an empty SETTINGS frame
            header = b""
            while len(header) < 9:
                chunk = connection.recv(9 - len(header))
                if not chunk:
                    break
                header += chunk
    except OSError as exc:
        raise RayError(f"--ray {address}: cannot connect: {exc.strerror or exc}", hint=hint) from None
    if len(header) < 9 or header[3] != _HTTP2_SETTINGS:
        raise RayError(f"--ray {address}: not a Ray cluster (it does not answer as Ray's gRPC server does)",
                       hint=hint)


@contextmanager
def _raw_stderr_kept() -> Iterator[Callable[[], str]]:
    """File descriptor 2 goes to a temporary file while the block runs (what Ray's C++ code writes there, such as
    ``gcs_client.cc:…: Failed to get cluster ID … InvalidAuthToken`` at each retry, never reaches the terminal
    raw); the block gets a function that returns the last 64 KiB written there, which is dropped afterwards."""
    with tempfile.TemporaryFile() as kept:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(kept.fileno(), 2)

        def written() -> str:
            kept.seek(0, os.SEEK_END)
            kept.seek(max(0, kept.tell() - 65536))
            return kept.read().decode(errors="replace")

        try:
            yield written
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


#: What Ray's client writes when the cluster refuses it for authentication (its gRPC status and Ray's own code).
_AUTH_REFUSED = ("InvalidAuthToken", "UNAUTHENTICATED", "Unauthenticated")


def _connect_error(address: str, exc: Exception, raw: str) -> RayError:
    """The one line for a cluster ``ray.init`` could not join; ``raw`` is what Ray wrote to fd 2 meanwhile, which
    tells a cluster that refused for authentication (Ray's token authentication, Ray 2.52+) from one that did
    not answer."""
    if any(word in raw or word in str(exc) for word in _AUTH_REFUSED):
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            return RayError(f"--ray {address}: the cluster refused this driver's authentication token",
                            hint="give the cluster's token in RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (`ray "
                                 "get-auth-token` on its head node prints it)")
        return RayError(f"--ray {address}: the cluster requires authentication (Ray's token authentication)",
                        hint="set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or a file named "
                             "by RAY_AUTH_TOKEN_PATH; `ray get-auth-token` on its head node prints it)")
    return RayError(f"--ray {address}: cannot connect: {' '.join(str(exc).split())[:300]}",
                    hint="the head node's address, as `ray start --head` printed it (HOST:6379)")


def _ray_uses_tls() -> bool:
    """Whether Ray talks TLS to its cluster: ``RAY_USE_TLS`` set to ``1`` or ``true`` (any case), as Ray reads it
    (docs.ray.io, "TLS Authentication")."""
    return os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")


def _ray_failure(ray: Any, job: Job, attempts: int, exc: Exception) -> dict[str, Any]:
    """The result of a Ray task that gave no result: an exception the task raised (its image would not unpack,
    its directory could not be made) is a ``batch error`` with that exception's first line; anything else (the
    worker process died, its node was lost) is ``worker crashed (Ray: <Ray's error type>)``, whose long message
    (a pointer to Ray's log files) is left to Ray's logs."""
    task_error = getattr(ray.exceptions, "RayTaskError", None)
    if task_error is not None and isinstance(exc, task_error):
        cause = getattr(exc, "cause", None)
        return _failed(job, attempts, "batch error", cause if isinstance(cause, Exception) else exc)
    result = _failed(job, attempts, "worker crashed", exc)
    return result | {"reason": f"worker crashed (Ray: {type(exc).__name__})"}


def _failed(job: Job, attempts: int, what: str, exc: Exception) -> dict[str, Any]:
    """The result of a job that ended without one of its own: ``what`` happened (its Ray worker died, or the
    batch could not run it), ``exc`` says how (its first line, printable)."""
    first = str(exc).strip().splitlines()
    detail = visible(first[0][:200]) if first else ""
    return {
        "format": outdir.FORMAT, "id": job.id, "label": job.label, "sha256": job.sha256, "status": "failed",
        "reason": f"{what} ({type(exc).__name__}: {detail})", "exit_code": None,
        "stop_reason": None, "attempts": attempts, "started": None, "ended": outdir.now_iso(), "wall_s": None,
        "insn_count": None, "insns_executed": None, "worker": None,
    }
