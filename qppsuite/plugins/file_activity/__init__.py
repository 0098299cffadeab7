"""The ``file_activity`` plugin: per process, the files opened, read, written, renamed and deleted.

Built only on QPP: ``syscalls``' per-call callbacks and the arguments it decoded
(:class:`~qppsuite.plugins.syscalls.context.SyscallContext`), and osi_linux's ``get_current`` and
``fd_to_filename``.  It writes two tables of the run database: ``file_activity``, one row per process
and file with its counts, and ``file_ops``, one row per rename or deletion.

A file is its path as the kernel resolved it at the time: a successful open is named by what its new fd
refers to (``/proc/PID/fd/N``, through ``fd_to_filename``), a read or write by what its fd refers to when
the plugin first sees the fd (remembered until the fd is closed, and per program: an exec forgets them);
a failed open, a rename and a deletion by the path the call was given, joined to what its directory fd
refers to when the path is relative to one.  A path relative to the working directory (``AT_FDCWD``)
stays as given.  Byte counts are the calls' return values.  I/O through memory maps (mmap) is not a
system call and is not counted.

The working directory is recorded in ``file_fds`` as the fd ``AT_FDCWD`` (-100) is: osi_linux's
``get_cwd`` when the plugin first sees a process, and at the return of each successful ``chdir`` and
``fchdir`` (the directory the kernel resolved), so the query commands can name it; no call costs more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from qppsuite.core.qpp import Arg, Plugin
from qppsuite.plugins.file_activity.model import (
    FD_COLUMNS,
    FD_FOREIGN_KEYS,
    FD_INDEXES,
    FILE_COLUMNS,
    FILE_FOREIGN_KEYS,
    FILE_INDEXES,
    OP_COLUMNS,
    OP_FOREIGN_KEYS,
    OP_INDEXES,
    RENAME,
    RMDIR,
    UNLINK,
    new_file_row,
)
from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls.arm_linux_abi import AT_FDCWD
from qppsuite.plugins.syscalls.context import SyscallContext
from qppsuite.plugins.syscalls.values import JSONValue, column_text, stored_bytes, text_or_hex
from qppsuite.plugins.syscalls_logger.run_database import RunDatabase, open_run_database

OPENS = {"open": "filename", "openat": "filename", "openat2": "filename", "creat": "pathname"}
"""Calls opening a file -> their path argument (the directory fd, if any, is ``dfd``)."""
READS = ("read", "pread64", "readv", "preadv", "preadv2")
WRITES = ("write", "pwrite64", "writev", "pwritev", "pwritev2")
TRANSFERS = {
    "sendfile": ("in_fd", "out_fd"),
    "sendfile64": ("in_fd", "out_fd"),
    "copy_file_range": ("fd_in", "fd_out"),
    "splice": ("fd_in", "fd_out"),
}
"""Calls moving bytes from one fd to another -> (the fd read, the fd written)."""
RENAMES = {"rename": (None, "oldname", None, "newname"), "renameat": ("olddfd", "oldname", "newdfd", "newname")}
RENAMES["renameat2"] = RENAMES["renameat"]
"""Calls renaming -> (directory fd, old path, directory fd, new path) argument names."""
CHDIRS = ("chdir", "fchdir")
"""Calls that change the working directory."""
UNLINKS = {"unlink": (None, "pathname"), "unlinkat": ("dfd", "pathname"), "rmdir": (None, "pathname")}
"""Calls deleting -> (directory fd, path) argument names."""
CLOSES = ("close", "close_range", "dup2", "dup3")
"""Calls that close an fd (dup2 and dup3 close their ``newfd`` first)."""
AT_REMOVEDIR = "AT_REMOVEDIR"


@dataclass(slots=True)
class _Files:
    """One process's rows, and what its fds refer to (by address space: an exec starts afresh)."""

    process_id: int
    pid: int
    by_path: dict[str, dict[str, Any]] = field(default_factory=dict)
    fds: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)  # (asid, fd) -> row


