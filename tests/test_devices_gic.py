"""GICv2 model: delivery, priorities, trigger modes, SGIs, register access widths, snapshots."""

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qppsuite.core.devices.base import DeviceStateError
from qppsuite.core.devices.gic import (
    GICC_APR0,
    GICC_BPR,
    GICC_CTLR,
    GICC_DIR,
    GICC_EOIR,
    GICC_HPPIR,
    GICC_IAR,
    GICC_IIDR,
    GICC_PMR,
    GICC_RPR,
    GICD_CPENDSGIR,
    GICD_CTLR,
    GICD_ICACTIVER,
    GICD_ICENABLER,
    GICD_ICFGR,
    GICD_ICPENDR,
    GICD_IGROUPR,
    GICD_IIDR,
    GICD_IPRIORITYR,
    GICD_ISACTIVER,
    GICD_ISENABLER,
    GICD_ISPENDR,
    GICD_ITARGETSR,
    GICD_SGIR,
    GICD_SPENDSGIR,
    GICD_TYPER,
    Gic,
    GICC_CTLR_AckCtl,
    GICC_CTLR_EnableGrp0,
    GICC_CTLR_EnableGrp1,
    GICC_CTLR_EOImode,
    GICD_CTLR_EnableGrp0,
    GICD_CTLR_EnableGrp1,
)
from qppsuite.core.devices.sp804 import (
    TIMER_CTRL_32BIT,
    TIMER_CTRL_ENABLE,
    TIMER_CTRL_IE,
    TIMER_CTRL_PERIODIC,
    Sp804,
    TimerControl,
    TimerIntClr,
    TimerLoad,
)

SPURIOUS = 1023
TIMER = 34  # SPI 2
UART = 33  # SPI 1


