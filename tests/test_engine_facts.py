"""Reproducers of the Unicorn 2.1.4 behaviour the core relies on (docs/engine.md), each on bare code.

Each test sets up the engine the way :class:`qppsuite.core.engine.Engine` does
(4 KiB pages, Cortex-A15, the engine's own MMU) and checks one fact.  If a
Unicorn upgrade changes one of them, its test fails here, not deep in a boot.
"""

import struct
from collections.abc import Iterator

import pytest
from unicorn import arm_const as A
from unicorn import unicorn_const as U

from qppsuite.core.engine import EXCP_DATA_ABORT, EXCP_PREFETCH_ABORT, EXCP_SWI, Engine

CODE = 0x1000
TABLE = 0x4000  # L1 table, 16 KiB aligned
DATA_SECTION = 0x00100000
UNMAPPED = 0x12345678


def arm(*words: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in words)


@pytest.fixture
def engine() -> Iterator[Engine]:
    """An engine with 2 MiB of RAM at 0, flat-mapped by two sections, the MMU on, every domain manager."""
    e = Engine()
    e.uc.mem_map(0, 0x200000)
    e.uc.mem_write(TABLE, struct.pack("<II", 0x00000C02, DATA_SECTION | 0xC02))
    e.cp15("ttbr0", 2, 0, 0, 0).write(TABLE)
    e.cp15("ttbcr", 2, 0, 0, 2).write(0)
    e.cp15("dacr", 3, 0, 0, 0).write(0xFFFFFFFF)
    sctlr = e.cp15("sctlr", 1, 0, 0, 0)
    sctlr.write(sctlr.read() | 1)
    yield e


def run(engine: Engine, code: bytes, count: int = 20) -> list[tuple[int, int]]:
    """Run ``code`` at CODE; the (intno, pc) of each exception, the engine stopped at the first."""
    engine.uc.mem_write(CODE, code)
    seen: list[tuple[int, int]] = []

    def intr(intno: int) -> None:
        seen.append((intno, engine.reg(A.UC_ARM_REG_PC)))
        engine.uc.emu_stop()

    engine.hook_intr(intr)
    engine.run(CODE, count)
    return seen


def test_svc_reaches_the_interrupt_hook_with_the_pc_after_it(engine: Engine) -> None:
    assert run(engine, arm(0xE1A00000, 0xEF000000, 0xEAFFFFFE)) == [(EXCP_SWI, CODE + 8)]  # nop; svc 0; b .


def test_a_data_abort_arrives_at_the_faulting_instruction_without_dfsr_or_dfar(engine: Engine) -> None:
    """The engine's MMU raises the abort but never runs its own entry: DFSR/DFAR stay 0, the record has them."""
    engine.set_reg(A.UC_ARM_REG_R1, UNMAPPED)
    records: list[tuple[int, int]] = []
    engine.hook_intr(lambda _intno: records.append(engine.fault()))
    assert run(engine, arm(0xE1A00000, 0xE5910000, 0xEAFFFFFE)) == [(EXCP_DATA_ABORT, CODE + 4)]  # nop; ldr r0,[r1]
    assert records == [(0x005, UNMAPPED)]  # section translation fault, read
    assert engine.cp15("dfsr", 5, 0, 0, 0).read() == 0 and engine.cp15("dfar", 6, 0, 0, 0).read() == 0


def test_a_store_fault_sets_wnr_in_the_record(engine: Engine) -> None:
    engine.set_reg(A.UC_ARM_REG_R1, UNMAPPED)
    records: list[tuple[int, int]] = []
    engine.hook_intr(lambda _intno: records.append(engine.fault()))
    run(engine, arm(0xE5810000, 0xEAFFFFFE))  # str r0, [r1]
    assert records == [(0x805, UNMAPPED)]


