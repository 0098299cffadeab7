"""A process's memory map as ``/proc/PID/maps`` prints it (``fs/proc/task_mmu.c: show_map_vma``).

Names follow the kernel's order of precedence: the backing file's path; a
special mapping's own name (``[vdso]``, ``[vvar]``, ``[sigpage]``: the
``vm_special_mapping`` that ``vm_private_data`` points at, whose first member
is the name); ``[heap]`` for the VMA overlapping ``start_brk..brk``;
``[stack]`` for the one holding ``start_stack``; ``[anon:NAME]``; else "".
The high vectors page is not in the tree: ARM's gate VMA adds it as
``[vectors]`` to every process map, as ``/proc`` does.

The VMAs come from the maple tree ``mm->mm_mt`` (6.1 on) or, before it, the
list ``mm->mmap`` linked by ``vm_next`` (5.10); the profile's ``mm_struct``
says which (:class:`~qppsuite.plugins.osi_linux.layout.KernelLayout`).
"""

import re
from dataclasses import replace

from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import KernelLayout
from qppsuite.plugins.osi_linux.maple_tree import maple_entries
from qppsuite.plugins.osi_linux.model import OsiMapping, split_text
from qppsuite.plugins.osi_linux.paths import PathReader

# include/linux/mm.h
VM_READ = 0x1
VM_WRITE = 0x2
VM_EXEC = 0x4
VM_MAYSHARE = 0x80
PAGE_SHIFT = 12
#: ARM's gate VMA (arch/arm/kernel/process.c, CONFIG_KUSER_HELPERS): the high vectors page.
VECTORS = OsiMapping(start=0xFFFF0000, end=0xFFFF1000, perms="r-xp", offset=0, path="[vectors]")
#: A VMA count above this (the default vm.max_map_count is 65530) means a corrupt tree.
MAX_MAP_COUNT = 65536
_SPECIAL_NAME = re.compile(rb"\[[\x21-\x5a\x5c\x5e-\x7e]{1,30}\]")
_ANON_NAME_MAX = 80


def perms_text(flags: int) -> str:
    return (
        ("r" if flags & VM_READ else "-")
        + ("w" if flags & VM_WRITE else "-")
        + ("x" if flags & VM_EXEC else "-")
        + ("s" if flags & VM_MAYSHARE else "p")
    )


class MappingReader:
    """Reads the VMAs of an ``mm_struct`` into :class:`OsiMapping` values; bounded, never raises."""

    def __init__(self, mem: KernelMemory, layout: KernelLayout, paths: PathReader) -> None:
        self.mem = mem
        self.layout = layout
        self.paths = paths
        fields = (layout.vma_start, layout.vma_end, layout.vma_flags, layout.vma_pgoff, layout.vma_file,
                  layout.vma_ops, layout.vma_private_data)
        self._vma_size = max(fields) + 4
        self._anon_name = layout.vma_anon_name

    def _kernel_pointer(self, value: int | None) -> bool:
        return value is not None and self.layout.page_offset <= value <= 0xFFFFF000 and value & 3 == 0

    def mappings(self, mm: int) -> list[OsiMapping]:
        """The map of ``mm`` in address order, the vectors page last; partial entries mark what failed."""
        layout = self.layout
        mem = self.mem
        if not self._kernel_pointer(mm):
            return []
        start_brk = mem.u32(mm + layout.mm_start_brk)
        brk = mem.u32(mm + layout.mm_brk)
        start_stack = mem.u32(mm + layout.mm_start_stack)
        if start_brk is None or brk is None or start_stack is None:
            return []
        found = self._vmas(mm)
        if found is None:
            return []
        vmas, complete = found
        out: list[OsiMapping] = []
        last_end = 0
        for vma in vmas:
            mapping = self._mapping(vma, start_brk, brk, start_stack)
            if mapping is None or mapping.start < last_end:
                complete = False
                continue
            last_end = mapping.end
            out.append(mapping)
        if not complete:
            if out:
                last = out[-1]
                out[-1] = replace(last, partial=True)
            else:
                return [OsiMapping(0, 0, "----", 0, "", partial=True)]
        out.append(VECTORS)
        return out

    def _vmas(self, mm: int) -> tuple[list[int], bool] | None:
        """The VMA addresses of ``mm`` in address order and whether the walk completed; None if unreadable."""
        layout, mem = self.layout, self.mem
        if layout.maple is not None:
            root = mem.u32(mm + layout.maple.mm_mt_root)
            if root is None:
                return None
            return maple_entries(mem, layout.maple, layout.page_offset, root, limit=MAX_MAP_COUNT)
        assert layout.vma_list is not None  # KernelLayout has exactly one of the two
        vma = mem.u32(mm + layout.vma_list.mm_mmap)
        if vma is None:
            return None
        out: list[int] = []
        seen: set[int] = set()
        while vma:
            if vma in seen or len(out) >= MAX_MAP_COUNT or not self._kernel_pointer(vma):
                return out, False
            seen.add(vma)
            out.append(vma)
            following = mem.u32(vma + layout.vma_list.vma_next)
            if following is None:
                return out, False
            vma = following
        return out, True

    def _mapping(self, vma: int, start_brk: int, brk: int, start_stack: int) -> OsiMapping | None:
        layout = self.layout
        if not self._kernel_pointer(vma):
            return None
        raw = self.mem.read(vma, self._vma_size)
        if raw is None:
            return None

        def field(offset: int) -> int:
            return int.from_bytes(raw[offset : offset + 4], "little")

        start, end, flags = field(layout.vma_start), field(layout.vma_end), field(layout.vma_flags)
        if start >= end or start & 0xFFF or end & 0xFFF:
            return None
        file, ops = field(layout.vma_file), field(layout.vma_ops)
        partial = truncated = False
        offset = 0
        path = ""
        raw_path: bytes | None = None
        if file:
            path, partial, truncated, raw_path = (
                self.paths.file_path(file) if self._kernel_pointer(file) else ("", True, False, None)
            )
            offset = (field(layout.vma_pgoff) << PAGE_SHIFT) & 0xFFFFFFFFFFFF
        else:
            special = self._special_name(field(layout.vma_private_data)) if ops else None
            if special is not None:
                path = special
            elif start <= brk and end >= start_brk:
                path = "[heap]"
            elif start <= start_stack <= end:
                path = "[stack]"
            elif self._anon_name is not None:
                path, raw_path = split_text(self._anon_vma_name(field(self._anon_name)))
        return OsiMapping(start, end, perms_text(flags), offset, path, partial, truncated, raw_path)

    def _special_name(self, private: int) -> str | None:
        """``vm_special_mapping.name`` when ``private`` points at one (a bracketed name), else None."""
        if not self._kernel_pointer(private):
            return None
        name_ptr = self.mem.u32(private)
        if name_ptr is None or not self.layout.page_offset <= name_ptr <= 0xFFFFF000:
            return None
        name = self.mem.cstring(name_ptr, 33)
        if name is None or not _SPECIAL_NAME.fullmatch(name):
            return None
        return name.decode("ascii")

    def _anon_vma_name(self, anon_name: int) -> bytes:
        """``[anon:NAME]`` for a VMA named with prctl(PR_SET_VMA_ANON_NAME); struct anon_vma_name is {kref; name[]}."""
        if not anon_name or not self._kernel_pointer(anon_name):
            return b""
        name = self.mem.cstring(anon_name + 4, _ANON_NAME_MAX)
        return b"[anon:" + name + b"]" if name else b""
