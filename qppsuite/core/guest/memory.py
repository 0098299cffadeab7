"""Guest memory for plugins: the one reader of virtual and physical memory the core provides.

Every read of a guest address is of hostile data.  The raising forms (:meth:`GuestMemory.read`...) raise
:class:`~qppsuite.core.memory.GuestMemoryError` when an address is unmapped or not RAM; the ``try_`` forms
return None instead, for the common case where a bad pointer is an answer, not an error.  Virtual addresses
are translated with the guest's own page tables (the current TTBR0, or another process's through ``ttbr0=``),
with the kernel's privilege: what the kernel could reach, including user pages Linux's software PAN hides
and resident pages whose hardware entry Linux left empty (:func:`qppsuite.core.memory.introspect`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import construct

from qppsuite.core.memory import GuestMemoryError, PhysicalMemory, VirtualMemory, introspect
from qppsuite.core.mmu import TranslationRegs


class GuestMemory:
    """Reads (and writes) of guest memory by virtual or physical address.

    Costs: a virtual read walks the page tables once per page it touches (a few µs); a physical read is a
    slice of guest RAM.  Plugins that read many words per event (osi_linux) take a :meth:`translator` and
    :attr:`ram` and cache translations themselves, for as long as no guest instruction ran.
    """

    __slots__ = ("_phys", "_regs", "_virt")

    def __init__(self, phys: PhysicalMemory, virt: VirtualMemory, regs: Callable[[], TranslationRegs]) -> None:
        self._phys = phys
        self._virt = virt
        self._regs = regs

    # -- virtual, raising ------------------------------------------------------------------------------------
    def read(self, vaddr: int, size: int, *, ttbr0: int | None = None) -> bytes:
        """``size`` bytes at ``vaddr``, crossing pages as the page tables map them."""
        return self._virt.read(vaddr, size, ttbr0=ttbr0)

    def read_u16(self, vaddr: int, *, ttbr0: int | None = None) -> int:
        """The little-endian halfword at ``vaddr``."""
        return self._virt.read_u16(vaddr, ttbr0=ttbr0)

    def read_u32(self, vaddr: int, *, ttbr0: int | None = None) -> int:
        """The little-endian word at ``vaddr``."""
        return self._virt.read_u32(vaddr, ttbr0=ttbr0)

    def read_u64(self, vaddr: int, *, ttbr0: int | None = None) -> int:
        """The little-endian doubleword at ``vaddr``."""
        return self._virt.read_u64(vaddr, ttbr0=ttbr0)

    def read_cstring(self, vaddr: int, limit: int = 4096, *, ttbr0: int | None = None) -> bytes:
        """The bytes before the first NUL, or ``limit`` bytes when none comes first."""
        return self._virt.read_cstring(vaddr, limit, ttbr0=ttbr0)

    def read_struct(self, layout: construct.Construct, vaddr: int, *, ttbr0: int | None = None) -> Any:
        """A ``construct`` struct of fixed size parsed at ``vaddr`` (a layout without a fixed size raises
        :class:`GuestMemoryError` too)."""
        return self._virt.read_struct(layout, vaddr, ttbr0=ttbr0)

    def translate(self, vaddr: int, *, ttbr0: int | None = None, write: bool = False) -> int:
        """The physical address of ``vaddr`` (for a ``write``: only where the kernel could write without a fault
        Linux handles, so never into a copy-on-write page)."""
        return self._virt.translate(vaddr, ttbr0=ttbr0, write=write)

    def write(self, vaddr: int, data: bytes, *, ttbr0: int | None = None) -> None:
        """Write ``data`` at ``vaddr``: changes what the guest sees; analysis plugins rarely should."""
        self._virt.write(vaddr, data, ttbr0=ttbr0)

    # -- virtual, returning None -----------------------------------------------------------------------------
    def try_read(self, vaddr: int, size: int, *, ttbr0: int | None = None) -> bytes | None:
        """:meth:`read`, or None when any byte is unreadable."""
        try:
            return self._virt.read(vaddr, size, ttbr0=ttbr0)
        except GuestMemoryError:
            return None

    def try_read_u32(self, vaddr: int, *, ttbr0: int | None = None) -> int | None:
        """:meth:`read_u32`, or None."""
        try:
            return self._virt.read_u32(vaddr, ttbr0=ttbr0)
        except GuestMemoryError:
            return None

    def try_read_cstring(self, vaddr: int, limit: int = 4096, *, ttbr0: int | None = None) -> bytes | None:
        """:meth:`read_cstring`, or None when the string's first byte, or one before its NUL, is unreadable."""
        try:
            return self._virt.read_cstring(vaddr, limit, ttbr0=ttbr0)
        except GuestMemoryError:
            return None

    def try_read_struct(self, layout: construct.Construct, vaddr: int, *, ttbr0: int | None = None) -> Any:
        """:meth:`read_struct`, or None."""
        try:
            return self._virt.read_struct(layout, vaddr, ttbr0=ttbr0)
        except GuestMemoryError:
            return None

    def try_translate(self, vaddr: int, *, ttbr0: int | None = None, write: bool = False) -> int | None:
        """:meth:`translate`, or None."""
        try:
            return self._virt.translate(vaddr, ttbr0=ttbr0, write=write)
        except GuestMemoryError:
            return None

    def translator(self, *, ttbr0: int | None = None) -> Callable[[int], int | None]:
        """A translation function bound to the translation registers as they are now (``ttbr0`` replaced).

        For reading through tables that do not change while it is used, such as the kernel's own
        (``swapper_pg_dir``, which Linux sets up once at boot): it saves reading the registers at every call.
        The function returns the physical address, or None where the walk faults.
        """
        regs = self._regs()
        if ttbr0 is not None:
            regs = regs._replace(ttbr0=ttbr0)
        read_u32 = self._phys.read_u32

        def translate(vaddr: int) -> int | None:
            result = introspect(read_u32, regs, vaddr & 0xFFFFFFFF)
            return result if type(result) is int else None

        return translate

    # -- physical --------------------------------------------------------------------------------------------
    @property
    def ram(self) -> memoryview:
        """Guest RAM as a read-only buffer: byte ``i`` is physical address ``ram_base + i``."""
        return self._phys.buf.toreadonly()

    @property
    def ram_base(self) -> int:
        """The physical address of RAM's first byte."""
        return self._phys.base

    def read_phys(self, paddr: int, size: int) -> bytes:
        """``size`` bytes of RAM at ``paddr``; :class:`GuestMemoryError` outside RAM."""
        return self._phys.read(paddr, size)

    def try_read_phys(self, paddr: int, size: int) -> bytes | None:
        """:meth:`read_phys`, or None outside RAM."""
        return self._phys.read(paddr, size) if self._phys.contains(paddr, size) else None

    def read_phys_u32(self, paddr: int) -> int | None:
        """The little-endian word at ``paddr``, or None outside RAM (the page walker's own reader)."""
        return self._phys.read_u32(paddr)
