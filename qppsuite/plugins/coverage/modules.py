"""A process's modules (its executable files and where each is loaded), from its memory map.

A module is a file with at least one executable mapping (``/proc/PID/maps`` perms ``r-xp``).  Its
``base`` is where file offset 0 is mapped: the start of the file's mapping whose offset is 0 (the ELF
loader maps the first segment, which holds the ELF header, from offset 0: ``fs/binfmt_elf.c``,
``elf_map``; ld.so does the same for libraries), and block offsets in a drcov file are counted from it.
An executable mapping with no such mapping of its file before it (a file mapped from a later offset by
``mmap`` itself) gets ``base = start - offset``.  ``end`` is the end of the file's last mapping that
follows the base, before the file is mapped again from offset 0 (a second copy).  Anonymous mappings,
``[vdso]``, ``[sigpage]`` and ``[vectors]`` are no modules.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qppsuite.plugins.osi_linux.model import OsiMapping

PAGE = 0x1000


@dataclass(frozen=True)
class Module:
    """One loaded file: ``path`` as ``/proc/PID/maps`` names it, mapped at ``[base, end)`` (virtual); a path's
    bytes that are not UTF-8 are surrogate escapes in it (``os.fsdecode``'s form, lossless)."""

    path: str
    base: int
    end: int


def is_file(mapping: OsiMapping) -> bool:
    """A mapping of a file (``/...``), not ``[heap]``, ``[stack]``, ``[vdso]``, ``[anon:...]`` or anonymous."""
    return mapping.path.startswith("/")


def modules_from_mappings(mappings: Iterable[OsiMapping]) -> list[Module]:
    """The modules of a memory map (mappings in address order, as ``get_mappings`` gives them), by base."""
    groups: list[tuple[str, int, int, bool]] = []  # path, base, end, executable
    open_group: dict[str, int] = {}  # path -> index in groups of its latest copy
    for mapping in mappings:
        if not is_file(mapping) or mapping.partial:
            continue
        executable = mapping.perms[2:3] == "x"
        path = mapping.path_bytes.decode("utf-8", "surrogateescape")
        index = open_group.get(path)
        if mapping.offset == 0 or index is None or mapping.start < groups[index][1]:
            base = mapping.start - mapping.offset if mapping.offset <= mapping.start else mapping.start
            open_group[path] = len(groups)
            groups.append((path, base, mapping.end, executable))
        else:
            path, base, end, had_exec = groups[index]
            groups[index] = (path, base, max(end, mapping.end), had_exec or executable)
    return sorted(
        (Module(path, base, end) for path, base, end, executable in groups if executable),
        key=lambda module: module.base,
    )


def wanted(module: Module, selectors: Sequence[str]) -> bool:
    """Whether ``module`` is one the user named: by its full path or its file name; none named: every one."""
    if not selectors:
        return True
    name = module.path.rsplit("/", 1)[-1]
    return module.path in selectors or name in selectors


class ModuleMap:
    """The modules a process had during a run: a block's module is the one whose ``[base, end)`` holds it.

    Modules are added as the process's map is read again (a library loaded later); one that overlaps
    a known module of another path or base replaces it for later lookups (a library unloaded and another
    loaded there), while the old one keeps its id and its blocks.
    """

    def __init__(self) -> None:
        self.modules: list[Module] = []  # in order of first sight: the index is the drcov module id
        self._ids: dict[Module, int] = {}
        self._bases: list[int] = []  # sorted bases of the live modules
        self._live: list[int] = []  # module ids, parallel to _bases

    def update(self, modules: Iterable[Module]) -> None:
        """Take the modules of a fresh read of the process's map."""
        for module in modules:
            if module in self._ids and self._ids[module] in self._live:
                continue
            module_id = self._ids.get(module)
            if module_id is None:
                module_id = self._ids[module] = len(self.modules)
                self.modules.append(module)
            # drop the live modules it overlaps, then insert it
            keep = [
                (b, i)
                for b, i in zip(self._bases, self._live, strict=True)
                if self.modules[i].end <= module.base or b >= module.end
            ]
            keep.append((module.base, module_id))
            keep.sort()
            self._bases = [b for b, _ in keep]
            self._live = [i for _, i in keep]

    def find(self, pc: int) -> int | None:
        """The id of the live module holding ``pc``, or None."""
        at = bisect.bisect_right(self._bases, pc) - 1
        if at < 0:
            return None
        module_id = self._live[at]
        return module_id if pc < self.modules[module_id].end else None

    def __len__(self) -> int:
        return len(self.modules)
