"""The maple tree (``mm->mm_mt``, Linux 6.1 on), read from guest memory: the VMAs of an address space.

Node encoding as in ``lib/maple_tree.c`` (6.1, unchanged in 6.12): an encoded node (``mt_mk_node``)
is the 256-byte aligned node address with its type in bits 3-6 and bit 2
(``MAPLE_ENODE_NULL``) set; only the tree's root pointer also carries the
``0x2`` root tag (``mte_mk_root``), so a child slot of an internal node has
low bits ``100`` while ``ma_root`` has ``110``.  ``maple_range_64`` nodes and their leaves hold 31
pivots and 32 slots; ``maple_arange_64`` nodes 20 pivots, 21 slots and gaps.
A node's used length comes from ``ma_data_end``'s rules: the metadata ``end``
when the last pivot is unused, else the last pivot (full node).
"""

import struct

from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import MapleLayout

MAPLE_NODE_MASK = 0xFF
MAPLE_NODE_TYPE_SHIFT = 3
MAPLE_NODE_TYPE_MASK = 0x0F
MAPLE_NODE_SIZE = 256
#: Bounds for a walk of untrusted memory: deeper or bigger trees are corrupt.
MAX_DEPTH = 16
MAX_NODES = 4096


MAPLE_ROOT_NODE = 0x02
MAPLE_ENODE_NULL = 0x04


def is_node(entry: int) -> bool:
    """``xa_is_node`` for ``ma_root``: the root tag on an entry above the reserved range."""
    return entry & 3 == MAPLE_ROOT_NODE and entry > 4096


def is_child(entry: int) -> bool:
    """An encoded node in an internal node's slot: ``MAPLE_ENODE_NULL`` set, no root tag."""
    return entry & 7 == MAPLE_ENODE_NULL and entry > 4096


def maple_entries(
    mem: KernelMemory, layout: MapleLayout, page_offset: int, root: int, *, limit: int = 65536
) -> tuple[list[int], bool]:
    """The non-empty leaf entries of the tree whose ``ma_root`` is ``root``, in index order.

    Nodes below ``page_offset`` (not kernel memory) end the walk as unreadable ones do.

    Returns the entries and whether the walk was complete (False on an
    unreadable node, an unknown node type, a revisited node or a bound hit).
    """
    if root == 0:
        return [], True
    if not is_node(root):
        return [root], True  # a single entry stored in the root itself
    out: list[int] = []
    seen: set[int] = set()
    complete = _walk(mem, layout, page_offset, root, 0xFFFFFFFF, 0, seen, out, limit)
    return out, complete


def _walk(
    mem: KernelMemory, layout: MapleLayout, page_offset: int, enode: int, node_max: int, depth: int,
    seen: set[int], out: list[int], limit: int,
) -> bool:
    node = enode & ~MAPLE_NODE_MASK
    kind = (enode >> MAPLE_NODE_TYPE_SHIFT) & MAPLE_NODE_TYPE_MASK
    if depth > MAX_DEPTH or node in seen or len(seen) >= MAX_NODES or node < page_offset:
        return False
    seen.add(node)
    raw = mem.read(node, MAPLE_NODE_SIZE)
    if raw is None:
        return False
    if kind == layout.maple_arange_64:
        nslots, pivot_at, slot_at = layout.arange64_slots, layout.arange64_pivot, layout.arange64_slot
        end = raw[layout.arange64_meta_end]
    elif kind in (layout.maple_range_64, layout.maple_leaf_64):
        nslots, pivot_at, slot_at = layout.range64_slots, layout.range64_pivot, layout.range64_slot
        end = -1
    else:
        return False  # maple_dense never holds an mm's VMAs
    npivots = nslots - 1
    pivots = struct.unpack_from(f"<{npivots}I", raw, pivot_at)
    slots = struct.unpack_from(f"<{nslots}I", raw, slot_at)
    if end < 0:
        last = pivots[npivots - 1]
        if last == 0:
            end = raw[layout.range64_meta_end]
        elif last == node_max:
            end = npivots - 1
        else:
            end = npivots
    if end >= nslots:
        return False
    leaf = kind == layout.maple_leaf_64
    complete = True
    for i in range(end + 1):
        entry = slots[i]
        if entry == 0:
            continue
        if leaf:
            if len(out) >= limit:
                return False
            out.append(entry)
            continue
        child_max = pivots[i] if i < npivots and (pivots[i] or i == 0) else node_max
        if not is_child(entry) or not _walk(mem, layout, page_offset, entry, child_max, depth + 1, seen, out, limit):
            complete = False
    return complete
