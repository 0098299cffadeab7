"""Return pairing with synthetic calls: blocking across other threads, nesting, restart, exec, fork children."""

from collections.abc import Callable

import pytest

from qppsuite.core.memory import GuestMemoryError
from qppsuite.plugins.syscalls.context import Limits, SyscallContext
from qppsuite.plugins.syscalls.pairing import CLONE_VM, Return, ReturnPairing
from qppsuite.plugins.syscalls.table import by_name

ASID_A = 0x4180806A
ASID_B = 0x41C0406A
THREAD_1 = 0xD0810000
THREAD_2 = 0xD0928000
PC = 0x76F0A1C0  # the SVC in a libc wrapper; the return pc is PC + 4


class NoMemory:
    """Pairing never reads guest memory; a read here would be a bug."""

    def read(self, vaddr: int, size: int) -> bytes:
        raise GuestMemoryError(vaddr)

    def read_cstring(self, vaddr: int, limit: int) -> bytes:
        raise GuestMemoryError(vaddr)


def call(
    pairing: ReturnPairing,
    name: str,
    *,
    asid: int = ASID_A,
    thread: int = THREAD_1,
    pc: int = PC,
    sp: int = 0xBEC3A800,
    args: tuple[int, ...] = (0,) * 7,
) -> tuple[SyscallContext, list[SyscallContext]]:
    spec = by_name(name)
    ctx = SyscallContext(
        seq=pairing.next_seq(),
        insn_count=0,
        pc=pc,
        thumb=False,
        number=spec.number,
        name=name,
        spec=spec,
        raw_args=args,
        asid=asid,
        thread=thread,
        user_sp=sp,
        memory=NoMemory(),
        limits=Limits(),
    )
    return ctx, pairing.call(ctx)


def ret(
    pairing: ReturnPairing,
    pc: int,
    asid: int,
    thread: int,
    r0: int,
    read_u32: Callable[[int], int | None] | None = None,
    *,
    sp: int = 0xBEC3A800,
) -> Return | None:
    return pairing.returned(pc, asid, thread, r0, sp, read_u32)


@pytest.fixture
def pairing() -> ReturnPairing:
    return ReturnPairing()


def test_blocking_call_pairs_across_other_threads_calls(pairing: ReturnPairing) -> None:
    blocked, _ = call(pairing, "read", thread=THREAD_1)
    for _ in range(3):  # another process runs and makes calls at the same pc while read blocks
        other, _ = call(pairing, "write", asid=ASID_B, thread=THREAD_2)
        matched = ret(pairing, PC + 4, ASID_B, THREAD_2, 5)
        assert matched is not None and matched.ctx is other and matched.retval == 5
    assert ret(pairing, PC + 4, ASID_A, THREAD_2, 1) is None  # right pc and asid, wrong thread
    matched = ret(pairing, PC + 4, ASID_A, THREAD_1, 0xFFFFFFFC)
    assert matched is not None and matched.ctx is blocked
    assert matched.retval == -4  # signed
    assert not pairing.pending and not pairing.waiting


def test_signal_handler_nesting_pairs_inner_then_outer(pairing: ReturnPairing) -> None:
    outer, _ = call(pairing, "read", sp=0xBEC3A800)
    inner, ended = call(pairing, "read", sp=0xBEC3A400)  # handler frame lies below on the stack
    assert ended == []
    first = ret(pairing, PC + 4, ASID_A, THREAD_1, 3, sp=0xBEC3A400)
    second = ret(pairing, PC + 4, ASID_A, THREAD_1, 0xFFFFFFFC, sp=0xBEC3A800)
    assert first is not None and first.ctx is inner
    assert second is not None and second.ctx is outer and second.retval == -4


def test_restarted_call_is_ended_and_the_reissue_pairs(pairing: ReturnPairing) -> None:
    first, _ = call(pairing, "wait4")
    again, ended = call(pairing, "wait4")  # the kernel rewound pc to the SVC: same pc, same sp
    assert ended == [first] and first.ending == "restarted" and first.noreturn
    matched = ret(pairing, PC + 4, ASID_A, THREAD_1, 42)
    assert matched is not None and matched.ctx is again
    assert not pairing.waiting


