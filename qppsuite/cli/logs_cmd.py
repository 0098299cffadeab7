"""``qppsuite syscalls|processes|query|stats DB``: read what syscalls_logger recorded.

The commands only render; the queries live in
:mod:`qppsuite.plugins.syscalls_logger.reader`, which opens the database
read-only.  ``--format json|csv`` writes plain data to stdout for other tools.
"""

from __future__ import annotations

import base64
import csv
import json
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from qppsuite.cli import app, err_console
from qppsuite.cli.terminal import SafeConsole, styled, visible

if TYPE_CHECKING:  # the commands import it when they run: `qppsuite run` does not pay for SQLite's libraries
    from qppsuite.plugins.syscalls_logger import reader

console = SafeConsole()
#: SQLite's largest integer (``reader.SQLITE_MAX_INTEGER``; not imported here, so that a run does not load the
#: reader): a larger pid, tid or limit is refused by the option parser in one line.
SQLITE_MAX_INTEGER = (1 << 63) - 1


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


DbArg = Annotated[Path, typer.Argument(help="A database written by syscalls_logger")]
RunOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        metavar="N|LABEL",
        help="The run: its id, or its label in a batch's merged database (default: the latest run)",
    ),
]
RunsOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        metavar="N|LABEL|all",
        help="The run: its id, or its label in a batch's merged database; all: every run (default: the latest run)",
    ),
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="table, json or csv")]


@contextmanager
def _reading(db: Path, *, any_version: bool = False) -> Iterator[sqlite3.Connection]:
    """The database, read-only; what a damaged file makes SQLite or the decoding raise becomes one line.

    ``any_version``: read a file of another schema version too (the views refuse it: their columns may lack).
    """
    from qppsuite.plugins.syscalls_logger import reader
    conn = reader.open_readonly(db, any_version=any_version)
    try:
        yield conn
    except sqlite3.Error as exc:
        raise reader.LogDatabaseError(f"cannot read {db}: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:  # a column holding what no qppsuite writes
        raise reader.LogDatabaseError(f"cannot read {db}: a damaged or edited value ({exc})") from exc
    finally:
        conn.close()


def _warn(conn: sqlite3.Connection, run: int) -> None:
    """On stderr, so that json and csv on stdout stay plain data."""
    from qppsuite.plugins.syscalls_logger import reader
    warning = reader.run_warning(conn, run)
    if warning is not None:
        err_console.print(styled(("warning:", "bold yellow"), f" {warning}"), soft_wrap=True)


def _warn_runs(conn: sqlite3.Connection, runs: list[int], db: Path) -> None:
    """``--run all``: one line for every run that failed, did not run or did not end normally (not one each)."""
    from qppsuite.plugins.syscalls_logger import reader
    names = reader.run_names(conn)
    bad = [names[run] for run in runs if reader.run_warning(conn, run) is not None]
    if bad:
        listed = ", ".join(bad[:5]) + (", …" if len(bad) > 5 else "")
        err_console.print(
            styled(
                ("warning:", "bold yellow"),
                f" {len(bad)} of {_plural(len(runs), 'run', 'runs')} failed, did not run or did not end normally "
                f"({listed}); `qppsuite stats {db} --run all` says why",
            ),
            soft_wrap=True,
        )


#: What a view of one run says of a batch's job that left no database.
NO_ROWS = (
    "no rows: the job left no run database (it failed before its run started, did not run, or loaded no plugin "
    "that writes one)"
)


def _run_title(run: int, label: str | None, end: str | None) -> str:
    """``run 3``, with its label and how it ended when it was not a power-off: ``run 3 [sample-a] (ended panic)``."""
    return f"run {run}" + (f" [{label}]" if label is not None else "") + (f" ({end})" if end else "")


def _json_blob(value: object) -> dict[str, Any]:
    """``json.dump``'s fallback: an SQLite BLOB (``bytes``) as Datasette writes one; anything else is a bug."""
    if isinstance(value, bytes):
        return {"$base64": True, "encoded": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON")


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """``{"args": {"path": "/x"}}`` -> ``{"args.path": "/x"}``; lists and deeper objects stay JSON text."""
    if isinstance(value, dict) and prefix:
        for key, item in value.items():
            out[f"{prefix}.{key}"] = json.dumps(item) if isinstance(item, (dict, list)) else item
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (dict, list)) else value


def _json_list(items: Iterable[Any]) -> None:
    """A JSON array on stdout, one item to a line: each item is encoded by the json module's C encoder (an
    ``indent`` makes it use the Python one, which wrote 40,000 calls in 9.6 s where this takes about 2)."""
    out = sys.stdout
    out.write("[")
    for n, item in enumerate(items):
        out.write(",\n" if n else "\n")
        out.write(json.dumps(item, default=_json_blob))
    out.write("\n]\n")


def _emit_records(records: Sequence[dict[str, Any]], fmt: OutputFormat) -> None:
    """Records with nested values: JSON keeps them nested, csv gives each nested key a column."""
    if fmt is OutputFormat.json:
        _json_list(records)
        return
    flat: list[dict[str, Any]] = []
    for record in records:
        row: dict[str, Any] = {}
        for key, value in record.items():
            _flatten(key, value, row)
        flat.append(row)
    columns = list(dict.fromkeys(key for row in flat for key in row))
    _emit(columns, [[row.get(c) for c in columns] for row in flat], fmt)


def _emit(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: OutputFormat, title: str | None = None) -> None:
    if fmt is OutputFormat.json:
        _json_list(dict(zip(columns, row, strict=True)) for row in rows)
    elif fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        # csv quotes a cell holding the delimiter, a quote or the line terminator ("\n"), not one holding a
        # carriage return, which readers also take for a line's end: a guest's "c\rd" split its row in two
        quoted = csv.writer(sys.stdout, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        if sys.stdout.isatty():  # data for tools when piped; on a terminal, shown like every other view
            rows = [[visible(v) if isinstance(v, str) else v for v in row] for row in rows]
        for row in rows:
            (quoted if any(isinstance(v, str) and "\r" in v for v in row) else writer).writerow(row)
    else:
        table = Table(*columns, title=title)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)


SinceOpt = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="Only calls from this moment: an instruction count since power-on (120000000) or a virtual time "
        "(1.5s, 250ms, 40us, 900ns)",
    ),
]
UntilOpt = Annotated[
    str | None,
    typer.Option("--until", metavar="WHEN", help="Only calls up to this moment (as --since; included)"),
]


