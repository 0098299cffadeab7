"""Reading a syscall database: the queries behind ``qppsuite syscalls|processes|query|stats``.

Everything opens the file read-only, so a query can never change a log: SQLite's
``immutable`` mode when no run is writing it (no ``-wal`` file), which creates no
``-wal``/``-shm`` files beside it, else ``mode=ro`` (beside a killed or running run's
``-wal`` and ``-shm``, nothing new; a ``-wal`` copied without its ``-shm`` gets one, since
SQLite reads a WAL only through it); ``PRAGMA query_only``; and an
authorizer that lets a statement read and nothing else (no ATTACH, no VACUUM INTO, no
PRAGMA that changes anything).  A missing, foreign, corrupt or differently shaped
file is a one-line :class:`LogDatabaseError` rather than a traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from qppsuite.errors import QppsuiteError
from qppsuite.plugins.syscalls import table
from qppsuite.plugins.syscalls.values import HEX_COLUMN_PREFIX, column_text
from qppsuite.plugins.syscalls_logger import fd_paths
from qppsuite.plugins.syscalls_logger.database import (
    PROCESSES,
    RUNS,
    SYSCALLS,
    THREADS,
    schema_mismatch,
)

#: Columns ``qppsuite syscalls`` returns, in order.
SYSCALL_FIELDS = (
    "run_id",
    "seq",
    "insn_count",
    "virtual_ns",
    "pc",
    "pid",
    "tid",
    "ppid",
    "process_id",
    "process_name",
    "thread_name",
    "number",
    "name",
    "raw_args",
    "args",
    "outputs",
    "truncated",
    "retval",
    "errno",
    "returned",
    "return_insn_count",
    "ending",
    "signal",
    "child",
    "parent_seq",
    "asid",
    "thumb",
    "text",
)
#: Columns that hold JSON: ``--format json`` nests them, csv flattens them.
JSON_FIELDS = ("raw_args", "args", "outputs")


class LogDatabaseError(QppsuiteError):
    """A syscall database that is missing, is not SQLite, lacks the tables, or refused a query."""


#: Authorizer actions a read may need (sqlite3 module constants); everything else is denied.
_READ_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
#: PRAGMAs that only report, whatever their argument (it names a table or index, or limits the report).
_REPORTING_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
#: PRAGMAs that report a setting when given no value (``PRAGMA user_version``) and set it when given one.
_SETTING_PRAGMAS = frozenset({"user_version", "schema_version", "data_version", "page_count", "page_size"})


def _authorize(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    """sqlite3 authorizer: reads only.  ``arg1``/``arg2`` are the table and column, or the PRAGMA and its value."""
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (arg1 in _REPORTING_PRAGMAS or (arg1 in _SETTING_PRAGMAS and arg2 is None)):
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_UPDATE and arg1 == "sqlite_master":
        # Asked while a SELECT declares a table-valued function's table (json_each, json_tree, pragma_table_info):
        # SQLite 3.40 authorizes an UPDATE of the schema's columns for it.  A real UPDATE of sqlite_master
        # still fails: SQLite forbids it without writable_schema (denied above), and the file is open read-only.
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _text(data: bytes) -> str:
    """A TEXT value.  The writers store UTF-8 (guest text that is not UTF-8 as ``{"hex": ...}``'s JSON text,
    :func:`qppsuite.plugins.syscalls.values.column_text`); other bytes, which only an edited or damaged file
    holds, are read as that same JSON text, so the views show them once escaped (:func:`stored_text`)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return json.dumps({"hex": data.hex()})


def readonly_uri(path: Path) -> str:
    """The SQLite URI that opens ``path`` read-only: with no -wal file nothing is being written, and immutable
    mode reads without locks or -shm/-wal files; else ``mode=ro``, which reads the rows the -wal holds."""
    writing = Path(f"{path}-wal").exists()
    return f"file:{quote(str(path.resolve()))}?{'mode=ro' if writing else 'mode=ro&immutable=1'}"


def open_readonly(path: Path, *, any_version: bool = False) -> sqlite3.Connection:
    """A read-only connection to a syscall database, checked to have the logger's tables and columns.

    ``any_version``: a file of another schema version is read too, as its tables are (``qppsuite query``).
    """
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file" if not path.exists() else "not a regular file"
        raise LogDatabaseError(f"no syscall database at {path}: {what}")
    conn = sqlite3.connect(readonly_uri(path), uri=True)
    conn.row_factory = sqlite3.Row
    conn.text_factory = _text  # the writer stores UTF-8; an edited or damaged file may hold anything
    try:
        conn.execute("PRAGMA query_only = ON")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = [t for t in (RUNS, PROCESSES, THREADS, SYSCALLS) if t not in tables]
        # Another version's file (version 1 had no threads table) is named as such before its tables are.
        mismatch = schema_mismatch(conn, path, reading=True) if len(missing) < 4 and not any_version else None
        if mismatch is not None:
            raise LogDatabaseError(mismatch)
        if missing:
            found = ", ".join(sorted(tables)) or "none"
            raise LogDatabaseError(
                f"{path} is not a qppsuite syscall database: no table {missing[0]!r} (tables: {found})"
            )
    except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:  # the latter: SQLite's message quotes a bad schema
        conn.close()
        raise LogDatabaseError(f"{path} is not an SQLite database, or is damaged ({exc})") from None
    except LogDatabaseError:
        conn.close()
        raise
    conn.set_authorizer(_authorize)
    return conn


