"""The ``syscalls_logger`` plugin: which process made which system call, into SQLite or text.

Each call is joined, at the moment it is made, with osi_linux's current process
and thread (a fork child's own return is joined with the child), and becomes
one row once its outcome is known: its return, or the reason it never returned.
The process seen at the call is the one that made it even if the call blocks
while others run, and even if it is an execve that renames the process.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import sys
from _json import encode_basestring_ascii, make_encoder
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TextIO

import qppsuite
from qppsuite.core.qpp import Arg, Plugin
from qppsuite.errors import PluginError
from qppsuite.plugins.osi_linux.model import OsiThread
from qppsuite.plugins.syscalls.context import ENDING_PENDING, SyscallContext
from qppsuite.plugins.syscalls.decode import format_call
from qppsuite.plugins.syscalls.values import quote
from qppsuite.plugins.syscalls_logger.database import SyscallDatabase


def _unencodable(value: object) -> None:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_ENCODE = make_encoder(None, _unencodable, encode_basestring_ascii, None, ": ", ", ", False, False, True)
"""The C encoder ``json.dumps`` builds on every call (CPython's ``_json``, default options), built once."""


def json_text(value: object) -> str:
    """``json.dumps(value)``, character for character, for the values a row holds (no cycles: no check).

    Two thirds of json.dumps' time (1.6 µs for a row's args) is its Python layers and the new encoder.
    """
    return "".join(_ENCODE(value, 0))


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def default_db_path(image: str, now: dt.datetime) -> Path:
    """``qppsuite-<image>-<UTC timestamp>.db`` in the current directory: one new file per run."""
    return Path(f"qppsuite-{image}-{now.strftime('%Y%m%dT%H%M%SZ')}.db")


@dataclass(slots=True)
class _Caller:
    """Who made a call, captured when it was made."""

    ctx: SyscallContext
    process: dict[str, Any] | None  # the process row (shared, updated in place)
    thread: dict[str, Any] | None  # the thread row (shared, updated in place)
    tid: int | None
    name: str | None
    thread_name: str | None
    ppid: int | None


class SyscallsLogger(Plugin):
    """Every system call with its process (name, pid, tid, ppid), into SQLite or as text lines"""

    name = "syscalls_logger"
    requires = ("osi_linux", "syscalls")
    args: ClassVar[Any] = {
        "db": Arg(Path, None, help="SQLite file (default: qppsuite-<image>-<UTC time>.db here); runs append"),
        "format": Arg(str, "sqlite", choices=("sqlite", "text"), help="sqlite database or one text line per call"),
        "out": Arg(Path, None, help="text output file for format=text (default: stdout)"),
        "batch": Arg(int, 500, help="rows per transaction"),
    }

    def load(self) -> None:
        if self.args.batch < 1:
            raise PluginError(f"plugin 'syscalls_logger' argument 'batch': {self.args.batch} is not at least 1")
        self.get_current = self.qpp.import_function("osi_linux", "get_current")
        self.get_task = self.qpp.import_function("osi_linux", "get_task")
        self._callers: dict[int, _Caller] = {}  # seq -> caller, while the call is outstanding
        self._processes: dict[tuple[int, int], dict[str, Any]] = {}  # (pid, start_time) -> row
        self._names: dict[int, list[str]] = {}  # process row id -> names over time
        self._threads: dict[tuple[int, int], dict[str, Any]] = {}  # (process row id, tid) -> row
        self._thread_names: dict[int, list[str]] = {}  # thread row id -> names over time
        self._by_pid: dict[int, dict[str, Any]] = {}  # pid -> its latest process row
        self.rows = 0
        self._batch = self.args.batch
        self._db: SyscallDatabase | None = None
        self._write_error: str | None = None  # set once a commit failed: nothing more is written
        self._text: TextIO | None = None
        self._own_text = False
        context = self.context
        self._started = _utc_now()
        if self.args.format == "text":
            self._open_text(self.args.out)
        else:
            path = self.args.db or default_db_path(context.image or "guest", self._started)
            self._db = SyscallDatabase(
                path,
                {
                    "image": context.image,
                    "image_path": None if context.image_path is None else str(context.image_path),
                    "kernel_release": context.kernel_release,
                    "plugins": json.dumps([n for n in dict.fromkeys([*self.qpp.loaded, self.name]) if n != "core"]),
                    "qppsuite_version": qppsuite.__version__,
                    "started_at": self._started.isoformat(timespec="seconds"),
                    "started_from": context.snapshot,
                },
            )
            self.db_path = path
        self.qpp.register("syscalls", "on_syscall", self._call, owner=self.name)
        self.qpp.register("syscalls", "on_syscall_return", self._return, owner=self.name)
        self.qpp.register("syscalls", "on_syscall_noreturn", self._noreturn, owner=self.name)
        if self._db is not None:
            self.qpp.register("osi_linux", "on_thread_exit", self._thread_exit, owner=self.name)
        self.get_processes = self.qpp.import_function("osi_linux", "get_processes")

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
        ctx.decoded()  # the arguments as they are now; by the return they may be gone
        self._callers[ctx.seq] = self._caller(ctx)

    def _return(self, ctx: SyscallContext, retval: int) -> None:
        caller = self._caller(ctx) if ctx.child else self._callers.pop(ctx.seq, None)
        if caller is None:  # the call was made before this plugin listened
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
        process = self._by_pid.get(thread.pid)
        if process is not None and self._db is not None:
            process["exit_status"] = code
            self._db.update_process(process)

    def _caller(self, ctx: SyscallContext) -> _Caller:
        """Who made the call: ``current``, or for a call found blocked at the start the task found in it."""
        proc, thread = self.get_current() if ctx.task is None else self.get_task(ctx.task)
        tid = thread.tid if thread is not None else None
        thread_name = thread.name if thread is not None else None
        if proc is None:
            return _Caller(ctx, None, None, tid, None, thread_name, None)
        key = (proc.pid, proc.start_time)
        row = self._processes.get(key)
        if row is None:
            row_id = self._db.new_process_id() if self._db is not None else len(self._processes) + 1
            row = self._processes[key] = {
                "id": row_id,
                "pid": proc.pid,
                "ppid": proc.ppid,
                "name": proc.name,
                "names": json.dumps([proc.name]),
                "start_time": proc.start_time,
                "first_seen_insn": ctx.insn_count,
                "last_seen_insn": ctx.insn_count,
                "syscall_count": 0,
                "state": None,
                "exit_status": None,
            }
            self._names[row_id] = [proc.name]
            self._by_pid[proc.pid] = row
        elif row["name"] != proc.name or row["ppid"] != proc.ppid:
            row["ppid"] = proc.ppid
            if row["name"] != proc.name:
                row["name"] = proc.name
                names = self._names[row["id"]]
                names.append(proc.name)
                row["names"] = json.dumps(names)
        return _Caller(ctx, row, self._thread_row(row, tid, thread_name, ctx), tid, proc.name, thread_name, proc.ppid)

    def _thread_row(
        self, process: dict[str, Any], tid: int | None, name: str | None, ctx: SyscallContext
    ) -> dict[str, Any] | None:
        """The thread's row, created at its first call; a new name (PR_SET_NAME, execve) is appended."""
        if tid is None or name is None:
            return None
        key = (process["id"], tid)
        row = self._threads.get(key)
        if row is None:
            row_id = self._db.new_thread_id() if self._db is not None else len(self._threads) + 1
            row = self._threads[key] = {
                "id": row_id,
                "process_id": process["id"],
                "tid": tid,
                "name": name,
                "names": json.dumps([name]),
                "first_seen_insn": ctx.insn_count,
                "last_seen_insn": ctx.insn_count,
                "syscall_count": 0,
            }
            self._thread_names[row_id] = [name]
        elif row["name"] != name:
            row["name"] = name
            names = self._thread_names[row["id"]]
            names.append(name)
            row["names"] = json.dumps(names)
        return row

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
            name = quote((caller.name or "").encode("utf-8", "surrogateescape"))[1:-1]  # guest text, escaped
            self._text.write(
                f"Syscall at pc {ctx.pc:#x}: {text}{outcome}: Process '{name}', "
                f"pid {pid}, tid {caller.tid}, ppid {caller.ppid}\n"
            )
            return
        assert self._db is not None
        if self._write_error is not None:
            return
        truncated = [a.name for a in decoded if a.truncated]
        outputs: dict[str, Any] | None = None
        if result is not None and result.outputs:
            outputs = {out.name: out.value for out in result.outputs}
            truncated += [out.name for out in result.outputs if out.truncated]
        row = (  # in database.SYSCALL_ROW order
            ctx.seq,
            insn_count,
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
        if self._db.add(row, process, caller.thread) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        """Commit the batch; a write that fails (disk full, I/O error) ends the logging and the run.

        What earlier batches committed stays; the run stops with a one-line reason
        (stop kind ``error``), so the user never gets a zero exit and a short log.
        """
        assert self._db is not None
        try:
            self._db.flush()
        except (sqlite3.Error, OSError) as exc:
            self._write_error = f"cannot write the syscall database {self._db.path}: {exc}"
            self._db.discard()
            if self.machine is not None:
                self.machine.request_stop("error", f"syscalls_logger: {self._write_error}; earlier batches are kept")

    # -- lifecycle ----------------------------------------------------------------
    def stop(self, reason: Any) -> None:
        """Record each process's state as the run ends (X: gone, its exit seen; unknown: None)."""
        self._stop_reason = reason
        if self._db is None:
            return
        live = {(p.pid, p.start_time): p for p in self.get_processes()}
        for key, row in self._processes.items():
            proc = live.get(key)
            state = proc.state if proc is not None else "X" if row["exit_status"] is not None else None
            if proc is not None and proc.exit_code is not None:
                row["exit_status"] = proc.exit_code
            if state != row["state"] or proc is not None:
                row["state"] = state
                self._db.update_process(row)

    def unload(self) -> None:
        """Write what is buffered and how the run ended; runs however the run ended."""
        try:
            # syscalls' stop() reports blocked calls; a run that ended before stop() leaves them here.
            for seq in sorted(self._callers):
                caller = self._callers.pop(seq)
                caller.ctx.noreturn, caller.ctx.ending = True, ENDING_PENDING
                self._write(caller.ctx, caller, None)
            if self._db is not None and self._write_error is None:
                reason = getattr(self, "_stop_reason", None)
                self._db.end_run(
                    {
                        "ended_at": _utc_now().isoformat(timespec="seconds"),
                        "stop_reason": getattr(reason, "kind", None),
                        "stop_message": getattr(reason, "message", None),
                        "insn_count": getattr(reason, "insn_count", None),
                    }
                )
        finally:
            if self._db is not None:
                self._db.close()
            if self._text is not None:
                self._text.flush()
                if self._own_text:
                    self._text.close()


plugin = SyscallsLogger
