"""Initramfs archives: a reproducible newc cpio writer, its reader, and the file tree.

Linux unpacks a (possibly gzip'd) "newc" cpio into its rootfs before running
``/init``, and unpacks *concatenated* archives in order, later entries replacing
earlier ones.  That is how ``qppsuite run --cmd`` delivers a command without
rebuilding an image: :func:`overlay_archive` makes a tiny archive that is
appended to the image's initrd.

Reproducibility is the point of writing this by hand rather than calling
``cpio``: entries are sorted, owned by root, stamped with one fixed mtime, get
inode numbers in sort order, and the gzip header carries mtime 0, so the same
tree always yields the same bytes.
"""

from __future__ import annotations

import dataclasses
import gzip
import re
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from qppsuite.errors import ImageError

NEWC_MAGIC = b"070701"
NEWC_HEADER_SIZE = 110
NEWC_FIELDS = (
    "ino", "mode", "uid", "gid", "nlink", "mtime", "filesize",
    "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check",
)  # fmt: skip
TRAILER_NAME = "TRAILER!!!"

# One timestamp for every entry; 0 keeps the guest's `ls -l` output stable too.
FIXED_MTIME = 0


@dataclass(frozen=True)
class CpioEntry:
    """One archive member: ``path`` is relative to the guest's root, without a leading slash."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)
    uid: int = 0
    gid: int = 0

    @classmethod
    def file(cls, path: str, data: bytes, perm: int = 0o644) -> CpioEntry:
        return cls(normalize_path(path), stat.S_IFREG | perm, data)

    @classmethod
    def directory(cls, path: str, perm: int = 0o755) -> CpioEntry:
        return cls(normalize_path(path), stat.S_IFDIR | perm)

    @classmethod
    def symlink(cls, path: str, target: str) -> CpioEntry:
        return cls(normalize_path(path), stat.S_IFLNK | 0o777, target.encode())

    @classmethod
    def char_device(cls, path: str, major: int, minor: int, perm: int = 0o600) -> CpioEntry:
        return cls(normalize_path(path), stat.S_IFCHR | perm, b"", (major, minor))

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def normalize_path(path: str) -> str:
    """Canonical member name: relative, no ``.``/``..``, no doubled slashes.

    ``..`` is refused rather than resolved: a package or ``--cmd`` overlay must
    never be able to name something outside the archive's root.
    """
    parts = [p for p in PurePosixPath(path).parts if p not in ("/", ".")]
    if not parts or ".." in parts:
        raise ImageError(f"invalid initramfs path {path!r}: must name something below /")
    return "/".join(parts)


def _sort_key(path: str) -> list[str]:
    # Component-wise order puts every directory before its contents ("a" < "a/b" < "a-b").
    return path.split("/")


def with_parent_directories(entries: Iterable[CpioEntry]) -> list[CpioEntry]:
    """Add a 0755 directory entry for every parent that has none.

    The kernel's unpacker does not create missing parents: a file whose
    directory is absent is silently dropped.
    """
    by_path = {e.path: e for e in entries}
    for path in list(by_path):
        parent = PurePosixPath(path).parent
        while str(parent) != ".":
            by_path.setdefault(str(parent), CpioEntry.directory(str(parent)))
            parent = parent.parent
    return list(by_path.values())


def _header(fields: dict[str, int]) -> bytes:
    return NEWC_MAGIC + b"".join(b"%08X" % fields[name] for name in NEWC_FIELDS)


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def cpio_newc(entries: Iterable[CpioEntry]) -> bytes:
    """Serialize ``entries`` as an uncompressed newc cpio, sorted and reproducible.

    Every entry gets its own inode number and ``nlink`` 1 (2 for directories):
    the kernel treats equal (ino, nlink>1) regular files as hard links, so
    reusing numbers would silently alias unrelated files.
    """
    ordered = sorted(entries, key=lambda e: _sort_key(e.path))
    seen: set[str] = set()
    out = bytearray()
    for ino, entry in enumerate(ordered, start=1):
        if entry.path in seen:
            raise ImageError(f"initramfs path {entry.path!r} appears twice")
        seen.add(entry.path)
        _append(out, ino, entry)
    _append(out, 0, CpioEntry(TRAILER_NAME, 0))
    return bytes(out)


def _append(out: bytearray, ino: int, entry: CpioEntry) -> None:
    name = entry.path.encode("utf-8", "surrogateescape") + b"\0"
    fields = {
        "ino": ino,
        "mode": entry.mode,
        "uid": entry.uid,
        "gid": entry.gid,
        "nlink": 2 if entry.is_dir else 1,
        "mtime": FIXED_MTIME,
        "filesize": len(entry.data),
        "devmajor": 0,
        "devminor": 0,
        "rdevmajor": entry.rdev[0],
        "rdevminor": entry.rdev[1],
        "namesize": len(name),
        "check": 0,
    }
    header = _header(fields)
    out += header + name + _pad4(len(header) + len(name))
    out += entry.data + _pad4(len(entry.data))


def read_cpio_newc(archive: bytes) -> list[CpioEntry]:
    """Parse one or more concatenated uncompressed newc archives, in archive order.

    Reading back is how the builder checks its own output and how tests
    inspect an initrd without external tools.  Truncation or garbage raises
    :class:`ImageError` naming the offset, never a bare ``IndexError``.
    """
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        pos = _skip_padding(archive, pos)  # zeros pad archives after their trailers
        if pos == len(archive):
            break
        header = archive[pos : pos + NEWC_HEADER_SIZE]
        if len(header) < NEWC_HEADER_SIZE or header[:6] != NEWC_MAGIC:
            raise ImageError(f"not a newc cpio header at byte {pos} (truncated or corrupt archive)")
        try:
            values = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(len(NEWC_FIELDS))]
        except ValueError:
            raise ImageError(f"corrupt newc cpio header at byte {pos}") from None
        fields = dict(zip(NEWC_FIELDS, values, strict=True))
        name_start = pos + NEWC_HEADER_SIZE
        name_end = name_start + fields["namesize"]
        data_start = name_end + (-(name_end - pos) % 4)
        data_end = data_start + fields["filesize"]
        if data_end > len(archive):
            raise ImageError(f"cpio archive truncated in the entry at byte {pos}")
        name = archive[name_start : name_end - 1].decode("utf-8", "surrogateescape")
        pos = data_end + (-fields["filesize"] % 4)
        if name == TRAILER_NAME:
            continue
        entries.append(
            CpioEntry(
                name,
                fields["mode"],
                archive[data_start:data_end],
                (fields["rdevmajor"], fields["rdevminor"]),
                fields["uid"],
                fields["gid"],
            )
        )
    return entries


_NOT_ZERO = re.compile(rb"[^\0]")


def _skip_padding(archive: bytes, pos: int) -> int:
    """The offset of the first byte from ``pos`` that is not zero (the end if none is): found without copying,
    which made reading a 120 MB initrd quadratic."""
    found = _NOT_ZERO.search(archive, pos)
    return len(archive) if found is None else found.start()


def gzip_reproducible(data: bytes) -> bytes:
    """gzip with mtime 0 and no file name, so equal input gives equal bytes."""
    return gzip.compress(data, compresslevel=9, mtime=0)


def gunzip_members(data: bytes) -> bytes:
    """Decompress a gzip stream that may be several concatenated members (initrd + overlays)."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as err:
        raise ImageError(f"initrd is not a complete gzip stream: {err}") from None


