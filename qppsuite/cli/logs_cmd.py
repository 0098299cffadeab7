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
from collections.abc import Iterator, Sequence
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
RunOpt = Annotated[int | None, typer.Option("--run", help="Run id in the database (default: the latest run)")]
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


def _emit_records(records: Sequence[dict[str, Any]], fmt: OutputFormat) -> None:
    """Records with nested values: JSON keeps them nested, csv gives each nested key a column."""
    if fmt is OutputFormat.json:
        json.dump(list(records), sys.stdout, indent=1, default=_json_blob)
        sys.stdout.write("\n")
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
        json.dump([dict(zip(columns, row, strict=True)) for row in rows], sys.stdout, indent=1, default=_json_blob)
        sys.stdout.write("\n")
    elif fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        if sys.stdout.isatty():  # data for tools when piped; on a terminal, shown like every other view
            rows = [[visible(v) if isinstance(v, str) else v for v in row] for row in rows]
        writer.writerows(rows)
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
    run: RunOpt = None,
) -> None:
    """The recorded system calls in call order, filtered by process, thread, call name, time or failure.

    The table streams one line per call: seq, the virtual time of the call (seconds since power-on),
    pid, tid, process, the call as strace prints it, and after ``#`` the paths its fds named (rebuilt from
    the run's opens, dups and closes, and file_activity's paths).  ``--format json`` gives every column,
    with ``raw_args``, ``args`` and ``outputs`` as nested JSON and ``fds``/``fd_path`` for the paths; csv gives
    each of their keys a column of its own (``args.path``).
    """
    from qppsuite.plugins.syscalls_logger import reader
    start = None if since is None else reader.parse_point("--since", since)
    stop = None if until is None else reader.parse_point("--until", until)
    if start is not None and stop is not None and start.column == stop.column and start.value > stop.value:
        raise reader.LogDatabaseError(f"--since {since} is after --until {until}: no call can be in between")
    with _reading(db) as conn:
        run_id = reader.select_run(conn, run)
        _warn(conn, run_id)
        where = reader.SyscallFilter(
            run_id,
            pid=reader.check_caller(conn, run_id, "pid", pid),
            tid=reader.check_caller(conn, run_id, "tid", tid),
            process=reader.check_process(conn, run_id, process),
            names=reader.check_names(conn, run_id, name or []),
            failed=failed,
            limit=limit,
            since=start,
            until=stop,
            process_ids=None if follow is None else tuple(reader.follow(conn, run_id, follow)),
        )
        fields = reader.SYSCALL_FIELDS if fmt is not OutputFormat.table else TABLE_FIELDS
        _show_syscalls(reader.iter_syscalls(conn, where, files=True, fields=fields), fmt)


def _show_syscalls(rows: Iterator[dict[str, Any]], fmt: OutputFormat) -> None:
    from qppsuite.plugins.syscalls_logger import reader
    if fmt is not OutputFormat.table:
        records = list(rows)
        for row in records:
            for key in reader.JSON_FIELDS:
                row[key] = None if row[key] is None else json.loads(row[key])
        _emit_records(records, fmt)
        return
    _stream_syscalls(rows, sys.stdout)


#: The columns the table shows.
TABLE_FIELDS = ("seq", "virtual_ns", "pid", "tid", "process_name", "text", "ending")
#: The streamed table's fixed columns, before the call: seq, virtual time, pid, tid, process.
_ROW = "{:>7} {:>12} {:>5} {:>5} {:<15}"


