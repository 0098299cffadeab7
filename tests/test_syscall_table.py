"""The ARM EABI syscall table: coverage of Linux 6.1, register layouts, vocabulary, flag sets."""

import hashlib
import re
from pathlib import Path

import pytest

from qppsuite.errors import QppsuiteError
from qppsuite.plugins.syscalls import table
from qppsuite.plugins.syscalls.arm_linux_abi import FLAGSETS
from qppsuite.plugins.syscalls.table import ARG_TYPES, RETURN_TYPES, SYSCALLS, UnknownSyscallError, by_name

REPO = Path(__file__).resolve().parent.parent
TBL_COPY = REPO / "tools" / "data" / "linux-6.1.176-arch-arm-tools-syscall.tbl"
TSV = REPO / "qppsuite" / "plugins" / "syscalls" / "arm_syscalls.tsv"


def _tbl_rows() -> list[tuple[int, str, str]]:
    rows = []
    for line in TBL_COPY.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            cols = line.split()
            rows.append((int(cols[0]), cols[1], cols[2]))
    return rows


@pytest.mark.parametrize(
    ("number", "name"),
    [
        (0, "restart_syscall"),
        (1, "exit"),
        (3, "read"),
        (4, "write"),
        (5, "open"),
        (11, "execve"),
        (120, "clone"),
        (140, "_llseek"),
        (190, "vfork"),
        (192, "mmap2"),
        (248, "exit_group"),
        (270, "arm_fadvise64_64"),
        (281, "socket"),
        (322, "openat"),
        (341, "arm_sync_file_range"),
        (397, "statx"),
        (403, "clock_gettime64"),
        (435, "clone3"),
        (450, "set_mempolicy_home_node"),
        (0xF0001, "breakpoint"),
        (0xF0002, "cacheflush"),
        (0xF0003, "usr26"),
        (0xF0004, "usr32"),
        (0xF0005, "set_tls"),
        (0xF0006, "get_tls"),
    ],
)
def test_known_numbers_and_names(number: int, name: str) -> None:
    assert SYSCALLS[number].name == name
    assert by_name(name).number == number


def test_every_eabi_row_of_the_kernel_table_is_present_and_oabi_rows_are_not() -> None:
    rows = _tbl_rows()
    eabi = {n: name for n, abi, name in rows if abi in ("common", "eabi")}
    oabi = {n for n, abi, _ in rows if abi == "oabi"}
    assert len(eabi) == 403
    for number, name in eabi.items():
        assert SYSCALLS[number].name == name
    assert not oabi & SYSCALLS.keys()
    private = {n for n in SYSCALLS if n >= 0xF0000}
    assert private == set(range(0xF0001, 0xF0007))
    assert set(SYSCALLS) == set(eabi) | private


def test_linux_6_1_ends_at_450() -> None:
    assert max(n for n in SYSCALLS if n < 0xF0000) == 450
    assert 451 not in SYSCALLS  # cachestat arrived in 6.5
    assert 447 not in SYSCALLS  # reserved for memfd_secret


def test_names_are_unique() -> None:
    names = [spec.name for spec in SYSCALLS.values()]
    assert len(names) == len(set(names))


