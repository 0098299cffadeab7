"""What the run report shows, read from a run database: plain data, no HTML.

Everything comes from the file :mod:`qppsuite.plugins.syscalls_logger.reader` opens read-only: the
logger's ``runs``, ``processes`` and ``syscalls``; ``proc_events`` (exec names and exits with their
times), ``file_activity`` (files per process) and ``net_sockets`` (net_activity's endpoints) when the
run loaded those plugins; when it did not, files and endpoints come from the logged calls' decoded
arguments.  Strings are the guest's, as stored: the renderers escape them.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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
    first_insn: int | None
    last_insn: int | None
    #: first_insn and last_insn on the report's axis (:class:`Timebase`), None where they are
    first_at: float | None = None
    last_at: float | None = None
    syscalls: int = 0  # logged calls (the syscalls rows)
    failed: int = 0
    top_calls: list[tuple[str, int, int]] = field(default_factory=list)  # name, calls, failed
    errors: list[tuple[str, str, int]] = field(default_factory=list)  # call, errno, count
    files: list[FileRow] = field(default_factory=list)
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
        """A bin width in the axis's unit, for a label: ``2.5 ms`` or ``1,234 instructions``."""
        return f"{width:,.3g} ms" if self.virtual else f"{width:,.0f} instructions"

    def point(self, insn: int, ns: int | None) -> str:
        """A moment for a hover box or a name's history: its virtual time (when known) and instruction count."""
        return f"{ns / NS_PER_MS:,.3f} ms, {insn:,} insns" if ns is not None else f"{insn:,} insns"

    def at(self, insn: int) -> float:
        """An instruction count on the axis.  On virtual time it is interpolated linearly between the two
        calls around it (power-on, 0 and 0, anchors the start; past the last call the run's mean rate
        carries on): exact at a call, and off by at most the idle time between two calls."""
        if not self.virtual:
            return float(insn)
        i = bisect.bisect_right(self.insns, insn)
        x0, y0 = (self.insns[i - 1], self.ns[i - 1]) if i else (0, 0)
        mean = y0 / x0 if x0 else 0.0  # past the last call: the mean rate since power-on
        rate = (self.ns[i] - y0) / (self.insns[i] - x0) if i < len(self.insns) else mean
        ns = y0 + (insn - x0) * rate
        return ns / NS_PER_MS


def timebase(calls: Calls) -> Timebase:
    """Virtual time when every call has one, else instructions (an older file, or an edited one)."""
    if calls.ns and all(ns is not None for ns in calls.ns):
        return Timebase(tuple(calls.insn), tuple(ns for ns in calls.ns if ns is not None))
    return Timebase()


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


#: The analysis plugins' tables the report reads, by the plugin that writes them.
PLUGIN_TABLES = {"proc_events": "proc_events", "file_activity": "file_activity", "net_sockets": "net_activity"}


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


def ended_text(exit_status: int | None, state: str | None, signal: str | None = None) -> str:
    """How a process ended, from its wait status (include/uapi/linux/wait.h) or proc_events' signal name."""
    if exit_status is None:
        return f"still running (state {state})" if state and state not in ("X", "Z") else "unknown"
    if signal:
        return f"killed by {signal}"
    if exit_status & 0x7F:
        return f"killed by signal {exit_status & 0x7F}"
    return f"exited {(exit_status >> 8) & 0xFF}"


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
    where = value.get("addr", value.get("path", ""))
    port = value.get("port")
    return f"{value['family']} {where}" + (f":{port}" if port is not None else "")


