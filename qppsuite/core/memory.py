"""Guest memory as plugins see it: physical and virtual reads and writes.

Plugins read untrusted guest pointers all the time, so every failure is a
:class:`GuestMemoryError` they can catch; nothing here may take down the run.
Virtual reads walk the guest's own page tables (the current TTBR0 or one the
caller names, e.g. another process's), with kernel privilege: introspection
sees what the kernel could see, regardless of the CPU's current mode.
:func:`introspect` is the one translation every reader of guest memory uses
(this module's :class:`VirtualMemory` and osi_linux's kernel reads): the
architectural walk, plus Linux's own page-table entry where the hardware one
is empty but the page is resident.
"""

import struct
from collections.abc import Callable
from typing import Any

import construct

from qppsuite.core.mmu import (
    ACCESS_READ,
    ACCESS_WRITE,
    FS_TRANSLATION_PAGE,
    TTBCR_N_MASK,
    MmuFault,
    TranslationRegs,
    walk,
)

PAGE_SIZE = 4096
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFFFFFF

PTE_HWTABLE_OFF = 2048
"""Bytes from a Linux PTE to the hardware PTE of the same page (arch/arm/include/asm/pgtable-2level.h:
one page holds two 256-entry Linux tables, then the two hardware tables the level-1 entries point at)."""
L_PTE_PRESENT = 1 << 0
L_PTE_DIRTY = 1 << 6
L_PTE_RDONLY = 1 << 7
L_PTE_NONE = 1 << 11
"""Linux PTE bits (pgtable-2level.h): present, dirty, read-only (also every copy-on-write page), and
PROT_NONE (present to the kernel, inaccessible)."""


def linux_pte(
    read_u32: Callable[[int], int | None], regs: TranslationRegs, vaddr: int, write: bool = False
) -> int | None:
    """The physical address Linux's own PTE gives ``vaddr``, or None.

    ARM Linux keeps a hardware small-page entry at 0 while the page is not
    "young" (cpu_v7_set_pte_ext, arch/arm/mm/proc-v7-2level.S: no L_PTE_YOUNG
    means no hardware mapping, so the first access faults and the kernel marks
    the page young).  After fork every page of the child is in that state
    although it is resident, and the kernel's own copy_from_user would fault it
    in at once.  Only the single-table configuration Linux uses (TTBCR.N = 0,
    short descriptors) is understood; a level-2 table that is not in the upper
    half of its page is not laid out by Linux, and gives None.

    For a ``write`` the page must be writable and already dirty: a read-only
    entry may be a copy-on-write page still shared with another process, and a
    clean one would let the kernel drop the page without writing it back.
    """
    if regs.ttbcr & (TTBCR_N_MASK | 0x80000000):
        return None
    l1 = read_u32((regs.ttbr0 & 0xFFFFC000) | ((vaddr >> 18) & 0x3FFC))
    if l1 is None or l1 & 3 != 1 or not l1 & PTE_HWTABLE_OFF:
        return None
    pte = read_u32(((l1 & 0xFFFFFC00) | ((vaddr >> 10) & 0x3FC)) - PTE_HWTABLE_OFF)
    if pte is None or pte & (L_PTE_PRESENT | L_PTE_NONE) != L_PTE_PRESENT:
        return None
    if write and pte & (L_PTE_RDONLY | L_PTE_DIRTY) != L_PTE_DIRTY:
        return None
    return (pte & 0xFFFFF000) | (vaddr & 0xFFF)


def introspect(
    read_u32: Callable[[int], int | None], regs: TranslationRegs, vaddr: int, write: bool = False
) -> int | MmuFault:
    """Physical address of ``vaddr`` as the kernel could reach it, or the fault that stops it.

    The walk runs privileged with every domain at "manager" (so Linux's
    software PAN does not hide user pages); where it ends in a translation
    fault on an empty small-page entry, Linux's PTE is consulted (:func:`linux_pte`).
    """
    if regs.dacr != 0xFFFFFFFF:  # built directly: _replace costs several times more, on every read
        regs = TranslationRegs(regs.sctlr, regs.ttbcr, regs.ttbr0, regs.ttbr1, 0xFFFFFFFF)
    result = walk(read_u32, regs, vaddr, ACCESS_WRITE if write else ACCESS_READ, True)
    if type(result) is tuple:
        return result[0]
    fault: MmuFault = result  # type: ignore[assignment]
    if fault.status == FS_TRANSLATION_PAGE:
        paddr = linux_pte(read_u32, regs, vaddr, write)
        if paddr is not None:
            return paddr
    return fault


class GuestMemoryError(Exception):
    """An access to a guest address that is not mapped, not RAM, or not permitted."""

    def __init__(self, address: int, reason: str = "unmapped") -> None:
        super().__init__(f"guest address {address:#x}: {reason}")
        self.address = address
        self.reason = reason


