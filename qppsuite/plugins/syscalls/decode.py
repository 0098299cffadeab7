"""Turning a system call's registers and guest memory into readable, storable values.

Everything the guest passes is untrusted: pointers may be wild, lengths may be 4 GiB,
strings may never end.  So every read is bounded by a limit, every fault becomes an
error marker in the value (``{"error": "bad address 0x1234"}``), and nothing here raises
for anything the guest can do: a tracer that crashes on a bad pointer would lose exactly
the calls worth seeing.

Values are JSON-friendly (int, str, None, lists, dicts) because the logger stores them
as JSON; ``format_call`` renders them as a strace-like line for people.
"""

import ipaddress
import struct as structlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from qppsuite.core.memory import GuestMemoryError
from qppsuite.plugins.syscalls.arm_linux_abi import AT_FDCWD, ERRNO_NAMES, FLAGSETS, MAX_ERRNO
from qppsuite.plugins.syscalls.table import ArgSpec, SyscallSpec

JSONValue: TypeAlias = "int | str | bool | list[JSONValue] | dict[str, JSONValue] | None"

_U32 = 0xFFFFFFFF
_SOCKADDR_MAX = 128  # sizeof(struct sockaddr_storage)
_UNIX_PATH_MAX = 108


class GuestReader(Protocol):
    """Reads of guest virtual memory, as the core memory API provides them."""

    def read(self, vaddr: int, size: int) -> bytes: ...  # raises GuestMemoryError

    def read_cstring(self, vaddr: int, limit: int) -> bytes: ...  # up to NUL or limit; raises GuestMemoryError


@dataclass(frozen=True)
class DecodedArg:
    """One argument: its register value and what it means.

    ``raw`` is the register (for a 64-bit argument, both halves combined).  ``truncated``
    says the value was cut at a limit (string, buffer, argv or iovec length).
    """

    name: str
    type: str
    raw: int
    value: JSONValue
    truncated: bool = False


@dataclass(frozen=True)
class DecodedReturn:
    """A call's result.

    ``value`` is signed for calls returning a number, an fd or a byte count, and for every
    error; a successful ``ptr``/``ulong`` result (mmap2, brk) stays an unsigned address and
    ``address`` is set.  ``errno`` names an error result (-4095..-1).  ``outputs`` are the
    arguments the kernel wrote (read buffers, returned structs), decoded after a successful
    return; they replace the same-named arguments when the call is formatted.
    """

    value: int
    errno: str | None
    outputs: tuple[DecodedArg, ...] = ()
    address: bool = False


@dataclass(frozen=True)
class _Limits:
    string: int
    buf: int
    array: int


def _signed32(value: int) -> int:
    value &= _U32
    return value - (1 << 32) if value & 0x80000000 else value


def _bad(address: int) -> dict[str, JSONValue]:
    return {"error": f"bad address {address & _U32:#x}"}


