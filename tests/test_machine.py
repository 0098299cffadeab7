"""The machine on bare code: the engine-bug workarounds and the run loop's stops."""

import gc
import struct
import weakref

import pytest
from unicorn import arm_const as A

from qppsuite.core.board import RAM_BASE
from qppsuite.core.kernel import KernelImage
from qppsuite.core.machine import Machine, MachineConfig


def thumb(*halfwords: int) -> bytes:
    return b"".join(struct.pack("<H", h) for h in halfwords)


def arm(*words: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in words)


def bare_machine(code: bytes, max_insns: int) -> Machine:
    """A machine whose 'kernel' is ``code``, entered in SVC mode with the MMU off."""
    image = KernelImage(code + b"\0" * 64, "Image", False)
    return Machine(MachineConfig(kernel=image, max_insns=max_insns))


def test_it_state_does_not_leak_after_a_tlb_fill() -> None:
    """docs/engine.md, "The IT-state leak": the reproducer, on the machine as it runs (its own MMU fills the TLB).

    With the virtual TLB and a Python fill hook, the block after the IT block ran
    as if still inside it, and r5..r7 stayed 0; the engine's own fill does not
    restore the IT state, and this keeps it so.
    """
    code = arm(
        0xE3A02101,  # mov r2, #0x40000000
        0xE2822601,  # add r2, r2, #0x100000   (a data page no TLB entry covers yet)
        0xE28F0001,  # add r0, pc, #1           (Thumb code follows the bx)
        0xE12FFF10,  # bx r0
    ) + thumb(
        0x2000,  # movs r0, #0
        0x2801,  # cmp r0, #1
        0xBF91,  # iteee ls
        0x6811,  # ldrls r1, [r2]      <- the TLB fill happens here
        0x2303,  # movhi r3, #3
        0x2303,  # movhi r3, #3
        0x2303,  # movhi r3, #3
        0xE7FF,  # b next
        0x2404,  # next: movs r4, #4
        0x2505,  # movs r5, #5
        0x2606,  # movs r6, #6
        0x2707,  # movs r7, #7
        0xE7FE,  # b .
    )
    machine = bare_machine(code, max_insns=40)
    reason = machine.run()
    assert reason.kind == "max_insns"
    assert machine.engine.reg(A.UC_ARM_REG_R2) == RAM_BASE + 0x100000
    assert [machine.engine.reg(getattr(A, f"UC_ARM_REG_R{i}")) for i in (4, 5, 6, 7)] == [4, 5, 6, 7]


def test_instruction_budget_is_exact() -> None:
    machine = bare_machine(arm(0xE2800001, 0xEAFFFFFD), max_insns=1001)  # add r0,#1 ; b .-4
    reason = machine.run()
    assert reason.kind == "max_insns" and not reason.ok
    assert machine.insn_count == 1001
    assert machine.engine.reg(A.UC_ARM_REG_R0) == 501


def test_wfi_with_nothing_to_wake_it_is_a_hang() -> None:
    machine = bare_machine(arm(0xE320F003, 0xEAFFFFFE), max_insns=10_000)  # wfi ; b .
    reason = machine.run()
    assert reason.kind == "hang"
    assert "idle" in reason.message


def test_undefined_instruction_then_unmapped_vector_is_a_stuck_hang() -> None:
    """UDF takes the Undefined entry at VBAR+4; nothing is mapped there, so the fetch aborts forever.

    The machine must report that as a hang instead of spinning without executing.
    """
    machine = bare_machine(arm(0xE7F000F0), max_insns=1000)  # udf #0
    events: list[tuple[str, int]] = []
    machine.events.on_exception = lambda event: events.append((event.kind.name, event.pc))
    reason = machine.run()
    assert events[0] == ("UNDEFINED", RAM_BASE + 0x8000)
    assert events[1] == ("PREFETCH_ABORT", 0x4)  # the undefined vector: an external abort on fetch
    assert all(kind == "PREFETCH_ABORT" for kind, _ in events[1:])
    assert reason.kind == "hang" and "stuck" in reason.message


def test_an_exception_inside_an_engine_hook_surfaces_from_run() -> None:
    """C cannot carry a Python exception: the engine stops and re-raises it, nothing is swallowed."""
    machine = bare_machine(arm(0xEF000000, 0xEAFFFFFE), max_insns=100)  # svc #0 ; b .

    def broken(**_kwargs: object) -> None:
        raise RuntimeError("listener bug")

    machine.events.on_svc = broken
    with pytest.raises(RuntimeError, match="listener bug"):
        machine.run()


