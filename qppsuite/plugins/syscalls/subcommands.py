"""Calls whose other arguments mean what a command argument says (strace's per-command printers).

prctl, ptrace, fcntl/fcntl64, ioctl, futex/futex_time64, setsockopt/getsockopt and epoll_ctl carry a
command, option or level that decides how many of the remaining registers are used and what
they hold; open/openat use their mode only with O_CREAT or O_TMPFILE; reboot
reads its fourth argument only for LINUX_REBOOT_CMD_RESTART2; recvmsg's msghdr is
read at the call too, so that its value-result fields can show ``before => after``.
``AT_CALL[name](decoder, args)`` rewrites the generic decode of such a call into the
arguments strace prints for that command (unused registers are dropped; they stay in
``raw_args``); ``AT_RETURN[name](decoder, result, outputs)`` adds what the kernel wrote for
it.  Other calls pay one failed dictionary lookup.

Storage stays type-stable per (call, command): a command's name is always a string, and an
argument keeps one type for a given command (``prctl(PR_SET_NAME)``'s ``arg2`` is always
text, ``prctl(PR_SET_KEEPCAPS)``'s always an int).
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

from qppsuite.core.guest import GuestMemoryError
from qppsuite.plugins.syscalls.arm_linux_abi import FLAGSETS
from qppsuite.plugins.syscalls.decode import DecodedArg
from qppsuite.plugins.syscalls.values import JSONValue, signed32

if TYPE_CHECKING:
    from qppsuite.plugins.syscalls.decode import _Decoder

CallHook = Callable[["_Decoder", list[DecodedArg]], list[DecodedArg]]
ReturnHook = Callable[["_Decoder", int, list[DecodedArg]], list[DecodedArg]]

_U32 = 0xFFFFFFFF


def _int(arg: DecodedArg, name: str | None = None) -> DecodedArg:
    return DecodedArg(name or arg.name, "int", arg.raw, signed32(arg.raw))


def _hex(arg: DecodedArg) -> DecodedArg:
    return DecodedArg(arg.name, "ulong", arg.raw, arg.raw, printer="hex")


def _flags(arg: DecodedArg, flagset: str) -> DecodedArg:
    return DecodedArg(arg.name, "flags", arg.raw, FLAGSETS[flagset].format(arg.raw))


def _ptr(arg: DecodedArg) -> DecodedArg:
    return DecodedArg(arg.name, "ptr", arg.raw, arg.raw or None)


def _int_at(decoder: "_Decoder", arg: DecodedArg) -> DecodedArg:
    """``[n]``: the int an argument points to (FIONBIO's flag, setsockopt's int value)."""
    if arg.raw == 0:
        return _ptr(arg)
    value = decoder.read_u32(arg.raw)
    if value is None:
        return DecodedArg(arg.name, "ptr", arg.raw, {"error": f"bad address {arg.raw:#x}"})
    return DecodedArg(arg.name, "ptr", arg.raw, signed32(value), printer="int_ptr")


def _cstring(decoder: "_Decoder", arg: DecodedArg) -> DecodedArg:
    value, truncated = decoder.cstring(arg.raw)
    return DecodedArg(arg.name, "cstring", arg.raw, value, truncated)


# --- prctl (kernel/sys.c) ----------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
_PR_GET_NAME = 16
_PR_SET_DUMPABLE = 4
_PRCTL_NO_ARGS = frozenset({3, 7, 21, 27, 30, 31, 32, 34, 42, 58})
"""PR_GET_DUMPABLE, _KEEPCAPS, _SECCOMP, _SECUREBITS, _TIMERSLACK, PR_TASK_PERF_EVENTS_*,
PR_MCE_KILL_GET, PR_GET_THP_DISABLE, PR_GET_IO_FLUSHER: strace prints the option alone."""
_PRCTL_ONE_INT = frozenset({8, 24, 29, 36, 38, 41})
"""PR_SET_KEEPCAPS, PR_CAPBSET_DROP, PR_SET_TIMERSLACK, _CHILD_SUBREAPER,
_NO_NEW_PRIVS, _THP_DISABLE: one number."""


def _prctl(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    option, arg2 = args[0], args[1]
    number = option.raw
    if number == _PR_SET_NAME:
        return [option, _cstring(decoder, arg2)]
    if number == _PR_GET_NAME:
        return [option, _ptr(arg2)]
    if number == _PR_SET_PDEATHSIG:
        return [option, DecodedArg(arg2.name, "flags", arg2.raw, FLAGSETS["signal"].format(arg2.raw))]
    if number in _PRCTL_NO_ARGS:
        return [option]
    if number == _PR_SET_DUMPABLE:
        return [option, _flags(arg2, "suid_dump")]
    if number in _PRCTL_ONE_INT:
        return [option, _int(arg2)]
    return [option, *(_hex(a) for a in args[1:])]


def _prctl_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    if decoder.regs[0] != _PR_GET_NAME or decoder.regs[1] == 0:
        return outputs
    arg2 = DecodedArg("arg2", "ptr", decoder.regs[1], decoder.regs[1])
    return [*outputs, _cstring(decoder, arg2)]


# --- ptrace (kernel/ptrace.c, include/uapi/linux/ptrace.h) --------------------------------

_PTRACE_TRACEME = 0
_PTRACE_PID_ONLY = frozenset({8, 16, 0x4207, 0x4208})
"""PTRACE_KILL, _ATTACH, _INTERRUPT, _LISTEN: the kernel reads the pid only."""
_PTRACE_SIGNAL_DATA = frozenset({7, 9, 17, 24})
"""PTRACE_CONT, _SINGLESTEP, _DETACH, _SYSCALL: data is the signal to deliver."""
_PTRACE_OPTIONS_DATA = frozenset({21, 0x4200, 0x4206})
"""PTRACE_OLDSETOPTIONS, _SETOPTIONS, _SEIZE: data is PTRACE_O_* options."""


def _ptrace(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    """``ptrace(PTRACE_TRACEME)``, ``ptrace(PTRACE_ATTACH, 42)``, ``ptrace(PTRACE_SEIZE, 42, NULL,
    PTRACE_O_TRACEEXEC)``: the registers a request uses, as strace prints them (data a signal or options
    where the request says so; addresses otherwise)."""
    request, pid, addr, data = args
    if request.raw == _PTRACE_TRACEME:
        return [request]
    if request.raw in _PTRACE_PID_ONLY:
        return [request, pid]
    if request.raw in _PTRACE_SIGNAL_DATA:
        return [request, pid, _ptr(addr), _flags(data, "signal")]
    if request.raw in _PTRACE_OPTIONS_DATA:
        return [request, pid, _ptr(addr), _flags(data, "ptrace_options")]
    return [request, pid, _ptr(addr), _ptr(data)]


# --- fcntl (fs/fcntl.c) ------------------------------------------------------------------

_FCNTL_NO_ARG = frozenset({1, 3, 9, 11, 1025, 1032, 1034, 1035, 1037})
"""F_GETFD, F_GETFL, F_GETOWN, F_GETSIG, F_GETLEASE, F_GETPIPE_SZ, F_GET_SEALS, F_GET_*RW_HINT."""
_FCNTL_INT_ARG = frozenset({0, 8, 1030, 1031})
"""F_DUPFD, F_SETOWN, F_DUPFD_CLOEXEC, F_SETPIPE_SZ."""
_F_SETFD, _F_SETFL, _F_SETSIG = 2, 4, 10


def _fcntl(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    fd, cmd, arg = args[0], args[1], args[2]
    command = cmd.raw
    if command in _FCNTL_NO_ARG:
        return [fd, cmd]
    if command in _FCNTL_INT_ARG:
        return [fd, cmd, _int(arg)]
    if command == _F_SETFD:
        return [fd, cmd, _flags(arg, "fd_cloexec")]
    if command == _F_SETFL:
        return [fd, cmd, _flags(arg, "open_flags")]
    if command == _F_SETSIG:
        return [fd, cmd, _flags(arg, "signal")]
    return [fd, cmd, _ptr(arg)]


# --- ioctl (include/uapi/asm-generic/ioctls.h, sockios.h) --------------------------------

_IOCTL_NO_ARG = frozenset({0x540C, 0x540D, 0x5422, 0x5427, 0x5428, 0x5437, 0x5450, 0x5451})
"""TIOCEXCL, TIOCNXCL, TIOCNOTTY, TIOCSBRK, TIOCCBRK, TIOCVHANGUP, FIONCLEX, FIOCLEX."""
_IOCTL_INT_IN = frozenset({0x5410, 0x5421, 0x5423, 0x5452, 0x8901, 0x8902})
"""TIOCSPGRP, FIONBIO, TIOCSETD, FIOASYNC, FIOSETOWN, SIOCSPGRP: an int read by the kernel."""
_IOCTL_INT_OUT = frozenset({0x540F, 0x5411, 0x541B, 0x5424, 0x5429, 0x8903, 0x8904, 0x8905})
"""TIOCGPGRP, TIOCOUTQ, FIONREAD, TIOCGETD, TIOCGSID, FIOGETOWN, SIOCGPGRP, SIOCATMARK."""
_TIOCGWINSZ, _TIOCSWINSZ = 0x5413, 0x5414


def _winsize(decoder: "_Decoder", arg: DecodedArg) -> DecodedArg:
    """struct winsize (include/uapi/asm-generic/termios.h): four unsigned shorts."""
    try:
        data = decoder.read_exact(arg.raw, 8)
    except GuestMemoryError:
        return DecodedArg(arg.name, "ptr", arg.raw, {"error": f"bad address {arg.raw:#x}"})
    row, col, xpixel, ypixel = (int.from_bytes(data[i : i + 2], "little") for i in range(0, 8, 2))
    value: dict[str, JSONValue] = {"ws_row": row, "ws_col": col, "ws_xpixel": xpixel, "ws_ypixel": ypixel}
    return DecodedArg(arg.name, "struct", arg.raw, value, printer="winsize")


def _ioctl(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    fd, request, arg = args[0], args[1], args[2]
    number = request.raw
    if number in _IOCTL_NO_ARG:
        return [fd, request]
    if number in _IOCTL_INT_IN and arg.raw:
        return [fd, request, _int_at(decoder, arg)]
    if number == _TIOCSWINSZ and arg.raw:
        return [fd, request, _winsize(decoder, arg)]
    return [fd, request, _ptr(arg) if arg.raw else _hex(arg)]


def _ioctl_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    number, address = decoder.regs[1], decoder.regs[2]
    if address == 0:
        return outputs
    arg = DecodedArg("arg", "ptr", address, address)
    if number in _IOCTL_INT_OUT:
        return [*outputs, _int_at(decoder, arg)]
    if number == _TIOCGWINSZ:
        return [*outputs, _winsize(decoder, arg)]
    return outputs


# --- futex (kernel/futex/syscalls.c) -----------------------------------------------------

_FUTEX_BITSET_MATCH_ANY = 0xFFFFFFFF
# Which arguments each command uses, in strace's order (strace src/futex.c).
_FUTEX_ARGS: dict[int, tuple[str, ...]] = {
    0: ("uaddr", "op", "val", "utime"),  # FUTEX_WAIT
    1: ("uaddr", "op", "val"),  # FUTEX_WAKE
    2: ("uaddr", "op", "val"),  # FUTEX_FD
    3: ("uaddr", "op", "val", "val2", "uaddr2"),  # FUTEX_REQUEUE
    4: ("uaddr", "op", "val", "val2", "uaddr2", "val3"),  # FUTEX_CMP_REQUEUE
    5: ("uaddr", "op", "val", "val2", "uaddr2", "val3"),  # FUTEX_WAKE_OP
    6: ("uaddr", "op", "utime"),  # FUTEX_LOCK_PI
    7: ("uaddr", "op"),  # FUTEX_UNLOCK_PI
    8: ("uaddr", "op"),  # FUTEX_TRYLOCK_PI
    9: ("uaddr", "op", "val", "utime", "val3"),  # FUTEX_WAIT_BITSET
    10: ("uaddr", "op", "val", "val3"),  # FUTEX_WAKE_BITSET
    11: ("uaddr", "op", "val", "utime", "uaddr2"),  # FUTEX_WAIT_REQUEUE_PI
    12: ("uaddr", "op", "val", "val2", "uaddr2", "val3"),  # FUTEX_CMP_REQUEUE_PI
    13: ("uaddr", "op", "utime"),  # FUTEX_LOCK_PI2
}


def _futex(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    names = _FUTEX_ARGS.get(args[1].raw & 0x7F)
    if names is None:
        return args
    by_name = {a.name: a for a in args}
    out = []
    for name in names:
        if name == "val2":  # the utime register holds a count for the requeue commands
            out.append(DecodedArg("val2", "unsigned", by_name["utime"].raw, by_name["utime"].raw))
        elif name == "val3" and by_name["val3"].raw == _FUTEX_BITSET_MATCH_ANY and args[1].raw & 0x7F in (9, 10):
            out.append(DecodedArg("val3", "flags", _FUTEX_BITSET_MATCH_ANY, "FUTEX_BITSET_MATCH_ANY"))
        else:
            out.append(by_name[name])
    return out


# --- setsockopt, getsockopt (net/socket.c) -----------------------------------------------

_SOCKOPT_SETS = {1: "sockopt_socket", 6: "sockopt_tcp", 0: "sockopt_ip", 41: "sockopt_ipv6"}


def _optname(level: DecodedArg, optname: DecodedArg) -> DecodedArg:
    flagset = _SOCKOPT_SETS.get(level.raw)
    if flagset is None:
        return _int(optname)
    return _flags(optname, flagset)


def _setsockopt(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    fd, level, optname, optval, optlen = args
    if optlen.raw == 4 and optval.raw:
        optval = _int_at(decoder, optval)
    return [fd, level, _optname(level, optname), optval, optlen]


def _getsockopt(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    fd, level, optname, optval, optlen = args
    return [fd, level, _optname(level, optname), optval, _int_at(decoder, optlen)]


def _getsockopt_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    optval_addr, optlen_addr = decoder.regs[3], decoder.regs[4]
    if optlen_addr == 0:
        return outputs
    optlen = _int_at(decoder, DecodedArg("optlen", "ptr", optlen_addr, optlen_addr))
    outputs = [o for o in outputs if o.name != "optval"] if optlen.value == 4 else outputs
    if optlen.value == 4 and optval_addr:
        outputs.append(_int_at(decoder, DecodedArg("optval", "ptr", optval_addr, optval_addr)))
    return [*outputs, optlen]


# --- open, openat (fs/open.c): the mode only matters when a file may be created -----------

_O_CREAT, _O_TMPFILE = 0o100, 0o20000000


def _open(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    flags = args[-2].raw
    return args if flags & (_O_CREAT | _O_TMPFILE) else args[:-1]


# --- recvmsg (net/socket.c): the msghdr as given, so its value-result fields show "a => b" -


def _recvmsg(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    msg = args[1]
    if msg.raw == 0:
        return args
    try:
        value, _ = decoder.msghdr(msg.raw, 0, name_filled=False)
    except GuestMemoryError:
        return args
    return [args[0], DecodedArg(msg.name, "struct", msg.raw, value, printer="user_msghdr"), *args[2:]]


# --- socket addresses with a value-result length (net/socket.c) ---------------------------

_SOCKLEN_ARG = {"accept": 2, "accept4": 2, "getsockname": 2, "getpeername": 2, "recvfrom": 5}
"""Which argument is the socklen_t * the kernel reads and then overwrites."""


def _socklen(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    i = _SOCKLEN_ARG[decoder.spec.name]
    return [*args[:i], _int_at(decoder, args[i]), *args[i + 1 :]]


def _socklen_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    i = _SOCKLEN_ARG[decoder.spec.name]
    address = decoder.regs[i]
    if address == 0:
        return outputs
    return [*outputs, _int_at(decoder, DecodedArg(decoder.spec.args[i].name, "ptr", address, address))]


# --- epoll_ctl, poll ---------------------------------------------------------------------

_EPOLL_CTL_DEL = 2


def _epoll_ctl(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    if args[1].raw == _EPOLL_CTL_DEL:  # the event is ignored, strace shows its address
        return [*args[:3], _ptr(args[3])]
    return args


def _poll_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    """``revents``: the pollfds the kernel marked, as strace lists them after the result."""
    address, nfds = decoder.regs[0], decoder.regs[1]
    if result <= 0 or address == 0:
        return outputs
    shown = min(nfds, decoder.limits.array)
    try:
        data = decoder.read_exact(address, 8 * shown)
    except GuestMemoryError:
        return outputs
    ready: list[JSONValue] = []
    for i in range(shown):
        fd = signed32(int.from_bytes(data[8 * i : 8 * i + 4], "little"))
        revents = int.from_bytes(data[8 * i + 6 : 8 * i + 8], "little")
        if revents:
            ready.append({"fd": fd, "revents": FLAGSETS["poll_events"].format(revents)})
    return [*outputs, DecodedArg("revents", "struct", address, ready, nfds > shown, printer="pollfd_revents")]


def _mmap2(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    """strace shows mmap2's page offset as the byte offset it stands for, in hex."""
    pgoff = args[5]
    return [*args[:5], DecodedArg(pgoff.name, pgoff.type, pgoff.raw, pgoff.value, printer="pgoff")]