def test_a_fetch_from_an_unmapped_section_is_a_prefetch_abort_at_its_address(engine: Engine) -> None:
    engine.set_reg(A.UC_ARM_REG_R0, UNMAPPED & ~3)
    records: list[tuple[int, int]] = []
    engine.hook_intr(lambda _intno: records.append(engine.fault()))
    assert run(engine, arm(0xE12FFF10)) == [(EXCP_PREFETCH_ABORT, UNMAPPED & ~3)]  # bx r0
    assert records == [(0x005, UNMAPPED & ~3)]


def test_dropping_code_of_an_address_the_cpu_cannot_fetch_inside_a_hook_raises_an_abort_the_guest_never_caused(
    engine: Engine,
) -> None:
    """Why the machine asks :meth:`Engine.translate` first and defers hook deletions to the end of a quantum."""
    engine.uc.mem_write(CODE, arm(*[0xE2800001] * 8, 0xEAFFFFFE))  # add r0, r0, #1 (x8); b .
    seen: list[int] = []
    engine.hook_intr(lambda intno: (seen.append(intno), engine.uc.emu_stop()))

    def inside(_pc: int, _size: int) -> None:
        engine.uc.ctl_remove_cache(UNMAPPED, UNMAPPED + 4)

    engine.hook_code(inside, CODE + 8, CODE + 8)
    engine.run(CODE, 20)
    assert seen == [EXCP_PREFETCH_ABORT]


def test_translate_is_a_probe_that_raises_nothing_even_inside_a_hook(engine: Engine) -> None:
    engine.uc.mem_write(CODE, arm(*[0xE2800001] * 8, 0xEAFFFFFE))
    seen: list[int] = []
    answers: list[int | None] = []
    engine.hook_intr(lambda intno: (seen.append(intno), engine.uc.emu_stop()))

    def inside(_pc: int, _size: int) -> None:
        answers.extend(engine.translate(a, U.UC_PROT_EXEC) for a in (UNMAPPED, DATA_SECTION + 0x10, CODE))

    engine.hook_code(inside, CODE + 8, CODE + 8)
    executed, _ = engine.run(CODE, 9)
    assert answers == [None, DATA_SECTION + 0x10, CODE] and not seen
    assert executed == 9 and engine.reg(A.UC_ARM_REG_R0) == 8


def test_wfi_ends_the_run_with_the_pc_after_it(engine: Engine) -> None:
    engine.uc.mem_write(CODE, arm(0xE320F003, 0xEAFFFFFE))  # wfi; b .
    executed, faulted = engine.run(CODE, 100)
    assert (executed, faulted) == (1, False) and engine.reg(A.UC_ARM_REG_PC) == CODE + 4


def test_an_undefined_instruction_reaches_the_invalid_instruction_hook_at_its_pc(engine: Engine) -> None:
    engine.uc.mem_write(CODE, arm(0xE1A00000, 0xE7F000F0))  # nop; udf #0
    at: list[int] = []

    def invalid() -> bool:
        at.append(engine.reg(A.UC_ARM_REG_PC))
        engine.uc.emu_stop()
        return True

    engine.hook_insn_invalid(invalid)
    engine.run(CODE, 10)
    assert at == [CODE + 4]


def test_a_physical_address_outside_every_region_reaches_the_unmapped_hook() -> None:
    e = Engine()
    e.uc.mem_map(0, 0x2000)
    e.uc.mem_write(CODE, arm(0xE5910000, 0xEAFFFFFE))  # ldr r0, [r1] with the MMU off
    e.set_reg(A.UC_ARM_REG_R1, 0x00800000)
    seen: list[tuple[int, int]] = []
    e.hook_mem_unmapped(lambda access, address: seen.append((access, address)) is not None)
    _executed, faulted = e.run(CODE, 10)
    assert faulted and seen == [(U.UC_MEM_READ, 0x00800000)]


def thumb(*halfwords: int) -> bytes:
    return b"".join(struct.pack("<H", h) for h in halfwords)


