# python3: TCP, UDP, IPv6, a unix socketpair and a unix path socket over loopback, and calls with hostile
# socket addresses; prints its own view of each (inodes, ports, byte counts, errno names) as NET lines.
import ctypes
import errno
import json
import os
import socket

TCP_UP, TCP_DOWN, UDP_UP, UDP_DOWN, PAIR, UNIX = 3000, 2000, 700, 300, 1234, 555


def ino(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


def recv_exactly(s: socket.socket, n: int) -> int:
    got = 0
    while got < n:
        data = s.recv(n - got)
        if not data:
            break
        got += len(data)
    return got


def say(kind: str, **facts: object) -> None:
    print("NET " + json.dumps({"kind": kind, **facts}), flush=True)


say("pid", pid=os.getpid())

srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0))
srv.listen(2)
port = srv.getsockname()[1]
cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
cli.connect(("127.0.0.1", port))
conn, peer = srv.accept()
cli.sendall(b"u" * TCP_UP)
up = recv_exactly(conn, TCP_UP)
conn.sendall(b"d" * TCP_DOWN)
down = recv_exactly(cli, TCP_DOWN)
say(
    "tcp",
    port=port,
    client_port=cli.getsockname()[1],
    peer=list(peer),
    listener=ino(srv),
    client=ino(cli),
    server=ino(conn),
    up=up,
    down=down,
)

u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u2.sendto(b"q" * UDP_UP, u1.getsockname())
data, sender = u1.recvfrom(4096)
u1.sendto(b"r" * UDP_DOWN, sender)
reply, replier = u2.recvfrom(4096)
say("udp", a=ino(u1), b=ino(u2), a_port=u1.getsockname()[1], b_port=sender[1], up=len(data), down=len(reply))

try:
    v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v6.bind(("::1", 0))
    v6.sendto(b"6" * 66, v6.getsockname())
    got6 = len(v6.recv(100))
    say("udp6", sock=ino(v6), port=v6.getsockname()[1], bytes=got6)
except OSError as exc:
    say("udp6", error=errno.errorcode[exc.errno])

a, b = socket.socketpair()
a.sendall(b"p" * PAIR)
say("pair", a=ino(a), b=ino(b), bytes=recv_exactly(b, PAIR))

path = "/tmp/qppsuite-net.sock"
if os.path.exists(path):
    os.unlink(path)
us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
us.bind(path)
us.listen(1)
uc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
uc.connect(path)
ua, _ = us.accept()
sent = uc.sendmsg([b"m" * UNIX])
msg, _, _, _ = ua.recvmsg(UNIX)
say("unix", listener=ino(us), client=ino(uc), server=ino(ua), sent=sent, received=len(msg), path=path)

# A fork child writes on a socket it inherited (its parent closes its own copy), then runs sh, which writes
# on the copy dup2 made inheritable: python's own fd of the socket is close-on-exec, so the exec closes it.
x, y = socket.socketpair()
child = os.fork()
if child == 0:
    x.close()
    y.send(b"c" * 10)
    os.dup2(y.fileno(), 5)
    os.execv("/bin/sh", ["sh", "-c", "printf 12345 >&5"])
y_inode, y_fd = ino(y), y.fileno()
y.close()
os.waitpid(child, 0)
say("fork", child=child, sock=y_inode, fd=y_fd, received=len(x.recv(100)))
x.close()

# SCM_RIGHTS: a child makes a UDP socket and passes it to its parent over a unix socket; the parent sends on it.
p1, p2 = socket.socketpair()
child = os.fork()
if child == 0:
    made = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    socket.send_fds(p2, [b"fd"], [made.fileno()])
    os._exit(0)
_, fds, _, _ = socket.recv_fds(p1, 10, 1)
os.waitpid(child, 0)
passed = socket.socket(fileno=fds[0])
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.bind(("127.0.0.1", 0))
passed.sendto(b"z" * 77, sink.getsockname())
say("passed", child=child, sock=ino(passed), fd=fds[0], bytes=len(sink.recv(100)))
for s in (p1, p2, passed, sink):
    s.close()

# Hostile addresses straight through libc: a family nobody has, lengths the kernel refuses, bad pointers.
libc = ctypes.CDLL(None, use_errno=True)
junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
garbage = ctypes.create_string_buffer(b"\x41\x41" + b"\xff\xfe garbage \x00\x01" * 9)
failures = []
for call, args in (
    ("connect", (junk.fileno(), garbage, len(garbage.raw))),  # family 0x4141
    ("connect", (junk.fileno(), garbage, 0xFFFF)),  # longer than sockaddr_storage
    ("connect", (junk.fileno(), garbage, -1)),
    ("bind", (junk.fileno(), ctypes.c_void_p(16), 16)),  # an address in the zero page
    ("sendto", (junk.fileno(), b"x", 1, 0, garbage, 1)),  # one byte: no family
):
    result = getattr(libc, call)(*args)
    failures.append([call, result, errno.errorcode.get(ctypes.get_errno(), "0") if result < 0 else None])
say("hostile", sock=ino(junk), calls=failures)
for s in (srv, cli, conn, u1, u2, a, b, us, uc, ua, junk):
    s.close()
os.unlink(path)
say("done")