def overlay_archive(files: dict[str, bytes]) -> bytes:
    """A gzip'd newc cpio holding ``files`` (guest path -> content) and their parent directories.

    Appended to an image's initrd it adds or replaces those files at boot; the
    parents are included because the kernel does not create them.
    """
    entries = [CpioEntry.file(path, data) for path, data in files.items()]
    return gzip_reproducible(cpio_newc(with_parent_directories(entries)))


# Package content the guest never runs or reads; dropping it keeps the rootfs (which
# lives in guest RAM) small.  Copyright files stay.
SKIPPED_PREFIXES = (
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/lintian/",
    "usr/share/doc/",
    "usr/share/initramfs-tools/",  # host-side hooks for Debian's own initramfs
)
KEPT_DOC_SUFFIX = "/copyright"


class InitramfsTree:
    """The guest's root filesystem being assembled, path -> entry; later additions win.

    "Later wins" is deliberate: packages the user asked for replace busybox's
    applet links of the same name, as installing them on a real system would.

    With ``merged_usr`` the tree has Debian's merged-/usr layout (trixie's
    packages ship only ``/usr/bin``, ``/usr/lib``, and rely on ``/bin``,
    ``/sbin`` and ``/lib`` being links to them, as usrmerge makes on a real
    system): those three are symlinks, and any path under them is stored
    under ``usr/``, so the archive never writes through a symlink.
    """

    MERGED_DIRECTORIES = ("bin", "sbin", "lib")

    def __init__(self, *, merged_usr: bool = False) -> None:
        self._entries: dict[str, CpioEntry] = {}
        self.merged_usr = merged_usr
        if merged_usr:
            for directory in self.MERGED_DIRECTORIES:
                self.add_directory(f"usr/{directory}")
                self._entries[directory] = CpioEntry.symlink(directory, f"usr/{directory}")

    def _canonical(self, path: str) -> str:
        path = normalize_path(path)
        if self.merged_usr and path.split("/", 1)[0] in self.MERGED_DIRECTORIES:
            return f"usr/{path}"
        return path

    def add(self, entry: CpioEntry) -> None:
        path = self._canonical(entry.path)
        if path != entry.path:
            entry = dataclasses.replace(entry, path=path)
        existing = self._entries.get(path)
        if existing is not None and existing.is_dir and entry.is_dir:
            return  # keep the first directory's mode; packages all ship 0755 anyway
        self._entries[path] = entry

    def remove(self, path: str) -> None:
        """Drop ``path`` and, for a directory, everything below it (nothing if absent)."""
        top = self._canonical(path)
        for name in [p for p in self._entries if p == top or p.startswith(f"{top}/")]:
            del self._entries[name]

    def replace(self, entry: CpioEntry) -> None:
        """Put ``entry`` in place of what the tree has at its path (:meth:`add` keeps a directory's first mode)."""
        self._entries.pop(self._canonical(entry.path), None)
        self.add(entry)

    def add_file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self.add(CpioEntry.file(path, data, perm))

    def add_directory(self, path: str, perm: int = 0o755) -> None:
        self.add(CpioEntry.directory(path, perm))

    def add_symlink(self, path: str, target: str) -> None:
        self.add(CpioEntry.symlink(path, target))

    def get(self, path: str) -> CpioEntry | None:
        return self._entries.get(self._canonical(path))

    def __contains__(self, path: str) -> bool:
        return self._canonical(path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def add_tar(self, tar: tarfile.TarFile, origin: str) -> int:
        """Copy a package's data.tar into the tree; returns how many members were taken.

        Hard links become copies (a newc archive could express them, but only
        through matching inode numbers, which the sorted writer does not keep);
        device nodes and FIFOs in packages are refused since ``devtmpfs``
        provides /dev.
        """
        taken = 0
        hardlinks: list[tarfile.TarInfo] = []
        for member in tar:
            if member.name in (".", "./"):
                continue
            path = normalize_path(member.name)
            if _skipped(path):
                continue
            if member.isdir():
                self.add_directory(path, member.mode & 0o7777)
            elif member.isreg():
                handle = tar.extractfile(member)
                if handle is None:
                    raise ImageError(f"{origin}: cannot read {member.name}")
                self.add_file(path, handle.read(), member.mode & 0o7777)
            elif member.issym():
                self.add_symlink(path, member.linkname)
            elif member.islnk():
                hardlinks.append(member)
                continue
            else:
                continue
            taken += 1
        for member in hardlinks:
            target = self._entries.get(self._canonical(member.linkname))
            if target is None:
                raise ImageError(f"{origin}: hard link {member.name} points to missing {member.linkname}")
            self.add(CpioEntry(normalize_path(member.name), target.mode, target.data))
            taken += 1
        return taken

    def entries(self) -> list[CpioEntry]:
        return with_parent_directories(self._entries.values())

    def archive(self) -> bytes:
        """The gzip'd, reproducible newc cpio of the whole tree."""
        return gzip_reproducible(cpio_newc(self.entries()))


PAGE_SIZE = 4096
SHORT_SYMLINK_LEN = 128
"""tmpfs keeps a symlink target up to this long in the inode, a longer one in a page (mm/shmem.c)."""


def rootfs_bytes(entries: Iterable[CpioEntry]) -> int:
    """Bytes of tmpfs the kernel fills when it unpacks ``entries`` into its rootfs (init/initramfs.c).

    tmpfs charges whole 4 KiB pages against its size (mm/shmem.c): a regular
    file its size rounded up, a symlink whose target is longer than
    :data:`SHORT_SYMLINK_LEN` one page; directories and device nodes nothing.
    The core compares the total with the rootfs it gets (qppsuite/core/rootfs.py).
    """
    total = 0
    for entry in entries:
        if stat.S_ISREG(entry.mode):
            total += -(-len(entry.data) // PAGE_SIZE) * PAGE_SIZE
        elif stat.S_ISLNK(entry.mode) and len(entry.data) > SHORT_SYMLINK_LEN:
            total += PAGE_SIZE
    return total


def _skipped(path: str) -> bool:
    if path.endswith(KEPT_DOC_SUFFIX):
        return False
    return path.startswith(SKIPPED_PREFIXES) or f"{path}/" in SKIPPED_PREFIXES
