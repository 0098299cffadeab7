"""The ARMv7-A CPU state the emulator must manage itself: registers, modes, exception entry.

Unicorn never vectors an exception into the guest (docs/engine.md), so the
entry sequence of ARM ARM B1.8 lives here: bank switch, SPSR, LR offset, CPSR
I/A/T/E/IT, vector base.  Register names follow the ARM ARM and Linux's
``arch/arm`` so plugin code reads like the manual.
"""

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from unicorn import arm_const as A

from qppsuite.core.engine import CpRegister, Engine
from qppsuite.core.mmu import SCTLR_EE, SCTLR_TE, SCTLR_V, TranslationRegs

# CPSR fields (B1.3.3)
CPSR_MODE_MASK = 0x1F
CPSR_T = 1 << 5
CPSR_F = 1 << 6
CPSR_I = 1 << 7
CPSR_A = 1 << 8
CPSR_E = 1 << 9
CPSR_J = 1 << 24
CPSR_IT_MASK = (0x3 << 25) | (0x3F << 10)

MODE_USR = 0x10
MODE_FIQ = 0x11
MODE_IRQ = 0x12
MODE_SVC = 0x13
MODE_MON = 0x16
MODE_ABT = 0x17
MODE_HYP = 0x1A
MODE_UND = 0x1B
MODE_SYS = 0x1F

MODE_NAMES = {
    MODE_USR: "usr",
    MODE_FIQ: "fiq",
    MODE_IRQ: "irq",
    MODE_SVC: "svc",
    MODE_MON: "mon",
    MODE_ABT: "abt",
    MODE_HYP: "hyp",
    MODE_UND: "und",
    MODE_SYS: "sys",
}
MODES_BY_NAME = {v: k for k, v in MODE_NAMES.items()}

_CORE_REGS: dict[str, int] = {f"r{i}": getattr(A, f"UC_ARM_REG_R{i}") for i in range(13)}
_CORE_REGS.update(
    sp=A.UC_ARM_REG_SP,
    r13=A.UC_ARM_REG_SP,
    lr=A.UC_ARM_REG_LR,
    r14=A.UC_ARM_REG_LR,
    pc=A.UC_ARM_REG_PC,
    r15=A.UC_ARM_REG_PC,
    cpsr=A.UC_ARM_REG_CPSR,
    spsr=A.UC_ARM_REG_SPSR,
    fp=A.UC_ARM_REG_R11,
    ip=A.UC_ARM_REG_R12,
)

#: The registers each mode banks (ARM ARM B1.3.2), by name.
_BANKED = {"sp": A.UC_ARM_REG_SP, "r13": A.UC_ARM_REG_SP, "lr": A.UC_ARM_REG_LR, "r14": A.UC_ARM_REG_LR,
           "spsr": A.UC_ARM_REG_SPSR}

# CP15 registers by ARM ARM name: (CRn, opc1, CRm, opc2)
CP15_REGS: dict[str, tuple[int, int, int, int]] = {
    "midr": (0, 0, 0, 0),
    "mpidr": (0, 0, 0, 5),
    "sctlr": (1, 0, 0, 0),
    "cpacr": (1, 0, 0, 2),
    "ttbr0": (2, 0, 0, 0),
    "ttbr1": (2, 0, 0, 1),
    "ttbcr": (2, 0, 0, 2),
    "dacr": (3, 0, 0, 0),
    "dfsr": (5, 0, 0, 0),
    "ifsr": (5, 0, 0, 1),
    "dfar": (6, 0, 0, 0),
    "ifar": (6, 0, 0, 2),
    "vbar": (12, 0, 0, 0),
    "contextidr": (13, 0, 0, 1),
    "tpidrurw": (13, 0, 0, 2),
    "tpidruro": (13, 0, 0, 3),
    "tpidrprw": (13, 0, 0, 4),
}


class ExceptionKind(Enum):
    """The PL1 exceptions the machine delivers, with their vector offset and target mode."""

    UNDEFINED = (0x04, MODE_UND)
    SVC = (0x08, MODE_SVC)
    PREFETCH_ABORT = (0x0C, MODE_ABT)
    DATA_ABORT = (0x10, MODE_ABT)
    IRQ = (0x18, MODE_IRQ)

    @property
    def offset(self) -> int:
        return self.value[0]

    @property
    def mode(self) -> int:
        return self.value[1]


@dataclass(frozen=True, slots=True)
class ExceptionEvent:
    """What plugins are told about an exception the guest takes.

    ``pc`` is the preferred return address's instruction (the faulting or
    interrupted one); ``fault_address``/``fault_status`` are set for aborts.
    """

    kind: ExceptionKind
    pc: int
    thumb: bool
    from_mode: str
    insn_count: int
    fault_address: int | None = None
    fault_status: int | None = None


class UnknownRegisterError(KeyError):
    """A register name that is neither a core nor a known CP15 register."""

    def __str__(self) -> str:
        known = ", ".join(sorted([*_CORE_REGS, *CP15_REGS]))
        return f"unknown register {self.args[0]!r}; known: {known}"


