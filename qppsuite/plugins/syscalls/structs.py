"""Codecs for the structs system calls pass: ARM EABI byte layouts in, JSON values out, and
each value rendered back the way strace prints it.

Layouts are those of the 32-bit ARM EABI kernel (64-bit members are 8-byte aligned), each
checked against the Linux 6.1 header named in its codec.  A codec takes exactly ``size``
bytes (the decoder reads them, so a bad address never reaches here) and returns a JSON
value whose types never depend on the data: numbers are ints, symbolic values (flags,
signal names, handlers) are strings in strace's spelling, text is ``values.text_or_hex``.
"""

import struct as structlib
from collections.abc import Callable
from dataclasses import dataclass

from qppsuite.plugins.syscalls.arm_linux_abi import FILE_TYPES, FLAGSETS, SIGNAL_NAMES
from qppsuite.plugins.syscalls.values import JSONValue, quote_value, text_or_hex

_STATX_MASK = FLAGSETS["statx_mask"]
_STATX_ATTRS = FLAGSETS["statx_attributes"]
_SA_FLAGS = FLAGSETS["sa_flags"]
_POLL_EVENTS = FLAGSETS["poll_events"]
_EPOLL_EVENTS = FLAGSETS["epoll_events"]
_SA_RESTORER = 0x04000000
_RLIM_INFINITY = 0xFFFFFFFF
_RLIM64_INFINITY = 0xFFFFFFFFFFFFFFFF
SIGSET_BYTES = 8
"""sizeof(sigset_t) for the kernel: _NSIG 64 bits (arch/arm/include/asm/signal.h)."""

DIRENT_TYPES: dict[int, str] = {
    0: "DT_UNKNOWN",
    1: "DT_FIFO",
    2: "DT_CHR",
    4: "DT_DIR",
    6: "DT_BLK",
    8: "DT_REG",
    10: "DT_LNK",
    12: "DT_SOCK",
    14: "DT_WHT",
}
"""d_type values (include/linux/fs_types.h, FT_* >> 12)."""


# --- numbers as strace shows them --------------------------------------------------------


def format_mode(mode: int) -> str:
    """``S_IFREG|0644``, ``S_IFDIR|S_ISVTX|0777`` (strace's sprintmode)."""
    parts = []
    kind = FILE_TYPES.get(mode & 0o170000)
    if kind is not None:
        parts.append(kind)
    elif mode & 0o170000:
        parts.append(f"{mode & 0o170000:#o}")
    for name, bit in (("S_ISUID", 0o4000), ("S_ISGID", 0o2000), ("S_ISVTX", 0o1000)):
        if mode & bit:
            parts.append(name)
    perms = mode & 0o777
    parts.append(("0" + format(perms, "o") if perms else "0").rjust(3, "0"))  # C's %#03o
    return "|".join(parts)


def _makedev(dev: int) -> str:
    major = (dev >> 8) & 0xFFF
    minor = (dev & 0xFF) | ((dev >> 12) & 0xFFF00)
    return f"makedev({_hex(major)}, {_hex(minor)})"


def _hex(value: int) -> str:
    return f"{value:#x}" if value else "0"


# --- stat64, statx -----------------------------------------------------------------------


def stat64(data: bytes) -> JSONValue:
    """struct stat64 (arch/arm/include/uapi/asm/stat.h, 104 bytes)."""
    dev, mode, nlink, uid, gid, rdev, size, blksize, blocks = structlib.unpack_from("<Q8xIIIIQ8xqI4xQ", data)
    atime, atime_ns, mtime, mtime_ns, ctime, ctime_ns, ino = structlib.unpack_from("<IIIIIIQ", data, 72)
    return {
        "st_dev": dev,
        "st_ino": ino,
        "st_mode": mode,
        "st_nlink": nlink,
        "st_uid": uid,
        "st_gid": gid,
        "st_rdev": rdev,
        "st_size": size,
        "st_blksize": blksize,
        "st_blocks": blocks,
        "st_atime": atime,
        "st_atime_nsec": atime_ns,
        "st_mtime": mtime,
        "st_mtime_nsec": mtime_ns,
        "st_ctime": ctime,
        "st_ctime_nsec": ctime_ns,
    }


