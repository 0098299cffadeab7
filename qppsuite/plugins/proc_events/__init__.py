"""The ``proc_events`` plugin: the process timeline, as a QPP callback and as a table of the run database.

Built only on QPP: ``syscalls``' per-call callbacks for fork, vfork, clone, clone3, execve and
execveat (and ``on_syscall_noreturn``, which says when an exec succeeded), and osi_linux's
``on_thread_exit`` and exports.  Each event is run through ``on_proc_event(event)`` (a
:class:`~qppsuite.plugins.proc_events.model.ProcEvent`) and written to the table ``proc_events``.

When events are reported: a fork or clone when the child first returns or the parent's call returns,
whichever is first (a vfork parent waits for its child's exec or exit, so the child's return comes
first); an exec that failed when it returns, one that succeeded when the thread next makes a system
call in its new program (syscalls learns of it then); an exit at ``do_exit``.  Each is dated by its
system call's entry (the exits by ``do_exit``), so ordered by ``insn_count`` the table is the timeline.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from qppsuite.core.guest import GuestMemoryError
from qppsuite.core.qpp import Arg, CallbackSpec, Plugin
from qppsuite.plugins.osi_linux.model import OsiProcess, OsiThread
from qppsuite.plugins.proc_events.model import (
    CLONE_THREAD,
    COLUMNS,
    EXEC,
    EXIT,
    FOREIGN_KEYS,
    FORK,
    INDEXES,
    THREAD,
    THREAD_EXIT,
    ExitCode,
    ProcEvent,
    table_row,
)
from qppsuite.plugins.syscalls.arm_linux_abi import FLAGSETS
from qppsuite.plugins.syscalls.context import ENDING_EXEC, SyscallContext
from qppsuite.plugins.syscalls.pairing import FORK_CALLS
from qppsuite.plugins.syscalls_logger.run_database import RunDatabase, open_run_database

EXEC_CALLS = ("execve", "execveat")
_CLONE_FLAGS = FLAGSETS["clone_flags"]


@dataclass(slots=True)
class _Call:
    """A fork-like or exec call as it was made, until its outcome is known."""

    ctx: SyscallContext
    process: OsiProcess | None
    tid: int | None
    virtual_ns: int | None
    flags: int | None  # clone and clone3: the clone flags
    reported: bool = False  # a fork child's return reported it before the parent's return


class ProcEvents(Plugin):
    """The process timeline: fork/clone, exec with argv, exit with status or signal (on_proc_event, table)"""

    name = "proc_events"
    requires = ("osi_linux", "syscalls")
    callbacks = (
        CallbackSpec("on_proc_event", "a process was created, replaced its program, or ended", event=ProcEvent),
    )
    args: ClassVar[Any] = {
        "db": Arg(Path, None, help="run database (default: syscalls_logger's, or one named as its default)"),
        "table": Arg(bool, True, help="write the proc_events table (false: only run on_proc_event)"),
    }

    def load(self) -> None:
        self.get_current = self.qpp.import_function("osi_linux", "get_current")
        self.get_task = self.qpp.import_function("osi_linux", "get_task")
        self.get_process = self.qpp.import_function("osi_linux", "get_process")
        self.on_proc_event = self.callback("on_proc_event")
        self._calls: dict[int, _Call] = {}  # seq -> a fork or exec call awaiting its outcome
        for call in (*FORK_CALLS, *EXEC_CALLS):
            self.qpp.register("syscalls", f"on_sys_{call}", self._made, owner=self.name)
        for call in FORK_CALLS:
            self.qpp.register("syscalls", f"on_sys_{call}_return", self._fork_returned, owner=self.name)
        for call in EXEC_CALLS:
            self.qpp.register("syscalls", f"on_sys_{call}_return", self._exec_returned, owner=self.name)
        self.qpp.register("syscalls", "on_syscall_noreturn", self._noreturn, owner=self.name)
        self.qpp.register("osi_linux", "on_thread_exit", self._thread_exit, owner=self.name)
        self.db: RunDatabase | None = None
        if self.args.table:
            self.db = open_run_database(self, self.args.db)
            self.table = self.db.table(self.name, "proc_events", COLUMNS, foreign_keys=FOREIGN_KEYS, indexes=INDEXES)

    # -- the calls ------------------------------------------------------------------------
    def _made(self, ctx: SyscallContext) -> None:
        """A fork-like or exec call begins: who makes it, when, and (exec) its path and argv, read now."""
        process, thread = self.get_current() if ctx.task is None else self.get_task(ctx.task)
        flags: int | None = None
        if ctx.name == "clone":
            flags = ctx.decoded()[0].raw  # clone_flags
        elif ctx.name == "clone3":
            flags = self._clone3_flags(ctx)
        elif ctx.name in EXEC_CALLS:
            ctx.decoded()  # the strings as they are now: a successful exec replaces the memory they are in
        self._calls[ctx.seq] = _Call(
            ctx, process, thread.tid if thread is not None else None, self._virtual_ns(), flags
        )

    @staticmethod
    def _clone3_flags(ctx: SyscallContext) -> int | None:
        """``struct clone_args.flags``, the first u64 of the caller's struct (include/uapi/linux/sched.h)."""
        try:
            return int(struct.unpack("<Q", ctx.memory.read(ctx.raw_args[0], 8))[0])
        except GuestMemoryError:
            return None

    def _fork_returned(self, ctx: SyscallContext, retval: int) -> None:
        if ctx.child:  # the new task's first return, in the new task
            call = self._calls.get(ctx.parent_seq) if ctx.parent_seq is not None else None
            if call is not None and not call.reported:
                call.reported = True
                child, thread = self.get_current()
                if _is_thread(call):
                    self._fork_event(call, thread.tid if thread is not None else None, call.process, 0)
                else:
                    self._fork_event(call, child.pid if child is not None else None, child, 0)
            return
        call = self._calls.pop(ctx.seq, None)
        if call is None or call.reported:
            return
        if retval < 0:
            self._fork_event(call, None, None, retval)
        else:
            self._fork_event(call, retval, call.process if _is_thread(call) else self.get_process(retval), retval)

    def _fork_event(self, call: _Call, child_pid: int | None, child: OsiProcess | None, retval: int) -> None:
        """``child``: the new process (a new thread's: the caller's own), None when unknown or the call failed."""
        ctx = call.ctx
        failed = retval < 0
        self._emit(
            ProcEvent(
                THREAD if _is_thread(call) else FORK,
                ctx.insn_count,
                call.virtual_ns,
                call.process,
                call.process.pid if call.process is not None else None,
                call.tid,
                call=ctx.name,
                syscall_seq=ctx.seq,
                child_pid=child_pid,
                child=child,
                flags=_CLONE_FLAGS.format(call.flags) if call.flags is not None else None,
                ok=not failed,
                retval=retval if failed else child_pid,
                errno=ctx.result(retval).errno if failed else None,
            )
        )

    def _exec_returned(self, ctx: SyscallContext, retval: int) -> None:
        """An exec that comes back failed (a successful one returns to the new program's entry instead)."""
        call = self._calls.pop(ctx.seq, None)
        if call is not None:
            self._exec_event(call, call.process, ok=retval == 0, retval=retval, errno=ctx.result(retval).errno)

    def _noreturn(self, ctx: SyscallContext) -> None:
        """An exec that will not come back: it succeeded (``ending`` exec), or its thread died or the run ended."""
        call = self._calls.pop(ctx.seq, None)
        if call is None:
            return
        if ctx.name not in EXEC_CALLS:  # a fork-like call blocked when the run ended, or its thread killed
            return
        if ctx.ending == ENDING_EXEC:
            # syscalls learns of it at the thread's next call, in the new program: current is that thread.
            process, _ = self.get_current()
            same = process is not None and call.process is not None and process.pid == call.process.pid
            self._exec_event(call, process if same else call.process, ok=True, retval=0, ending=ctx.ending)
        else:
            self._exec_event(call, call.process, ok=None, ending=ctx.ending)

    def _exec_event(
        self,
        call: _Call,
        process: OsiProcess | None,
        *,
        ok: bool | None,
        retval: int | None = None,
        errno: str | None = None,
        ending: str | None = None,
    ) -> None:
        ctx = call.ctx
        args = {a.name: a for a in ctx.decoded()}
        path, argv = args.get("filename"), args.get("argv")
        self._emit(
            ProcEvent(
                EXEC,
                ctx.insn_count,
                call.virtual_ns,
                process,
                process.pid if process is not None else None,
                call.tid,
                call=ctx.name,
                syscall_seq=ctx.seq,
                path=path.value if path is not None else None,
                argv=argv.value if argv is not None else None,
                argv_truncated=argv is not None and argv.truncated,
                ok=ok,
                retval=retval,
                errno=errno,
                ending=ending,
            )
        )

    def _thread_exit(self, thread: OsiThread, code: int) -> None:
        """``do_exit(code)`` of any task: the leader's is its process's end, unless a thread's exec
        superseded it (:meth:`_superseded`)."""
        process, _ = self.get_task(thread.task)
        machine = self.machine
        ends_process = thread.tid == thread.pid and not self._superseded(thread, code)
        self._emit(
            ProcEvent(
                EXIT if ends_process else THREAD_EXIT,
                machine.insn_count if machine is not None else 0,
                self._virtual_ns(),
                process,
                thread.pid,
                thread.tid,
                code=ExitCode(code & 0xFFFF),
            )
        )

    def _superseded(self, leader: OsiThread, code: int) -> bool:
        """Whether the leader's ``do_exit(code)`` is de_thread's (fs/exec.c): another thread of its process is
        in an exec call, which kills the other threads and, once past that point, goes on as the process
        under the leader's pid.  The leader then dies with code 0 (kernel/exit.c ``do_group_exit``: a group
        exec in progress, ``signal->group_exec_task``); strace says ``+++ superseded by execve in pid N +++``."""
        return code == 0 and any(
            call.ctx.name in EXEC_CALLS
            and call.process is not None
            and call.process.pid == leader.pid
            and call.tid != leader.tid
            for call in self._calls.values()
        )

    # -- output ---------------------------------------------------------------------------
    def _virtual_ns(self) -> int | None:
        return self.machine.virtual_ns if self.machine is not None else None

    def _emit(self, event: ProcEvent) -> None:
        if self.on_proc_event:
            self.on_proc_event(event=event)
        if self.db is not None:
            db = self.db
            process_id = db.process_id(event.process, event.insn_count) if event.process is not None else None
            child_id = db.process_id(event.child, event.insn_count) if event.child is not None else None
            self.table.add(table_row(event, process_id, child_id))

    # -- lifecycle ------------------------------------------------------------------------
    def stop(self, reason: Any) -> None:
        if self.db is not None:
            self.db.stopped(reason)

    def unload(self) -> None:
        if self.db is not None:
            self.db.release(self.name)


def _is_thread(call: _Call) -> bool:
    return call.flags is not None and bool(call.flags & CLONE_THREAD)


plugin = ProcEvents
