"""A batch's merged database: every job's run in one file, ``OUTDIR/batch.sqlite`` (docs/batch.md).

What the merge reads of the batch's output directory (:mod:`.outdir`; the runner writes it): ``batch.json``
lists the jobs in order (``id``, ``label``, ``sha256``); ``jobs/<id>/result.json`` is written last, when a job
has finished (``status`` ok or failed, and why it failed); ``jobs/<id>/run.sqlite`` is the job's own run
database, when its run got that far.  ``merge_inputs.schema.json`` beside this module holds the fields it reads.

The merged file has the run database's schema (the logger's tables, and every plugin table of the jobs'
files, created as the job's file declares it) and one ``runs`` row per job: the job at position ``n`` of
``batch.json`` is run ``n``, whatever its id in its own file, so merging again gives the same file (a job's file
holds one run; of several, the last is merged).  Rows are
copied job by job with sqlite3's ``ATTACH`` and ``INSERT ... SELECT`` (no row passes through Python), renumbered
on the way: a table whose row ids follow the run's stride (``run_id * ROW_ID_STRIDE + n``: processes, threads,
the plugins' tables) moves them to the new run's range, and one whose ids SQLite handed out (syscalls) moves
them past the rows merged before.  Every column that refers to ``runs(id)`` or to another table's ``id`` by a
foreign key the file declares moves with the table it names, so a plugin's own tables (proc_events,
file_activity, net_events, coverage_blocks...) need nothing here.

``runs.label``, ``runs.batch_status`` (``ok``, ``failed``, ``not run``) and ``runs.batch_reason`` say how each
job went.  A job's database that cannot be read (corrupt, foreign, of another schema version) or copied is
that job's failure, in one line, never the merge's.  The file is built beside the old one and renamed over it
once complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from qppsuite.batch.outdir import (
    BATCH_FILE,
    DATABASE_FILE,
    RESULT_FILE,
    RUN_COLUMNS,
    RUN_FIELDS,
    fail_result,
    job_dir,
    run_mismatch,
)
from qppsuite.errors import QppsuiteError
from qppsuite.plugins.syscalls_logger import reader
from qppsuite.plugins.syscalls_logger.database import (
    ROW_ID_STRIDE,
    RUNS,
    create_lookup_indexes,
    create_schema,
    schema_mismatch,
    sqlite_utils,
)
from qppsuite.schemas import load_schema, schema_problem

MERGED_FILE = "batch.sqlite"
INPUTS_SCHEMA = Path(__file__).with_name("merge_inputs.schema.json")

OK = "ok"
FAILED = "failed"
NOT_RUN = "not run"
STATUSES = (OK, FAILED, NOT_RUN)

#: The runs columns the merge writes itself; the others come from the job's own ``runs`` row.
BATCH_COLUMNS = ("label", "batch_status", "batch_reason")
#: Where the job's run database is attached while its rows are copied.
SOURCE = "job"
#: The files SQLite may keep beside a database: an old merged file's would be read as the new one's.
SIDE_FILES = ("-wal", "-shm", "-journal")
#: Why an ok job that had a database (its result.json copied an instruction count from it) has none.
MISSING_DATABASE = f"its database is missing (no {DATABASE_FILE})"
#: The hint when a job's database is of a format this version refuses: its result.json is left as it is.
REFUSED_HINT = (f"a job whose {DATABASE_FILE} this version refuses keeps its {RESULT_FILE}: rerun the batch to redo "
                f"it (first delete its jobs/<id>/{RESULT_FILE} if the batch counts it complete)")


class MergeError(QppsuiteError):
    """An output directory the merge cannot start from (no readable ``batch.json``), or cannot write into."""


@dataclass(frozen=True)
class Job:
    """What the merge decided of one job: its run id in the merged file, label, status and reason (one line),
    the job's own database to copy (None: none, or none worth reading), its ``result.json`` (what it says of
    the run: ``status``, ``stop_reason``, ``insn_count``, ``started``, ``ended``; {} if none was read) and
    whether its database is of a format this version ``refused`` (not damage: its result.json is kept)."""

    run_id: int
    label: str
    status: str
    reason: str | None
    database: Path | None = None
    result: dict[str, Any] = field(default_factory=dict)
    refused: bool = False

    @property
    def broken(self) -> bool:
        """Whether the job's result.json says ok but its database is missing, damaged or another run's: the
        merge rewrites it as failed, so the next run retries the job."""
        return self.status == FAILED and self.result.get("status") == OK and not self.refused


@dataclass(frozen=True)
class Merged:
    """A merge's outcome: the file, each job as merged, one line per input that was not as the contract
    says (a result.json or a database that could not be read), each naming the job, and hints (one line each)
    on what to do about them."""

    path: Path
    jobs: tuple[Job, ...]
    problems: tuple[str, ...]
    hints: tuple[str, ...] = ()

    def count(self, status: str) -> int:
        return sum(job.status == status for job in self.jobs)


def merge(outdir: Path) -> Path:
    """Build ``outdir/batch.sqlite`` from the batch's output directory (see :func:`merge_batch`); its path."""
    return merge_batch(outdir).path