def render_stat64(value: dict[str, JSONValue]) -> str:
    mode = int(value["st_mode"])  # type: ignore[arg-type]
    if mode & 0o170000 in (0o020000, 0o060000):
        second = f"st_rdev={_makedev(int(value['st_rdev']))}"  # type: ignore[arg-type]
    else:
        second = f"st_size={value['st_size']}"
    return f"{{st_mode={format_mode(mode)}, {second}, ...}}"


def statx(data: bytes) -> JSONValue:
    """struct statx (include/uapi/linux/stat.h), the first 152 bytes (up to stx_mnt_id)."""
    mask, blksize, attributes, nlink, uid, gid, mode = structlib.unpack_from("<IIQIIIH", data)
    ino, size, blocks, attributes_mask = structlib.unpack_from("<QQQQ", data, 32)
    times = {}
    for name, offset in (("stx_atime", 64), ("stx_btime", 80), ("stx_ctime", 96), ("stx_mtime", 112)):
        sec, nsec = structlib.unpack_from("<qI", data, offset)
        times[name] = {"tv_sec": sec, "tv_nsec": nsec}
    rdev_major, rdev_minor, dev_major, dev_minor, mnt_id = structlib.unpack_from("<IIIIQ", data, 128)
    return {
        "stx_mask": _STATX_MASK.format(mask),
        "stx_blksize": blksize,
        "stx_attributes": _STATX_ATTRS.format(attributes),
        "stx_nlink": nlink,
        "stx_uid": uid,
        "stx_gid": gid,
        "stx_mode": mode,
        "stx_ino": ino,
        "stx_size": size,
        "stx_blocks": blocks,
        "stx_attributes_mask": _STATX_ATTRS.format(attributes_mask),
        **times,
        "stx_rdev_major": rdev_major,
        "stx_rdev_minor": rdev_minor,
        "stx_dev_major": dev_major,
        "stx_dev_minor": dev_minor,
        "stx_mnt_id": mnt_id,
    }


def render_statx(value: dict[str, JSONValue]) -> str:
    return (
        f"{{stx_mask={value['stx_mask']}, stx_attributes={value['stx_attributes']}, "
        f"stx_mode={format_mode(int(value['stx_mode']))}, stx_size={value['stx_size']}, ...}}"  # type: ignore[arg-type]
    )


# --- signals -----------------------------------------------------------------------------


def signal_name(number: int) -> str:
    return SIGNAL_NAMES.get(number, str(number))


def sigset(data: bytes) -> JSONValue:
    """A sigset_t: the names of the signals in it, lowest first (bit n-1 is signal n)."""
    bits = int.from_bytes(data, "little")
    return [signal_name(n + 1) for n in range(len(data) * 8) if bits >> n & 1]


def render_sigset(value: JSONValue, nbits: int = SIGSET_BYTES * 8) -> str:
    """``[INT TERM]``, or ``~[...]`` of the missing ones when more than half are set (strace)."""
    names = [str(v) for v in value] if isinstance(value, list) else []
    if len(names) * 2 > nbits:
        present = set(names)
        names = [signal_name(n) for n in range(1, nbits + 1) if signal_name(n) not in present]
        return "~[" + " ".join(n.removeprefix("SIG") for n in names) + "]"
    return "[" + " ".join(n.removeprefix("SIG") for n in names) + "]"


def _handler(value: int) -> str:
    return {0: "SIG_DFL", 1: "SIG_IGN", 0xFFFFFFFF: "SIG_ERR"}.get(value, f"{value:#x}")


