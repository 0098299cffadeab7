"""The syscall database: its schema, and a writer that commits in batches.

The file is plain SQLite (WAL mode) made with sqlite-utils, so Datasette, the
sqlite3 shell and ``qppsuite syscalls|processes|query|stats`` all read it.  One
file may hold several runs; every row names its run.

Rows are buffered and written one batch per transaction, processes and
syscalls together, so whatever stops a run (Ctrl-C, a guest panic, a plugin
error, or the host process being killed) leaves a database that is consistent
up to the last committed batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qppsuite.errors import PluginError
from qppsuite.plugins.syscalls_logger.processes import ProcessRows

if TYPE_CHECKING:
    from qppsuite.plugins.syscalls_logger.tables import PluginTable

# sqlite-utils imports numpy only to store numpy values (sqlite_utils/db.py: `try: import numpy`), which this
# database never holds; numpy's import and its BLAS threads were 0.1 s of every traced run's start-up.  So it is
# imported with numpy hidden (an ImportError for it), unless something imported numpy already.
_HIDE_NUMPY = "numpy" not in sys.modules
if _HIDE_NUMPY:
    sys.modules["numpy"] = None  # type: ignore[assignment]
try:
    import sqlite_utils
finally:
    if _HIDE_NUMPY:
        del sys.modules["numpy"]


RUNS = "runs"
PROCESSES = "processes"
THREADS = "threads"
SYSCALLS = "syscalls"

ROW_ID_STRIDE = 1 << 32
"""Process and thread row ids of run ``r`` are ``r * ROW_ID_STRIDE + n`` (n = 1, 2, ...): runs writing one
file at the same time each get their own ids without asking each other, since SQLite hands out run ids
one transaction at a time."""

MAX_RUN_ID = (1 << 63) // ROW_ID_STRIDE - 1
"""The largest run id whose row ids still fit SQLite's signed 64-bit integers (2³¹ - 1); a file whose next
run id is larger (an edited file: SQLite gives ``max(id) + 1``) is refused when the run starts."""

BUSY_TIMEOUT_S = 30.0
"""How long a commit waits for another run's commit to the same file before it fails."""

SCHEMA_VERSION = 6
"""``PRAGMA user_version`` of a database this version writes.  2 added ``threads``, the processes'
``state``/``exit_status`` and the syscalls' ``thread_name``/``signal``, and stores text as plain JSON
strings; 3 added the runs' ``started_from`` and the syscalls' ``found_blocked``; 4 the syscalls'
``virtual_ns`` and the runs' ``logged``; 5 the runs' ``virtual_ns`` (the run's end), ``label``,
``batch_status`` and ``batch_reason`` (a batch's merged database, :mod:`qppsuite.batch.merge`); 6 the processes'
``command``.  A run is written into a file of this version only; the views also read :data:`READ_VERSIONS`'
files (:func:`schema_mismatch`), and files of other versions are refused with a one-line message, never mixed."""

READ_VERSIONS = (5, SCHEMA_VERSION)
"""The versions whose files the views (``qppsuite syscalls|processes|stats|report``) and a batch's merge read:
a version-5 file lacks ``processes.command``, which they take as NULL (unknown); the merge copies its rows
with ``command`` NULL."""

ADDED_COLUMNS: dict[tuple[str, str], int] = {("processes", "command"): 6}
"""(table, column) -> the version that added it, for the columns a readable older file lacks."""

RUN_COLUMNS: dict[str, Any] = {
    "id": int,
    "image": str,
    "image_path": str,
    "kernel_release": str,
    "plugins": str,  # JSON list, in load order
    "qppsuite_version": str,
    "started_at": str,  # ISO 8601 UTC
    "started_from": str,  # the snapshot the run was restored from (ready-<hash>, or a named one); NULL: it booted
    "ended_at": str,
    "stop_reason": str,
    "stop_message": str,
    "insn_count": int,
    "virtual_ns": int,  # the guest's virtual time when the run stopped (ns since power-on); NULL: not recorded
    "syscall_count": int,
    "logged": str,  # which calls syscalls_logger kept: "all", or "command" (the user's command and its descendants)
    # A batch's merged database only (NULL in a run's own file): the job's label, how it went, and why it failed.
    "label": str,
    "batch_status": str,  # "ok", "failed" or "not run"
    "batch_reason": str,  # one line: why the job failed or did not run; NULL when it is ok
}

