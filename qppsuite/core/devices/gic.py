"""ARM GICv2 (IHI0048B) for one CPU: the Cortex-A15's distributor and CPU interface.

One :class:`Gic` holds the interrupt state; its two MMIO windows,
:attr:`Gic.distributor` (GICD, 0x1000) and :attr:`Gic.cpu_interface` (GICC,
0x2000 with GICC_DIR in the second page), are separate devices as on silicon,
each resetting and snapshotting its own half; :meth:`Gic.reset`,
:meth:`Gic.get_state` and :meth:`Gic.set_state` do both at once.  Devices drive inputs with
:meth:`Gic.set_irq`; the CPU's IRQ line goes to ``irq_out``.

Per-interrupt state is kept as bitmaps over interrupt IDs, so finding the
highest-priority pending interrupt touches only pending ones.  The model is a
GIC-400-like implementation without the Security Extensions:

* 5 priority bits (32 levels, low 3 bits of every priority RAZ/WI), so GICC_BPR
  is at least 2 and GICC_APR0 has one bit per preemption level.
* A level-sensitive interrupt is pending while its input is high or its
  software latch (GICD_ISPENDR) is set; acknowledging it clears only the latch,
  so it is pending-and-active while the line stays high and re-pends at EOI.
  An edge-triggered one latches on each rising edge and acknowledging clears it.
* Interrupt groups are stored (GICD_IGROUPR) and gated by the EnableGrp bits of
  GICD_CTLR and GICC_CTLR; with AckCtl clear, acknowledging a Group 1
  interrupt reads 1022.  Simplifications: both groups use GICC_BPR (there is no
  GICC_ABPR, as if CBPR were set); FIQEn, CBPR and the bypass bits are stored
  but this board wires no FIQ or legacy bypass, so every interrupt is signalled
  on IRQ.
* SGIs are always enabled and edge-triggered, with CPU 0 as the only source.
  ITARGETSR reads 0x01 for SGIs and PPIs; for SPIs only the CPU 0 bit exists,
  resets to 0 and gates forwarding (Linux programs it at boot).
* Registers of interrupts beyond ``num_irqs`` are RAZ/WI, as the spec says.
"""

from collections.abc import Mapping
from typing import Any

from qppsuite.core.devices.base import (
    DeviceStateError,
    IrqLine,
    MmioDevice,
    bits_to_words,
    state_field,
    state_int,
    state_int_list,
    words_to_bits,
)

# Distributor registers (IHI0048B table 4-1).
GICD_CTLR = 0x000
GICD_TYPER = 0x004
GICD_IIDR = 0x008
GICD_IGROUPR = 0x080
GICD_ISENABLER = 0x100
GICD_ICENABLER = 0x180
GICD_ISPENDR = 0x200
GICD_ICPENDR = 0x280
GICD_ISACTIVER = 0x300
GICD_ICACTIVER = 0x380
GICD_IPRIORITYR = 0x400
GICD_ITARGETSR = 0x800
GICD_ICFGR = 0xC00
GICD_SGIR = 0xF00
GICD_CPENDSGIR = 0xF10
GICD_SPENDSGIR = 0xF20
GICD_PIDR4 = 0xFD0
GICD_CIDR3 = 0xFFC
# ICPIDR4-7, ICPIDR0-3, ICCIDR0-3: ICPIDR2 = 0x2B says architecture GICv2.
GICD_ID = (0x04, 0x00, 0x00, 0x00, 0x90, 0xB4, 0x2B, 0x00, 0x0D, 0xF0, 0x05, 0xB1)

GICD_CTLR_EnableGrp0 = 1 << 0
GICD_CTLR_EnableGrp1 = 1 << 1
GICD_TYPER_CPUNumber_SHIFT = 5
GICD_SGIR_TargetListFilter_SHIFT = 24
GICD_SGIR_CPUTargetList_SHIFT = 16
GICD_SGIR_SGIINTID_MASK = 0xF
SGIR_FILTER_LIST = 0
SGIR_FILTER_OTHERS = 1
SGIR_FILTER_SELF = 2
#: GIC-400: ProductID 0x02, implementer ARM (0x43B).
GICD_IIDR_VALUE = 0x0200143B

