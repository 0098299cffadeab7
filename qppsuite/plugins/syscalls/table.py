"""The ARM EABI system-call table: number -> name, register layout and argument types.

The table is data (``arm_syscalls.tsv``, generated from the Linux 6.1 sources by
``tools/gen_syscall_table.py``) so that it can be regenerated and reviewed as a diff,
not hand-edited code.  It is parsed and checked once, at import, because every
syscall the guest makes is looked up here and a malformed row must fail loudly at
start-up, not as a wrong decode in the middle of a run.
"""

import difflib
import re
from dataclasses import dataclass
from importlib import resources

from qppsuite.errors import QppsuiteError
from qppsuite.plugins.syscalls.arm_linux_abi import FLAGSETS

ARG_TYPES: frozenset[str] = frozenset(
    {
        "int",
        "unsigned",
        "long",
        "ulong",
        "size",
        "ssize",
        "fd",
        "ptr",
        "cstring",
        "path",
        "buf",
        "iov",
        "argv",
        "struct",
        "flags",
        "mode",
        "u64",
    }
)
"""The argument vocabulary.  ``buf``/``iov`` carry a direction and a length argument,
``struct`` a struct name and a direction, ``flags`` a flag-set name, ``u64`` two registers."""

RETURN_TYPES: frozenset[str] = frozenset({"long", "fd", "ssize", "ptr", "ulong"})
"""``ulong`` is the only kind with no error range: brk and get_tls return a raw value."""

EXIT_KINDS: frozenset[str] = frozenset({"-", "noreturn", "noreturn_on_success"})

ARG_REGISTERS = 7
"""EABI passes syscall arguments in r0-r6 (the number is in r7)."""

DATA_FILE = "arm_syscalls.tsv"


@dataclass(frozen=True)
class ArgSpec:
    """One argument as the kernel reads it from the registers.

    ``regs`` is a single register index, or ``(lo, hi)`` for a 64-bit value.  EABI puts a
    64-bit argument in an even/odd pair, so pread64's ``pos`` is ``(4, 5)`` and r3 is
    padding; calls that split the value themselves (preadv, _llseek) name their own order.
    ``len_arg`` is the index in the call's ``args`` of the length (buf, sockaddr) or
    count (iov) argument.  ``count`` is the element count of a fixed-size struct array
    (utimensat's ``times[2]``).
    """

    name: str
    type: str
    regs: tuple[int, ...]
    direction: str | None = None
    len_arg: int | None = None
    flagset: str | None = None
    struct: str | None = None
    count: int = 1


@dataclass(frozen=True)
class SyscallSpec:
    """A system call's number, name, arguments and return behaviour.

    ``noreturn`` calls never come back to the instruction after ``svc`` (exit,
    exit_group, and sigreturn/rt_sigreturn, which resume the interrupted context);
    ``noreturn_on_success`` calls (execve, execveat) come back only when they fail.
    ``entry`` is the kernel function the table dispatches to.
    """

    number: int
    name: str
    args: tuple[ArgSpec, ...]
    returns: str
    noreturn: bool
    noreturn_on_success: bool = False
    entry: str = ""


class UnknownSyscallError(QppsuiteError):
    """A system call name that is not in the ARM EABI table."""


_ARG_RE = re.compile(r"^(?P<name>\w+):(?P<type>\w+)(?:\[(?P<opts>[^\]]*)\])?@r(?P<r0>\d)(?::r(?P<r1>\d))?$")


def _parse_args(field: str, where: str) -> tuple[ArgSpec, ...]:
    raw: list[tuple[str, str, dict[str, str], list[str], tuple[int, ...]]] = []
    for token in field.split():
        m = _ARG_RE.match(token)
        if m is None:
            raise ValueError(f"{where}: malformed argument {token!r}")
        regs: tuple[int, ...] = (int(m["r0"]),) if m["r1"] is None else (int(m["r0"]), int(m["r1"]))
        options: dict[str, str] = {}
        words: list[str] = []
        for opt in (m["opts"] or "").split(","):
            if "=" in opt:
                key, _, val = opt.partition("=")
                options[key] = val
            elif opt:
                words.append(opt)
        raw.append((m["name"], m["type"], options, words, regs))
    names = [r[0] for r in raw]
    args: list[ArgSpec] = []
    for name, typ, options, words, regs in raw:
        if typ not in ARG_TYPES:
            raise ValueError(f"{where}: argument {name} has unknown type {typ!r}")
        if any(r >= ARG_REGISTERS for r in regs) or len(regs) != (2 if typ == "u64" else 1):
            raise ValueError(f"{where}: argument {name} has a bad register layout {regs}")
        len_name = options.pop("len", None) or options.pop("count", None)
        len_arg = None
        if len_name is not None:
            if len_name not in names:
                raise ValueError(f"{where}: argument {name} refers to unknown argument {len_name!r}")
            len_arg = names.index(len_name)
        count = int(options.pop("n", "1"))
        if options:
            raise ValueError(f"{where}: argument {name} has unknown options {sorted(options)}")
        direction = next((w for w in words if w in ("in", "out")), None)
        others = [w for w in words if w not in ("in", "out")]
        flagset = others[0] if typ == "flags" and others else None
        struct = others[0] if typ == "struct" and others else None
        if typ == "flags" and flagset not in FLAGSETS:
            raise ValueError(f"{where}: argument {name} names unknown flag set {flagset!r}")
        if typ == "struct" and (struct is None or direction is None):
            raise ValueError(f"{where}: struct argument {name} needs a struct name and a direction")
        if typ in ("buf", "iov") and (direction is None or len_arg is None):
            raise ValueError(f"{where}: {typ} argument {name} needs a direction and a length argument")
        args.append(ArgSpec(name, typ, regs, direction, len_arg, flagset, struct, count))
    return tuple(args)


def _parse(text: str, source: str) -> dict[int, SyscallSpec]:
    table: dict[int, SyscallSpec] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        cols = line.split("\t")
        if len(cols) != 6:
            raise ValueError(f"{where}: expected 6 tab-separated columns, got {len(cols)}")
        number_s, name, entry, returns, exit_kind, args_s = cols
        number = int(number_s, 0)
        if number in table:
            raise ValueError(f"{where}: duplicate syscall number {number}")
        if returns not in RETURN_TYPES:
            raise ValueError(f"{where}: unknown return type {returns!r}")
        if exit_kind not in EXIT_KINDS:
            raise ValueError(f"{where}: unknown exit kind {exit_kind!r}")
        table[number] = SyscallSpec(
            number=number,
            name=name,
            args=_parse_args(args_s, where),
            returns=returns,
            noreturn=exit_kind == "noreturn",
            noreturn_on_success=exit_kind == "noreturn_on_success",
            entry=entry,
        )
    return table


def _load() -> dict[int, SyscallSpec]:
    text = resources.files("qppsuite.plugins.syscalls").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return _parse(text, DATA_FILE)


SYSCALLS: dict[int, SyscallSpec] = _load()
_BY_NAME: dict[str, SyscallSpec] = {spec.name: spec for spec in SYSCALLS.values()}


def by_name(name: str) -> SyscallSpec:
    """The call named ``name`` (the kernel's table name, e.g. ``openat``, ``_llseek``)."""
    spec = _BY_NAME.get(name)
    if spec is None:
        close = difflib.get_close_matches(name, _BY_NAME, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownSyscallError(
            f"no ARM EABI system call named {name!r} among the {len(_BY_NAME)} in the table{hint}"
        )
    return spec
