"""What the run report shows, read from a run database: plain data, no HTML.

Everything comes from the file :mod:`qppsuite.plugins.syscalls_logger.reader` opens read-only: the
logger's ``runs``, ``processes`` and ``syscalls``; ``proc_events`` (exec names and exits with their
times), ``file_activity`` and ``file_ops`` (files per process, renames and deletions) and
``net_sockets`` (net_activity's endpoints) when the run loaded those plugins; when it did not, files and
endpoints come from the logged calls' decoded arguments.  A file the logger did not write (the analysis
plugins write the run database themselves) has processes and their lifetimes but no calls; a run that
logged only its command (``runs.logged`` = ``command``) has calls for the command's processes only.
Strings are the guest's, as stored: the renderers escape them.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from qppsuite.plugins.proc_events.model import ExitCode
from qppsuite.plugins.syscalls import classes
from qppsuite.plugins.syscalls.table import SYSCALLS
from qppsuite.plugins.syscalls_logger import reader

TOP_CALLS = 10
"""Rows of each process's top-syscalls table."""

ACTIVITY_BINS = 100
"""Bins of the activity-over-time figure, over the span of the run's calls."""

NS_PER_MS = 1_000_000

#: Per call number, the names of its arguments that are paths (table type ``path``): the fallback for
#: files touched when ``file_activity`` did not run.
_PATH_ARGS: dict[int, tuple[str, ...]] = {
    number: paths
    for number, spec in SYSCALLS.items()
    if (paths := tuple(arg.name for arg in spec.args if arg.type == "path"))
}


@dataclass
class FileRow:
    """A file a process touched: counts from ``file_activity``, or calls naming it from ``syscalls``."""

    path: str
    opens: int = 0
    reads: int = 0
    bytes_read: int = 0
    writes: int = 0
    bytes_written: int = 0
    errors: int = 0
    calls: int = 0  # the fallback's count: calls that named the path


@dataclass
class Process:
    """One process of the run (a ``processes`` row) and what the report shows of it."""

    id: int
    pid: int
    ppid: int
    name: str
    names: list[str]
    #: (time on the report's axis, name) from proc_events' successful execs; empty without proc_events
    renames: list[tuple[float, str]]
    depth: int
    parent_id: int | None
    state: str | None
    exit_status: int | None
    ended: str  # "exited 0", "killed by SIGTERM", "still running (state S)", "unknown"
    #: Its lifetime in instructions: from its first sighting in any table to its exit (proc_events), or to
    #: the run's end while it still ran, else to its last sighting; None where nothing dates it
    first_insn: int | None
    last_insn: int | None
    #: first_insn and last_insn on the report's axis (:class:`Timebase`), None where they are
    first_at: float | None = None
    last_at: float | None = None
    #: Its calls were logged: False when the run recorded no calls (no syscalls_logger) or logged only the
    #: command's, and this process is not one of the command's (its counts are then no counts)
    logged: bool = True
    #: A kernel thread (:func:`is_kernel_thread`): it makes no system calls the logger sees
    kernel_thread: bool = False
    syscalls: int = 0  # logged calls (the syscalls rows)
    failed: int = 0
    top_calls: list[tuple[str, int, int]] = field(default_factory=list)  # name, calls, failed
    errors: list[tuple[str, str, int]] = field(default_factory=list)  # call, errno, count
    files: list[FileRow] = field(default_factory=list)
    #: file_activity's ``file_ops``: (time on the axis, op, path, new path, flags, result), in call order
    file_ops: list[tuple[float, str, str, str | None, str | None, str]] = field(default_factory=list)
    endpoints: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Calls:
    """The run's calls in call order, as parallel columns (the timeline's marks)."""

    seq: list[int] = field(default_factory=list)
    insn: list[int] = field(default_factory=list)
    ns: list[int | None] = field(default_factory=list)  # virtual time at the call (syscalls.virtual_ns)
    at: list[float] = field(default_factory=list)  # the call on the report's axis (:class:`Timebase`)
    row: list[int] = field(default_factory=list)  # index into RunReport.processes
    kind: list[str] = field(default_factory=list)  # one of classes.KINDS
    failed: list[bool] = field(default_factory=list)
    text: list[str] = field(default_factory=list)  # the logger's strace-like line


