"""The ``syscalls_logger`` plugin: which process made which system call, into SQLite or text.

Each call is joined, at the moment it is made, with osi_linux's current process
and thread (a fork child's own return is joined with the child), and becomes
one row once its outcome is known: its return, or the reason it never returned.
The process seen at the call is the one that made it even if the call blocks
while others run, and even if it is an execve that renames the process.

Every process row says whether the process is the run's command's (``processes.command``: the process
that executes the command's script, from that execve on, and every process created by one of the
command's; the rule is :mod:`.command`'s), whatever ``only`` says.  ``only=command`` keeps the calls of
those processes only: the boot, the agent and its file transfers are left out.
"""

from __future__ import annotations

import itertools
import sys
from _json import encode_basestring_ascii, make_encoder
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TextIO

from qppsuite.core.qpp import Arg, Plugin, export
from qppsuite.errors import PluginError
from qppsuite.plugins.osi_linux.model import OsiProcess, OsiThread
from qppsuite.plugins.syscalls.context import ENDING_PENDING, SyscallContext
from qppsuite.plugins.syscalls.decode import format_call
from qppsuite.plugins.syscalls.pairing import FORK_CALLS
from qppsuite.plugins.syscalls.values import column_text, quote
from qppsuite.plugins.syscalls_logger.command import CommandProcesses
from qppsuite.plugins.syscalls_logger.database import SyscallDatabase
from qppsuite.plugins.syscalls_logger.processes import ProcessRows
from qppsuite.plugins.syscalls_logger.run_database import RunDatabase, open_run_database


def _unencodable(value: object) -> None:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODE = make_encoder(None, _unencodable, encode_basestring_ascii, None, ": ", ", ", False, False, True)
"""The C encoder ``json.dumps`` builds on every call (CPython's ``_json``, default options), built once."""


def json_text(value: object) -> str:
    """``json.dumps(value)``, character for character, for the values a row holds (no cycles: no check).

    Two thirds of json.dumps' time (1.6 µs for a row's args) is its Python layers and the new encoder.
    """
    return "".join(_ENCODE(value, 0))


@dataclass(slots=True)
class _Caller:
    """Who made a call, captured when it was made."""

    ctx: SyscallContext
    process: dict[str, Any] | None  # the process row (shared, updated in place)
    thread: dict[str, Any] | None  # the thread row (shared, updated in place)
    tid: int | None
    name: str | None  # as the run database stores guest text: the text, or {"hex": ...}'s JSON
    thread_name: str | None
    ppid: int | None
    virtual_ns: int | None  # the guest's virtual time at the call
    name_bytes: bytes = b""  # the process's name as the kernel holds it (for the text lines)


#: How many fork, vfork and clone calls' times are kept for children that have not returned yet.
SPAWNS_KEPT = 4096


