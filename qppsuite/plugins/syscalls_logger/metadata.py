"""Datasette metadata for a run database: what each table and column holds, and canned queries.

``qppsuite datasette-metadata DB > metadata.json`` writes it; ``datasette DB -m metadata.json`` then
shows each table's and column's description and lists the queries below on the database's page.
The shape is Datasette's metadata (docs.datasette.io, "Metadata": ``title``, ``description``,
``databases`` -> the database's name (its file name without ``.db``) -> ``tables`` -> ``description``,
``columns``, ``label_column``; ``queries`` -> ``sql``, ``title``, ``description``).  The column texts
follow :mod:`~qppsuite.plugins.syscalls_logger.database`'s and docs/plugins.md's.
"""

from __future__ import annotations

import functools
import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

import qppsuite
from qppsuite.plugins.syscalls.arm_linux_abi import SIGNAL_NAMES

TABLES: dict[str, tuple[str, dict[str, str]]] = {
    "runs": (
        "One row per run that wrote this file: image, kernel, plugins, how it started and ended.",
        {
            "id": "The run's id; every other table's run_id refers to it.",
            "image": "The image's name.",
            "image_path": "The image bundle's directory.",
            "kernel_release": "The guest kernel's release (uname -r).",
            "plugins": "JSON list of the run's plugins, as asked for.",
            "qppsuite_version": "The qppsuite that wrote the run.",
            "started_at": "When the run started (ISO 8601, UTC).",
            "started_from": "The snapshot the run was restored from (ready-<hash>, or a named one); NULL: it booted.",
            "ended_at": "When the run ended (ISO 8601, UTC); NULL: it was killed, or is still running.",
            "stop_reason": "Why the guest stopped: poweroff, panic, hang, max_insns, timeout, interrupted, error...",
            "stop_message": "The stop reason in words.",
            "insn_count": "Guest instructions executed when the run stopped, counted from power-on.",
            "virtual_ns": "The guest's virtual time when the run stopped, ns since power-on (idle time included).",
            "syscall_count": "System calls syscalls_logger wrote for the run.",
            "logged": "Which calls syscalls_logger kept: all, or command (the run's command and its descendants).",
            "label": "A batch's merged database: the job's label (NULL in a run's own file).",
            "batch_status": "A batch's merged database: ok, failed or not run (NULL in a run's own file).",
            "batch_reason": "A batch's merged database: why the job failed or did not run, in one line.",
        },
    ),
    "processes": (
        "One row per process instance (a pid and its start time: a reused pid is another row), as osi_linux saw it.",
        {
            "id": "The process row's id (syscalls, threads and the plugins' tables refer to it).",
            "run_id": "The run (runs.id).",
            "pid": "Process id (the thread group id).",
            "ppid": "Parent's pid, as last seen.",
            "name": "The latest name (comm); execve changes it.",
            "names": "JSON list of every name it had, in order (a forked sh that execs cat: sh, exe, cat).",
            "start_time": "task_struct.start_time in ns: tells apart two processes with one pid.",
            "first_seen_insn": "Instruction count when first seen.",
            "last_seen_insn": "Instruction count of its last system call.",
            "syscall_count": "System calls logged for it.",
            "state": "When the run ended, the letter /proc/PID/stat shows (R S D T t Z X I P); X: it exited.",
            "exit_status": "Its wait status, do_exit's code: exit code << 8, or the signal that killed it in bits 0-6.",
            "command": "1: the run's command (the process that ran its script) or one it created, and so on down; "
            "0: not (the boot, the agent, its file transfers); NULL: unknown (no syscalls_logger).",
        },
    ),
    "threads": (
        "One row per thread of a process instance.",
        {
            "id": "The thread row's id.",
            "run_id": "The run (runs.id).",
            "process_id": "Its process (processes.id).",
            "tid": "Thread id.",
            "name": "The latest name (comm); prctl(PR_SET_NAME) changes it.",
            "names": "JSON list of every name it had, in order.",
            "first_seen_insn": "Instruction count when first seen.",
            "last_seen_insn": "Instruction count of its last system call.",
            "syscall_count": "System calls logged for it.",
        },
    ),
    "syscalls": (
        "One row per system call, in call order (seq), with its arguments decoded as strace prints them.",
        {
            "id": "The row's id.",
            "run_id": "The run (runs.id).",
            "seq": "Call order within the run.",
            "insn_count": "Guest instructions executed before the call, counted from power-on.",
            "virtual_ns": "The guest's virtual time at the call, ns since power-on (idle time included).",
            "pc": "Address of the SVC instruction.",
            "thumb": "1 if the caller ran in Thumb state.",
            "process_id": "The calling process (processes.id).",
            "pid": "The calling process's pid.",
            "tid": "The calling thread's tid.",
            "ppid": "The caller's parent pid at the call.",
            "process_name": "The caller's name at the call.",
            "thread_name": "The calling thread's name at the call.",
            "number": "The ARM EABI system call number.",
            "name": "The system call's name (the kernel's table name, as strace uses).",
            "raw_args": "JSON list of r0-r6 at the call.",
            "args": "JSON object: argument name -> decoded value at the call (strace's names).",
            "outputs": "JSON object: output argument name -> what the kernel wrote (successful calls).",
            "truncated": "Comma-separated names of arguments cut at a length limit.",
            "retval": "The return value (a negative errno is kept in errno).",
            "errno": "The error name (ENOENT...) of a failed call; NULL if it succeeded.",
            "returned": "1 if the call came back to the caller.",
            "return_insn_count": "Instruction count when it came back, or was found not to.",
            "ending": "Why it did not come back: exit, exec, restarted, killed, lost, pending.",
            "signal": "For ending killed: the signal that killed the thread.",
            "child": "1 for a fork or clone child's own return (retval 0).",
            "parent_seq": "For a child's row: the seq of its parent's call.",
            "asid": "The address space id (ASID) at the call.",
            "found_blocked": "1 for a call made before the run's plugins started, found blocked then.",
            "text": "The call as strace prints it.",
        },
    ),
    "file_activity": (
        "file_activity: one row per process and file, with its opens, reads and writes (bytes), and failures.",
        {
            "id": "The row's id.",
            "run_id": "The run (runs.id).",
            "process_id": "The process (processes.id).",
            "pid": "That process's pid.",
            "path": "The file, as the kernel resolved it (or as given, for a failed open).",
            "opens": "Successful opens.",
            "open_errors": "Failed opens.",
            "reads": "Successful read calls (a read of 0 bytes at the end of the file counts).",
            "bytes_read": "Bytes read (the calls' return values).",
            "read_errors": "Failed read calls.",
            "writes": "Successful write calls.",
            "bytes_written": "Bytes written (the calls' return values).",
            "write_errors": "Failed write calls.",
            "first_insn_count": "Instruction count of the first call that touched the file.",
            "last_insn_count": "Instruction count of the last call that touched the file.",
        },
    ),
    "file_ops": (
        "file_activity: one row per rename or deletion.",
        {
            "id": "The row's id.",
            "run_id": "The run (runs.id).",
            "process_id": "The process (processes.id).",
            "pid": "That process's pid.",
            "tid": "The calling thread's tid.",
            "insn_count": "Guest instructions executed before the call.",
            "virtual_ns": "The guest's virtual time at the call, ns since power-on (idle time included).",
            "syscall_seq": "The call (syscalls.seq).",
            "call": "The system call: rename, renameat, renameat2, unlink, unlinkat or rmdir.",
            "op": "rename, unlink or rmdir (an unlinkat with AT_REMOVEDIR is rmdir).",
            "path": "The path (a rename's old one), as the call gave it (joined to its directory fd's path).",
            "new_path": "A rename's new path.",
            "flags": "renameat2's flags (RENAME_NOREPLACE...) or unlinkat's AT_REMOVEDIR; NULL otherwise.",
            "ok": "1 if it succeeded, else 0.",
            "errno": "The error's name if it failed.",
        },
    ),
    "file_fds": (
        "file_activity: one row each time it asked osi_linux what an fd referred to: every open fd of a process "
        "when it first saw the process, an fd at its first read or write, and the new fd of each successful open.",
        {
            "id": "The row's id.",
            "run_id": "The run (runs.id).",
            "process_id": "The process (processes.id).",
            "pid": "That process's pid.",
            "fd": "The fd.",
            "path": "The file it referred to, as the kernel names it (pipe:[INODE], socket:[INODE] for those).",
            "syscall_seq": "The call at which it was asked (syscalls.seq).",
            "insn_count": "That call's instruction count.",
        },
    ),
    "net_sockets": (
        "net_activity: one row per socket, updated as the run goes (its ends and totals are what the calls showed "
        "by the end).",
        {
            "id": "The socket row's id.",
            "run_id": "The run (runs.id).",
            "process_id": "The process that made the socket, or that first held it (processes.id).",
            "inode": "The socket's inode: socket:[INODE] in /proc/PID/fd; every fd holding it refers to this row.",
            "created_by": "socket, socketpair, accept, accept4, or found: already open when net_activity first "
            "looked at its process (its domain, type and protocol are then NULL).",
            "created_seq": "The call that made it (syscalls.seq).",
            "created_insn": "The instruction count then.",
            "domain": "AF_INET, AF_INET6, AF_UNIX... as strace names it.",
            "type": "SOCK_STREAM, SOCK_DGRAM... (without SOCK_CLOEXEC and SOCK_NONBLOCK).",
            "protocol": "IPPROTO_TCP, IPPROTO_IP (0), NETLINK_ROUTE..., or the number.",
            "local_family": "The local end's family, as bind or getsockname showed it last.",
            "local_address": "The local end's address: IPv4/IPv6 text, an AF_UNIX path (@name: abstract).",
            "local_port": "The local end's port (AF_INET, AF_INET6).",
            "remote_family": "The remote end's family, as connect, accept or getpeername showed it.",
            "remote_address": "The remote end's address.",
            "remote_port": "The remote end's port.",
            "listener_id": "For an accepted socket: the listening socket (net_sockets.id).",
            "pair_id": "For a socketpair: the other end (net_sockets.id).",
            "backlog": "listen's backlog, once it listened.",
            "bytes_sent": "Bytes the sends that succeeded returned.",
            "bytes_received": "Bytes the receives that succeeded returned (MSG_PEEK not counted).",
            "sends": "Sends that succeeded.",
            "receives": "Receives that succeeded.",
        },
    ),
    "net_events": (
        "net_activity: one row per network call that returned (and read, write, close... on a socket fd).",
        {
            "id": "The row's id.",
            "run_id": "The run (runs.id).",
            "seq": "The call (syscalls.seq: join with the logger's row of it).",
            "insn_count": "Guest instructions executed before the call.",
            "process_id": "The calling process (processes.id).",
            "pid": "The calling process's pid.",
            "tid": "The calling thread's tid.",
            "call": "The system call: socket, connect, sendto, recvmsg, read, close...",
            "fd": "Its fd argument; the new fd for socket, socketpair, accept, accept4 (failed: the listener's).",
            "socket_id": "That fd's socket (net_sockets.id); NULL: no socket known there.",
            "local_family": "The local end this call named, else what the socket's earlier calls named.",
            "local_address": "The local end's address.",
            "local_port": "The local end's port.",
            "remote_family": "The remote end this call named (connect's, sendto's, recvfrom's, accept's peer).",
            "remote_address": "The remote end's address.",
            "remote_port": "The remote end's port.",
            "bytes": "Bytes sent or received by a call that succeeded (0: end of stream, or an empty datagram).",
            "messages": "sendmmsg, recvmmsg: messages transferred.",
            "retval": "The signed result.",
            "errno": "The error's name (ECONNREFUSED, EAGAIN...); NULL: it succeeded.",
        },
    ),
    "proc_events": (
        "proc_events: one row per fork, new thread, exec, process exit or thread exit, in insn_count order.",
        {
            "id": "The row's id.",
            "run_id": "The run (runs.id).",
            "insn_count": "When: the system call's entry (for the exits, do_exit), in guest instructions.",
            "virtual_ns": "When, in the guest's virtual ns since power-on.",
            "kind": "fork, thread, exec, exit (the process ended) or thread_exit (another thread, or the leader "
            "replaced by an exec in another thread).",
            "process_id": "The process the event is about (processes.id): a fork's parent, the exec'ing process, the "
            "one that ended.",
            "pid": "That process's pid.",
            "tid": "The calling or ending thread.",
            "name": "The process's name then (after a successful exec, the new one).",
            "call": "The system call (NULL for exits).",
            "syscall_seq": "The call (syscalls.seq).",
            "child_pid": "fork: the new process's pid; thread: the new thread's tid (NULL if the call failed).",
            "child_process_id": "fork: the new process (processes.id); thread: the caller's own process.",
            "flags": "clone and clone3: the clone flags as strace names them; NULL for fork and vfork.",
            "path": "exec: the path, as the kernel took it.",
            "argv": "exec: the argument list (JSON), as the kernel took it.",
            "argv_truncated": "exec: 1 when syscalls' array_limit or string_limit cut argv.",
            "ok": "fork, thread, exec: 1 if the call succeeded, 0 if it failed; NULL while unknown.",
            "retval": "fork, thread, exec: the return value (a fork's child pid; 0 for a successful exec).",
            "errno": "fork, thread, exec: the error's name if it failed.",
            "ending": "exec: exec (it succeeded and never came back), killed (its thread died in it) or pending.",
            "wait_status": "exit, thread_exit: do_exit's code (the wait status).",
            "exit_status": "exit: the status given to exit or exit_group (0-255, what a shell's $? shows).",
            "signal": "exit: the signal that killed the task (SIGKILL...).",
            "core_dumped": "exit: 1 if a core was dumped.",
        },
    ),
}
"""Table -> (description, column -> description); a table or column the file lacks is left out."""

