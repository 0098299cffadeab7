"""What each file descriptor referred to at each call, rebuilt from a run's ``syscalls`` rows.

The database keeps no fd table; the calls that change one are in it.  Walking a run's calls in
``seq`` order, per process row (``process_id``: threads share their process's table, a reused pid
is another row), this module follows:

- a successful ``open``, ``openat``, ``openat2`` or ``creat``: its fd (the return value) names the
  path it was given, joined to what its directory fd names when relative to one; where
  ``file_activity`` recorded the process's files (the paths the kernel resolved, through
  osi_linux's ``fd_to_filename``), a relative path is replaced by the one recorded path ending in it, else
  joined to the working directory when it is known;
- ``dup``, ``dup2``, ``dup3`` and ``fcntl``/``fcntl64`` ``F_DUPFD``/``F_DUPFD_CLOEXEC``: the new fd
  names what the old one did;
- ``pipe``/``pipe2`` and ``socket``/``accept``/``accept4``: the kernel's name, ``pipe:[INODE]`` as strace ``-y``
  prints it, where ``file_activity`` named one of the object's fds (a ``file_fds`` row of either end of a pipe,
  a dup of one, a fork child's copy: :func:`kernel_names`, a first replay), from the call that made it on; else
  ``pipe:[N]``, ``socket:[N]``, numbered in the run's order; either way the processes at the two ends of a pipe
  name the same pipe; ``eventfd``/``eventfd2``, ``memfd_create``, ``epoll_create1``... by their kind, strace
  ``-y``'s words;
- ``close`` and ``close_range`` forget fds; a successful ``execve`` forgets those opened with
  ``O_CLOEXEC`` (or dup'd with it);
- a fork child's own return (``child = 1``) starts the child's table as a copy of the parent's when
  it called fork (the call ``parent_seq`` names): the child's return comes later in ``seq`` order,
  after the parent may have closed the fds it gave the child (a shell setting up a pipeline).
- the working directory, as the fd ``AT_FDCWD`` (-100): a successful ``chdir`` joins its path to the one
  before, ``fchdir`` takes what its fd names; where ``file_activity`` named it (its ``file_fds`` rows of fd
  -100: at a process's first sight, and the directory the kernel resolved at each ``chdir``/``fchdir``), that
  name; forks copy it and an exec keeps it.  A directory fd argument equal to ``AT_FDCWD`` names it.

An fd the run never saw opened (inherited from before the run, such as 0, 1 and 2) names what
``file_activity`` found it referred to (its ``file_fds`` rows: osi_linux's view of the process's fd table when
the plugin first saw the process, and of an fd at its first read or write): from that call on
(:meth:`FdTables.name`), and back to the fd's last change before it (:class:`Lookback`); without that
plugin, it names nothing.
"""

from __future__ import annotations

import bisect
import functools
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from qppsuite.plugins.syscalls import table
from qppsuite.plugins.syscalls.arm_linux_abi import AT_FDCWD
from qppsuite.plugins.syscalls.formatting import DIRFD_NAMES
from qppsuite.plugins.syscalls.pairing import FORK_CALLS

OPENS = {"open": "filename", "openat": "filename", "openat2": "filename", "creat": "pathname"}
"""Calls that open a path -> their path argument (``dfd`` the directory fd, if any)."""
DUPS = {"dup": "fildes", "dup2": "oldfd", "dup3": "oldfd"}
FCNTLS = ("fcntl", "fcntl64")
SOCKETS = ("socket", "accept", "accept4")
KINDS = {
    "eventfd": "anon_inode:[eventfd]",
    "eventfd2": "anon_inode:[eventfd]",
    "memfd_create": "memfd",
    "epoll_create": "anon_inode:[eventpoll]",
    "epoll_create1": "anon_inode:[eventpoll]",
    "signalfd4": "anon_inode:[signalfd]",
    "timerfd_create": "anon_inode:[timerfd]",
    "inotify_init1": "anon_inode:inotify",
}
"""Calls whose returned fd is an object without a path -> what to call it (strace -y's names)."""
PIPES = ("pipe", "pipe2")
CLOSES = ("close", "close_range")
EXECS = ("execve", "execveat")
CHDIRS = ("chdir", "fchdir")
PAIRS = (*PIPES, "socketpair")
"""Calls that write two new fds into an array (``fildes``, ``usockvec``)."""
CHANGING = (*OPENS, *DUPS, *FCNTLS, *SOCKETS, *KINDS, *PAIRS, *CLOSES, *EXECS, *FORK_CALLS, *CHDIRS)
"""The calls that change an fd table; with the fork children's own returns, all this module reads."""