def escape_bytes(data: bytes) -> str:
    """C-style escaping, so any bytes round-trip into a JSON string unambiguously."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif b == 0x22:
            out.append('\\"')
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        elif b == 0x0D:
            out.append("\\r")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


# --- struct codecs ---------------------------------------------------------------------


def _timespec32(data: bytes) -> JSONValue:
    sec, nsec = structlib.unpack("<ii", data)
    return {"tv_sec": sec, "tv_nsec": nsec}


def _timespec64(data: bytes) -> JSONValue:
    sec, nsec = structlib.unpack("<qq", data)
    return {"tv_sec": sec, "tv_nsec": nsec}


def _timeval32(data: bytes) -> JSONValue:
    sec, usec = structlib.unpack("<ii", data)
    return {"tv_sec": sec, "tv_usec": usec}


def _fd_pair(data: bytes) -> JSONValue:
    return list(structlib.unpack("<ii", data))


_FIXED_STRUCTS: dict[str, tuple[int, Callable[[bytes], JSONValue]]] = {
    "old_timespec32": (8, _timespec32),
    "__kernel_timespec": (16, _timespec64),
    "__kernel_old_timeval": (8, _timeval32),
    "old_timeval32": (8, _timeval32),
    "fd_pair": (8, _fd_pair),
}
DECODED_STRUCTS: frozenset[str] = frozenset({*_FIXED_STRUCTS, "sockaddr"})
"""Structs whose contents are decoded; other struct arguments show as their address."""


def decode_sockaddr(data: bytes) -> JSONValue:
    """struct sockaddr_{in,in6,un} and the family of any other, from the bytes the caller gave."""
    if len(data) < 2:
        return {"family": None}
    family_no = int.from_bytes(data[:2], "little")
    family = FLAGSETS["socket_family"].format(family_no)
    if family_no == 2 and len(data) >= 8:
        return {
            "family": family,
            "port": int.from_bytes(data[2:4], "big"),
            "addr": str(ipaddress.IPv4Address(data[4:8])),
        }
    if family_no == 10 and len(data) >= 24:
        out: dict[str, JSONValue] = {
            "family": family,
            "port": int.from_bytes(data[2:4], "big"),
            "flowinfo": int.from_bytes(data[4:8], "big"),
            "addr": str(ipaddress.IPv6Address(data[8:24])),
        }
        if len(data) >= 28:
            out["scope_id"] = int.from_bytes(data[24:28], "little")
        return out
    if family_no == 1:
        path = data[2 : 2 + _UNIX_PATH_MAX]
        if not path:
            return {"family": family}
        if path[0] == 0:
            return {"family": family, "path": "@" + escape_bytes(path[1:].rstrip(b"\0")), "abstract": True}
        return {"family": family, "path": escape_bytes(path.split(b"\0", 1)[0])}
    return {"family": family, "data": escape_bytes(data[2:])}


# --- decoding ----------------------------------------------------------------------------


class _Decoder:
    """Decodes one call's arguments against one memory snapshot."""

    def __init__(self, spec: SyscallSpec, raw_args: Sequence[int], mem: GuestReader, limits: _Limits) -> None:
        self.spec = spec
        regs = [int(r) & _U32 for r in raw_args[:7]]
        self.regs = regs + [0] * (7 - len(regs))
        self.mem = mem
        self.limits = limits

    def raw(self, arg: ArgSpec) -> int:
        if arg.type == "u64":
            lo, hi = arg.regs
            return self.regs[lo] | (self.regs[hi] << 32)
        return self.regs[arg.regs[0]]

    def read_u32(self, address: int) -> int | None:
        try:
            data = self.mem.read(address, 4)
        except GuestMemoryError:
            return None
        return int.from_bytes(data[:4].ljust(4, b"\0"), "little")

    def length_of(self, arg: ArgSpec) -> int | None:
        """Value of the argument's length argument; a pointer-typed one (socklen_t *) is read."""
        if arg.len_arg is None:
            return None
        len_spec = self.spec.args[arg.len_arg]
        raw = self.raw(len_spec)
        if len_spec.type == "ptr":
            return None if raw == 0 else self.read_u32(raw)
        return raw if len_spec.type in ("size", "unsigned", "ulong") else max(_signed32(raw), 0)

    def cstring(self, address: int) -> tuple[JSONValue, bool]:
        if address == 0:
            return None, False
        limit = self.limits.string
        try:
            data = self.mem.read_cstring(address, limit + 1)
        except GuestMemoryError:
            return _bad(address), False
        data = data.split(b"\0", 1)[0]
        return escape_bytes(data[:limit]), len(data) > limit

    def bytes_at(self, address: int, length: int) -> tuple[JSONValue, bool]:
        if address == 0:
            return None, False
        shown = min(max(length, 0), self.limits.buf)
        try:
            data = self.mem.read(address, shown) if shown else b""
        except GuestMemoryError:
            return _bad(address), False
        return escape_bytes(data[:shown]), length > shown

    def argv(self, address: int) -> tuple[JSONValue, bool]:
        if address == 0:
            return None, False
        items: list[JSONValue] = []
        truncated = False
        for i in range(self.limits.array + 1):
            pointer = self.read_u32(address + 4 * i)
            if pointer is None:
                if i == 0:
                    return _bad(address), False
                items.append(_bad(address + 4 * i))
                break
            if pointer == 0:
                break
            if i == self.limits.array:
                truncated = True
                break
            text, cut = self.cstring(pointer)
            items.append(text)
            truncated |= cut
        return items, truncated

    def iovecs(self, address: int, count: int, total: int | None) -> tuple[JSONValue, bool]:
        """The iovec array; with ``total`` (bytes the kernel transferred) only that much is read."""
        if address == 0:
            return None, False
        shown = min(count, self.limits.array)
        try:
            table = self.mem.read(address, 8 * shown) if shown else b""
        except GuestMemoryError:
            return _bad(address), False
        items: list[JSONValue] = []
        truncated = count > shown
        remaining = total
        for i in range(shown):
            base, length = structlib.unpack_from("<II", table.ljust(8 * shown, b"\0"), 8 * i)
            take = length if remaining is None else min(length, remaining)
            data, cut = self.bytes_at(base, take)
            if remaining is not None:
                remaining -= take
            items.append({"base": data, "len": length})
            truncated |= cut
        return items, truncated

    def struct(self, arg: ArgSpec, address: int, length: int | None) -> tuple[JSONValue, bool]:
        if address == 0:
            return None, False
        if arg.struct == "sockaddr":
            if length is None:
                return address, False
            size = min(length, _SOCKADDR_MAX)
            if size < 2:
                return address, False
            try:
                return decode_sockaddr(self.mem.read(address, size)), False
            except GuestMemoryError:
                return _bad(address), False
        codec = _FIXED_STRUCTS.get(arg.struct or "")
        if codec is None:
            return address, False
        size, decode = codec
        try:
            data = self.mem.read(address, size * arg.count)
        except GuestMemoryError:
            return _bad(address), False
        data = data.ljust(size * arg.count, b"\0")
        if arg.count == 1:
            return decode(data[:size]), False
        return [decode(data[i * size : (i + 1) * size]) for i in range(arg.count)], False

    def at_call(self, arg: ArgSpec) -> DecodedArg:
        raw = self.raw(arg)
        value: JSONValue
        truncated = False
        t = arg.type
        if t in ("int", "long", "ssize"):
            value = _signed32(raw)
        elif t in ("unsigned", "ulong", "size", "u64", "mode"):
            value = raw
        elif t == "fd":
            value = "AT_FDCWD" if _signed32(raw) == AT_FDCWD else _signed32(raw)
        elif t == "flags":
            value = FLAGSETS[arg.flagset or ""].format(raw)
        elif t == "ptr":
            value = raw or None
        elif t in ("cstring", "path"):
            value, truncated = self.cstring(raw)
        elif t == "argv":
            value, truncated = self.argv(raw)
        elif raw == 0:
            value = None
        elif arg.direction == "out":
            value = raw
        elif t == "buf":
            length = self.length_of(arg)
            value, truncated = (raw, False) if length is None else self.bytes_at(raw, length)
        elif t == "iov":
            value, truncated = self.iovecs(raw, self.length_of(arg) or 0, None)
        else:
            value, truncated = self.struct(arg, raw, self.length_of(arg))
        return DecodedArg(arg.name, t, raw, value, truncated)

    def at_return(self, arg: ArgSpec, result: int) -> DecodedArg | None:
        """An output argument after a successful call, or None if it holds nothing to show."""
        raw = self.raw(arg)
        if arg.direction != "out" or arg.type not in ("buf", "iov", "struct"):
            return None
        if arg.type == "struct" and arg.struct not in DECODED_STRUCTS:
            return None
        transferred = result if self.spec.returns == "ssize" else None
        value: JSONValue
        if arg.type == "buf":
            length = self.length_of(arg)
            if transferred is not None:
                length = transferred if length is None else min(length, transferred)
            value, truncated = (raw or None, False) if length is None else self.bytes_at(raw, length)
        elif arg.type == "iov":
            value, truncated = self.iovecs(raw, self.length_of(arg) or 0, transferred)
        else:
            value, truncated = self.struct(arg, raw, self.length_of(arg))
        return DecodedArg(arg.name, arg.type, raw, value, truncated)