@app.command("syscalls")
def syscalls(
    db: DbArg,
    pid: Annotated[
        int | None, typer.Option("--pid", min=0, max=SQLITE_MAX_INTEGER, help="Only this process id")
    ] = None,
    tid: Annotated[
        int | None, typer.Option("--tid", min=0, max=SQLITE_MAX_INTEGER, help="Only this thread id")
    ] = None,
    process: Annotated[str | None, typer.Option("--process", help="Only processes with this name")] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="Only these system calls: openat,read (comma-separated, or repeated)"),
    ] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only calls that returned an error")] = False,
    since: SinceOpt = None,
    until: UntilOpt = None,
    follow: Annotated[
        int | None,
        typer.Option(
            "--follow", metavar="PID", help="Only process PID (every process that had it) and its descendants"
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=0, max=SQLITE_MAX_INTEGER, help="At most this many calls")
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    run: RunsOpt = None,
) -> None:
    """The recorded system calls in call order, filtered by process, thread, call name, time or failure.

    The table streams one line per call: seq, the virtual time of the call (seconds since power-on),
    pid, tid, process, the call as strace prints it, and after ``#`` the paths its fds named (rebuilt from
    the run's opens, dups and closes, and file_activity's paths).  ``--format json`` gives every column,
    with ``raw_args``, ``args`` and ``outputs`` as nested JSON and ``fds``/``fd_path`` for the paths; csv gives
    each of their keys a column of its own (``args.path``).  ``--run all`` searches every run of the file (a
    batch's merged database: which samples called ptrace), each call with its run's label (or id): a
    ``run`` column first in the table, ``label`` in json and csv.
    """
    from qppsuite.plugins.syscalls_logger import reader
    start = None if since is None else reader.parse_point("--since", since)
    stop = None if until is None else reader.parse_point("--until", until)
    if start is not None and stop is not None and start.column == stop.column and start.value > stop.value:
        raise reader.LogDatabaseError(f"--since {since} is after --until {until}: no call can be in between")
    with _reading(db) as conn:
        runs = reader.select_runs(conn, run, shown=visible)
        every = run == reader.ALL_RUNS
        if every and follow is not None:
            raise reader.LogDatabaseError("--follow names a process of one run: give --run N or LABEL, not all")
        if every:
            _warn_runs(conn, runs, db)
        else:
            _warn(conn, runs[0])
        one = None if every else runs[0]  # the run, or None: every run
        reader.check_span(conn, one, start, stop)
        where = reader.SyscallFilter(
            one,
            pid=reader.check_caller(conn, one, "pid", pid),
            tid=reader.check_caller(conn, one, "tid", tid),
            process=reader.check_process(conn, one, process, shown=visible),
            names=reader.check_names(conn, one, name or []),
            failed=failed,
            limit=limit,
            since=start,
            until=stop,
            process_ids=None if follow is None else tuple(reader.follow(conn, runs[0], follow)),
        )
        fields = reader.SYSCALL_FIELDS if fmt is not OutputFormat.table else (*TABLE_FIELDS, "run_id")
        names = reader.run_names(conn) if every else None
        _show_syscalls(reader.iter_syscalls(conn, where, files=True, fields=fields), fmt, names)


