"""Symbolic constants of the ARM (EABI, little-endian) Linux user ABI, as the decoder prints them.

ARM takes most of its user ABI from asm-generic, but not all of it: the open flags
O_DIRECTORY, O_NOFOLLOW, O_DIRECT and O_LARGEFILE have ARM's own values
(arch/arm/include/uapi/asm/fcntl.h), and a table copied from an x86 tool would print the
wrong names for them.  The values here are those of Linux 6.1; ``tools/gen_syscall_table.py``
checks every name against the kernel headers each time it regenerates the syscall table,
so a drift shows up as a generator failure rather than as a wrong trace.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from qppsuite.plugins.syscalls.xlat import (
    IOCTL_REQUESTS,
    PRCTL_OPTIONS,
    PTRACE_REQUESTS,
    SOCKET_LEVELS,
    SOL_IP_OPTIONS,
    SOL_IPV6_OPTIONS,
    SOL_SOCKET_OPTIONS,
    SOL_TCP_OPTIONS,
)

AT_FDCWD = -100
"""include/uapi/linux/fcntl.h: a directory fd meaning the working directory."""


@dataclass(frozen=True)
class FlagSet:
    """A named set of symbolic values for one integer argument.

    Kernel arguments mix two shapes: independent bits (``O_CREAT|O_TRUNC``) and a small
    enumerated field inside the same word (the access mode in ``O_ACCMODE``, the exit
    signal in ``CSIGNAL``, the socket type in ``SOCK_TYPE_MASK``).  A pure enumeration
    (``fcntl`` commands, signals) is the field-only case with a full-word mask.  Bits the
    table does not know are printed as a hex remainder so nothing is silently dropped.
    """

    name: str
    bits: tuple[tuple[str, int], ...] = ()
    field_mask: int = 0
    field_names: Mapping[int, str] = field(default_factory=dict)
    field_last: bool = False
    zero: str | None = None
    unknown_hex: bool = False

    @property
    def is_enum(self) -> bool:
        return self.field_mask == 0xFFFFFFFF

    def format(self, value: int) -> str:
        value &= 0xFFFFFFFF
        if value == 0 and self.zero is not None:
            return self.zero
        if self.is_enum:
            name = self.field_names.get(value)
            if name is not None:
                return name
            if self.unknown_hex:
                return f"{value:#x}"
            return str(value - (1 << 32) if value >> 31 else value)
        field_value = value & self.field_mask
        rest = value & ~self.field_mask & 0xFFFFFFFF
        parts: list[str] = []
        for bit_name, mask in self.bits:
            if rest & mask == mask:
                parts.append(bit_name)
                rest &= ~mask
        if self.field_mask:
            name = self.field_names.get(field_value)
            if name is None:
                rest |= field_value
            elif self.field_last:
                parts.append(name)
            else:
                parts.insert(0, name)
        if rest or not parts:
            parts.append(f"{rest:#x}" if rest else "0")
        return "|".join(parts)

    def symbols(self) -> dict[str, int]:
        """Every name this set can print with its value, for checking against kernel headers."""
        named = dict(self.bits)
        named.update({name: value for value, name in self.field_names.items()})
        if self.zero is not None:
            named[self.zero] = 0
        return named


def _enum(name: str, names: Mapping[int, str]) -> FlagSet:
    return FlagSet(name, field_mask=0xFFFFFFFF, field_names=dict(names))


SIGNAL_NAMES: dict[int, str] = {
    1: "SIGHUP",
    2: "SIGINT",
    3: "SIGQUIT",
    4: "SIGILL",
    5: "SIGTRAP",
    6: "SIGABRT",
    7: "SIGBUS",
    8: "SIGFPE",
    9: "SIGKILL",
    10: "SIGUSR1",
    11: "SIGSEGV",
    12: "SIGUSR2",
    13: "SIGPIPE",
    14: "SIGALRM",
    15: "SIGTERM",
    16: "SIGSTKFLT",
    17: "SIGCHLD",
    18: "SIGCONT",
    19: "SIGSTOP",
    20: "SIGTSTP",
    21: "SIGTTIN",
    22: "SIGTTOU",
    23: "SIGURG",
    24: "SIGXCPU",
    25: "SIGXFSZ",
    26: "SIGVTALRM",
    27: "SIGPROF",
    28: "SIGWINCH",
    29: "SIGIO",
    30: "SIGPWR",
    31: "SIGSYS",
    32: "SIGRTMIN",
}
SIGNAL_NAMES.update({n: f"SIGRT_{n - 32}" for n in range(33, 65)})
"""strace's names: 32 is SIGRTMIN (glibc reserves 32 and 33 and calls 34 its SIGRTMIN), the rest
SIGRT_<n - 32> up to SIGRT_32 (= _NSIG, 64)."""

# asm-generic/errno-base.h, asm-generic/errno.h (ARM has no errno.h of its own), and the
# kernel-internal restart codes of include/linux/errno.h that a tracer can still observe.
ERRNO_NAMES: dict[int, str] = {
    1: "EPERM",
    2: "ENOENT",
    3: "ESRCH",
    4: "EINTR",
    5: "EIO",
    6: "ENXIO",
    7: "E2BIG",
    8: "ENOEXEC",
    9: "EBADF",
    10: "ECHILD",
    11: "EAGAIN",
    12: "ENOMEM",
    13: "EACCES",
    14: "EFAULT",
    15: "ENOTBLK",
    16: "EBUSY",
    17: "EEXIST",
    18: "EXDEV",
    19: "ENODEV",
    20: "ENOTDIR",
    21: "EISDIR",
    22: "EINVAL",
    23: "ENFILE",
    24: "EMFILE",
    25: "ENOTTY",
    26: "ETXTBSY",
    27: "EFBIG",
    28: "ENOSPC",
    29: "ESPIPE",
    30: "EROFS",
    31: "EMLINK",
    32: "EPIPE",
    33: "EDOM",
    34: "ERANGE",
    35: "EDEADLK",
    36: "ENAMETOOLONG",
    37: "ENOLCK",
    38: "ENOSYS",
    39: "ENOTEMPTY",
    40: "ELOOP",
    42: "ENOMSG",
    43: "EIDRM",
    44: "ECHRNG",
    45: "EL2NSYNC",
    46: "EL3HLT",
    47: "EL3RST",
    48: "ELNRNG",
    49: "EUNATCH",
    50: "ENOCSI",
    51: "EL2HLT",
    52: "EBADE",
    53: "EBADR",
    54: "EXFULL",
    55: "ENOANO",
    56: "EBADRQC",
    57: "EBADSLT",
    59: "EBFONT",
    60: "ENOSTR",
    61: "ENODATA",
    62: "ETIME",
    63: "ENOSR",
    64: "ENONET",
    65: "ENOPKG",
    66: "EREMOTE",
    67: "ENOLINK",
    68: "EADV",
    69: "ESRMNT",
    70: "ECOMM",
    71: "EPROTO",
    72: "EMULTIHOP",
    73: "EDOTDOT",
    74: "EBADMSG",
    75: "EOVERFLOW",
    76: "ENOTUNIQ",
    77: "EBADFD",
    78: "EREMCHG",
    79: "ELIBACC",
    80: "ELIBBAD",
    81: "ELIBSCN",
    82: "ELIBMAX",
    83: "ELIBEXEC",
    84: "EILSEQ",
    85: "ERESTART",
    86: "ESTRPIPE",
    87: "EUSERS",
    88: "ENOTSOCK",
    89: "EDESTADDRREQ",
    90: "EMSGSIZE",
    91: "EPROTOTYPE",
    92: "ENOPROTOOPT",
    93: "EPROTONOSUPPORT",
    94: "ESOCKTNOSUPPORT",
    95: "EOPNOTSUPP",
    96: "EPFNOSUPPORT",
    97: "EAFNOSUPPORT",
    98: "EADDRINUSE",
    99: "EADDRNOTAVAIL",
    100: "ENETDOWN",
    101: "ENETUNREACH",
    102: "ENETRESET",
    103: "ECONNABORTED",
    104: "ECONNRESET",
    105: "ENOBUFS",
    106: "EISCONN",
    107: "ENOTCONN",
    108: "ESHUTDOWN",
    109: "ETOOMANYREFS",
    110: "ETIMEDOUT",
    111: "ECONNREFUSED",
    112: "EHOSTDOWN",
    113: "EHOSTUNREACH",
    114: "EALREADY",
    115: "EINPROGRESS",
    116: "ESTALE",
    117: "EUCLEAN",
    118: "ENOTNAM",
    119: "ENAVAIL",
    120: "EISNAM",
    121: "EREMOTEIO",
    122: "EDQUOT",
    123: "ENOMEDIUM",
    124: "EMEDIUMTYPE",
    125: "ECANCELED",
    126: "ENOKEY",
    127: "EKEYEXPIRED",
    128: "EKEYREVOKED",
    129: "EKEYREJECTED",
    130: "EOWNERDEAD",
    131: "ENOTRECOVERABLE",
    132: "ERFKILL",
    133: "EHWPOISON",
    512: "ERESTARTSYS",
    513: "ERESTARTNOINTR",
    514: "ERESTARTNOHAND",
    515: "ENOIOCTLCMD",
    516: "ERESTART_RESTARTBLOCK",
    517: "EPROBE_DEFER",
    518: "EOPENSTALE",
    519: "ENOPARAM",
    521: "EBADHANDLE",
    522: "ENOTSYNC",
    523: "EBADCOOKIE",
    524: "ENOTSUPP",
    525: "ETOOSMALL",
    526: "ESERVERFAULT",
    527: "EBADTYPE",
    528: "EJUKEBOX",
    529: "EIOCBQUEUED",
    530: "ERECALLCONFLICT",
    531: "ENOGRACE",
}

MAX_ERRNO = 4095
"""Return values in -MAX_ERRNO..-1 are errors (include/linux/err.h, IS_ERR_VALUE)."""

_O_BITS: tuple[tuple[str, int], ...] = (
    ("O_CREAT", 0o100),
    ("O_EXCL", 0o200),
    ("O_NOCTTY", 0o400),
    ("O_TRUNC", 0o1000),
    ("O_APPEND", 0o2000),
    ("O_NONBLOCK", 0o4000),
    ("O_SYNC", 0o4010000),
    ("__O_SYNC", 0o4000000),
    ("O_DSYNC", 0o10000),
    ("O_DIRECT", 0o200000),
    ("O_LARGEFILE", 0o400000),
    ("O_NOFOLLOW", 0o100000),
    ("O_NOATIME", 0o1000000),
    ("O_CLOEXEC", 0o2000000),
    ("O_PATH", 0o10000000),
    ("O_TMPFILE", 0o20040000),
    ("__O_TMPFILE", 0o20000000),
    ("O_DIRECTORY", 0o40000),
    ("FASYNC", 0o20000),
)
"""In strace's order (its xlat/open_mode_flags.in), so that lines compare equal."""

