"""A process event as other plugins receive it (:class:`ProcEvent`), and as the ``proc_events`` table holds it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls.arm_linux_abi import SIGNAL_NAMES
from qppsuite.plugins.syscalls.values import JSONValue, column_text

FORK = "fork"  # a new process: fork, vfork, clone without CLONE_THREAD, clone3 likewise
THREAD = "thread"  # a new thread of the caller's process: clone or clone3 with CLONE_THREAD
EXEC = "exec"  # execve or execveat, whether it succeeded or failed
EXIT = "exit"  # a process ended: its thread group leader's do_exit
THREAD_EXIT = "thread_exit"  # a thread other than the leader ended, or the leader a thread's exec superseded
KINDS = (FORK, THREAD, EXEC, EXIT, THREAD_EXIT)

CLONE_THREAD = 0x00010000
"""include/uapi/linux/sched.h: the child shares the caller's thread group (a thread, not a process)."""


@dataclass(frozen=True, slots=True)
class ExitCode:
    """do_exit's ``code``, the wait status of the task (kernel/exit.c): ``(status << 8)`` when it exited,
    the terminating signal in bits 0-6 (bit 7: a core was dumped) when a signal killed it."""

    wait_status: int

    @property
    def signal(self) -> str | None:
        """The name of the signal that killed the task (``SIGKILL``), or None when it exited."""
        number = self.wait_status & 0x7F
        return SIGNAL_NAMES.get(number, f"signal {number}") if number else None

    @property
    def exit_status(self) -> int | None:
        """The status the task passed to exit/exit_group (0-255, what the shell's ``$?`` shows), or None."""
        return None if self.wait_status & 0x7F else (self.wait_status >> 8) & 0xFF

    @property
    def core_dumped(self) -> bool:
        return bool(self.wait_status & 0x80)

    @property
    def ended(self) -> str:
        """How the task ended, as the views say it: ``exited 3``, ``killed by SIGTERM``, ``killed by SIGSEGV
        (core dumped)``."""
        if self.signal is None:
            return f"exited {self.exit_status}"
        return f"killed by {self.signal}" + (" (core dumped)" if self.core_dumped else "")


@dataclass(frozen=True, slots=True)
class ProcEvent:
    """A process was created, replaced its program, or ended (``kind``, one of :data:`KINDS`).

    ``insn_count`` and ``virtual_ns`` (the guest's virtual time) date the event: for fork, thread and
    exec the system call's entry, for the exits the thread's ``do_exit``.  ``process`` is osi_linux's
    process the event is about (the parent of a fork, the process that exec'd, with its name after a
    successful exec, the process that ended), ``pid`` its pid and ``tid`` the thread that made the
    call or ended.  ``call`` names the system call (None for the exits) and ``syscall_seq`` its
    ``seq`` (the logger's ``syscalls.seq`` of the same run).

    fork and thread: ``child_pid`` (the new process's pid or the new thread's tid, None when the call
    failed), ``child`` (osi_linux's view of the new process, when it could be read), ``flags`` (clone's
    flags as strace names them; None for fork and vfork).  exec: ``path`` and ``argv`` as the kernel
    took them (decoded strings; ``{"hex": ...}`` for bytes that are not UTF-8, ``{"error": ...}`` for a
    pointer it could not read; ``argv_truncated`` when the syscalls plugin's limits cut it).  fork,
    thread and exec: ``ok`` (True: it succeeded; None: unknown, see ``ending``), ``retval`` and
    ``errno``; ``ending`` for an exec that never came back: ``exec`` (it succeeded), ``killed`` or
    ``pending``.  Exits: ``code`` (the wait status, decoded).
    """

    kind: str
    insn_count: int
    virtual_ns: int | None
    process: OsiProcess | None
    pid: int | None
    tid: int | None
    call: str | None = None
    syscall_seq: int | None = None
    child_pid: int | None = None
    child: OsiProcess | None = None
    flags: str | None = None
    path: JSONValue = None
    argv: JSONValue = None
    argv_truncated: bool = False
    ok: bool | None = None
    retval: int | None = None
    errno: str | None = None
    ending: str | None = None
    code: ExitCode | None = None


COLUMNS: dict[str, type] = {
    "id": int,
    "run_id": int,
    "insn_count": int,
    "virtual_ns": int,
    "kind": str,
    "process_id": int,
    "pid": int,
    "tid": int,
    "name": str,
    "call": str,
    "syscall_seq": int,
    "child_pid": int,
    "child_process_id": int,
    "flags": str,
    "path": str,
    "argv": str,
    "argv_truncated": int,
    "ok": int,
    "retval": int,
    "errno": str,
    "ending": str,
    "wait_status": int,
    "exit_status": int,
    "signal": str,
    "core_dumped": int,
}
"""The ``proc_events`` table (docs/plugins.md describes each column)."""

FOREIGN_KEYS = (("process_id", "processes"), ("child_process_id", "processes"))
INDEXES = (("run_id", "insn_count"), ("process_id",), ("kind",))


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def table_row(event: ProcEvent, process_id: int | None, child_process_id: int | None) -> dict[str, Any]:
    """The event as a ``proc_events`` row, its processes given as their ``processes`` row ids."""
    code = event.code
    return {
        "insn_count": event.insn_count,
        "virtual_ns": event.virtual_ns,
        "kind": event.kind,
        "process_id": process_id,
        "pid": event.pid,
        "tid": event.tid,
        "name": column_text(event.process.stored_name) if event.process is not None else None,
        "call": event.call,
        "syscall_seq": event.syscall_seq,
        "child_pid": event.child_pid,
        "child_process_id": child_process_id,
        "flags": event.flags,
        "path": column_text(event.path),
        "argv": json.dumps(event.argv) if event.argv is not None else None,
        "argv_truncated": int(event.argv_truncated) if event.kind == EXEC else None,
        "ok": _flag(event.ok),
        "retval": event.retval,
        "errno": event.errno,
        "ending": event.ending,
        "wait_status": code.wait_status if code is not None else None,
        "exit_status": code.exit_status if code is not None else None,
        "signal": code.signal if code is not None else None,
        "core_dumped": _flag(code.core_dumped) if code is not None else None,
    }