#: ``--run all``: every run of the file (the views that can show several).
ALL_RUNS = "all"
#: How many ids or labels a message lists before it says how many there are.
LISTED = 10


def _listing(values: list[str]) -> str:
    shown = ", ".join(values[:LISTED])
    return shown if len(values) <= LISTED else f"{shown}, … ({len(values)} in all)"


ID_PREFIX = "id:"
LABEL_PREFIX = "label:"
"""``--run id:7`` and ``--run label:7``: a run by its id or by its label only, where the two could be read both
ways (a batch of numbered samples; a label ``all``)."""


def select_run(conn: sqlite3.Connection, run: int | str | None, *, shown: Callable[[str], str] | None = None) -> int:
    """The run to show: the one asked for, or the latest (a batch's merged database of several runs has no
    latest worth showing: None is one line asking for one).  ``shown``: how the views show a label (their
    escaping of control characters): a label is found as given raw or as shown.

    ``run`` is a run id, or text: digits are a run id when the file has that run (one line when another run is
    labelled so), anything else (or digits that are no run's id) a label (``runs.label``, which a batch's merged
    database gives each job's run); ``id:N`` and ``label:TEXT`` say which.  An unknown
    id or label is one :class:`LogDatabaseError` line naming the runs that exist, or the closest label.
    """
    ids = [row[0] for row in conn.execute(f"SELECT id FROM {RUNS} ORDER BY id")]
    if not ids:
        raise LogDatabaseError("the database holds no runs")
    if run is None and len(ids) > 1 and is_batch(conn):  # its latest run is just the batch's last job
        raise LogDatabaseError(
            f"this is a batch's merged database of {len(ids)} runs: give --run with a run's label or id "
            "(`qppsuite stats` lists them)"
        )
    if run is None:
        return int(ids[-1])
    if isinstance(run, str):
        if not _utf8(run):  # a command line's bytes that are not UTF-8: no label is (SQLite's text is UTF-8)
            raise LogDatabaseError(f"--run {run}: a run's id or label is UTF-8 text; this is not")
        if run.startswith(LABEL_PREFIX):  # a label, whatever it looks like: label:all, label:7
            return _labelled(conn, run.removeprefix(LABEL_PREFIX), ids, shown)
        if run.startswith(ID_PREFIX) and run.removeprefix(ID_PREFIX).isdecimal():
            return select_run(conn, int(run.removeprefix(ID_PREFIX)))
        if run == ALL_RUNS:
            raise LogDatabaseError("--run all: this view shows one run; give its id or its label")
        if run.isdecimal() and run.isascii() and int(run) in ids:
            other = conn.execute(f"SELECT id FROM {RUNS} WHERE label = ? AND id != ?", (run, int(run))).fetchone()
            if other is not None:  # a corpus of numbered samples: the id and another run's label clash
                raise LogDatabaseError(
                    f"--run {run} is run {run}'s id and run {other[0]}'s label: "
                    f"give --run {ID_PREFIX}{run} or --run {LABEL_PREFIX}{run}"
                )
            return int(run)
        return _labelled(conn, run, ids, shown)
    if run not in ids:
        raise LogDatabaseError(f"no run {run} in the database; runs: {_listing(list(map(str, ids)))}")
    return run