PROCESS_COLUMNS: dict[str, Any] = {
    "id": int,
    "run_id": int,
    "pid": int,
    "ppid": int,
    "name": str,  # the latest name
    "names": str,  # JSON list: every name the process had, in order (execve changes it)
    "start_time": int,  # task_struct.start_time (ns): tells apart two processes with one pid
    "first_seen_insn": int,
    "last_seen_insn": int,
    "syscall_count": int,
    "state": str,  # at the end of the run, as /proc/PID/stat shows it (R S D T t Z X I); X: exited
    "exit_status": int,  # wait status of the process's end (do_exit's code on its leader), if seen
    # 1: the run's command (the process that ran its script, from that execve on) or a process it created, and so
    # on down; 0: not (the boot, the agent, its file transfers); NULL: unknown (syscalls_logger was not loaded).
    "command": int,
}

THREAD_COLUMNS: dict[str, Any] = {
    "id": int,
    "run_id": int,
    "process_id": int,
    "tid": int,
    "name": str,  # the latest name (comm; prctl(PR_SET_NAME) changes it)
    "names": str,  # JSON list: every name the thread had, in order
    "first_seen_insn": int,
    "last_seen_insn": int,
    "syscall_count": int,
}

SYSCALL_COLUMNS: dict[str, Any] = {
    "id": int,
    "run_id": int,
    "seq": int,  # call order within the run
    "insn_count": int,  # guest instructions executed before the call
    "virtual_ns": int,  # the guest's virtual time at the call (ns since power-on; WFI idle time included)
    "pc": int,  # the SVC instruction
    "thumb": int,
    "process_id": int,
    "pid": int,
    "tid": int,
    "ppid": int,
    "process_name": str,
    "thread_name": str,  # the calling thread's name (comm) at the call
    "number": int,
    "name": str,
    "raw_args": str,  # JSON list of r0-r6
    "args": str,  # JSON object: argument name -> decoded value at the call
    "outputs": str,  # JSON object: output argument name -> value the kernel wrote (successful calls)
    "truncated": str,  # comma-separated names of arguments cut at a limit
    "retval": int,
    "errno": str,
    "returned": int,  # 1 if the call came back to user mode
    "return_insn_count": int,  # guest instructions executed when it came back (or was found not to)
    "ending": str,  # why not: exit, exec, restarted, killed, lost, pending
    "signal": str,  # for ending killed: the signal that killed the thread, if one did
    "child": int,  # 1 for a fork/clone child's own return (retval 0)
    "parent_seq": int,  # for a child's row: the parent's call
    "asid": int,
    "found_blocked": int,  # 1: made before the run's plugins started, found blocked in it then (insn_count: the start)
    "text": str,  # strace-like line
}

SYSCALL_ROW = tuple(column for column in SYSCALL_COLUMNS if column not in ("id", "run_id"))
"""The order of a syscall row's values as :meth:`SyscallDatabase.add` takes them: SYSCALL_COLUMNS without the ids.

The hot path's rows are plain SQLite values (ints, strings, JSON text) that go to ``executemany`` as
they are: sqlite-utils' ``insert_all`` checks every value for JSON on the way, which was the logger's
largest cost per call (a cProfile of bench/syscall_cost.py's run), and a dict per row cost 2 µs more.
"""

INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (SYSCALLS, ("run_id", "seq")),
    (PROCESSES, ("run_id", "pid")),
    (THREADS, ("run_id", "tid")),
)
"""Indexes made with the tables: those a reader of a file still being written needs (``--follow``'s next rows)."""

LOOKUP_INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (SYSCALLS, ("pid",)),
    (SYSCALLS, ("name",)),
    (SYSCALLS, ("process_name",)),
    (SYSCALLS, ("process_id",)),
    (SYSCALLS, ("tid",)),
)
"""Indexes for queries that pick calls by process, thread or name, made as the run ends
(:meth:`SyscallDatabase.end_run`) when the file does not have them yet, and by a batch's merge.  Kept up to
date row by row they cost 3.2 µs of the 8.4 µs a syscall row costs to insert; made at the end over the whole
run, 1.5 µs a row (bench/RESULTS.md, issue 10).  A file read while its first run is written is read without
them (queries scan), and one whose run was killed keeps the tables without them until a run appended to it
ends."""