#: 602 instructions: movs, then 100 times (cmp, ite, add, add, subs, bne), then wfi.  Each IT block is
#: an IT and two instructions, one of which fails its condition: all three count (ARM ARM A8.8.54).
THUMB_LOOP = thumb(
    0x2064,  # movs r0, #100
    0x2832,  # 1: cmp r0, #50
    0xBFCC,  # ite gt
    0x3101,  # addgt r1, #1
    0x3201,  # addle r2, #1
    0x3801,  # subs r0, #1
    0xD1F9,  # bne 1b
    0xBF30,  # wfi
)


def test_a_run_counts_each_block_by_the_translators_own_count_it_blocks_included(engine: Engine) -> None:
    """docs/engine.md, "Time": the native block hook adds ``tb->icount`` per block entered."""
    engine.uc.mem_write(CODE, THUMB_LOOP)
    assert engine.run(CODE | 1, 10_000) == (602, False)
    assert (engine.reg(A.UC_ARM_REG_R1), engine.reg(A.UC_ARM_REG_R2)) == (50, 50)


def test_a_run_ends_before_the_block_that_would_pass_its_budget_except_a_first_block(engine: Engine) -> None:
    engine.uc.mem_write(CODE, arm(*[0xE2800001] * 8, 0xEAFFFFFE))  # add r0, r0, #1 (x8); b .
    assert engine.run(CODE, 5) == (9, False) and engine.budget_reached  # the first block runs whole
    engine.set_reg(A.UC_ARM_REG_R0, 0)
    assert engine.run(CODE, 5, limit=5) == (0, False) and engine.budget_reached
    assert engine.step(CODE) == (1, False) and engine.reg(A.UC_ARM_REG_R0) == 1
    assert engine.run(CODE + 4, 20) == (20, False)  # 7 adds and the b, then 12 more times the b
    assert engine.reg(A.UC_ARM_REG_R0) == 8


def test_a_block_left_at_an_abort_counts_only_what_retired(engine: Engine) -> None:
    """The block is counted whole as it is entered: the machine's exception entry takes back the rest."""
    engine.set_reg(A.UC_ARM_REG_R1, UNMAPPED)
    engine.uc.mem_write(CODE, arm(0xE1A00000, 0xE5910000, 0xEAFFFFFE))  # nop; ldr r0, [r1]; b .
    engine.uc.mem_write(CODE + 0x100, arm(0xE320F003))  # the 'handler': wfi
    taking_back = [False]

    def abort(_intno: int) -> None:
        if taking_back[0]:
            engine.left_block_at(engine.reg(A.UC_ARM_REG_PC), thumb=False)
        engine.set_reg(A.UC_ARM_REG_PC, CODE + 0x100)  # the run goes on, at the handler

    engine.hook_intr(abort)
    assert engine.run(CODE, 100) == (4, False)  # the whole block, then the wfi
    taking_back[0] = True
    assert engine.run(CODE, 100) == (2, False)  # the nop, then the wfi


@pytest.mark.parametrize(
    ("code", "pc", "hooked", "before"),
    [
        (arm(*[0xE2800001] * 8, 0xE320F003), CODE, CODE + 12, 3),  # add r0, r0, #1 (x8); wfi
        # adds r0, #1 and add.w r0, r0, #1 (32 bits) alternating, then wfi: the count reads the halfwords
        (thumb(0x3001, 0xF100, 0x0001, 0x3001, 0xF100, 0x0001, 0x3001, 0xBF30), CODE | 1, CODE + 12, 4),
    ],
)
def test_in_a_code_hook_the_count_is_what_ran_before_it_and_a_stop_there_runs_nothing_more(
    engine: Engine, code: bytes, pc: int, hooked: int, before: int
) -> None:
    engine.uc.mem_write(CODE, code)
    seen: list[int] = []

    def hook(_address: int, _size: int) -> None:
        seen.append(engine.in_flight())
        engine.stop()

    engine.hook_code(hook, hooked, hooked)
    assert engine.run(pc, 100) == (before, False)
    assert seen == [before] and engine.reg(A.UC_ARM_REG_R0) == before