def _utf8(text: str) -> bool:
    """Whether ``text`` can be UTF-8 (no lone surrogate: the bytes ``surrogateescape`` kept of a command line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _labelled(conn: sqlite3.Connection, label: str, ids: list[int], shown: Callable[[str], str] | None) -> int:
    """The run labelled ``label`` (raw, or as ``shown`` shows a label); none, or several, is one line (with the
    closest label, if one is close, as shown)."""
    named = [row[0] for row in conn.execute(f"SELECT id FROM {RUNS} WHERE label = ? ORDER BY id", (label,))]
    labelled = conn.execute(f"SELECT id, label FROM {RUNS} WHERE typeof(label) = 'text' ORDER BY id").fetchall()
    if not named and shown is not None:
        named = [row[0] for row in labelled if shown(row[1]) == label]
    if len(named) == 1:
        return int(named[0])
    if named:
        raise LogDatabaseError(f"runs {_listing(list(map(str, named)))} are all labelled {label!r}: give the run's id")
    labels = [row[1] if shown is None else shown(row[1]) for row in labelled]
    if not labels:
        what = f"run {label}" if label.isdecimal() else f"run labelled {label!r} (its runs have no labels)"
        raise LogDatabaseError(f"no {what} in the database; runs: {_listing(list(map(str, ids)))}")
    close = difflib.get_close_matches(label, labels, n=1)
    # quoted as typed, not repr's escaping: the hint must be what --run takes
    hint = f"did you mean '{close[0]}'?" if close else f"labels: {_listing([f'{name!s}' for name in labels])}"
    what = f"no run {label} and no run labelled '{label}'" if label.isdecimal() else f"no run labelled '{label}'"
    runs = f"; runs: {_listing(list(map(str, ids)))}" if label.isdecimal() else ""
    raise LogDatabaseError(f"{what} in the database{runs}; {hint}")


def select_runs(conn: sqlite3.Connection, run: str | None, *, shown: Callable[[str], str] | None = None) -> list[int]:
    """``--run all``: every run of the file, in id order; else the one run :func:`select_run` picks."""
    if run == ALL_RUNS:
        ids = [int(row[0]) for row in conn.execute(f"SELECT id FROM {RUNS} ORDER BY id")]
        if not ids:
            raise LogDatabaseError("the database holds no runs")
        return ids
    return [select_run(conn, run, shown=shown)]


def run_names(conn: sqlite3.Connection) -> dict[int, str]:
    """How each run is named in a view of several: its label, or its id when it has none."""
    return {
        int(run): label if isinstance(label, str) else str(run)
        for run, label in conn.execute(f"SELECT id, label FROM {RUNS} ORDER BY id")
    }


def run_label(conn: sqlite3.Connection, run: int) -> str | None:
    """The run's label, if it has one (a batch's merged database)."""
    row = conn.execute(f"SELECT label FROM {RUNS} WHERE id = ?", (run,)).fetchone()
    return row[0] if row is not None and isinstance(row[0], str) else None


def has_rows(conn: sqlite3.Connection, run: int) -> bool:
    """Whether the run wrote rows into a database: False for a batch's job that failed before its run made one,
    or never ran (its ``runs`` row is the merge's: no ``plugins``, which every run writes as it starts)."""
    row = conn.execute(f"SELECT plugins, batch_status FROM {RUNS} WHERE id = ?", (run,)).fetchone()
    return row is None or row["batch_status"] is None or row["plugins"] is not None


def is_batch(conn: sqlite3.Connection) -> bool:
    """Whether the file is a batch's merged database: its runs have a ``batch_status``."""
    return conn.execute(f"SELECT 1 FROM {RUNS} WHERE batch_status IS NOT NULL LIMIT 1").fetchone() is not None


#: The columns of :func:`batch_summary`'s rows, in order.
SUMMARY_FIELDS = ("run", "label", "status", "reason", "syscalls", "processes", "stop_reason")


def batch_summary(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """One row per run (``qppsuite stats`` of a batch): id, label, batch status and reason, system calls logged
    (None where syscalls_logger did not record them), processes (None for a run with no database: a job that
    failed before its run started, or never ran) and stop reason."""
    return [
        dict(row)
        for row in conn.execute(
            f"SELECT r.id AS run, r.label, r.batch_status AS status, r.batch_reason AS reason, "
            f"CASE WHEN r.syscall_count IS NULL AND s.calls IS NULL THEN NULL ELSE coalesce(s.calls, 0) END "
            f"AS syscalls, CASE WHEN r.plugins IS NULL THEN NULL ELSE coalesce(p.count, 0) END AS processes, "
            f"r.stop_reason "
            f"FROM {RUNS} r "
            f"LEFT JOIN (SELECT run_id, COUNT(*) AS calls FROM {SYSCALLS} GROUP BY run_id) s ON s.run_id = r.id "
            f"LEFT JOIN (SELECT run_id, COUNT(*) AS count FROM {PROCESSES} GROUP BY run_id) p ON p.run_id = r.id "
            f"ORDER BY r.id"
        )
    ]


def run_end(conn: sqlite3.Connection, run: int) -> str | None:
    """How a run ended, for a header line, when it was not a power-off: ``never ended``, ``ended diverged``...

    From the ``runs`` row: no ``ended_at`` means the run was killed (or is still being written);
    ``stop_reason`` is the run's stop kind (:class:`qppsuite.core.events.StopReason`), ``diverged`` for
    a replay that did not reproduce its recording.  A batch's job that never ran is ``not run``.
    """
    row = conn.execute(f"SELECT ended_at, stop_reason, batch_status FROM {RUNS} WHERE id = ?", (run,)).fetchone()
    if row is not None and row["batch_status"] == "not run":
        return "not run"
    if row is None or row["ended_at"] is None:
        return "never ended"
    if row["stop_reason"] in (None, "poweroff"):
        return None
    return f"ended {row['stop_reason']}"


def run_warning(conn: sqlite3.Connection, run: int) -> str | None:
    """What a reader must know before trusting a run's rows (one line): it never ended, or not normally.

    A run without ``ended_at`` was killed (or is still being written): its rows stop at its last
    committed batch.  A replay that diverged from its recording ends ``diverged``.  A batch's job that failed
    or did not run is said so, with the batch's reason.
    """
    row = conn.execute(f"SELECT label, batch_status, batch_reason FROM {RUNS} WHERE id = ?", (run,)).fetchone()
    if row is not None and row["batch_status"] in ("failed", "not run"):  # a batch's job: the batch says why
        name = f"run {run}" + (f" [{row['label']}]" if isinstance(row["label"], str) else "")
        return f"{name} {row['batch_status']}: {row['batch_reason'] or 'no reason recorded'}"
    end = run_end(conn, run)
    if end is None:
        return None
    if end == "never ended":
        return f"run {run} never ended: it was killed or is still running; rows stop at its last committed batch"
    message = conn.execute(f"SELECT stop_message FROM {RUNS} WHERE id = ?", (run,)).fetchone()[0]
    return f"run {run} {end}: {message or ''}".rstrip(": ")


#: ``--since``/``--until`` values: an instruction count, or a virtual time with its unit.
_POINT = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ns|us|ms|s)?")
#: Nanoseconds per unit of a virtual time.
_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}