# --- clone (kernel/fork.c) --------------------------------------------------------------

_CLONE_PARENT_SETTID_OR_PIDFD = 0x101000


def _clone_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    """The tid (or pidfd) the kernel stored at parent_tidptr, which strace shows as ``[89]``."""
    flags, address = decoder.regs[0], decoder.regs[2]
    if not flags & _CLONE_PARENT_SETTID_OR_PIDFD or address == 0 or result == 0:
        return outputs
    return [*outputs, _int_at(decoder, DecodedArg("parent_tidptr", "ptr", address, address))]


def _getrandom_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    """Random bytes are shown in hex, as strace does (its QUOTE_FORCE_HEX)."""
    return [DecodedArg(o.name, o.type, o.raw, o.value, o.truncated, printer="hex_string") for o in outputs]


def _rseq(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    """strace shows rseq's length and signature in hex (``rseq(0x..., 0x20, 0, 0xe7f5def3)``)."""
    return [args[0], _hex(args[1]), args[2], _hex(args[3])]


# --- reboot (kernel/reboot.c) ------------------------------------------------------------

_LINUX_REBOOT_CMD_RESTART2 = 0xA1B2C3D4


def _reboot(decoder: "_Decoder", args: list[DecodedArg]) -> list[DecodedArg]:
    """The fourth argument is read only by LINUX_REBOOT_CMD_RESTART2, as the command's text (strace's reboot.c)."""
    if args[2].raw == _LINUX_REBOOT_CMD_RESTART2:
        return [*args[:3], _cstring(decoder, args[3])]
    return args[:3]


def _wait4_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    """No status is stored when no child changed state (WNOHANG returning 0): strace shows the address."""
    return outputs if result > 0 else [o for o in outputs if o.name != "stat_addr"]


def _sleep_return(decoder: "_Decoder", result: int, outputs: list[DecodedArg]) -> list[DecodedArg]:
    """The remaining time is written only when a sleep is interrupted (an error return)."""
    return [o for o in outputs if o.name != "rmtp"]


AT_CALL: dict[str, CallHook] = {
    "prctl": _prctl,
    "ptrace": _ptrace,
    "fcntl": _fcntl,
    "fcntl64": _fcntl,
    "ioctl": _ioctl,
    "futex": _futex,
    "futex_time64": _futex,
    "setsockopt": _setsockopt,
    "getsockopt": _getsockopt,
    "epoll_ctl": _epoll_ctl,
    "mmap2": _mmap2,
    "open": _open,
    "openat": _open,
    "recvmsg": _recvmsg,
    "rseq": _rseq,
    "reboot": _reboot,
    **{name: _socklen for name in _SOCKLEN_ARG},
}
AT_RETURN: dict[str, ReturnHook] = {
    "clone": _clone_return,
    "wait4": _wait4_return,
    "nanosleep": _sleep_return,
    "clock_nanosleep": _sleep_return,
    "clock_nanosleep_time64": _sleep_return,
    "getrandom": _getrandom_return,
    **{name: _socklen_return for name in _SOCKLEN_ARG},
    "prctl": _prctl_return,
    "ioctl": _ioctl_return,
    "getsockopt": _getsockopt_return,
    "poll": _poll_return,
    "ppoll": _poll_return,
    "ppoll_time64": _poll_return,
}
