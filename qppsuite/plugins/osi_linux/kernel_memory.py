"""Reads of untrusted guest kernel memory that never raise and never trust a pointer.

Every osi_linux query reads a few dozen words scattered over a handful of
pages, and a page walk costs microseconds, so translations are cached per
page, but only for one *epoch* (no guest instruction ran in between): page
tables are guest data too and may change whenever the guest runs.  A failed
translation is cached as well, so a garbage pointer costs one walk per epoch.
"""

import struct
from collections.abc import Callable

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PAGE_MASK = PAGE_SIZE - 1
_UNMAPPED = -1

_u32 = struct.Struct("<I").unpack_from


class KernelMemory:
    """Word, block and string reads of guest virtual memory; failures are ``None``.

    ``translate(vaddr)`` gives the physical address of a page-aligned virtual
    address or ``None``; ``ram``/``ram_base`` is guest RAM as a buffer.
    """

    def __init__(self, ram: memoryview, ram_base: int, translate: Callable[[int], int | None]) -> None:
        self._ram = ram
        self._ram_base = ram_base
        self._ram_size = len(ram)
        self._translate = translate
        self._pages: dict[int, int] = {}

    def invalidate(self) -> None:
        """Forget cached translations: the guest ran since they were made."""
        self._pages.clear()

    def set_translate(self, translate: Callable[[int], int | None]) -> None:
        self._translate = translate
        self._pages.clear()

    def _page(self, vpage: int) -> int:
        """Offset in RAM of virtual page number ``vpage``, or -1 when it is not RAM."""
        offset = self._pages.get(vpage)
        if offset is None:
            paddr = self._translate(vpage << PAGE_SHIFT)
            offset = _UNMAPPED
            if paddr is not None:
                rel = paddr - self._ram_base
                if 0 <= rel <= self._ram_size - PAGE_SIZE:
                    offset = rel
            self._pages[vpage] = offset
        return offset

    def physical(self, vaddr: int) -> int | None:
        """The physical address of ``vaddr``, or None when it is not mapped to RAM."""
        if not 0 <= vaddr <= 0xFFFFFFFF:
            return None
        offset = self._page(vaddr >> PAGE_SHIFT)
        return None if offset < 0 else self._ram_base + offset + (vaddr & PAGE_MASK)

    def u32(self, vaddr: int) -> int | None:
        """The little-endian word at ``vaddr``, or None."""
        if vaddr & 3 == 0 and 0 <= vaddr <= 0xFFFFFFFC:
            offset = self._page(vaddr >> PAGE_SHIFT)
            if offset < 0:
                return None
            return _u32(self._ram, offset + (vaddr & PAGE_MASK))[0]
        data = self.read(vaddr, 4)
        return None if data is None else int.from_bytes(data, "little")

    def read(self, vaddr: int, size: int) -> bytes | None:
        """``size`` bytes at ``vaddr`` (crossing pages as mapped), or None if any byte is unreadable."""
        if size < 0 or vaddr < 0 or vaddr + size > 1 << 32:
            return None
        ram = self._ram
        first = vaddr & PAGE_MASK
        if first + size <= PAGE_SIZE:
            offset = self._page(vaddr >> PAGE_SHIFT)
            if offset < 0:
                return None
            return bytes(ram[offset + first : offset + first + size])
        out = bytearray()
        while size > 0:
            chunk = min(size, PAGE_SIZE - (vaddr & PAGE_MASK))
            offset = self._page(vaddr >> PAGE_SHIFT)
            if offset < 0:
                return None
            start = offset + (vaddr & PAGE_MASK)
            out += ram[start : start + chunk]
            vaddr += chunk
            size -= chunk
        return bytes(out)

    def cstring(self, vaddr: int, limit: int) -> bytes | None:
        """Bytes before the first NUL within ``limit`` bytes (all of them if none), or None."""
        out = bytearray()
        while len(out) < limit:
            chunk = min(limit - len(out), PAGE_SIZE - (vaddr & PAGE_MASK))
            data = self.read(vaddr, chunk)
            if data is None:
                return None
            nul = data.find(0)
            if nul >= 0:
                out += data[:nul]
                return bytes(out)
            out += data
            vaddr += chunk
        return bytes(out)
