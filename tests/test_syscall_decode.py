"""Decoding syscall arguments and results against guest memory (a fake, paged, in-memory guest)."""

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qppsuite.core.memory import GuestMemoryError
from qppsuite.plugins.syscalls import subcommands
from qppsuite.plugins.syscalls.decode import (
    DecodedArg,
    decode_args,
    decode_return,
    decode_sockaddr,
    format_call,
)
from qppsuite.plugins.syscalls.table import SYSCALLS, SyscallSpec, by_name
from qppsuite.plugins.syscalls.values import quote, stored_bytes, text_or_hex

PAGE = 4096
AT_FDCWD_REG = 0xFFFFFF9C


class FakeGuestMemory:
    """Guest memory as a dict of 4 KiB pages; anything else is unmapped."""

    def __init__(self, pages: dict[int, bytes] | None = None) -> None:
        self.pages: dict[int, bytearray] = {k: bytearray(v) for k, v in (pages or {}).items()}

    def put(self, address: int, data: bytes) -> int:
        for i, b in enumerate(data):
            page = self.pages.setdefault((address + i) // PAGE, bytearray(PAGE))
            page[(address + i) % PAGE] = b
        return address

    def read(self, vaddr: int, size: int) -> bytes:
        out = bytearray()
        for a in range(vaddr, vaddr + size):
            page = self.pages.get(a // PAGE)
            if page is None:
                raise GuestMemoryError(a)
            out.append(page[a % PAGE])
        return bytes(out)

    def read_cstring(self, vaddr: int, limit: int) -> bytes:
        out = bytearray()
        while len(out) < limit:
            b = self.read(vaddr + len(out), 1)[0]
            if b == 0:
                break
            out.append(b)
        return bytes(out)


def u32s(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def call(name: str, raw: list[int], mem: FakeGuestMemory, **limits: int) -> list[DecodedArg]:
    return decode_args(by_name(name), raw, mem, **limits)


# --- at the call ---------------------------------------------------------------------------


def test_openat_formats_like_strace() -> None:
    mem = FakeGuestMemory()
    path = mem.put(0x10000, b"/tmp/x\0")
    args = call("openat", [AT_FDCWD_REG, path, 0o1101, 0o644], mem)
    assert [a.value for a in args] == [-100, "/tmp/x", "O_WRONLY|O_CREAT|O_TRUNC", 0o644]
    assert format_call("openat", args) == 'openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0644)'


def test_strings_are_stored_raw_and_quoted_like_strace_when_shown() -> None:
    mem = FakeGuestMemory()
    path = mem.put(0x10000, b'a"b\\c\n\xff' + b"z" * 100 + b"\0")
    (arg,) = call("unlink", [path], mem, string_limit=10)
    assert arg.value == {"hex": (b'a"b\\c\n\xffzzz').hex()}  # not UTF-8: every byte, in hex
    assert arg.truncated
    assert format_call("unlink", [arg]) == 'unlink("a\\"b\\\\c\\n\\377zzz"...)'
    (whole,) = call("unlink", [path], mem, string_limit=200)
    assert not whole.truncated and (stored_bytes(whole.value) or b"").endswith(b"z" * 100)


def test_string_exactly_at_the_limit_is_not_truncated() -> None:
    mem = FakeGuestMemory()
    path = mem.put(0x10000, b"0123456789\0")
    (arg,) = call("unlink", [path], mem, string_limit=10)
    assert (arg.value, arg.truncated) == ("0123456789", False)


def test_null_and_bad_pointers_never_raise() -> None:
    mem = FakeGuestMemory()
    args = call("openat", [AT_FDCWD_REG, 0x1234, 0, 0], mem)
    assert args[1].value == {"error": "bad address 0x1234"}
    assert format_call("openat", args) == "openat(AT_FDCWD, 0x1234 <bad>, O_RDONLY)"  # no O_CREAT: no mode
    null = call("execve", [0, 0, 0], mem)
    assert [a.value for a in null] == [None, None, None]
    assert format_call("execve", null) == "execve(NULL, NULL, NULL)"


def test_string_running_into_an_unmapped_page_is_a_bad_address() -> None:
    mem = FakeGuestMemory()
    path = mem.put(PAGE - 3, b"abc")  # no NUL before the next, unmapped, page
    (arg,) = call("chdir", [path], mem)
    assert arg.value == {"error": f"bad address {path:#x}"}


def test_argv_is_a_null_terminated_string_array() -> None:
    mem = FakeGuestMemory()
    prog = mem.put(0x10000, b"/bin/ls\0")
    opt = mem.put(0x10010, b"-l\0")
    argv = mem.put(0x20000, u32s(prog, opt, 0x1234, 0))
    env = mem.put(0x20100, u32s(0))
    args = call("execve", [prog, argv, env], mem)
    assert args[1].value == ["/bin/ls", "-l", {"error": "bad address 0x1234"}]
    assert args[2].value == []
    assert format_call("execve", args) == 'execve("/bin/ls", ["/bin/ls", "-l", 0x1234 <bad>], 0x20100 /* 0 vars */)'


def test_argv_is_cut_at_the_array_limit() -> None:
    mem = FakeGuestMemory()
    word = mem.put(0x10000, b"x\0")
    argv = mem.put(0x20000, u32s(*([word] * 10), 0))
    args = call("execve", [word, argv, 0], mem, array_limit=4)
    assert args[1].value == ["x"] * 4 and args[1].truncated
    assert format_call("execve", args) == 'execve("x", ["x", "x", "x", "x", ...], NULL)'
    exact = call("execve", [word, argv, 0], mem, array_limit=10)
    assert exact[1].value == ["x"] * 10 and not exact[1].truncated


def test_argv_array_that_runs_off_mapped_memory() -> None:
    mem = FakeGuestMemory()
    word = mem.put(0x10000, b"x\0")
    argv = mem.put(2 * PAGE - 4, u32s(word))  # no terminator: the next page is unmapped
    args = call("execve", [word, argv, 2 * PAGE + 0x100], mem)
    assert args[1].value == ["x", {"error": f"bad address {2 * PAGE:#x}"}]
    assert args[2].value == {"error": f"bad address {2 * PAGE + 0x100:#x}"}


def test_input_buffers_are_read_at_the_call_and_cut_at_buf_limit() -> None:
    mem = FakeGuestMemory()
    data = mem.put(0x10000, b"hello\n" + bytes(range(10)))
    args = call("write", [1, data, 16], mem, buf_limit=8)
    assert args[1].value == "hello\n\x00\x01"  # text: the characters themselves, 8 for 8 bytes
    assert args[1].truncated
    assert format_call("write", args) == 'write(1, "hello\\n\\0\\1"..., 16)'


def test_output_buffers_show_their_address_at_the_call() -> None:
    mem = FakeGuestMemory()
    args = call("read", [3, 0x10000, 100], mem)
    assert args[1].value == 0x10000
    assert format_call("read", args) == "read(3, 0x10000, 100)"


def test_u64_register_pair() -> None:
    args = call("pread64", [3, 0x10000, 10, 0xDEAD, 0x1000, 0x1], FakeGuestMemory())
    assert args[3].name == "pos" and args[3].value == 0x1_0000_1000


def test_split_u64_is_reassembled_in_the_calls_own_order() -> None:
    args = call("_llseek", [3, 0x2, 0x10, 0x20000, 0], FakeGuestMemory())
    assert args[1].value == 0x2_0000_0010
    assert format_call("_llseek", args) == "_llseek(3, 8589934608, 0x20000, SEEK_SET)"


def test_mmap2_and_signed_fds() -> None:
    args = call("mmap2", [0, 8192, 3, 0x22, 0xFFFFFFFF, 0], FakeGuestMemory())
    assert format_call("mmap2", args) == "mmap2(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)"


def test_writev_iovecs() -> None:
    mem = FakeGuestMemory()
    a = mem.put(0x10000, b"hello ")
    b = mem.put(0x10100, b"world\n")
    vec = mem.put(0x20000, u32s(a, 6, b, 6))
    args = call("writev", [1, vec, 2], mem)
    assert args[1].value == [{"base": "hello ", "len": 6}, {"base": "world\n", "len": 6}]
    assert format_call("writev", args) == (
        'writev(1, [{iov_base="hello ", iov_len=6}, {iov_base="world\\n", iov_len=6}], 2)'
    )


def test_sockaddr_in_in6_and_unix() -> None:
    inet = struct.pack("<H", 2) + struct.pack(">H", 8080) + bytes([10, 0, 2, 15]) + bytes(8)
    assert decode_sockaddr(inet) == {"family": "AF_INET", "port": 8080, "addr": "10.0.2.15"}
    inet6 = struct.pack("<H", 10) + struct.pack(">H", 443) + bytes(4) + bytes(15) + b"\x01" + bytes(4)
    assert decode_sockaddr(inet6) == {"family": "AF_INET6", "port": 443, "flowinfo": 0, "addr": "::1", "scope_id": 0}
    unix = struct.pack("<H", 1) + b"/run/sock\0junk"
    assert decode_sockaddr(unix) == {"family": "AF_UNIX", "path": "/run/sock"}
    abstract = struct.pack("<H", 1) + b"\0name"
    assert decode_sockaddr(abstract) == {"family": "AF_UNIX", "path": "@name", "abstract": True}
    assert decode_sockaddr(struct.pack("<H", 16) + b"\x01")["family"] == "AF_NETLINK"

    mem = FakeGuestMemory()
    addr = mem.put(0x30000, inet)
    args = call("connect", [3, addr, 16], mem)
    assert format_call("connect", args) == (
        'connect(3, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("10.0.2.15")}, 16)'
    )


def test_socket_and_clone_flags() -> None:
    mem = FakeGuestMemory()
    assert format_call("socket", call("socket", [1, 0o2000001, 0], mem)) == (
        "socket(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC, 0)"
    )
    clone = call("clone", [0x01200011, 0, 0, 0, 0xB6FFF068], mem)
    assert format_call("clone", clone) == (
        "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, child_tidptr=0xb6fff068)"
    )


def test_input_timespecs() -> None:
    mem = FakeGuestMemory()
    ts = mem.put(0x10000, struct.pack("<ii", 1, 500_000_000))
    assert format_call("nanosleep", call("nanosleep", [ts, 0], mem)) == (
        "nanosleep({tv_sec=1, tv_nsec=500000000}, NULL)"
    )
    ts64 = mem.put(0x11000, struct.pack("<qqqq", 1 << 33, 0, 5, 6))
    args = call("utimensat_time64", [AT_FDCWD_REG, 0, ts64, 0x100], mem)
    assert args[2].value == [{"tv_sec": 1 << 33, "tv_nsec": 0}, {"tv_sec": 5, "tv_nsec": 6}]
    assert args[3].value == "AT_SYMLINK_NOFOLLOW"


def test_undecoded_structs_show_their_address() -> None:
    args = call("fstat64", [3, 0xBEFFF000], FakeGuestMemory())
    assert args[1].value == 0xBEFFF000
    assert format_call("fstat64", args) == "fstat64(3, 0xbefff000)"


# --- at the return -------------------------------------------------------------------------


def test_errno_names_use_the_asm_generic_table() -> None:
    spec = by_name("openat")
    mem = FakeGuestMemory()
    for retval, name in ((-2, "ENOENT"), (-13, "EACCES"), (-38, "ENOSYS"), (-512, "ERESTARTSYS")):
        result = decode_return(spec, retval & 0xFFFFFFFF, [0] * 7, mem)
        assert (result.value, result.errno) == (retval, name)
    assert decode_return(spec, -4095, [0] * 7, mem).errno == "ERRNO_4095"
    assert decode_return(spec, -4096, [0] * 7, mem).errno is None
    assert decode_return(spec, 3, [0] * 7, mem).errno is None


def test_failed_open_formats_like_strace() -> None:
    mem = FakeGuestMemory()
    path = mem.put(0x10000, b"/nope\0")
    raw = [AT_FDCWD_REG, path, 0, 0]
    result = decode_return(by_name("openat"), -2, raw, mem)
    assert format_call("openat", decode_args(by_name("openat"), raw, mem), result) == (
        'openat(AT_FDCWD, "/nope", O_RDONLY) = -1 ENOENT'
    )


def test_read_buffer_is_read_at_return_with_the_returned_length() -> None:
    mem = FakeGuestMemory()
    buf = mem.put(0x10000, b"root:x:0:0\n" + b"?" * 50)
    raw = [3, buf, 4096]
    result = decode_return(by_name("read"), 11, raw, mem)
    assert result.value == 11 and result.errno is None
    (out,) = result.outputs
    assert (out.name, out.value, out.truncated) == ("buf", "root:x:0:0\n", False)
    args = decode_args(by_name("read"), raw, mem)
    assert format_call("read", args, result) == 'read(3, "root:x:0:0\\n", 4096) = 11'
    long = decode_return(by_name("read"), 60, raw, mem, buf_limit=16)
    assert long.outputs[0].truncated and long.outputs[0].value == "root:x:0:0\n?????"


def test_failed_read_reads_no_buffer() -> None:
    result = decode_return(by_name("read"), -9, [3, 0x10000, 10], FakeGuestMemory())
    assert (result.errno, result.outputs) == ("EBADF", ())


def test_output_buffer_at_a_bad_address() -> None:
    result = decode_return(by_name("read"), 4, [3, 0x1234, 10], FakeGuestMemory())
    assert result.outputs[0].value == {"error": "bad address 0x1234"}


def test_readv_distributes_the_returned_bytes() -> None:
    mem = FakeGuestMemory()
    a = mem.put(0x10000, b"abcd")
    b = mem.put(0x10100, b"efgh")
    vec = mem.put(0x20000, u32s(a, 4, b, 4))
    result = decode_return(by_name("readv"), 6, [0, vec, 2], mem)
    assert result.outputs[0].value == [{"base": "abcd", "len": 4}, {"base": "ef", "len": 4}]


def test_pipe_fds_and_getsockopt_length_pointer() -> None:
    mem = FakeGuestMemory()
    fds = mem.put(0x10000, struct.pack("<ii", 3, 4))
    raw = [fds, 0o2000000]
    result = decode_return(by_name("pipe2"), 0, raw, mem)
    assert format_call("pipe2", decode_args(by_name("pipe2"), raw, mem), result) == "pipe2([3, 4], O_CLOEXEC) = 0"

    val = mem.put(0x11000, struct.pack("<i", 1) + b"\xee" * 12)
    length = mem.put(0x12000, struct.pack("<I", 4))
    out = {o.name: o.value for o in decode_return(by_name("getsockopt"), 0, [3, 1, 2, val, length], mem).outputs}
    assert out == {"optval": 1, "optlen": 4}  # an int option shows as strace's [1], [4]


def test_accept_peer_address_uses_the_value_result_length() -> None:
    mem = FakeGuestMemory()
    peer = mem.put(0x10000, struct.pack("<H", 1) + b"/tmp/s\0")
    length = mem.put(0x11000, struct.pack("<I", 9))
    result = decode_return(by_name("accept"), 5, [3, peer, length], mem)
    assert result.outputs[0].value == {"family": "AF_UNIX", "path": "/tmp/s"}


def test_clock_gettime_fills_its_timespec() -> None:
    mem = FakeGuestMemory()
    tp = mem.put(0x10000, struct.pack("<ii", 1700000000, 42))
    raw = [1, tp]
    args = decode_args(by_name("clock_gettime"), raw, mem)
    assert format_call("clock_gettime", args) == "clock_gettime(CLOCK_MONOTONIC, 0x10000)"
    result = decode_return(by_name("clock_gettime"), 0, raw, mem)
    assert format_call("clock_gettime", args, result) == (
        "clock_gettime(CLOCK_MONOTONIC, {tv_sec=1700000000, tv_nsec=42}) = 0"
    )


def test_addresses_returned_stay_unsigned_and_raw_values_have_no_errno() -> None:
    mem = FakeGuestMemory()
    mapped = decode_return(by_name("mmap2"), 0xB6F00000, [0] * 6, mem)
    assert (mapped.value, mapped.errno, mapped.address) == (0xB6F00000, None, True)
    failed = decode_return(by_name("mmap2"), -12 & 0xFFFFFFFF, [0] * 6, mem)
    assert (failed.value, failed.errno) == (-12, "ENOMEM")
    tls = decode_return(by_name("get_tls"), 0xFFFFFFFE, [], mem)
    assert (tls.value, tls.errno) == (0xFFFFFFFE, None)
    assert format_call(
        "brk", decode_args(by_name("brk"), [0], mem), decode_return(by_name("brk"), 0x22000, [0], mem)
    ) == ("brk(NULL) = 0x22000")


def test_text_and_hex_round_trip_through_json_losslessly() -> None:
    for data in (bytes(range(256)), "café\n".encode(), b"", b"\0\0", b"\xff"):
        stored = json.loads(json.dumps(text_or_hex(data)))
        assert stored_bytes(stored) == data
    assert text_or_hex(b"abc\n") == "abc\n"
    assert text_or_hex(b"\x01\xff") == {"hex": "01ff"}


def test_quoting_follows_strace_string_quote() -> None:
    # Each expectation is a line the guest's strace 6.1 printed (tests/test_syscall_strace.py
    # runs the program that produced them).
    assert quote(b"abc\n") == '"abc\\n"'
    assert quote(b"\x01\xff") == '"\\1\\377"'
    assert quote(b"caf\xc3\xa9 \x01\xff\n") == '"caf\\303\\251 \\1\\377\\n"'
    assert quote(b"\xa7\r\r\n\0\0") == '"\\247\\r\\r\\n\\0\\0"'
    assert quote(b"\x001") == '"\\0001"'  # an octal digit next: three digits
    assert quote(b'  File "/tmp/w.py"', truncated=True) == '"  File \\"/tmp/w.py\\""...'


# --- never raise -----------------------------------------------------------------------------

_specs = st.sampled_from(sorted(SYSCALLS.values(), key=lambda s: s.number))
_pages = st.dictionaries(
    st.sampled_from([0, 1, 2, 0x10, 0x11, 0xBEFFF, 0xFFFFF]),
    st.binary(min_size=PAGE, max_size=PAGE),
    max_size=4,
)
# Arbitrary integers, and pointers that land in, or next to, the pages that may be mapped.
_registers = st.lists(
    st.one_of(
        st.integers(min_value=-(2**40), max_value=2**40),
        st.sampled_from([0, 4, PAGE - 2, PAGE, 0x10000, 0x10FFE, 0x11000, 0xBEFFF000, 0xFFFFFFFC]),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    spec=_specs,
    raw=_registers,
    pages=_pages,
    limits=st.tuples(st.integers(0, 300), st.integers(0, 100), st.integers(0, 40)),
)
def test_decoding_never_raises_and_stays_json(
    spec: SyscallSpec, raw: list[int], pages: dict[int, bytes], limits: tuple[int, int, int]
) -> None:
    mem = FakeGuestMemory(pages)
    string_limit, buf_limit, array_limit = limits
    args = decode_args(spec, raw, mem, string_limit=string_limit, buf_limit=buf_limit, array_limit=array_limit)
    names = [a.name for a in spec.args]
    if spec.name in subcommands.AT_CALL:  # strace's per-command arguments: a subsequence
        assert all(a.name in names or a.name == "val2" for a in args)  # futex's utime register as val2
    else:
        assert [a.name for a in args] == names
    json.dumps([a.value for a in args])
    for retval in (0, 1, 7, -14, raw[0] if raw else 0x7FFFFFFF):
        result = decode_return(
            spec, retval, raw, mem, string_limit=string_limit, buf_limit=buf_limit, array_limit=array_limit
        )
        json.dumps([o.value for o in result.outputs])
        assert format_call(spec.name, args, result).startswith(spec.name + "(")


# --- replayed from the guest -----------------------------------------------------------------

STRACE_READS = Path(__file__).parent / "data" / "syscalls" / "strace_reads.json"
"""Calls made by tests/test_syscall_decode_strace.py's workload in the oracle image, each with
the guest memory the decoder read at the call and at the return, and the line the guest's
strace printed for it (captured with tools/capture_syscall_reads.py)."""


class ReplayedGuestMemory(FakeGuestMemory):
    """Guest memory holding exactly the bytes a real decode read; anything else is unmapped."""

    def __init__(self, reads: list[list[Any]]) -> None:
        super().__init__()
        self.bytes: dict[int, int] = {}
        for address, data in reads:
            for i, b in enumerate(bytes.fromhex(data)):
                self.bytes[address + i] = b

    def read(self, vaddr: int, size: int) -> bytes:
        try:
            return bytes(self.bytes[a] for a in range(vaddr, vaddr + size))
        except KeyError as missing:
            raise GuestMemoryError(missing.args[0]) from None


def _replayed() -> list[dict[str, Any]]:
    return list(json.loads(STRACE_READS.read_text(encoding="utf-8")))


@pytest.mark.parametrize("call", _replayed(), ids=lambda c: str(c["strace"])[:60])
def test_guest_bytes_decode_to_straces_line(call: dict[str, Any]) -> None:
    spec = by_name(call["name"])
    args = decode_args(spec, call["raw_args"], ReplayedGuestMemory(call["entry_reads"]))
    result = decode_return(spec, call["retval"], call["raw_args"], ReplayedGuestMemory(call["return_reads"]))
    assert format_call(call["name"], args, result) == call["strace"]
    json.dumps([a.value for a in args] + [o.value for o in result.outputs])


def test_replayed_calls_cover_every_decoded_kind() -> None:
    names = {c["name"] for c in _replayed()}
    for kind in ("readv", "writev", "sendmsg", "recvmsg", "poll", "getdents64", "statx", "stat64", "fstat64"):
        assert kind in names
    for kind in ("rt_sigaction", "rt_sigprocmask", "wait4", "uname", "prlimit64", "ugetrlimit", "epoll_ctl"):
        assert kind in names
    for kind in ("epoll_wait", "timerfd_settime", "_llseek", "prctl", "fcntl64", "ioctl", "futex", "setsockopt"):
        assert kind in names
    assert {"getsockopt", "clone", "mmap2", "getsockname", "getpeername", "getrandom"} <= names
