"""Loaded kernel modules: the ``modules`` list, as ``/proc/modules`` (and ``lsmod``) show it.

The address is the module's text and the size the sum of its parts, as ``m_show`` prints them
(kernel/module/procfs.c): see ``KernelLayout.module_base`` and ``module_sizes``.
"""

from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import KernelLayout
from qppsuite.plugins.osi_linux.model import OsiModule

#: More modules than this means a corrupt or cyclic list.
MAX_MODULES = 4096


def read_modules(mem: KernelMemory, layout: KernelLayout) -> list[OsiModule]:
    """Every formed module, in list order; the walk stops at a broken link or a cycle."""
    head = layout.modules
    seen = {head}
    out: list[OsiModule] = []
    node = mem.u32(head)
    while node is not None and node != head and node not in seen and len(seen) <= MAX_MODULES:
        seen.add(node)
        module = node - layout.module_list
        state = mem.u32(module + layout.module_state)
        raw_name = mem.read(module + layout.module_name, layout.module_name_len)
        base = mem.u32(module + layout.module_base)
        sizes = [mem.u32(module + offset) for offset in layout.module_sizes]
        if state is None or raw_name is None or base is None or None in sizes:
            break
        if state != layout.module_unformed:  # /proc/modules skips modules still being loaded
            name = raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")
            out.append(OsiModule(name=name, base=base, size=sum(size or 0 for size in sizes)))
        node = mem.u32(node)
    return out
