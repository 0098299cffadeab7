"""Turning a system call's registers and guest memory into readable, storable values.

Everything the guest passes is untrusted: pointers may be wild, lengths may be 4 GiB,
strings may never end.  So every read is bounded by a limit, every fault becomes an
error marker in the value (``{"error": "bad address 0x1234"}``), and nothing here raises
for anything the guest can do: a tracer that crashes on a bad pointer would lose exactly
the calls worth seeing.

Values are JSON-friendly (int, str, None, lists, dicts) because the logger stores them
as JSON, in the representation ``values`` describes (text as plain strings, other bytes as
``{"hex": ...}``); ``formatting.format_call`` renders them as a strace-like line for people.
Struct layouts are in ``structs``, the calls whose arguments depend on a sub-command
(prctl, fcntl, ioctl, futex, *sockopt, epoll_ctl, poll, mmap2) in ``subcommands``.
"""

import ipaddress
import struct as structlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from qppsuite.core.guest import GuestMemoryError
from qppsuite.plugins.syscalls import structs
from qppsuite.plugins.syscalls.arm_linux_abi import ERRNO_NAMES, FLAGSETS, MAX_ERRNO
from qppsuite.plugins.syscalls.table import ArgSpec, SyscallSpec
from qppsuite.plugins.syscalls.values import JSONValue, signed32, text_or_hex

_U32 = 0xFFFFFFFF
_SOCKADDR_MAX = 128  # sizeof(struct sockaddr_storage)
_UNIX_PATH_MAX = 108


class GuestReader(Protocol):
    """Reads of guest virtual memory, as the core memory API provides them."""

    def read(self, vaddr: int, size: int) -> bytes: ...  # raises GuestMemoryError

    def read_cstring(self, vaddr: int, limit: int) -> bytes: ...  # up to NUL or limit; raises GuestMemoryError


@dataclass(frozen=True, init=False)
class DecodedArg:
    """One argument: its register value and what it means.

    ``raw`` is the register (for a 64-bit argument, both halves combined).  ``truncated``
    says the value was cut at a limit (string, buffer, argv, iovec or array length).
    ``printer`` names how ``format_arg`` shows ``value`` when the type alone does not say:
    a struct codec of ``structs.CODECS`` or one of the special forms (``sigset``,
    ``loff_t``, ``int_ptr``, ``hex``...).  Text values are ``values.text_or_hex`` forms.
    """

    name: str
    type: str
    raw: int
    value: JSONValue
    truncated: bool = False
    printer: str | None = None

    def __init__(
        self, name: str, type: str, raw: int, value: JSONValue, truncated: bool = False, printer: str | None = None
    ) -> None:
        # The generated __init__ of a frozen dataclass sets each field through object.__setattr__: 1.1 µs an
        # argument against 0.7 µs for this one update of the instance's dict, three or four times per call.
        self.__dict__.update(name=name, type=type, raw=raw, value=value, truncated=truncated, printer=printer)


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


class _Limits(NamedTuple):
    """Bytes of a string and of a buffer, entries of an array (made for every call and return: a tuple)."""

    string: int
    buf: int
    array: int


def _bad(address: int) -> dict[str, JSONValue]:
    return {"error": f"bad address {address & _U32:#x}"}


# --- struct codecs kept here: those whose reading needs more than one fixed read ---------


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


_FIXED_STRUCTS: dict[str, structs.StructCodec] = {
    "old_timespec32": structs.StructCodec(8, _timespec32),
    "__kernel_timespec": structs.StructCodec(16, _timespec64),
    "__kernel_old_timeval": structs.StructCodec(8, _timeval32),
    "old_timeval32": structs.StructCodec(8, _timeval32),
    "fd_pair": structs.StructCodec(8, _fd_pair),
    **structs.CODECS,
}
_VARIABLE_STRUCTS = frozenset({"sockaddr", "sigset", "loff_t", "linux_dirent64", "user_msghdr"})
DECODED_STRUCTS: frozenset[str] = frozenset({*_FIXED_STRUCTS, *_VARIABLE_STRUCTS})
"""Structs whose contents are decoded; other struct arguments show as their address."""
_MSG_FLAGS = FLAGSETS["msg_flags"]


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
            return {"family": family, "path": text_or_hex(b"@" + path[1:].rstrip(b"\0")), "abstract": True}
        return {"family": family, "path": text_or_hex(path.split(b"\0", 1)[0])}
    return {"family": family, "data": text_or_hex(data[2:])}


# --- decoding ----------------------------------------------------------------------------