@dataclass(frozen=True, slots=True)
class _Fd:
    path: str
    cloexec: bool
    made: str | None = None  # a pipe or socket made in the run: its number there (pipe:[N]), for kernel_names


@dataclass
class FdTables:
    """The fd tables of a run's processes as of the calls applied so far (:meth:`apply`, in seq order).

    ``recorded``: process row id -> paths ``file_activity`` recorded for it (may be empty).
    ``kernel``: the run's numbers of the pipes and sockets made in it (``pipe:[N]``) -> the kernel's name of each
    (``pipe:[INODE]``): what a replay learnt (:meth:`name`, :func:`kernel_names`), given to the next so that it
    names them so from the calls that made them.
    """

    recorded: dict[int, list[str]] = field(default_factory=dict)
    kernel: dict[str, str] = field(default_factory=dict)
    _tables: dict[int, dict[int, _Fd]] = field(default_factory=dict)
    _forks: dict[int, tuple[int, dict[int, _Fd]]] = field(default_factory=dict)  # fork's seq -> (process, its fds)
    _made: dict[str, int] = field(default_factory=dict)  # pipes and sockets made so far, for their numbers
    _named: dict[tuple[int, int], tuple[int, str]] = field(default_factory=dict)  # (process, fd) -> its last naming

    def _make(self, kind: str, cloexec: bool) -> _Fd:
        """A new pipe or socket (``kind``): numbered in the run's order, named as the kernel does if known."""
        self._made[kind] = self._made.get(kind, 0) + 1
        number = f"{kind}:[{self._made[kind]}]"
        return _Fd(self.kernel.get(number, number), cloexec, number)

    def path(self, process_id: int | None, fd: Any) -> str | None:
        """What ``fd`` of the process names now, or None when the run never saw it opened."""
        if process_id is None or not isinstance(fd, int):
            return None
        entry = self._tables.get(process_id, {}).get(fd)
        return entry.path if entry is not None else None

    def name(self, process_id: int, fd: int, path: str, seq: int) -> None:
        """What ``file_activity`` found ``fd`` referred to at call ``seq`` (a ``file_fds`` row, given before that
        call's own change): taken for an fd the calls so far do not name, and for the fd an open at ``seq``
        returns: the file the kernel resolved (through symbolic links, ``/proc/self``), as strace ``-y`` names it.
        An fd made in the run keeps its name here, so both ends of a pipe agree; a pipe's or socket's naming of
        its kind (``pipe:[INODE]``) is kept in :attr:`kernel`, the first for each, for the next replay."""
        fds = self._tables.setdefault(process_id, {})
        entry = fds.setdefault(fd, _Fd(path, False))
        if entry.made is not None and path.startswith(entry.made.partition("[")[0] + "["):
            self.kernel.setdefault(entry.made, path)
        self._named[(process_id, fd)] = (seq, path)

    def apply(self, row: dict[str, Any]) -> None:
        """One call's effect: ``row`` has seq, process_id, name, args (JSON text), outputs, retval, child,
        parent_seq, ending."""
        process_id = row["process_id"]
        if process_id is None:
            return
        name = row["name"]
        fds = self._tables.setdefault(process_id, {})
        if row["child"]:
            parent, inherited = self._forks.pop(row["parent_seq"], (None, {}))
            if parent is not None and parent != process_id and not fds:  # not a thread: its own table
                fds.update(inherited)
            return
        if name in FORK_CALLS:
            self._forks[row["seq"]] = (process_id, dict(fds))
            return
        retval = row["retval"]
        args = _object(row["args"])
        if name in EXECS:
            if row["ending"] == "exec" or retval == 0:
                for fd in [fd for fd, entry in fds.items() if entry.cloexec]:
                    del fds[fd]
            return
        if name == "close":
            fds.pop(args.get("fd"), None)  # type: ignore[arg-type]
            return
        if name == "close_range":
            low, high = args.get("fd"), args.get("max_fd")
            if isinstance(low, int) and isinstance(high, int):
                for fd in [fd for fd in fds if low <= fd <= high]:
                    del fds[fd]
            return
        if name in PAIRS:
            made = [fd for _, fd in made_fds(row)]
            if name in PIPES and len(made) == 2:  # one pipe, both ends
                fds.update(dict.fromkeys(made, self._make("pipe", "O_CLOEXEC" in str(args.get("flags", "")))))
            elif len(made) == 2:  # two sockets, connected: each its own inode (strace -y: socket:[A], socket:[B])
                for fd in made:
                    fds[fd] = self._make("socket", "SOCK_CLOEXEC" in str(args.get("type", "")))
            return
        if not isinstance(retval, int) or retval < 0:
            return
        if name in CHDIRS:
            named = self._named.get((process_id, AT_FDCWD))
            cwd = named[1] if named is not None and named[0] == row["seq"] else self._moved(fds, name, args)
            if cwd is None:
                fds.pop(AT_FDCWD, None)
            else:
                fds[AT_FDCWD] = _Fd(cwd, False)
        elif name in OPENS:
            named = self._named.get((process_id, retval))
            path = named[1] if named is not None and named[0] == row["seq"] else None
            fds[retval] = _Fd(path or self._opened(process_id, fds, args, OPENS[name]), _cloexec(args))
        elif name in DUPS:
            old = fds.get(args.get(DUPS[name]))  # type: ignore[arg-type]
            if old is not None:
                fds[retval] = replace(old, cloexec="O_CLOEXEC" in str(args.get("flags", "")))
            else:
                fds.pop(retval, None)
        elif name in FCNTLS and str(args.get("cmd")) in ("F_DUPFD", "F_DUPFD_CLOEXEC"):
            old = fds.get(args.get("fd"))  # type: ignore[arg-type]
            if old is not None:
                fds[retval] = replace(old, cloexec=args.get("cmd") == "F_DUPFD_CLOEXEC")
        elif name in SOCKETS:
            fds[retval] = self._make("socket", "CLOEXEC" in str(args.get("flags", args.get("type", ""))))
        elif name in KINDS:
            fds[retval] = _Fd(KINDS[name], "CLOEXEC" in str(args.get("flags", args.get("type", ""))))

    @staticmethod
    def _moved(fds: dict[int, _Fd], name: str, args: dict[str, Any]) -> str | None:
        """The working directory after ``chdir(path)`` (joined to the one before) or ``fchdir(fd)``; None if
        unknown, as after a ``..`` (the kernel follows it from where a symbolic link led, which a join of names
        cannot know: ``chdir("ln"); chdir("..")`` with ``ln`` -> /usr/share is /usr)."""
        if name == "fchdir":
            directory = fds.get(args.get("fd"))  # type: ignore[arg-type]
            return directory.path if directory is not None else None
        given, before = args.get("filename"), fds.get(AT_FDCWD)
        if not isinstance(given, str) or (before is None and not given.startswith("/")) or ".." in given.split("/"):
            return None
        return posixpath.normpath(posixpath.join(before.path if before is not None else "/", given))

    def _opened(self, process_id: int, fds: dict[int, _Fd], args: dict[str, Any], argument: str) -> str:
        given = args.get(argument)
        if not isinstance(given, str):
            return json.dumps(given)  # a path that could not be read: as the args column holds it
        if given.startswith("/"):
            return given
        dfd = args.get("dfd", AT_FDCWD)
        directory = fds.get(dfd) if isinstance(dfd, int) and dfd != AT_FDCWD else None
        if directory is not None:
            return posixpath.join(directory.path, given)
        tail = "/" + posixpath.normpath(given).lstrip("/")
        found = [path for path in self.recorded.get(process_id, ()) if path.endswith(tail)]
        if len(found) == 1:
            return found[0]
        cwd = fds.get(AT_FDCWD)
        return posixpath.normpath(posixpath.join(cwd.path, given)) if cwd is not None else given


