"""What a system call looks like to the plugins that watch it.

One :class:`SyscallContext` is built per call, only when some plugin listens,
and the same object is handed to the call and to its return callbacks so a
listener can keep per-call state keyed on it (or on ``seq``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from qppsuite.plugins.syscalls.decode import (
    DecodedArg,
    DecodedReturn,
    GuestReader,
    decode_args,
    decode_return,
    errno_name,
)
from qppsuite.plugins.syscalls.table import SyscallSpec
from qppsuite.plugins.syscalls.values import JSONValue, signed32


class AddressSpaceMemory(Protocol):
    """Reads of guest virtual memory through a chosen TTBR0 (``qppsuite.core.memory``'s virtual memory)."""

    def read(self, vaddr: int, size: int, *, ttbr0: int | None = None) -> bytes: ...  # raises GuestMemoryError

    def read_cstring(self, vaddr: int, limit: int = 4096, *, ttbr0: int | None = None) -> bytes: ...


#: Why a call has no return record (``SyscallContext.ending``).
ENDING_EXIT = "exit"  # exit, exit_group, sigreturn: never come back by design
ENDING_EXEC = "exec"  # execve succeeded: the thread now runs another image
ENDING_RESTARTED = "restarted"  # interrupted and re-issued by the kernel (same pc, same stack)
ENDING_LOST = "lost"  # the thread went on without returning to this call (killed, stack reused)
ENDING_KILLED = "killed"  # the thread died while the call was blocked (a signal, or its process exited)
ENDING_PENDING = "pending"  # still blocked when the run ended


def _unreadable(value: JSONValue) -> bool:
    """True if a decoded value holds a bad-address marker (``{"error": ...}``) anywhere."""
    if isinstance(value, dict):
        return "error" in value or any(_unreadable(v) for v in value.values())
    if isinstance(value, list):
        return any(_unreadable(v) for v in value)
    return False


def _any_unreadable(args: list[DecodedArg]) -> bool:
    """:func:`_unreadable` over a call's arguments, on every return: most are numbers, skipped at once."""
    for arg in args:
        value = arg.value
        if (type(value) is dict or type(value) is list) and _unreadable(value):
            return True
    return False


class AddressSpace:
    """A :class:`GuestReader` of one address space (TTBR0 ``ttbr0``) whatever the CPU runs: a call found
    blocked in another process is decoded through that process's page tables."""

    def __init__(self, memory: AddressSpaceMemory, ttbr0: int) -> None:
        self._memory = memory
        self.ttbr0 = ttbr0

    def read(self, vaddr: int, size: int) -> bytes:
        return self._memory.read(vaddr, size, ttbr0=self.ttbr0)

    def read_cstring(self, vaddr: int, limit: int) -> bytes:
        return self._memory.read_cstring(vaddr, limit, ttbr0=self.ttbr0)


@dataclass(frozen=True)
class Limits:
    """Bounds on what is read from guest memory per argument (the plugin's ``*_limit`` arguments)."""

    string_limit: int = 256
    buf_limit: int = 64
    array_limit: int = 32


@dataclass(eq=False, slots=True)
class SyscallContext:
    """One system call as it was made, and how it ended.

    ``asid`` is TTBR0 and ``thread`` the base of the calling thread's kernel stack
    (each thread has its own), which together with ``return_pc`` pair a return with
    its call.  ``raw_args`` are r0-r6 at the call.  Decoding reads guest memory, so
    it happens on first use of :meth:`decoded`, which a listener must do inside
    ``on_syscall`` (by the return the buffers, or after an execve the whole address
    space, may have changed); :meth:`result` is for ``on_syscall_return``.

    ``retval`` is set (signed) once the call has returned; also, as strace reports them, for a
    successful execve (0, returned to the new image) and for sigreturn and rt_sigreturn (the
    restored r0), which do not come back to ``return_pc``.  ``signal`` names the signal that
    killed the thread for ``ending`` ``killed``, when one did.  ``noreturn`` is set once
    the call is known never to return to ``return_pc``, with ``ending`` saying why
    (``ENDING_*``).  ``child`` marks the context a fork,
    vfork or clone child sees when it first returns (``retval`` 0): it shares the
    parent's call fields and number, has the child's ``asid``/``thread``, its own
    ``seq``, and ``parent_seq`` names the parent's call.

    ``task`` is set (the caller's ``task_struct``) only for a call made before the plugin started,
    which its thread was found blocked in when it did (:attr:`found_blocked`): the caller is then
    that task, not ``current``, and ``insn_count`` is the instruction count at the start.
    """

    seq: int
    insn_count: int
    pc: int
    thumb: bool
    number: int
    name: str
    spec: SyscallSpec | None
    raw_args: tuple[int, ...]
    asid: int
    thread: int
    user_sp: int
    memory: GuestReader = field(repr=False)
    limits: Limits = field(repr=False)
    retval: int | None = None
    noreturn: bool = False
    ending: str | None = None
    child: bool = False
    parent_seq: int | None = None
    signal: str | None = None
    task: int | None = None
    _decoded: list[DecodedArg] | None = field(default=None, repr=False)
    _result: DecodedReturn | None = field(default=None, repr=False)

    @property
    def found_blocked(self) -> bool:
        """The call was made before the plugin started: found, from kernel memory, blocked in it then."""
        return self.task is not None

    @property
    def return_pc(self) -> int:
        """Where user mode resumes after the call: the instruction after the SVC."""
        return self.pc + (2 if self.thumb else 4)

    def decoded(self) -> Sequence[DecodedArg]:
        """The arguments as the call began, decoded once from guest memory on first use."""
        if self._decoded is None:
            if self.spec is None:
                # A call the table does not know: its registers as signed numbers.
                self._decoded = [
                    DecodedArg(f"arg{i}", "long", raw, signed32(raw)) for i, raw in enumerate(self.raw_args)
                ]
            else:
                self._decoded = self._decode_args(self.spec)
        return self._decoded

    def _decode_args(self, spec: SyscallSpec) -> list[DecodedArg]:
        limits = self.limits
        return decode_args(
            spec,
            self.raw_args,
            self.memory,
            string_limit=limits.string_limit,
            buf_limit=limits.buf_limit,
            array_limit=limits.array_limit,
        )

    def reread_unreadable(self) -> None:
        """Decode again, now, the arguments that were unreadable when the call began.

        A string in a page the process has not touched yet (busybox's rodata after exec, a
        shell's freshly built path) is not mapped at the call; the kernel faults it in to
        read it, so at the return it can be read.  The syscalls plugin calls this as the
        call returns; arguments that were read at the call are left as they were.
        """
        if self._decoded is None or self.spec is None or not _any_unreadable(self._decoded):
            return
        again = {a.name: a for a in self._decode_args(self.spec)}
        self._decoded = [again.get(a.name, a) if _unreadable(a.value) else a for a in self._decoded]

    def result(self, retval: int) -> DecodedReturn:
        """The return value decoded (errno name, output buffers); call it in ``on_syscall_return``."""
        if self._result is None:
            if self.spec is None:
                # The kernel answers a number it does not know with -ENOSYS (arch/arm/kernel/entry-common.S).
                value = signed32(retval)
                self._result = DecodedReturn(value, errno_name(value))
            else:
                limits = self.limits
                self._result = decode_return(
                    self.spec,
                    retval,
                    self.raw_args,
                    self.memory,
                    string_limit=limits.string_limit,
                    buf_limit=limits.buf_limit,
                    array_limit=limits.array_limit,
                )
        return self._result