def seconds(ns: int) -> str:
    """A virtual time in ns (at least 0) as seconds to the nanosecond, as the views show it (``5.947431128``),
    which ``--since``/``--until`` read back exactly (:func:`parse_point`)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


@dataclass(frozen=True)
class Point:
    """A moment of a run: ``column`` is ``insn_count`` (instructions since power-on) or ``virtual_ns``."""

    column: str
    value: int


def parse_point(option: str, text: str) -> Point:
    """``120000000`` (an instruction count since power-on) or ``1.5s``/``250ms``/``40us``/``900ns`` (the guest's
    virtual time since power-on, the ``virtual_ns`` column, read exactly and, when finer than a nanosecond,
    rounded into the range: down for ``--until``, up for ``--since``); anything else is one
    :class:`LogDatabaseError` line."""
    match = _POINT.fullmatch(text.strip().replace("_", ""))
    if match is None or (match["unit"] is None and "." in match["number"]):
        raise LogDatabaseError(
            f"{option}: {text!r} is neither an instruction count (120000000) nor a virtual time (1.5s, 250ms, "
            f"40us, 900ns)"
        )
    if match["unit"] is None:
        point = Point("insn_count", int(match["number"]))
    else:
        # exact decimal arithmetic: a time copied from the table (nanoseconds: 5.947431128) is that very ns; a
        # finer one is rounded inwards (--until 5.9878396915s does not take the call at ...692)
        rounding = ROUND_FLOOR if option == "--until" else ROUND_CEILING
        ns = (Decimal(match["number"]) * _UNITS[match["unit"]]).to_integral_value(rounding=rounding)
        point = Point("virtual_ns", int(ns))
    if point.value > SQLITE_MAX_INTEGER:
        raise LogDatabaseError(
            f"{option}: {text!r} is beyond any run (at most {SQLITE_MAX_INTEGER} instructions or ns)"
        )
    return point


SQLITE_MAX_INTEGER = (1 << 63) - 1
"""The largest integer SQLite stores (a signed 64-bit value): an option beyond it matches nothing it holds."""


def check_names(conn: sqlite3.Connection, run: int | None, names: list[str]) -> tuple[str, ...]:
    """``--name`` values (each may be a comma-separated list), checked: a name neither in the ARM EABI table
    (:mod:`qppsuite.plugins.syscalls.table`) nor among the run's calls (``run`` None: any run's) is one line
    naming the closest ones."""
    wanted = tuple(dict.fromkeys(part.strip() for item in names for part in item.split(",") if part.strip()))
    if not wanted and names:
        raise LogDatabaseError("--name: no system call named (give e.g. --name openat,read)")
    known = {spec.name for spec in table.SYSCALLS.values()}
    for name in wanted:
        if name in known:
            continue
        where, params = ("", ()) if run is None else (" WHERE run_id = ?", (run,))
        logged = {row[0] for row in conn.execute(f"SELECT DISTINCT name FROM {SYSCALLS}{where}", params)}
        if name in logged:
            continue
        candidates = sorted(known | {n for n in logged if isinstance(n, str)})
        close = [name.lower()] if name.lower() in known else difflib.get_close_matches(name, candidates, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise LogDatabaseError(f"no such syscall: {name}{hint}")
    return wanted


def _of_run(run: int | None) -> tuple[str, tuple[int, ...], str]:
    """A check's condition on the run (``run`` None: any run), its parameters, and the run as a message names it."""
    return ("", (), "any run") if run is None else ("run_id = ? AND ", (run,), f"run {run}")


def check_span(conn: sqlite3.Connection, run: int | None, since: Point | None, until: Point | None) -> None:
    """``--since`` and ``--until``, checked against the calls' span: a moment after the last call, or before the
    first, is one line giving the span (no call can be there)."""
    where, params, which = _of_run(run)
    for option, point in (("--since", since), ("--until", until)):
        if point is None:
            continue
        low, high = conn.execute(
            f"SELECT min({point.column}), max({point.column}) FROM {SYSCALLS} WHERE {where}1", params
        ).fetchone()
        if low is None:
            return
        outside = point.value > high if option == "--since" else point.value < low
        if outside:
            unit = (
                (lambda v: f"{v:,} instructions")
                if point.column == "insn_count"
                else (lambda v: f"{seconds(v)} s")  # as the table, to the ns
            )
            raise LogDatabaseError(
                f"{option}: no call of {which} is {'after' if option == '--since' else 'before'} "
                f"{unit(point.value)}; its calls span {unit(low)} to {unit(high)}"
            )


def check_caller(conn: sqlite3.Connection, run: int | None, column: str, value: int | None) -> int | None:
    """A ``--pid`` or ``--tid`` (``column``), checked: one no call of the run (None: of any run) was made by is
    one line."""
    if value is None:
        return None
    where, params, which = _of_run(run)
    made = conn.execute(f"SELECT 1 FROM {SYSCALLS} WHERE {where}{column} = ? LIMIT 1", (*params, value))
    if made.fetchone() is None:
        hint = ""
        if column == "pid":  # strace -f prints each thread's id, which is a pid only for a process's first thread
            query = f"SELECT COUNT(*) FROM {SYSCALLS} WHERE {where}tid = ?"
            (count,) = conn.execute(query, (*params, value)).fetchone()
            hint = f"; thread {value} made {count} call{'s' if count > 1 else ''} (--tid {value})" if count else ""
        raise LogDatabaseError(f"--{column}: no call of {which} was made by {column} {value}{hint}")
    return value