def sigaction(data: bytes) -> JSONValue:
    """The kernel's struct sigaction (include/linux/signal_types.h; ARM has
    __ARCH_HAS_SA_RESTORER): handler, flags, restorer, then the 8-byte mask."""
    handler, flags, restorer = structlib.unpack_from("<III", data)
    return {
        "sa_handler": _handler(handler),
        "sa_mask": sigset(data[12:20]),
        "sa_flags": _SA_FLAGS.format(flags),
        "sa_restorer": restorer,
    }


def old_sigaction(data: bytes) -> JSONValue:
    """struct old_sigaction (include/linux/signal_types.h): handler, 4-byte mask, flags, restorer."""
    handler, mask, flags, restorer = structlib.unpack_from("<IIII", data)
    return {
        "sa_handler": _handler(handler),
        "sa_mask": sigset(mask.to_bytes(4, "little")),
        "sa_flags": _SA_FLAGS.format(flags),
        "sa_restorer": restorer,
    }


def render_sigaction(value: dict[str, JSONValue]) -> str:
    flags = str(value["sa_flags"])
    text = f"{{sa_handler={value['sa_handler']}, sa_mask={render_sigset(value['sa_mask'])}, sa_flags={flags}"
    if "SA_RESTORER" in flags.split("|"):
        text += f", sa_restorer={_hex(int(value['sa_restorer']))}"  # type: ignore[arg-type]
    return text + "}"


def wait_status(data: bytes) -> JSONValue:
    """The int wait4 stores (include/uapi/linux/wait.h; the W* macros of glibc's waitstatus.h)."""
    status = int.from_bytes(data[:4], "little")
    exited = status & 0x7F == 0
    stopped = status & 0xFF == 0x7F and status != 0xFFFF
    signaled = not exited and not stopped and status != 0xFFFF
    return {
        "status": status,
        "exit_status": (status >> 8) & 0xFF if exited else None,
        "term_signal": signal_name(status & 0x7F) if signaled else None,
        "core_dump": bool(signaled and status & 0x80),
        "stop_signal": signal_name((status >> 8) & 0xFF) if stopped else None,
        "continued": status == 0xFFFF,
    }


def render_wait_status(value: dict[str, JSONValue]) -> str:
    """``[{WIFEXITED(s) && WEXITSTATUS(s) == 3}]`` and the other forms of strace's printstatus."""
    status = int(value["status"])  # type: ignore[arg-type]
    if value["exit_status"] is not None:
        text = f"WIFEXITED(s) && WEXITSTATUS(s) == {value['exit_status']}"
        rest = status & ~0xFFFF
    elif value["term_signal"] is not None:
        text = f"WIFSIGNALED(s) && WTERMSIG(s) == {value['term_signal']}"
        if value["core_dump"]:
            text += " && WCOREDUMP(s)"
        rest = status & ~0xFFFF
    elif value["stop_signal"] is not None:
        text = f"WIFSTOPPED(s) && WSTOPSIG(s) == {value['stop_signal']}"
        rest = status & ~0xFFFF
    elif value["continued"]:
        return "[{WIFCONTINUED(s)}]"
    else:
        return f"[{status:#x}]"
    return f"[{{{text}}}" + (f" | {rest:#x}]" if rest else "]")


# --- system information and limits -------------------------------------------------------

_UTS_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")


def new_utsname(data: bytes) -> JSONValue:
    """struct new_utsname (include/uapi/linux/utsname.h): six NUL-terminated char[65]."""
    return {name: text_or_hex(data[65 * i : 65 * (i + 1)].split(b"\0", 1)[0]) for i, name in enumerate(_UTS_FIELDS)}


def render_utsname(value: dict[str, JSONValue]) -> str:
    return f"{{sysname={quote_value(value['sysname'])}, nodename={quote_value(value['nodename'])}, ...}}"


def rlimit(data: bytes) -> JSONValue:
    """struct rlimit (include/uapi/linux/resource.h): two unsigned longs."""
    cur, maximum = structlib.unpack_from("<II", data)
    return {"rlim_cur": cur, "rlim_max": maximum}


