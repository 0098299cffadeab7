"""net_activity's logic without a guest: socket fds per process and the events of each call.

The calls are fed as the syscalls plugin decodes them (its ``decode_sockaddr`` makes the addresses,
including hostile ones); the kernel's fd view is a dict standing in for osi_linux.
"""

from __future__ import annotations

import struct

import pytest

from qppsuite.plugins.net_activity.model import Endpoint, Socket, endpoint, protocol_name, split_socket_type
from qppsuite.plugins.net_activity.tracker import NetTracker, socket_inode_of
from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls.decode import decode_sockaddr
from qppsuite.plugins.syscalls.values import JSONValue


def _process(pid: int, start_time: int = 1) -> OsiProcess:
    return OsiProcess(pid, pid, 1, "p", 0x1000, 0xC0000000 + pid, start_time, False)


class Kernel:
    """{pid: {fd: inode}}: the socket fds osi_linux would read."""

    def __init__(self) -> None:
        self.fds: dict[int, dict[int, int]] = {}

    def socket_inodes(self, process: OsiProcess) -> dict[int, int]:
        return dict(self.fds.get(process.pid, {}))

    def socket_inode(self, process: OsiProcess, fd: int) -> int | None:
        return self.fds.get(process.pid, {}).get(fd)


def _inet(port: int, addr: str = "127.0.0.1") -> JSONValue:
    return decode_sockaddr(struct.pack("<H", 2) + struct.pack(">H", port) + bytes(map(int, addr.split("."))) + bytes(8))


@pytest.fixture
def world() -> tuple[Kernel, NetTracker, list[Socket]]:
    kernel = Kernel()
    made: list[Socket] = []
    return kernel, NetTracker(kernel, lambda sock, process: made.append(sock)), made


def test_a_tcp_exchange_names_both_ends_and_counts_bytes(world: tuple[Kernel, NetTracker, list[Socket]]) -> None:
    kernel, net, made = world
    server = _process(10)
    kernel.fds[10] = {3: 501}
    (ev,) = net.returned(
        server, "socket", {"family": "AF_INET", "type": "SOCK_STREAM|SOCK_CLOEXEC", "protocol": 0}, {}, 3, None
    )
    listener = ev.socket
    assert listener is not None and (listener.inode, listener.domain, listener.type, listener.protocol) == (
        501,
        "AF_INET",
        "SOCK_STREAM",
        "IPPROTO_IP",
    )
    net.returned(server, "bind", {"fd": 3, "umyaddr": _inet(5555)}, {}, 0, None)
    net.returned(server, "listen", {"fd": 3, "backlog": 4}, {}, 0, None)
    assert (listener.local, listener.backlog) == (Endpoint("AF_INET", "127.0.0.1", 5555), 4)
    (again,) = net.returned(server, "accept4", {"fd": 3}, {}, -11, "EAGAIN")  # non-blocking, no one waiting
    assert (again.fd, again.socket, again.errno, again.local) == (3, listener, "EAGAIN", listener.local)
    kernel.fds[10][4] = 502
    (acc,) = net.returned(server, "accept4", {"fd": 3}, {"upeer_sockaddr": _inet(40000)}, 4, None)
    conn = acc.socket
    assert conn is not None and acc.listener is listener and acc.fd == 4
    assert (conn.inode, conn.local, conn.remote) == (502, listener.local, Endpoint("AF_INET", "127.0.0.1", 40000))
    (sent,) = net.returned(server, "write", {"fd": 4}, {}, 100, None)
    (got,) = net.returned(server, "recvfrom", {"fd": 4, "addr": None}, {"addr": None}, 7, None)
    assert (sent.bytes, got.bytes, sent.remote, got.remote) == (100, 7, conn.remote, conn.remote)
    assert (conn.bytes_sent, conn.sends, conn.bytes_received, conn.receives) == (100, 1, 7, 1)
    assert net.returned(server, "read", {"fd": 0}, {}, 5, None) == []  # not a socket: no event
    (closed,) = net.returned(server, "close", {"fd": 4}, {}, 0, None)
    assert closed.socket is conn and not net.maybe_socket(4)
    assert net.returned(server, "write", {"fd": 4}, {}, 1, None) == []
    assert made == [listener, conn]