@dataclass(frozen=True)
class Timebase:
    """The axis the timeline and the activity figure are drawn over.

    The guest's virtual time in milliseconds since power-on (``syscalls.virtual_ns``: the emulator's
    clock, idle time included) when every call of the run has it, as in files of schema 4 and later;
    otherwise instructions executed since power-on (``insn_count``).  Instruction counts that have no
    time of their own (a process's first and last sighting) are placed by :meth:`at`.
    """

    insns: tuple[int, ...] = ()  # the calls' instruction counts, ascending
    ns: tuple[int, ...] = ()  # their virtual times; empty: the axis is instructions

    @property
    def virtual(self) -> bool:
        """True when the axis is virtual time."""
        return bool(self.ns)

    @property
    def title(self) -> str:
        return "guest virtual time (ms since power-on)" if self.virtual else "guest instructions executed"

    def span(self, width: float) -> str:
        """A bin width for a label: on virtual time (``width`` in ms) 3 significant digits, in seconds from
        1,000 ms on (``2.5 ms``, ``1.03 s``, ``1,230 s``); else ``1,234 instructions``."""
        if not self.virtual:
            return f"{width:,.0f} instructions"
        return f"{significant(width / 1000)} s" if _rounded(width) >= 1000 else f"{significant(width)} ms"

    def point(self, insn: int, ns: int | None) -> str:
        """A moment for a hover box or a name's history: its virtual time (when known) and instruction count."""
        return f"{ns / NS_PER_MS:,.3f} ms, {insn:,} insns" if ns is not None else f"{insn:,} insns"

    def at(self, insn: int) -> float:
        """An instruction count on the axis.  On virtual time it is interpolated linearly between the two
        dated moments around it (the calls, the plugins' rows and the run's end, ``runs.virtual_ns``; power-on,
        0 and 0, anchors the start; past the last, in a file without the run's end, the run's mean rate carries
        on): exact at a dated moment, and off by at most the idle time between two."""
        if not self.virtual:
            return float(insn)
        i = bisect.bisect_right(self.insns, insn)
        x0, y0 = (self.insns[i - 1], self.ns[i - 1]) if i else (0, 0)
        mean = y0 / x0 if x0 else 0.0  # past the last call: the mean rate since power-on
        rate = (self.ns[i] - y0) / (self.insns[i] - x0) if i < len(self.insns) else mean
        ns = y0 + (insn - x0) * rate
        return ns / NS_PER_MS


def _places(value: float, digits: int) -> int:
    """The decimal places that keep ``digits`` significant digits of ``value`` (negative: tens, hundreds...)."""
    return digits - 1 - math.floor(math.log10(abs(value))) if value and math.isfinite(value) else 0


def _rounded(value: float, digits: int = 3) -> float:
    return round(value, _places(value, digits))


