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
the same thread re-issues it from the same pc with the same user stack; a
call blocked in a thread that dies, when the plugin is told of the death
(:meth:`ReturnPairing.thread_died`).

The child of fork, vfork or clone first returns at the parent's return pc on a
thread (and, without CLONE_VM, an address space) with no such pending call, and
returns 0.  When several fork-like calls at that pc await their child (a shell
starting a pipeline), the child is told apart by its tid: with
CLONE_CHILD_SETTID, as glibc's fork() uses, the kernel has written it to
``child_tidptr`` in the child's memory before the child runs, and it equals the
parent's return value.  Otherwise the oldest waiting call is taken.

The instruction at a return pc can run twice for one return: when it faults
(the child's first touch of a copy-on-write page) or an interrupt is taken
before it completes, user mode resumes at the same pc with the same registers.
The last return of each thread is remembered until its next call, and a repeat
(same address space, pc and user sp) is ignored; otherwise it could pass for a
second fork child.

This module is pure bookkeeping so that it can be tested with synthetic events;
the plugin feeds it registers read from the machine.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from qppsuite.plugins.syscalls.context import (
    ENDING_EXEC,
    ENDING_EXIT,
    ENDING_KILLED,
    ENDING_LOST,
    ENDING_PENDING,
    ENDING_RESTARTED,
    SyscallContext,
)
from qppsuite.plugins.syscalls.values import signed32

FORK_CALLS = frozenset({"fork", "vfork", "clone", "clone3"})
"""The calls that make a process or thread whose first return to user mode is from them (``ctx.child``)."""
THREAD_EXIT_CALLS = frozenset({"exit", "exit_group"})
CLONE_VM = 0x00000100
CLONE_CHILD_SETTID = 0x01000000
CLONE_CHILD_TIDPTR_ARG = 4
"""ARM's clone(flags, newsp, parent_tidptr, tls, child_tidptr): r4 holds the child's tid pointer."""

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


def _end(ctx: SyscallContext, ending: str) -> SyscallContext:
    ctx.noreturn = True
    ctx.ending = ending
    if ending == ENDING_EXEC:
        ctx.retval = 0  # what the new image sees in r0 (fs/exec.c start_thread leaves it 0)
    return ctx


class ReturnPairing:
    """Pending calls per thread, fork-like calls awaiting their child, and the sequence counter."""

    def __init__(self) -> None:
        self.pending: dict[int, list[SyscallContext]] = {}
        self.unseen_children: list[SyscallContext] = []
        #: Return pc -> number of entries that could match there; a return hook with none does nothing.
        self.waiting: Counter[int] = Counter()
        #: Thread -> (asid, pc, user sp) of its latest return, until its next call.
        self.last_return: dict[int, tuple[int, int, int]] = {}
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
        self.last_return.pop(ctx.thread, None)
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
                self.last_return.pop(ctx.thread, None)
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

    def blocked(self, ctx: SyscallContext) -> None:
        """Record a call its thread was already blocked in when tracing began: it pairs with its return as any
        call does.  A fork-like one awaits no child: its child exists already (a vfork parent waits for it)."""
        self.pending.setdefault(ctx.thread, []).append(ctx)
        self.waiting[ctx.return_pc] += 1

    def returned(
        self,
        pc: int,
        asid: int,
        thread: int,
        r0: int,
        user_sp: int,
        read_u32: Callable[[int], int | None] | None = None,
    ) -> Return | None:
        """The call that user mode at ``pc`` (in ``asid`` on ``thread``, with ``r0``, ``user_sp``) returns from.

        ``read_u32`` reads the returning context's memory (None where unmapped); it
        tells fork children apart and is only called for a possible child.
        """
        where = (asid, pc, user_sp)
        if self.last_return.get(thread) == where:
            return None  # the same return, resumed again after a fault or an interrupt
        matched = self._match(pc, asid, thread, r0, read_u32)
        if matched is not None:
            self.last_return[thread] = where
        return matched

    def _match(
        self, pc: int, asid: int, thread: int, r0: int, read_u32: Callable[[int], int | None] | None
    ) -> Return | None:
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
                    retval = ctx.retval = signed32(r0)
                    if retval < 0 and ctx.name in FORK_CALLS and ctx in self.unseen_children:
                        self._drop_child(ctx)
                    return Return(ctx, retval, ended)
        if r0 == 0 and self.waiting.get(pc):
            parent = self._parent_of_child(pc, asid, thread, read_u32)
            if parent is not None:
                self._drop_child(parent)
                child = dataclasses.replace(
                    parent,
                    seq=self.next_seq(),
                    asid=asid,
                    thread=thread,
                    child=True,
                    parent_seq=parent.seq,
                    retval=0,
                    _decoded=None,
                    _result=None,
                )
                return Return(child, 0, [])
        return None

    def _parent_of_child(
        self, pc: int, asid: int, thread: int, read_u32: Callable[[int], int | None] | None
    ) -> SyscallContext | None:
        candidates = [
            p
            for p in self.unseen_children
            if p.return_pc == pc and p.thread != thread and self._child_asid_fits(p, asid)
        ]
        if len(candidates) <= 1 or read_u32 is None:
            return candidates[0] if candidates else None
        tids: dict[int, int | None] = {}
        for parent in candidates:
            if parent.name != "clone" or not parent.raw_args[0] & CLONE_CHILD_SETTID:
                continue
            address = parent.raw_args[CLONE_CHILD_TIDPTR_ARG]
            if address not in tids:
                tids[address] = read_u32(address)
            if tids[address] is not None and parent.retval == tids[address]:
                return parent
        # The child's parent has not returned yet (so its retval is unknown): the oldest such call.
        unreturned = [p for p in candidates if p.retval is None]
        return (unreturned or candidates)[0]

    def thread_died(self, thread: int, signal: str | None) -> list[SyscallContext]:
        """The thread whose kernel stack is at ``thread`` is exiting: its pending calls end ``killed``."""
        self.last_return.pop(thread, None)
        ended = []
        for ctx in self.pending.pop(thread, ()):
            ended.append(_end(ctx, ENDING_KILLED))
            ctx.signal = signal
            self._forget(ctx)
        return ended

    def drain(self) -> list[SyscallContext]:
        """Every call still pending (the run is ending), marked as such, in call order."""
        left = sorted((ctx for stack in self.pending.values() for ctx in stack), key=lambda c: c.seq)
        self.pending.clear()
        self.last_return.clear()
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