def _show_syscalls(rows: Iterator[dict[str, Any]], fmt: OutputFormat, names: dict[int, str] | None) -> None:
    """``names``: the runs' labels (or ids) when the calls are of several runs, shown with each call."""
    from qppsuite.plugins.syscalls_logger import reader
    if fmt is not OutputFormat.table:
        records = list(rows) if names is None else [{"label": names.get(row["run_id"]), **row} for row in rows]
        for row in records:
            for key in reader.JSON_FIELDS:
                row[key] = None if row[key] is None else json.loads(row[key])
            # json: names and paths that are not UTF-8 as the args hold them, {"hex": ...}, an object, not its text;
            # csv: every guest string as the table shows it (a backslash doubled, such a byte as \xNN), so text a
            # program spelt like the stored form of other bytes is never one cell with them
            shown = reader.stored_value if fmt is OutputFormat.json else reader.stored_text
            for key in ("process_name", "thread_name", "fd_path"):
                row[key] = shown(row.get(key))
            if "fds" in row:
                row["fds"] = {name: shown(path) for name, path in row["fds"].items()}
            if fmt is OutputFormat.csv:
                for key in ("args", "outputs"):
                    if isinstance(row[key], dict):
                        row[key] = {name: reader.shown_value(value) for name, value in row[key].items()}
        _emit_records(records, fmt)
        return
    _stream_syscalls(rows, sys.stdout, names)


#: The columns the table shows.
TABLE_FIELDS = ("seq", "virtual_ns", "pid", "tid", "process_name", "text", "ending")
#: The streamed table's fixed columns, before the call: seq, virtual time, pid, tid, process.
_ROW = "{:>7} {:>15} {:>5} {:>5} {:<15}"
#: The widest the ``run`` column of ``--run all`` grows for its labels (a longer one makes its lines longer).
RUN_COLUMN_MAX = 24


def _stream_syscalls(rows: Iterator[dict[str, Any]], out: TextIO, names: dict[int, str] | None = None) -> int:
    """One line per call, written as it is read (a table of 40,000 calls starts at once and takes about a
    second, where rich's table measured every cell first: 43 s); every guest string escaped (:func:`visible`).
    ``names``: calls of several runs, each line starting with its run's label (or id), escaped too."""
    from qppsuite.plugins.syscalls_logger.reader import seconds, stored_text

    shown = {run: visible(name) for run, name in (names or {}).items()}
    width = min(max(map(len, shown.values()), default=3), RUN_COLUMN_MAX)
    first = "" if names is None else f"{'run':<{width}} "
    out.write(first + _ROW.format("seq", "time (s)", "pid", "tid", "process") + " call\n")
    count = 0
    for row in rows:
        count += 1
        ns = row["virtual_ns"]
        pid, tid = row["pid"], row["tid"]
        if names is not None:
            out.write(f"{shown.get(row['run_id'], str(row['run_id'])):<{width}} ")
        line = _ROW.format(
            row["seq"],
            # to the nanosecond, as --until takes it back; a damaged file's other values shown as they are
            seconds(ns) if isinstance(ns, int) and ns >= 0 else "" if ns is None else visible(str(ns)),
            "" if pid is None else pid,
            "" if tid is None else tid,
            visible(str(stored_text(row["process_name"] or ""))),
        )
        call = visible(row["text"] or "")
        if row["ending"]:
            call += f" (no return: {visible(row['ending'])})"
        files = [f"{name}={visible(str(stored_text(path)))}" for name, path in row["fds"].items()]
        if row["fd_path"] is not None:  # a path that is not UTF-8 is stored {"hex": ...}: shown with \xNN
            files.append(f"ret={visible(str(stored_text(row['fd_path'])))}")
        out.write(f"{line} {call}{'  # ' + ', '.join(files) if files else ''}\n")
    out.write(f"{_plural(count, 'system call', 'system calls')}\n")
    out.flush()
    return count


