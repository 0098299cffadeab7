"""Datasette metadata for a run database: what each table and column holds, and canned queries.

``qppsuite datasette-metadata DB > metadata.json`` writes it; ``datasette DB -m metadata.json`` then
shows each table's and column's description and lists the queries below on the database's page.
The shape is Datasette's metadata (docs.datasette.io, "Metadata": ``title``, ``description``,
``databases`` -> the database's name (its file name without ``.db``) -> ``tables`` -> ``description``,
``columns``, ``label_column``; ``queries`` -> ``sql``, ``title``, ``description``).  The column texts
follow :mod:`~qppsuite.plugins.syscalls_logger.database`'s and docs/plugins.md's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import qppsuite

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
            "process_id": "The process (processes.id).",
            "path": "The file, as the kernel resolved it (or as given, for a failed open).",
            "opens": "Successful opens.",
            "open_errors": "Failed opens.",
            "bytes_read": "Bytes read (the calls' return values).",
            "bytes_written": "Bytes written (the calls' return values).",
        },
    ),
    "file_ops": (
        "file_activity: one row per rename or deletion.",
        {
            "op": "rename, unlink or rmdir.",
            "path": "The path (a rename's old one).",
            "new_path": "A rename's new path.",
        },
    ),
    "proc_events": (
        "proc_events: one row per fork, new thread, exec, process exit or thread exit, in insn_count order.",
        {
            "kind": "fork, thread, exec, exit or thread_exit.",
            "process_id": "The process the event is about (processes.id).",
            "child_pid": "fork: the new process's pid; thread: the new thread's tid.",
            "argv": "exec: the argument list (JSON), as the kernel took it.",
            "exit_status": "exit: the status given to exit or exit_group (0-255, what a shell's $? shows).",
            "signal": "exit: the signal that killed the task.",
        },
    ),
}
"""Table -> (description, column -> description); a table or column the file lacks is left out."""

LABELS = {"runs": "image", "processes": "name", "threads": "name"}
"""What Datasette shows for a row another table refers to (its ``label_column``)."""

QUERIES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "ptrace_callers": (
        "Which processes called ptrace",
        "Each process that called ptrace, with its calls, the requests it made and how many failed.",
        "SELECT s.run_id, s.pid, p.name, p.names, COUNT(*) AS calls, "
        "GROUP_CONCAT(DISTINCT json_extract(s.args, '$.request')) AS requests, COUNT(s.errno) AS failed "
        "FROM syscalls s LEFT JOIN processes p ON p.id = s.process_id "
        "WHERE s.name = 'ptrace' GROUP BY s.process_id ORDER BY s.run_id, MIN(s.seq)",
        ("syscalls", "processes"),
    ),
    "files_opened": (
        "Files opened by each process",
        "Every path each process opened (open, openat, openat2, creat) as the call gave it, with the failures.",
        "SELECT s.run_id, s.pid, s.process_name, "
        "COALESCE(json_extract(s.args, '$.filename'), json_extract(s.args, '$.pathname')) AS path, "
        "COUNT(*) AS opens, COUNT(s.errno) AS failed, GROUP_CONCAT(DISTINCT s.errno) AS errors "
        "FROM syscalls s WHERE s.name IN ('open', 'openat', 'openat2', 'creat') "
        "GROUP BY s.process_id, path ORDER BY s.run_id, MIN(s.seq)",
        ("syscalls",),
    ),
    "files_by_process": (
        "Files each process touched (file_activity)",
        "What each process opened, read and wrote, by the path the kernel resolved (file_activity's table).",
        "SELECT f.run_id, f.pid, p.name, f.path, f.opens, f.open_errors, f.bytes_read, f.bytes_written "
        "FROM file_activity f LEFT JOIN processes p ON p.id = f.process_id ORDER BY f.run_id, f.first_insn_count",
        ("file_activity", "processes"),
    ),
    "failed_by_errno": (
        "Failed calls by errno",
        "How many calls failed with each errno, and which calls and processes they were.",
        "SELECT run_id, errno, COUNT(*) AS calls, GROUP_CONCAT(DISTINCT name) AS syscalls, "
        "GROUP_CONCAT(DISTINCT process_name) AS processes FROM syscalls WHERE errno IS NOT NULL "
        "GROUP BY run_id, errno ORDER BY run_id, calls DESC",
        ("syscalls",),
    ),
    "process_exits": (
        "How each process ended",
        "Each process with its exit code or the signal that killed it (from the wait status).",
        "SELECT run_id, pid, ppid, name, names, syscall_count, state, exit_status, "
        "CASE WHEN exit_status IS NULL THEN NULL "
        "WHEN exit_status & 127 THEN 'killed by signal ' || (exit_status & 127) "
        "ELSE 'exited ' || ((exit_status >> 8) & 255) END AS ended "
        "FROM processes ORDER BY run_id, start_time, id",
        ("processes",),
    ),
}
"""Canned query name -> (title, description, SQL, the tables it needs: left out when the file lacks one)."""


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
        "description": "System calls, processes and files of ARM Linux guests, recorded by qppsuite's plugins.",
        "source": f"qppsuite {qppsuite.__version__}",
        "databases": {path.stem: {"tables": tables, "queries": queries}},
    }