MADE = ("pipe:[", "socket:[")
"""How the kernel's names of the objects :class:`FdTables` numbers begin: a naming that may rename one."""


def kernel_names(
    recorded: dict[int, list[str]],
    changes: Iterable[dict[str, Any]],
    namings: Iterable[tuple[int, int, int, str]],
) -> dict[str, str]:
    """The pipes and sockets made in the run that ``file_activity`` named -> the kernel's names (an
    :attr:`FdTables.kernel`), from one replay of the run's :data:`CHANGING` calls and fork children's returns
    (``changes``, rows as :meth:`FdTables.apply` takes them) with its ``file_fds`` rows (``namings``: (seq,
    process row, fd, path)), both in seq order; a naming at a call is given before the call's change.  Only the
    namings of a pipe or socket (:data:`MADE`) are read, and the calls up to the last of them."""
    tables = FdTables(recorded)
    pending = (naming for naming in namings if naming[3].startswith(MADE))
    naming = next(pending, None)
    for row in changes:
        while naming is not None and naming[0] <= row["seq"]:
            tables.name(naming[1], naming[2], naming[3], naming[0])
            naming = next(pending, None)
        if naming is None:
            break
        tables.apply(row)
    while naming is not None:
        tables.name(naming[1], naming[2], naming[3], naming[0])
        naming = next(pending, None)
    return tables.kernel