def merge_batch(outdir: Path) -> Merged:
    """Build ``outdir/batch.sqlite`` from ``batch.json`` and every job's results, replacing an older one only
    once the new one is complete.  A job's bad input is its failure and one of :attr:`Merged.problems`;
    raises :class:`MergeError` (one line) when there is no batch to merge or the file cannot be written."""
    entries = _batch_entries(outdir)
    problems: list[str] = []
    jobs = [_job(outdir, run_id, entry, problems) for run_id, entry in enumerate(entries, start=1)]
    target = outdir / MERGED_FILE
    try:
        fd, name = tempfile.mkstemp(prefix=f".{MERGED_FILE}.", suffix=".tmp", dir=outdir)
    except OSError as exc:
        raise MergeError(f"cannot write in {outdir}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        merged = _MergedFile(tmp)
        try:
            jobs = [merged.add(job, problems) for job in jobs]
            create_lookup_indexes(sqlite_utils.Database(merged.conn))  # made over all the rows: once, at the end
        finally:
            merged.close()
        _publish(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (OSError, sqlite3.Error)):
            raise MergeError(f"cannot write {target}: {getattr(exc, 'strerror', None) or exc}") from None
        raise
    for entry, job in zip(entries, jobs, strict=True):
        if job.broken:  # failed in its result.json too, so the next run retries it
            try:
                fail_result(job_dir(outdir, entry["id"]), job.reason or "")
            except OSError as exc:
                problems.append(f"{job.label}: cannot mark it failed in its {RESULT_FILE}: {exc.strerror or exc}")
    hints = (REFUSED_HINT,) if any(job.refused for job in jobs) else ()
    return Merged(target, tuple(jobs), tuple(problems), hints)


def _inputs_schema(part: str) -> dict[str, Any]:
    return {**load_schema(INPUTS_SCHEMA), "$ref": f"#/$defs/{part}"}


def _read_json(path: Path) -> Any:
    """The JSON document at ``path``; a file that cannot be read or parsed is a one-line :class:`ValueError`."""
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not JSON ({exc})") from None


def _batch_entries(outdir: Path) -> list[dict[str, Any]]:
    """``batch.json``'s jobs, in order; raises :class:`MergeError` when there is none to read."""
    if not outdir.is_dir():
        what = "not a directory" if outdir.exists() else "no such directory"
        raise MergeError(f"{outdir} is not a batch's output directory: {what}")
    path = outdir / BATCH_FILE
    if not path.exists():
        raise MergeError(f"{outdir} is not a batch's output directory: it has no {BATCH_FILE}")
    try:
        batch = _read_json(path)
    except ValueError as exc:
        raise MergeError(str(exc)) from None
    problem = schema_problem(batch, _inputs_schema("batch"))
    if problem is not None:
        raise MergeError(f"{path}: {problem}")
    entries: list[dict[str, Any]] = batch["jobs"]
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        first = seen.setdefault(entry["id"], number)
        if first != number:
            raise MergeError(f"{path}: jobs {first} and {number} have one id, {entry['id']!r}")
    return entries


def _job(outdir: Path, run_id: int, entry: dict[str, Any], problems: list[str]) -> Job:
    """How a job went, from its ``result.json`` (none, or of a changed job: not run) and whether it left a
    database; a result.json that breaks the contract is a failure and a problem."""
    label = entry["label"]
    directory = job_dir(outdir, entry["id"])
    result_path = directory / RESULT_FILE
    database = directory / DATABASE_FILE
    if not result_path.exists():
        why = "interrupted: it left no result" if database.exists() else "it never ran"
        return Job(run_id, label, NOT_RUN, why)
    try:
        result = _read_json(result_path)
        problem = schema_problem(result, _inputs_schema("result"))
        if problem is not None:
            raise ValueError(f"{result_path}: {problem}")
    except ValueError as exc:
        problems.append(f"{label}: {_one_line(str(exc))}")
        return Job(run_id, label, FAILED, f"unreadable result: {_one_line(str(exc))}")
    if result["sha256"] != entry["sha256"]:
        return Job(run_id, label, NOT_RUN, "its result is of an earlier version of the job")
    status = result["status"]
    if status == OK and _had_database(result) and not database.exists():
        problems.append(f"{label}: {MISSING_DATABASE}")
        return Job(run_id, label, FAILED, MISSING_DATABASE, None, result)
    reason = None if status == OK else _one_line(result.get("reason") or "") or "failed (no reason given)"
    return Job(run_id, label, status, reason, database if database.exists() else None, result)


def _had_database(result: dict[str, Any]) -> bool:
    """Whether an ok job's result.json was read from a run database: the runner copies the run's stop and
    instruction count from its ``runs`` row, and an ok job without a database has neither."""
    return any(result.get(field) is not None for field in RUN_FIELDS)


def _one_line(text: str) -> str:
    """``text`` as one line: SQLite's messages quote a damaged schema's text, line breaks and all."""
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _quote(name: str) -> str:
    """An SQL identifier: any name a file holds, quoted."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class _Table:
    """A table of the job's file as the merge copies it: its columns (name -> declared type), whether its
    ``id`` is an integer primary key, and its foreign keys (column -> the table whose ``id`` it names)."""

    name: str
    columns: dict[str, str]
    integer_id: bool
    references: dict[str, str]


class _MergedFile:
    """The merged file being built: the logger's schema, then each job's run added in its own transaction."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}", uri=True, isolation_level=None)
        # A new file that replaces nothing until it is complete: no journal on disk, no syncs until the end.
        self.conn.execute("PRAGMA journal_mode = MEMORY")
        self.conn.execute("PRAGMA synchronous = OFF")
        self.conn.execute("BEGIN")
        create_schema(sqlite_utils.Database(self.conn))
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def add(self, job: Job, problems: list[str]) -> Job:
        """Add ``job``'s run: its database's rows, renumbered, or only its ``runs`` row; returns the job as merged
        (failed, with why, when its database cannot be read or copied)."""
        if job.database is not None:
            try:
                self._copy(job)
                return job
            # sqlite3.Warning: more than one statement in a damaged schema's text; ValueError: a NUL in it.
            except (reader.LogDatabaseError, sqlite3.Error, sqlite3.Warning, ValueError, _Unmergeable) as exc:
                what = _one_line(str(exc) if isinstance(exc, reader.LogDatabaseError) else f"{job.database}: {exc}")
                if not isinstance(exc, (reader.LogDatabaseError, _Unmergeable)):
                    what = f"its database is damaged: {what}"
                problems.append(f"{job.label}: {what}")
                reason = what if job.status == OK else f"{job.reason}; {what}"
                job = replace(job, status=FAILED, reason=reason, database=None, refused=isinstance(exc, _Refused))
        result = job.result
        self.conn.execute(
            f"INSERT INTO {RUNS} (id, started_at, ended_at, stop_reason, insn_count, {', '.join(BATCH_COLUMNS)}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.run_id,
                result.get("started"),
                result.get("ended"),
                result.get("stop_reason"),
                result.get("insn_count"),
                job.label,
                job.status,
                job.reason,
            ),
        )
        return job

    def _copy(self, job: Job) -> None:
        """Copy the last run of ``job.database`` as run ``job.run_id``, all or nothing."""
        assert job.database is not None
        refusal = _refusal(job.database)
        if refusal is not None:
            raise _Refused(refusal)
        reader.open_readonly(job.database).close()  # a foreign or damaged file: one line
        conn = self.conn
        conn.execute("ATTACH DATABASE ? AS " + SOURCE, (reader.readonly_uri(job.database),))
        try:
            conn.execute("BEGIN")
            try:
                self._copy_run(job)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute(f"DETACH DATABASE {SOURCE}")

    def _copy_run(self, job: Job) -> None:
        conn = self.conn
        (run,) = conn.execute(f"SELECT max(id) FROM {SOURCE}.{RUNS}").fetchone()
        if not isinstance(run, int):
            raise _Unmergeable("it holds no run")
        if job.status == OK:  # a complete job's file must be the run its result.json describes
            conn.row_factory = sqlite3.Row
            try:
                row = conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM {SOURCE}.{RUNS} WHERE id = ?", (run,))
                mismatch = run_mismatch(job.result, dict(row.fetchone()))
            finally:
                conn.row_factory = None
            if mismatch is not None:
                raise _Unmergeable(mismatch)
        tables = _tables(conn)
        for table in tables.values():
            self._declare(table)
        offsets = {
            name: self._offset(table, run, job.run_id)
            for name, table in tables.items()
            if table.integer_id and name != RUNS
        }
        runs = [column for column in tables[RUNS].columns if column != "id" and column not in BATCH_COLUMNS]
        conn.execute(
            f"INSERT INTO main.{RUNS} (id, {', '.join(map(_quote, runs))}, {', '.join(BATCH_COLUMNS)}) "
            f"SELECT ?, {', '.join(map(_quote, runs))}, ?, ?, ? FROM {SOURCE}.{RUNS} WHERE id = ?",
            (job.run_id, job.label, job.status, job.reason, run),
        )
        for table in tables.values():
            if table.name == RUNS:
                continue
            values = [_renumbered(table, column, offsets, job.run_id) for column in table.columns]
            conn.execute(
                f"INSERT INTO main.{_quote(table.name)} ({', '.join(map(_quote, table.columns))}) "
                f"SELECT {', '.join(values)} FROM {SOURCE}.{_quote(table.name)} WHERE run_id = ?",
                (run,),
            )

    def _declare(self, table: _Table) -> None:
        """Create the job's table as its file declares it (with its indexes), or add the columns it lacks."""
        conn = self.conn
        have = {row[0] for row in conn.execute("SELECT name FROM pragma_table_info(?, 'main')", (table.name,))}
        if not have:
            for (sql,) in conn.execute(
                f"SELECT sql FROM {SOURCE}.sqlite_master WHERE tbl_name = ? AND type IN ('table', 'index') "
                "AND sql IS NOT NULL ORDER BY type = 'index', name",
                (table.name,),
            ).fetchall():
                conn.execute(sql)
            return
        for column, kind in table.columns.items():
            if column not in have:
                conn.execute(f"ALTER TABLE main.{_quote(table.name)} ADD COLUMN {_quote(column)} {kind}")

    def _offset(self, table: _Table, run: int, new_run: int) -> int:
        """What to add to the ids of ``table``'s rows of ``run`` (and to the columns naming them) in the merged
        file: to move them to run ``new_run``'s stride, or past the ids merged before."""
        name = _quote(table.name)
        low, high = self.conn.execute(
            f"SELECT min(id), max(id) FROM {SOURCE}.{name} WHERE run_id = ?", (run,)
        ).fetchone()
        if low is None:
            return (new_run - run) * ROW_ID_STRIDE
        if not isinstance(low, int) or not isinstance(high, int):
            raise _Unmergeable(f"table {table.name!r} has ids that are not integers")
        if run * ROW_ID_STRIDE < low and high < (run + 1) * ROW_ID_STRIDE:
            return (new_run - run) * ROW_ID_STRIDE
        (top,) = self.conn.execute(f"SELECT max(id) FROM main.{name}").fetchone()
        return (top if isinstance(top, int) else 0) + 1 - low