def test_failures_keep_their_errno_and_a_refused_connect_names_no_remote(
    world: tuple[Kernel, NetTracker, list[Socket]],
) -> None:
    kernel, net, _ = world
    client = _process(11)
    kernel.fds[11] = {3: 600}
    net.returned(client, "socket", {"family": "AF_INET6", "type": "SOCK_DGRAM", "protocol": 17}, {}, 3, None)
    (ev,) = net.returned(client, "connect", {"fd": 3, "uservaddr": _inet(1)}, {}, -111, "ECONNREFUSED")
    assert ev.errno == "ECONNREFUSED" and ev.remote == Endpoint("AF_INET", "127.0.0.1", 1) and ev.bytes is None
    sock = ev.socket
    assert sock is not None and sock.remote is None and sock.protocol == "IPPROTO_UDP"
    (ev,) = net.returned(client, "sendto", {"fd": 3, "addr": _inet(9)}, {}, -11, "EAGAIN")
    assert ev.bytes is None and sock.sends == 0
    (ev,) = net.returned(
        client, "socket", {"family": "AF_ALG", "type": "SOCK_SEQPACKET", "protocol": 0}, {}, -97, "EAFNOSUPPORT"
    )
    assert (ev.socket, ev.fd, ev.errno) == (None, None, "EAFNOSUPPORT")


def test_fork_children_share_sockets_by_inode_and_dup2_close_and_exec_are_followed(
    world: tuple[Kernel, NetTracker, list[Socket]],
) -> None:
    kernel, net, made = world
    parent, child = _process(20), _process(21)
    kernel.fds[20] = {5: 700}
    net.returned(parent, "socket", {"family": "AF_UNIX", "type": "SOCK_STREAM", "protocol": 0}, {}, 5, None)
    kernel.fds[21] = {5: 700}  # the child's copy, as the kernel holds it
    net.know(child)
    assert net.table(child)[5] is net.table(parent)[5] and len(made) == 1
    net.returned(child, "dup2", {"oldfd": 5, "newfd": 1}, {}, 1, None)
    (ev,) = net.returned(child, "write", {"fd": 1}, {}, 3, None)
    assert ev.socket is made[0] and made[0].bytes_sent == 3
    net.returned(parent, "close", {"fd": 5}, {}, 0, None)
    assert net.maybe_socket(5)  # the child still holds it
    kernel.fds[21] = {1: 700}  # the execve closed fd 5 (close-on-exec) and kept fd 1
    net.stale(child)
    assert set(net.table(child)) == {1} and net.table(child)[1] is made[0]
    net.returned(child, "dup2", {"oldfd": 0, "newfd": 1}, {}, 1, None)  # a file over the socket
    assert not net.maybe_socket(1) and net.returned(child, "write", {"fd": 1}, {}, 3, None) == []
    net.gone(21)
    assert not net.anything_open()


def test_a_pid_reused_by_a_new_process_starts_from_the_kernel(world: tuple[Kernel, NetTracker, list[Socket]]) -> None:
    kernel, net, _ = world
    kernel.fds[30] = {3: 800}
    assert set(net.table(_process(30, start_time=1))) == {3}
    kernel.fds[30] = {}
    assert net.table(_process(30, start_time=2)) == {} and not net.maybe_socket(3)


def test_socketpair_dup_fcntl_and_close_range(world: tuple[Kernel, NetTracker, list[Socket]]) -> None:
    kernel, net, _ = world
    proc = _process(40)
    kernel.fds[40] = {3: 900, 4: 901}
    events = net.returned(
        proc,
        "socketpair",
        {"family": "AF_UNIX", "type": "SOCK_STREAM|SOCK_CLOEXEC", "protocol": 0},
        {"usockvec": [3, 4]},
        0,
        None,
    )
    a, b = (e.socket for e in events)
    assert a is not None and b is not None and (a.pair, b.pair, a.inode, b.inode) == (b, a, 900, 901)
    net.returned(proc, "fcntl64", {"fd": 3, "cmd": "F_DUPFD_CLOEXEC", "arg": 10}, {}, 10, None)
    net.returned(proc, "dup", {"fildes": 4}, {}, 11, None)
    table = net.table(proc)
    assert (table[10], table[11]) == (a, b)
    closed = net.returned(proc, "close_range", {"fd": 4, "max_fd": 0xFFFFFFFF, "flags": 0}, {}, 0, None)
    assert sorted(e.fd for e in closed if e.fd is not None) == [4, 10, 11] and set(net.table(proc)) == {3}
    assert net.returned(proc, "close_range", {"fd": 0, "max_fd": 9, "flags": 4}, {}, 0, None) == []


HOSTILE: list[bytes] = [
    b"",
    b"\x02",
    b"\x02\x00\x00",  # AF_INET, 3 bytes
    b"\x0a\x00" + bytes(10),  # AF_INET6, too short for an address
    b"\x41\x41" + b"garbage\xff\xfe",  # no such family, bytes that are not UTF-8
    b"\xff\xff" + bytes(126),
    b"\x01\x00" + b"\xff\xfe/not-utf8",  # AF_UNIX, a path that is not UTF-8
    b"\x01\x00",  # AF_UNIX, unnamed
    b"\x01\x00\x00abstract\x00",
]


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_socket_addresses_become_an_endpoint_or_none(data: bytes) -> None:
    end = endpoint(decode_sockaddr(data))
    assert end is None or isinstance(end, Endpoint)