class Cpu:
    """Register access by name and exception entry for the one guest CPU."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cp15: dict[str, CpRegister] = {
            name: engine.cp15(name, *enc) for name, enc in CP15_REGS.items()
        }
        self.sctlr = self.cp15["sctlr"]
        self.ttbr0 = self.cp15["ttbr0"]
        self.ttbr1 = self.cp15["ttbr1"]
        self.ttbcr = self.cp15["ttbcr"]
        self.dacr = self.cp15["dacr"]
        self.vbar = self.cp15["vbar"]
        #: CPSR and the translation registers in one engine call (guest memory reads need them).
        self.translation_state = engine.batch_reader(
            [A.UC_ARM_REG_CPSR], [self.sctlr, self.ttbcr, self.ttbr0, self.ttbr1, self.dacr]
        )

    # -- registers by name ----------------------------------------------
    def read(self, name: str) -> int:
        """Read a core register (current mode's bank) or a CP15 register by name."""
        key = name.lower()
        reg = _CORE_REGS.get(key)
        if reg is not None:
            value = self.engine.reg(reg)
            if reg == A.UC_ARM_REG_PC:
                return value & ~1
            return value
        cp = self.cp15.get(key)
        if cp is None:
            raise UnknownRegisterError(name)
        return cp.read()

    def write(self, name: str, value: int) -> None:
        key = name.lower()
        reg = _CORE_REGS.get(key)
        if reg is not None:
            if reg == A.UC_ARM_REG_PC and self.engine.reg(A.UC_ARM_REG_CPSR) & CPSR_T:
                value |= 1
            self.engine.set_reg(reg, value)
            return
        cp = self.cp15.get(key)
        if cp is None:
            raise UnknownRegisterError(name)
        cp.write(value)

    def reader(self, names: Sequence[str]) -> Callable[[], tuple[int, ...]]:
        """A function reading ``names`` (core or CP15 registers) in one engine call, values in that order.

        The pc is read as the engine holds it (bit 0 clear).  Raises :class:`UnknownRegisterError`.
        """
        core: list[int] = []
        cp15: list[CpRegister] = []
        slots: list[tuple[bool, int]] = []
        for name in names:
            key = name.lower()
            if key in _CORE_REGS:
                slots.append((True, len(core)))
                core.append(_CORE_REGS[key])
            elif key in self.cp15:
                slots.append((False, len(cp15)))
                cp15.append(self.cp15[key])
            else:
                raise UnknownRegisterError(name)
        if len(slots) == 1:  # one register: one plain engine call, no batch
            reg_read = self.engine.reg
            if core:
                reg_id = core[0]
                return lambda: (reg_read(reg_id),)
            cp_read = cp15[0].read
            return lambda: (cp_read(),)
        read = self.engine.batch_reader(core, cp15)
        order = [index if is_core else len(core) + index for is_core, index in slots]
        if order == list(range(len(order))):
            return lambda: tuple(read())
        pick = operator.itemgetter(*order) if len(order) > 1 else (lambda values: (values[order[0]],))
        return lambda: pick(read())

    def banked(self, name: str, mode: str) -> int:
        """Read ``sp``, ``lr`` or ``spsr`` of another mode (e.g. the kernel stack from user mode): the engine
        shows only the current mode's bank, so the CPSR's mode is switched for the read and back."""
        target = MODES_BY_NAME[mode]
        reg = _BANKED.get(name.lower())
        if reg is None:
            raise UnknownRegisterError(name)
        return self.engine.banked(reg, target)

    @property
    def cpsr(self) -> int:
        return self.engine.reg(A.UC_ARM_REG_CPSR)

    @property
    def pc(self) -> int:
        return self.engine.reg(A.UC_ARM_REG_PC) & ~1

    @property
    def thumb(self) -> bool:
        return bool(self.cpsr & CPSR_T)

    @property
    def mode(self) -> str:
        return MODE_NAMES.get(self.cpsr & CPSR_MODE_MASK, "???")

    @property
    def privileged(self) -> bool:
        return self.cpsr & CPSR_MODE_MASK != MODE_USR

    def translation_regs(self) -> TranslationRegs:
        return TranslationRegs(*self.translation_state()[1:])

    def resume_address(self) -> int:
        """The address to hand to ``emu_start``: PC with bit 0 set in Thumb state."""
        return self.engine.reg(A.UC_ARM_REG_PC) | (1 if self.cpsr & CPSR_T else 0)

    # -- exception entry ----------------------------------------------------
    def enter(self, kind: ExceptionKind, lr: int) -> None:
        """Take ``kind`` with the given link value (ARM ARM B1.8.3, B1.9).

        The SPSR keeps the old CPSR exactly (IT bits included); the new CPSR
        clears IT and J, masks IRQs (and asynchronous aborts for aborts and IRQ),
        and takes T and E from SCTLR.TE/EE.
        """
        engine = self.engine
        old = engine.reg(A.UC_ARM_REG_CPSR)
        sctlr = self.sctlr.read()
        new = (old & ~(CPSR_MODE_MASK | CPSR_IT_MASK | CPSR_J | CPSR_T | CPSR_E)) | kind.mode | CPSR_I
        if kind in (ExceptionKind.PREFETCH_ABORT, ExceptionKind.DATA_ABORT, ExceptionKind.IRQ):
            new |= CPSR_A
        if sctlr & SCTLR_TE:
            new |= CPSR_T
        if sctlr & SCTLR_EE:
            new |= CPSR_E
        engine.set_reg(A.UC_ARM_REG_CPSR, new)  # switches to the target mode's bank
        engine.set_reg(A.UC_ARM_REG_SPSR, old)
        engine.set_reg(A.UC_ARM_REG_LR, lr)
        base = 0xFFFF0000 if sctlr & SCTLR_V else self.vbar.read() & 0xFFFFFFE0
        engine.set_reg(A.UC_ARM_REG_PC, base + kind.offset + (1 if new & CPSR_T else 0))
