"""Guest memory as plugins see it: physical and virtual reads and writes.

Plugins read untrusted guest pointers all the time, so every failure is a
:class:`GuestMemoryError` they can catch; nothing here may take down the run.
Virtual reads walk the guest's own page tables (the current TTBR0 or one the
caller names, e.g. another process's), with kernel privilege: introspection
sees what the kernel could see, regardless of the CPU's current mode.
"""

import struct
from collections.abc import Callable
from typing import Any

import construct

from qppsuite.core.mmu import ACCESS_READ, ACCESS_WRITE, MmuFault, TranslationRegs, walk

PAGE_SIZE = 4096
PAGE_MASK = ~(PAGE_SIZE - 1) & 0xFFFFFFFF


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
        return self.base <= paddr and paddr + size <= self.end

    def read(self, paddr: int, size: int) -> bytes:
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
        # Introspection ignores domain PAN: use "manager" for all domains.
        regs = regs._replace(dacr=0xFFFFFFFF)
        result = walk(self.phys.read_u32, regs, vaddr, ACCESS_WRITE if write else ACCESS_READ, True)
        if isinstance(result, MmuFault):
            raise GuestMemoryError(vaddr, f"{result.name} fault")
        return result[0]

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
