"""Machine snapshots: the whole machine between two runs of its loop, to a file and back.

A :class:`Snapshot` holds the CPU (the engine's own context: every mode's
banked registers, CP15, VFP/NEON, as Unicorn keeps them), guest RAM (its
non-zero 4 KiB pages only), every device's explicit state, the virtual clock
and the run loop's own state.  Restored into a machine built from the same
image, RAM size and boot arguments (:meth:`Machine.restore`), the run goes on
exactly as the run that saved it did: the same console output, the same
instruction counts (tests/test_snapshot.py).

The file is a zip archive (the standard library's ``zipfile``: a CRC per
member, so a truncated or damaged file is caught) of ``meta.json`` (format,
what the snapshot is valid for, the sha256 of every other member, checked on
reading, so an edited member is refused too), ``cpu.bin``, ``ram.pages``
(little-endian u32 page numbers), ``ram.bin`` (those pages, in order) and
``state.json``.  The CPU context is raw engine state, restored as it is, so a
snapshot is only read back by the qppsuite that wrote it (``key`` says which).
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qppsuite.errors import QppsuiteError

SNAPSHOT_FORMAT = 1
PAGE_SIZE = 4096
_ZERO_PAGE = bytes(PAGE_SIZE)
_MEMBERS = ("cpu.bin", "ram.pages", "ram.bin", "state.json")


class SnapshotError(QppsuiteError):
    """A snapshot file that cannot be used: damaged, edited, or made for another machine."""

    exit_code = 2


@dataclass(frozen=True)
class Snapshot:
    """The machine at one instant.

    ``cpu``: the engine's context bytes; ``pages``: RAM page numbers (4 KiB,
    from the start of RAM) that are not all zero, and ``ram`` their contents in
    that order; ``ram_size``: bytes of RAM; ``state``: devices, clock and run
    loop, as JSON values; ``key``: what the snapshot is valid for (set by the
    caller: image file hashes, boot arguments, qppsuite version...).
    """

    cpu: bytes
    ram_size: int
    pages: array[int]
    ram: bytes
    state: dict[str, Any]
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def insn_count(self) -> int:
        return int(self.state["clock"]["retired"])


def nonzero_pages(ram: bytes | memoryview | Any) -> tuple[array[int], bytes]:
    """(page numbers, contents) of the 4 KiB pages of ``ram`` that are not all zero."""
    view = memoryview(ram)
    pages = array("I")
    chunks = []
    for number in range(len(view) // PAGE_SIZE):
        page = view[number * PAGE_SIZE : (number + 1) * PAGE_SIZE]
        if page != _ZERO_PAGE:
            pages.append(number)
            chunks.append(page)
    return pages, b"".join(chunks)


def write(snapshot: Snapshot, path: Path, *, replace: bool = True) -> None:
    """Write ``snapshot`` to ``path``, whole: written beside it under a name of this process's, then renamed
    over it, or, with ``replace`` False, linked to it so that a file another process put there first stays
    (:class:`SnapshotError` then)."""
    members = {
        "cpu.bin": snapshot.cpu,
        "ram.pages": snapshot.pages.tobytes(),
        "ram.bin": snapshot.ram,
        "state.json": json.dumps(snapshot.state, sort_keys=True).encode(),
    }
    meta = {
        "format": SNAPSHOT_FORMAT,
        "ram_size": snapshot.ram_size,
        "key": snapshot.key,
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
    }
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # two processes never share one
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr("meta.json", json.dumps(meta, sort_keys=True))
            for name, data in members.items():
                archive.writestr(name, data)
        if replace:
            partial.replace(path)
        else:
            os.link(partial, path)  # fails if the name exists, whoever made it meanwhile
    except FileExistsError:
        raise SnapshotError(f"snapshot {path} was made by another run meanwhile: not overwritten") from None
    except OSError as exc:
        raise SnapshotError(f"cannot write snapshot {path}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def read(path: Path) -> Snapshot:
    """The snapshot in ``path``; a file that is missing, damaged, edited or of another format is one
    :class:`SnapshotError` line."""
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("meta.json"))
            if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
                found = meta.get("format") if isinstance(meta, dict) else None
                raise SnapshotError(f"snapshot {path} has format {found!r}; this qppsuite reads {SNAPSHOT_FORMAT}")
            digests = meta.get("sha256")
            members = {name: archive.read(name) for name in _MEMBERS}
    except FileNotFoundError:
        raise SnapshotError(f"snapshot {path} does not exist") from None
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise SnapshotError(f"snapshot {path} is damaged: {' '.join(str(exc).split())}") from None
    for name, data in members.items():
        if not isinstance(digests, dict) or digests.get(name) != hashlib.sha256(data).hexdigest():
            raise SnapshotError(f"snapshot {path} is damaged: {name} does not match its recorded sha256")
    pages = array("I")
    if len(members["ram.pages"]) % pages.itemsize or not isinstance(meta.get("ram_size"), int):
        raise SnapshotError(f"snapshot {path} is damaged: its RAM index is malformed")
    pages.frombytes(members["ram.pages"])
    ram_size = meta["ram_size"]
    if len(members["ram.bin"]) != len(pages) * PAGE_SIZE or any(p >= ram_size // PAGE_SIZE for p in pages):
        raise SnapshotError(f"snapshot {path} is damaged: its RAM pages do not fit {ram_size} bytes")
    try:
        state = json.loads(members["state.json"])
    except (ValueError, RecursionError):
        state = None
    if not isinstance(state, dict):
        raise SnapshotError(f"snapshot {path} is damaged: state.json is not an object")
    key = meta["key"] if isinstance(meta.get("key"), dict) else {}
    return Snapshot(members["cpu.bin"], ram_size, pages, members["ram.bin"], state, key)


def describe(path: Path) -> tuple[dict[str, Any], int]:
    """(key, instruction count from power-on) of the snapshot in ``path``, from its two small members,
    without checking the others (for listing: :func:`read` checks everything); a file that is no readable
    snapshot is one :class:`SnapshotError` line."""
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("meta.json"))
            state = json.loads(archive.read("state.json"))
        key, count = meta["key"], state["clock"]["retired"]
    except (OSError, KeyError, TypeError, ValueError, RecursionError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise SnapshotError(f"snapshot {path} is damaged: {' '.join(str(exc).split())}") from None
    if not isinstance(key, dict) or not isinstance(count, int):
        raise SnapshotError(f"snapshot {path} is damaged: its key or instruction count is malformed")
    return key, count