_CLONE_BITS: tuple[tuple[str, int], ...] = (
    ("CLONE_VM", 0x100),
    ("CLONE_FS", 0x200),
    ("CLONE_FILES", 0x400),
    ("CLONE_SIGHAND", 0x800),
    ("CLONE_PIDFD", 0x1000),
    ("CLONE_PTRACE", 0x2000),
    ("CLONE_VFORK", 0x4000),
    ("CLONE_PARENT", 0x8000),
    ("CLONE_THREAD", 0x10000),
    ("CLONE_NEWNS", 0x20000),
    ("CLONE_SYSVSEM", 0x40000),
    ("CLONE_SETTLS", 0x80000),
    ("CLONE_PARENT_SETTID", 0x100000),
    ("CLONE_CHILD_CLEARTID", 0x200000),
    ("CLONE_DETACHED", 0x400000),
    ("CLONE_UNTRACED", 0x800000),
    ("CLONE_CHILD_SETTID", 0x1000000),
    ("CLONE_NEWCGROUP", 0x2000000),
    ("CLONE_NEWUTS", 0x4000000),
    ("CLONE_NEWIPC", 0x8000000),
    ("CLONE_NEWUSER", 0x10000000),
    ("CLONE_NEWPID", 0x20000000),
    ("CLONE_NEWNET", 0x40000000),
    ("CLONE_IO", 0x80000000),
)