def significant(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, without an exponent or trailing zeros: ``1,030``, ``2.5``,
    ``0.00123``."""
    places = _places(value, digits)
    shown = f"{round(value, places):,.{max(0, places)}f}"
    return shown.rstrip("0").rstrip(".") if places > 0 else shown


def timebase(calls: Calls, events: Iterable[tuple[int, int]] = (), end: tuple[int, int] | None = None) -> Timebase:
    """Virtual time when every call has one and something dates the run (a call, or one of ``events``: the
    (instruction count, virtual ns) of the analysis plugins' rows), else instructions (an edited file).

    ``end``, the run's end (``runs.insn_count``, ``runs.virtual_ns``), is the last anchor when it is at or after
    every other one (an edited file's that is not is left out): what lies between the last call and the end is
    interpolated, not extrapolated at the mean rate since power-on."""
    if not all(ns is not None for ns in calls.ns):
        return Timebase()
    points = sorted({*((i, ns) for i, ns in zip(calls.insn, calls.ns, strict=True) if ns is not None), *events})
    if end is not None and (not points or (end[0] >= points[-1][0] and end[1] >= max(ns for _, ns in points))):
        points.append(end)
    if not points:
        return Timebase()
    return Timebase(tuple(i for i, _ in points), tuple(ns for _, ns in points))


@dataclass
class Activity:
    """Calls per bin of the report's axis, per kind: ``counts[kind][i]`` calls in ``[edges[i], edges[i+1])``."""

    edges: list[float]
    counts: dict[str, list[int]]

    @property
    def bin_width(self) -> float:
        """The width of a bin, in the axis's unit (ms or instructions)."""
        return self.edges[1] - self.edges[0] if len(self.edges) > 1 else 0.0


@dataclass
class RunReport:
    """One run of a run database: its summary, processes (tree order), calls and activity."""

    run_id: int
    summary: dict[str, Any]
    processes: list[Process]
    calls: Calls
    timebase: Timebase
    activity: Activity
    sources: dict[str, str]  # what each part came from: "file_activity" or "syscalls"...
    warning: str | None
    #: How the run logged its calls: "all", "command" (only the command's processes'), "none" (no logger)
    logged: str = "all"

    @property
    def timeline_rows(self) -> list[int]:
        """The processes the timeline draws (indexes into :attr:`processes`): all but the kernel threads, and in
        a run that logged only the command's calls, only the processes whose calls were logged."""
        return [
            n for n, p in enumerate(self.processes) if not p.kernel_thread and (p.logged or self.logged != "command")
        ]


KTHREADD_PID = 2
"""Linux's kthreadd, the parent of every kernel thread (``kernel/kthread.c``; pid 2 since 2.6.22)."""


def is_kernel_thread(process: Process) -> bool:
    """kthreadd or a thread it made: pid 2, or ppid 2, with no logged call and no exec seen by proc_events (a
    user-mode helper the kernel starts, such as modprobe, is kthreadd's child too, and execs, making calls: that
    one is a process).  Its names may change without an exec (a kworker's ``kworker/0:1-events``)."""
    return KTHREADD_PID in (process.pid, process.ppid) and process.syscalls == 0 and not process.renames


#: The analysis plugins' tables the report reads, by the plugin that writes them.
PLUGIN_TABLES = {
    "proc_events": "proc_events",
    "file_activity": "file_activity",
    "file_ops": "file_activity",
    "net_sockets": "net_activity",
}


def _run_tables(conn: sqlite3.Connection, plugins: object) -> set[str]:
    """The plugin tables that hold this run's rows: in the file, and written by a plugin the run loaded
    (``runs.plugins``, a JSON list).  A file may hold runs with other plugins: a table another run made
    says nothing of this one, whose facts then come from its calls."""
    try:
        loaded = set(json.loads(plugins)) if isinstance(plugins, str) else set()
    except (ValueError, TypeError):
        loaded = set()
    present = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {table for table, plugin in PLUGIN_TABLES.items() if table in present and plugin in loaded}


def _wall_seconds(started: str | None, ended: str | None) -> float | None:
    try:
        return (dt.datetime.fromisoformat(ended or "") - dt.datetime.fromisoformat(started or "")).total_seconds()
    except ValueError:
        return None


def ended_text(exit_status: int | None, state: str | None, alive: bool = False) -> str:
    """How a process ended, from its wait status (include/uapi/linux/wait.h; a signal by its Linux name, as
    ``qppsuite processes`` says it); ``alive``: it had no exit when the run ended, whose state is unknown."""
    if exit_status is None:
        if state and state not in ("X", "Z"):
            return f"still running (state {state})"
        return "still running (no exit seen)" if alive else "unknown"
    return ExitCode(exit_status).ended


def _tree_order(roots: list[reader.ProcessNode]) -> list[tuple[reader.ProcessNode, int, int | None]]:
    """Every process, parents before children, with its depth and parent row; iterative (chains of any depth)."""
    out: list[tuple[reader.ProcessNode, int, int | None]] = []
    stack: list[tuple[reader.ProcessNode, int, int | None]] = [(r, 0, None) for r in reversed(roots)]
    while stack:
        node, depth, parent = stack.pop()
        out.append((node, depth, parent))
        stack.extend((child, depth + 1, node.id) for child in reversed(node.children))
    return out


def _endpoint(value: Any) -> str | None:
    """A decoded sockaddr (``{"family": "AF_INET", "addr": ..., "port": ...}``) as ``AF_INET 1.2.3.4:80``."""
    if not isinstance(value, dict) or "family" not in value:
        return None
    where = value["addr"] if "addr" in value else reader.shown_value(value.get("path", ""))
    port = value.get("port")
    return f"{value['family']} {where}" + (f":{port}" if port is not None else "")


def _address(address: object, port: object) -> str | None:
    """net_sockets' address and port as ``1.2.3.4:80`` (``[::]:80`` for IPv6); None when neither is known.

    An AF_UNIX path of an older file may be a BLOB of its bytes: shown with the bytes that are not UTF-8 escaped.
    """
    if address is None and port is None:
        return None
    if isinstance(address, bytes):
        address = reader.shown_bytes(address)
    elif isinstance(address, str):
        address = reader.stored_text(address)
    where = "" if address is None else str(address)
    if ":" in where and port is not None:
        where = f"[{where}]"
    return where + (f":{port}" if port is not None else "")


def build(conn: sqlite3.Connection, run: int | None = None) -> RunReport:
    """The report of ``run`` (default: the latest) of an open, checked database (``reader.open_readonly``).

    Raises :class:`reader.LogDatabaseError` for an unknown run; SQLite and JSON errors of a damaged
    file propagate (the command turns them into one line).
    """
    run_id = reader.select_run(conn, run)
    info = conn.execute(f"SELECT * FROM {reader.RUNS} WHERE id = ?", (run_id,)).fetchone()
    tables = _run_tables(conn, info["plugins"])
    recorded = reader.syscalls_recorded(conn, run_id)
    logged = "none" if not recorded else "command" if info["logged"] == "command" else "all"
    roots = reader.process_tree(conn, run_id)
    order = _tree_order(roots)
    exits: dict[int, tuple[int, int | None, int | None]] = {}  # process row -> (insn, virtual ns, wait status)
    renames: dict[int, list[tuple[int, int | None, str]]] = {}
    events: list[tuple[int, int]] = []  # (insn_count, virtual_ns) of the plugins' rows: the axis's anchors
    seen: dict[int, list[int]] = {}  # process row -> instruction counts at which some table saw it
    if "proc_events" in tables:
        for row in conn.execute(
            "SELECT kind, process_id, insn_count, virtual_ns, name, ok, wait_status FROM proc_events "
            "WHERE run_id = ? ORDER BY insn_count, id",
            (run_id,),
        ):
            if row["kind"] == "exit":
                exits[row["process_id"]] = (row["insn_count"], row["virtual_ns"], row["wait_status"])
            elif row["kind"] == "exec" and row["ok"] == 1:
                execed = (row["insn_count"], row["virtual_ns"], reader.stored_text(row["name"]))
                renames.setdefault(row["process_id"], []).append(execed)
            _sighting(row["process_id"], row["insn_count"], row["virtual_ns"], seen, events)
    for row in conn.execute(
        f"SELECT id, first_seen_insn, last_seen_insn FROM {reader.PROCESSES} WHERE run_id = ?", (run_id,)
    ):
        for insn in (row["first_seen_insn"], row["last_seen_insn"]):
            _sighting(row["id"], insn, None, seen, events)
    if "file_activity" in tables:
        for row in conn.execute(
            "SELECT process_id, first_insn_count, last_insn_count FROM file_activity WHERE run_id = ?", (run_id,)
        ):
            for insn in (row["first_insn_count"], row["last_insn_count"]):
                _sighting(row["process_id"], insn, None, seen, events)
    file_ops: list[sqlite3.Row] = []
    if "file_ops" in tables:
        file_ops = conn.execute(
            "SELECT process_id, insn_count, virtual_ns, op, path, new_path, flags, ok, errno FROM file_ops "
            "WHERE run_id = ? ORDER BY insn_count, id",
            (run_id,),
        ).fetchall()
        for row in file_ops:
            _sighting(row["process_id"], row["insn_count"], row["virtual_ns"], seen, events)
    run_end = info["insn_count"] if isinstance(info["insn_count"], int) else None
    run_end_ns = info["virtual_ns"] if isinstance(info["virtual_ns"], int) else None
    processes: list[Process] = []
    index: dict[int, int] = {}
    for node, depth, parent in order:
        wait_status = exits[node.id][2] if node.id in exits else None
        status = node.exit_status if node.exit_status is not None else wait_status
        # Without the logger no state was taken at the end; but proc_events sees every exit from the run's start,
        # so a process it saw no exit of still ran when the run ended.
        alive = not recorded and node.id not in exits and "proc_events" in tables and run_end is not None
        index[node.id] = len(processes)
        processes.append(
            Process(
                node.id,
                node.pid,
                node.ppid,
                node.name,
                node.names,
                [],
                depth,
                parent,
                node.state,
                status,
                ended_text(status, node.state, alive),
                None,
                None,
                logged=logged == "all",  # in a run of the command's calls: once a call of it is seen
            )
        )

    calls = Calls()
    per_process: dict[int, Counter[str]] = {}
    per_process_failed: dict[int, Counter[str]] = {}
    per_errno: dict[int, Counter[tuple[str, str]]] = {}
    fallback_files: dict[int, dict[str, FileRow]] = {}
    fallback_net: dict[int, Counter[tuple[str, str]]] = {}
    want_files = "file_activity" not in tables
    want_net = "net_sockets" not in tables
    for row in conn.execute(
        f"SELECT seq, insn_count, virtual_ns, process_id, number, name, errno, text, args FROM {reader.SYSCALLS} "
        "WHERE run_id = ? ORDER BY seq",
        (run_id,),
    ):
        at = index.get(row["process_id"])
        if at is None:
            continue  # a row of no process of the run: only an edited file has it
        name = row["name"] or "?"
        kind = classes.kind(row["number"], name)
        failed = row["errno"] is not None
        calls.seq.append(row["seq"])
        calls.insn.append(row["insn_count"])
        calls.ns.append(row["virtual_ns"])
        calls.row.append(at)
        calls.kind.append(kind)
        calls.failed.append(failed)
        calls.text.append(row["text"] or name)
        processes[at].logged = True
        _sighting(row["process_id"], row["insn_count"], None, seen, events)
        per_process.setdefault(at, Counter())[name] += 1
        if failed:
            per_process_failed.setdefault(at, Counter())[name] += 1
            per_errno.setdefault(at, Counter())[(name, row["errno"])] += 1
        paths = _PATH_ARGS.get(row["number"]) if want_files else None
        if (paths or (want_net and kind == "network")) and row["args"]:
            args = json.loads(row["args"])
            if not isinstance(args, dict):
                continue
            for arg in paths or ():
                # An empty path (statx(fd, "", AT_EMPTY_PATH)) names the fd, not a file.
                value = args.get(arg)  # a path as taken: text, {"hex": ...}, or {"error": ...} if unreadable
                if (isinstance(value, str) or (isinstance(value, dict) and "hex" in value)) and value:
                    path = str(reader.shown_value(value))
                    files = fallback_files.setdefault(at, {})
                    entry = files.setdefault(path, FileRow(path))
                    entry.calls += 1
                    entry.errors += failed
            if want_net and kind == "network":
                for value in args.values():
                    if (where := _endpoint(value)) is not None:
                        fallback_net.setdefault(at, Counter())[(name, where)] += 1

    axis = timebase(calls, events, (run_end, run_end_ns) if run_end is not None and run_end_ns is not None else None)
    calls.at = [ns / NS_PER_MS for ns in calls.ns if ns is not None] if axis.virtual else [float(i) for i in calls.insn]
    # The run's end when the file has it (runs.virtual_ns), else the last dated event.
    last_virtual_ns = run_end_ns if run_end_ns is not None else max(axis.ns) if axis.virtual else None
    for at, process in enumerate(processes):
        process.renames = [
            (ns / NS_PER_MS if axis.virtual and ns is not None else axis.at(insn), name)
            for insn, ns, name in renames.get(process.id, [])
        ]
        _lifetime(process, seen.get(process.id, []), exits.get(process.id), run_end, axis)
        counts = per_process.get(at, Counter())
        failures = per_process_failed.get(at, Counter())
        process.syscalls = sum(counts.values())
        process.failed = sum(failures.values())
        process.top_calls = [(n, c, failures[n]) for n, c in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]
        process.top_calls = process.top_calls[:TOP_CALLS]
        process.kernel_thread = is_kernel_thread(process)
        process.errors = [(n, e, c) for (n, e), c in sorted(per_errno.get(at, Counter()).items(), key=_by_count)]
        if want_files:
            process.files = sorted(fallback_files.get(at, {}).values(), key=lambda f: f.path)
        if want_net:
            process.endpoints = [
                {"call": n, "endpoint": w, "calls": c}
                for (n, w), c in sorted(fallback_net.get(at, Counter()).items(), key=_by_count)
            ]

    if not want_files:
        _file_activity(conn, run_id, index, processes)
    for row in file_ops:
        at = index.get(row["process_id"])
        if at is not None:
            when = row["virtual_ns"] / NS_PER_MS if axis.virtual and row["virtual_ns"] is not None else None
            processes[at].file_ops.append(
                (
                    when if when is not None else axis.at(row["insn_count"] or 0),
                    row["op"],
                    reader.stored_text(row["path"]),
                    reader.stored_text(row["new_path"]),
                    row["flags"],
                    "ok" if row["ok"] == 1 else row["errno"] or "failed",
                )
            )
    if not want_net:
        _net_activity(conn, run_id, index, processes)

    calls_total = len(calls.seq)
    failed_total = sum(calls.failed)
    wall = _wall_seconds(info["started_at"], info["ended_at"])
    summary = {
        "run": run_id,
        "label": info["label"],  # `run --label`, or a batch job's
        "batch_status": info["batch_status"],  # a batch's merged file: ok, failed or not run
        "batch_reason": info["batch_reason"],
        "image": info["image"],
        "kernel": info["kernel_release"],
        "plugins": json.loads(info["plugins"] or "[]"),
        "started_from": info["started_from"],
        "stop_reason": info["stop_reason"],
        "stop_message": info["stop_message"],
        "insn_count": info["insn_count"],
        "virtual_ns": last_virtual_ns,
        "virtual_at_end": run_end_ns is not None,  # virtual_ns is the run's end (else the last dated event)
        "wall_seconds": wall,
        "started_at": info["started_at"],
        "syscalls": calls_total,
        "failed": failed_total,
        "failure_rate": failed_total / calls_total if calls_total else 0.0,
        "processes": len(processes),
        "logged_processes": sum(p.logged for p in processes),
        "kernel_threads": sum(p.kernel_thread for p in processes),
    }
    sources = {
        "files": "syscalls (decoded path arguments)" if want_files else "file_activity",
        "endpoints": "syscalls (decoded socket addresses)" if want_net else "net_activity (net_sockets)",
        "names over time": "proc_events" if "proc_events" in tables else "processes.names (no times)",
    }
    if "file_ops" in tables:
        sources["renames and deletions"] = "file_activity (file_ops)"
    return RunReport(
        run_id,
        summary,
        processes,
        calls,
        axis,
        activity(calls),
        sources,
        reader.run_warning(conn, run_id),
        logged,
    )


def _sighting(
    process_id: object, insn: object, ns: object, seen: dict[int, list[int]], events: list[tuple[int, int]]
) -> None:
    """Note that a table saw process ``process_id`` at instruction ``insn`` (and virtual time ``ns``, an anchor of
    the axis); values that are not integers (an edited file) are left out."""
    if isinstance(process_id, int) and isinstance(insn, int):
        seen.setdefault(process_id, []).append(insn)
        if isinstance(ns, int):
            events.append((insn, ns))


def _lifetime(
    process: Process,
    seen: list[int],
    exit: tuple[int, int | None, int | None] | None,
    run_end: int | None,
    axis: Timebase,
) -> None:
    """Set the process's lifetime: from its first sighting to its exit event, or to the run's end while it still
    ran (a live state, or no exit seen by proc_events), else to its last sighting."""
    if not seen:
        return
    first, last = min(seen), max(seen)
    last_at: float | None = None
    if exit is not None and isinstance(exit[0], int):
        last = max(last, exit[0])
        if axis.virtual and isinstance(exit[1], int) and exit[0] >= max(seen):
            last_at = exit[1] / NS_PER_MS  # the exit's own time: exact
    elif run_end is not None and process.ended.startswith("still running"):
        last = max(last, run_end)
    process.first_insn, process.last_insn = first, last
    process.first_at = axis.at(first)
    process.last_at = last_at if last_at is not None else axis.at(last)


def _file_activity(conn: sqlite3.Connection, run_id: int, index: dict[int, int], processes: list[Process]) -> None:
    """Each process's files from file_activity's rows (``index``: processes row id -> position in ``processes``)."""
    for row in conn.execute(
        "SELECT process_id, path, opens, open_errors, reads, bytes_read, read_errors, writes, bytes_written, "
        "write_errors FROM file_activity WHERE run_id = ? ORDER BY path, id",
        (run_id,),
    ):
        at = index.get(row["process_id"])
        if at is not None:
            processes[at].files.append(
                FileRow(
                    reader.stored_text(row["path"]),
                    row["opens"] or 0,
                    row["reads"] or 0,
                    row["bytes_read"] or 0,
                    row["writes"] or 0,
                    row["bytes_written"] or 0,
                    (row["open_errors"] or 0) + (row["read_errors"] or 0) + (row["write_errors"] or 0),
                )
            )


def _net_activity(conn: sqlite3.Connection, run_id: int, index: dict[int, int], processes: list[Process]) -> None:
    """Each process's sockets from net_activity's ``net_sockets``, with what ``net_events`` adds."""
    # A socket's remote end as its calls named it, failed ones too (net_sockets keeps only what succeeded,
    # so a refused connect names its peer only in net_events), and its failed calls.
    named: dict[int, str | None] = {}
    socket_failures: dict[int, list[str]] = {}
    for row in conn.execute(
        "SELECT socket_id, call, remote_address, remote_port, errno FROM net_events "
        "WHERE run_id = ? AND socket_id IS NOT NULL ORDER BY seq, id",
        (run_id,),
    ):
        if row["remote_address"] is not None or row["remote_port"] is not None:
            named[row["socket_id"]] = _address(row["remote_address"], row["remote_port"])
        if row["errno"] is not None:
            socket_failures.setdefault(row["socket_id"], []).append(f"{row['call']} {row['errno']}")
    for row in conn.execute("SELECT * FROM net_sockets WHERE run_id = ? ORDER BY id", (run_id,)):
        at = index.get(row["process_id"])
        if at is not None:
            processes[at].endpoints.append(
                {
                    "socket": " ".join(str(v) for v in (row["domain"], row["type"]) if v is not None),
                    "made by": row["created_by"],
                    "local": _address(row["local_address"], row["local_port"]),
                    "remote": _address(row["remote_address"], row["remote_port"]) or named.get(row["id"]),
                    "bytes sent": row["bytes_sent"],
                    "bytes received": row["bytes_received"],
                    "failed calls": ", ".join(socket_failures.get(row["id"], [])) or None,
                }
            )


def _by_count(item: tuple[tuple[str, str], int]) -> tuple[int, str, str]:
    (first, second), count = item
    return (-count, first, second)


def activity(calls: Calls, bins: int = ACTIVITY_BINS) -> Activity:
    """Calls per kind in ``bins`` equal bins of the report's axis (``calls.at``) over the calls' span."""
    counts = {kind: [0] * bins for kind in classes.KINDS}
    if not calls.at:
        return Activity([0.0, 1.0], {kind: [0] for kind in classes.KINDS})
    low, high = min(calls.at), max(calls.at)
    width = (high - low) / bins or 1.0
    for at, kind in zip(calls.at, calls.kind, strict=True):
        counts[kind][min(bins - 1, int((at - low) / width))] += 1
    return Activity([low + i * width for i in range(bins + 1)], counts)