def decode_args(
    spec: SyscallSpec,
    raw_args: Sequence[int],
    mem: GuestReader,
    *,
    string_limit: int = 256,
    buf_limit: int = 64,
    array_limit: int = 32,
) -> list[DecodedArg]:
    """Decode the arguments as the call begins (``raw_args`` are r0-r6).

    Output buffers and output structs show as their address here; ``decode_return`` reads
    them once the kernel has filled them in.
    """
    decoder = _Decoder(spec, raw_args, mem, _Limits(string_limit, buf_limit, array_limit))
    return [decoder.at_call(arg) for arg in spec.args]


def decode_return(
    spec: SyscallSpec,
    retval: int,
    raw_args: Sequence[int],
    mem: GuestReader,
    *,
    string_limit: int = 256,
    buf_limit: int = 64,
    array_limit: int = 32,
) -> DecodedReturn:
    """Decode r0 at the return, and the output arguments if the call succeeded.

    ``raw_args`` must be the registers as they were at the call: the kernel may have
    changed r1-r6 by the time it returns.
    """
    raw = retval & _U32
    signed = _signed32(raw)
    if spec.returns != "ulong" and -MAX_ERRNO <= signed <= -1:
        return DecodedReturn(signed, ERRNO_NAMES.get(-signed, f"ERRNO_{-signed}"))
    address = spec.returns in ("ptr", "ulong")
    value = raw if address else signed
    decoder = _Decoder(spec, raw_args, mem, _Limits(string_limit, buf_limit, array_limit))
    outputs = []
    for arg in spec.args:
        decoded = decoder.at_return(arg, max(signed, 0))
        if decoded is not None:
            outputs.append(decoded)
    return DecodedReturn(value, None, tuple(outputs), address)