class SyscallsLogger(Plugin):
    """Every system call with its process (name, pid, tid, ppid), into SQLite or as text lines"""

    name = "syscalls_logger"
    requires = ("osi_linux", "syscalls")
    args: ClassVar[Any] = {
        "db": Arg(
            Path, None, help="SQLite file (default qppsuite-<image>-<UTC time>.db); not with format=text; runs append"
        ),
        "format": Arg(str, "sqlite", choices=("sqlite", "text"), help="sqlite database or one text line per call"),
        "out": Arg(Path, None, help="text output file for format=text (default: stdout)"),
        "batch": Arg(int, 500, help="rows per transaction"),
        "only": Arg(
            str,
            "all",
            choices=("all", "command"),
            help="all calls, or those of the run's command (--cmd, the workload) and its descendants only",
        ),
    }

    def load(self) -> None:
        if self.args.batch < 1:
            raise PluginError(f"plugin 'syscalls_logger' argument 'batch': {self.args.batch} is not at least 1")
        if self.args.format == "text" and self.args.db is not None:
            raise PluginError(
                f"argument 'db' ({self.args.db}) names an SQLite file, which format=text does not write",
                hint="to name the other plugins' run database, give db to one of them (-p proc_events:db=...)",
            )
        self.get_current = self.qpp.import_function("osi_linux", "get_current")
        self.get_task = self.qpp.import_function("osi_linux", "get_task")
        self.get_processes = self.qpp.import_function("osi_linux", "get_processes")
        self._callers: dict[int, _Caller] = {}  # seq -> caller, while the call is outstanding
        self._spawned_at: dict[int, int | None] = {}  # seq of a fork, vfork or clone -> virtual ns at the call
        self._command_only = self.args.only == "command"
        self._command = CommandProcesses()
        self.rows = 0
        self._run_db: RunDatabase | None = None
        self._db: SyscallDatabase | None = None
        self._text: TextIO | None = None
        self._own_text = False
        if self.args.format == "text":
            self._open_text(self.args.out)
            self._processes = ProcessRows(itertools.count(1).__next__, itertools.count(1).__next__)
        else:
            self._run_db = open_run_database(self, self.args.db, batch=self.args.batch)
            self._run_db.counts_syscalls = True
            self._run_db.logged = self.args.only
            self._db = self._run_db.file
            self._processes = self._db.processes
        self._processes.command_of = self._command.of
        self.qpp.register("syscalls", "on_syscall", self._call, owner=self.name)
        self.qpp.register("syscalls", "on_syscall_return", self._return, owner=self.name)
        self.qpp.register("syscalls", "on_syscall_noreturn", self._noreturn, owner=self.name)
        if self._db is not None:
            self.qpp.register("osi_linux", "on_thread_exit", self._thread_exit, owner=self.name)

    @export
    def get_run_database(self) -> RunDatabase | None:
        """The run's database, shared with the plugins that add tables to it (None with ``format=text``).

        See :mod:`qppsuite.plugins.syscalls_logger.run_database`; a plugin opens it with
        :func:`~qppsuite.plugins.syscalls_logger.run_database.open_run_database`, which returns this
        one when the logger writes a database.
        """
        return self._run_db

    def _open_text(self, out: Path | None) -> None:
        if out is None:
            self._text = sys.stdout
            return
        try:
            self._text = out.open("w", encoding="utf-8")
        except OSError as exc:
            raise PluginError(f"cannot write the syscall text log {out}: {exc.strerror}") from None
        self._own_text = True

    # -- callbacks -------------------------------------------------------------
    def _call(self, ctx: SyscallContext) -> None:
        if ctx.name in FORK_CALLS:  # the child's row is dated at this call, as its instruction count is
            self._spawned(ctx.seq)
        decoded = ctx.decoded()  # the arguments as they are now; by the return they may be gone
        proc, thread = self.get_current() if ctx.task is None else self.get_task(ctx.task)
        command = proc is not None and self._command.at_call(ctx, proc, decoded)
        if command or not self._command_only:
            self._callers[ctx.seq] = self._caller(ctx, proc, thread, command)

    def _return(self, ctx: SyscallContext, retval: int) -> None:
        if ctx.child:
            proc, thread = self.get_current() if ctx.task is None else self.get_task(ctx.task)
            command = proc is not None and self._command.at_call(ctx, proc, ())
            if self._command_only and not command:
                return
            at = self._spawned_at.pop(ctx.parent_seq, None) if ctx.parent_seq is not None else None
            caller: _Caller | None = self._caller(ctx, proc, thread, command, at)
        else:
            caller = self._callers.pop(ctx.seq, None)
        if caller is None:  # the call was made before this plugin listened (or is not the command's)
            return
        self._write(ctx, caller, retval)

    def _noreturn(self, ctx: SyscallContext) -> None:
        caller = self._callers.pop(ctx.seq, None)
        if caller is not None:
            # execve's 0 and sigreturn's restored r0 are results, although they do not come back to the caller.
            self._write(ctx, caller, ctx.retval)

    def _thread_exit(self, thread: OsiThread, code: int) -> None:
        """The code do_exit gets on a thread group's leader is its process's wait status (kernel/exit.c)."""
        if thread.tid != thread.pid:
            return
        process = self._processes.by_pid.get(thread.pid)
        if process is not None and self._db is not None:
            process["exit_status"] = code
            self._processes.changed(process)

    def _spawned(self, seq: int) -> None:
        """Remember when call ``seq``, which may make a child, was made: the child's row (``ctx.child``, made at
        the child's first return) has the call's instruction count, and gets its virtual time too.  A call
        whose child never returns (it failed, or the child was killed first) is forgotten after
        :data:`SPAWNS_KEPT` later ones, so a guest's failing forks cannot grow the table."""
        self._spawned_at[seq] = self.machine.virtual_ns if self.machine is not None else None
        if len(self._spawned_at) > SPAWNS_KEPT:
            del self._spawned_at[next(iter(self._spawned_at))]

    def _caller(
        self,
        ctx: SyscallContext,
        proc: OsiProcess | None,
        thread: OsiThread | None,
        command: bool,
        at: int | None = None,
    ) -> _Caller:
        """Who made the call (``current``, or for a call found blocked at the start the task found in it), its
        process row saying whether it is the command's; ``at``: the call's virtual time, if not now."""
        tid = thread.tid if thread is not None else None
        thread_name = thread.stored_name if thread is not None else None
        now = at if at is not None else self.machine.virtual_ns if self.machine is not None else None
        if proc is None:
            return _Caller(ctx, None, None, tid, None, column_text(thread_name), None, now)
        row = self._processes.process(proc, ctx.insn_count)
        if row["command"] != command:
            row["command"] = int(command)
            self._processes.changed(row)
        thread_row = self._processes.thread(row, tid, thread_name, ctx.insn_count)
        return _Caller(
            ctx, row, thread_row, tid, row["name"], column_text(thread_name), proc.ppid, now, proc.name_bytes
        )

    # -- output ----------------------------------------------------------------
    def _write(self, ctx: SyscallContext, caller: _Caller, retval: int | None) -> None:
        decoded = ctx.decoded()
        result = ctx.result(retval) if retval is not None else None
        text = format_call(ctx.name, decoded, result)
        process = caller.process
        insn_count = ctx.insn_count
        for owner in (process, caller.thread):
            if owner is not None:
                owner["syscall_count"] += 1
                if insn_count > owner["last_seen_insn"]:
                    owner["last_seen_insn"] = insn_count
        pid = process["pid"] if process is not None else None
        self.rows += 1
        if self._text is not None:
            outcome = "" if ctx.ending is None else f" (no return: {ctx.ending})"
            if ctx.child:
                outcome = " (in the child)"
            if ctx.task is not None:
                outcome += " (made before the start)"
            name = quote(caller.name_bytes)[1:-1]  # guest text, escaped
            self._text.write(
                f"Syscall at pc {ctx.pc:#x}: {text}{outcome}: Process '{name}', "
                f"pid {pid}, tid {caller.tid}, ppid {caller.ppid}\n"
            )
            return
        assert self._db is not None and self._run_db is not None
        if self._run_db.write_error is not None:
            return
        truncated = [a.name for a in decoded if a.truncated]
        outputs: dict[str, Any] | None = None
        if result is not None and result.outputs:
            outputs = {out.name: out.value for out in result.outputs}
            truncated += [out.name for out in result.outputs if out.truncated]
        row = (  # in database.SYSCALL_ROW order
            ctx.seq,
            insn_count,
            caller.virtual_ns,
            ctx.pc,
            int(ctx.thumb),
            process["id"] if process is not None else None,
            pid,
            caller.tid,
            caller.ppid,
            caller.name,
            caller.thread_name,
            ctx.number,
            ctx.name,
            json_text(ctx.raw_args),
            json_text({a.name: a.value for a in decoded}),
            json_text(outputs) if outputs is not None else None,
            ",".join(truncated) or None,
            result.value if result is not None else None,
            result.errno if result is not None else None,
            int(not ctx.noreturn),
            self.machine.insn_count if self.machine is not None else None,
            ctx.ending,
            ctx.signal,
            int(ctx.child),
            ctx.parent_seq,
            ctx.asid,
            int(ctx.task is not None),
            text,
        )
        if self._db.add(row, process, caller.thread) >= self._run_db.batch:
            self._run_db.flush()  # a commit that fails stops the run, with the reason

    # -- lifecycle ----------------------------------------------------------------
    def stop(self, reason: Any) -> None:
        """Record each process's state as the run ends (X: gone, its exit seen; unknown: None)."""
        if self._run_db is None:
            return
        self._run_db.stopped(reason)
        live = {(p.pid, p.start_time): p for p in self.get_processes()}
        for key, row in self._processes:
            proc = live.get(key)
            state = proc.state if proc is not None else "X" if row["exit_status"] is not None else None
            if proc is not None and proc.exit_code is not None:
                row["exit_status"] = proc.exit_code
            if state != row["state"] or proc is not None:
                row["state"] = state
                self._processes.changed(row)

    def unload(self) -> None:
        """Write what is buffered and how the run ended; runs however the run ended."""
        try:
            # syscalls' stop() reports blocked calls; a run that ended before stop() leaves them here.
            for seq in sorted(self._callers):
                caller = self._callers.pop(seq)
                caller.ctx.noreturn, caller.ctx.ending = True, ENDING_PENDING
                self._write(caller.ctx, caller, None)
        finally:
            if self._run_db is not None:
                self._run_db.release(self.name)
            if self._text is not None:
                self._text.flush()
                if self._own_text:
                    self._text.close()


plugin = SyscallsLogger
