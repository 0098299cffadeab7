"""A batch's output directory, as the runner and ``qppsuite batch merge`` share it (docs/batch.md has the layout).

``OUTDIR/batch.json`` lists the jobs (id, label, resolved spec, sha256); each job has ``OUTDIR/jobs/<id>/`` with
its run database ``run.sqlite``, ``console.log``, ``stderr.log``, the files it copied out (``copied/``), the count
of its attempts ``attempts.json`` (written as an attempt starts, kept across attempts), and, written last and
atomically once the job has finished, ``result.json``.  A job is complete when its
result.json says ``ok`` for the sha256 batch.json has for it and its run.sqlite (if it has a database plugin)
holds the run its result.json describes (:func:`run_mismatch`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from qppsuite.batch.jobs import Job
from qppsuite.errors import QppsuiteError
from qppsuite.hostfiles import replace_file
from qppsuite.plugins.syscalls_logger.reader import readonly_uri

FORMAT = 1
BATCH_FILE = "batch.json"
RESULT_FILE = "result.json"
DATABASE_FILE = "run.sqlite"
CONSOLE_FILE = "console.log"
STDERR_FILE = "stderr.log"
COPIED_DIR = "copied"
#: ``{"sha256", "attempts"}``: how many times this version of the job was started, written as each attempt starts
#: (a job killed mid-run, batch and all, leaves no result.json but is still counted); not one attempt's file.
ATTEMPTS_FILE = "attempts.json"
#: Locked (flock) by the batch writing into OUTDIR, holding its pid; the kernel drops the lock when it ends.
LOCK_FILE = "batch.lock"
#: What one attempt leaves in its job directory (SQLite's side files included); cleared before the next.
ATTEMPT_FILES = (RESULT_FILE, DATABASE_FILE, f"{DATABASE_FILE}-wal", f"{DATABASE_FILE}-shm",
                 f"{DATABASE_FILE}-journal", CONSOLE_FILE, STDERR_FILE)


def default_outdir(jobs: Path) -> Path:
    """``./batch-<stem of the jobs file or samples directory>``."""
    return Path(f"batch-{jobs.stem or jobs.absolute().name}")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class OutdirBusy(QppsuiteError):
    """Another batch is writing into the output directory."""


@contextmanager
def locked(outdir: Path) -> Iterator[None]:
    """Hold ``outdir``'s lock (created, with its parents, if missing) while the block runs; :class:`OutdirBusy`
    if another live batch holds it (a killed one's lock is gone with its process), one
    :class:`QppsuiteError` line if the directory cannot be written."""
    if outdir.exists() and not outdir.is_dir():
        raise QppsuiteError(f"the batch's output directory {outdir} is a file, not a directory")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(outdir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise QppsuiteError(f"cannot write the batch's output directory {outdir}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise OutdirBusy(
                f"{outdir} is in use by batch pid {holder if holder.isdigit() else '(unknown)'}",
                hint="wait for it to end, or give this one another output directory (-o)",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def job_dir(outdir: Path, job_id: str) -> Path:
    return outdir / "jobs" / job_id


def write_batch(outdir: Path, jobs: list[Job]) -> None:
    """``batch.json`` for ``jobs`` (replacing an earlier run's: the jobs file may have changed)."""
    document = {
        "format": FORMAT,
        "jobs": [{"id": job.id, "label": job.label, "job": job.spec, "sha256": job.sha256} for job in jobs],
        "created": now_iso(),
    }
    outdir.mkdir(parents=True, exist_ok=True)
    replace_file(outdir / BATCH_FILE, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())


def read_result(directory: Path) -> dict[str, Any] | None:
    """The job's result.json, or None if it has none or it is not a JSON object (an edited file)."""
    return _read_object(directory / RESULT_FILE)


def is_complete(directory: Path, sha256: str, *, database: bool = False) -> bool:
    """Whether the job needs no rerun: its result.json says ``ok`` for ``sha256`` and, if the job has a
    ``database``, its run.sqlite opens and its last run is the one result.json describes (an OUTDIR copied
    without it, a damaged file, another job's file copied over it: rerun).  No integrity check of the whole
    file: the merge reads every page, and marks a job whose file it finds damaged as failed."""
    result = read_result(directory)
    if result is None or result.get("status") != "ok" or result.get("sha256") != sha256:
        return False
    if not database:
        return True
    run = last_run(directory / DATABASE_FILE)
    # A run not labelled (a file written before the batch labelled its runs) cannot show it is the job's: rerun.
    return run is not None and run.get("label") is not None and run_mismatch(result, run) is None


#: The ``runs`` columns a job's result.json repeats, by its field names (the result is read from that row).
RUN_FIELDS = {"insn_count": "insn_count", "stop_reason": "stop_reason"}
#: The ``runs`` columns :func:`run_mismatch` reads.
RUN_COLUMNS = (*RUN_FIELDS.values(), "label", "started_at", "ended_at")


def last_run(path: Path, columns: Sequence[str] = RUN_COLUMNS) -> dict[str, Any] | None:
    """``columns`` (default :data:`RUN_COLUMNS`) of the last run of the job database at ``path``; None if it has
    none or cannot be read."""
    if not path.is_file():
        return None
    try:  # read-only, closed: no -wal or -shm file is left beside it
        with closing(sqlite3.connect(readonly_uri(path), uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute(f"SELECT {', '.join(columns)} FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return dict(row) if row is not None else None


def run_mismatch(result: Mapping[str, Any], run: Mapping[str, Any]) -> str | None:
    """Why the ``runs`` row ``run`` (:data:`RUN_COLUMNS`) is not the run the job's ``result`` describes, in
    one line; None when it is: the fields result.json copied from it are equal, the run is labelled with the
    job's label (``qppsuite run --label``: a run not labelled, written before the batch labelled its runs, is
    let through here, and :func:`is_complete` reruns it), and the run started and ended within the attempt's
    ``started`` .. ``ended`` (ISO 8601 UTC, to the second, when both sides have them)."""
    label = run.get("label")
    if label is not None and label != result.get("label"):
        return (f"its database is not the run its result.json describes: its run is labelled {label!r}, "
                f"the job {result.get('label')!r}")
    for field, column in RUN_FIELDS.items():
        if result.get(field) != run.get(column):
            return (f"its database is not the run its result.json describes: {column} {run.get(column)}, "
                    f"the result says {result.get(field)}")
    times = [result.get("started"), run.get("started_at"), run.get("ended_at"), result.get("ended")]
    known = [second for second in map(_to_the_second, times) if second is not None]
    if len(known) == len(times) and known != sorted(known):
        return (f"its database is not the run its result.json describes: it ran from {times[1]} to {times[2]}, "
                f"the attempt from {times[0]} to {times[3]}")
    return None


def _to_the_second(time: object) -> dt.datetime | None:
    """An ISO 8601 time cut to its second (the runs table has milliseconds, result.json seconds); None if it is
    not one."""
    try:
        return dt.datetime.fromisoformat(time).replace(microsecond=0) if isinstance(time, str) else None
    except ValueError:
        return None


def fail_result(directory: Path, reason: str) -> None:
    """Rewrite the job's result.json as ``failed`` for ``reason`` (its other fields kept), so the next run
    retries it; nothing if it has none.  :class:`OSError` if it cannot be written."""
    result = read_result(directory)
    if result is not None:
        write_result(directory, {**result, "status": "failed", "reason": reason})


def write_result(directory: Path, result: dict[str, Any]) -> None:
    """result.json, whole or not at all (the last file a finished job gets)."""
    replace_file(directory / RESULT_FILE, (json.dumps(result, indent=1, sort_keys=True) + "\n").encode())


def attempts_made(directory: Path, sha256: str) -> int:
    """How many times the job of ``sha256`` was started in ``directory``: its attempts.json's count, or its
    result.json's for a directory written before attempts.json was (0 for another version of the job)."""
    counts = [0]
    for record in (_read_object(directory / ATTEMPTS_FILE), read_result(directory)):
        if record is not None and record.get("sha256") == sha256:
            count = record.get("attempts")
            counts.append(count if isinstance(count, int) and count > 0 else 0)
    return max(counts)


def note_attempt(directory: Path, sha256: str, attempts: int) -> None:
    """Record that attempt number ``attempts`` of the job of ``sha256`` starts (the directory made if missing);
    :class:`OSError` if it cannot be written."""
    directory.mkdir(parents=True, exist_ok=True)
    document = {"sha256": sha256, "attempts": attempts}
    replace_file(directory / ATTEMPTS_FILE, (json.dumps(document, sort_keys=True) + "\n").encode())


def _read_object(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def clear_attempt(directory: Path) -> None:
    """Remove what an earlier attempt left, result.json first: a rerun's database starts empty (attempts.json,
    the count of attempts, stays).  A directory at one of their names (made by hand: it is inside the job's own
    directory) goes too, rather than failing every rerun of the job."""
    for name in ATTEMPT_FILES:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    shutil.rmtree(directory / COPIED_DIR, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def write_outputs(directory: Path, files: dict[str, bytes]) -> None:
    """A remote worker's files (relative names, e.g. ``run.sqlite``, ``copied/x``) into the job directory."""
    for name, data in files.items():
        target = directory / name
        if not target.resolve().is_relative_to(directory.resolve()):
            continue  # names are the worker's own; never outside the job's directory
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