LABELS = {"runs": "image", "processes": "name", "threads": "name"}
"""What Datasette shows for a row another table refers to (its ``label_column``)."""

SIGNALS_CTE = "signals(number, name) AS (VALUES {})".format(
    ", ".join(f"({number}, '{name}')" for number, name in sorted(SIGNAL_NAMES.items()))
)
"""A query's ``WITH`` table of the ARM Linux signal names the CLI and the report use (``SIGNAL_NAMES``)."""

ENDED_SQL = (
    "CASE WHEN exit_status IS NULL THEN NULL "
    "WHEN exit_status & 127 THEN 'killed by ' || COALESCE((SELECT name FROM signals WHERE number = exit_status & 127), "
    "'signal ' || (exit_status & 127)) || IIF(exit_status & 128, ' (core dumped)', '') "
    "ELSE 'exited ' || ((exit_status >> 8) & 255) END"
)
"""How a process ended from its wait status ``exit_status`` (needs :data:`SIGNALS_CTE`), as the CLI says it
(``proc_events.model.ExitCode.ended``): ``exited 7``, ``killed by SIGSEGV``, ``killed by SIGKILL (core dumped)``."""


INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Cn", "Co"))
"""The Unicode categories the canned queries escape, those ``qppsuite.cli.terminal.visible`` escapes: controls
(C0, DEL, C1), format characters (bidi overrides, zero-width), line and paragraph separators, lone surrogates,
unassigned code points, private use."""