class FileActivity(Plugin):
    """Per process: files opened, read, written (bytes), renamed and deleted, with failures (tables)"""

    name = "file_activity"
    requires = ("osi_linux", "syscalls")
    args: ClassVar[Any] = {
        "db": Arg(Path, None, help="run database (default: syscalls_logger's, or one named as its default)"),
    }

    def load(self) -> None:
        self.get_current = self.qpp.import_function("osi_linux", "get_current")
        self.get_task = self.qpp.import_function("osi_linux", "get_task")
        self.fd_to_filename = self.qpp.import_function("osi_linux", "fd_to_filename")
        self.get_fds = self.qpp.import_function("osi_linux", "get_fds")
        self.get_cwd = self.qpp.import_function("osi_linux", "get_cwd")
        self._processes: dict[tuple[int, int], _Files] = {}  # (pid, start_time) -> its files
        register = self.qpp.register
        self._began: dict[int, int | None] = {}  # seq -> virtual time at the call, for renames and deletions
        for call in OPENS:
            register("syscalls", f"on_sys_{call}", self._decode_now, owner=self.name)
        for call in (*RENAMES, *UNLINKS):
            register("syscalls", f"on_sys_{call}", self._op_begins, owner=self.name)
        for call in OPENS:
            register("syscalls", f"on_sys_{call}_return", self._opened, owner=self.name)
        for call in READS:
            register("syscalls", f"on_sys_{call}_return", self._read, owner=self.name)
        for call in WRITES:
            register("syscalls", f"on_sys_{call}_return", self._written, owner=self.name)
        for call in TRANSFERS:
            register("syscalls", f"on_sys_{call}_return", self._transferred, owner=self.name)
        for call in RENAMES:
            register("syscalls", f"on_sys_{call}_return", self._renamed, owner=self.name)
        for call in UNLINKS:
            register("syscalls", f"on_sys_{call}_return", self._unlinked, owner=self.name)
        for call in CLOSES:
            register("syscalls", f"on_sys_{call}", self._closing, owner=self.name)
        for call in CHDIRS:
            register("syscalls", f"on_sys_{call}_return", self._moved, owner=self.name)
        self.db: RunDatabase = open_run_database(self, self.args.db)
        self.files = self.db.table(
            self.name, "file_activity", FILE_COLUMNS, foreign_keys=FILE_FOREIGN_KEYS, indexes=FILE_INDEXES
        )
        self.ops = self.db.table(self.name, "file_ops", OP_COLUMNS, foreign_keys=OP_FOREIGN_KEYS, indexes=OP_INDEXES)
        self.named = self.db.table(self.name, "file_fds", FD_COLUMNS, foreign_keys=FD_FOREIGN_KEYS, indexes=FD_INDEXES)

    # -- who, and which file ------------------------------------------------------------------
    def _caller(self, ctx: SyscallContext, *, new: bool = True) -> tuple[OsiProcess, _Files, int | None] | None:
        """The calling process (``current``, or the task a call found blocked at the start was made by) and its
        files; None for a process this plugin has not seen yet, unless ``new``."""
        process, thread = self.get_current() if ctx.task is None else self.get_task(ctx.task)
        if process is None:
            return None
        key = (process.pid, process.start_time)
        files = self._processes.get(key)
        if files is None:
            if not new:
                return None
            files = self._processes[key] = _Files(self.db.process_id(process, ctx.insn_count), process.pid)
            for fd, opened in self.get_fds(process).items():  # what its fds from before refer to: file_fds
                self._named(files, ctx, fd, column_text(opened.stored_path) or "")
            self._named_cwd(process, files, ctx)
        return process, files, thread.tid if thread is not None else None

    def _named_cwd(self, process: OsiProcess, files: _Files, ctx: SyscallContext) -> None:
        """A ``file_fds`` row for ``AT_FDCWD``: the working directory osi_linux found (none if it found none)."""
        cwd = self.get_cwd(process)
        if cwd is not None:
            self._named(files, ctx, AT_FDCWD, column_text(cwd.stored_path) or "")

    def _named(self, files: _Files, ctx: SyscallContext, fd: int, path: str) -> None:
        """A ``file_fds`` row: osi_linux named what ``fd`` referred to at this call."""
        row = {"process_id": files.process_id, "pid": files.pid, "fd": fd, "path": path}
        self.named.add({**row, "syscall_seq": ctx.seq, "insn_count": ctx.insn_count})

    def _row(self, files: _Files, path: str, insn_count: int) -> dict[str, Any]:
        row = files.by_path.get(path)
        if row is None:
            row = files.by_path[path] = new_file_row(files.process_id, files.pid, path, insn_count)
            self.files.add(row)
        return row

    def _fd_row(self, process: OsiProcess, files: _Files, ctx: SyscallContext, fd: Any) -> dict[str, Any] | None:
        """The row of the file ``fd`` refers to, asked of osi_linux the first time the fd is seen; None when
        it refers to nothing."""
        if not isinstance(fd, int) or fd < 0:
            return None
        key = (ctx.asid, fd)
        row = files.fds.get(key)
        if row is None:
            opened = self.fd_to_filename(process, fd)
            if opened is None:
                return None
            path = column_text(opened.stored_path) or ""
            row = files.fds[key] = self._row(files, path, ctx.insn_count)
            self._named(files, ctx, fd, path)
        return row

    def _given_path(self, process: OsiProcess, files: _Files, ctx: SyscallContext, dfd: Any, path: JSONValue) -> str:
        """A path argument, joined to what its directory fd refers to when it is relative to one; as guest text
        is stored (the text, or ``{"hex": ...}``'s JSON when it is not UTF-8), like the paths osi_linux gives."""
        text = column_text(path) or ""
        given = stored_bytes(path)
        if given is not None and not given.startswith(b"/") and isinstance(dfd, int) and dfd != AT_FDCWD:
            directory = self.fd_to_filename(process, dfd)
            if directory is not None:
                joined = directory.path_bytes.rstrip(b"/") + b"/" + given if given else directory.path_bytes
                return column_text(text_or_hex(joined)) or ""
        return text

    # -- the calls --------------------------------------------------------------------------------
    def _decode_now(self, ctx: SyscallContext) -> None:
        """Paths are read as the call begins: by its return the caller may have reused the buffer."""
        ctx.decoded()

    def _op_begins(self, ctx: SyscallContext) -> None:
        ctx.decoded()
        self._began[ctx.seq] = self.machine.virtual_ns if self.machine is not None else None

    def _opened(self, ctx: SyscallContext, retval: int) -> None:
        caller = self._caller(ctx)
        if caller is None:
            return
        process, files, _ = caller
        args = {a.name: a.value for a in ctx.decoded()}
        files.fds.pop((ctx.asid, retval), None)  # a new file behind this number
        row = self._fd_row(process, files, ctx, retval)
        if row is None:  # it failed (or another thread closed it already): the path as given
            path = self._given_path(process, files, ctx, args.get("dfd"), args[OPENS[ctx.name]])
            row = self._row(files, path, ctx.insn_count)
        row["opens" if retval >= 0 else "open_errors"] += 1
        self._touched(row, ctx)

    def _read(self, ctx: SyscallContext, retval: int) -> None:
        self._io(ctx, retval, ctx.decoded()[0].value, "reads", "bytes_read", "read_errors")

    def _written(self, ctx: SyscallContext, retval: int) -> None:
        self._io(ctx, retval, ctx.decoded()[0].value, "writes", "bytes_written", "write_errors")

    def _transferred(self, ctx: SyscallContext, retval: int) -> None:
        source, target = TRANSFERS[ctx.name]
        args = {a.name: a.value for a in ctx.decoded()}
        self._io(ctx, retval, args[source], "reads", "bytes_read", "read_errors")
        self._io(ctx, retval, args[target], "writes", "bytes_written", "write_errors")

    def _io(self, ctx: SyscallContext, retval: int, fd: JSONValue, calls: str, total: str, errors: str) -> None:
        caller = self._caller(ctx)
        if caller is None:
            return
        row = self._fd_row(caller[0], caller[1], ctx, fd)
        if row is None:
            return
        if retval >= 0:
            row[calls] += 1
            row[total] += retval
        else:
            row[errors] += 1
        self._touched(row, ctx)

    def _touched(self, row: dict[str, Any], ctx: SyscallContext) -> None:
        row["last_insn_count"] = max(row["last_insn_count"], ctx.insn_count)
        self.files.changed(row)

    def _renamed(self, ctx: SyscallContext, retval: int) -> None:
        old_dfd, old, new_dfd, new = RENAMES[ctx.name]
        args = {a.name: a.value for a in ctx.decoded()}
        flags = args.get("flags")
        self._op(ctx, retval, RENAME, args.get(old_dfd or ""), args[old], args.get(new_dfd or ""), args[new], flags)

    def _unlinked(self, ctx: SyscallContext, retval: int) -> None:
        dfd, path = UNLINKS[ctx.name]
        args = {a.name: a.value for a in ctx.decoded()}
        flag = args.get("flag")
        removes_dir = ctx.name == "rmdir" or (isinstance(flag, str) and AT_REMOVEDIR in flag)
        self._op(ctx, retval, RMDIR if removes_dir else UNLINK, args.get(dfd or ""), args[path], None, None, flag)

    def _op(
        self,
        ctx: SyscallContext,
        retval: int,
        op: str,
        dfd: JSONValue,
        path: JSONValue,
        new_dfd: JSONValue,
        new_path: JSONValue,
        flags: JSONValue,
    ) -> None:
        caller = self._caller(ctx)
        if caller is None:
            return
        process, files, tid = caller
        self.ops.add(
            {
                "process_id": files.process_id,
                "pid": files.pid,
                "tid": tid,
                "insn_count": ctx.insn_count,
                "virtual_ns": self._began.pop(ctx.seq, None),
                "syscall_seq": ctx.seq,
                "call": ctx.name,
                "op": op,
                "path": self._given_path(process, files, ctx, dfd, path),
                "new_path": self._given_path(process, files, ctx, new_dfd, new_path) if op == RENAME else None,
                "flags": flags if isinstance(flags, str) and flags != "0" else None,
                "ok": int(retval == 0),
                "errno": ctx.result(retval).errno,
            }
        )

    def _moved(self, ctx: SyscallContext, retval: int) -> None:
        """A ``chdir`` or ``fchdir`` that succeeded: the new working directory, as the kernel resolved it."""
        if retval != 0:
            return
        caller = self._caller(ctx, new=False)
        if caller is None:
            self._caller(ctx)  # first seen here: its fds and (new) working directory are named now
            return
        self._named_cwd(caller[0], caller[1], ctx)

    def _closing(self, ctx: SyscallContext) -> None:
        """The fds this call closes refer to nothing any more (close releases its fd even when it fails)."""
        caller = self._caller(ctx, new=False)
        if caller is None:
            return
        files, args = caller[1], [a.value for a in ctx.decoded()]
        if ctx.name == "close_range":  # close_range(fd, max_fd, flags)
            first, last = args[0], args[1]
            if isinstance(first, int) and isinstance(last, int):
                for key in [k for k in files.fds if k[0] == ctx.asid and first <= k[1] <= last]:
                    del files.fds[key]
            return
        fd = args[1] if ctx.name in ("dup2", "dup3") else args[0]  # dup2(oldfd, newfd) closes newfd
        if isinstance(fd, int):
            files.fds.pop((ctx.asid, fd), None)

    # -- lifecycle ------------------------------------------------------------------------------
    def stop(self, reason: Any) -> None:
        self.db.stopped(reason)

    def unload(self) -> None:
        self.db.release(self.name)


plugin = FileActivity
