"""Pairing a system call's return with its call, as PANDA's syscalls2 does.

A call is keyed on (address space, thread, return pc): TTBR0, the base of the
calling thread's kernel stack, and the instruction after the SVC.  A blocked
call waits in its thread's stack of pending calls while other threads run and
make calls of their own, so a ``read`` on a pipe, a ``wait4`` or a ``nanosleep``
pairs with its own return however many context switches happen in between.
Signal handlers nest calls on one thread, hence a stack rather than one slot.

Calls that do not come back are found out rather than leaked: exit and
exit_group by their table entry; a successful execve when the same thread next
makes a call from a different address space; a call the kernel restarted when
the same thread re-issues it from the same pc with the same user stack.

The child of fork, vfork or clone first returns at the parent's return pc on a
thread (and, without CLONE_VM, an address space) with no such pending call; it
is paired with the oldest fork-like call at that pc whose child has not been
seen yet, and returns 0.

This module is pure bookkeeping so that it can be tested with synthetic events;
the plugin feeds it registers read from the machine.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass

from qppsuite.plugins.syscalls.context import (
    ENDING_EXEC,
    ENDING_EXIT,
    ENDING_LOST,
    ENDING_PENDING,
    ENDING_RESTARTED,
    SyscallContext,
)

FORK_CALLS = frozenset({"fork", "vfork", "clone", "clone3"})
THREAD_EXIT_CALLS = frozenset({"exit", "exit_group"})
CLONE_VM = 0x00000100

#: Deeper nesting than this on one thread means entries were orphaned; the oldest go.
MAX_DEPTH = 16
#: Fork-like calls whose child never showed up (killed before it ran) are forgotten after this many.
MAX_UNSEEN_CHILDREN = 256


@dataclass(frozen=True, slots=True)
class Return:
    """A matched return: the call (or the fork child's context) and the calls it proved lost."""

    ctx: SyscallContext
    retval: int
    ended: list[SyscallContext]


def _signed(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def _end(ctx: SyscallContext, ending: str) -> SyscallContext:
    ctx.noreturn = True
    ctx.ending = ending
    return ctx


class ReturnPairing:
    """Pending calls per thread, fork-like calls awaiting their child, and the sequence counter."""

    def __init__(self) -> None:
        self.pending: dict[int, list[SyscallContext]] = {}
        self.unseen_children: list[SyscallContext] = []
        #: Return pc -> number of entries that could match there; a return hook with none does nothing.
        self.waiting: Counter[int] = Counter()
        self._seq = itertools.count(1)

    def next_seq(self) -> int:
        """Sequence numbers in call order (fork children get theirs at their first return)."""
        return next(self._seq)

    def call(self, ctx: SyscallContext) -> list[SyscallContext]:
        """Record a call; returns earlier calls of the same thread now known never to return.

        A call whose table entry says it never returns is marked (``noreturn``,
        ``ending``) and not recorded; exit and exit_group also end every call
        still pending on their thread.
        """
        ended: list[SyscallContext] = []
        stack = self.pending.get(ctx.thread)
        if stack:
            kept: list[SyscallContext] = []
            for old in stack:
                if old.asid != ctx.asid:
                    execed = old.spec is not None and old.spec.noreturn_on_success
                    ended.append(_end(old, ENDING_EXEC if execed else ENDING_LOST))
                elif old.return_pc == ctx.return_pc and old.user_sp == ctx.user_sp and old.number == ctx.number:
                    ended.append(_end(old, ENDING_RESTARTED))
                else:
                    kept.append(old)
            if ended:
                for old in ended:
                    self._forget(old)
                stack[:] = kept
        spec = ctx.spec
        if spec is not None and spec.noreturn:
            _end(ctx, ENDING_EXIT)
            if ctx.name in THREAD_EXIT_CALLS:
                for old in self.pending.pop(ctx.thread, ()):
                    ended.append(_end(old, ENDING_LOST))
                    self._forget(old)
            return ended
        if stack is None:
            stack = self.pending[ctx.thread] = []
        stack.append(ctx)
        self.waiting[ctx.return_pc] += 1
        if len(stack) > MAX_DEPTH:
            oldest = stack.pop(0)
            ended.append(_end(oldest, ENDING_LOST))
            self._forget(oldest)
        if ctx.name in FORK_CALLS:
            self.unseen_children.append(ctx)
            self.waiting[ctx.return_pc] += 1
            if len(self.unseen_children) > MAX_UNSEEN_CHILDREN:
                self._drop_child(self.unseen_children[0])
        return ended

    def returned(self, pc: int, asid: int, thread: int, r0: int) -> Return | None:
        """The call that user mode at ``pc`` (in ``asid`` on ``thread``, with ``r0``) returns from, if any."""
        stack = self.pending.get(thread)
        if stack:
            for i in range(len(stack) - 1, -1, -1):
                ctx = stack[i]
                if ctx.return_pc == pc and ctx.asid == asid:
                    ended = [_end(lost, ENDING_LOST) for lost in stack[i + 1 :]]
                    del stack[i:]
                    if not stack:
                        del self.pending[thread]
                    for lost in ended:
                        self._forget(lost)
                    self._unwait(pc)
                    retval = _signed(r0)
                    if retval < 0 and ctx.name in FORK_CALLS and ctx in self.unseen_children:
                        self._drop_child(ctx)
                    return Return(ctx, retval, ended)
        if r0 == 0:
            for parent in self.unseen_children:
                if parent.return_pc == pc and parent.thread != thread and self._child_asid_fits(parent, asid):
                    self._drop_child(parent)
                    child = dataclasses.replace(
                        parent,
                        seq=self.next_seq(),
                        asid=asid,
                        thread=thread,
                        child=True,
                        parent_seq=parent.seq,
                        _decoded=None,
                        _result=None,
                    )
                    return Return(child, 0, [])
        return None

    def drain(self) -> list[SyscallContext]:
        """Every call still pending (the run is ending), marked as such, in call order."""
        left = sorted((ctx for stack in self.pending.values() for ctx in stack), key=lambda c: c.seq)
        self.pending.clear()
        self.unseen_children.clear()
        self.waiting.clear()
        return [_end(ctx, ENDING_PENDING) for ctx in left]

    @staticmethod
    def _child_asid_fits(parent: SyscallContext, asid: int) -> bool:
        """A child shares its parent's address space exactly when it was created with CLONE_VM."""
        if parent.name == "vfork":
            return asid == parent.asid
        if parent.name == "fork":
            return asid != parent.asid
        if parent.name == "clone":
            return (asid == parent.asid) == bool(parent.raw_args[0] & CLONE_VM)
        return True  # clone3 keeps its flags in memory; any address space may be the child's

    def _forget(self, ctx: SyscallContext) -> None:
        """An ended call no longer waits at its pc (its child may still come)."""
        self._unwait(ctx.return_pc)

    def _drop_child(self, parent: SyscallContext) -> None:
        self.unseen_children.remove(parent)
        self._unwait(parent.return_pc)

    def _unwait(self, pc: int) -> None:
        left = self.waiting[pc] - 1
        if left > 0:
            self.waiting[pc] = left
        else:
            del self.waiting[pc]