def rlimit64(data: bytes) -> JSONValue:
    """struct rlimit64 (include/uapi/linux/resource.h): two __u64."""
    cur, maximum = structlib.unpack_from("<QQ", data)
    return {"rlim_cur": cur, "rlim_max": maximum}


def _rlim(value: int, infinity: int, name: str) -> str:
    if value == infinity:
        return name
    if value > 1024 and value % 1024 == 0:
        return f"{value // 1024}*1024"
    return str(value)


def render_rlimit(value: dict[str, JSONValue], infinity: int = _RLIM_INFINITY, name: str = "RLIM_INFINITY") -> str:
    cur = _rlim(int(value["rlim_cur"]), infinity, name)  # type: ignore[arg-type]
    maximum = _rlim(int(value["rlim_max"]), infinity, name)  # type: ignore[arg-type]
    return f"{{rlim_cur={cur}, rlim_max={maximum}}}"


def render_rlimit64(value: dict[str, JSONValue]) -> str:
    return render_rlimit(value, _RLIM64_INFINITY, "RLIM64_INFINITY")


# --- poll, epoll, timers -----------------------------------------------------------------


def pollfd(data: bytes) -> JSONValue:
    """struct pollfd (include/uapi/asm-generic/poll.h): int fd; short events, revents."""
    fd, events, revents = structlib.unpack_from("<iHH", data)
    return {"fd": fd, "events": _POLL_EVENTS.format(events), "revents": _POLL_EVENTS.format(revents)}


def epoll_event(data: bytes) -> JSONValue:
    """struct epoll_event (include/uapi/linux/eventpoll.h; not packed on ARM, so data is at 8)."""
    events, data64 = structlib.unpack_from("<I4xQ", data)
    return {"events": _EPOLL_EVENTS.format(events), "data": data64}


def render_epoll_event(value: dict[str, JSONValue]) -> str:
    data = int(value["data"])  # type: ignore[arg-type]
    return f"{{events={value['events']}, data={{u32={data & 0xFFFFFFFF}, u64={data}}}}}"


def _timespec_pair(data: bytes, fmt: str, sub: str) -> JSONValue:
    a, b, c, d = structlib.unpack(fmt, data)
    return {"it_interval": {"tv_sec": a, sub: b}, "it_value": {"tv_sec": c, sub: d}}


def loff_t(data: bytes) -> JSONValue:
    """A loff_t the kernel wrote (_llseek's result)."""
    return int.from_bytes(data[:8], "little", signed=True)


@dataclass(frozen=True)
class StructCodec:
    """``size`` bytes -> value; ``render`` gives strace's text (None: the generic ``{k=v}``)."""

    size: int
    decode: Callable[[bytes], JSONValue]
    render: Callable[[dict[str, JSONValue]], str] | None = None


CODECS: dict[str, StructCodec] = {
    "stat64": StructCodec(104, stat64, render_stat64),
    "statx": StructCodec(152, statx, render_statx),
    "sigaction": StructCodec(20, sigaction, render_sigaction),
    "old_sigaction": StructCodec(16, old_sigaction, render_sigaction),
    "wait_status": StructCodec(4, wait_status, render_wait_status),
    "new_utsname": StructCodec(6 * 65, new_utsname, render_utsname),
    "rlimit": StructCodec(8, rlimit, render_rlimit),
    "rlimit64": StructCodec(16, rlimit64, render_rlimit64),
    "epoll_event": StructCodec(16, epoll_event, render_epoll_event),
    "old_itimerspec32": StructCodec(16, lambda d: _timespec_pair(d, "<iiii", "tv_nsec")),
    "__kernel_itimerspec": StructCodec(32, lambda d: _timespec_pair(d, "<qqqq", "tv_nsec")),
    "__kernel_old_itimerval": StructCodec(16, lambda d: _timespec_pair(d, "<iiii", "tv_usec")),
    "pollfd": StructCodec(8, pollfd),
}
"""Fixed-size structs decoded from one read.  sigset, loff_t, linux_dirent64 and
user_msghdr have their own readers in ``decode`` (their size or contents vary)."""