def test_successful_execve_is_found_at_the_threads_next_call(pairing: ReturnPairing) -> None:
    execve, _ = call(pairing, "execve", asid=ASID_A)
    assert not execve.noreturn
    _, ended = call(pairing, "brk", asid=ASID_B, pc=0x76F00000)  # same thread, new image
    assert ended == [execve] and execve.ending == "exec"
    assert ret(pairing, PC + 4, ASID_A, THREAD_1, 0) is None


def test_failed_execve_returns(pairing: ReturnPairing) -> None:
    execve, _ = call(pairing, "execve")
    matched = ret(pairing, PC + 4, ASID_A, THREAD_1, 0xFFFFFFFE)
    assert matched is not None and matched.ctx is execve and matched.retval == -2
    assert not execve.noreturn


def test_exit_group_is_noreturn_and_ends_the_threads_pending_calls(pairing: ReturnPairing) -> None:
    stuck, _ = call(pairing, "read", sp=0xBEC3A800)
    exit_ctx, ended = call(pairing, "exit_group", sp=0xBEC3A000, pc=PC + 0x100)
    assert exit_ctx.noreturn and exit_ctx.ending == "exit"
    assert ended == [stuck] and stuck.ending == "lost"
    assert not pairing.pending and not pairing.waiting


def test_fork_child_returns_zero_in_its_own_address_space(pairing: ReturnPairing) -> None:
    parent, _ = call(pairing, "clone", args=(0x01200011, 0, 0, 0, 0, 0, 0))  # glibc fork(): no CLONE_VM
    done = ret(pairing, PC + 4, ASID_A, THREAD_1, 80)
    assert done is not None and done.ctx is parent and done.retval == 80
    assert ret(pairing, PC + 4, ASID_A, THREAD_2, 0) is None  # a same-asid child needs CLONE_VM
    child = ret(pairing, PC + 4, ASID_B, THREAD_2, 0)
    assert child is not None and child.retval == 0
    assert child.ctx.child and child.ctx.parent_seq == parent.seq and child.ctx.seq != parent.seq
    assert (child.ctx.asid, child.ctx.thread, child.ctx.name) == (ASID_B, THREAD_2, "clone")
    assert ret(pairing, PC + 4, ASID_B, THREAD_2, 0) is None  # one child per call
    assert not pairing.waiting


def test_vfork_child_returns_before_its_blocked_parent(pairing: ReturnPairing) -> None:
    parent, _ = call(pairing, "vfork")
    child = ret(pairing, PC + 4, ASID_A, THREAD_2, 0)  # shares the parent's mm until it execs
    assert child is not None and child.ctx.child and child.ctx.parent_seq == parent.seq
    done = ret(pairing, PC + 4, ASID_A, THREAD_1, 81)
    assert done is not None and done.ctx is parent and done.retval == 81


def test_thread_clone_child_shares_the_address_space(pairing: ReturnPairing) -> None:
    call(pairing, "clone", args=(CLONE_VM | 0x7D0F00, 0, 0, 0, 0, 0, 0))
    assert ret(pairing, PC + 4, ASID_B, THREAD_2, 0) is None
    child = ret(pairing, PC + 4, ASID_A, THREAD_2, 0)
    assert child is not None and child.ctx.child


def test_failed_fork_expects_no_child(pairing: ReturnPairing) -> None:
    call(pairing, "fork")
    failed = ret(pairing, PC + 4, ASID_A, THREAD_1, 0xFFFFFFF5)  # -EAGAIN
    assert failed is not None and failed.retval == -11
    assert ret(pairing, PC + 4, ASID_B, THREAD_2, 0) is None
    assert not pairing.waiting


def test_drain_reports_blocked_calls_in_call_order(pairing: ReturnPairing) -> None:
    a, _ = call(pairing, "wait4", thread=THREAD_1)
    b, _ = call(pairing, "read", thread=THREAD_2, asid=ASID_B)
    assert pairing.drain() == [a, b]
    assert a.ending == b.ending == "pending"
    assert not pairing.pending and not pairing.waiting