@functools.cache
def invisible_cte() -> str:
    """A query's ``WITH`` table ``invisible(first, last)`` of the code point ranges of
    :data:`INVISIBLE_CATEGORIES`, from the Unicode data of this Python (the one the CLI's ``visible`` uses;
    701 ranges with Unicode 14, mostly unassigned ones), as a JSON list literal of ``[first, last]`` pairs
    (some 10 kB).  Which code points are unassigned changes with the Unicode version: a query written by
    another Python escapes those of its own."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) in INVISIBLE_CATEGORIES:
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return (
        "invisible(first, last) AS MATERIALIZED (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
        "FROM json_each('" + json.dumps(ranges, separators=(",", ":")) + "'))"
    )


def _escaped_sql(code: str) -> str:
    """The SQL for the code point ``code`` as ``visible`` spells it: ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``
    for an invisible one (:func:`invisible_cte`), a backslash doubled (as ``reader.shown_bytes`` does), else the
    character."""
    return (
        f"CASE WHEN {code} = 92 THEN '\\\\' WHEN {code} BETWEEN 32 AND 126 THEN char({code}) "
        f"WHEN EXISTS (SELECT 1 FROM invisible WHERE {code} BETWEEN first AND last) "
        f"THEN CASE WHEN {code} < 128 THEN printf('\\x%02x', {code}) "
        f"WHEN {code} < 65536 THEN printf('\\u%04x', {code}) ELSE printf('\\U%08x', {code}) END "
        f"ELSE char({code}) END"
    )


def shown_cte(values: str) -> str:
    """A query's ``WITH RECURSIVE`` tables ending in ``shown(raw, text, k)``: each stored name or path the query
    ``values`` gives (one column, ``v``: a column's text, :func:`stored_form_sql` for a decoded argument), with
    ``text`` as the CLI shows it, ``visible(reader.stored_text(v))``: the bytes (a ``{"hex": ...}`` text's, or
    a plain text's UTF-8 bytes, as SQLite's ``hex`` gives them), each UTF-8 sequence as its character, each other
    byte as ``\\xNN``, a backslash doubled, and each control or invisible character escaped as ``visible`` does
    (C0 and DEL as ``\\xNN``, others, C1 too, as ``\\uNNNN``, :func:`invisible_cte`).

    SQLite (3.40) has no function for it: ``bytes`` splits the hex into bytes, ``utf8`` finds the sequence each
    starts (its length ``n``, 0 for a byte that starts none: Python's UTF-8 rules, no overlong forms or
    surrogates) and its spelling, and ``walk`` joins them.  Text of printable ASCII without a backslash is shown
    as it is and left out of ``shown`` (:func:`shown_sql`), so the common names and paths cost nothing.  A
    ``{"hex": ...}`` text whose hex is not an even number of hex digits (the plugins write none) is shown as
    plain text.
    """
    hexdigit = "instr('0123456789abcdef', substr(h, 2 * k + {}, 1)) - 1"
    return (
        invisible_cte()
        + ", hexed(raw, h) AS (SELECT raw, lower(CASE WHEN x NOT GLOB '*[^0-9a-fA-F]*' AND length(x) % 2 = 0 THEN x "
        "ELSE hex(raw) END) FROM (SELECT DISTINCT v AS raw, CASE WHEN substr(v, 1, 8) = '{\"hex\": ' "
        "AND json_valid(v) THEN CASE WHEN json_type(v, '$.hex') = 'text' THEN json_extract(v, '$.hex') END END AS x "
        f"FROM ({values}) WHERE typeof(v) = 'text' AND (v GLOB '*[^ -~]*' OR instr(v, '\\') > 0 "
        "OR substr(v, 1, 8) = '{\"hex\": '))), "
        "bytes(raw, h, k, b) AS (SELECT raw, h, 0, NULL FROM hexed UNION ALL "
        f"SELECT raw, h, k + 1, ({hexdigit.format(1)}) * 16 + {hexdigit.format(2)} "
        "FROM bytes WHERE 2 * k < length(h)), "
        "utf8(raw, k, n, piece) AS (SELECT raw, k, n, CASE n WHEN 0 THEN '\\x' || substr(h, 2 * k - 1, 2) "
        f"ELSE {_escaped_sql('code')} END FROM (SELECT raw, h, k, n, CASE n WHEN 1 THEN b0 "
        "WHEN 2 THEN ((b0 & 31) << 6) | (b1 & 63) WHEN 3 THEN ((b0 & 15) << 12) | ((b1 & 63) << 6) | (b2 & 63) "
        "ELSE ((b0 & 7) << 18) | ((b1 & 63) << 12) | ((b2 & 63) << 6) | (b3 & 63) END AS code "
        "FROM (SELECT a.raw, a.h, a.k, a.b AS b0, b.b AS b1, c.b AS b2, d.b AS b3, CASE WHEN a.b < 128 THEN 1 "
        "WHEN a.b BETWEEN 194 AND 223 AND b.b BETWEEN 128 AND 191 THEN 2 "
        "WHEN a.b BETWEEN 224 AND 239 AND b.b BETWEEN IIF(a.b = 224, 160, 128) AND IIF(a.b = 237, 159, 191) "
        "AND c.b BETWEEN 128 AND 191 THEN 3 "
        "WHEN a.b BETWEEN 240 AND 244 AND b.b BETWEEN IIF(a.b = 240, 144, 128) AND IIF(a.b = 244, 143, 191) "
        "AND c.b BETWEEN 128 AND 191 AND d.b BETWEEN 128 AND 191 THEN 4 ELSE 0 END AS n "
        "FROM bytes a LEFT JOIN bytes b ON b.raw = a.raw AND b.k = a.k + 1 "
        "LEFT JOIN bytes c ON c.raw = a.raw AND c.k = a.k + 2 LEFT JOIN bytes d ON d.raw = a.raw AND d.k = a.k + 3 "
        "WHERE a.k > 0))), "
        "walk(raw, k, text) AS (SELECT raw, 1, '' FROM hexed UNION ALL "
        "SELECT w.raw, w.k + max(u.n, 1), w.text || u.piece FROM walk w JOIN utf8 u ON u.raw = w.raw AND u.k = w.k), "
        "shown(raw, text, k) AS (SELECT raw, text, MAX(k) FROM walk GROUP BY raw)"
    )


def shown_sql(column: str, alias: str) -> str:
    """``column`` (a stored name or path) as the CLI shows it, given the query joined :func:`shown_cte`'s table
    as ``alias`` on it (``LEFT JOIN shown AS alias ON alias.raw = column``)."""
    return f"COALESCE({alias}.text, {column})"


def stored_form_sql(kind: str, value: str, hexed: str) -> str:
    """A decoded JSON value (a call's path argument, an element of a ``names`` list) in a column's stored form
    (``values.column_text``), for :func:`shown_cte`: ``kind`` is the SQL of its ``json_type``, ``value`` of its
    value, ``hexed`` of its ``hex`` member.  A string as it is (one that starts like ``{"hex": ...}``'s text as
    the ``{"hex"}`` text of its bytes, so that it stays apart from those bytes), a ``{"hex": ...}`` object as its
    text with ``json.dumps``' spacing; NULL for anything else (``{"error": ...}``: an unreadable pointer)."""
    prefix = '\'{"hex": "\''
    return (
        f"CASE {kind} WHEN 'text' THEN IIF(substr({value}, 1, 8) = '{{\"hex\": ', {prefix} || lower(hex({value})) "
        f"|| '\"}}', {value}) WHEN 'object' THEN {prefix} || {hexed} || '\"}}' END"
    )


NAMES_ELEMENT = stored_form_sql("j.type", "j.value", "json_extract(j.value, '$.hex')")
"""An element ``j`` of ``json_each`` over a ``names`` list, in its stored form."""


def names_sql(column: str) -> str:
    """A ``names`` column (a JSON list of stored names) as a JSON list of the names as the CLI shows them, given
    the query's :func:`shown_cte` covers :func:`names_values`; NULL for text that is not JSON."""
    return (
        f"CASE WHEN json_valid({column}) THEN (SELECT json_group_array(COALESCE(m.text, x)) FROM "
        f"(SELECT {NAMES_ELEMENT} AS x FROM json_each({column}) j ORDER BY j.id) LEFT JOIN shown m ON m.raw = x) END"
    )


def names_values(table: str) -> str:
    """The query of every element of ``table``'s ``names`` lists in its stored form (a :func:`shown_cte` ``v``)."""
    return f"SELECT {NAMES_ELEMENT} FROM {table}, json_each(IIF(json_valid(names), names, '[]')) j"


OPENED_PATH = "COALESCE({}, {})".format(
    *(
        stored_form_sql(
            f"json_type(args, '$.{key}')", f"json_extract(args, '$.{key}')", f"json_extract(args, '$.{key}.hex')"
        )
        for key in ("filename", "pathname")
    )
)
"""An open call's path argument (openat's ``filename``, creat's ``pathname``) in its stored form."""


QUERIES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "ptrace_callers": (
        "Which processes called ptrace",
        "Each process that called ptrace, with its calls, the requests it made and how many failed.",
        "WITH RECURSIVE "
        + shown_cte(f"SELECT name AS v FROM processes UNION {names_values('processes')}")
        + f" SELECT s.run_id, s.pid, {shown_sql('p.name', 'n')} AS name, {names_sql('p.names')} AS names, "
        "COUNT(*) AS calls, GROUP_CONCAT(DISTINCT json_extract(s.args, '$.request')) AS requests, "
        "COUNT(s.errno) AS failed "
        "FROM syscalls s LEFT JOIN processes p ON p.id = s.process_id LEFT JOIN shown n ON n.raw = p.name "
        "WHERE s.name = 'ptrace' GROUP BY s.process_id ORDER BY s.run_id, MIN(s.seq)",
        ("syscalls", "processes"),
    ),
    "files_opened": (
        "Files opened by each process",
        "Every path each process opened (open, openat, openat2, creat) as the call gave it, with the failures "
        "(path NULL: the call's pointer could not be read).",
        "WITH RECURSIVE opened AS (SELECT *, "
        + OPENED_PATH
        + " AS stored_path FROM syscalls WHERE name IN ('open', 'openat', 'openat2', 'creat')), "
        + shown_cte("SELECT process_name AS v FROM opened UNION SELECT stored_path FROM opened")
        + f" SELECT s.run_id, s.pid, {shown_sql('s.process_name', 'n')} AS process_name, "
        f"{shown_sql('s.stored_path', 'q')} AS path, COUNT(*) AS opens, COUNT(s.errno) AS failed, "
        "GROUP_CONCAT(DISTINCT s.errno) AS errors FROM opened s LEFT JOIN shown n ON n.raw = s.process_name "
        "LEFT JOIN shown q ON q.raw = s.stored_path GROUP BY s.process_id, s.stored_path ORDER BY s.run_id, MIN(s.seq)",
        ("syscalls",),
    ),
    "files_by_process": (
        "Files each process touched (file_activity)",
        "What each process opened, read and wrote, by the path the kernel resolved (file_activity's table).",
        "WITH RECURSIVE "
        + shown_cte("SELECT name AS v FROM processes UNION SELECT path FROM file_activity")
        + f" SELECT f.run_id, f.pid, {shown_sql('p.name', 'n')} AS name, {shown_sql('f.path', 'q')} AS path, "
        "f.opens, f.open_errors, f.bytes_read, f.bytes_written "
        "FROM file_activity f LEFT JOIN processes p ON p.id = f.process_id LEFT JOIN shown n ON n.raw = p.name "
        "LEFT JOIN shown q ON q.raw = f.path ORDER BY f.run_id, f.first_insn_count",
        ("file_activity", "processes"),
    ),
    "failed_by_errno": (
        "Failed calls by errno",
        "How many calls failed with each errno, and which calls and processes (a JSON list of their names) they were.",
        "WITH RECURSIVE "
        + shown_cte("SELECT process_name AS v FROM syscalls WHERE errno IS NOT NULL")
        + " SELECT s.run_id, s.errno, COUNT(*) AS calls, GROUP_CONCAT(DISTINCT s.name) AS syscalls, "
        f"json_group_array(DISTINCT {shown_sql('s.process_name', 'n')}) AS processes "
        "FROM syscalls s LEFT JOIN shown n ON n.raw = s.process_name WHERE s.errno IS NOT NULL "
        "GROUP BY s.run_id, s.errno ORDER BY s.run_id, calls DESC",
        ("syscalls",),
    ),
    "process_exits": (
        "How each process ended",
        "Each process with its exit code or the signal that killed it (from the wait status), as qppsuite "
        "processes says it: exited 7, killed by SIGSEGV, killed by SIGABRT (core dumped).",
        f"WITH RECURSIVE {SIGNALS_CTE}, "
        + shown_cte(f"SELECT name AS v FROM processes UNION {names_values('processes')}")
        + f" SELECT run_id, pid, ppid, {shown_sql('name', 'n')} AS name, {names_sql('names')} AS names, "
        f"syscall_count, state, exit_status, {ENDED_SQL} AS ended FROM processes LEFT JOIN shown n ON n.raw = name "
        "ORDER BY run_id, start_time, id",
        ("processes",),
    ),
}
"""Canned query name -> (title, description, SQL, the tables it needs: left out when the file lacks one).  The
queries spell every name and path (a process's name, its ``names`` list, file_activity's paths, the paths the
open calls were given) as the CLI does (:func:`shown_cte`)."""


def datasette_metadata(path: Path, columns: dict[str, set[str]]) -> dict[str, Any]:
    """The metadata for the database file ``path`` whose tables have ``columns`` (table -> its column names)."""
    tables: dict[str, Any] = {}
    for table, (description, described) in TABLES.items():
        if table not in columns:
            continue
        entry: dict[str, Any] = {
            "description": description,
            "columns": {name: text for name, text in described.items() if name in columns[table]},
        }
        if table in LABELS:
            entry["label_column"] = LABELS[table]
        tables[table] = entry
    queries = {
        name: {"title": title, "description": description, "sql": sql}
        for name, (title, description, sql, needs) in QUERIES.items()
        if all(table in columns for table in needs)
    }
    return {
        "title": f"qppsuite run database {path.name}",
        "description": "System calls, processes and files of ARM Linux guests, recorded by qppsuite's plugins. "
        "The canned queries spell names and paths as qppsuite's commands do: a backslash doubled, a byte that is "
        "not UTF-8 as \\xNN, an ASCII control character as \\xNN (ESC: \\x1b), another invisible one as \\uNNNN.",
        "source": f"qppsuite {qppsuite.__version__}",
        "databases": {path.stem: {"tables": tables, "queries": queries}},
    }