def test_duplicate_numbers_are_rejected_at_load() -> None:
    row = "3\tread\tsys_read\tssize\t-\tfd:fd@r0"
    with pytest.raises(ValueError, match="duplicate syscall number 3"):
        table._parse(f"{row}\n{row}\n", "dup.tsv")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("3\tread\tsys_read\tssize\t-\tfd:fdx@r0", "unknown type"),
        ("3\tread\tsys_read\tssize\t-\tfd:fd@r7", "bad register layout"),
        ("3\tread\tsys_read\tssize\t-\tpos:u64@r4", "bad register layout"),
        ("3\tread\tsys_read\tssize\t-\tbuf:buf[out,len=count]@r1", "unknown argument 'count'"),
        ("3\tread\tsys_read\tssize\t-\tf:flags[nope]@r1", "unknown flag set"),
        ("3\tread\tsys_read\tint\t-\t", "unknown return type"),
        ("3\tread\tsys_read\tssize\t-", "6 tab-separated columns"),
    ],
)
def test_malformed_rows_are_rejected(row: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        table._parse(row + "\n", "bad.tsv")


def test_every_argument_is_well_formed() -> None:
    for spec in SYSCALLS.values():
        used: list[int] = []
        for arg in spec.args:
            assert arg.type in ARG_TYPES, (spec.name, arg)
            assert all(0 <= r <= 6 for r in arg.regs), (spec.name, arg)
            used.extend(arg.regs)
            if arg.type == "flags":
                assert arg.flagset in FLAGSETS, (spec.name, arg)
            if arg.type in ("buf", "iov"):
                assert arg.direction in ("in", "out") and arg.len_arg is not None, (spec.name, arg)
            if arg.type == "struct":
                assert arg.struct and arg.direction in ("in", "out"), (spec.name, arg)
            if arg.len_arg is not None:
                length = spec.args[arg.len_arg]
                assert length.type in ("size", "int", "unsigned", "ulong", "ptr"), (spec.name, length)
        assert len(used) == len(set(used)), f"{spec.name} uses a register twice: {spec.args}"
        assert spec.returns in RETURN_TYPES


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        # 64-bit values go in an even/odd pair; a skipped register is padding.
        ("pread64", [("fd", (0,)), ("buf", (1,)), ("count", (2,)), ("pos", (4, 5))]),
        ("pwrite64", [("fd", (0,)), ("buf", (1,)), ("count", (2,)), ("pos", (4, 5))]),
        ("arm_fadvise64_64", [("fd", (0,)), ("advice", (1,)), ("offset", (2, 3)), ("len", (4, 5))]),
        ("arm_sync_file_range", [("fd", (0,)), ("flags", (1,)), ("offset", (2, 3)), ("nbytes", (4, 5))]),
        ("truncate64", [("path", (0,)), ("length", (2, 3))]),
        ("ftruncate64", [("fd", (0,)), ("length", (2, 3))]),
        ("readahead", [("fd", (0,)), ("offset", (2, 3)), ("count", (4,))]),
        ("fallocate", [("fd", (0,)), ("mode", (1,)), ("offset", (2, 3)), ("len", (4, 5))]),
        ("fanotify_mark", [("fanotify_fd", (0,)), ("flags", (1,)), ("mask", (2, 3)), ("fd", (4,)), ("pathname", (5,))]),
        # Calls that split the value themselves keep their own order (lo, hi).
        ("preadv", [("fd", (0,)), ("vec", (1,)), ("vlen", (2,)), ("pos", (3, 4))]),
        ("_llseek", [("fd", (0,)), ("offset", (2, 1)), ("result", (3,)), ("whence", (4,))]),
        ("mmap2", [("addr", (0,)), ("len", (1,)), ("prot", (2,)), ("flags", (3,)), ("fd", (4,)), ("pgoff", (5,))]),
        # ARM is CONFIG_CLONE_BACKWARDS: tls before child_tidptr.
        (
            "clone",
            [("clone_flags", (0,)), ("newsp", (1,)), ("parent_tidptr", (2,)), ("tls", (3,)), ("child_tidptr", (4,))],
        ),
    ],
)
def test_register_layouts(name: str, layout: list[tuple[str, tuple[int, ...]]]) -> None:
    assert [(a.name, a.regs) for a in by_name(name).args] == layout


def test_argument_semantics_from_the_prototypes() -> None:
    read, write = by_name("read").args, by_name("write").args
    assert (read[1].type, read[1].direction, read[1].len_arg) == ("buf", "out", 2)
    assert (write[1].type, write[1].direction, write[1].len_arg) == ("buf", "in", 2)
    openat = by_name("openat").args
    assert [a.type for a in openat] == ["fd", "path", "flags", "mode"]
    assert openat[2].flagset == "open_flags"
    assert [a.type for a in by_name("execve").args] == ["path", "argv", "argv"]
    readv = by_name("readv").args[1]
    assert (readv.type, readv.direction, readv.len_arg) == ("iov", "out", 2)
    assert by_name("writev").args[1].direction == "in"
    assert by_name("clone").args[0].flagset == "clone_flags"
    assert by_name("connect").args[1].struct == "sockaddr"
    assert by_name("nanosleep").args[0].struct == "old_timespec32"
    assert by_name("clock_gettime64").args[1].struct == "__kernel_timespec"
    assert by_name("utimensat").args[2].count == 2
    assert by_name("set_tls").args[0].type == "ptr"
    assert [a.name for a in by_name("socket").args] == ["family", "type", "protocol"]


def test_exit_behaviour() -> None:
    assert {s.name for s in SYSCALLS.values() if s.noreturn} == {"exit", "exit_group", "sigreturn", "rt_sigreturn"}
    assert {s.name for s in SYSCALLS.values() if s.noreturn_on_success} == {"execve", "execveat"}


