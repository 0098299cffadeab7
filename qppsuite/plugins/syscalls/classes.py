"""What a system call is about, as strace classes it: ``TRACE_FILE``, ``TRACE_PROCESS``, ``TRACE_NETWORK``...

The classes are strace's (``strace -e trace=%file`` selects by them), per ARM EABI number, in
``strace_classes.tsv``, generated from strace's own table by ``tools/gen_syscall_classes.py``.
:func:`kind` folds them into the seven kinds the run report colours by.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

DATA_FILE = "strace_classes.tsv"

KINDS = ("file", "process", "memory", "network", "signal", "time", "other")
"""The report's kinds of call, in the order the legend shows them."""

#: strace class -> kind, first match wins: a call in two classes takes the earlier one, so socket
#: (TRACE_NETWORK|TRACE_DESC) is network, mmap2 (TRACE_DESC|TRACE_MEMORY) memory, execve
#: (TRACE_FILE|TRACE_PROCESS) process, and read (TRACE_DESC: fds of any kind) file.  TRACE_IPC,
#: TRACE_CREDS, TRACE_PURE and no class at all (futex, nanosleep) are ``other``.
_KIND_OF_CLASS = (
    ("TRACE_NETWORK", "network"),
    ("TRACE_PROCESS", "process"),
    ("TRACE_SIGNAL", "signal"),
    ("TRACE_MEMORY", "memory"),
    ("TRACE_FILE", "file"),
    ("TRACE_DESC", "file"),
    ("TRACE_STAT_LIKE", "file"),
    ("TRACE_STATFS_LIKE", "file"),
    ("TRACE_CLOCK", "time"),
)


@cache
def _table() -> tuple[dict[int, frozenset[str]], dict[str, frozenset[str]]]:
    """number -> classes and name -> classes, read once from the data file."""
    by_number: dict[int, frozenset[str]] = {}
    by_name: dict[str, frozenset[str]] = {}
    text = resources.files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        number, name, flags = line.split("\t")
        classes = frozenset(flags.split("|")) if flags else frozenset()
        by_number[int(number, 0)] = classes
        by_name[name] = classes
    return by_number, by_name


def strace_classes(number: int | None, name: str | None = None) -> frozenset[str]:
    """strace's classes of the ARM EABI call ``number`` (or, for a number not in the table, ``name``).

    An unknown call has none.
    """
    by_number, by_name = _table()
    if number is not None and number in by_number:
        return by_number[number]
    return by_name.get(name or "", frozenset())


def kind(number: int | None, name: str | None = None) -> str:
    """One of :data:`KINDS` for a call, from its strace classes (see ``_KIND_OF_CLASS``)."""
    classes = strace_classes(number, name)
    for klass, folded in _KIND_OF_CLASS:
        if klass in classes:
            return folded
    return "other"