class _Decoder:
    """Decodes one call's arguments against one memory snapshot."""

    def __init__(self, spec: SyscallSpec, raw_args: Sequence[int], mem: GuestReader, limits: _Limits) -> None:
        self.spec = spec
        regs = [int(r) & _U32 for r in raw_args[:7]]
        if len(regs) < 7:
            regs += [0] * (7 - len(regs))
        self.regs = regs
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
        return raw if len_spec.type in ("size", "unsigned", "ulong") else max(signed32(raw), 0)

    def cstring(self, address: int) -> tuple[JSONValue, bool]:
        if address == 0:
            return None, False
        limit = self.limits.string
        try:
            data = self.mem.read_cstring(address, limit + 1)
        except GuestMemoryError:
            return _bad(address), False
        data = data.split(b"\0", 1)[0]
        return text_or_hex(data[:limit]), len(data) > limit

    def bytes_at(self, address: int, length: int) -> tuple[JSONValue, bool]:
        if address == 0:
            return None, False
        shown = min(max(length, 0), self.limits.buf)
        try:
            data = self.mem.read(address, shown) if shown else b""
        except GuestMemoryError:
            return _bad(address), False
        return text_or_hex(data[:shown]), length > shown

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

    def struct(
        self, arg: ArgSpec, address: int, length: int | None, result: int | None = None
    ) -> tuple[JSONValue, bool]:
        """A struct argument's contents; ``result`` is the call's return at the return."""
        if address == 0:
            return None, False
        name = arg.struct or ""
        try:
            if name == "sockaddr":
                if length is None:
                    return address, False
                size = min(length, _SOCKADDR_MAX)
                if size < 2:
                    return address, False
                return decode_sockaddr(self.mem.read(address, size)), False
            if name == "sigset":
                return structs.sigset(self.read_exact(address, structs.SIGSET_BYTES)), False
            if name == "loff_t":
                return structs.loff_t(self.read_exact(address, 8)), False
            if name == "linux_dirent64":
                return self.dirents(address, length if result is None else result)
            if name == "user_msghdr":
                return self.msghdr(address, result)
            codec = _FIXED_STRUCTS.get(name)
            if codec is None:
                return address, False
            count = arg.count
            if arg.len_arg is not None and length is not None:
                count = length
            if name == "epoll_event" and result is not None:
                count = result
            if arg.len_arg is None and count == 1 and not (name == "epoll_event" and result is not None):
                return codec.decode(self.read_exact(address, codec.size)), False
            shown = min(max(count, 0), self.limits.array)
            data = self.read_exact(address, codec.size * shown)
        except GuestMemoryError:
            return _bad(address), False
        items = [codec.decode(data[i * codec.size : (i + 1) * codec.size]) for i in range(shown)]
        return items, count > shown

    def read_exact(self, address: int, size: int) -> bytes:
        return self.mem.read(address, size).ljust(size, b"\0") if size else b""

    def dirents(self, address: int, length: int | None) -> tuple[JSONValue, bool]:
        """linux_dirent64 records (include/linux/dirent.h) in ``length`` bytes: the count of
        all of them and the first ``array_limit`` (d_ino, d_off, d_type, d_name)."""
        if length is None or length <= 0:
            return {"count": 0, "entries": []}, False
        data = self.read_exact(address, min(length, 1 << 20))
        entries: list[JSONValue] = []
        count = offset = 0
        while offset + 19 <= len(data):
            ino, off, reclen, dtype = structlib.unpack_from("<QqHB", data, offset)
            if reclen < 19:
                break
            if count < self.limits.array:
                name = data[offset + 19 : offset + reclen].split(b"\0", 1)[0]
                entries.append(
                    {
                        "d_ino": ino,
                        "d_off": off,
                        "d_type": structs.DIRENT_TYPES.get(dtype, str(dtype)),
                        "d_name": text_or_hex(name),
                    }
                )
            count += 1
            offset += reclen
        return {"count": count, "entries": entries}, count > len(entries)

    def msghdr(self, address: int, transferred: int | None, name_filled: bool = True) -> tuple[JSONValue, bool]:
        """struct user_msghdr (include/linux/socket.h, 28 bytes); the iovecs hold the data sent,
        or at the return of recvmsg the ``transferred`` bytes received.  ``name_filled`` is
        False for recvmsg's call, when msg_name is only a buffer (shown by address)."""
        name, namelen, iov, iovlen, control, controllen, flags = structlib.unpack(
            "<IiIIIII", self.read_exact(address, 28)
        )
        msg_name: JSONValue = None
        if name:
            msg_name = name
            if namelen >= 2 and name_filled:
                try:
                    msg_name = decode_sockaddr(self.mem.read(name, min(namelen, _SOCKADDR_MAX)))
                except GuestMemoryError:
                    msg_name = _bad(name)
        iovs, truncated = self.iovecs(iov, iovlen, transferred)
        return {
            "msg_name": msg_name,
            "msg_namelen": namelen,
            "msg_iov": iovs,
            "msg_iovlen": iovlen,
            "msg_control": control or None,
            "msg_controllen": controllen,
            "msg_flags": _MSG_FLAGS.format(flags),
        }, truncated

    def at_call(self, arg: ArgSpec) -> DecodedArg:
        raw = self.raw(arg)
        value: JSONValue
        truncated = False
        t = arg.type
        if t in ("int", "long", "ssize"):
            value = signed32(raw)
        elif t == "u64":  # loff_t: signed, as strace prints _llseek(3, -22, ...)
            value = raw - (1 << 64) if raw >> 63 else raw
        elif t in ("unsigned", "ulong", "size", "mode"):
            value = raw
        elif t == "fd":
            value = signed32(raw)
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
            return DecodedArg(arg.name, t, raw, value, truncated, _struct_printer(arg, value))
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
            value, truncated = self.struct(arg, raw, self.length_of(arg), result)
            return DecodedArg(arg.name, arg.type, raw, value, truncated, _struct_printer(arg, value))
        return DecodedArg(arg.name, arg.type, raw, value, truncated)