def create_lookup_indexes(db: sqlite_utils.Database) -> None:
    """:data:`LOOKUP_INDEXES` (those missing), over the rows ``db`` holds: at a run's end, or a merge's."""
    for table, columns in LOOKUP_INDEXES:
        db[table].create_index(columns, if_not_exists=True)  # type: ignore[union-attr]


def create_schema(db: sqlite_utils.Database) -> None:
    """The logger's tables and indexes (those missing) and this version's ``user_version``, in ``db``."""
    db[RUNS].create(RUN_COLUMNS, pk="id", if_not_exists=True)  # type: ignore[union-attr]
    db[PROCESSES].create(  # type: ignore[union-attr]
        PROCESS_COLUMNS, pk="id", foreign_keys=[("run_id", RUNS, "id")], if_not_exists=True
    )
    db[THREADS].create(  # type: ignore[union-attr]
        THREAD_COLUMNS,
        pk="id",
        foreign_keys=[("run_id", RUNS, "id"), ("process_id", PROCESSES, "id")],
        if_not_exists=True,
    )
    db[SYSCALLS].create(  # type: ignore[union-attr]
        SYSCALL_COLUMNS,
        pk="id",
        foreign_keys=[("run_id", RUNS, "id"), ("process_id", PROCESSES, "id")],
        if_not_exists=True,
    )
    for table, columns in INDEXES:
        db[table].create_index(columns, if_not_exists=True)  # type: ignore[union-attr]
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


#: Columns each table must have, this version's and the readers' (a file may hold more).
TABLE_COLUMNS: dict[str, dict[str, Any]] = {
    RUNS: RUN_COLUMNS,
    PROCESSES: PROCESS_COLUMNS,
    THREADS: THREAD_COLUMNS,
    SYSCALLS: SYSCALL_COLUMNS,
}


@functools.cache
def _upsert(table: str, columns: tuple[str, ...]) -> str:
    """The statement that writes a row of ``table`` with ``columns`` (its ``id`` among them), new or changed.

    What sqlite-utils' ``upsert_all`` does (insert, or update those columns of the row with that id), as a
    statement made once: ``upsert_all`` looked the table's columns up at every commit (1.2 µs a syscall row)."""
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
        f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns if c != 'id')}"
    )