def touched(row: dict[str, Any]) -> list[tuple[int, int]]:
    """The fd numbers a call made or unmade, as inclusive ranges: a returned fd (the table's return type
    ``fd``, and ``fcntl``'s ``F_DUPFD``), both fds of a pipe or socket pair, a closed fd and ``close_range``'s
    range, and ``AT_FDCWD`` for a successful ``chdir`` or ``fchdir``.  ``row`` has name, args, outputs and
    retval."""
    name, retval = row["name"], row["retval"]
    args = _object(row["args"])
    if name in CHDIRS:
        return [(AT_FDCWD, AT_FDCWD)] if retval == 0 else []
    if name == "close" and isinstance(args.get("fd"), int):
        return [(args["fd"], args["fd"])]
    if name == "close_range":
        low, high = args.get("fd"), args.get("max_fd")
        return [(low, high)] if isinstance(low, int) and isinstance(high, int) else []
    if name in PAIRS:
        return [(fd, fd) for _, fd in made_fds(row)]
    duplicated = name in FCNTLS and str(args.get("cmd", "")).startswith("F_DUPFD")
    if isinstance(retval, int) and retval >= 0 and (returns_fd(name) or duplicated):
        return [(retval, retval)]
    return []


TOUCHING = (*CHANGING, *(spec.name for spec in table.SYSCALLS.values() if spec.returns == "fd"))
"""The calls :func:`touched` reads."""