def _struct_printer(arg: ArgSpec, value: JSONValue) -> str | None:
    """The struct's name when its contents were decoded (not an address, NULL or error)."""
    if isinstance(value, dict) and "error" in value:
        return None
    if isinstance(value, (dict, list)) or (arg.struct == "loff_t" and isinstance(value, int)):
        return arg.struct
    return None


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
    args = [decoder.at_call(arg) for arg in spec.args]
    hook = subcommands.AT_CALL.get(spec.name)
    return args if hook is None else hook(decoder, args)


def errno_name(value: int) -> str | None:
    """``ENOENT`` for a signed result in the kernel's error range (-4095..-1), None for any other."""
    if -MAX_ERRNO <= value <= -1:
        return ERRNO_NAMES.get(-value, f"ERRNO_{-value}")
    return None


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
    signed = signed32(raw)
    if spec.returns != "ulong" and -MAX_ERRNO <= signed <= -1:
        return DecodedReturn(signed, errno_name(signed))
    address = spec.returns in ("ptr", "ulong")
    value = raw if address else signed
    written = _written_args(spec)
    hook = subcommands.AT_RETURN.get(spec.name)
    if not written and hook is None:
        return DecodedReturn(value, None, (), address)
    decoder = _Decoder(spec, raw_args, mem, _Limits(string_limit, buf_limit, array_limit))
    outputs = []
    for arg in written:
        decoded = decoder.at_return(arg, max(signed, 0))
        if decoded is not None:
            outputs.append(decoded)
    if hook is not None:
        outputs = hook(decoder, max(signed, 0), outputs)
    return DecodedReturn(value, None, tuple(outputs), address)


_WRITTEN: dict[int, tuple[SyscallSpec, tuple[ArgSpec, ...]]] = {}
"""Call number -> (its spec, the arguments ``_Decoder.at_return`` may decode), made at the first return."""


def _written_args(spec: SyscallSpec) -> tuple[ArgSpec, ...]:
    """The arguments the kernel may fill in (output buffers, iovecs, decoded structs), once per spec."""
    known = _WRITTEN.get(spec.number)
    if known is not None and known[0] is spec:
        return known[1]
    written = tuple(
        arg
        for arg in spec.args
        if arg.direction == "out"
        and arg.type in ("buf", "iov", "struct")
        and (arg.type != "struct" or arg.struct in DECODED_STRUCTS)
    )
    _WRITTEN[spec.number] = (spec, written)
    return written


# The formatting half and the sub-command tables import from this module; they are
# imported last so that ``decode.format_call`` and friends stay where callers find them.
from qppsuite.plugins.syscalls import subcommands  # noqa: E402
from qppsuite.plugins.syscalls.formatting import format_arg, format_call, format_return  # noqa: E402

__all__ = [
    "DECODED_STRUCTS",
    "DecodedArg",
    "DecodedReturn",
    "GuestReader",
    "decode_args",
    "decode_return",
    "decode_sockaddr",
    "format_arg",
    "format_call",
    "format_return",
]