def test_a_stop_asked_from_a_device_write_waits_for_the_block_end_so_the_store_is_not_made_twice(
    engine: Engine,
) -> None:
    """docs/engine.md, "A stop from a device": uc_emu_stop inside an MMIO write ends the run with the PC at the
    store, which runs again on resume; Engine.stop() there ends the run at the next block instead."""
    device = 0x00200000  # physical, outside the two mapped sections: the fixture maps only 0..2 MiB flat
    engine.uc.mem_write(TABLE + 4 * (device >> 20), struct.pack("<I", device | 0xC02))
    writes: list[int] = []

    def write(_offset: int, value: int, _size: int) -> None:
        writes.append(value)
        engine.stop()

    engine.map_mmio(device, 0x1000, lambda _offset, _size: 0, write)
    engine.set_reg(A.UC_ARM_REG_R1, device)
    engine.uc.mem_write(CODE, arm(0xE3A00007, 0xE5810000, 0xE2822001, 0xEAFFFFFE))  # mov r0,#7; str r0,[r1]; add; b .
    assert engine.run(CODE, 100) == (4, False)  # the whole block: mov, str, add, b
    assert writes == [7] and engine.reg(A.UC_ARM_REG_R2) == 1


def test_a_host_write_over_translated_code_leaves_the_old_code_running_until_a_flush(engine: Engine) -> None:
    """Neither ``uc_mem_write`` nor a write through the RAM's host mapping invalidates translated code (a guest
    store would): a device's DMA into a page that held code needs the machine to drop translated code."""
    sub = 0x2000

    def subroutine(value: int) -> bytes:
        return arm(0xE3A00000 | value, 0xE12FFF1E)  # mov r0, #value; bx lr

    engine.uc.mem_write(sub, subroutine(1))
    code = arm(0xEB000000 | ((sub - (CODE + 8)) >> 2), 0xE320F003)  # bl sub; wfi
    run(engine, code)
    assert engine.reg(A.UC_ARM_REG_R0) == 1
    engine.uc.mem_write(sub, subroutine(2))
    engine.run(CODE, 20)
    assert engine.reg(A.UC_ARM_REG_R0) == 1, "the old translation of the subroutine ran"
    engine.uc.ctl_flush_tb()
    engine.run(CODE, 20)
    assert engine.reg(A.UC_ARM_REG_R0) == 2


def test_drop_code_at_reaches_code_by_its_physical_address_whatever_maps_it(engine: Engine) -> None:
    """``uc_ctl_remove_cache`` finds code by translating a virtual address; ``Engine.drop_code_at`` turns the
    MMU off for the call, so a physical address finds code that runs at another virtual address."""
    virtual, physical = 0x302000, DATA_SECTION + 0x2000  # section 3 maps the data section, which is not flat-mapped
    engine.uc.mem_write(TABLE + 4, struct.pack("<II", 0, 0))
    engine.uc.mem_write(TABLE + 4 * 3, struct.pack("<I", DATA_SECTION | 0xC02))

    def subroutine(value: int) -> bytes:
        return arm(0xE3A00000 | value, 0xE12FFF1E)  # mov r0, #value; bx lr

    engine.uc.mem_write(physical, subroutine(1))
    run(engine, arm(0xEB000000 | ((virtual - (CODE + 8)) >> 2), 0xE320F003))  # bl virtual; wfi
    engine.uc.mem_write(physical, subroutine(2))
    engine.uc.ctl_remove_cache(physical, physical + 8)  # the physical address as a virtual one: nothing there
    engine.run(CODE, 20)
    assert engine.reg(A.UC_ARM_REG_R0) == 1
    sctlr = engine.cp15("sctlr", 1, 0, 0, 0).read()
    engine.drop_code_at([(physical, physical + 8)])
    assert engine.cp15("sctlr", 1, 0, 0, 0).read() == sctlr
    engine.run(CODE, 20)
    assert engine.reg(A.UC_ARM_REG_R0) == 2
