"""The decoders against the guest's own strace: one boot runs a python3 program under
``strace -f -s 64`` inside the guest while osi_linux + syscalls + syscalls_logger record it,
and every line strace printed for a decoded kind must equal our ``text`` column.

Where strace shows something we deliberately do not decode (the termios of a successful
TCGETS), the stored values are checked against strace's numbers instead.
"""

import base64
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from oracle.guest import logged_run
from tool_modules import load_tool

from qppsuite.images.bundle import ImageBundle

WORKLOAD = r'''
import os, socket, select, signal, resource, fcntl, mmap, ctypes, struct, termios, time, threading
libc = ctypes.CDLL(None, use_errno=True)
r, w = os.pipe()
os.writev(w, [b"abc\n", b"\x01\xff", b"hello world"])
os.readv(r, [bytearray(3), bytearray(20)])
a, b = socket.socketpair()
a.sendmsg([b"one", b"two\n"])
b.recvmsg(100)
a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
a.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE)
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
p = select.poll(); p.register(r, select.POLLIN); p.register(w, select.POLLOUT); p.poll(0)
p2 = select.poll(); p2.register(r, select.POLLIN); p2.poll(0)
e = select.epoll(); e.register(b.fileno(), select.EPOLLIN); a.send(b"x"); e.poll(0.1)
e.modify(b.fileno(), select.EPOLLIN | select.EPOLLOUT); e.unregister(b.fileno())
os.listdir("/")
os.stat("/etc/passwd"); os.lstat("/bin"); os.fstat(r)
sb = ctypes.create_string_buffer(104)
libc.syscall(195, b"/etc/passwd", sb); libc.syscall(197, 1, sb); libc.syscall(196, b"/dev/null", sb)
signal.signal(signal.SIGUSR1, lambda *x: None); signal.signal(signal.SIGUSR2, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
signal.pthread_sigmask(signal.SIG_SETMASK, set())
pid = os.fork()
if pid == 0:
    os._exit(3)
os.waitpid(pid, 0)
pid = os.fork()
if pid == 0:
    os.kill(os.getpid(), signal.SIGKILL)
os.waitpid(pid, 0)
os.uname()
resource.getrlimit(resource.RLIMIT_NOFILE); resource.getrlimit(resource.RLIMIT_STACK)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
f = os.open("/etc/passwd", os.O_RDONLY); os.lseek(f, 10, os.SEEK_SET); os.lseek(f, 0, os.SEEK_END)
fcntl.fcntl(f, fcntl.F_SETFD, fcntl.FD_CLOEXEC); fcntl.fcntl(f, fcntl.F_GETFD); fcntl.fcntl(f, fcntl.F_GETFL)
fcntl.fcntl(f, fcntl.F_SETFL, os.O_NONBLOCK); fcntl.fcntl(f, fcntl.F_DUPFD_CLOEXEC, 10)
for request, size in ((termios.TIOCGWINSZ, 8), (termios.TCGETS, 60)):
    try:
        fcntl.ioctl(f, request, b"\0" * size)
    except OSError:
        pass
fcntl.ioctl(a.fileno(), termios.FIONREAD, b"\0" * 4)
fcntl.ioctl(a.fileno(), termios.FIONBIO, struct.pack("i", 1))
fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
libc.prctl(15, b"qppname", 0, 0, 0); nb = ctypes.create_string_buffer(16); libc.prctl(16, nb, 0, 0, 0)
libc.prctl(4, 0, 0, 0, 0)
libc.ptrace(0, 0, 0, 0); libc.ptrace(16, 99999, 0, 0); libc.ptrace(0x4206, 99999, 0, 0x10)
libc.ptrace(7, 99999, 0, 15); libc.ptrace(2, 99999, 0x1000, 0)
m = mmap.mmap(-1, 8192, mmap.MAP_PRIVATE, mmap.PROT_READ | mmap.PROT_WRITE); m.close()
tfd = libc.timerfd_create(1, 0)
old = ctypes.create_string_buffer(16)
libc.timerfd_settime(tfd, 0, struct.pack("<iiii", 0, 0, 1, 500), old); libc.timerfd_gettime(tfd, old)
libc.syscall(176, old, 8)
libc.syscall(88, ctypes.c_uint(0xFEE1DEAD), 672274793, ctypes.c_uint(0x89ABCDEF), 0)
th = threading.Thread(target=lambda: time.sleep(0.05)); th.start(); th.join()
os.write(1, b"caf\xc3\xa9 \x01\xff\n")
os.write(1, b"x" * 100 + b"\n")
os.umask(0o22); os.umask(0o22)
select.select([], [], [], 0.01)
pid = os.fork()
if pid == 0:
    time.sleep(0.2); os._exit(0)
os.waitpid(pid, os.WNOHANG); os.waitpid(pid, 0)
'''
CMD = (
    f"echo {base64.b64encode(WORKLOAD.encode()).decode()} | base64 -d > /tmp/w.py; "
    "strace -f -s 64 -o /tmp/s.txt python3 /tmp/w.py; echo STRACE-BEGIN; cat /tmp/s.txt; echo STRACE-END"
)

