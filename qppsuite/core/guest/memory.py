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

    __slots__ = (
        "_phys",
        "_regs",
        "_virt",
        "read",
        "read_cstring",
        "read_phys",
        "read_struct",
        "read_u16",
        "read_u32",
        "read_u64",
        "translate",
        "write",
    )

    def __init__(self, phys: PhysicalMemory, virt: VirtualMemory, regs: Callable[[], TranslationRegs]) -> None:
        self._phys = phys
        self._virt = virt
        self._regs = regs
        # The raising forms are the core reader's own methods, bound here so that a read costs no extra frame.
        #: ``read(vaddr, size, *, ttbr0=None) -> bytes``: ``size`` bytes at ``vaddr``, crossing pages as mapped.
        self.read = virt.read
        #: ``read_u16/u32/u64(vaddr, *, ttbr0=None) -> int``: a little-endian value at ``vaddr``.
        self.read_u16 = virt.read_u16
        self.read_u32 = virt.read_u32
        self.read_u64 = virt.read_u64
        #: ``read_cstring(vaddr, limit=4096, *, ttbr0=None) -> bytes``: the bytes before the first NUL, or
        #: ``limit`` bytes when none comes first.
        self.read_cstring = virt.read_cstring
        #: ``read_struct(layout, vaddr, *, ttbr0=None)``: a ``construct`` struct of fixed size parsed at ``vaddr``
        #: (a layout without a fixed size raises :class:`GuestMemoryError` too).
        self.read_struct = virt.read_struct
        #: ``translate(vaddr, *, ttbr0=None, write=False) -> int``: the physical address of ``vaddr`` (for a
        #: ``write``: only where the kernel could write without a fault Linux handles, so never into a
        #: copy-on-write page).
        self.translate = virt.translate
        #: ``write(vaddr, data, *, ttbr0=None)``: changes what the guest sees; analysis plugins rarely should.
        self.write = virt.write
        #: ``read_phys(paddr, size) -> bytes``: RAM at ``paddr``; :class:`GuestMemoryError` outside RAM.
        self.read_phys = phys.read

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
        # introspect walks with every domain open (DACR all ones): set once here, not rebuilt at every call.
        regs = regs._replace(dacr=0xFFFFFFFF) if ttbr0 is None else regs._replace(ttbr0=ttbr0, dacr=0xFFFFFFFF)
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

    def try_read_phys(self, paddr: int, size: int) -> bytes | None:
        """:meth:`read_phys`, or None outside RAM."""
        return self._phys.read(paddr, size) if self._phys.contains(paddr, size) else None

    def read_phys_u32(self, paddr: int) -> int | None:
        """The little-endian word at ``paddr``, or None outside RAM (the page walker's own reader)."""
        return self._phys.read_u32(paddr)