# --- formatting --------------------------------------------------------------------------

_SYMBOLIC_KEYS = frozenset({"family"})


def _format_error(value: dict[str, JSONValue]) -> str:
    text = str(value["error"])
    return f"{text.removeprefix('bad address ')} <bad>"


def _format_nested(value: JSONValue, key: str = "") -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value if key in _SYMBOLIC_KEYS else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_format_nested(v) for v in value) + "]"
    if "error" in value:
        return _format_error(value)
    return "{" + ", ".join(f"{k}={_format_nested(v, k)}" for k, v in value.items()) + "}"


def format_arg(arg: DecodedArg) -> str:
    """One argument as strace would print it."""
    value = arg.value
    if isinstance(value, dict) and "error" in value:
        return f"{arg.raw:#x} <bad>"
    if value is None:
        return "NULL"
    t = arg.type
    if t == "mode" and isinstance(value, int):
        return "0" + format(value, "o") if value else "000"
    if t in ("ptr", "buf", "iov", "struct") and isinstance(value, int):
        return f"{value:#x}"
    if t in ("cstring", "path", "buf") and isinstance(value, str):
        return f'"{value}"' + ("..." if arg.truncated else "")
    if t == "iov" and isinstance(value, list):
        parts = []
        for item in value:
            if isinstance(item, dict) and "error" not in item:
                parts.append(f"{{iov_base={_format_nested(item.get('base'))}, iov_len={item.get('len')}}}")
            else:
                parts.append(_format_nested(item))
        return "[" + ", ".join(parts) + ("..." if arg.truncated else "") + "]"
    if t == "argv" and isinstance(value, list):
        items = [_format_nested(v) for v in value]
        if arg.truncated:
            items.append("...")
        return "[" + ", ".join(items) + "]"
    if isinstance(value, str):
        return value
    return _format_nested(value)


def format_return(result: DecodedReturn) -> str:
    """``3``, ``-1 ENOENT`` (the way libc would report it), or an address in hex."""
    if result.errno is not None:
        return f"-1 {result.errno}"
    return f"{result.value:#x}" if result.address else str(result.value)


def format_call(name: str, decoded: Sequence[DecodedArg], result: DecodedReturn | None = None) -> str:
    """A strace-like line: ``openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0644)``.

    With ``result``, output arguments are shown as the kernel filled them and `` = value``
    is appended.
    """
    args = list(decoded)
    if result is not None:
        outputs = {out.name: out for out in result.outputs}
        args = [outputs.get(a.name, a) for a in args]
    line = f"{name}({', '.join(format_arg(a) for a in args)})"
    if result is not None:
        line += f" = {format_return(result)}"
    return line