# Each decoded kind and the calls that show it; every strace line of these calls is compared.
KINDS: dict[str, tuple[str, ...]] = {
    "iovec": ("readv", "writev"),
    "msghdr": ("sendmsg", "recvmsg"),
    "pollfd and revents": ("poll",),
    "linux_dirent64": ("getdents64",),
    "statx": ("statx",),
    "stat64": ("stat64", "fstat64", "lstat64"),
    "sigaction": ("rt_sigaction",),
    "sigset": ("rt_sigprocmask", "rt_sigpending"),
    "wait status": ("wait4",),
    "sleeps": ("nanosleep", "clock_nanosleep", "clock_nanosleep_time64"),
    "utsname": ("uname",),
    "rlimit and resources": ("prlimit64", "ugetrlimit"),
    "epoll_event": ("epoll_ctl", "epoll_wait", "epoll_create1"),
    "itimerspec": ("timerfd_settime", "timerfd_gettime64"),
    "_llseek result": ("_llseek",),
    "prctl": ("prctl",),
    "ptrace": ("ptrace",),
    "fcntl": ("fcntl64",),
    "ioctl": ("ioctl",),
    "futex": ("futex", "futex_time64"),
    "sockopt": ("setsockopt", "getsockopt"),
    "sockaddr and socklen": ("getsockname", "getpeername"),
    "random bytes in hex": ("getrandom",),
    "hex arguments, octal and timeout results": ("rseq", "umask", "pselect6", "pselect6_time64", "_newselect"),
    "clone": ("clone",),
    "reboot's magic and command": ("reboot",),
    "mmap": ("mmap2", "mprotect"),
    "strings": ("write", "read", "openat", "readlink"),
}
_TERMIOS = re.compile(r"^ioctl\((\d+), TCGETS, \{c_iflag=.*\}\) = 0$")


@dataclass(frozen=True)
class StraceLine:
    tid: int  # strace -f prints each thread's own id
    name: str
    text: str


def _strace_lines(console: str) -> list[StraceLine]:
    """strace's lines for the program, as tools/capture_syscall_reads.py reads them."""
    return [StraceLine(*line) for line in load_tool("capture_syscall_reads").strace_lines(console)]