def test_thumb_return_pc_is_two_bytes_on() -> None:
    ctx, _ = call(ReturnPairing(), "getpid")
    ctx.thumb = True
    assert ctx.return_pc == PC + 2


def test_pipeline_children_are_told_apart_by_the_tid_the_kernel_wrote(pairing: ReturnPairing) -> None:
    ctid = 0x922068
    flags = 0x01200011  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD: glibc's fork()
    parents = []
    for child_pid in (83, 84, 85):
        parent, _ = call(pairing, "clone", args=(flags, 0, 0, 0, ctid, 0, 0))
        assert ret(pairing, PC + 4, ASID_A, THREAD_1, child_pid) is not None
        parents.append(parent)
    seen = []
    for child_pid, thread in ((85, 0xD0A00000), (83, 0xD0A02000), (84, 0xD0A04000)):  # children run out of order
        memory = {ctid: child_pid}
        got = ret(pairing, PC + 4, 0x50000000 + child_pid, thread, 0, memory.get)
        assert got is not None and got.ctx.child
        seen.append((child_pid, got.ctx.parent_seq))
    assert seen == [(85, parents[2].seq), (83, parents[0].seq), (84, parents[1].seq)]
    assert not pairing.waiting


def test_a_return_resumed_again_after_a_fault_is_not_a_second_return(pairing: ReturnPairing) -> None:
    first, _ = call(pairing, "clone", args=(0x01200011, 0, 0, 0, 0x922068, 0, 0))
    assert ret(pairing, PC + 4, ASID_A, THREAD_1, 90) is not None
    second, _ = call(pairing, "clone", args=(0x01200011, 0, 0, 0, 0x922068, 0, 0))
    assert ret(pairing, PC + 4, ASID_A, THREAD_1, 91) is not None
    child = ret(pairing, PC + 4, ASID_B, THREAD_2, 0, {0x922068: 90}.get)
    assert child is not None and child.ctx.parent_seq == first.seq
    # The child's first instruction after the SVC faults (copy-on-write) and runs again: same pc, sp, r0.
    assert ret(pairing, PC + 4, ASID_B, THREAD_2, 0, {0x922068: 90}.get) is None
    assert second in pairing.unseen_children



def found(pairing: ReturnPairing, name: str, *, thread: int, pc: int = PC) -> SyscallContext:
    """A call made before tracing began, which syscalls finds its thread blocked in at the start."""
    spec = by_name(name)
    ctx = SyscallContext(
        seq=pairing.next_seq(), insn_count=0, pc=pc, thumb=False, number=spec.number, name=name, spec=spec,
        raw_args=(0,) * 7, asid=ASID_A, thread=thread, user_sp=0xBEC3A800, memory=NoMemory(), limits=Limits(),
        task=0xC1000000,
    )  # fmt: skip
    pairing.blocked(ctx)
    return ctx


def test_a_call_found_blocked_pairs_with_its_return_and_awaits_no_child(pairing: ReturnPairing) -> None:
    """A vfork parent found blocked at the start: its child ran before, so a 0 at its pc is no child of it."""
    read = found(pairing, "read", thread=THREAD_1)
    vfork = found(pairing, "vfork", thread=THREAD_2, pc=PC + 0x100)
    assert read.found_blocked and vfork.found_blocked
    assert ret(pairing, PC + 0x104, ASID_A, THREAD_1, 0) is None  # a 0 on another thread: no parent waits for it
    matched = ret(pairing, PC + 4, ASID_A, THREAD_1, 7)
    assert matched is not None and (matched.ctx, matched.retval) == (read, 7)
    matched = ret(pairing, PC + 0x104, ASID_A, THREAD_2, 300)
    assert matched is not None and (matched.ctx, matched.retval) == (vfork, 300)
    assert not pairing.pending and not pairing.waiting and not pairing.unseen_children
