"""Pull the kernel's debug ELF out of a Debian ``linux-image-*-dbg`` package.

The package is ~600 MB of xz, but ``vmlinux`` sits near the front of its data
member, followed by thousands of debug ``.ko`` files nobody here needs.  So the
package is *streamed*: the ar container is walked by hand (it is a 60-byte
header per member), the data member is fed to :mod:`tarfile` in stream mode, and
reading stops as soon as ``vmlinux`` has been copied out.  ``dpkg-deb -x`` would
decompress everything and need root-ish tooling; this needs neither.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from qppsuite.errors import BuildError

AR_MAGIC = b"!<arch>\n"
AR_HEADER_SIZE = 60
AR_FMAG = b"`\n"

DEBUG_BOOT_DIR = "usr/lib/debug/boot/"
VMLINUX_PREFIX = DEBUG_BOOT_DIR + "vmlinux-"
SYSTEM_MAP_PREFIX = DEBUG_BOOT_DIR + "System.map-"

# tarfile stream modes per data member suffix; zstd needs a module 3.11 lacks.
DATA_MEMBER_MODES = {
    "data.tar.xz": "r|xz",
    "data.tar.gz": "r|gz",
    "data.tar.bz2": "r|bz2",
    "data.tar": "r|",
}

COPY_CHUNK = 1 << 20


class _BoundedReader(io.RawIOBase):
    """A read-only window of ``size`` bytes of ``raw`` from its current position.

    tarfile's stream mode reads until EOF; without the bound it would run past
    the data member into whatever ar member follows.
    """

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw = raw
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        data = self._raw.read(want)
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)


def _ar_members(stream: BinaryIO, deb: Path) -> Iterator[tuple[str, int]]:
    """Yield ``(name, size)`` per ar member, leaving ``stream`` at the member's data.

    The caller may read any part of the data; the next iteration seeks past it.
    """
    if stream.read(len(AR_MAGIC)) != AR_MAGIC:
        raise BuildError(f"{deb} is not a Debian package (no ar archive header)")
    offset = len(AR_MAGIC)
    while True:
        stream.seek(offset)
        header = stream.read(AR_HEADER_SIZE)
        if not header:
            return
        if len(header) != AR_HEADER_SIZE or header[58:60] != AR_FMAG:
            raise BuildError(f"{deb} has a corrupt ar member header at byte {offset}")
        name = header[0:16].decode("ascii", "replace").rstrip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise BuildError(f"{deb} has a corrupt ar member size at byte {offset}") from exc
        yield name, size
        offset += AR_HEADER_SIZE + size + (size & 1)


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """Copy one member to ``dest`` atomically, so a killed run leaves no half-written vmlinux."""
    source = tar.extractfile(member)
    if source is None:
        raise BuildError(f"package member {member.name} is not a regular file")
    partial = dest.with_name(dest.name + ".part")
    with source, open(partial, "wb") as out:
        shutil.copyfileobj(source, out, COPY_CHUNK)
    os.replace(partial, dest)


def extract_vmlinux(dbg_deb: Path, dest_dir: Path) -> Path:
    """Extract ``vmlinux-<release>`` (and ``System.map-<release>`` if it precedes it) into ``dest_dir``.

    Returns the path of the extracted vmlinux.  Decompression stops right after
    vmlinux, so the cost is proportional to its position in the package, not
    to the package's size.
    """
    dbg_deb = Path(dbg_deb)
    dest_dir = Path(dest_dir)
    if not dbg_deb.is_file():
        raise BuildError(f"debug kernel package {dbg_deb} does not exist")
    dest_dir.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    with open(dbg_deb, "rb") as stream:
        for name, size in _ar_members(stream, dbg_deb):
            seen.append(name)
            mode = DATA_MEMBER_MODES.get(name)
            if mode is None:
                if name.startswith("data.tar"):
                    raise BuildError(
                        f"{dbg_deb.name} compresses its data as {name}; readable: "
                        + ", ".join(DATA_MEMBER_MODES)
                    )
                continue
            try:
                with tarfile.open(fileobj=_BoundedReader(stream, size), mode=mode) as tar:  # type: ignore[call-overload]
                    for member in tar:
                        path = member.name.removeprefix("./")
                        if not member.isfile():
                            continue
                        if path.startswith(SYSTEM_MAP_PREFIX):
                            _copy_member(tar, member, dest_dir / Path(path).name)
                        elif path.startswith(VMLINUX_PREFIX):
                            vmlinux = dest_dir / Path(path).name
                            _copy_member(tar, member, vmlinux)
                            return vmlinux
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise BuildError(f"cannot read {name} of {dbg_deb.name}: {exc}") from exc
            raise BuildError(f"{dbg_deb.name} has no ./{VMLINUX_PREFIX}* (is it a linux-image-*-dbg package?)")
    raise BuildError(f"{dbg_deb.name} has no data member; it has: {', '.join(seen) or 'nothing'}")