def check_process(
    conn: sqlite3.Connection, run: int | None, name: str | None, *, shown: Callable[[str], str] | None = None
) -> str | None:
    """A ``--process`` name, checked, as the columns store it: the name of a process or thread the run's calls
    (``run`` None: any run's) were made under (``process_name`` or ``thread_name``: a thread renamed by
    ``prctl(PR_SET_NAME)``, as ``ps -T`` shows it), spelled as the views show it (:func:`shown_bytes`: a
    backslash doubled, a byte that is not UTF-8 as ``\\xff``; ``shown``: the view's own escaping of the rest,
    such as control characters), or given raw (the shown spelling is tried first).  Any
    other name is one line naming the names it may mean (a longer one it starts, as ``python3`` for ``python``,
    the kernel's 15-byte cut of it, as ``systemd-journal``, or the closest spellings)."""
    if name is None:
        return None
    given = shown_bytes(name.encode("utf-8", "surrogateescape"))  # a raw argument's bytes, as the views show them
    if not given:
        raise LogDatabaseError("--process: give a process name (as `qppsuite processes` shows it)")
    where, params, which = _of_run(run)
    spellings: dict[str, Any] = {}
    for column in ("process_name", "thread_name"):
        query = f"SELECT DISTINCT {column} FROM {SYSCALLS} WHERE {where}{column} IS NOT NULL"
        for (stored,) in conn.execute(query, params):
            text = str(stored_text(stored))
            spellings.setdefault(text, stored)
            if shown is not None:
                spellings.setdefault(shown(text), stored)
    for spelling in (name, given):
        if spelling in spellings:
            return str(spellings[spelling])
    typed = given if given != name.replace("\\", "\\\\") else name  # raw bytes that are not UTF-8: as shown
    names = sorted(spellings)
    close = [n for n in names if n.startswith(typed) or (len(n) == TASK_COMM_LEN - 1 and typed.startswith(n))]
    close = close or difflib.get_close_matches(typed, names, n=3)
    # a name may be in the spellings twice (as stored, and as the view shows it): suggest it once, as shown
    suggested = list(dict.fromkeys(shown(n) if shown is not None else n for n in close))
    hint = f"; did you mean {' or '.join(suggested[:3])}?" if suggested else ""
    raise LogDatabaseError(f"--process: no call of {which} was made by a process named {typed}{hint}")


TASK_COMM_LEN = 16
"""include/linux/sched.h: a task's name (comm) holds 15 bytes and a NUL; exec and prctl cut longer names."""


def follow(conn: sqlite3.Connection, run: int, pid: int) -> list[int]:
    """Process row ids of every process of the run that had ``pid`` (a reused pid is several) and of all their
    descendants, as :func:`process_tree` links them; none is one :class:`LogDatabaseError` line."""
    stack = [node for node in _walk(process_tree(conn, run)) if node.pid == pid]
    if not stack:
        raise LogDatabaseError(f"--follow: no process {pid} in run {run}")
    ids: list[int] = []
    while stack:
        node = stack.pop()
        if node.id not in ids:
            ids.append(node.id)
            stack.extend(node.children)
    return ids


def _walk(roots: list[ProcessNode]) -> Iterator[ProcessNode]:
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.children)


@dataclass(frozen=True)
class SyscallFilter:
    """What ``qppsuite syscalls`` selects; every field narrows the result.

    ``run``: this run's calls (None: every run's, run by run); ``names``: any of these calls;
    ``since``/``until``: from/up to these moments (both included); ``process_ids``: these process rows only
    (``--follow``).
    """

    run: int | None
    pid: int | None = None
    tid: int | None = None
    process: str | None = None
    names: tuple[str, ...] = ()
    failed: bool = False
    limit: int | None = None
    since: Point | None = None
    until: Point | None = None
    process_ids: tuple[int, ...] | None = None