# CPU interface registers (IHI0048B table 4-2).
GICC_CTLR = 0x00
GICC_PMR = 0x04
GICC_BPR = 0x08
GICC_IAR = 0x0C
GICC_EOIR = 0x10
GICC_RPR = 0x14
GICC_HPPIR = 0x18
GICC_APR0 = 0xD0
#: GICC_APR1-3 and GICC_NSAPR0-3: with 5 priority bits only APR0 holds state; the rest are RAZ/WI.
GICC_APR_RAZWI = range(0xD4, 0xF0, 4)
GICC_IIDR = 0xFC
GICC_DIR = 0x1000

GICC_CTLR_EnableGrp0 = 1 << 0
GICC_CTLR_EnableGrp1 = 1 << 1
GICC_CTLR_AckCtl = 1 << 2
GICC_CTLR_FIQEn = 1 << 3
GICC_CTLR_CBPR = 1 << 4
GICC_CTLR_EOImode = 1 << 9
GICC_CTLR_WRITABLE = 0x3FF  # EnableGrp0/1, AckCtl, FIQEn, CBPR, the four bypass disables, EOImodeS
GICC_IAR_INTID_MASK = 0x3FF
#: GIC-400: ProductID 0x202, architecture version 2, implementer ARM.
GICC_IIDR_VALUE = 0x0202143B

# Interrupt ID space.
GIC_NR_SGIS = 16
GIC_INTERNAL = 32  # SGIs and PPIs
GIC_MAX_IRQS = 1020
INTID_GROUP1_NOT_ACKED = 1022
INTID_SPURIOUS = 1023

# Priority model.
GIC_PRIORITY_BITS = 5
GIC_PRIORITY_MASK = (0xFF << (8 - GIC_PRIORITY_BITS)) & 0xFF  # 0xF8
GIC_MIN_BPR = 7 - GIC_PRIORITY_BITS  # 2: group priority uses every implemented bit
GIC_IDLE_PRIORITY = 0xFF
GIC_PREEMPTION_SHIFT = 8 - GIC_PRIORITY_BITS  # APR bit n <-> group priority n << 3

_SGI_BITS = (1 << GIC_NR_SGIS) - 1
_INTERNAL_BITS = (1 << GIC_INTERNAL) - 1