def _stream_syscalls(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    """One line per call, written as it is read (a table of 40,000 calls starts at once and takes about a
    second, where rich's table measured every cell first: 43 s); every guest string escaped (:func:`visible`)."""
    from qppsuite.plugins.syscalls_logger.reader import stored_text

    out.write(_ROW.format("seq", "time (s)", "pid", "tid", "process") + " call\n")
    count = 0
    for row in rows:
        count += 1
        ns = row["virtual_ns"]
        pid, tid = row["pid"], row["tid"]
        line = _ROW.format(
            row["seq"],
            "" if ns is None else f"{ns / 1e9:.6f}",
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
    run: RunOpt = None,
    threads: Annotated[bool, typer.Option("--threads", help="Also list each process's threads")] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """The run's process tree: names each process had, system-call count, how it ended; threads on request."""
    from qppsuite.plugins.syscalls_logger import reader
    with _reading(db) as conn:
        run_id = reader.select_run(conn, run)
        _warn(conn, run_id)
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
        roots = reader.process_tree(conn, run_id)
        recorded = reader.syscalls_recorded(conn, run_id)
        if not recorded:  # without syscalls_logger: no call counts, and the exits are proc_events'
            reader.add_proc_events_exits(conn, run_id, roots)
        _show_processes(run_id, roots, threads, fmt, reader.run_end(conn, run_id), recorded)


#: Deeper processes are drawn at this depth, marked with their real one: every row is shown whatever the
#: width of the terminal (rich cannot draw a 200-deep chain in 80 columns).  Narrower terminals draw fewer
#: levels, so that each label keeps TREE_LABEL columns beside rich's 4-column guides.
TREE_DEPTH = 16
TREE_LABEL = 24
#: Below this many columns the tree is drawn this wide anyway (the terminal wraps its lines): rich leaves out
#: a row it has no columns for.
TREE_MIN_WIDTH = 40


def _show_processes(
    run_id: int, roots: list[reader.ProcessNode], threads: bool, fmt: OutputFormat, end: str | None, recorded: bool
) -> None:
    """Every process, parents before children; iterative, since a guest can fork a chain of any depth.
    ``recorded``: the run recorded its system calls (else no counts are shown, ``null`` in json)."""
    if fmt is not OutputFormat.table:
        records: list[dict[str, Any]] = []
        stack: list[tuple[reader.ProcessNode, int | None, int]] = [(root, None, 0) for root in reversed(roots)]
        while stack:
            node, parent, _depth = stack.pop()
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
            stack.extend((child, node.id, 0) for child in reversed(node.children))
        _emit_records(records, fmt)
        return
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
    tree.label = styled(f"run {run_id}" + (f" ({end})" if end else "") + f": {processes}{unrecorded}")
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
    """Datasette metadata for DB on stdout: table and column descriptions and canned queries (which processes
    called ptrace, files opened by each process, failed calls by errno, how each process ended).

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
    run: RunOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows in each top list")] = 10,
    fmt: FormatOpt = OutputFormat.table,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also draw calls over time, stacked by kind, to this image (.png, .svg, .pdf)"),
    ] = None,
) -> None:
    """Top system calls, top processes and errors, with failure rates; ``--plot`` draws the activity figure."""
    from qppsuite.plugins.syscalls_logger import reader
    if plot is not None:
        from qppsuite.report.plot import check_path
        check_path(plot)
    with _reading(db) as conn:
        run_id = reader.select_run(conn, run)
        _warn(conn, run_id)
        result = reader.run_stats(conn, run_id, top)
        recorded = reader.syscalls_recorded(conn, run_id)
        end = reader.run_end(conn, run_id)
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
    if not recorded:
        console.print(
            f"run {run_id}{f' ({end})' if end else ''}: system calls were not recorded (syscalls_logger did not "
            f"write this file); {_plural(result.processes, 'process', 'processes')}",
            highlight=False,
        )
        return
    rate = result.failed / result.calls if result.calls else 0.0
    by = _plural(result.processes, "process", "processes")
    if result.command_only:
        by += " (only=command: only the command's calls were logged)"
    console.print(
        f"run {run_id}{f' ({end})' if end else ''}: {_plural(result.calls, 'system call', 'system calls')} by {by}, "
        f"{result.failed} failed ({rate:.1%})",
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


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"