class _Unmergeable(Exception):
    """A job's database that SQLite reads but the merge cannot copy: why, in one line."""


class _Refused(_Unmergeable):
    """A job's database SQLite reads whose schema this version refuses (another version's, or one lacking a
    column its version has: an older build's, or an edited file): not damage, so its result.json is kept."""


def _refusal(path: Path) -> str | None:
    """Why this version refuses the schema of the database at ``path`` (one line), or None: it does not, or
    SQLite cannot read it (damage, which :func:`reader.open_readonly` names)."""
    try:
        with contextlib.closing(sqlite3.connect(reader.readonly_uri(path), uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            return schema_mismatch(conn, path, reading=True) if RUNS in tables else None
    except (sqlite3.Error, UnicodeDecodeError):
        return None


def _tables(conn: sqlite3.Connection) -> dict[str, _Table]:
    """The attached job file's ``runs`` and every table with a ``run_id`` column, by name."""
    tables: dict[str, _Table] = {}
    names = conn.execute(
        f"SELECT name FROM {SOURCE}.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
        "AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name"
    ).fetchall()
    for (name,) in names:
        info = conn.execute(f"SELECT name, type, pk FROM pragma_table_info(?, '{SOURCE}')", (name,)).fetchall()
        columns = {column: kind for column, kind, _pk in info}
        if name != RUNS and "run_id" not in columns:
            continue
        keys = [column for column, _kind, pk in info if pk]
        references = {
            column: parent
            for parent, column, to in conn.execute(
                f'SELECT "table", "from", "to" FROM pragma_foreign_key_list(?, \'{SOURCE}\')', (name,)
            )
            if to in (None, "id")
        }
        integer_id = keys == ["id"] and "INT" in columns["id"].upper()
        tables[name] = _Table(name, columns, integer_id, references)
    if RUNS not in tables:
        raise _Unmergeable("it has no runs table")
    return tables


def _renumbered(table: _Table, column: str, offsets: dict[str, int], new_run: int) -> str:
    """The SQL value of ``column`` in the merged file: the new run id, an id moved by its table's offset, or as
    it was."""
    parent = table.name if column == "id" and table.integer_id else table.references.get(column)
    if column == "run_id" or parent == RUNS:
        return str(new_run)
    if parent in offsets:
        return f"{_quote(column)} + {offsets[parent]}"
    return _quote(column)


def _publish(tmp: Path, target: Path) -> None:
    """Make the complete file at ``tmp`` the merged database: synced, readable as a new file would be, the old
    one's journal files removed (SQLite would apply them to the new one), and renamed over it."""
    with tmp.open("rb+") as written:
        os.fsync(written.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    for suffix in SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            Path(f"{target}{suffix}").unlink()
    os.replace(tmp, target)
    with contextlib.suppress(OSError):  # the rename itself, on file systems that sync directories
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
