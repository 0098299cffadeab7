"""Registers by their ARM ARM names, for plugins: reads, writes, other modes' banks, pre-bound readers."""

from __future__ import annotations

from collections.abc import Callable

from qppsuite.core.cpu import Cpu


class Registers:
    """The guest CPU's registers by name: ``r0``-``r12``, ``sp``, ``lr``, ``pc``, ``cpsr``, ``spsr`` (the current
    mode's bank; ``fp``, ``ip``, ``r13``-``r15`` too) and CP15 registers (``ttbr0``, ``contextidr``,
    ``tpidruro``, ``dfar``...: ARM ARM B4.1).  An unknown name raises ``KeyError`` listing the known ones.

    Each :meth:`read` is one engine call (about 0.3 µs); on a hot path take a :meth:`reader` once, in
    ``load()``, and call it: one engine call for all the registers it names.
    """

    __slots__ = ("_cpu", "banked", "read", "write")

    def __init__(self, cpu: Cpu) -> None:
        self._cpu = cpu
        # The CPU's own methods, bound here so that a call costs no extra Python frame.
        #: ``read(name) -> int``: the register's value (32 bits; the pc with bit 0 clear).
        self.read = cpu.read
        #: ``write(name, value)``: set a register; writing ``pc`` in Thumb state keeps the CPU in Thumb state.
        self.write = cpu.write
        #: ``banked(name, mode) -> int``: ``sp``, ``lr`` or ``spsr`` of another mode (``usr``, ``svc``, ``irq``,
        #: ``abt``, ``und``, ``fiq``); the kernel stack of the thread making a system call is
        #: ``banked("sp", "svc")``.  Four engine calls when the mode differs (the CPSR's mode is switched).
        self.banked = cpu.banked

    def reader(self, *names: str) -> Callable[[], tuple[int, ...]]:
        """A function returning the values of ``names`` in that order, read in one engine call.

        ``regs = self.machine.registers.reader("r0", "r7", "sp", "ttbr0")`` then ``r0, r7, sp, ttbr0 = regs()``.
        The pc is the engine's (bit 0 clear).
        """
        return self._cpu.reader(names)

    @property
    def pc(self) -> int:
        """Address of the next instruction (bit 0 clear in Thumb state too)."""
        return self._cpu.pc

    @property
    def cpsr(self) -> int:
        """The CPSR (ARM ARM B1.3.3): mode in bits 4:0, T in bit 5."""
        return self._cpu.cpsr

    @property
    def mode(self) -> str:
        """The processor mode's name: ``usr``, ``svc``, ``irq``, ``abt``, ``und``, ``fiq``, ``sys``."""
        return self._cpu.mode

    @property
    def thumb(self) -> bool:
        """Whether the CPU is in Thumb state."""
        return self._cpu.thumb

    @property
    def privileged(self) -> bool:
        """Whether the CPU runs at PL1 (the kernel), not in user mode."""
        return self._cpu.privileged
