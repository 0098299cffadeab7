"""drcov files, as DynamoRIO's ``drcov`` client writes them: version 2, module table version 2, binary blocks.

The layout (what Lighthouse's ``lighthouse/reader/parsers/drcov.py``, Cartographer's ``CoverageFile``
and Dragon Dance's ``DynamorioDataSource`` read)::

    DRCOV VERSION: 2
    DRCOV FLAVOR: drcov
    Module Table: version 2, count N
    Columns: id, base, end, entry, checksum, timestamp, path
      0, 0x00400000, 0x00654000, 0x0041c0f1, 0x00000000, 0x00000000, /usr/bin/python3.11
    ...
    BB Table: M bbs
    <M entries of struct { uint32 start; uint16 size; uint16 mod_id }, little-endian, packed>

``start`` is the block's offset from its module's ``base``, ``size`` its length in bytes, ``mod_id``
the module's ``id``, which is its line's index in the table (Cartographer looks modules up by that
index).  ``checksum`` and ``timestamp`` are a PE image's (DynamoRIO fills them on Windows); an ELF has
neither, so they are 0.

The readers split a module line at commas (Cartographer and Dragon Dance at every ``,``, Lighthouse
at ``, ``) and take the last field as the path, and read the table line by line: a path holding a
comma, a line break or another control character would break the file, so such characters are
written as ``%XX`` (and ``%`` itself as ``%25``), and so is each byte of a path that is not UTF-8 (held
in ``path`` as a surrogate escape, ``os.fsdecode``'s form), so that the table is UTF-8 text.
Lighthouse matches a module to the database by its file name, which is therefore kept as is unless it
holds one of them.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BB_ENTRY = struct.Struct("<IHH")
"""``bb_entry_t``: start (offset from the module base), size in bytes, module id."""
MAX_MODULES = 0x10000
"""``mod_id`` is 16 bits."""
_UNSAFE = re.compile("[\x00-\x1f\x7f,%\udc80-\udcff]")
SURROGATE_ESCAPE = 0xDC00
"""``bytes.decode(..., "surrogateescape")`` holds a byte 0x80-0xFF that is not UTF-8 as U+DC80-U+DCFF."""


@dataclass(frozen=True)
class DrcovModule:
    """A line of the module table: ``path`` loaded at ``[base, end)``, its entry point (0: unknown)."""

    path: str
    base: int
    end: int
    entry: int = 0


def escape_path(path: str) -> str:
    """``path`` with commas, control characters, ``%`` and bytes that are not UTF-8 (surrogate escapes) written
    as ``%XX`` (see the module docstring)."""
    return _UNSAFE.sub(lambda match: f"%{ord(match.group()) & ~SURROGATE_ESCAPE:02X}", path)


def render(modules: Sequence[DrcovModule], blocks: Iterable[tuple[int, int, int]]) -> bytes:
    """The whole file: ``blocks`` are ``(module id, offset, size)``, module ids indexing ``modules``.

    Raises ValueError for more than 65536 modules or a module id out of range (offsets in a 32-bit
    guest and the size of a translated block always fit their fields).
    """
    if len(modules) > MAX_MODULES:
        raise ValueError(f"drcov holds at most {MAX_MODULES} modules, not {len(modules)}")
    lines = [
        "DRCOV VERSION: 2",
        "DRCOV FLAVOR: drcov",
        f"Module Table: version 2, count {len(modules)}",
        "Columns: id, base, end, entry, checksum, timestamp, path",
    ]
    for index, module in enumerate(modules):
        lines.append(
            f"{index:3d}, {module.base:#010x}, {module.end:#010x}, {module.entry:#010x}, "
            f"{0:#010x}, {0:#010x}, {escape_path(module.path)}"
        )
    table = bytearray()
    count = 0
    for module_id, offset, size in blocks:
        if not 0 <= module_id < len(modules):
            raise ValueError(f"block at offset {offset:#x} names module {module_id}, not in the table")
        table += BB_ENTRY.pack(offset, size, module_id)
        count += 1
    lines.append(f"BB Table: {count} bbs")
    return ("\n".join(lines) + "\n").encode() + bytes(table)


def write(path: Path, modules: Sequence[DrcovModule], blocks: Iterable[tuple[int, int, int]]) -> None:
    """Write :func:`render`'s file to ``path`` (replaced if it exists)."""
    path.write_bytes(render(modules, blocks))