def test_a_removed_hook_is_released_once_the_engine_has_freed_it() -> None:
    """A plugin that adds and removes hooks as the guest goes (syscalls' return hooks) must not keep
    every callback it ever installed: the engine frees a deleted hook when its run ends, and then so
    does the machine.  Before, each one stayed reachable from the engine until the run was over."""
    machine = bare_machine(arm(0xE2800001, 0xEAFFFFFD), max_insns=100)  # add r0,#1 ; b .-4
    entry = RAM_BASE + 0x8000

    def on_entry(_pc: int) -> None:
        pass

    released = weakref.ref(on_entry)
    handle = machine.add_entry_hook(entry, on_entry)
    del on_entry
    machine.remove_hook(handle)
    assert machine.run().kind == "max_insns"
    gc.collect()
    assert released() is None



@pytest.mark.parametrize("masked_iterations", [10, 1000, 5000])
def test_a_pending_irq_is_taken_at_the_first_unmasking_however_far_from_where_the_cpu_last_stopped(
    masked_iterations: int,
) -> None:
    """A CPU takes a pending IRQ at the instruction after the one that clears CPSR.I (ARM ARM B1.8,
    asynchronous exception masking); the machine takes it at that block boundary, since the unmasking ends
    its block.

    Since Linux 6.2 the idle loop unmasks only in default_idle_call() (kernel/sched/idle.c), hundreds of
    instructions after the WFI, not right after it in arch_cpu_idle() as 6.1 did.  The machine used to run
    48 short quanta after every stop with an IRQ pending and masked, then one of 1024 instructions: the WFI
    ended every long quantum, so the unmasking fell inside one every time, the timer IRQ was never taken,
    and trixie's `sleep 0.1` never returned (issue 12).  Here the unmasking is ``masked_iterations`` blocks
    after the start; before the fix, the IRQ was never taken in the 1000- and 5000-iteration cases.
    """
    code = arm(
        0xE3001000 | (masked_iterations & 0xFFF) | (masked_iterations >> 12) << 16,  # loop: movw r1, #n
        0xE2511001,  # spin: subs r1, r1, #1
        0x1AFFFFFD,  # bne spin
        0xF1080080,  # cpsie i
        0xE320F000,  # nop          <- the IRQ is taken before this
        0xF10C0080,  # cpsid i
        0xEAFFFFF9,  # b loop
    )
    machine = bare_machine(code, max_insns=20 * masked_iterations + 1000)
    irqs: list[tuple[int, int]] = []
    machine.events.on_exception = (
        lambda event: irqs.append((event.pc, event.insn_count)) if event.kind.name == "IRQ" else None
    )
    machine.irq_line = True  # an interrupt is pending from the start; the CPU starts with IRQs masked
    machine.run()
    assert irqs[:1] == [(RAM_BASE + 0x8000 + 16, 1 + 2 * masked_iterations + 1)]  # mov, the spin, cpsie


def _loop_trace() -> list[tuple[int, bool]]:
    """What the Thumb loop of test_engine_facts executes, entered from ARM code: (address, whether its
    condition passes), in order; the last one is where the run ends, after the wfi."""
    base = RAM_BASE + 0x8000
    thumb_at = base + 8
    cmp, ite, addgt, addle, subs, bne = (thumb_at + 2 + 2 * i for i in range(6))
    trace = [(base, True), (base + 4, True), (thumb_at, True)]
    for r0 in range(100, 0, -1):
        trace += [(cmp, True), (ite, True), (addgt, r0 > 50), (addle, r0 <= 50), (subs, True), (bne, True)]
    return [*trace, (thumb_at + 14, True), (thumb_at + 16, True)]


@pytest.mark.parametrize("max_insns", [1, 3, 5, 6, 9, 10, 11, 100, 301, 603])
@pytest.mark.parametrize("quantum", [1, 4_000_000], ids=["stepping", "blocks"])
def test_the_instruction_count_is_exact_against_the_instructions_executed(max_insns: int, quantum: int) -> None:
    """docs/engine.md, "Time": runs count what executed, IT blocks included (an instruction whose condition
    fails counts), and stop exactly at --max-insns, except that no stop lands inside an IT block: it ends
    after the block's instructions."""
    from test_engine_facts import THUMB_LOOP

    code = arm(0xE28F0001, 0xE12FFF10) + THUMB_LOOP  # add r0, pc, #1 ; bx r0
    machine = bare_machine(code, max_insns=max_insns)
    machine.config.quantum = quantum
    hooked: list[int] = []
    machine.engine.hook_code(lambda address, _size: hooked.append(address))  # those whose condition passes
    assert machine.run().kind == "max_insns"
    trace = _loop_trace()
    in_it_block = {RAM_BASE + 0x8000 + 8 + 2 * i for i in (3, 4)}  # addgt, addle
    expected = max_insns
    while trace[expected][0] in in_it_block:
        expected += 1
    assert machine.insn_count == expected
    assert machine.cpu.pc == trace[expected][0]
    if quantum != 1:  # a step's limit is itself a code hook: it sees the next instruction before stopping
        assert hooked == [address for address, passes in trace[:expected] if passes]