def _ended(node: reader.ProcessNode) -> str:
    """``exited 3`` / ``killed by SIGTERM`` from a wait status (include/uapi/linux/wait.h; the signal's ARM Linux
    name, as the report says it), with the end state."""
    from qppsuite.plugins.proc_events.model import ExitCode
    status = node.exit_status
    if status is None:
        return f", state {node.state}" if node.state else ""
    return f", {ExitCode(status).ended}" + (f", state {node.state}" if node.state and node.state != "X" else "")


def _calls(count: int | None, recorded: bool) -> str:
    """A process's or thread's calls after its name: ``: 1 syscall``; None: not logged (only=command)."""
    if not recorded:
        return ""
    return ": calls not logged (not the command's)" if count is None else f": {_plural(count, 'syscall', 'syscalls')}"


def _tree_label(node: reader.ProcessNode, recorded: bool) -> Text:
    renamed = f" (was {' → '.join(node.names[:-1])})" if len(node.names) > 1 else ""
    calls = _calls(node.syscall_count, recorded)
    return styled((node.name, "bold"), f"{renamed} pid {node.pid}, ppid {node.ppid}{calls}{_ended(node)}")


@app.command("processes")
def processes(
    db: DbArg,
    run: RunsOpt = None,
    threads: Annotated[bool, typer.Option("--threads", help="Also list each process's threads")] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """The run's process tree: names each process had, system-call count, how it ended; threads on request.
    ``--run all``: every run's, one after another (json and csv: each process with its ``run_id`` and ``label``)."""
    from qppsuite.plugins.syscalls_logger import reader
    with _reading(db) as conn:
        runs = reader.select_runs(conn, run, shown=visible)
        every = run == reader.ALL_RUNS
        if every:
            _warn_runs(conn, runs, db)
        else:
            _warn(conn, runs[0])
        records: list[dict[str, Any]] = []
        for run_id in runs:
            left_out = reader.ownerless_threads(conn, run_id) if threads else 0
            if left_out:
                err_console.print(
                    styled(
                        ("warning:", "bold yellow"),
                        f" {left_out} threads of run {run_id} belong to no process of the run and are not listed "
                        f"(`qppsuite query` shows them)",
                    ),
                    soft_wrap=True,
                )
            # json: a name that is not UTF-8 as the {"hex"} object the syscalls view gives too; the table and csv
            # spell names as the views show them (a guest's backslash doubled, such a byte as \xNN)
            shown = reader.stored_value if fmt is OutputFormat.json else reader.stored_text
            roots = reader.process_tree(conn, run_id, shown=shown)
            recorded = reader.syscalls_recorded(conn, run_id)
            if not recorded:  # without syscalls_logger: no call counts, and the exits are proc_events'
                reader.add_proc_events_exits(conn, run_id, roots)
            label = reader.run_label(conn, run_id)
            if fmt is OutputFormat.table and not reader.has_rows(conn, run_id):
                console.print(f"{_run_title(run_id, label, reader.run_end(conn, run_id))}: {NO_ROWS}", highlight=False)
                continue
            if fmt is OutputFormat.table:
                _draw_processes(_run_title(run_id, label, reader.run_end(conn, run_id)), roots, threads, recorded)
                continue
            run_records = _process_records(roots, threads, recorded)
            records += [{"run_id": run_id, "label": label, **r} for r in run_records] if every else run_records
    if fmt is not OutputFormat.table:
        _emit_records(records, fmt)


#: Deeper processes are drawn at this depth, marked with their real one: every row is shown whatever the
#: width of the terminal (rich cannot draw a 200-deep chain in 80 columns).  Narrower terminals draw fewer
#: levels, so that each label keeps TREE_LABEL columns beside rich's 4-column guides.
TREE_DEPTH = 16
TREE_LABEL = 24
#: Below this many columns the tree is drawn this wide anyway (the terminal wraps its lines): rich leaves out
#: a row it has no columns for.
TREE_MIN_WIDTH = 40


def _process_records(roots: list[reader.ProcessNode], threads: bool, recorded: bool) -> list[dict[str, Any]]:
    """Every process as a record (json, csv), parents before children; iterative, since a guest can fork a chain
    of any depth.  ``recorded``: the run recorded its system calls (else the counts are ``null``)."""
    records: list[dict[str, Any]] = []
    stack: list[tuple[reader.ProcessNode, int | None]] = [(root, None) for root in reversed(roots)]
    while stack:
        node, parent = stack.pop()
        record: dict[str, Any] = {
            "id": node.id,
            "parent_id": parent,
            "pid": node.pid,
            "ppid": node.ppid,
            "name": node.name,
            "names": node.names,
            "syscalls": node.syscall_count if recorded else None,
            "state": node.state,
            "exit_status": node.exit_status,
        }
        if threads:
            record["threads"] = [{**vars(t), **({} if recorded else {"syscall_count": None})} for t in node.threads]
        records.append(record)
        stack.extend((child, node.id) for child in reversed(node.children))
    return records


def _draw_processes(title: str, roots: list[reader.ProcessNode], threads: bool, recorded: bool) -> None:
    """The tree under ``title`` (the run), parents before children; iterative, since a guest can fork a chain of
    any depth.  ``recorded``: the run recorded its system calls (else no counts are shown)."""
    width = max(console.width, TREE_MIN_WIDTH)
    max_depth = max(1, min(TREE_DEPTH, (width - TREE_LABEL) // 4))
    tree = Tree(Text())  # the header, once the rows are counted
    drawing: list[tuple[reader.ProcessNode, Tree, int]] = [(root, tree, 0) for root in reversed(roots)]
    count = 0
    while drawing:
        node, branch, depth = drawing.pop()
        count += 1
        label = _tree_label(node, recorded)
        if depth >= max_depth:
            label = styled((f"[depth {depth}] ", "dim")) + label
        sub = branch.add(label)
        if threads:
            for thread in node.threads:
                renamed = f" (was {' → '.join(thread.names[:-1])})" if len(thread.names) > 1 else ""
                calls = _calls(thread.syscall_count, recorded)
                sub.add(f"thread {thread.name}{renamed} tid {thread.tid}{calls}")
        # Past max_depth, a child is drawn beside its parent, its depth written out.
        home = sub if depth + 1 < max_depth else branch
        drawing.extend((child, home, depth + 1) for child in reversed(node.children))
    unrecorded = "" if recorded else " (system calls not recorded: syscalls_logger did not write this file)"
    processes = _plural(count, "process", "processes")
    tree.label = styled(f"{title}: {processes}{unrecorded}")
    (console if console.width == width else SafeConsole(width=width)).print(tree)


@app.command("query")
def query(
    db: DbArg,
    sql: Annotated[
        str, typer.Argument(help='SQL to run read-only, e.g. "SELECT name, COUNT(*) FROM syscalls GROUP BY 1"')
    ],
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Run read-only SQL on the database (tables: runs, processes, threads, syscalls), of any schema version;
    writes are refused."""
    from qppsuite.plugins.syscalls_logger import reader
    with _reading(db, any_version=True) as conn:
        columns, rows = reader.run_query(conn, sql)
    _emit(columns, rows, fmt)


@app.command("datasette-metadata")
def datasette_metadata(db: DbArg) -> None:
    """Datasette metadata for DB on stdout: table and column descriptions (the logger's, and the analysis
    plugins' tables the file has) and canned queries (which processes called ptrace, files opened by each
    process, failed calls by errno, how each process ended), names and paths spelt as the CLI shows them.

    Use it as ``qppsuite datasette-metadata DB > metadata.json; datasette DB -m metadata.json``.
    """
    from qppsuite.plugins.syscalls_logger import metadata
    with _reading(db) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        columns = {
            name: {row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)", (name,))} for name in names
        }
    json.dump(metadata.datasette_metadata(db, columns), sys.stdout, indent=1)
    sys.stdout.write("\n")


@app.command("stats")
def stats(
    db: DbArg,
    run: RunsOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows in each top list")] = 10,
    fmt: FormatOpt = OutputFormat.table,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also draw calls over time, stacked by kind, to this image (.png, .svg, .pdf)"),
    ] = None,
) -> None:
    """Top system calls, top processes and errors, with failure rates; ``--plot`` draws the activity figure.

    A batch's merged database (without ``--run``), or ``--run all`` on any file: one row per run instead, with
    its label, batch status and reason, system calls, processes and stop reason.
    """
    from qppsuite.plugins.syscalls_logger import reader
    if plot is not None:
        from qppsuite.report.plot import check_path
        check_path(plot)
    with _reading(db) as conn:
        if run == reader.ALL_RUNS or (run is None and reader.is_batch(conn)):
            if plot is not None:
                raise reader.LogDatabaseError("--plot draws one run: give --run N or LABEL")
            _show_summary(reader.batch_summary(conn), fmt)
            return
        run_id = reader.select_run(conn, run, shown=visible)
        _warn(conn, run_id)
        result = reader.run_stats(conn, run_id, top)
        recorded = reader.syscalls_recorded(conn, run_id)
        end = reader.run_end(conn, run_id)
        label = reader.run_label(conn, run_id)
        written = reader.has_rows(conn, run_id)
        built = None
        if plot is not None:
            from qppsuite.report import data
            built = data.build(conn, run_id)
    if plot is not None and built is not None:  # drawn after the reading: its errors are not the database's
        from qppsuite.report.plot import save_activity
        title = f"run {run_id} of {built.summary['image']}: system calls by kind"
        save_activity(built.activity, built.timebase, plot, title)
        err_console.print(styled(f"activity of run {run_id}: {plot}"), soft_wrap=True)
    if fmt is OutputFormat.json:
        json.dump(
            {
                "run": run_id,
                "calls": result.calls if recorded else None,
                "failed": result.failed if recorded else None,
                "processes": result.processes,
                "calling_processes": result.callers if recorded else None,
                "top_syscalls": result.top_syscalls,
                "top_processes": result.top_processes,
                "top_errors": result.top_errors,
            },
            sys.stdout,
            indent=1,
        )
        sys.stdout.write("\n")
        return
    if fmt is OutputFormat.csv:
        rows = [["syscall", r["name"], r["calls"], r["failed"], r["failure_rate"]] for r in result.top_syscalls]
        rows += [
            ["process", f"{r['process_name']}[{r['pid']}]", r["calls"], r["failed"], r["failure_rate"]]
            for r in result.top_processes
        ]
        rows += [["errno", r["errno"], r["calls"], None, None] for r in result.top_errors]
        _emit(("kind", "key", "calls", "failed", "failure_rate"), rows, fmt)
        return
    title = _run_title(run_id, label, end)
    if not written:
        console.print(f"{title}: {NO_ROWS}", highlight=False)
        return
    if not recorded:
        console.print(
            f"{title}: system calls were not recorded (syscalls_logger did not "
            f"write this file); {_plural(result.processes, 'process', 'processes')}",
            highlight=False,
        )
        return
    rate = result.failed / result.calls if result.calls else 0.0
    by = _plural(result.callers, "process", "processes")
    if result.callers != result.processes:  # some made no call (a process seen only in a blocked state)
        by = f"{result.callers} of the run's {_plural(result.processes, 'process', 'processes')}"
    if result.command_only:
        by += " (only=command: only the command's calls were logged)"
    console.print(
        f"{title}: {_plural(result.calls, 'system call', 'system calls')} by {by}, {result.failed} failed ({rate:.1%})",
        highlight=False,
    )
    _emit(
        ("syscall", "calls", "failed", "failure rate"),
        [[r["name"], r["calls"], r["failed"], f"{r['failure_rate']:.1%}"] for r in result.top_syscalls],
        fmt,
        title="top system calls",
    )
    _emit(
        ("process", "pid", "calls", "failed", "failure rate"),
        [
            [reader.stored_text(r["process_name"]), r["pid"], r["calls"], r["failed"], f"{r['failure_rate']:.1%}"]
            for r in result.top_processes
        ],
        fmt,
        title="top processes",
    )
    _emit(("errno", "calls"), [[r["errno"], r["calls"]] for r in result.top_errors], fmt, title="errors")


def _show_summary(rows: list[dict[str, Any]], fmt: OutputFormat) -> None:
    """``stats`` of every run: a line counting the runs by batch status, then one row per run."""
    from qppsuite.plugins.syscalls_logger.reader import SUMMARY_FIELDS
    if fmt is not OutputFormat.table:
        _emit(SUMMARY_FIELDS, [[row[c] for c in SUMMARY_FIELDS] for row in rows], fmt)
        return
    counts: dict[str, int] = {}
    for row in rows:
        if isinstance(row["status"], str):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    order = ("ok", "failed", "not run")  # the merge's; another value (an edited file) after them
    ranked = sorted(counts.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    by_status = ", ".join(f"{count} {status}" for status, count in ranked)
    console.print(f"{_plural(len(rows), 'run', 'runs')}" + (f": {by_status}" if by_status else ""), highlight=False)
    _emit(
        ("run", "label", "status", "reason", "syscalls", "processes", "stop reason"),
        [[row[c] for c in SUMMARY_FIELDS] for row in rows],
        fmt,
        title="runs",
    )


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
