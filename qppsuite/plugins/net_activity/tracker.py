"""Which fds of which process are sockets, and what each network call did: the logic of net_activity.

Fed with completed calls (name, decoded arguments, decoded outputs, result) and the calling process,
:class:`NetTracker` keeps each process's socket fds and turns each call into :class:`NetEvent` values.
It reads nothing itself: the calls' values come from the ``syscalls`` plugin's decoding, and the
kernel's own view of a process's fds from an :class:`FdSource` (osi_linux in the plugin, a dict in tests).

A process's socket fds are known:

- at first sight (a process running when the plugin started, a fork child at its first return while
  some process holds a socket, any other process at its first network call, a process again after an
  execve, or after it received fds over a unix socket, SCM_RIGHTS): read from
  the kernel, every fd whose file is ``socket:[INODE]``.  So sockets inherited across fork, and those
  an execve closed (``O_CLOEXEC``, ``SOCK_CLOEXEC``, ``FD_CLOEXEC`` however they were set) or kept, are
  the kernel's own answer, not a guess;
- between those points, from the calls: socket, socketpair, accept and accept4 add fds (the inode of
  each is read from the kernel too, so an fd shared by two processes is one :class:`Socket`); dup,
  dup2, dup3 and fcntl's ``F_DUPFD``/``F_DUPFD_CLOEXEC`` copy them; close and close_range remove them
  (dup2 and dup3 close their ``newfd`` first, as the kernel does).

Not tracked: fds a process shares with another through ``clone(CLONE_FILES)`` without
``CLONE_THREAD`` (each has its own copy here), ``pidfd_getfd``, io_uring, and sockets made by
calls outside this list; a socket closed by its process's exit has no ``close`` event.  An execve marks its
process for a re-read at the call (a success does not return); if another thread of it makes a call that
reads the table between that call and the point where the kernel closes the close-on-exec fds, the table
keeps those fds until the process's next execve or exit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from qppsuite.plugins.net_activity.model import Endpoint, Socket, endpoint, protocol_name, split_socket_type
from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls.values import JSONValue

SEND_CALLS = frozenset({"send", "sendto", "sendmsg", "write", "writev", "sendfile", "sendfile64"})
"""Calls whose non-negative result is bytes the socket sent (sendfile: to its ``out_fd``)."""
RECV_CALLS = frozenset({"recv", "recvfrom", "recvmsg", "read", "readv"})
"""Calls whose non-negative result is bytes the socket received (0: the peer closed, or an empty datagram)."""
MMSG_CALLS = frozenset({"sendmmsg", "recvmmsg", "recvmmsg_time64"})
"""Calls whose result is a count of messages; their ``struct mmsghdr`` is not decoded, so no bytes are known."""
FD_ONLY_CALLS = frozenset({"read", "write", "readv", "writev", "sendfile", "sendfile64"})
"""Calls on any fd: recorded only when the fd is a known socket."""
SOCKET_CALLS = frozenset(
    {
        "socket",
        "socketpair",
        "bind",
        "listen",
        "connect",
        "accept",
        "accept4",
        "shutdown",
        "getsockname",
        "getpeername",
        *(SEND_CALLS - FD_ONLY_CALLS),
        *(RECV_CALLS - FD_ONLY_CALLS),
        *MMSG_CALLS,
    }
)
"""Calls recorded whatever their fd (a failure on a non-socket, ENOTSOCK, is recorded too)."""
FD_CALLS = frozenset({"close", "close_range", "dup", "dup2", "dup3", "fcntl", "fcntl64"})
"""Calls that change which fds are sockets."""
WHILE_OPEN_CALLS = FD_ONLY_CALLS | FD_CALLS
"""Calls that matter only while some process holds a socket fd."""
MAKING_CALLS = frozenset({"socket", "socketpair", "accept", "accept4"})
"""Calls whose success makes sockets (a new fd, or socketpair's two)."""
NETWORK_CALLS = SOCKET_CALLS | FD_ONLY_CALLS
"""Every call that may become a :class:`NetEvent`; a ``close`` of a socket fd does too."""

FD_ARG = {"sendfile": "out_fd", "sendfile64": "out_fd"}
"""The argument naming the socket where it is not ``fd`` (arm_syscalls.tsv)."""

CLOSE_RANGE_CLOEXEC = 1 << 2
"""close_range's CLOSE_RANGE_CLOEXEC (include/uapi/linux/close_range.h): mark, do not close."""
CLOSE_RANGE_MAX = 1 << 20
"""fds a close_range looks at past the lowest: above the kernel's default fs.nr_open (1,048,576)."""


class FdSource(Protocol):
    """The kernel's view of a process's fds (osi_linux's ``get_fds`` and ``fd_to_filename``)."""

    def socket_inodes(self, process: OsiProcess) -> dict[int, int]:
        """{fd: inode} of the process's socket fds (files named ``socket:[INODE]``)."""
        ...

    def socket_inode(self, process: OsiProcess, fd: int) -> int | None:
        """The inode of the socket ``fd`` is, or None when it is not one (or not open)."""
        ...


def socket_inode_of(path: str) -> int | None:
    """``socket:[1234]`` (what ``readlink /proc/PID/fd/N`` gives, fs/d_path.c ``dynamic_dname``) -> 1234."""
    if path.startswith("socket:[") and path.endswith("]"):
        digits = path[8:-1]
        if digits.isdigit():
            return int(digits)
    return None


@dataclass(slots=True)
class NetEvent:
    """One network call of one process: the socket it acted on and what it did.

    ``fd`` is the call's fd argument, or the new fd for socket, socketpair (one event per end), accept
    and accept4 that succeeded, whose ``socket`` is the new one (``listener`` the socket accept took it from;
    a failed accept's ``fd`` and ``socket`` are the listener's).
    ``local``/``remote`` are the ends this call named, else what the socket's earlier calls named.
    ``bytes`` is the result of a send or receive that succeeded (a receive with ``MSG_PEEK`` too, though
    the socket's totals leave it out); ``messages`` that of sendmmsg and recvmmsg.  ``retval`` is the
    signed result, ``errno`` its name when it failed.
    """

    call: str
    fd: int | None
    socket: Socket | None
    retval: int
    errno: str | None
    local: Endpoint | None = None
    remote: Endpoint | None = None
    bytes: int | None = None
    messages: int | None = None
    listener: Socket | None = None


@dataclass(slots=True)
class _FdTable:
    start_time: int
    fds: dict[int, Socket] = field(default_factory=dict)
    stale: bool = False  # re-read from the kernel before the next use (after an execve, SCM_RIGHTS)


def _int(value: JSONValue) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _fds_made(call: str, outputs: Mapping[str, JSONValue], retval: int, errno: str | None) -> tuple[int, ...]:
    """The fds a call of MAKING_CALLS made: its result, or the two socketpair wrote (none if unreadable)."""
    if errno is not None or call not in MAKING_CALLS:
        return ()
    if call != "socketpair":
        return (retval,)
    pair = outputs.get("usockvec")
    fds = tuple(fd for fd in (_int(v) for v in pair) if fd is not None) if isinstance(pair, list) else ()
    return fds if len(fds) == 2 else ()


class NetTracker:
    """Socket fds per process and the :class:`NetEvent` of each call.

    ``on_socket`` hears each new Socket; ``on_any_open`` hears True when some process comes to hold a
    socket fd where none did, and False when the last such fd is gone (no read, write, close or dup
    can then be network activity, so the plugin need not hear them).
    """

    def __init__(
        self,
        source: FdSource,
        on_socket: Callable[[Socket, OsiProcess], None],
        on_any_open: Callable[[bool], None] = lambda _: None,
    ) -> None:
        self._source = source
        self._on_socket = on_socket
        self._on_any_open = on_any_open
        self._tables: dict[int, _FdTable] = {}  # pid -> its table
        self._holders: Counter[int] = Counter()  # fd number -> how many tables hold it as a socket
        self._by_inode: dict[int, Socket] = {}

    # -- which fds are sockets ---------------------------------------------------------------
    def maybe_socket(self, fd: int) -> bool:
        """False when no process is known to hold ``fd`` as a socket: a read or write on it is no network I/O."""
        return fd in self._holders

    def anything_open(self) -> bool:
        """Whether any process is known to hold a socket (else a fork child holds none either)."""
        return bool(self._holders)

    def table(self, process: OsiProcess) -> dict[int, Socket]:
        """{fd: Socket} of ``process``, read from the kernel at first sight and after it went stale."""
        return self._current(process, ()).fds

    def _current(self, process: OsiProcess, made: tuple[int, ...]) -> _FdTable:
        """``process``'s table, (re)read from the kernel if needed, without the fds in ``made``: those the
        call being handled made, which are the kernel's already when the call returns."""
        table = self._tables.get(process.pid)
        if table is None or table.start_time != process.start_time or table.stale:
            table = self._seed(process, table, made)
        return table

    def known(self, process: OsiProcess) -> bool:
        """Whether ``process``'s socket fds are known (it was seen since it started)."""
        table = self._tables.get(process.pid)
        return table is not None and table.start_time == process.start_time

    def know(self, process: OsiProcess) -> None:
        """Read ``process``'s socket fds from the kernel now: a fork child's first return, or a process found
        when the plugin started."""
        self._seed(process, self._tables.get(process.pid))

    def stale(self, process: OsiProcess) -> None:
        """``process`` is running an execve or received fds: re-read its socket fds before their next use."""
        table = self._tables.get(process.pid)
        if table is not None and table.start_time == process.start_time and table.fds:
            table.stale = True

    def gone(self, pid: int) -> None:
        """The process ``pid`` ended: forget its fds."""
        self._drop(self._tables.pop(pid, None))

    def _seed(self, process: OsiProcess, old: _FdTable | None, made: tuple[int, ...] = ()) -> _FdTable:
        self._drop(old)
        table = self._tables[process.pid] = _FdTable(process.start_time)
        for fd, inode in self._source.socket_inodes(process).items():
            if fd not in made:
                self._put(table, fd, self._found(process, inode))
        return table

    def _found(self, process: OsiProcess, inode: int) -> Socket:
        """The Socket with ``inode`` (another fd of it, or another process's), or a new one made ``found``."""
        sock = self._by_inode.get(inode)
        if sock is None:
            sock = self._by_inode[inode] = Socket(inode, "found")
            self._on_socket(sock, process)
        return sock

    def _new_socket(self, process: OsiProcess, fd: int, created_by: str) -> Socket:
        """A socket a call just made: a new Socket even if the inode was seen before (inodes are reused)."""
        inode = self._source.socket_inode(process, fd)
        sock = Socket(inode, created_by)
        if inode is not None:
            self._by_inode[inode] = sock
        return sock

    def _put(self, table: _FdTable, fd: int, sock: Socket) -> None:
        if fd not in table.fds:
            if not self._holders:
                self._on_any_open(True)
            self._holders[fd] += 1
        table.fds[fd] = sock

    def _remove(self, table: _FdTable, fd: int) -> Socket | None:
        sock = table.fds.pop(fd, None)
        if sock is not None:
            self._holders[fd] -= 1
            if not self._holders[fd]:
                del self._holders[fd]
                if not self._holders:
                    self._on_any_open(False)
        return sock

    def _drop(self, table: _FdTable | None) -> None:
        if table is not None:
            for fd in list(table.fds):
                self._remove(table, fd)

    # -- what a call did ---------------------------------------------------------------------
    def returned(
        self,
        process: OsiProcess,
        call: str,
        args: Mapping[str, JSONValue],
        outputs: Mapping[str, JSONValue],
        retval: int,
        errno: str | None,
    ) -> list[NetEvent]:
        """The events of one call of ``process`` that returned ``retval`` (signed; ``errno`` its error name),
        with its arguments as decoded at the call and its outputs as decoded at the return."""
        made = _fds_made(call, outputs, retval, errno)
        table = self._current(process, made)  # without them if the process is seen first now: not "found"
        if call in FD_CALLS:
            return self._fd_call(table, call, args, retval, errno)
        if call in ("socket", "socketpair"):
            socks = self._sockets_made(process, table, call, args, made)
            if not socks:
                return [NetEvent(call, None, None, retval, errno)]
            return [NetEvent(call, fd, sock, retval, errno) for fd, sock in zip(made, socks, strict=True)]
        fd = _int(args.get(FD_ARG.get(call, "fd")))
        sock = table.fds.get(fd) if fd is not None else None
        if call in FD_ONLY_CALLS and sock is None:
            return []
        event = NetEvent(call, fd, sock, retval, errno)
        if sock is not None:
            event.local, event.remote = sock.local, sock.remote
        ok = errno is None
        if call in ("accept", "accept4"):
            return [self._accept(process, table, event, outputs)]
        if call == "listen":
            if ok and sock is not None:
                sock.backlog = _int(args.get("backlog"))
        elif call == "bind":
            event.local = endpoint(args.get("umyaddr")) or event.local
            if ok and sock is not None:
                sock.local = event.local
        elif call == "connect":
            event.remote = endpoint(args.get("uservaddr"))
            if sock is not None and (ok or errno == "EINPROGRESS"):
                sock.remote = event.remote
        elif call == "getsockname":
            event.local = (endpoint(outputs.get("usockaddr")) if ok else None) or event.local
            if ok and sock is not None:
                sock.local = event.local
        elif call == "getpeername":
            event.remote = (endpoint(outputs.get("usockaddr")) if ok else None) or event.remote
            if ok and sock is not None:
                sock.remote = event.remote
        elif call == "sendto":
            event.remote = endpoint(args.get("addr")) or event.remote
        elif call == "recvfrom":
            event.remote = (endpoint(outputs.get("addr")) if ok else None) or event.remote
        elif call in ("sendmsg", "recvmsg"):
            msg = (outputs if call == "recvmsg" and ok else args).get("msg")
            if isinstance(msg, dict):
                event.remote = endpoint(msg.get("msg_name")) or event.remote
                if call == "recvmsg" and ok and (_int(msg.get("msg_controllen")) or 0) > 0:
                    self.stale(process)  # it may have received fds (SCM_RIGHTS)
        if ok and call in SEND_CALLS | RECV_CALLS:
            event.bytes = retval
            flags = args.get("flags")
            peek = isinstance(flags, str) and "MSG_PEEK" in flags.split("|")  # the receive that takes it counts it
            if sock is not None and not peek:
                if call in SEND_CALLS:
                    sock.bytes_sent += retval
                    sock.sends += 1
                else:
                    sock.bytes_received += retval
                    sock.receives += 1
        elif ok and call in MMSG_CALLS:
            event.messages = retval
        return [event]

    def _sockets_made(
        self, process: OsiProcess, table: _FdTable, call: str, args: Mapping[str, JSONValue], fds: tuple[int, ...]
    ) -> list[Socket]:
        """socket, socketpair: a Socket for each new fd, of the domain, type and protocol the call asked for."""
        domain = args.get("family")
        domain = domain if isinstance(domain, str) else None
        kind, _ = split_socket_type(args.get("type"))
        protocol = _int(args.get("protocol"))
        socks = []
        for fd in fds:
            sock = self._new_socket(process, fd, call)
            sock.domain, sock.type = domain, kind
            sock.protocol = protocol_name(domain, protocol) if protocol is not None else None
            self._put(table, fd, sock)
            socks.append(sock)
        if len(socks) == 2:
            socks[0].pair, socks[1].pair = socks[1], socks[0]
        for sock in socks:
            self._on_socket(sock, process)
        return socks

    def _accept(
        self, process: OsiProcess, table: _FdTable, event: NetEvent, outputs: Mapping[str, JSONValue]
    ) -> NetEvent:
        """accept/accept4: the event is the new socket's, ``listener`` the one it came from; a failed one
        (EAGAIN on a non-blocking listener, EINTR, ...) made no socket and stays the listener's event."""
        listener = event.socket
        event.listener = listener
        if event.errno is not None:
            return event
        peer = endpoint(outputs.get("upeer_sockaddr"))
        sock = self._new_socket(process, event.retval, event.call)
        if listener is not None:
            sock.domain, sock.type, sock.protocol, sock.local = (
                listener.domain,
                listener.type,
                listener.protocol,
                listener.local,
            )
        sock.remote, sock.listener = peer, listener
        self._put(table, event.retval, sock)
        self._on_socket(sock, process)
        event.fd, event.socket, event.remote = event.retval, sock, peer
        return event

    def _fd_call(
        self, table: _FdTable, call: str, args: Mapping[str, JSONValue], retval: int, errno: str | None
    ) -> list[NetEvent]:
        """close, close_range, dup, dup2, dup3, fcntl: only a close of a socket fd is an event."""
        if errno is not None:
            if call == "close":
                fd = _int(args.get("fd"))
                if fd is not None and fd in table.fds:  # EINTR, EIO: the fd is closed all the same (fs/open.c)
                    return [NetEvent(call, fd, self._remove(table, fd), retval, errno)]
            return []
        if call == "close":
            fd = _int(args.get("fd"))
            sock = self._remove(table, fd) if fd is not None else None
            return [NetEvent(call, fd, sock, retval, errno)] if sock is not None else []
        if call == "close_range":
            low, high, flags = _int(args.get("fd")), _int(args.get("max_fd")), _int(args.get("flags"))
            if low is None or high is None or (flags or 0) & CLOSE_RANGE_CLOEXEC:
                return []  # CLOSE_RANGE_CLOEXEC: the fds close at the next execve, which re-reads them
            low &= 0xFFFFFFFF
            events = []
            for fd in [fd for fd in table.fds if low <= fd <= min(high, low + CLOSE_RANGE_MAX)]:
                events.append(NetEvent(call, fd, self._remove(table, fd), retval, errno))
            return events
        if call in ("fcntl", "fcntl64"):
            cmd = args.get("cmd")
            if cmd not in ("F_DUPFD", "F_DUPFD_CLOEXEC"):
                return []
            old = _int(args.get("fd"))
        elif call == "dup":
            old = _int(args.get("fildes"))
        else:
            old = _int(args.get("oldfd"))
        sock = table.fds.get(old) if old is not None else None
        if sock is not None:
            self._put(table, retval, sock)
        elif call in ("dup2", "dup3"):
            self._remove(table, retval)  # newfd was closed and now holds a file that is no socket
        return []