@pytest.fixture(scope="module")
def traced(oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    logged = logged_run(oracle_image, CMD, tmp_path_factory.mktemp("strace") / "strace.db")
    lines = _strace_lines(logged.console)
    rows = logged.rows()
    # strace's first pid forks, then execs python3: our rows for that pid start after the execve.
    start = {r["pid"]: r["seq"] for r in rows if r["name"] == "execve" and "/usr/bin/python3" in (r["args"] or "")}
    ours: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["seq"] > start.get(r["tid"], -1):
            ours[(r["tid"], r["name"])].append(r)
    pairs: list[tuple[StraceLine, dict[str, Any] | None]] = []
    seen: dict[tuple[int, str], int] = defaultdict(int)
    for line in lines:
        key = (line.tid, line.name)
        i = seen[key]
        seen[key] += 1
        pairs.append((line, ours[key][i] if i < len(ours[key]) else None))
    return {"pairs": pairs}


def _pairs(traced: dict[str, Any], names: tuple[str, ...]) -> list[tuple[StraceLine, dict[str, Any] | None]]:
    return [(s, o) for s, o in traced["pairs"] if s.name in names]


@pytest.mark.boot
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_decoded_kind_renders_as_the_guests_strace(traced: dict[str, Any], kind: str) -> None:
    pairs = _pairs(traced, KINDS[kind])
    assert pairs, f"the workload made no {kind} call"
    wrong = []
    for line, row in pairs:
        assert row is not None, f"no row for {line}"
        termios = _TERMIOS.match(line.text)
        if termios:  # strace decodes struct termios; we keep its address and check the request
            assert row["text"].startswith(f"ioctl({termios[1]}, TCGETS, 0x") and row["text"].endswith(") = 0")
            assert json.loads(row["args"])["cmd"] == "TCGETS"
        elif row["text"] != line.text:
            wrong.append(f"strace: {line.text}\nours:   {row['text']}")
    print(f"{kind}: {len(pairs) - len(wrong)}/{len(pairs)} lines equal to strace's")
    assert not wrong, "\n".join(wrong[:5])


def _row(traced: dict[str, Any], name: str, contains: str) -> tuple[StraceLine, dict[str, Any]]:
    for line, row in _pairs(traced, (name,)):
        if contains in line.text and row is not None:
            return line, row
    raise AssertionError(f"no {name} line containing {contains!r}")


@pytest.mark.boot
def test_stored_values_are_plain_text_hex_and_stable_types(traced: dict[str, Any]) -> None:
    _, writev = _row(traced, "writev", "abc")
    iov = json.loads(writev["args"])["vec"]
    assert iov[0] == {"base": "abc\n", "len": 4}  # 4 characters for 4 bytes, no C escaping
    assert iov[1] == {"base": {"hex": "01ff"}, "len": 2}
    _, write = _row(traced, "write", "caf")
    assert json.loads(write["args"])["buf"] == {"hex": "636166c3a92001ff0a"}
    assert write["text"] == 'write(1, "caf\\303\\251 \\1\\377\\n", 9) = 9'
    _, long = _row(traced, "write", "xxxx")
    assert json.loads(long["args"])["buf"] == "x" * 64 and long["truncated"]
    _, opened = _row(traced, "openat", '"/etc/passwd"')
    assert json.loads(opened["args"])["dfd"] == -100  # a number, shown as AT_FDCWD
    for _, row in _pairs(traced, ("mmap2", "mprotect", "fcntl64")):
        assert row is not None
        for key, value in json.loads(row["args"]).items():
            if key in ("prot", "flags", "cmd"):
                assert isinstance(value, str), (row["text"], key)


@pytest.mark.boot
def test_stored_structs_hold_straces_numbers(traced: dict[str, Any]) -> None:
    line, row = _row(traced, "wait4", "WEXITSTATUS")
    status = json.loads(row["outputs"])["stat_addr"]
    assert (status["exit_status"], status["term_signal"]) == (3, None)
    line, row = _row(traced, "wait4", "WTERMSIG")
    assert json.loads(row["outputs"])["stat_addr"]["term_signal"] == "SIGKILL"
    line, row = _row(traced, "statx", '"/etc/passwd"')
    buf = json.loads(row["outputs"])["buffer"]
    mode, size = re.search(r"stx_mode=S_IFREG\|(0\d+), stx_size=(\d+)", line.text).groups()  # type: ignore[union-attr]
    assert (buf["stx_mode"], buf["stx_size"]) == (0o100000 | int(mode, 8), int(size))
    listed = 0
    for line, got in _pairs(traced, ("getdents64",)):
        assert got is not None
        dirents = json.loads(got["outputs"] or "{}").get("dirent", {"count": 0})
        assert dirents["count"] == int(re.search(r"/\* (\d+) entries \*/", line.text)[1])  # type: ignore[index]
        listed += "etc" in [e["d_name"] for e in dirents.get("entries", [])]
    assert listed == 1  # os.listdir("/")
    line, row = _row(traced, "uname", "sysname")
    assert json.loads(row["outputs"])["name"]["sysname"] == "Linux"
    line, row = _row(traced, "rt_sigaction", "SIGUSR2, {sa_handler=SIG_IGN")
    act = json.loads(row["args"])["act"]
    assert (act["sa_handler"], act["sa_mask"], "SA_RESTORER" in act["sa_flags"]) == ("SIG_IGN", [], True)
    line, row = _row(traced, "rt_sigprocmask", "SIG_BLOCK")
    assert json.loads(row["args"])["set"] == ["SIGINT", "SIGTERM"]
    line, row = _row(traced, "prctl", "PR_GET_NAME")
    assert json.loads(row["outputs"])["arg2"] == "qppname"