_AT_BITS: tuple[tuple[str, int], ...] = (
    ("AT_SYMLINK_NOFOLLOW", 0x100),
    ("AT_SYMLINK_FOLLOW", 0x400),
    ("AT_NO_AUTOMOUNT", 0x800),
    ("AT_EMPTY_PATH", 0x1000),
    ("AT_STATX_FORCE_SYNC", 0x2000),
    ("AT_STATX_DONT_SYNC", 0x4000),
    ("AT_RECURSIVE", 0x8000),
)

_FD_BITS: tuple[tuple[str, int], ...] = (
    ("O_NONBLOCK", 0o4000),
    ("O_DIRECT", 0o200000),
    ("O_CLOEXEC", 0o2000000),
)

_FUTEX_CMDS: dict[int, str] = {
    0: "FUTEX_WAIT",
    1: "FUTEX_WAKE",
    2: "FUTEX_FD",
    3: "FUTEX_REQUEUE",
    4: "FUTEX_CMP_REQUEUE",
    5: "FUTEX_WAKE_OP",
    6: "FUTEX_LOCK_PI",
    7: "FUTEX_UNLOCK_PI",
    8: "FUTEX_TRYLOCK_PI",
    9: "FUTEX_WAIT_BITSET",
    10: "FUTEX_WAKE_BITSET",
    11: "FUTEX_WAIT_REQUEUE_PI",
    12: "FUTEX_CMP_REQUEUE_PI",
    13: "FUTEX_LOCK_PI2",
}
"""futex commands; strace appends ``_PRIVATE`` for FUTEX_PRIVATE_FLAG (128), as the header does."""