def test_return_kinds() -> None:
    assert by_name("read").returns == "ssize"
    assert by_name("openat").returns == "fd"
    assert by_name("mmap2").returns == "ptr"
    assert by_name("brk").returns == "ulong"
    assert by_name("get_tls").returns == "ulong"
    assert by_name("getpid").returns == "long"


def test_unknown_name_is_a_one_line_user_error() -> None:
    with pytest.raises(UnknownSyscallError) as info:
        by_name("opnat")
    assert isinstance(info.value, QppsuiteError)
    message = str(info.value)
    assert "\n" not in message and "'opnat'" in message and "openat" in message


def test_data_file_records_its_provenance() -> None:
    header = [line for line in TSV.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(header)
    assert "linux-source-6.1" in text and "6.1.176-1" in text
    recorded = re.search(r"arch/arm/tools/syscall\.tbl\s+([0-9a-f]{64})", text)
    assert recorded is not None
    assert recorded.group(1) == hashlib.sha256(TBL_COPY.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("flagset", "value", "text"),
    [
        # ARM's own open flags (arch/arm/include/uapi/asm/fcntl.h), not x86's.
        ("open_flags", 0o40000, "O_RDONLY|O_DIRECTORY"),
        ("open_flags", 0o100000, "O_RDONLY|O_NOFOLLOW"),
        ("open_flags", 0o200000, "O_RDONLY|O_DIRECT"),
        ("open_flags", 0o400000, "O_RDONLY|O_LARGEFILE"),
        ("open_flags", 0o1101, "O_WRONLY|O_CREAT|O_TRUNC"),
        ("open_flags", 0o2000002, "O_RDWR|O_CLOEXEC"),
        ("open_flags", 0o4010001, "O_WRONLY|O_SYNC"),
        ("open_flags", 0o10001, "O_WRONLY|O_DSYNC"),
        ("open_flags", 0o20040002, "O_RDWR|O_TMPFILE"),
        ("open_flags", 0x80000000, "O_RDONLY|0x80000000"),
        ("open_flags", 3, "0x3"),
        ("clone_flags", 0x01200011, "CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD"),
        (
            "clone_flags",
            0x003D0F00,
            "CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|CLONE_SYSVSEM"
            "|CLONE_SETTLS|CLONE_PARENT_SETTID|CLONE_CHILD_CLEARTID",
        ),
        ("mmap_prot", 0, "PROT_NONE"),
        ("mmap_prot", 5, "PROT_READ|PROT_EXEC"),
        ("mmap_flags", 0x22, "MAP_PRIVATE|MAP_ANONYMOUS"),
        ("mmap_flags", 0x812, "MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE"),
        ("socket_type", 0o2004002, "SOCK_DGRAM|SOCK_NONBLOCK|SOCK_CLOEXEC"),
        ("socket_family", 10, "AF_INET6"),
        ("signal", 9, "SIGKILL"),
        ("signal", 34, "SIGRT_2"),
        ("signal", 64, "SIGRT_32"),
        ("signal", 0, "0"),
        ("signal", 99, "99"),
        ("fcntl_cmd", 1030, "F_DUPFD_CLOEXEC"),
        ("fcntl_cmd", 12, "F_GETLK64"),
        ("at_flags", 0x1100, "AT_SYMLINK_NOFOLLOW|AT_EMPTY_PATH"),
        ("unlinkat_flags", 0x200, "AT_REMOVEDIR"),
        ("wait_options", 0x40000001, "WNOHANG|__WALL"),
        ("access_mode", 0, "F_OK"),
        ("access_mode", 6, "R_OK|W_OK"),
        ("futex_op", 0x80, "FUTEX_WAIT_PRIVATE"),
        ("futex_op", 0x189, "FUTEX_WAIT_BITSET_PRIVATE|FUTEX_CLOCK_REALTIME"),
        ("statx_flags", 0x1800, "AT_STATX_SYNC_AS_STAT|AT_NO_AUTOMOUNT|AT_EMPTY_PATH"),
        ("statx_mask", 0x17FF, "STATX_BASIC_STATS|STATX_MNT_ID"),
        ("sa_flags", 0x0C000000, "SA_RESTORER|SA_ONSTACK"),
        ("ioctl_request", 0x5401, "TCGETS"),
        ("ioctl_request", 0x5499, "0x5499"),
        ("prctl_option", 15, "PR_SET_NAME"),
        ("clockid", 0xFFFFFFFA, "-6"),
        ("seek_whence", 2, "SEEK_END"),
    ],
)
def test_flag_sets_use_arm_values(flagset: str, value: int, text: str) -> None:
    assert FLAGSETS[flagset].format(value) == text
