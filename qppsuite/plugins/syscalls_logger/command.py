"""Which processes are the run's command's: ``processes.command``, and what ``only=command`` keeps.

The run's command is the process that executes the command's script (the channel agent's
``/tmp/.qppsuite/script``, or /init's ``/etc/qppsuite/cmd`` or ``/etc/qppsuite/workload.sh`` in a run
that boots; see qppsuite/images/guest/agent.sh and init.sh), from that execve on, and every process
created by one of the command's: the child of a fork or clone the command's process made (known by that
call, since the child may first run after its parent exited, reparented to init, and a child forked
before its parent ran the script is not the command's), or, for a process first seen otherwise, one whose
parent (its ppid at its first sight) is the command's.  Everything else is not: the boot, the agent and
its file transfers (``--file``, ``--copy-out``), and processes left running by an earlier command (a named
snapshot's).

A process is decided at its first sight and changes only once, at the execve that makes it the command;
a process is its ``(pid, start_time)``, so a reused pid is another process.  The logger feeds
:meth:`CommandProcesses.at_call` every call it sees, which costs a set and a dict look-up per call, and
one more for a fork or an execve.
"""

from __future__ import annotations

from typing import Any

from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls.context import SyscallContext
from qppsuite.plugins.syscalls.pairing import FORK_CALLS

COMMAND_SCRIPTS = frozenset({"/tmp/.qppsuite/script", "/etc/qppsuite/cmd", "/etc/qppsuite/workload.sh"})
"""The scripts the guest runs the user's command from: an ``execve`` naming one in its ``argv`` starts it."""
EXECS = frozenset({"execve", "execveat"})


class CommandProcesses:
    """The command's processes of one run, decided call by call (see the module)."""

    def __init__(self) -> None:
        self._kept: set[tuple[int, int]] = set()  # (pid, start_time) of the command's processes
        self._latest: dict[int, tuple[int, int]] = {}  # pid -> (pid, start_time) of the latest process seen with it
        self._forks: dict[int, bool] = {}  # seq of a fork or clone call whose child has not returned -> its maker's

    def at_call(self, ctx: SyscallContext, proc: OsiProcess, decoded: Any) -> bool:
        """Whether ``proc``, making ``ctx`` (or returning from it, as a fork's child), is the command's.

        ``decoded``: the call's decoded arguments (an execve's ``argv`` names the script), ``()`` for a child's
        return.  An execve of the script makes its caller the command's from this call on."""
        key = (proc.pid, proc.start_time)
        kept = key in self._kept
        made_by_kept = self._forks.pop(ctx.parent_seq, None) if ctx.child and ctx.parent_seq is not None else None
        if not kept:
            if self._latest.get(proc.pid) != key:  # first sight: the command's if its maker (else its parent) is
                self._latest[proc.pid] = key
                if made_by_kept is None:
                    made_by_kept = self._latest.get(proc.ppid) in self._kept
            if made_by_kept or (ctx.name in EXECS and _runs_script(decoded)):
                self._kept.add(key)
                kept = True
        if not ctx.child and ctx.name in FORK_CALLS:
            self._forks[ctx.seq] = kept
        return kept

    def of(self, proc: OsiProcess) -> int:
        """1 if ``proc`` is the command's, else 0, as far as is known before the logger sees its next call (for a
        row another plugin creates first): a process seen already is as decided then, one not seen yet is the
        command's if its parent is."""
        key = (proc.pid, proc.start_time)
        if key in self._kept or self._latest.get(proc.pid) == key:
            return int(key in self._kept)
        return int(self._latest.get(proc.ppid) in self._kept)


def _runs_script(decoded: Any) -> bool:
    """Whether an execve's decoded arguments name one of :data:`COMMAND_SCRIPTS` in its ``argv``."""
    argv = next((a.value for a in decoded if a.name == "argv"), None)
    return isinstance(argv, list) and not COMMAND_SCRIPTS.isdisjoint(a for a in argv if isinstance(a, str))