def _where(where: SyscallFilter) -> tuple[str, list[Any]]:
    clauses = ["1"] if where.run is None else ["run_id = ?"]
    params: list[Any] = [] if where.run is None else [where.run]
    for column, value in (("pid", where.pid), ("tid", where.tid)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.process is not None:  # the process's name, or the calling thread's own (prctl)
        clauses.append("(process_name = ? OR thread_name = ?)")
        params.extend((where.process, where.process))
    if where.names:
        clauses.append(f"name IN ({', '.join('?' * len(where.names))})")
        params.extend(where.names)
    if where.failed:
        clauses.append("errno IS NOT NULL")
    if where.since is not None:
        clauses.append(f"{where.since.column} >= ?")
        params.append(where.since.value)
    if where.until is not None:
        clauses.append(f"{where.until.column} <= ?")
        params.append(where.until.value)
    if where.process_ids is not None:
        clauses.append(f"process_id IN ({', '.join('?' * len(where.process_ids))})")
        params.extend(where.process_ids)
    return " AND ".join(clauses), params


#: Columns the fd paths need (besides ``seq``), so a view asking for them reads them.
FD_FIELDS = ("process_id", "name", "args", "retval", "outputs")


def iter_syscalls(
    conn: sqlite3.Connection,
    where: SyscallFilter,
    *,
    files: bool = False,
    fields: tuple[str, ...] = SYSCALL_FIELDS,
) -> Iterator[dict[str, Any]]:
    """Syscall rows in call order, one at a time (a view streams them), as dicts of ``fields`` (a subset of
    :data:`SYSCALL_FIELDS`; a view that shows a few reads only those).

    ``files``: each row also gets ``fds``, its fd arguments -> the path each named then, and ``fd_path``,
    what a returned fd names (:mod:`~qppsuite.plugins.syscalls_logger.fd_paths`; None where unknown).
    With ``where.run`` None, the calls of every run that has one, run after run (``--limit`` counts them all).
    """
    if where.run is None:
        yield from _every_run(conn, where, files, fields)
        return
    if files:
        fields = tuple(dict.fromkeys((*fields, "seq", *FD_FIELDS)))
    clauses, params = _where(where)
    sql = f"SELECT {', '.join(fields)} FROM {SYSCALLS} WHERE {clauses} ORDER BY seq"
    if where.limit is not None:
        sql += " LIMIT ?"
        params.append(where.limit)
    cursor = conn.execute(sql, params)
    cursor.row_factory = None  # tuples, zipped with the names: a third of the time of sqlite3.Row's dict()
    rows = (dict(zip(fields, row, strict=True)) for row in cursor)
    if not files:
        yield from rows
        return
    recorded = _recorded_files(conn, where.run)
    named = list(_named_fds(conn, where.run))
    kernel = {}
    if any(path.startswith(fd_paths.MADE) for *_, path in named):  # a pipe's or socket's kernel name, maybe
        kernel = fd_paths.kernel_names(recorded, map(dict, _changes(conn, where.run)), named)
    tables = fd_paths.FdTables(recorded, kernel)
    changes = _changes(conn, where.run)
    pending = changes.fetchone()
    back = None
    if named:
        touching = tuple(dict.fromkeys(fd_paths.TOUCHING))
        back = fd_paths.Lookback.build(
            named,
            conn.execute(
                f"SELECT seq, process_id, name, args, outputs, retval FROM {SYSCALLS} "
                f"WHERE run_id = ? AND name IN ({', '.join('?' * len(touching))}) ORDER BY seq",
                (where.run, *touching),
            ),
        )
    namings = iter(named)
    naming = next(namings, None)
    for row in rows:
        # What happened before the call, in order: a naming at a call holds during it, before its change.
        while True:
            if naming is not None and naming[0] <= row["seq"] and (pending is None or naming[0] <= pending["seq"]):
                tables.name(*naming[1:], naming[0])
                naming = next(namings, None)
            elif pending is not None and pending["seq"] < row["seq"]:
                tables.apply(dict(pending))
                pending = changes.fetchone()
            else:
                break
        row["fds"] = (
            fd_paths.call_fds(tables, row, _args(row["args"]), back) if fd_paths.fd_arguments(row["name"]) else {}
        )
        while pending is not None and pending["seq"] == row["seq"]:
            tables.apply(dict(pending))
            pending = changes.fetchone()
        returned = fd_paths.returns_fd(row["name"]) and isinstance(row["retval"], int) and row["retval"] >= 0
        row["fd_path"] = tables.path(row["process_id"], row["retval"]) if returned else None
        for label, fd in fd_paths.made_fds(row):  # pipe2([5<pipe:[9728]>, 6<pipe:[9728]>]) in strace -y
            if (path := tables.path(row["process_id"], fd)) is not None:
                row["fds"][label] = path
        yield row


def _changes(conn: sqlite3.Connection, run: int) -> sqlite3.Cursor:
    """The run's calls that change an fd table and its fork children's returns, in seq order, as
    :meth:`~qppsuite.plugins.syscalls_logger.fd_paths.FdTables.apply` reads them."""
    names = tuple(fd_paths.changing_names())
    return conn.execute(
        f"SELECT seq, process_id, name, args, outputs, retval, child, parent_seq, ending FROM {SYSCALLS} "
        f"WHERE run_id = ? AND (child = 1 OR name IN ({', '.join('?' * len(names))})) ORDER BY seq",
        (run, *names),
    )


def _every_run(
    conn: sqlite3.Connection, where: SyscallFilter, files: bool, fields: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    """:func:`iter_syscalls` of each run with a call ``where`` selects (found first, in one query over every run:
    a batch's runs without one cost nothing more), in run order, at most ``where.limit`` in all."""
    clauses, params = _where(where)
    found = conn.execute(f"SELECT DISTINCT run_id FROM {SYSCALLS} WHERE {clauses} ORDER BY 1", params)
    runs = [row[0] for row in found]
    left = where.limit
    for run in runs:
        if left == 0:
            return
        for row in iter_syscalls(conn, replace(where, run=run, limit=left), files=files, fields=fields):
            yield row
            if left is not None:
                left -= 1


def _args(text: str | None) -> dict[str, Any]:
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    """Whether the file has the table ``name`` (a plugin's, written only by runs that loaded it)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _named_fds(conn: sqlite3.Connection, run: int) -> Iterator[tuple[int, int, int, str]]:
    """``file_activity``'s ``file_fds`` rows of the run, in call order: (seq, process row, fd, path); none
    without that table."""
    if not _has_table(conn, "file_fds"):
        return
    for seq, process_id, fd, path in conn.execute(
        "SELECT syscall_seq, process_id, fd, path FROM file_fds WHERE run_id = ? ORDER BY syscall_seq, id", (run,)
    ):
        if isinstance(seq, int) and isinstance(process_id, int) and isinstance(fd, int) and isinstance(path, str):
            yield seq, process_id, fd, path


def _recorded_files(conn: sqlite3.Connection, run: int) -> dict[int, list[str]]:
    """``file_activity``'s paths per process row, if the file has that table (the plugin ran); else none."""
    if not _has_table(conn, "file_activity"):
        return {}
    recorded: dict[int, list[str]] = {}
    for process_id, path in conn.execute(
        "SELECT process_id, path FROM file_activity WHERE run_id = ? ORDER BY id", (run,)
    ):
        if isinstance(path, str):
            recorded.setdefault(process_id, []).append(path)
    return recorded


def run_query(conn: sqlite3.Connection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """One SQL statement that only reads, on the read-only connection: column names and rows.

    Anything else (a write, ATTACH, VACUUM INTO, a PRAGMA that sets) is refused
    with one line; so is more than one statement.
    """
    try:
        cursor = conn.execute(sql)
        rows = [tuple(row) for row in cursor.fetchall()]
    except sqlite3.DatabaseError as exc:
        if any(word in str(exc) for word in ("not authorized", "authorization denied", "readonly", "query_only")):
            raise LogDatabaseError(f"refused: the database is read-only here ({exc})") from None
        raise LogDatabaseError(f"query failed: {exc}") from None
    except sqlite3.Warning as exc:  # "You can only execute one statement at a time."
        raise LogDatabaseError(f"query failed: {exc}") from None
    columns = [d[0] for d in cursor.description or ()]
    return columns, rows


@dataclass
class ProcessNode:
    """One process instance of a run, with the processes it created (by ppid and start time)."""

    id: int
    pid: int
    ppid: int
    name: Any  # str, or as the caller of process_tree asked (a {"hex"} dict)
    names: list[Any]
    start_time: int
    syscall_count: int | None  # None: its calls were not logged (a run of only=command, not the command's)
    state: str | None
    exit_status: int | None
    threads: list[ThreadRow] = field(default_factory=list)
    children: list[ProcessNode] = field(default_factory=list)


@dataclass(frozen=True)
class ThreadRow:
    """One thread of a process, with every name it had."""

    tid: int
    name: Any  # as ProcessNode's
    names: list[Any]
    syscall_count: int | None  # None: as its process's


def ownerless_threads(conn: sqlite3.Connection, run: int) -> int:
    """How many of a run's threads name no process of that run, so :func:`process_tree` leaves them out.

    Only an edited or damaged file has them, or one that two runs wrote at once before row ids were
    per run (the second run's process rows replaced the first's).
    """
    return int(
        conn.execute(
            f"SELECT COUNT(*) FROM {THREADS} t WHERE t.run_id = ? AND NOT EXISTS "
            f"(SELECT 1 FROM {PROCESSES} p WHERE p.id = t.process_id AND p.run_id = t.run_id)",
            (run,),
        ).fetchone()[0]
    )


def stored_value(value: Any) -> Any:
    """Guest text as a column stores it, for JSON output: ``{"hex": ...}`` text (bytes that are not UTF-8) as the
    object it spells, the form the decoded arguments use; anything else as it is."""
    if isinstance(value, str) and value.startswith(HEX_COLUMN_PREFIX):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def shown_bytes(data: bytes) -> str:
    """Guest bytes (a name, a path) as the views show them: each backslash doubled and each byte that is not
    UTF-8 as ``\\xNN``, as strace shows a string's bytes (``b"a\\\\x1b\\xff"`` -> ``a\\\\x1b\\xff``).

    The doubling keeps the text a guest typed apart from the escapes the views make: ``a\\x1b`` typed by a
    program is shown ``a\\\\x1b``, the ESC byte ``a\\x1b`` (control characters are escaped at the console,
    ``qppsuite.cli.terminal.visible``, which leaves backslashes alone).  A backslash byte is never part of a
    multi-byte UTF-8 sequence, so it is doubled before decoding.
    """
    return data.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def stored_text(value: Any) -> Any:
    """Guest text as a column stores it (a name, a path), for display, as :func:`shown_bytes` shows its bytes:
    ``{"hex": ...}``'s JSON text (bytes that are not UTF-8, as the plugins store names and paths) or UTF-8
    text.  Anything else is returned as it is."""
    return shown_value(stored_value(value))


def shown_value(value: Any) -> Any:
    """Guest text as decoded arguments hold it (a JSON string, or the ``{"hex": ...}`` object of bytes that are
    not UTF-8), for display, as :func:`shown_bytes` shows its bytes; anything else is returned as it is."""
    if isinstance(value, str):
        return value.replace("\\", "\\\\")
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("hex"), str):
        try:
            return shown_bytes(bytes.fromhex(value["hex"]))
        except ValueError:
            return json.dumps(value)
    return value


def _names(text: str | None, shown: Callable[[Any], Any]) -> Any:
    """A ``names`` column: its JSON list of stored names (text, or the ``{"hex"}`` object), each given as
    ``shown`` gives a ``name`` column holding it."""
    names = json.loads(text or "[]")
    if isinstance(names, list):
        return [shown(column_text(name)) if isinstance(name, (str, dict)) else name for name in names]
    return names


def process_tree(
    conn: sqlite3.Connection, run: int, *, shown: Callable[[Any], Any] = stored_text
) -> list[ProcessNode]:
    """The run's processes as a forest: a child hangs under the latest process with its ppid started before it.

    Names (the processes' and threads') are given as ``shown`` gives a stored one: :func:`stored_text` (for
    display, the default) or :func:`stored_value` (JSON: bytes that are not UTF-8 as the ``{"hex"}`` object).
    In a run that logged only its command's calls (:func:`command_only`), a process without a logged call is
    not the command's: its ``syscall_count`` (and its threads') is None, not 0."""
    unlogged = 0 if command_only(conn, run) else None  # the count that means "not logged"
    nodes = [
        ProcessNode(
            row["id"],
            row["pid"],
            row["ppid"],
            shown(row["name"]),
            _names(row["names"], shown),
            row["start_time"],
            None if row["syscall_count"] == unlogged else row["syscall_count"],
            row["state"],
            row["exit_status"],
        )
        for row in conn.execute(f"SELECT * FROM {PROCESSES} WHERE run_id = ? ORDER BY start_time, id", (run,))
    ]
    by_id = {node.id: node for node in nodes}
    for row in conn.execute(f"SELECT * FROM {THREADS} WHERE run_id = ? ORDER BY tid, id", (run,)):
        owner = by_id.get(row["process_id"])
        if owner is not None:
            count = None if owner.syscall_count is None else row["syscall_count"]
            owner.threads.append(ThreadRow(row["tid"], shown(row["name"]), _names(row["names"], shown), count))
    # A parent comes before its child in (start_time, id) order, so whatever the rows say (two processes
    # each the other's parent, in a damaged or hostile file) the result is a forest and no row is lost.
    by_pid: dict[int, list[ProcessNode]] = {}
    roots: list[ProcessNode] = []
    for node in nodes:
        parents = by_pid.get(node.ppid)
        if parents:
            parents[-1].children.append(node)
        else:
            roots.append(node)
        by_pid.setdefault(node.pid, []).append(node)
    return roots


@dataclass(frozen=True)
class Stats:
    """Totals of one run for ``qppsuite stats``."""

    calls: int
    failed: int
    processes: int  # of the run
    callers: int  # the run's processes that made a logged call (in a run of only=command: the command's)
    top_syscalls: list[dict[str, Any]]  # name, calls, failed, failure_rate
    top_processes: list[dict[str, Any]]  # process_name, pid, calls, failed, failure_rate
    top_errors: list[dict[str, Any]]  # errno, calls
    command_only: bool = False  # the run logged only its command's calls (:func:`command_only`)


def run_stats(conn: sqlite3.Connection, run: int, top: int) -> Stats:
    """Top calls and processes by count with their failure rates (failed = an errno was returned)."""
    calls, failed = conn.execute(f"SELECT COUNT(*), COUNT(errno) FROM {SYSCALLS} WHERE run_id = ?", (run,)).fetchone()
    processes = conn.execute(f"SELECT COUNT(*) FROM {PROCESSES} WHERE run_id = ?", (run,)).fetchone()[0]
    callers = conn.execute(f"SELECT COUNT(DISTINCT process_id) FROM {SYSCALLS} WHERE run_id = ?", (run,)).fetchone()
    command = command_only(conn, run)
    top_syscalls = [
        dict(row)
        for row in conn.execute(
            f"SELECT name, COUNT(*) AS calls, COUNT(errno) AS failed, "
            f"ROUND(1.0 * COUNT(errno) / COUNT(*), 4) AS failure_rate "
            f"FROM {SYSCALLS} WHERE run_id = ? GROUP BY name ORDER BY calls DESC, name LIMIT ?",
            (run, top),
        )
    ]
    top_processes = [
        dict(row)
        for row in conn.execute(
            # With MAX(seq), SQLite takes the bare process_name from that row: the name the process ended with.
            f"SELECT process_name, pid, COUNT(*) AS calls, COUNT(errno) AS failed, "
            f"ROUND(1.0 * COUNT(errno) / COUNT(*), 4) AS failure_rate, MAX(seq) AS last_seq "
            f"FROM {SYSCALLS} WHERE run_id = ? GROUP BY process_id ORDER BY calls DESC, pid LIMIT ?",
            (run, top),
        )
    ]
    for row in top_processes:
        del row["last_seq"]
    top_errors = [
        dict(row)
        for row in conn.execute(
            f"SELECT errno, COUNT(*) AS calls FROM {SYSCALLS} WHERE run_id = ? AND errno IS NOT NULL "
            f"GROUP BY errno ORDER BY calls DESC, errno LIMIT ?",
            (run, top),
        )
    ]
    return Stats(
        int(calls), int(failed), int(processes), int(callers[0]), top_syscalls, top_processes, top_errors, command
    )


def syscalls_recorded(conn: sqlite3.Connection, run: int) -> bool:
    """Whether the run recorded its system calls, i.e. syscalls_logger wrote them into this file.

    The logger sets ``runs.syscall_count`` as the run ends (a run that never ended has ``syscalls`` rows);
    a run database written without it (proc_events, file_activity only) has ``syscall_count`` NULL and no
    ``syscalls`` row, so its processes' ``syscall_count`` of 0 is no count.
    """
    row = conn.execute(f"SELECT syscall_count FROM {RUNS} WHERE id = ?", (run,)).fetchone()
    if row is not None and row["syscall_count"] is not None:
        return True
    return conn.execute(f"SELECT 1 FROM {SYSCALLS} WHERE run_id = ? LIMIT 1", (run,)).fetchone() is not None


def command_only(conn: sqlite3.Connection, run: int) -> bool:
    """Whether the run logged only its command's calls (``-p syscalls_logger:only=command``: ``runs.logged``)."""
    row = conn.execute(f"SELECT logged FROM {RUNS} WHERE id = ?", (run,)).fetchone()
    return row is not None and row["logged"] == "command"


def add_proc_events_exits(conn: sqlite3.Connection, run: int, roots: list[ProcessNode]) -> None:
    """Give each process of ``roots`` without an exit status the wait status of its ``exit`` event in the
    ``proc_events`` table (do_exit's code, kernel/exit.c), when the file has that table: the process rows
    only have one when syscalls_logger ran.  Values that are not integers (an edited file) are left out."""
    if not _has_table(conn, "proc_events"):
        return
    exits = {
        row[0]: row[1]
        for row in conn.execute(
            "SELECT process_id, wait_status FROM proc_events WHERE run_id = ? AND kind = 'exit' "
            "AND typeof(wait_status) = 'integer' ORDER BY insn_count",
            (run,),
        )
    }
    for node in _walk(roots):
        if node.exit_status is None and node.id in exits:
            node.exit_status = exits[node.id]