_POLL_BITS: tuple[tuple[str, int], ...] = (
    ("POLLIN", 0x1),
    ("POLLPRI", 0x2),
    ("POLLOUT", 0x4),
    ("POLLERR", 0x8),
    ("POLLHUP", 0x10),
    ("POLLNVAL", 0x20),
    ("POLLRDNORM", 0x40),
    ("POLLRDBAND", 0x80),
    ("POLLWRNORM", 0x100),
    ("POLLWRBAND", 0x200),
    ("POLLMSG", 0x400),
    ("POLLREMOVE", 0x1000),
    ("POLLRDHUP", 0x2000),
)

FILE_TYPES: dict[int, str] = {
    0o140000: "S_IFSOCK",
    0o120000: "S_IFLNK",
    0o100000: "S_IFREG",
    0o060000: "S_IFBLK",
    0o040000: "S_IFDIR",
    0o020000: "S_IFCHR",
    0o010000: "S_IFIFO",
}
"""The S_IFMT (0o170000) field of a mode (include/uapi/linux/stat.h)."""

FLAGSETS: dict[str, FlagSet] = {
    fs.name: fs
    for fs in (
        FlagSet("open_flags", bits=_O_BITS, field_mask=0o3, field_names={0: "O_RDONLY", 1: "O_WRONLY", 2: "O_RDWR"}),
        FlagSet("fd_flags", bits=_FD_BITS),
        FlagSet(
            "mmap_prot",
            bits=(
                ("PROT_READ", 0x1),
                ("PROT_WRITE", 0x2),
                ("PROT_EXEC", 0x4),
                ("PROT_SEM", 0x8),
                ("PROT_GROWSDOWN", 0x01000000),
                ("PROT_GROWSUP", 0x02000000),
            ),
            zero="PROT_NONE",
        ),
        FlagSet(
            "mmap_flags",
            bits=(
                ("MAP_FIXED", 0x10),
                ("MAP_ANONYMOUS", 0x20),
                ("MAP_GROWSDOWN", 0x100),
                ("MAP_DENYWRITE", 0x800),
                ("MAP_EXECUTABLE", 0x1000),
                ("MAP_LOCKED", 0x2000),
                ("MAP_NORESERVE", 0x4000),
                ("MAP_POPULATE", 0x8000),
                ("MAP_NONBLOCK", 0x10000),
                ("MAP_STACK", 0x20000),
                ("MAP_HUGETLB", 0x40000),
                ("MAP_SYNC", 0x80000),
                ("MAP_FIXED_NOREPLACE", 0x100000),
                ("MAP_UNINITIALIZED", 0x4000000),
            ),
            field_mask=0x0F,
            field_names={1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"},
        ),
        FlagSet(
            "clone_flags",
            bits=_CLONE_BITS,
            field_mask=0xFF,
            field_names={n: s for n, s in SIGNAL_NAMES.items() if n <= 0xFF},
            field_last=True,
        ),
        FlagSet("unshare_flags", bits=(*_CLONE_BITS, ("CLONE_NEWTIME", 0x80))),
        FlagSet("at_flags", bits=_AT_BITS),
        FlagSet("unlinkat_flags", bits=(("AT_REMOVEDIR", 0x200),)),
        FlagSet(
            "faccessat_flags", bits=(("AT_SYMLINK_NOFOLLOW", 0x100), ("AT_EACCESS", 0x200), ("AT_EMPTY_PATH", 0x1000))
        ),
        FlagSet("access_mode", bits=(("R_OK", 4), ("W_OK", 2), ("X_OK", 1)), zero="F_OK"),
        FlagSet(
            "wait_options",
            bits=(
                ("WNOHANG", 0x1),
                ("WUNTRACED", 0x2),
                ("WEXITED", 0x4),
                ("WCONTINUED", 0x8),
                ("WNOWAIT", 0x01000000),
                ("__WNOTHREAD", 0x20000000),
                ("__WALL", 0x40000000),
                ("__WCLONE", 0x80000000),
            ),
        ),
        FlagSet(
            "socket_type",
            bits=(("SOCK_NONBLOCK", 0o4000), ("SOCK_CLOEXEC", 0o2000000)),
            field_mask=0xF,
            field_names={
                1: "SOCK_STREAM",
                2: "SOCK_DGRAM",
                3: "SOCK_RAW",
                4: "SOCK_RDM",
                5: "SOCK_SEQPACKET",
                6: "SOCK_DCCP",
                10: "SOCK_PACKET",
            },
        ),
        FlagSet(
            "msg_flags",
            bits=(
                ("MSG_OOB", 0x1),
                ("MSG_PEEK", 0x2),
                ("MSG_DONTROUTE", 0x4),
                ("MSG_CTRUNC", 0x8),
                ("MSG_PROBE", 0x10),
                ("MSG_TRUNC", 0x20),
                ("MSG_DONTWAIT", 0x40),
                ("MSG_EOR", 0x80),
                ("MSG_WAITALL", 0x100),
                ("MSG_FIN", 0x200),
                ("MSG_SYN", 0x400),
                ("MSG_CONFIRM", 0x800),
                ("MSG_RST", 0x1000),
                ("MSG_ERRQUEUE", 0x2000),
                ("MSG_NOSIGNAL", 0x4000),
                ("MSG_MORE", 0x8000),
                ("MSG_WAITFORONE", 0x10000),
                ("MSG_BATCH", 0x40000),
                ("MSG_ZEROCOPY", 0x4000000),
                ("MSG_FASTOPEN", 0x20000000),
                ("MSG_CMSG_CLOEXEC", 0x40000000),
            ),
        ),
        FlagSet("rename_flags", bits=(("RENAME_NOREPLACE", 1), ("RENAME_EXCHANGE", 2), ("RENAME_WHITEOUT", 4))),
        FlagSet("msync_flags", bits=(("MS_ASYNC", 1), ("MS_INVALIDATE", 2), ("MS_SYNC", 4))),
        FlagSet("mremap_flags", bits=(("MREMAP_MAYMOVE", 1), ("MREMAP_FIXED", 2), ("MREMAP_DONTUNMAP", 4))),
        FlagSet("mlockall_flags", bits=(("MCL_CURRENT", 1), ("MCL_FUTURE", 2), ("MCL_ONFAULT", 4))),
        FlagSet("memfd_flags", bits=(("MFD_CLOEXEC", 1), ("MFD_ALLOW_SEALING", 2), ("MFD_HUGETLB", 4))),
        FlagSet(
            "futex_op",
            bits=(("FUTEX_CLOCK_REALTIME", 256),),
            field_mask=0xFF,
            field_names={**_FUTEX_CMDS, **{n | 128: f"{name}_PRIVATE" for n, name in _FUTEX_CMDS.items() if n != 2}},
        ),
        _enum("prctl_option", PRCTL_OPTIONS),
        _enum("ptrace_request", PTRACE_REQUESTS),
        FlagSet(
            "ptrace_options",
            bits=(
                ("PTRACE_O_TRACESYSGOOD", 1),
                ("PTRACE_O_TRACEFORK", 2),
                ("PTRACE_O_TRACEVFORK", 4),
                ("PTRACE_O_TRACECLONE", 8),
                ("PTRACE_O_TRACEEXEC", 0x10),
                ("PTRACE_O_TRACEVFORKDONE", 0x20),
                ("PTRACE_O_TRACEEXIT", 0x40),
                ("PTRACE_O_TRACESECCOMP", 0x80),
                ("PTRACE_O_EXITKILL", 1 << 20),
                ("PTRACE_O_SUSPEND_SECCOMP", 1 << 21),
            ),
        ),
        FlagSet("ioctl_request", field_mask=0xFFFFFFFF, field_names=IOCTL_REQUESTS, unknown_hex=True),
        # reboot's magic numbers and command (include/uapi/linux/reboot.h); strace prints an unknown one in hex.
        FlagSet(
            "reboot_magic1", field_mask=0xFFFFFFFF, field_names={0xFEE1DEAD: "LINUX_REBOOT_MAGIC1"}, unknown_hex=True
        ),
        FlagSet(
            "reboot_magic2",
            field_mask=0xFFFFFFFF,
            field_names={
                672274793: "LINUX_REBOOT_MAGIC2",
                85072278: "LINUX_REBOOT_MAGIC2A",
                369367448: "LINUX_REBOOT_MAGIC2B",
                537993216: "LINUX_REBOOT_MAGIC2C",
            },
            unknown_hex=True,
        ),
        FlagSet(
            "reboot_cmd",
            field_mask=0xFFFFFFFF,
            field_names={
                0x01234567: "LINUX_REBOOT_CMD_RESTART",
                0xCDEF0123: "LINUX_REBOOT_CMD_HALT",
                0x89ABCDEF: "LINUX_REBOOT_CMD_CAD_ON",
                0x00000000: "LINUX_REBOOT_CMD_CAD_OFF",
                0x4321FEDC: "LINUX_REBOOT_CMD_POWER_OFF",
                0xA1B2C3D4: "LINUX_REBOOT_CMD_RESTART2",
                0xD000FCE2: "LINUX_REBOOT_CMD_SW_SUSPEND",
                0x45584543: "LINUX_REBOOT_CMD_KEXEC",
            },
            unknown_hex=True,
        ),
        _enum("socket_level", SOCKET_LEVELS),
        _enum("sockopt_socket", SOL_SOCKET_OPTIONS),
        _enum("sockopt_tcp", SOL_TCP_OPTIONS),
        _enum("sockopt_ip", SOL_IP_OPTIONS),
        _enum("sockopt_ipv6", SOL_IPV6_OPTIONS),
        _enum(
            "rlimit_resource",
            {
                0: "RLIMIT_CPU",
                1: "RLIMIT_FSIZE",
                2: "RLIMIT_DATA",
                3: "RLIMIT_STACK",
                4: "RLIMIT_CORE",
                5: "RLIMIT_RSS",
                6: "RLIMIT_NPROC",
                7: "RLIMIT_NOFILE",
                8: "RLIMIT_MEMLOCK",
                9: "RLIMIT_AS",
                10: "RLIMIT_LOCKS",
                11: "RLIMIT_SIGPENDING",
                12: "RLIMIT_MSGQUEUE",
                13: "RLIMIT_NICE",
                14: "RLIMIT_RTPRIO",
                15: "RLIMIT_RTTIME",
            },
        ),
        FlagSet(
            "sa_flags",
            bits=(
                ("SA_RESTORER", 0x04000000),
                ("SA_ONSTACK", 0x08000000),
                ("SA_RESTART", 0x10000000),
                ("SA_NODEFER", 0x40000000),
                ("SA_RESETHAND", 0x80000000),
                ("SA_SIGINFO", 0x4),
                ("SA_NOCLDSTOP", 0x1),
                ("SA_NOCLDWAIT", 0x2),
            ),
        ),
        FlagSet("poll_events", bits=_POLL_BITS),
        FlagSet(
            "epoll_events",
            bits=(
                *(("E" + name, value) for name, value in _POLL_BITS if name != "POLLREMOVE"),
                ("EPOLLEXCLUSIVE", 1 << 28),
                ("EPOLLWAKEUP", 1 << 29),
                ("EPOLLONESHOT", 1 << 30),
                ("EPOLLET", 1 << 31),
            ),
        ),
        FlagSet(
            "statx_mask",
            bits=(
                ("STATX_BASIC_STATS", 0x7FF),
                ("STATX_TYPE", 0x1),
                ("STATX_MODE", 0x2),
                ("STATX_NLINK", 0x4),
                ("STATX_UID", 0x8),
                ("STATX_GID", 0x10),
                ("STATX_ATIME", 0x20),
                ("STATX_MTIME", 0x40),
                ("STATX_CTIME", 0x80),
                ("STATX_INO", 0x100),
                ("STATX_SIZE", 0x200),
                ("STATX_BLOCKS", 0x400),
                ("STATX_BTIME", 0x800),
                ("STATX_MNT_ID", 0x1000),
                ("STATX_DIOALIGN", 0x2000),
            ),
        ),
        FlagSet(
            "statx_attributes",
            bits=(
                ("STATX_ATTR_COMPRESSED", 0x4),
                ("STATX_ATTR_IMMUTABLE", 0x10),
                ("STATX_ATTR_APPEND", 0x20),
                ("STATX_ATTR_NODUMP", 0x40),
                ("STATX_ATTR_ENCRYPTED", 0x800),
                ("STATX_ATTR_AUTOMOUNT", 0x1000),
                ("STATX_ATTR_MOUNT_ROOT", 0x2000),
                ("STATX_ATTR_VERITY", 0x100000),
                ("STATX_ATTR_DAX", 0x200000),
            ),
        ),
        FlagSet(
            "statx_flags",
            bits=(("AT_SYMLINK_NOFOLLOW", 0x100), ("AT_NO_AUTOMOUNT", 0x800), ("AT_EMPTY_PATH", 0x1000)),
            field_mask=0x6000,
            field_names={0: "AT_STATX_SYNC_AS_STAT", 0x2000: "AT_STATX_FORCE_SYNC", 0x4000: "AT_STATX_DONT_SYNC"},
        ),
        FlagSet("fd_cloexec", bits=(("FD_CLOEXEC", 1),)),
        FlagSet("epoll_create_flags", bits=(("EPOLL_CLOEXEC", 0o2000000),)),
        FlagSet("timer_flags", bits=(("TIMER_ABSTIME", 1),)),
        FlagSet("timerfd_settime_flags", bits=(("TFD_TIMER_ABSTIME", 1), ("TFD_TIMER_CANCEL_ON_SET", 2))),
        FlagSet("getrandom_flags", bits=(("GRND_NONBLOCK", 1), ("GRND_RANDOM", 2), ("GRND_INSECURE", 4))),
        _enum("suid_dump", {0: "SUID_DUMP_DISABLE", 1: "SUID_DUMP_USER", 2: "SUID_DUMP_ROOT"}),
        _enum("signal", SIGNAL_NAMES),
        _enum(
            "socket_family",
            {
                0: "AF_UNSPEC",
                1: "AF_UNIX",
                2: "AF_INET",
                3: "AF_AX25",
                4: "AF_IPX",
                5: "AF_APPLETALK",
                6: "AF_NETROM",
                7: "AF_BRIDGE",
                8: "AF_ATMPVC",
                9: "AF_X25",
                10: "AF_INET6",
                11: "AF_ROSE",
                12: "AF_DECnet",
                13: "AF_NETBEUI",
                14: "AF_SECURITY",
                15: "AF_KEY",
                16: "AF_NETLINK",
                17: "AF_PACKET",
                18: "AF_ASH",
                19: "AF_ECONET",
                20: "AF_ATMSVC",
                21: "AF_RDS",
                22: "AF_SNA",
                23: "AF_IRDA",
                24: "AF_PPPOX",
                25: "AF_WANPIPE",
                26: "AF_LLC",
                27: "AF_IB",
                28: "AF_MPLS",
                29: "AF_CAN",
                30: "AF_TIPC",
                31: "AF_BLUETOOTH",
                32: "AF_IUCV",
                33: "AF_RXRPC",
                34: "AF_ISDN",
                35: "AF_PHONET",
                36: "AF_IEEE802154",
                37: "AF_CAIF",
                38: "AF_ALG",
                39: "AF_NFC",
                40: "AF_VSOCK",
                41: "AF_KCM",
                42: "AF_QIPCRTR",
                43: "AF_SMC",
                44: "AF_XDP",
                45: "AF_MCTP",
            },
        ),
        _enum(
            "fcntl_cmd",
            {
                0: "F_DUPFD",
                1: "F_GETFD",
                2: "F_SETFD",
                3: "F_GETFL",
                4: "F_SETFL",
                5: "F_GETLK",
                6: "F_SETLK",
                7: "F_SETLKW",
                8: "F_SETOWN",
                9: "F_GETOWN",
                10: "F_SETSIG",
                11: "F_GETSIG",
                12: "F_GETLK64",
                13: "F_SETLK64",
                14: "F_SETLKW64",
                15: "F_SETOWN_EX",
                16: "F_GETOWN_EX",
                17: "F_GETOWNER_UIDS",
                36: "F_OFD_GETLK",
                37: "F_OFD_SETLK",
                38: "F_OFD_SETLKW",
                1024: "F_SETLEASE",
                1025: "F_GETLEASE",
                1026: "F_NOTIFY",
                1029: "F_CANCELLK",
                1030: "F_DUPFD_CLOEXEC",
                1031: "F_SETPIPE_SZ",
                1032: "F_GETPIPE_SZ",
                1033: "F_ADD_SEALS",
                1034: "F_GET_SEALS",
                1035: "F_GET_RW_HINT",
                1036: "F_SET_RW_HINT",
                1037: "F_GET_FILE_RW_HINT",
                1038: "F_SET_FILE_RW_HINT",
            },
        ),
        _enum("seek_whence", {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}),
        _enum("sigprocmask_how", {0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"}),
        _enum(
            "clockid",
            {
                0: "CLOCK_REALTIME",
                1: "CLOCK_MONOTONIC",
                2: "CLOCK_PROCESS_CPUTIME_ID",
                3: "CLOCK_THREAD_CPUTIME_ID",
                4: "CLOCK_MONOTONIC_RAW",
                5: "CLOCK_REALTIME_COARSE",
                6: "CLOCK_MONOTONIC_COARSE",
                7: "CLOCK_BOOTTIME",
                8: "CLOCK_REALTIME_ALARM",
                9: "CLOCK_BOOTTIME_ALARM",
                11: "CLOCK_TAI",
            },
        ),
        _enum(
            "madvise_advice",
            {
                0: "MADV_NORMAL",
                1: "MADV_RANDOM",
                2: "MADV_SEQUENTIAL",
                3: "MADV_WILLNEED",
                4: "MADV_DONTNEED",
                8: "MADV_FREE",
                9: "MADV_REMOVE",
                10: "MADV_DONTFORK",
                11: "MADV_DOFORK",
                12: "MADV_MERGEABLE",
                13: "MADV_UNMERGEABLE",
                14: "MADV_HUGEPAGE",
                15: "MADV_NOHUGEPAGE",
                16: "MADV_DONTDUMP",
                17: "MADV_DODUMP",
                18: "MADV_WIPEONFORK",
                19: "MADV_KEEPONFORK",
                20: "MADV_COLD",
                21: "MADV_PAGEOUT",
                22: "MADV_POPULATE_READ",
                23: "MADV_POPULATE_WRITE",
                24: "MADV_DONTNEED_LOCKED",
                25: "MADV_COLLAPSE",
                100: "MADV_HWPOISON",
                101: "MADV_SOFT_OFFLINE",
            },
        ),
        _enum(
            "fadvise_advice",
            {
                0: "POSIX_FADV_NORMAL",
                1: "POSIX_FADV_RANDOM",
                2: "POSIX_FADV_SEQUENTIAL",
                3: "POSIX_FADV_WILLNEED",
                4: "POSIX_FADV_DONTNEED",
                5: "POSIX_FADV_NOREUSE",
            },
        ),
        _enum("epoll_op", {1: "EPOLL_CTL_ADD", 2: "EPOLL_CTL_DEL", 3: "EPOLL_CTL_MOD"}),
        _enum("shutdown_how", {0: "SHUT_RD", 1: "SHUT_WR", 2: "SHUT_RDWR"}),
    )
}
