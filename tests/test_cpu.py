"""Exception entry and register access on the real engine (ARM ARM B1.8)."""

import pytest
from unicorn import arm_const as A

from qppsuite.core import mmu
from qppsuite.core.cpu import (
    CPSR_A,
    CPSR_I,
    CPSR_IT_MASK,
    CPSR_MODE_MASK,
    CPSR_T,
    MODE_ABT,
    MODE_IRQ,
    MODE_SVC,
    MODE_UND,
    MODE_USR,
    Cpu,
    ExceptionKind,
    UnknownRegisterError,
)
from qppsuite.core.engine import Engine


@pytest.fixture
def cpu() -> Cpu:
    return Cpu(Engine())


def user_state(cpu: Cpu, *, thumb: bool = False, it: int = 0) -> int:
    cpsr = MODE_USR | (CPSR_T if thumb else 0) | it
    cpu.engine.set_reg(A.UC_ARM_REG_CPSR, cpsr)
    cpu.write("sp", 0xBEEF0000)
    cpu.write("lr", 0x1234)
    return cpu.cpsr


@pytest.mark.parametrize(
    ("kind", "mode", "masks_async"),
    [
        (ExceptionKind.SVC, MODE_SVC, False),
        (ExceptionKind.UNDEFINED, MODE_UND, False),
        (ExceptionKind.PREFETCH_ABORT, MODE_ABT, True),
        (ExceptionKind.DATA_ABORT, MODE_ABT, True),
        (ExceptionKind.IRQ, MODE_IRQ, True),
    ],
)
def test_entry_switches_mode_bank_and_vectors(cpu: Cpu, kind: ExceptionKind, mode: int, masks_async: bool) -> None:
    cpu.vbar.write(0xC0008000)
    it_bits = (0x1 << 25) | (0x2C << 10)  # a live IT state in the interrupted context
    old = user_state(cpu, thumb=True, it=it_bits)
    cpu.enter(kind, 0x10000)
    new = cpu.cpsr
    assert new & CPSR_MODE_MASK == mode
    assert new & CPSR_I
    assert bool(new & CPSR_A) == masks_async
    assert new & CPSR_IT_MASK == 0, "entry must clear the IT bits"
    assert not new & CPSR_T, "SCTLR.TE is clear: ARM state"
    assert cpu.read("spsr") == old, "the SPSR keeps the old CPSR exactly, IT bits included"
    assert cpu.read("lr") == 0x10000
    assert cpu.pc == 0xC0008000 + kind.offset
    # The user bank is untouched.
    assert cpu.banked("sp", "usr") == 0xBEEF0000
    assert cpu.banked("lr", "usr") == 0x1234


def test_banked_svc_sp_from_user_mode(cpu: Cpu) -> None:
    """From user mode the SVC sp is read where the engine banks it (no mode switch); it follows every write."""
    for value in (0xC7001FF8, 0xC7A05FF8):
        cpu.engine.set_reg(A.UC_ARM_REG_CPSR, MODE_SVC)
        cpu.write("sp", value)
        user_state(cpu)
        assert cpu.banked("sp", "svc") == value
        assert cpu.cpsr & CPSR_MODE_MASK == MODE_USR, "the read leaves the mode as it was"
        assert cpu.read("sp") == 0xBEEF0000
    cpu.engine.set_reg(A.UC_ARM_REG_CPSR, MODE_SVC)
    assert cpu.banked("sp", "svc") == 0xC7A05FF8, "in SVC mode, the live sp"


def test_high_vectors_and_thumb_entry(cpu: Cpu) -> None:
    cpu.sctlr.write(cpu.sctlr.read() | mmu.SCTLR_V | mmu.SCTLR_TE)
    user_state(cpu)
    cpu.enter(ExceptionKind.IRQ, 0x8004)
    assert cpu.pc == 0xFFFF0018
    assert cpu.thumb


def test_registers_by_name(cpu: Cpu) -> None:
    cpu.write("r7", 0xF0005)
    assert cpu.read("R7") == 0xF0005
    cpu.write("contextidr", 0x42)
    assert cpu.read("contextidr") == 0x42
    assert cpu.read("midr") == 0x412FC0F1
    with pytest.raises(UnknownRegisterError, match="unknown register 'r99'"):
        cpu.read("r99")