class Gic:
    """The shared state behind the two windows, and the interrupt delivery logic."""

    # Distributor half: bitmaps over interrupt IDs, plus one priority byte per interrupt.
    ctlr: int
    group: int
    enabled: int
    pending: int  # edge-triggered: the pending latch; level-sensitive: the GICD_ISPENDR latch
    active: int
    edge: int  # GICD_ICFGR Int_config[1]
    target: int  # GICD_ITARGETSR CPU 0 bit
    priority: list[int]
    # CPU interface half.
    cpu_ctlr: int
    pmr: int
    bpr: int
    apr: int  # GICC_APR0: one bit per active preemption level

    def __init__(self, irq_out: IrqLine, num_irqs: int = 96) -> None:
        if num_irqs % 32 or not GIC_INTERNAL <= num_irqs <= 1024:
            raise ValueError(f"gic: num_irqs must be a multiple of 32 in 32..1024, got {num_irqs}")
        self.num_irqs = min(num_irqs, GIC_MAX_IRQS)
        self.words = num_irqs // 32
        self._all = (1 << self.num_irqs) - 1
        self._irq_out = irq_out
        self._irq_line = False
        # Input line levels are wires driven by other devices: no reset clears them.
        self.level = 0
        self.distributor = GicDistributor(self)
        self.cpu_interface = GicCpuInterface(self)
        self.reset_distributor()
        self.reset_cpu_interface()

    # -- inputs and output -----------------------------------------------------------
    @property
    def irq_line(self) -> bool:
        """The CPU's IRQ input as last driven."""
        return self._irq_line

    def set_irq(self, irq_id: int, level: bool) -> None:
        """Drive the input of PPI (16-31) or SPI (32 + n) ``irq_id``; SGIs come from GICD_SGIR."""
        if not GIC_NR_SGIS <= irq_id < self.num_irqs:
            raise ValueError(f"gic: no input line for interrupt {irq_id} (lines are 16..{self.num_irqs - 1})")
        bit = 1 << irq_id
        if bool(self.level & bit) == level:
            return
        if level:
            self.level |= bit
            if self.edge & bit:
                self.pending |= bit
        else:
            self.level &= ~bit
        self.update()

    def update(self) -> None:
        """Recompute the CPU's IRQ line after any state change; call ``irq_out`` if it changed."""
        level = self._signalled()
        if level != self._irq_line:
            self._irq_line = level
            self._irq_out(level)

    def drive_output(self) -> None:
        """Send the IRQ line even if unchanged, so the CPU agrees after a snapshot restore."""
        self._irq_line = self._signalled()
        self._irq_out(self._irq_line)

    def _signalled(self) -> bool:
        best = self.best_pending()
        if best is None:
            return False
        priority = self.priority[best]
        return priority < self.pmr and self.group_priority(priority) < self.running_priority()

    # -- the whole GIC, for machines that reset and snapshot it as one device -------------
    def reset(self) -> None:
        """Reset both windows (the input wires keep their levels)."""
        self.distributor.reset()
        self.cpu_interface.reset()

    def get_state(self) -> dict[str, Any]:
        return {"distributor": self.distributor.get_state(), "cpu_interface": self.cpu_interface.get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore both halves; a snapshot that does not fit leaves this GIC untouched."""
        halves = {key: state_field(state, "gic", key, Mapping) for key in ("distributor", "cpu_interface")}
        scratch = Gic(irq_out=lambda level: None, num_irqs=self.words * 32)
        scratch.distributor.set_state(halves["distributor"])
        scratch.cpu_interface.set_state(halves["cpu_interface"])
        self.distributor.set_state(halves["distributor"])
        self.cpu_interface.set_state(halves["cpu_interface"])

    # -- the two halves' reset values ----------------------------------------------------
    def reset_distributor(self) -> None:
        self.ctlr = 0
        self.group = 0
        self.enabled = _SGI_BITS
        self.pending = 0
        self.active = 0
        self.edge = _SGI_BITS
        self.target = _INTERNAL_BITS
        self.priority = [0] * self.num_irqs

    def reset_cpu_interface(self) -> None:
        self.cpu_ctlr = 0
        self.pmr = 0
        self.bpr = GIC_MIN_BPR
        self.apr = 0

    def effective_pending(self) -> int:
        return self.pending | (self.level & ~self.edge)

    def group_priority(self, priority: int) -> int:
        return priority & (0xFF << (self.bpr + 1)) & 0xFF

    def running_priority(self) -> int:
        if not self.apr:
            return GIC_IDLE_PRIORITY
        lowest = (self.apr & -self.apr).bit_length() - 1
        return lowest << GIC_PREEMPTION_SHIFT

    def best_pending(self) -> int | None:
        """The highest-priority interrupt the CPU interface could take (lowest ID wins ties)."""
        allowed = 0
        if self.ctlr & GICD_CTLR_EnableGrp0 and self.cpu_ctlr & GICC_CTLR_EnableGrp0:
            allowed |= ~self.group
        if self.ctlr & GICD_CTLR_EnableGrp1 and self.cpu_ctlr & GICC_CTLR_EnableGrp1:
            allowed |= self.group
        candidates = self.effective_pending() & self.enabled & ~self.active & self.target & allowed & self._all
        best: int | None = None
        best_priority = 0x100
        while candidates:
            low = candidates & -candidates
            irq = low.bit_length() - 1
            candidates ^= low
            if self.priority[irq] < best_priority:
                best, best_priority = irq, self.priority[irq]
        return best

    def acknowledge(self) -> int:
        """GICC_IAR: take the best interrupt if it beats PMR and the running priority."""
        irq = self.best_pending()
        if irq is None:
            return INTID_SPURIOUS
        priority = self.priority[irq]
        group_priority = self.group_priority(priority)
        if priority >= self.pmr or group_priority >= self.running_priority():
            return INTID_SPURIOUS
        if self.group >> irq & 1 and not self.cpu_ctlr & GICC_CTLR_AckCtl:
            return INTID_GROUP1_NOT_ACKED
        bit = 1 << irq
        self.active |= bit
        self.pending &= ~bit
        self.apr |= 1 << (group_priority >> GIC_PREEMPTION_SHIFT)
        self.update()
        return irq  # SGIs: CPUID field (source) is 0, the only CPU

    def highest_pending_id(self) -> int:
        """GICC_HPPIR: like IAR but without masking by PMR or running priority, and no side effect."""
        irq = self.best_pending()
        if irq is None:
            return INTID_SPURIOUS
        if self.group >> irq & 1 and not self.cpu_ctlr & GICC_CTLR_AckCtl:
            return INTID_GROUP1_NOT_ACKED
        return irq


class GicDistributor(MmioDevice):
    """GICD: global enables, per-interrupt configuration, SGI generation."""

    name = "gic-distributor"
    size = 0x1000

    def __init__(self, gic: Gic) -> None:
        super().__init__()
        self.gic = gic

    # -- Device ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.gic.reset_distributor()
        self.gic.update()

    def get_state(self) -> dict[str, Any]:
        g = self.gic
        words = g.words
        return {
            "ctlr": g.ctlr,
            "group": bits_to_words(g.group, words),
            "enabled": bits_to_words(g.enabled, words),
            "pending": bits_to_words(g.pending, words),
            "active": bits_to_words(g.active, words),
            "edge": bits_to_words(g.edge, words),
            "level": bits_to_words(g.level, words),
            "target": bits_to_words(g.target, words),
            "priority": list(g.priority),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        g = self.gic
        ctlr = state_int(state, self.name, "ctlr")
        if ctlr & ~(GICD_CTLR_EnableGrp0 | GICD_CTLR_EnableGrp1):
            raise DeviceStateError(f"{self.name} state field 'ctlr' = {ctlr:#x} sets reserved bits")
        maps = {
            key: words_to_bits(state_int_list(state, self.name, key, g.words))
            for key in ("group", "enabled", "pending", "active", "edge", "level", "target")
        }
        if maps["level"] & _SGI_BITS:
            raise DeviceStateError(f"{self.name} state drives an input line of an SGI")
        priority = state_int_list(state, self.name, "priority", g.num_irqs, bits=8)
        if any(value & ~GIC_PRIORITY_MASK for value in priority):
            raise DeviceStateError(f"{self.name} state holds priorities with unimplemented low bits")
        g.ctlr = ctlr
        g.group, g.pending, g.active, g.level = maps["group"], maps["pending"], maps["active"], maps["level"]
        # Read-only-one bits stay one whatever the snapshot says.
        g.enabled = maps["enabled"] | _SGI_BITS
        g.edge = maps["edge"] | _SGI_BITS
        g.target = maps["target"] | _INTERNAL_BITS
        g.priority = priority
        g.drive_output()

    # -- MMIO ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if not self._size_ok(offset, size, write=False):
            return 0
        if size == 1:
            return self._read_byte(offset)
        if _byte_register(offset):
            return sum(self._read_byte(offset + lane) << (8 * lane) for lane in range(4))
        return self._read_word(offset)

    def write(self, offset: int, value: int, size: int) -> None:
        if not self._size_ok(offset, size, write=True):
            return
        if size == 1:
            self._write_byte(offset, value & 0xFF)
        elif _byte_register(offset):
            for lane in range(4):
                self._write_byte(offset + lane, (value >> (8 * lane)) & 0xFF)
        else:
            self._write_word(offset, value & 0xFFFFFFFF)
        self.gic.update()

    def _size_ok(self, offset: int, size: int, write: bool) -> bool:
        if not self.access_ok(offset, size, write):
            return False
        if size == 4 or (size == 1 and _byte_register(offset)):
            return True
        kind = "write" if write else "read"
        self.guest_error(
            ("size", kind, offset & ~3, size), f"{size}-byte {kind} of word-only register {offset & ~3:#x}"
        )
        return False

    def _read_word(self, offset: int) -> int:
        g = self.gic
        if offset == GICD_CTLR:
            return g.ctlr
        if offset == GICD_TYPER:
            return (g.words - 1) | (0 << GICD_TYPER_CPUNumber_SHIFT)
        if offset == GICD_IIDR:
            return GICD_IIDR_VALUE
        if GICD_IGROUPR <= offset < GICD_IPRIORITYR:
            bank, index = divmod(offset - GICD_IGROUPR, 0x80)
            bitmap = (
                g.group,
                g.enabled,
                g.enabled,
                g.effective_pending(),
                g.effective_pending(),
                g.active,
                g.active,
            )[bank]
            return (bitmap >> (index * 8)) & 0xFFFFFFFF
        if GICD_ICFGR <= offset < GICD_ICFGR + 0x100:
            first = (offset - GICD_ICFGR) * 4
            value = 0
            for slot in range(16):
                if (g.edge & g._all) >> (first + slot) & 1:
                    value |= 2 << (2 * slot)
            return value
        if offset == GICD_SGIR:
            self.guest_error(("read", offset), "read of write-only GICD_SGIR")
            return 0
        if GICD_PIDR4 <= offset <= GICD_CIDR3:
            return GICD_ID[(offset - GICD_PIDR4) >> 2]
        self.guest_error(("read", offset), f"read of reserved offset {offset:#x}")
        return 0

    def _write_word(self, offset: int, value: int) -> None:
        g = self.gic
        if offset == GICD_CTLR:
            g.ctlr = value & (GICD_CTLR_EnableGrp0 | GICD_CTLR_EnableGrp1)
        elif GICD_IGROUPR <= offset < GICD_IPRIORITYR:
            bank, index = divmod(offset - GICD_IGROUPR, 0x80)
            shift = index * 8
            bits = (value << shift) & g._all
            if bank == 0:
                g.group = (g.group & ~(0xFFFFFFFF << shift)) | bits
            elif bank == 1:
                g.enabled |= bits
            elif bank == 2:
                g.enabled = (g.enabled & ~bits) | _SGI_BITS
            elif bank == 3:
                g.pending |= bits & ~_SGI_BITS  # SGI pending bits: use GICD_SPENDSGIR
            elif bank == 4:
                g.pending &= ~(bits & ~_SGI_BITS)
            elif bank == 5:
                g.active |= bits
            else:
                g.active &= ~bits
        elif GICD_ICFGR <= offset < GICD_ICFGR + 0x100:
            first = (offset - GICD_ICFGR) * 4
            for slot in range(16):
                irq = first + slot
                if irq < GIC_NR_SGIS or irq >= g.num_irqs:
                    continue  # SGIs are always edge-triggered; absent interrupts are WI
                if value >> (2 * slot + 1) & 1:
                    g.edge |= 1 << irq
                else:
                    g.edge &= ~(1 << irq)
        elif offset == GICD_SGIR:
            self._write_sgir(value)
        elif offset in (GICD_TYPER, GICD_IIDR) or GICD_PIDR4 <= offset <= GICD_CIDR3:
            self.guest_error(("write", offset), f"write of {value:#x} to read-only offset {offset:#x}")
        else:
            self.guest_error(("write", offset), f"write of {value:#x} to reserved offset {offset:#x}")

    def _write_sgir(self, value: int) -> None:
        sgi = value & GICD_SGIR_SGIINTID_MASK
        target_filter = (value >> GICD_SGIR_TargetListFilter_SHIFT) & 3
        targets = (value >> GICD_SGIR_CPUTargetList_SHIFT) & 0xFF
        if target_filter == SGIR_FILTER_LIST:
            hit = bool(targets & 1)
        elif target_filter == SGIR_FILTER_SELF:
            hit = True
        elif target_filter == SGIR_FILTER_OTHERS:
            hit = False  # there is no other CPU
        else:
            self.guest_error(("sgir-filter",), f"GICD_SGIR write {value:#x} uses the reserved TargetListFilter 0b11")
            hit = False
        if hit:
            self.gic.pending |= 1 << sgi

    def _read_byte(self, offset: int) -> int:
        g = self.gic
        if GICD_IPRIORITYR <= offset < GICD_ITARGETSR:
            irq = offset - GICD_IPRIORITYR
            return g.priority[irq] if irq < g.num_irqs else 0
        if GICD_ITARGETSR <= offset < GICD_ICFGR:
            irq = offset - GICD_ITARGETSR
            return (g.target >> irq) & 1 if irq < g.num_irqs else 0
        # GICD_CPENDSGIR / GICD_SPENDSGIR: one byte per SGI, bit n = pending from CPU n.
        sgi = (offset - GICD_CPENDSGIR) % GIC_NR_SGIS
        return (g.pending >> sgi) & 1

    def _write_byte(self, offset: int, value: int) -> None:
        g = self.gic
        if GICD_IPRIORITYR <= offset < GICD_ITARGETSR:
            irq = offset - GICD_IPRIORITYR
            if irq < g.num_irqs:
                g.priority[irq] = value & GIC_PRIORITY_MASK
        elif GICD_ITARGETSR <= offset < GICD_ICFGR:
            irq = offset - GICD_ITARGETSR
            if GIC_INTERNAL <= irq < g.num_irqs:
                g.target = (g.target | (1 << irq)) if value & 1 else (g.target & ~(1 << irq))
        elif offset < GICD_SPENDSGIR:
            if value & 1:
                g.pending &= ~(1 << (offset - GICD_CPENDSGIR))
        elif value & 1:
            g.pending |= 1 << (offset - GICD_SPENDSGIR)


def _byte_register(offset: int) -> bool:
    """GICD_IPRIORITYR, GICD_ITARGETSR, GICD_CPENDSGIR and GICD_SPENDSGIR allow byte access."""
    return GICD_IPRIORITYR <= offset < GICD_ICFGR or GICD_CPENDSGIR <= offset < GICD_SPENDSGIR + 0x10


class GicCpuInterface(MmioDevice):
    """GICC: priority mask, acknowledge and end of interrupt for CPU 0."""

    name = "gic-cpu"
    size = 0x2000

    def __init__(self, gic: Gic) -> None:
        super().__init__()
        self.gic = gic

    # -- Device ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.gic.reset_cpu_interface()
        self.gic.update()

    def get_state(self) -> dict[str, Any]:
        g = self.gic
        return {"ctlr": g.cpu_ctlr, "pmr": g.pmr, "bpr": g.bpr, "apr": g.apr}

    def set_state(self, state: Mapping[str, Any]) -> None:
        g = self.gic
        ctlr = state_int(state, self.name, "ctlr")
        pmr = state_int(state, self.name, "pmr", bits=8)
        bpr = state_int(state, self.name, "bpr", bits=3)
        apr = state_int(state, self.name, "apr")
        if ctlr & ~GICC_CTLR_WRITABLE or pmr & ~GIC_PRIORITY_MASK or bpr < GIC_MIN_BPR:
            raise DeviceStateError(
                f"{self.name} state (ctlr={ctlr:#x}, pmr={pmr:#x}, bpr={bpr}) holds values the GIC cannot take"
            )
        g.cpu_ctlr, g.pmr, g.bpr, g.apr = ctlr, pmr, bpr, apr
        g.drive_output()

    # -- MMIO ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if not self._size_ok(offset, size, write=False):
            return 0
        g = self.gic
        if offset == GICC_CTLR:
            return g.cpu_ctlr
        if offset == GICC_PMR:
            return g.pmr
        if offset == GICC_BPR:
            return g.bpr
        if offset == GICC_IAR:
            return g.acknowledge()
        if offset == GICC_RPR:
            return g.running_priority()
        if offset == GICC_HPPIR:
            return g.highest_pending_id()
        if offset == GICC_APR0:
            return g.apr
        if offset in GICC_APR_RAZWI:
            return 0
        if offset == GICC_IIDR:
            return GICC_IIDR_VALUE
        if offset in (GICC_EOIR, GICC_DIR):
            self.guest_error(("read", offset), f"read of write-only offset {offset:#x}")
        else:
            self.guest_error(("read", offset), f"read of unimplemented offset {offset:#x}")
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        if not self._size_ok(offset, size, write=True):
            return
        g = self.gic
        value &= 0xFFFFFFFF
        if offset == GICC_CTLR:
            g.cpu_ctlr = value & GICC_CTLR_WRITABLE
        elif offset == GICC_PMR:
            g.pmr = value & GIC_PRIORITY_MASK
        elif offset == GICC_BPR:
            g.bpr = max(value & 7, GIC_MIN_BPR)
        elif offset == GICC_EOIR:
            self._end_of_interrupt(value & GICC_IAR_INTID_MASK)
        elif offset == GICC_DIR:
            if g.cpu_ctlr & GICC_CTLR_EOImode:
                self._deactivate(value & GICC_IAR_INTID_MASK)
            else:
                self.guest_error(("dir-eoimode0",), "GICC_DIR written while GICC_CTLR.EOImode is 0: ignored")
        elif offset == GICC_APR0:
            g.apr = value  # restoring saved state, as GIC save/restore code does
        elif offset in GICC_APR_RAZWI:
            pass
        elif offset in (GICC_IAR, GICC_RPR, GICC_HPPIR, GICC_IIDR):
            self.guest_error(("write", offset), f"write of {value:#x} to read-only offset {offset:#x}")
        else:
            self.guest_error(("write", offset), f"write of {value:#x} to unimplemented offset {offset:#x}")
        g.update()

    def _size_ok(self, offset: int, size: int, write: bool) -> bool:
        if not self.access_ok(offset, size, write):
            return False
        if size == 4:
            return True
        kind = "write" if write else "read"
        self.guest_error(("size", kind, offset, size), f"{size}-byte {kind} of word-only register {offset & ~3:#x}")
        return False

    def _end_of_interrupt(self, irq: int) -> None:
        g = self.gic
        if irq >= g.num_irqs:
            if irq < GIC_MAX_IRQS:
                self.guest_error(("eoi-range", irq), f"EOI of interrupt {irq}, beyond the {g.num_irqs} implemented")
            return  # EOI of a special ID (1020-1023) is ignored by design
        if not g.apr:
            self.guest_error(("eoi-idle",), f"EOI of interrupt {irq} with no active priority: ignored")
            return
        g.apr &= g.apr - 1  # priority drop: the highest active preemption level
        if not g.cpu_ctlr & GICC_CTLR_EOImode:
            self._deactivate(irq)

    def _deactivate(self, irq: int) -> None:
        g = self.gic
        if irq >= g.num_irqs or not g.active >> irq & 1:
            self.guest_error(("deactivate", irq), f"deactivation of interrupt {irq}, which is not active")
            return
        g.active &= ~(1 << irq)