class PhysicalMemory:
    """Guest RAM: one contiguous buffer at ``base``, shared with the engine."""

    def __init__(self, buf: Any, base: int) -> None:
        self.buf = memoryview(buf)
        self.base = base
        self.size = len(self.buf)
        self.end = base + self.size
        unpack = struct.Struct("<I").unpack_from
        lo, hi = base, self.end - 4
        view = self.buf

        def read_u32(paddr: int) -> int | None:
            if lo <= paddr <= hi:
                return unpack(view, paddr - lo)[0]
            return None

        #: Fast descriptor reader for the MMU walk: None outside RAM.
        self.read_u32: Callable[[int], int | None] = read_u32

    def contains(self, paddr: int, size: int = 1) -> bool:
        """True if ``size`` (>= 0) bytes at ``paddr`` are all RAM; False for a negative size."""
        return size >= 0 and self.base <= paddr and paddr + size <= self.end

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes of RAM at ``paddr``; :class:`GuestMemoryError` outside RAM or for a negative size."""
        if size < 0:
            raise GuestMemoryError(paddr, f"negative size {size}")
        if not self.contains(paddr, size):
            raise GuestMemoryError(paddr, "not RAM")
        off = paddr - self.base
        return bytes(self.buf[off : off + size])

    def write(self, paddr: int, data: bytes) -> None:
        if not self.contains(paddr, len(data)):
            raise GuestMemoryError(paddr, "not RAM")
        off = paddr - self.base
        self.buf[off : off + len(data)] = data


class VirtualMemory:
    """Virtual reads and writes through the guest's page tables.

    ``regs`` supplies the live translation registers; ``ttbr0`` overrides the
    address space for user addresses (a process other than the current one).
    """

    def __init__(self, phys: PhysicalMemory, regs: Callable[[], TranslationRegs]) -> None:
        self.phys = phys
        self._regs = regs

    def translate(self, vaddr: int, *, ttbr0: int | None = None, write: bool = False) -> int:
        """Physical address of ``vaddr``; raises :class:`GuestMemoryError` when unmapped."""
        vaddr &= 0xFFFFFFFF
        regs = self._regs()
        if ttbr0 is not None:
            regs = regs._replace(ttbr0=ttbr0)
        result = introspect(self.phys.read_u32, regs, vaddr, write)
        if type(result) is not int:
            raise GuestMemoryError(vaddr, f"{result.name} fault")  # type: ignore[union-attr]
        return result

    def read(self, vaddr: int, size: int, *, ttbr0: int | None = None) -> bytes:
        """Read ``size`` bytes, crossing pages as the page tables say."""
        if size < 0:
            raise GuestMemoryError(vaddr, f"negative size {size}")
        out = bytearray()
        while size > 0:
            chunk = min(size, PAGE_SIZE - (vaddr & (PAGE_SIZE - 1)))
            out += self.phys.read(self.translate(vaddr, ttbr0=ttbr0), chunk)
            vaddr = (vaddr + chunk) & 0xFFFFFFFF
            size -= chunk
        return bytes(out)

    def write(self, vaddr: int, data: bytes, *, ttbr0: int | None = None) -> None:
        pos = 0
        while pos < len(data):
            chunk = min(len(data) - pos, PAGE_SIZE - (vaddr & (PAGE_SIZE - 1)))
            self.phys.write(self.translate(vaddr, ttbr0=ttbr0, write=True), data[pos : pos + chunk])
            vaddr = (vaddr + chunk) & 0xFFFFFFFF
            pos += chunk

    def read_u32(self, vaddr: int, *, ttbr0: int | None = None) -> int:
        if vaddr & 3 == 0:
            value = self.phys.read_u32(self.translate(vaddr, ttbr0=ttbr0))
            if value is not None:
                return value
        return int.from_bytes(self.read(vaddr, 4, ttbr0=ttbr0), "little")

    def read_u16(self, vaddr: int, *, ttbr0: int | None = None) -> int:
        return int.from_bytes(self.read(vaddr, 2, ttbr0=ttbr0), "little")

    def read_u64(self, vaddr: int, *, ttbr0: int | None = None) -> int:
        return int.from_bytes(self.read(vaddr, 8, ttbr0=ttbr0), "little")

    def read_cstring(self, vaddr: int, limit: int = 4096, *, ttbr0: int | None = None) -> bytes:
        """Bytes up to (not including) the NUL, or ``limit`` bytes if none comes first."""
        out = bytearray()
        while len(out) < limit:
            chunk = min(limit - len(out), PAGE_SIZE - (vaddr & (PAGE_SIZE - 1)))
            data = self.phys.read(self.translate(vaddr, ttbr0=ttbr0), chunk)
            nul = data.find(0)
            if nul >= 0:
                out += data[:nul]
                return bytes(out)
            out += data
            vaddr = (vaddr + chunk) & 0xFFFFFFFF
        return bytes(out)

    def read_struct(self, layout: construct.Construct, vaddr: int, *, ttbr0: int | None = None) -> Any:
        """Parse a ``construct`` struct of fixed size at ``vaddr``."""
        try:
            size = layout.sizeof()
        except construct.SizeofError as exc:
            raise GuestMemoryError(vaddr, f"struct has no fixed size: {exc}") from exc
        return layout.parse(self.read(vaddr, size, ttbr0=ttbr0))