@dataclass
class Lookback:
    """What ``file_activity``'s namings (``file_fds`` rows) say of the calls before them: a naming of fd N at
    call S tells what N referred to back to N's last change in the process (a call that made or unmade N,
    :func:`touched`), so ``fstat(1)`` before a process's first write to 1 is named too."""

    #: (process row, fd) -> [(seq, path)], ascending
    namings: dict[tuple[int, int], list[tuple[int, str]]] = field(default_factory=dict)
    #: process row -> [(seq, low fd, high fd)], ascending: the calls that made or unmade fds
    changes: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)
    _since: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (process, fd, naming seq) -> from

    @classmethod
    def build(cls, namings: Iterable[tuple[int, int, int, str]], calls: Iterable[dict[str, Any]]) -> Lookback:
        """From ``(seq, process row, fd, path)`` namings and the run's :data:`TOUCHING` calls, both by seq."""
        back = cls()
        for seq, process_id, fd, path in namings:
            back.namings.setdefault((process_id, fd), []).append((seq, path))
        for row in calls:
            for low, high in touched(row):
                back.changes.setdefault(row["process_id"], []).append((row["seq"], low, high))
        return back

    def path(self, process_id: int, fd: int, seq: int) -> str | None:
        """What ``fd`` referred to at call ``seq`` by the process's next naming of it, if no call between
        (that one included) made or unmade it; else None."""
        named = self.namings.get((process_id, fd))
        if not named:
            return None
        at = bisect.bisect_left(named, seq, key=lambda item: item[0])
        if at == len(named):
            return None
        when, path = named[at]
        key = (process_id, fd, when)
        since = self._since.get(key)
        if since is None:  # the call after the fd's last change at or before the naming
            since = 0
            changes = self.changes.get(process_id, [])
            for n in range(bisect.bisect_right(changes, when, key=lambda item: item[0]) - 1, -1, -1):
                change, low, high = changes[n]
                if low <= fd <= high:
                    since = change + 1
                    break
            self._since[key] = since
        return path if seq >= since else None


def _object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _cloexec(args: dict[str, Any]) -> bool:
    flags = args.get("flags")
    if isinstance(flags, dict):  # openat2's struct open_how
        flags = flags.get("flags")
    return "O_CLOEXEC" in str(flags or "")


_SPECS = {spec.name: spec for spec in table.SYSCALLS.values()}


@functools.cache
def fd_arguments(name: str) -> tuple[str, ...]:
    """The arguments of the call ``name`` that are fds (the syscall table's ``fd`` type); none if unknown."""
    spec = _SPECS.get(name)
    return () if spec is None else tuple(arg.name for arg in spec.args if arg.type == "fd")


def returns_fd(name: str) -> bool:
    """Whether the call returns a new fd (the syscall table's return type ``fd``)."""
    spec = _SPECS.get(name)
    return spec is not None and spec.returns == "fd"


def made_fds(row: dict[str, Any]) -> list[tuple[str, int]]:
    """The fds a successful ``pipe``, ``pipe2`` or ``socketpair`` wrote into its array, each with the name the
    view gives it (``fildes[0]``, ``usockvec[1]``), as strace ``-y`` names them in the array; ``row`` holds
    ``name``, ``retval`` and ``outputs``."""
    name = row["name"]
    if name not in PAIRS or row["retval"] != 0:
        return []
    array = "fildes" if name in PIPES else "usockvec"
    pair = _object(row["outputs"]).get(array)
    return [(f"{array}[{n}]", fd) for n, fd in enumerate(pair) if isinstance(fd, int)] if isinstance(pair, list) else []


def call_fds(
    tables: FdTables, row: dict[str, Any], args: dict[str, Any], back: Lookback | None = None
) -> dict[str, str]:
    """The fds a call was given -> the path each named (those the run saw opened, or ``back`` names), by
    argument name; a directory fd ``AT_FDCWD``, the working directory."""
    out: dict[str, str] = {}
    for argument in fd_arguments(row["name"]):
        fd = args.get(argument)
        if fd == AT_FDCWD and argument not in DIRFD_NAMES:
            continue  # -100 is the working directory only where a directory fd is expected
        path = tables.path(row["process_id"], fd)
        if path is None and back is not None and isinstance(fd, int):
            path = back.path(row["process_id"], fd, row["seq"])
        if path is not None:
            out[argument] = path
    return out


def changing_names() -> Iterable[str]:
    """The call names whose rows :meth:`FdTables.apply` needs (besides fork children's returns)."""
    return CHANGING