def test_address_shapes_the_decoder_gives() -> None:
    assert endpoint(None) is None and endpoint(0x1234) is None and endpoint({"error": "bad address 0x4"}) is None
    assert endpoint({"family": None}) == Endpoint(None)
    assert endpoint(decode_sockaddr(b"\x01\x00/tmp/s\x00")) == Endpoint("AF_UNIX", "/tmp/s")
    assert endpoint(decode_sockaddr(b"\x01\x00\x00name")) == Endpoint("AF_UNIX", "@name")
    assert endpoint(decode_sockaddr(b"\x01\x00\xff/x")) == Endpoint("AF_UNIX", '{"hex": "ff2f78"}')
    v6 = decode_sockaddr(b"\x0a\x00\x15\xb3" + bytes(4) + bytes(15) + b"\x01" + bytes(4))
    assert endpoint(v6) == Endpoint("AF_INET6", "::1", 5555)
    assert endpoint({"family": 7, "addr": "1.2.3.4"}) is None
    assert endpoint({"family": "AF_INET", "addr": "1.2.3.4", "port": "x"}) == Endpoint("AF_INET", "1.2.3.4")


def test_hostile_calls_do_not_raise(world: tuple[Kernel, NetTracker, list[Socket]]) -> None:
    _, net, _ = world
    proc = _process(50)
    for call, args, outputs in (
        ("connect", {"fd": 7, "uservaddr": 0x10}, {}),
        ("bind", {"fd": "x", "umyaddr": {"error": "bad address 0x0"}}, {}),
        ("socketpair", {"family": 3, "type": None, "protocol": "x"}, {"usockvec": {"error": "bad"}}),
        ("socketpair", {}, {"usockvec": [1, "x"]}),
        ("recvmsg", {"fd": 1}, {"msg": [1]}),
        ("accept", {"fd": 1}, {"upeer_sockaddr": 7}),
        ("close_range", {"fd": None}, {}),
        ("fcntl", {"fd": 1, "cmd": 5}, {}),
    ):
        for event in net.returned(proc, call, args, outputs, 0, None):
            assert event.call == call


def test_names_as_strace_gives_them() -> None:
    assert [
        protocol_name(d, p)
        for d, p in (("AF_INET", 6), ("AF_INET6", 0), ("AF_UNIX", 0), ("AF_NETLINK", 0), ("AF_INET", 999))
    ] == [
        "IPPROTO_TCP",
        "IPPROTO_IP",
        "0",
        "NETLINK_ROUTE",
        "999",
    ]
    assert split_socket_type("SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC") == ("SOCK_DGRAM", "SOCK_NONBLOCK|SOCK_CLOEXEC")
    assert split_socket_type(None) == (None, None)
    assert socket_inode_of("socket:[123]") == 123 and socket_inode_of("/tmp/socket:[1]") is None
    assert socket_inode_of("socket:[]") is None


def test_the_plugin_hears_fd_calls_only_while_a_socket_is_open() -> None:
    kernel, heard = Kernel(), []
    net = NetTracker(kernel, lambda sock, process: None, heard.append)
    a, b = _process(60), _process(61)
    kernel.fds[60] = {3: 1000}
    net.returned(a, "socket", {"family": "AF_INET", "type": "SOCK_DGRAM", "protocol": 0}, {}, 3, None)
    kernel.fds[61] = {3: 1000}
    net.know(b)
    net.returned(a, "dup", {"fildes": 3}, {}, 4, None)
    net.returned(a, "close", {"fd": 3}, {}, 0, None)
    net.returned(a, "close", {"fd": 4}, {}, 0, None)
    assert heard == [True] and net.anything_open()
    net.gone(61)
    assert heard == [True, False] and not net.anything_open()


def test_a_peek_is_an_event_but_not_counted_twice(world: tuple[Kernel, NetTracker, list[Socket]]) -> None:
    kernel, net, _ = world
    proc = _process(70)
    kernel.fds[70] = {3: 1100}
    (made,) = net.returned(proc, "socket", {"family": "AF_INET", "type": "SOCK_DGRAM", "protocol": 0}, {}, 3, None)
    (peek,) = net.returned(proc, "recvfrom", {"fd": 3, "flags": "MSG_PEEK|MSG_DONTWAIT"}, {}, 9, None)
    (take,) = net.returned(proc, "recvfrom", {"fd": 3, "flags": 0}, {}, 9, None)
    assert made.socket is not None and (peek.bytes, take.bytes, made.socket.bytes_received, made.socket.receives) == (
        9,
        9,
        9,
        1,
    )
