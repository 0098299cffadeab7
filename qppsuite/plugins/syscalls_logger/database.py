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

import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils

from qppsuite.errors import PluginError

RUNS = "runs"
PROCESSES = "processes"
SYSCALLS = "syscalls"

RUN_COLUMNS: dict[str, Any] = {
    "id": int,
    "image": str,
    "image_path": str,
    "kernel_release": str,
    "plugins": str,  # JSON list, in load order
    "qppsuite_version": str,
    "started_at": str,  # ISO 8601 UTC
    "ended_at": str,
    "stop_reason": str,
    "stop_message": str,
    "insn_count": int,
    "syscall_count": int,
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
}

SYSCALL_COLUMNS: dict[str, Any] = {
    "id": int,
    "run_id": int,
    "seq": int,  # call order within the run
    "insn_count": int,  # guest instructions executed before the call
    "pc": int,  # the SVC instruction
    "thumb": int,
    "process_id": int,
    "pid": int,
    "tid": int,
    "ppid": int,
    "process_name": str,
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
    "ending": str,  # why not: exit, exec, restarted, lost, pending
    "child": int,  # 1 for a fork/clone child's own return (retval 0)
    "parent_seq": int,  # for a child's row: the parent's call
    "asid": int,
    "text": str,  # strace-like line
}

INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (SYSCALLS, ("run_id", "seq")),
    (SYSCALLS, ("pid",)),
    (SYSCALLS, ("name",)),
    (SYSCALLS, ("process_name",)),
    (SYSCALLS, ("process_id",)),
    (PROCESSES, ("run_id", "pid")),
)


def _create_schema(db: sqlite_utils.Database) -> None:
    db[RUNS].create(RUN_COLUMNS, pk="id", if_not_exists=True)  # type: ignore[union-attr]
    db[PROCESSES].create(  # type: ignore[union-attr]
        PROCESS_COLUMNS, pk="id", foreign_keys=[("run_id", RUNS, "id")], if_not_exists=True
    )
    db[SYSCALLS].create(  # type: ignore[union-attr]
        SYSCALL_COLUMNS,
        pk="id",
        foreign_keys=[("run_id", RUNS, "id"), ("process_id", PROCESSES, "id")],
        if_not_exists=True,
    )
    for table, columns in INDEXES:
        db[table].create_index(columns, if_not_exists=True)  # type: ignore[union-attr]


class SyscallDatabase:
    """One run's writer: the ``runs`` row, buffered process and syscall rows, batch commits."""

    def __init__(self, path: Path, run: dict[str, Any]) -> None:
        """Open (creating if needed) and start a run; any failure is a one-line :class:`PluginError`."""
        self.path = path
        try:
            self.db = sqlite_utils.Database(path)
            self.db.execute("PRAGMA foreign_keys = ON")
            self.db.enable_wal()
            with self.db.atomic():
                _create_schema(self.db)
                self.run_id = int(self.db[RUNS].insert(run).last_pk)  # type: ignore[union-attr,arg-type]
                self._next_process_id = 1 + int(
                    self.db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {PROCESSES}").fetchone()[0]
                )
        except (sqlite3.Error, OSError) as exc:
            raise PluginError(f"cannot write the syscall database {path}: {exc}") from None
        self._syscalls: list[dict[str, Any]] = []
        self._dirty: dict[int, dict[str, Any]] = {}
        self.rows_written = 0

    def new_process_id(self) -> int:
        process_id = self._next_process_id
        self._next_process_id += 1
        return process_id

    def add(self, row: dict[str, Any], process: dict[str, Any] | None) -> int:
        """Buffer a syscall row and the (updated) row of its process; returns the rows buffered."""
        row["run_id"] = self.run_id
        self._syscalls.append(row)
        if process is not None:
            self._dirty[process["id"]] = process
        return len(self._syscalls)

    def flush(self) -> None:
        """Commit everything buffered in one transaction."""
        if not self._syscalls and not self._dirty:
            return
        rows, self._syscalls = self._syscalls, []
        processes, self._dirty = list(self._dirty.values()), {}
        with self.db.atomic():
            if processes:
                for process in processes:
                    process["run_id"] = self.run_id
                self.db[PROCESSES].upsert_all(processes, pk="id")  # type: ignore[union-attr]
            if rows:
                self.db[SYSCALLS].insert_all(rows, batch_size=len(rows))  # type: ignore[union-attr]
        self.rows_written += len(rows)

    def end_run(self, fields: dict[str, Any]) -> None:
        """Flush and record how the run ended (``ended_at``, stop reason, counts)."""
        self.flush()
        with self.db.atomic():
            self.db[RUNS].update(self.run_id, {**fields, "syscall_count": self.rows_written})  # type: ignore[union-attr]

    def close(self) -> None:
        self.db.close()
