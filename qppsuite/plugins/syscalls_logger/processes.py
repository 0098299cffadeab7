"""A run's ``processes`` and ``threads`` rows, found by identity and kept up to date in memory.

A process is its ``(pid, start_time)``: a pid reused later is another process, with another row.  A
thread is its ``(process row id, tid)``.  The rows are plain dicts in the shape of
:data:`~qppsuite.plugins.syscalls_logger.database.PROCESS_COLUMNS` and ``THREAD_COLUMNS``; every row
that is created or changes is marked dirty, and the database's next commit writes the dirty rows.
The system call logger and every plugin that asks the run database for a process row id share one
:class:`ProcessRows`, so a process has one row whoever saw it first.  A row's ``command`` (whether the
process is the run's command's, :mod:`.command`) is the logger's to decide: it sets :attr:`ProcessRows.command_of`
and keeps each row it logs up to date; without the logger it stays None (unknown).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls.values import JSONValue, column_text


class ProcessRows:
    """The process and thread rows of one run; the two functions hand out new row ids."""

    def __init__(self, new_process_id: Callable[[], int], new_thread_id: Callable[[], int]) -> None:
        self._new_process_id = new_process_id
        self._new_thread_id = new_thread_id
        self._processes: dict[tuple[int, int], dict[str, Any]] = {}  # (pid, start_time) -> row
        self._names: dict[int, list[JSONValue]] = {}  # process row id -> names over time (stored forms)
        self._threads: dict[tuple[int, int], dict[str, Any]] = {}  # (process row id, tid) -> row
        self._thread_names: dict[int, list[JSONValue]] = {}  # thread row id -> names over time
        self.by_pid: dict[int, dict[str, Any]] = {}  # pid -> its latest process row
        self.dirty: dict[int, dict[str, Any]] = {}  # process row id -> row, to write at the next commit
        self.dirty_threads: dict[int, dict[str, Any]] = {}
        #: ``processes.command`` of a row created now (1: the command's, 0: not); None: left NULL, unknown.
        self.command_of: Callable[[OsiProcess], int] | None = None

    def __iter__(self) -> Iterator[tuple[tuple[int, int], dict[str, Any]]]:
        """``((pid, start_time), row)`` of every process seen."""
        return iter(self._processes.items())

    def process(self, proc: OsiProcess, insn_count: int | None) -> dict[str, Any]:
        """The row of ``proc``, created at its first sight; a new name (execve) or parent is recorded.

        Names are stored as guest text is (``name``: the text, or ``{"hex": ...}``'s JSON for bytes that are
        not UTF-8; ``names``: a JSON list of those values)."""
        key = (proc.pid, proc.start_time)
        row = self._processes.get(key)
        stored = proc.stored_name
        name = column_text(stored)
        if row is None:
            row_id = self._new_process_id()
            row = self._processes[key] = {
                "id": row_id,
                "pid": proc.pid,
                "ppid": proc.ppid,
                "name": name,
                "names": json.dumps([stored]),
                "start_time": proc.start_time,
                "first_seen_insn": insn_count,
                "last_seen_insn": insn_count,
                "syscall_count": 0,
                "state": None,
                "exit_status": None,
                "command": None if self.command_of is None else self.command_of(proc),
            }
            self._names[row_id] = [stored]
            self.by_pid[proc.pid] = row
            self.dirty[row_id] = row
        elif row["name"] != name or row["ppid"] != proc.ppid:
            row["ppid"] = proc.ppid
            if row["name"] != name:
                _rename(row, self._names[row["id"]], name, stored)
            self.dirty[row["id"]] = row
        return row

    def thread(
        self, process: dict[str, Any], tid: int | None, stored: JSONValue, insn_count: int | None
    ) -> dict[str, Any] | None:
        """The thread's row, created at its first sight; a new name (PR_SET_NAME, execve) is appended.

        ``stored``: the thread's name as guest text is stored (``OsiThread.stored_name``)."""
        name = column_text(stored)
        if tid is None or name is None:
            return None
        key = (process["id"], tid)
        row = self._threads.get(key)
        if row is None:
            row_id = self._new_thread_id()
            row = self._threads[key] = {
                "id": row_id,
                "process_id": process["id"],
                "tid": tid,
                "name": name,
                "names": json.dumps([stored]),
                "first_seen_insn": insn_count,
                "last_seen_insn": insn_count,
                "syscall_count": 0,
            }
            self._thread_names[row_id] = [stored]
            self.dirty_threads[row_id] = row
        elif row["name"] != name:
            _rename(row, self._thread_names[row["id"]], name, stored)
            self.dirty_threads[row["id"]] = row
        return row

    def changed(self, row: dict[str, Any]) -> None:
        """Write a process row changed in place (its counts, state or exit status) at the next commit."""
        self.dirty[row["id"]] = row

    def take_dirty(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The process and thread rows to write, forgetting that they were dirty."""
        processes, self.dirty = list(self.dirty.values()), {}
        threads, self.dirty_threads = list(self.dirty_threads.values()), {}
        return processes, threads


def _rename(row: dict[str, Any], history: list[JSONValue], name: str | None, stored: JSONValue) -> None:
    """A process's or thread's new name: its row's ``name``, and its ``names`` history (JSON) gaining it."""
    row["name"] = name
    history.append(stored)
    row["names"] = json.dumps(history)