def schema_mismatch(conn: sqlite3.Connection, path: Path, *, reading: bool = False) -> str | None:
    """Why a file holding the logger's tables cannot be used by this version (one line), or None.

    Another ``PRAGMA user_version`` (``reading``: one not in :data:`READ_VERSIONS`), or one of the logger's
    tables (those the file has) lacking a column of :data:`TABLE_COLUMNS` that its version has: an edited or
    foreign file with the right table names.  Raises ``sqlite3.DatabaseError`` for a file SQLite cannot read.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (READ_VERSIONS if reading else (SCHEMA_VERSION,)):
        return (
            f"{path} was written by another qppsuite version (schema {version}, this one uses {SCHEMA_VERSION}); "
            "log into a new file, or read it with `qppsuite query`"
        )
    for table, wanted in TABLE_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        lacking = [c for c in wanted if c not in have and ADDED_COLUMNS.get((table, c), 0) <= version]
        if have and lacking:
            return f"{path} is not a qppsuite syscall database: table {table!r} has no column {lacking[0]!r}"
    return None


class SyscallDatabase:
    """One run's writer: the ``runs`` row, buffered process, thread and syscall rows and the rows of the
    plugins' own tables (:meth:`define`), all committed together, one batch per transaction.

    With ``pending`` (the run database, :mod:`.run_database`) the file is opened as the plugins load, in one
    transaction holding the run's row and the tables declared (:attr:`started` False), committed by
    :meth:`begin_run` (as the guest starts, or at the first commit of rows): a run refused while its
    plugins load is rolled back by :meth:`abandon`, leaving an existing file as it was and no new file.
    While it is open the write lock is held, so another run appending to the file waits (up to
    :data:`BUSY_TIMEOUT_S`) until this one's plugins have loaded.
    """

    def __init__(self, path: Path, run: dict[str, Any], *, pending: bool = False) -> None:
        """Open (creating if needed) and start a run, its row committed unless ``pending``; any failure is a
        one-line :class:`PluginError`."""
        self._run = run
        self.path, self.db, self.run_id, self.created = _open_run(path, run, wal_first=not pending)
        self.started = False
        self._renumber()
        if not pending:
            try:
                self.begin_run()
            except (sqlite3.Error, OSError) as exc:
                self.db.close()
                raise PluginError(f"cannot write the syscall database {path}: {exc}") from None
        self._syscalls: list[tuple[Any, ...]] = []
        self.processes = ProcessRows(self.new_process_id, self.new_thread_id)
        self.tables: list[PluginTable] = []
        self.pending = 0  # rows buffered since the last commit, of every table
        self.rows_written = 0

    def _renumber(self) -> None:
        self._next_process_id = self._next_thread_id = self.run_id * ROW_ID_STRIDE + 1
        self._insert = (
            f"INSERT INTO {SYSCALLS} (run_id, {', '.join(SYSCALL_ROW)}) "
            f"VALUES ({self.run_id}, {', '.join('?' * len(SYSCALL_ROW))})"
        )

    def begin_run(self) -> None:
        """Commit the run's row and its tables, once (then the file is in WAL mode); raises sqlite3/OS errors."""
        if self.started:
            return
        self.db.conn.execute("COMMIT")
        self.started = True
        _enable_wal(self.db)  # a no-op unless the run was pending

    def empty(self) -> bool:
        """Nothing buffered: no row of any table, no process or thread row to write."""
        return not self.pending and not self._syscalls and not self.processes.dirty and not self.processes.dirty_threads

    def abandon(self) -> None:
        """Undo a run that has not started (:meth:`begin_run` not called): its row and the tables it created are
        rolled back, the file closed, and removed if this run created it and it is still empty."""
        _abandon(self.db, self.path, self.created)

    def move(self, path: Path) -> None:
        """Start this run, not started and with nothing buffered, in ``path`` instead, with the tables declared
        so far; a failure (``path`` cannot be opened, or has another version of a table) is a one-line
        :class:`PluginError`, and the run stays where it was."""
        assert not self.started and self.empty()
        before = (self.path, self.db, self.run_id, self.created)
        self.path, self.db, self.run_id, self.created = _open_run(path, self._run, wal_first=False)
        try:
            for table in self.tables:
                table.renumber(self.run_id, self.run_id * ROW_ID_STRIDE + 1)
                with self._savepoint():
                    table.create(self.db)
        except (PluginError, sqlite3.Error, OSError) as exc:
            _abandon(self.db, self.path, self.created)
            self.path, self.db, self.run_id, self.created = before
            for table in self.tables:
                table.renumber(self.run_id, self.run_id * ROW_ID_STRIDE + 1)
            raise PluginError(f"{path}: {exc}") from None
        _abandon(before[1], before[0], before[3])
        self._renumber()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken first, so another run writing the same
        file makes this wait (up to the connection's timeout) instead of failing on a stale read snapshot."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def new_process_id(self) -> int:
        process_id = self._next_process_id
        self._next_process_id += 1
        return process_id

    def new_thread_id(self) -> int:
        thread_id = self._next_thread_id
        self._next_thread_id += 1
        return thread_id

    def add(self, row: tuple[Any, ...], process: dict[str, Any] | None, thread: dict[str, Any] | None = None) -> int:
        """Buffer a syscall row (its values in :data:`SYSCALL_ROW` order) and the (updated) rows of its process
        and thread; returns the rows buffered, of every table."""
        self._syscalls.append(row)
        if process is not None:
            self.processes.dirty[process["id"]] = process
        if thread is not None:
            self.processes.dirty_threads[thread["id"]] = thread
        return self.buffered()

    def buffered(self) -> int:
        """Count one more row buffered (a plugin table's); returns the rows buffered, of every table."""
        self.pending += 1
        return self.pending

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        """A transaction of its own once the run started; before, a savepoint in the run's opening transaction."""
        if self.started:
            with self._transaction():
                yield
            return
        conn = self.db.conn
        conn.execute("SAVEPOINT define")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK TO define")
            conn.execute("RELEASE define")
            raise
        conn.execute("RELEASE define")

    def define(self, table: PluginTable) -> None:
        """Create a plugin's table (unless the file has it) and write its rows at every commit from now on."""
        with self._savepoint():
            table.create(self.db)
        self.tables.append(table)

    def flush(self) -> None:
        """Commit everything buffered in one transaction: processes and threads first, so that the rows
        referring to them hold, then the system calls, then the plugins' tables in the order defined."""
        processes, threads = self.processes.take_dirty()
        if not self._syscalls and not processes and not threads and not self.pending:
            return
        self.begin_run()
        rows, self._syscalls = self._syscalls, []
        self.pending = 0
        with self._transaction():
            for table, changed in ((PROCESSES, processes), (THREADS, threads)):
                for entry in changed:
                    entry["run_id"] = self.run_id
                    self.db.conn.execute(_upsert(table, tuple(entry)), tuple(entry.values()))
            if rows:
                self.db.conn.executemany(self._insert, rows)
            for plugin_table in self.tables:
                plugin_table.write(self.db)
        self.rows_written += len(rows)

    def discard(self) -> None:
        """Drop what is buffered (after a failed commit: the disk will not take it)."""
        self._syscalls = []
        self.processes.take_dirty()
        for table in self.tables:
            table.discard()
        self.pending = 0

    def end_run(self, fields: dict[str, Any]) -> None:
        """Flush and record how the run ended (``ended_at``, now unless given; stop reason; counts)."""
        self.flush()
        self.begin_run()
        fields = {"ended_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), **fields}
        with self._transaction():
            self.db[RUNS].update(self.run_id, {"syscall_count": self.rows_written, **fields})  # type: ignore[union-attr]
        with self._transaction():
            create_lookup_indexes(self.db)

    def close(self) -> None:
        self.db.close()


def _enable_wal(db: sqlite_utils.Database) -> None:
    """``PRAGMA journal_mode = WAL``, retried for up to :data:`BUSY_TIMEOUT_S`: when another run switches a new
    file at the same moment, SQLite answers "database is locked" at once, without waiting on the busy timeout
    (1 to 3 in 100 new files that two runs opened together)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def _open_run(path: Path, run: dict[str, Any], *, wal_first: bool) -> tuple[Path, sqlite_utils.Database, int, bool]:
    """Open ``path`` (creating it if needed) and, in a transaction left open, check its schema, create the
    logger's tables and insert the run's row: (path, database, run id, whether the file was created).
    ``wal_first``: switch the file to WAL before (else :meth:`SyscallDatabase.begin_run` does, after the
    commit, so that a rolled-back run leaves a file as it was).  Any failure leaves the rows as they were
    and is a one-line :class:`PluginError`."""
    created = not path.exists()
    try:
        db = sqlite_utils.Database(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None))
    except (sqlite3.Error, OSError) as exc:
        raise PluginError(f"cannot write the syscall database {path}: {exc}") from None
    try:
        db.execute("PRAGMA foreign_keys = ON")
        if wal_first:
            _enable_wal(db)
        db.conn.execute("BEGIN IMMEDIATE")
        ours = set(TABLE_COLUMNS).intersection(db.table_names())
        mismatch = schema_mismatch(db.conn, path) if ours else None
        if mismatch is not None:
            raise PluginError(mismatch)
        create_schema(db)
        run_id = int(db[RUNS].insert(run).last_pk)  # type: ignore[union-attr,arg-type]
        if run_id > MAX_RUN_ID:
            raise PluginError(
                f"{path}: the next run would be run {run_id}, but this version's row ids fit runs up "
                f"to {MAX_RUN_ID} only; log into a new file"
            )
    except BaseException as exc:
        _abandon(db, path, created)
        if isinstance(exc, (sqlite3.Error, OSError, UnicodeDecodeError)):  # the last: a damaged file's schema text
            raise PluginError(f"cannot write the syscall database {path}: {exc}") from None
        raise
    return path, db, run_id, created


def _abandon(db: sqlite_utils.Database, path: Path, created: bool) -> None:
    """Roll back what is not committed, close, and remove ``path`` if it was created for this and is empty
    (what a rolled-back new file is; another run that wrote into it meanwhile keeps it)."""
    try:
        if db.conn.in_transaction:
            db.conn.execute("ROLLBACK")
    finally:
        db.close()
    with contextlib.suppress(OSError):  # gone already, or not ours to remove
        if created and path.stat().st_size == 0:
            path.unlink()