def _address(address: object, port: object) -> str | None:
    """net_sockets' address and port as ``1.2.3.4:80`` (``[::]:80`` for IPv6); None when neither is known.

    An AF_UNIX path of an older file may be a BLOB of its bytes: shown with the bytes that are not UTF-8 escaped.
    """
    if address is None and port is None:
        return None
    if isinstance(address, bytes):
        address = address.decode("utf-8", "backslashreplace")
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
    roots = reader.process_tree(conn, run_id)
    order = _tree_order(roots)
    exits: dict[int, tuple[int | None, str | None]] = {}
    renames: dict[int, list[tuple[int, int | None, str]]] = {}
    last_virtual_ns: int | None = None
    if "proc_events" in tables:
        for row in conn.execute(
            "SELECT kind, process_id, insn_count, virtual_ns, name, ok, wait_status, signal FROM proc_events "
            "WHERE run_id = ? ORDER BY insn_count, id",
            (run_id,),
        ):
            if row["kind"] == "exit":
                exits[row["process_id"]] = (row["wait_status"], row["signal"])
            elif row["kind"] == "exec" and row["ok"] == 1:
                execed = (row["insn_count"], row["virtual_ns"], reader.stored_text(row["name"]))
                renames.setdefault(row["process_id"], []).append(execed)
            if row["virtual_ns"] is not None:
                last_virtual_ns = max(last_virtual_ns or 0, int(row["virtual_ns"]))
    extent = {
        row["id"]: (row["first_seen_insn"], row["last_seen_insn"])
        for row in conn.execute(
            f"SELECT id, first_seen_insn, last_seen_insn FROM {reader.PROCESSES} WHERE run_id = ?", (run_id,)
        )
    }
    processes: list[Process] = []
    index: dict[int, int] = {}
    for node, depth, parent in order:
        wait_status, signal = exits.get(node.id, (node.exit_status, None))
        status = node.exit_status if node.exit_status is not None else wait_status
        first, last = extent.get(node.id, (None, None))
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
                ended_text(status, node.state, signal),
                first,
                last,
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
                if isinstance(args.get(arg), str):
                    files = fallback_files.setdefault(at, {})
                    entry = files.setdefault(args[arg], FileRow(args[arg]))
                    entry.calls += 1
                    entry.errors += failed
            if want_net and kind == "network":
                for value in args.values():
                    if (where := _endpoint(value)) is not None:
                        fallback_net.setdefault(at, Counter())[(name, where)] += 1

    axis = timebase(calls)
    calls.at = [ns / NS_PER_MS for ns in axis.ns] if axis.virtual else [float(i) for i in calls.insn]
    if axis.virtual:
        last_virtual_ns = max(last_virtual_ns or 0, axis.ns[-1])
    for at, process in enumerate(processes):
        process.renames = [
            (ns / NS_PER_MS if axis.virtual and ns is not None else axis.at(insn), name)
            for insn, ns, name in renames.get(process.id, [])
        ]
        if process.first_insn is not None and process.last_insn is not None:
            process.first_at, process.last_at = axis.at(process.first_insn), axis.at(process.last_insn)
        counts = per_process.get(at, Counter())
        failures = per_process_failed.get(at, Counter())
        process.syscalls = sum(counts.values())
        process.failed = sum(failures.values())
        process.top_calls = [(n, c, failures[n]) for n, c in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]
        process.top_calls = process.top_calls[:TOP_CALLS]
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
    if not want_net:
        _net_activity(conn, run_id, index, processes)

    calls_total = len(calls.seq)
    failed_total = sum(calls.failed)
    wall = _wall_seconds(info["started_at"], info["ended_at"])
    summary = {
        "run": run_id,
        "image": info["image"],
        "kernel": info["kernel_release"],
        "plugins": json.loads(info["plugins"] or "[]"),
        "started_from": info["started_from"],
        "stop_reason": info["stop_reason"],
        "stop_message": info["stop_message"],
        "insn_count": info["insn_count"],
        "virtual_ns": last_virtual_ns,
        "wall_seconds": wall,
        "started_at": info["started_at"],
        "syscalls": calls_total,
        "failed": failed_total,
        "failure_rate": failed_total / calls_total if calls_total else 0.0,
        "processes": len(processes),
    }
    sources = {
        "files": "syscalls (decoded path arguments)" if want_files else "file_activity",
        "endpoints": "syscalls (decoded socket addresses)" if want_net else "net_activity (net_sockets)",
        "names over time": "proc_events" if "proc_events" in tables else "processes.names (no times)",
    }
    return RunReport(
        run_id, summary, processes, calls, axis, activity(calls), sources, reader.run_warning(conn, run_id)
    )


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
