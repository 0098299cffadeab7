"""The ``net_activity`` plugin: per process, the sockets, binds, listens, connects, accepts, sends and receives.

It stacks on ``syscalls`` (each call's arguments and outputs as that plugin decoded them, socket
addresses included) and ``osi_linux`` (the calling process, and each process's fds as the kernel holds
them); :mod:`.tracker` says which fds it knows to be sockets and how.  Two tables go into the run
database, next to ``runs`` and ``processes`` (docs/plugins.md, "net_activity"): ``net_sockets``, one row
per socket with its domain, type, protocol, ends and byte totals, and ``net_events``, one row per
network call with its fd, ends, bytes and errno.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from qppsuite.core.qpp import Arg, Plugin
from qppsuite.plugins.net_activity.model import Endpoint, Socket
from qppsuite.plugins.net_activity.tracker import (
    SOCKET_CALLS,
    WHILE_OPEN_CALLS,
    NetEvent,
    NetTracker,
    socket_inode_of,
)
from qppsuite.plugins.osi_linux.model import OsiProcess, OsiThread
from qppsuite.plugins.syscalls.context import SyscallContext
from qppsuite.plugins.syscalls.pairing import FORK_CALLS
from qppsuite.plugins.syscalls.table import SYSCALLS
from qppsuite.plugins.syscalls.values import signed32
from qppsuite.plugins.syscalls_logger.run_database import RunDatabase, open_run_database

SOCKET_COLUMNS: dict[str, type] = {
    "id": int,
    "process_id": int,  # the process that made it, or first held it (created_by 'found')
    "inode": int,  # socket:[INODE] in /proc/PID/fd; os.fstat(fd).st_ino in the guest
    "created_by": str,  # socket, socketpair, accept, accept4, found
    "created_seq": int,  # syscalls.seq of the call that made it (NULL: found)
    "created_insn": int,
    "domain": str,  # AF_INET, AF_INET6, AF_UNIX, ... (NULL: found)
    "type": str,  # SOCK_STREAM, SOCK_DGRAM, ... without SOCK_CLOEXEC/SOCK_NONBLOCK
    "protocol": str,  # IPPROTO_TCP, IPPROTO_IP (0), NETLINK_ROUTE, or the number
    "local_family": str,
    "local_address": str,  # IPv4/IPv6 text, AF_UNIX path (@name: abstract; {"hex": ...} if not UTF-8)
    "local_port": int,
    "remote_family": str,
    "remote_address": str,
    "remote_port": int,
    "listener_id": int,  # accept: the listening socket it came from
    "pair_id": int,  # socketpair: the other end's id (no foreign key: the two rows refer to each other)
    "backlog": int,  # listen's backlog once it listened
    "bytes_sent": int,
    "bytes_received": int,
    "sends": int,  # send calls that succeeded
    "receives": int,
}
"""``net_sockets``: one row per socket, updated as the run goes (ends, totals)."""

EVENT_COLUMNS: dict[str, type] = {
    "id": int,
    "seq": int,  # syscalls.seq of the call (the same run's syscalls row, when the logger ran)
    "insn_count": int,  # guest instructions before the call
    "process_id": int,
    "pid": int,
    "tid": int,
    "call": str,  # the system call's name (strace's): socket, connect, sendto, read, close, ...
    "fd": int,  # its fd argument; the new fd for socket, socketpair, accept, accept4 (failed: the listener's)
    "socket_id": int,  # net_sockets row of that fd (NULL: no socket known there)
    "local_family": str,
    "local_address": str,
    "local_port": int,
    "remote_family": str,
    "remote_address": str,
    "remote_port": int,
    "bytes": int,  # bytes sent or received (a send or receive that succeeded)
    "messages": int,  # sendmmsg, recvmmsg: messages transferred
    "retval": int,
    "errno": str,  # ECONNREFUSED, EAGAIN, ... (NULL: it succeeded)
}
"""``net_events``: one row per network call that returned."""

_FD_ARGS: dict[str, tuple[int, ...]] = {
    spec.name: tuple(arg.regs[0] for arg in spec.args if arg.type == "fd")
    for spec in SYSCALLS.values()
    if spec.name in WHILE_OPEN_CALLS - {"close_range"}
}
"""Registers holding the fd arguments of the calls that are network I/O only on a socket fd (arm_syscalls.tsv):
what the decoder shows as ``fd`` values, read before deciding whether to decode the call at all."""


def _endpoint_columns(prefix: str, end: Endpoint | None) -> dict[str, Any]:
    if end is None:
        return {f"{prefix}_family": None, f"{prefix}_address": None, f"{prefix}_port": None}
    return {f"{prefix}_family": end.family, f"{prefix}_address": end.address, f"{prefix}_port": end.port}


class NetActivity(Plugin):
    """Per process: sockets, binds, listens, connects, accepts, sends and receives, with addresses and bytes"""

    name = "net_activity"
    description = "Per process: sockets, binds, connects, accepts, sends and receives with addresses and byte counts"
    requires = ("osi_linux", "syscalls")
    args: ClassVar[Any] = {
        "db": Arg(Path, None, help="SQLite file (default: the run database, qppsuite-<image>-<UTC time>.db here)"),
    }

    def load(self) -> None:
        self.get_current = self.qpp.import_function("osi_linux", "get_current")
        self.get_task = self.qpp.import_function("osi_linux", "get_task")
        self._get_fds = self.qpp.import_function("osi_linux", "get_fds")
        self._fd_to_filename = self.qpp.import_function("osi_linux", "fd_to_filename")
        self.tracker = NetTracker(self, self._new_socket, self._listen_to_fds)
        self._ctx: SyscallContext | None = None  # the call being handled, for the rows of the sockets it makes
        register = self.qpp.register
        for call in SOCKET_CALLS:
            register("syscalls", f"on_sys_{call}", self._call, owner=self.name)
            register("syscalls", f"on_sys_{call}_return", self._returned, owner=self.name)
        for call in FORK_CALLS:
            register("syscalls", f"on_sys_{call}_return", self._forked, owner=self.name)
        for call in ("execve", "execveat"):
            register("syscalls", f"on_sys_{call}", self._exec, owner=self.name)
        register("osi_linux", "on_thread_exit", self._thread_exit, owner=self.name)
        self.db: RunDatabase = open_run_database(self, self.args.db)
        self.sockets = self.db.table(
            self.name,
            "net_sockets",
            SOCKET_COLUMNS,
            foreign_keys=(("process_id", "processes"), ("listener_id", "net_sockets")),
            indexes=(("process_id",), ("inode",)),
        )
        self.events = self.db.table(
            self.name,
            "net_events",
            EVENT_COLUMNS,
            foreign_keys=(("process_id", "processes"), ("socket_id", "net_sockets")),
            indexes=(("process_id",), ("socket_id",), ("seq",)),
        )

    def start(self) -> None:
        """The processes already running (a restored snapshot): their socket fds, from the kernel."""
        for process in self.qpp.import_function("osi_linux", "get_processes")():
            if not process.is_kernel_thread:
                self.tracker.know(process)

    def _listen_to_fds(self, on: bool) -> None:
        """Hear reads, writes, closes and dups only while some process holds a socket fd (``tracker``'s
        ``on_any_open``): with none open, the syscalls plugin builds nothing for those calls."""
        for call in WHILE_OPEN_CALLS:
            if on:
                self.qpp.register("syscalls", f"on_sys_{call}_return", self._returned, owner=self.name)
            else:
                self.qpp.unregister("syscalls", f"on_sys_{call}_return", self._returned)

    # -- FdSource: the kernel's fds, through osi_linux ---------------------------------------
    def socket_inodes(self, process: OsiProcess) -> dict[int, int]:
        """{fd: inode} of the socket fds osi_linux reads in ``process``'s files_struct."""
        found = {fd: socket_inode_of(file.path) for fd, file in self._get_fds(process).items()}
        return {fd: inode for fd, inode in found.items() if inode is not None}

    def socket_inode(self, process: OsiProcess, fd: int) -> int | None:
        """The inode of socket ``fd`` of ``process`` (osi_linux's ``fd_to_filename``), None if it is no socket."""
        file = self._fd_to_filename(process, fd)
        return socket_inode_of(file.path) if file is not None else None

    # -- callbacks ---------------------------------------------------------------------------
    def _call(self, ctx: SyscallContext) -> None:
        """Decode the arguments now: by the return, addresses and message headers may be gone."""
        ctx.decoded()

    def _caller(self, ctx: SyscallContext) -> tuple[OsiProcess | None, OsiThread | None]:
        return self.get_current() if ctx.task is None else self.get_task(ctx.task)

    def _returned(self, ctx: SyscallContext, retval: int) -> None:
        registers = _FD_ARGS.get(ctx.name)
        if registers is not None and not any(self.tracker.maybe_socket(signed32(ctx.raw_args[r])) for r in registers):
            return  # no process holds that fd as a socket: a file's read, write, close or dup
        process, thread = self._caller(ctx)
        if process is None:
            return
        result = ctx.result(retval)
        args = {arg.name: arg.value for arg in ctx.decoded()}
        outputs = {out.name: out.value for out in result.outputs}
        self._ctx = ctx
        events = self.tracker.returned(process, ctx.name, args, outputs, result.value, result.errno)
        self._ctx = None
        if not events:
            return
        process_id = self.db.process_id(process, ctx.insn_count)
        for event in events:
            self._record(ctx, event, process_id, process.pid, thread.tid if thread is not None else None)

    def _forked(self, ctx: SyscallContext) -> None:
        """A fork child's first return: its fds are its parent's at the fork, read from the kernel.  Only while
        some process holds a socket: otherwise the child holds none, and a later first look at it (a lazy
        read) is as right.  A new thread (the same process) keeps its process's table."""
        if not ctx.child or not self.tracker.anything_open():
            return
        process, _ = self._caller(ctx)
        if process is not None and not process.is_kernel_thread and not self.tracker.known(process):
            self.tracker.know(process)

    def _exec(self, ctx: SyscallContext) -> None:
        """An execve: re-read the process's socket fds at their next use (those with close-on-exec go if it
        succeeds; if it fails, the kernel's answer is the same table).  Heard at the call, as the generic
        ``on_syscall_noreturn`` that reports a success would make the syscalls plugin build every call."""
        if self.tracker.anything_open():
            process, _ = self._caller(ctx)
            if process is not None:
                self.tracker.stale(process)

    def _thread_exit(self, thread: OsiThread) -> None:
        """A thread group's leader ended: its process's fds are gone (a socket's last close has no event)."""
        if thread.tid == thread.pid:
            self.tracker.gone(thread.pid)

    # -- rows ----------------------------------------------------------------------------------
    def _new_socket(self, sock: Socket, process: OsiProcess) -> None:
        """A socket's row, as it is made (or first found)."""
        ctx = self._ctx if sock.created_by != "found" else None
        sock.row = {
            "process_id": self.db.process_id(process, ctx.insn_count if ctx is not None else None),
            "inode": sock.inode,
            "created_by": sock.created_by,
            "created_seq": ctx.seq if ctx is not None else None,
            "created_insn": ctx.insn_count if ctx is not None else None,
            "domain": sock.domain,
            "type": sock.type,
            "protocol": sock.protocol,
        }
        self.sockets.add(sock.row)
        self._sync(sock)

    def _sync(self, sock: Socket) -> None:
        """The socket's row from what its calls showed so far: ends, backlog, the sockets it relates to."""
        row = sock.row
        row.update(_endpoint_columns("local", sock.local))
        row.update(_endpoint_columns("remote", sock.remote))
        row["backlog"] = sock.backlog
        row["listener_id"] = sock.listener.row.get("id") if sock.listener is not None else None
        row["pair_id"] = sock.pair.row.get("id") if sock.pair is not None else None
        row["bytes_sent"], row["bytes_received"] = sock.bytes_sent, sock.bytes_received
        row["sends"], row["receives"] = sock.sends, sock.receives

    def _record(self, ctx: SyscallContext, event: NetEvent, process_id: int, pid: int, tid: int | None) -> None:
        sock = event.socket
        if sock is not None:
            self._sync(sock)
            self.sockets.changed(sock.row)
        self.events.add(
            {
                "seq": ctx.seq,
                "insn_count": ctx.insn_count,
                "process_id": process_id,
                "pid": pid,
                "tid": tid,
                "call": event.call,
                "fd": event.fd,
                "socket_id": sock.row.get("id") if sock is not None else None,
                **_endpoint_columns("local", event.local),
                **_endpoint_columns("remote", event.remote),
                "bytes": event.bytes,
                "messages": event.messages,
                "retval": event.retval,
                "errno": event.errno,
            }
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def stop(self, reason: Any) -> None:
        self.db.stopped(reason)

    def unload(self) -> None:
        self.db.release(self.name)


plugin = NetActivity