class Rig:
    """A GIC with its output recorded and small helpers named after what the guest does."""

    def __init__(self, num_irqs: int = 96) -> None:
        self.events: list[bool] = []
        self.gic = Gic(irq_out=self.events.append, num_irqs=num_irqs)
        self.d = self.gic.distributor
        self.c = self.gic.cpu_interface

    def boot(self, pmr: int = 0xF0) -> "Rig":
        """What Linux's gic_dist_init/gic_cpu_init leave behind: everything enabled, PMR 0xf0."""
        self.d.write(GICD_CTLR, GICD_CTLR_EnableGrp0, 4)
        self.c.write(GICC_CTLR, GICC_CTLR_EnableGrp0, 4)
        self.c.write(GICC_PMR, pmr, 4)
        return self

    def setup(self, irq: int, priority: int = 0xA0, edge: bool = False) -> None:
        self.d.write(GICD_IPRIORITYR + irq, priority, 1)
        if irq >= 32:
            self.d.write(GICD_ITARGETSR + irq, 0x01, 1)
        cfg_offset = GICD_ICFGR + (irq // 16) * 4
        cfg = self.d.read(cfg_offset, 4)
        bit = 2 << (2 * (irq % 16))
        self.d.write(cfg_offset, (cfg | bit) if edge else (cfg & ~bit), 4)
        self.d.write(GICD_ISENABLER + (irq // 32) * 4, 1 << (irq % 32), 4)

    def iar(self) -> int:
        return self.c.read(GICC_IAR, 4)

    def eoi(self, irq: int) -> None:
        self.c.write(GICC_EOIR, irq, 4)

    def bit(self, base: int, irq: int) -> bool:
        return bool(self.d.read(base + (irq // 32) * 4, 4) >> (irq % 32) & 1)


def test_identification_registers() -> None:
    rig = Rig(num_irqs=96)
    assert rig.d.read(GICD_TYPER, 4) == 2  # ITLinesNumber = 96/32 - 1, CPUNumber 0, no security
    assert rig.d.read(GICD_IIDR, 4) == 0x0200143B
    assert rig.c.read(GICC_IIDR, 4) & 0xFF0FFF == 0x02043B  # what Linux's gic_check_gicv2 looks for
    assert rig.d.read(0xFE8, 4) == 0x2B  # ICPIDR2: architecture version 2
    assert [rig.d.read(0xFF0 + 4 * i, 4) for i in range(4)] == [0x0D, 0xF0, 0x05, 0xB1]
    assert Rig(num_irqs=256).d.read(GICD_TYPER, 4) == 7


def test_constructor_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="num_irqs"):
        Gic(irq_out=lambda level: None, num_irqs=100)
    with pytest.raises(ValueError, match="no input line"):
        Rig().gic.set_irq(5, True)  # SGIs have no input wire
    with pytest.raises(ValueError, match="no input line"):
        Rig().gic.set_irq(96, True)


def test_enable_pend_acknowledge_eoi_cycle() -> None:
    rig = Rig().boot()
    rig.setup(TIMER, priority=0xA0)
    assert rig.gic.irq_line is False
    rig.gic.set_irq(TIMER, True)
    assert rig.events == [True] and rig.gic.irq_line
    assert rig.bit(GICD_ISPENDR, TIMER)
    assert rig.c.read(GICC_HPPIR, 4) == TIMER

    assert rig.iar() == TIMER
    assert rig.events == [True, False]
    assert rig.bit(GICD_ISACTIVER, TIMER)
    assert rig.c.read(GICC_RPR, 4) == 0xA0

    rig.gic.set_irq(TIMER, False)  # the handler cleared the timer
    rig.eoi(TIMER)
    assert not rig.bit(GICD_ISACTIVER, TIMER)
    assert rig.c.read(GICC_RPR, 4) == 0xFF
    assert rig.iar() == SPURIOUS
    assert rig.events == [True, False]


def test_spurious_when_nothing_can_be_taken() -> None:
    rig = Rig()
    rig.setup(TIMER)
    rig.gic.set_irq(TIMER, True)
    assert rig.iar() == SPURIOUS  # distributor and CPU interface still disabled
    rig.d.write(GICD_CTLR, 1, 4)
    assert rig.iar() == SPURIOUS  # CPU interface disabled
    rig.c.write(GICC_CTLR, 1, 4)
    assert rig.iar() == SPURIOUS  # PMR is 0 after reset: everything masked
    rig.c.write(GICC_PMR, 0xF0, 4)
    rig.d.write(GICD_ICENABLER + 4, 1 << (TIMER - 32), 4)
    assert rig.iar() == SPURIOUS and rig.c.read(GICC_HPPIR, 4) == SPURIOUS
    rig.d.write(GICD_ISENABLER + 4, 1 << (TIMER - 32), 4)
    rig.d.write(GICD_ITARGETSR + TIMER, 0, 1)
    assert rig.iar() == SPURIOUS  # an SPI that targets no CPU is not forwarded
    rig.d.write(GICD_ITARGETSR + TIMER, 1, 1)
    assert rig.iar() == TIMER
    assert rig.iar() == SPURIOUS  # already active


def test_priority_mask_is_strict() -> None:
    rig = Rig().boot(pmr=0xA0)
    rig.setup(TIMER, priority=0xA0)
    rig.gic.set_irq(TIMER, True)
    assert not rig.gic.irq_line
    assert rig.c.read(GICC_HPPIR, 4) == TIMER  # HPPIR ignores the mask
    assert rig.iar() == SPURIOUS
    rig.c.write(GICC_PMR, 0xA8, 4)
    assert rig.gic.irq_line and rig.events == [True]
    rig.c.write(GICC_PMR, 0x00, 4)
    assert not rig.gic.irq_line
    assert rig.c.read(GICC_PMR, 4) == 0
    rig.c.write(GICC_PMR, 0xFF, 4)
    assert rig.c.read(GICC_PMR, 4) == 0xF8  # five priority bits


def test_highest_priority_wins_and_lowest_id_breaks_ties() -> None:
    rig = Rig().boot()
    for irq, priority in ((40, 0x80), (41, 0x40), (42, 0x40)):
        rig.setup(irq, priority=priority, edge=True)
        rig.gic.set_irq(irq, True)
    assert rig.iar() == 41
    assert rig.c.read(GICC_HPPIR, 4) == 42
    rig.eoi(41)
    assert rig.iar() == 42
    rig.eoi(42)
    assert rig.iar() == 40


def test_preemption_by_higher_group_priority() -> None:
    rig = Rig().boot()
    rig.setup(40, priority=0x80, edge=True)
    rig.setup(41, priority=0x40, edge=True)
    rig.setup(42, priority=0x80, edge=True)
    rig.gic.set_irq(40, True)
    assert rig.iar() == 40
    rig.gic.set_irq(42, True)
    assert not rig.gic.irq_line  # same priority as the running one: no preemption
    assert rig.iar() == SPURIOUS  # and acknowledging does not take it either
    assert rig.c.read(GICC_HPPIR, 4) == 42
    rig.gic.set_irq(41, True)
    assert rig.gic.irq_line
    assert rig.iar() == 41  # nested
    assert rig.c.read(GICC_RPR, 4) == 0x40
    assert rig.c.read(GICC_APR0, 4) == (1 << (0x40 >> 3)) | (1 << (0x80 >> 3))
    rig.eoi(41)
    assert rig.c.read(GICC_RPR, 4) == 0x80
    assert not rig.gic.irq_line
    rig.eoi(40)
    assert rig.c.read(GICC_RPR, 4) == 0xFF
    assert rig.iar() == 42


def test_binary_point_splits_group_and_subpriority() -> None:
    rig = Rig().boot()
    rig.c.write(GICC_BPR, 0, 4)
    assert rig.c.read(GICC_BPR, 4) == 2  # the minimum with five priority bits
    rig.c.write(GICC_BPR, 4, 4)  # group priority = bits [7:5]
    rig.setup(40, priority=0x80, edge=True)
    rig.setup(41, priority=0x90, edge=True)  # same group (0x80) as 40
    rig.setup(42, priority=0x60, edge=True)  # group 0x60
    rig.gic.set_irq(40, True)
    assert rig.iar() == 40
    rig.gic.set_irq(41, True)
    assert not rig.gic.irq_line
    rig.gic.set_irq(42, True)
    assert rig.iar() == 42
    rig.eoi(42)
    rig.eoi(40)
    rig.c.write(GICC_BPR, 7, 4)  # no group priority bits: nothing ever preempts
    rig.setup(43, priority=0x00, edge=True)
    assert rig.iar() == 41
    rig.gic.set_irq(43, True)
    assert not rig.gic.irq_line
    rig.eoi(41)
    assert rig.iar() == 43


def test_level_interrupt_repends_after_eoi_while_line_high() -> None:
    rig = Rig().boot()
    rig.setup(UART, priority=0xA0)
    rig.gic.set_irq(UART, True)
    assert rig.iar() == UART
    assert rig.bit(GICD_ISPENDR, UART) and rig.bit(GICD_ISACTIVER, UART)  # active and pending
    assert not rig.gic.irq_line  # an active interrupt is not signalled again
    rig.eoi(UART)
    assert rig.gic.irq_line
    assert rig.iar() == UART
    rig.gic.set_irq(UART, False)
    assert not rig.bit(GICD_ISPENDR, UART)
    rig.eoi(UART)
    assert not rig.gic.irq_line and rig.iar() == SPURIOUS


def test_edge_latches_but_level_follows_the_line() -> None:
    rig = Rig().boot()
    rig.setup(40, edge=True)
    rig.setup(41, edge=False)
    for irq in (40, 41):
        rig.gic.set_irq(irq, True)
        rig.gic.set_irq(irq, False)
    assert rig.bit(GICD_ISPENDR, 40) and not rig.bit(GICD_ISPENDR, 41)
    assert rig.iar() == 40
    assert not rig.bit(GICD_ISPENDR, 40)  # acknowledge cleared the edge latch
    rig.gic.set_irq(40, True)
    rig.gic.set_irq(40, False)  # a new edge while active: pending again
    assert rig.bit(GICD_ISPENDR, 40)
    rig.eoi(40)
    assert rig.iar() == 40
    rig.eoi(40)
    assert rig.iar() == SPURIOUS
    # Holding an edge input high raises nothing more.
    rig.gic.set_irq(40, True)
    assert rig.iar() == 40
    rig.eoi(40)
    assert rig.iar() == SPURIOUS
    assert rig.d.read(GICD_ICFGR + 8, 4) & (3 << 16) == 2 << 16  # interrupt 40: edge


def test_software_pending_of_level_interrupt() -> None:
    rig = Rig().boot()
    rig.setup(41)
    rig.d.write(GICD_ISPENDR + 4, 1 << 9, 4)
    assert rig.gic.irq_line
    rig.d.write(GICD_ICPENDR + 4, 1 << 9, 4)
    assert not rig.gic.irq_line
    rig.gic.set_irq(41, True)
    rig.d.write(GICD_ICPENDR + 4, 1 << 9, 4)
    assert rig.bit(GICD_ISPENDR, 41)  # the line still holds it pending
    rig.gic.set_irq(41, False)
    rig.d.write(GICD_ISPENDR + 4, 1 << 9, 4)
    assert rig.iar() == 41
    rig.eoi(41)
    assert rig.iar() == SPURIOUS  # acknowledge consumed the software latch


def test_active_bits_are_writable() -> None:
    rig = Rig().boot()
    rig.setup(40, edge=True)
    rig.d.write(GICD_ISACTIVER + 4, 1 << 8, 4)
    rig.gic.set_irq(40, True)
    assert not rig.gic.irq_line  # active interrupts are not delivered
    rig.d.write(GICD_ICACTIVER + 4, 1 << 8, 4)
    assert rig.gic.irq_line


def test_sgis_through_sgir_and_pending_registers() -> None:
    rig = Rig().boot()
    assert rig.d.read(GICD_ISENABLER, 4) & 0xFFFF == 0xFFFF  # SGIs always enabled
    rig.d.write(GICD_ICENABLER, 0xFFFFFFFF, 4)
    assert rig.d.read(GICD_ISENABLER, 4) == 0xFFFF
    assert rig.d.read(GICD_ICFGR, 4) == 0xAAAAAAAA  # SGIs are edge-triggered, read-only
    rig.d.write(GICD_ICFGR, 0, 4)
    assert rig.d.read(GICD_ICFGR, 4) == 0xAAAAAAAA
    rig.d.write(GICD_IPRIORITYR + 5, 0x10, 1)

    rig.d.write(GICD_SGIR, (0 << 24) | (1 << 16) | 5, 4)  # target list = CPU 0
    assert rig.iar() == 5
    rig.eoi(5)
    rig.d.write(GICD_SGIR, (2 << 24) | 5, 4)  # to self
    assert rig.iar() == 5
    rig.eoi(5)
    rig.d.write(GICD_SGIR, (1 << 24) | 5, 4)  # to all others: there are none
    rig.d.write(GICD_SGIR, (0 << 24) | (2 << 16) | 5, 4)  # to CPU 1 only: absent
    assert rig.iar() == SPURIOUS
    rig.d.write(GICD_ISPENDR, 1 << 5, 4)  # SGI pending bits are not set through ISPENDR
    assert rig.iar() == SPURIOUS

    rig.d.write(GICD_SPENDSGIR + 5, 0x01, 1)
    assert rig.d.read(GICD_SPENDSGIR + 4, 4) == 0x0100
    assert rig.bit(GICD_ISPENDR, 5)
    rig.d.write(GICD_CPENDSGIR + 4, 0x0100, 4)
    assert rig.d.read(GICD_CPENDSGIR + 5, 1) == 0
    assert rig.iar() == SPURIOUS


def test_reserved_sgir_filter_is_a_guest_error(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig().boot()
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        rig.d.write(GICD_SGIR, (3 << 24) | 1, 4)
    assert rig.iar() == SPURIOUS
    assert "TargetListFilter" in caplog.text


def test_priority_register_byte_and_word_access() -> None:
    rig = Rig()
    rig.d.write(GICD_IPRIORITYR + 32, 0x80604020, 4)
    assert [rig.d.read(GICD_IPRIORITYR + 32 + i, 1) for i in range(4)] == [0x20, 0x40, 0x60, 0x80]
    rig.d.write(GICD_IPRIORITYR + 33, 0x47, 1)
    assert rig.d.read(GICD_IPRIORITYR + 32, 4) == 0x80604020 & ~0xFF00 | 0x4000
    rig.d.write(GICD_IPRIORITYR + 36, 0xFFFFFFFF, 4)
    assert rig.d.read(GICD_IPRIORITYR + 36, 4) == 0xF8F8F8F8
    assert rig.d.read(GICD_IPRIORITYR + 96, 4) == 0  # beyond num_irqs: RAZ/WI
    rig.d.write(GICD_IPRIORITYR + 96, 0xFFFFFFFF, 4)
    assert rig.d.read(GICD_IPRIORITYR + 96, 4) == 0


def test_target_register_byte_and_word_access() -> None:
    rig = Rig()
    assert rig.d.read(GICD_ITARGETSR, 4) == 0x01010101  # SGIs: CPU 0, read-only
    assert rig.d.read(GICD_ITARGETSR + 28, 4) == 0x01010101  # PPIs too
    rig.d.write(GICD_ITARGETSR + 16, 0, 4)
    assert rig.d.read(GICD_ITARGETSR + 16, 1) == 0x01
    assert rig.d.read(GICD_ITARGETSR + 32, 4) == 0  # SPIs reset to no target
    rig.d.write(GICD_ITARGETSR + 32, 0x03010201, 4)
    assert rig.d.read(GICD_ITARGETSR + 32, 4) == 0x01010001  # only the CPU 0 bit exists
    rig.d.write(GICD_ITARGETSR + 33, 0x00, 1)
    assert rig.d.read(GICD_ITARGETSR + 32, 4) == 0x01010001 & ~0x0100


def test_word_only_registers_reject_narrow_access(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig().boot()
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        assert rig.d.read(GICD_CTLR, 1) == 0
        rig.d.write(GICD_CTLR, 0, 1)
        assert rig.d.read(GICD_CTLR, 4) == 1  # the byte write was ignored
        assert rig.d.read(GICD_IPRIORITYR, 2) == 0  # halfwords are never allowed
        assert rig.c.read(GICC_IAR, 2) == 0
        assert rig.d.read(0x3, 4) == 0  # misaligned
        assert rig.d.read(0x1000, 4) == 0  # outside the window
        assert rig.d.read(0x00C, 4) == 0  # reserved
        rig.c.write(0x40, 1, 4)  # unimplemented
    assert len(caplog.records) == 8
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        rig.d.read(GICD_CTLR, 1)
        rig.d.read(0x00C, 4)
    assert caplog.records == []  # each problem is reported once


def test_groups_and_ack_control() -> None:
    rig = Rig()
    rig.d.write(GICD_CTLR, GICD_CTLR_EnableGrp0 | GICD_CTLR_EnableGrp1, 4)
    rig.c.write(GICC_CTLR, GICC_CTLR_EnableGrp0, 4)
    rig.c.write(GICC_PMR, 0xF0, 4)
    rig.setup(40, edge=True)
    rig.d.write(GICD_IGROUPR + 4, 1 << 8, 4)
    assert rig.d.read(GICD_IGROUPR + 4, 4) == 1 << 8
    rig.gic.set_irq(40, True)
    assert not rig.gic.irq_line  # group 1 disabled at the CPU interface
    rig.c.write(GICC_CTLR, GICC_CTLR_EnableGrp0 | GICC_CTLR_EnableGrp1, 4)
    assert rig.gic.irq_line
    assert rig.c.read(GICC_HPPIR, 4) == 1022
    assert rig.iar() == 1022  # AckCtl clear: a Group 1 interrupt is not acknowledged
    assert not rig.bit(GICD_ISACTIVER, 40)
    rig.c.write(GICC_CTLR, GICC_CTLR_EnableGrp0 | GICC_CTLR_EnableGrp1 | GICC_CTLR_AckCtl, 4)
    assert rig.iar() == 40
    rig.eoi(40)
    rig.d.write(GICD_CTLR, GICD_CTLR_EnableGrp0, 4)
    rig.gic.set_irq(40, False)
    rig.gic.set_irq(40, True)
    assert not rig.gic.irq_line  # group 1 disabled at the distributor


def test_split_priority_drop_and_deactivate() -> None:
    rig = Rig().boot()
    rig.c.write(GICC_CTLR, GICC_CTLR_EnableGrp0 | GICC_CTLR_EOImode, 4)
    rig.setup(40, priority=0x80, edge=True)
    rig.gic.set_irq(40, True)
    assert rig.iar() == 40
    rig.eoi(40)
    assert rig.c.read(GICC_RPR, 4) == 0xFF  # priority dropped ...
    assert rig.bit(GICD_ISACTIVER, 40)  # ... but still active
    rig.c.write(GICC_DIR, 40, 4)
    assert not rig.bit(GICD_ISACTIVER, 40)


def test_eoi_misuse_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig().boot()
    rig.setup(40, edge=True)
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        rig.eoi(40)  # nothing active
        rig.eoi(SPURIOUS)  # explicitly ignored by the architecture
        rig.eoi(500)  # beyond the implemented interrupts
        rig.c.write(GICC_DIR, 40, 4)  # EOImode is 0
    assert len(caplog.records) == 3
    rig.gic.set_irq(40, True)
    assert rig.iar() == 40


def _scenario(rig: Rig) -> None:
    rig.boot()
    rig.c.write(GICC_BPR, 3, 4)
    rig.setup(40, priority=0x80, edge=True)
    rig.setup(41, priority=0x40)
    rig.setup(UART, priority=0xA0)
    rig.d.write(GICD_IGROUPR + 4, 1 << 20, 4)
    rig.gic.set_irq(40, True)
    rig.gic.set_irq(UART, True)
    assert rig.iar() == 40
    rig.gic.set_irq(41, True)
    assert rig.iar() == 41
    rig.d.write(GICD_SPENDSGIR + 3, 1, 1)


def _continuation(rig: Rig) -> list[object]:
    trace: list[object] = []
    rig.events.clear()
    rig.gic.set_irq(41, False)
    for _ in range(3):
        irq = rig.iar()
        trace.append((irq, rig.c.read(GICC_RPR, 4), rig.gic.irq_line))
        rig.eoi(41 if irq == SPURIOUS else irq)
    rig.eoi(41)
    rig.eoi(40)
    for _ in range(3):
        irq = rig.iar()
        trace.append((irq, rig.c.read(GICC_HPPIR, 4)))
        if irq < 1020:
            rig.eoi(irq)
    trace.append(list(rig.events))
    return trace


def test_state_round_trip_through_json_gives_identical_behaviour() -> None:
    original = Rig()
    _scenario(original)
    saved = json.loads(json.dumps({"d": original.d.get_state(), "c": original.c.get_state()}))

    restored = Rig()
    restored.d.set_state(saved["d"])
    restored.c.set_state(saved["c"])
    assert restored.gic.irq_line == original.gic.irq_line
    assert restored.events[-1] == original.gic.irq_line  # the restore re-drives the output
    assert restored.d.get_state() == original.d.get_state()
    assert restored.c.get_state() == original.c.get_state()
    expected = _continuation(original)
    assert _continuation(restored) == expected
    assert expected[0] != (SPURIOUS, 0xFF, False)  # the scenario left real work to do


def test_whole_gic_state_round_trip_and_atomic_restore() -> None:
    original = Rig()
    _scenario(original)
    saved = json.loads(json.dumps(original.gic.get_state()))
    restored = Rig()
    restored.gic.set_state(saved)
    assert restored.gic.get_state() == original.gic.get_state()
    assert _continuation(restored) == _continuation(original)

    fresh = Rig()
    before = fresh.gic.get_state()
    broken = {**saved, "cpu_interface": {**saved["cpu_interface"], "bpr": 1}}
    with pytest.raises(DeviceStateError, match="gic-cpu"):
        fresh.gic.set_state(broken)
    assert fresh.gic.get_state() == before  # the valid distributor half was not applied either
    with pytest.raises(DeviceStateError, match="cpu_interface"):
        fresh.gic.set_state({"distributor": saved["distributor"]})
    fresh.gic.set_state(saved)
    fresh.gic.reset()
    assert fresh.gic.get_state()["cpu_interface"] == before["cpu_interface"]
    assert fresh.gic.get_state()["distributor"]["level"] == saved["distributor"]["level"]  # wires keep their level


def test_set_state_rejects_corrupt_snapshots() -> None:
    rig = Rig()
    good = rig.d.get_state()
    with pytest.raises(DeviceStateError, match="no field 'priority'"):
        rig.d.set_state({k: v for k, v in good.items() if k != "priority"})
    with pytest.raises(DeviceStateError, match="entries"):
        rig.d.set_state({**good, "enabled": [0]})
    with pytest.raises(DeviceStateError, match="priorities"):
        rig.d.set_state({**good, "priority": [1] * 96})
    with pytest.raises(DeviceStateError, match="bpr"):
        rig.c.set_state({**rig.c.get_state(), "bpr": 0})
    with pytest.raises(DeviceStateError):
        rig.c.set_state({**rig.c.get_state(), "pmr": "high"})
    assert rig.d.get_state() == good  # nothing half-applied


def test_reset_returns_to_power_on_state_but_keeps_input_wires() -> None:
    rig = Rig().boot()
    rig.setup(UART)
    rig.gic.set_irq(UART, True)
    assert rig.gic.irq_line
    rig.d.reset()
    rig.c.reset()
    assert not rig.gic.irq_line and rig.events == [True, False]
    assert rig.d.read(GICD_CTLR, 4) == 0 and rig.c.read(GICC_PMR, 4) == 0
    rig.boot()
    rig.setup(UART)
    assert rig.iar() == UART  # the UART still drives its line


_OFFSETS_D = st.one_of(
    st.integers(0, 0xFFF),
    st.sampled_from([GICD_CTLR, GICD_ISENABLER + 4, GICD_ISPENDR + 4, GICD_ICPENDR + 4, GICD_SGIR, GICD_ICFGR + 8]),
    st.integers(GICD_IPRIORITYR, GICD_IPRIORITYR + 100),
)
_OFFSETS_C = st.one_of(st.integers(0, 0x1FFF), st.sampled_from([GICC_IAR, GICC_EOIR, GICC_PMR, GICC_CTLR, GICC_DIR]))
_OPS = st.one_of(
    st.tuples(st.just("d"), st.booleans(), _OFFSETS_D, st.integers(0, 0xFFFFFFFF), st.sampled_from([1, 2, 4, 3])),
    st.tuples(st.just("c"), st.booleans(), _OFFSETS_C, st.integers(0, 0xFFFFFFFF), st.sampled_from([1, 2, 4])),
    st.tuples(st.just("line"), st.booleans(), st.integers(16, 95), st.just(0), st.just(4)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_OPS, max_size=60))
def test_random_guest_accesses_never_raise_and_keep_invariants(ops: list[tuple[str, bool, int, int, int]]) -> None:
    rig = Rig().boot()
    for irq in range(32, 48):
        rig.setup(irq, priority=(irq * 8) & 0xF8, edge=bool(irq & 1))
    logging.getLogger("qppsuite.guest").disabled = True
    try:
        for window, flag, offset, value, size in ops:
            if window == "line":
                rig.gic.set_irq(offset, flag)
                continue
            device = rig.d if window == "d" else rig.c
            if flag:
                device.write(offset, value, size)
            else:
                assert 0 <= device.read(offset, size) <= 0xFFFFFFFF
            # The output always matches what the state says, and a raised line has something to take.
            assert rig.events == [] or rig.events[-1] == rig.gic.irq_line
            if rig.gic.irq_line:
                assert rig.c.read(GICC_HPPIR, 4) < SPURIOUS
    finally:
        logging.getLogger("qppsuite.guest").disabled = False
    json.dumps([rig.d.get_state(), rig.c.get_state()])


def test_linux_init_sequence_then_timer_interrupts_from_a_real_sp804() -> None:
    """Replays irq-gic.c's gic_dist_init/gic_cpu_init writes, then the sp804 clockevent's interrupt flow."""
    rig = Rig()
    d, c = rig.d, rig.c
    gic_irqs = (d.read(GICD_TYPER, 4) & 0x1F) * 32 + 32
    d.write(GICD_CTLR, 0, 4)
    mask = 0
    for i in range(0, 32, 4):
        mask = d.read(GICD_ITARGETSR + i, 4)
        mask |= mask >> 16
        mask |= mask >> 8
        if mask:
            break
    cpumask = (mask & 0xFF) * 0x01010101
    for i in range(32, gic_irqs, 4):
        d.write(GICD_ITARGETSR + i, cpumask, 4)
    for i in range(32, gic_irqs, 16):
        d.write(GICD_ICFGR + i // 4, 0, 4)
    for i in range(32, gic_irqs, 4):
        d.write(GICD_IPRIORITYR + i, 0xA0A0A0A0, 4)
    for i in range(32, gic_irqs, 32):
        d.write(GICD_ICACTIVER + i // 8, 0xFFFFFFFF, 4)
        d.write(GICD_ICENABLER + i // 8, 0xFFFFFFFF, 4)
    d.write(GICD_CTLR, 1, 4)
    d.write(GICD_ICACTIVER, 0xFFFFFFFF, 4)
    d.write(GICD_ICENABLER, 0xFFFFFFFF, 4)
    for i in range(0, 32, 4):
        d.write(GICD_IPRIORITYR + i, 0xA0A0A0A0, 4)
    c.write(GICC_PMR, 0xF0, 4)
    bypass = c.read(GICC_CTLR, 4) & 0x1E0
    c.write(GICC_CTLR, bypass | 1, 4)
    d.write(GICD_ISENABLER + 4, 1 << (TIMER - 32), 4)  # request_irq -> gic_unmask_irq

    now = [0]
    timer = Sp804(now_ns=lambda: now[0], irq_out=lambda level: rig.gic.set_irq(TIMER, level))
    timer.write(TimerLoad, 9999, 4)
    timer.write(TimerControl, TIMER_CTRL_32BIT | TIMER_CTRL_IE | TIMER_CTRL_PERIODIC | TIMER_CTRL_ENABLE, 4)
    taken = []
    for tick in range(20):
        deadline = timer.next_deadline_ns()
        assert deadline is not None
        now[0] = deadline
        timer.update()
        assert rig.gic.irq_line
        irq = rig.iar()
        taken.append((irq, now[0]))
        if tick != 5:
            timer.write(TimerIntClr, 1, 4)  # sp804_timer_interrupt
        rig.eoi(irq)
        if tick == 5:
            assert rig.gic.irq_line  # a handler that forgot TimerIntClr gets the level interrupt again
            assert rig.iar() == TIMER
            timer.write(TimerIntClr, 1, 4)
            rig.eoi(TIMER)
        assert not rig.gic.irq_line
    assert taken == [(TIMER, 9_999_000 + n * 10_000_000) for n in range(20)]
