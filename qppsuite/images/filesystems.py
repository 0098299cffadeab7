"""Root filesystems in the forms users have them, read into an :class:`InitramfsTree`.

``image import`` takes a firmware's or a debootstrap'd root filesystem as

- a directory (read as it is on the host: links are kept as links, never followed),
- a tar or cpio archive, plain or compressed (gzip, xz, zstd, bzip2, lz4...): read with libarchive
  (the ``libarchive-c`` binding of Debian's ``libarchive13``), which knows every variant of both,
- a squashfs image: read with ``PySquashfsImage`` (gzip, xz, lzma, zstd with ``zstandard``), and what it cannot
  read (lzo, lz4, names that are not UTF-8) extracted with squashfs-tools' ``unsquashfs`` when installed,
- an ext2/3/4 image: copied out with e2fsprogs' ``debugfs -R "rdump / DIR"``, which reads the image
  as a file (no mount, no root needed) and is the reference reader of that format, then read as a directory.

The format is told by content, not by name: squashfs by its magic ``hsqs`` at offset 0, ext2/3/4 by the
superblock magic 0xEF53 at byte 1080 (the superblock's ``s_magic``, 1024 + 56), anything else is offered to
libarchive.  Regular files, directories, symbolic links and hard links (as copies) are kept with their
permission bits (setuid included) and owners; device nodes, FIFOs and sockets are left out, since the guest
mounts devtmpfs on ``/dev``.  Names that are not UTF-8 are kept byte for byte (``surrogateescape``).

Everything read is hostile input: a member that would land outside the root (``..``, absolute links are fine
as links) is refused, and any failure is one :class:`~qppsuite.errors.BuildError` line naming the file.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from qppsuite.core.board import RAM_MAX_MIB
from qppsuite.errors import BuildError, ImageError
from qppsuite.images.initramfs import CpioEntry, InitramfsTree, normalize_path

SQUASHFS_MAGIC = b"hsqs"
EXT_MAGIC_OFFSET = 1080
EXT_MAGIC = b"\x53\xef"
#: The formats :func:`read_rootfs` names in its result and its errors.
FORMATS = ("directory", "tar", "cpio", "squashfs", "ext2/3/4")
#: How long ``debugfs`` may take to copy an ext image out (seconds): it reads at disk speed, and a hostile
#: image must not hang the import.
DEBUGFS_TIMEOUT = 600
MIB = 1 << 20

Progress = Callable[[str], None]

#: The most file bytes a root file system may hold in the guest's RAM: a tmpfs holds half the RAM, and the
#: board has at most 3000 MiB (qppsuite/core/board.py RAM_MAX_MIB).
RAM_TREE_LIMIT = RAM_MAX_MIB * MIB // 2
#: The most file bytes read into host memory to make a disk of (``--disk`` from anything but an ext image).
DISK_TREE_LIMIT = 8 << 30


class Budget:
    """Counts the file bytes a read takes, and stops it (BuildError) past ``limit``: a sparse 10 GB file must
    not fill the host's memory before the import can say that no guest could hold it."""

    def __init__(self, source: Path, limit: int, advice: str) -> None:
        self.source, self.limit, self.advice, self.used = source, limit, advice, 0

    def take(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise BuildError(
                f"root filesystem {self.source} holds more than {self.limit // MIB} MiB of files, {self.advice}"
            )


def _name(raw: str | bytes) -> str:
    text = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    try:
        return normalize_path(text)
    except ImageError as err:
        raise BuildError(str(err)) from None


def _entry(path: str, mode: int, data: bytes = b"", uid: int = 0, gid: int = 0) -> CpioEntry:
    return CpioEntry(_name(path), mode, data, uid=uid, gid=gid)


def detect_format(path: Path) -> str:
    """One of :data:`FORMATS` (``tar`` standing for anything libarchive may read); BuildError if unreadable."""
    if path.is_dir():
        return "directory"
    try:
        with path.open("rb") as handle:
            head = handle.read(EXT_MAGIC_OFFSET + 2)
    except OSError as err:
        raise BuildError(f"cannot read root filesystem {path}: {err.strerror}") from None
    if head.startswith(SQUASHFS_MAGIC):
        return "squashfs"
    if head[EXT_MAGIC_OFFSET:] == EXT_MAGIC:
        return "ext2/3/4"
    return "tar"


def read_rootfs(
    path: Path, progress: Progress | None = None, *, for_disk: bool = False
) -> tuple[str, InitramfsTree]:
    """The root filesystem at ``path`` as a tree, and its format (one of :data:`FORMATS`).

    Raises BuildError (one line, naming ``path``) for a missing or unreadable source, one that is no regular
    file or directory (a FIFO would block), an unknown format, a damaged archive or image, a member whose
    name leaves the root, and more file bytes than a guest's RAM holds (:data:`RAM_TREE_LIMIT`; with
    ``for_disk``, than is read to make a disk: :data:`DISK_TREE_LIMIT`).
    """
    report: Progress = progress or (lambda _message: None)
    if not path.exists():
        raise BuildError(f"root filesystem {path} does not exist")
    if not (path.is_dir() or path.is_file()):
        raise BuildError(f"root filesystem {path} is no regular file or directory")
    kind = detect_format(path)
    report(f"reading {path} ({'archive' if kind == 'tar' else kind})")
    tree = InitramfsTree()
    budget = (
        Budget(path, DISK_TREE_LIMIT, "more than qppsuite reads to make a disk: give it as an ext2/3/4 image")
        if for_disk
        else Budget(path, RAM_TREE_LIMIT, "more than a guest's RAM holds: import it with --disk")
    )
    try:
        if kind == "directory":
            _read_directory(path, tree, budget)
        elif kind == "squashfs":
            _read_squashfs(path, tree, budget)
        elif kind == "ext2/3/4":
            _read_ext(path, tree, budget)
        else:
            kind = _read_archive(path, tree, budget)
    except BuildError as err:
        if str(err).startswith("invalid initramfs path"):  # a member's name (_name) says not which source
            raise BuildError(f"root filesystem {path}: {err}") from None
        raise
    if not len(tree):
        raise BuildError(f"root filesystem {path} ({kind}) holds no files")
    return kind, tree


def _read_directory(top: Path, tree: InitramfsTree, budget: Budget) -> None:
    def refuse(err: OSError) -> None:
        raise BuildError(f"cannot read {err.filename} in root filesystem {top}: {err.strerror}")

    for directory, dirnames, filenames, dir_fd in os.fwalk(top, onerror=refuse):
        relative = os.path.relpath(directory, top)
        for name in [*dirnames, *filenames]:
            member = name if relative == "." else f"{relative}/{name}"
            try:
                info = os.lstat(name, dir_fd=dir_fd)
                data = b""
                if stat.S_ISREG(info.st_mode):
                    budget.take(info.st_size)
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
                    with os.fdopen(fd, "rb") as handle:
                        data = handle.read()
                elif stat.S_ISLNK(info.st_mode):
                    data = os.fsencode(os.readlink(name, dir_fd=dir_fd))
                elif not stat.S_ISDIR(info.st_mode):
                    continue  # devices, FIFOs, sockets: devtmpfs provides /dev
            except OSError as err:
                raise BuildError(f"cannot read {top / member} in root filesystem {top}: {err.strerror}") from None
            mode = stat.S_IFLNK | 0o777 if stat.S_ISLNK(info.st_mode) else info.st_mode
            tree.add(_entry(member, mode, data, info.st_uid, info.st_gid))


def _read_archive(path: Path, tree: InitramfsTree, budget: Budget) -> str:
    """A tar or cpio archive through libarchive; returns ``tar`` or ``cpio`` as libarchive names it."""
    try:
        import libarchive
        from libarchive.exception import ArchiveError
    except OSError as err:  # the binding loads libarchive.so.13 when imported
        raise BuildError(
            f"cannot read archives: libarchive is not installed ({err}); install Debian's libarchive13"
        ) from None
    hardlinks: list[tuple[str | bytes, str | bytes, bytes]] = []  # (link, target, data): copies of the target
    kind = "tar"
    try:
        with libarchive.file_reader(str(path)) as archive:
            for entry in archive:
                found = os.fsdecode(archive.format_name or b"").lower()
                if "tar" not in found and "cpio" not in found:
                    raise BuildError(
                        f"root filesystem {path}: not a format qppsuite reads ({', '.join(FORMATS)}); "
                        f"libarchive reads it as {found or 'nothing it knows'}"
                    )
                name = entry.pathname
                if name in (".", "./", ""):
                    continue
                if entry.islnk:
                    # cpio puts a hard-linked file's data on the last of its names, a link with contents
                    data = b"".join(entry.get_blocks())
                    hardlinks.append((name, entry.linkpath, data))
                elif entry.isdir:
                    tree.add(_entry(name, stat.S_IFDIR | entry.perm, uid=entry.uid, gid=entry.gid))
                elif entry.isreg:
                    budget.take(max(entry.size or 0, 0))  # a hostile header must not give bytes back
                    data = b"".join(entry.get_blocks())
                    data += bytes(max(0, (entry.size or 0) - len(data)))  # a sparse member's trailing hole
                    tree.add(_entry(name, stat.S_IFREG | entry.perm, data, entry.uid, entry.gid))
                elif entry.issym:
                    points_to = os.fsencode(entry.linkpath)
                    tree.add(_entry(name, stat.S_IFLNK | 0o777, points_to, entry.uid, entry.gid))
            kind = "cpio" if "cpio" in os.fsdecode(archive.format_name).lower() else "tar"
    except ArchiveError as err:
        what = f"not a format qppsuite reads ({', '.join(FORMATS)})" if not len(tree) else "damaged"
        detail = getattr(err, "msg", None) or "the archive ends early"
        said = os.fsdecode(detail) if isinstance(detail, bytes) else str(detail)
        raise BuildError(f"root filesystem {path}: {what}: {said}") from None
    carried = {_name(target): data for _link, target, data in hardlinks if data}
    for link, target, _data in hardlinks:
        original = tree.get(_name(target))
        if original is None:
            raise BuildError(f"root filesystem {path}: hard link {_name(link)} points to missing {_name(target)}")
        if _name(target) in carried:
            original = dataclasses.replace(original, data=carried[_name(target)])
            tree.add(original)
        tree.add(dataclasses.replace(original, path=_name(link)))
    return kind


def find_tool(name: str) -> str | None:
    """The path of the host program ``name``, looked for in /usr/sbin and /sbin too (e2fsprogs and
    squashfs-tools install there, outside a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def run_tool(command: list[str], timeout: float, where: str = "") -> subprocess.CompletedProcess[bytes]:
    """Run a host program, its output captured; one that takes over ``timeout`` seconds (a hostile image must
    not hang the import) is the BuildError ``{where}NAME took over TIMEOUT s``."""
    try:
        return subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{where}{Path(command[0]).name} took over {timeout} s") from None


class _Unreadable(Exception):
    """PySquashfsImage could not read the image; the message says why (one line)."""


def _read_squashfs(path: Path, tree: InitramfsTree, budget: Budget) -> None:
    """PySquashfsImage (gzip, xz, lzma and, with Python's zstandard, zstd); what it cannot read (lzo, lz4, a
    name that is not UTF-8) squashfs-tools' ``unsquashfs`` extracts, when it is installed."""
    attempt = InitramfsTree()
    try:
        _pysquashfs(path, attempt, budget)
    except _Unreadable as err:
        unsquashfs = find_tool("unsquashfs")
        if unsquashfs is None:
            raise BuildError(f"root filesystem {path}: {err} (squashfs-tools' unsquashfs would read it)") from None
        budget.used = 0
        _unsquashfs(unsquashfs, path, tree, budget)
        return
    for entry in attempt.entries():
        tree.add(entry)


def _pysquashfs(path: Path, tree: InitramfsTree, budget: Budget) -> None:
    from PySquashfsImage import SquashFsImage

    try:
        image = SquashFsImage.from_file(str(path))
    except ModuleNotFoundError as err:
        raise _Unreadable(f"its compression needs Python's {err.name}") from None
    except Exception as err:  # the reader raises bare IOError/ValueError/struct.error on damage
        raise _Unreadable(f"damaged squashfs image: {err}") from None
    try:
        for item in image:
            if item.parent is None:
                continue  # the root itself
            member = _squashfs_path(item)
            if item.is_dir:
                tree.add(_entry(member, stat.S_IFDIR | (item.mode & 0o7777), uid=item.uid, gid=item.gid))
            elif item.is_file:
                budget.take(item.size)
                data = item.read_bytes()
                tree.add(_entry(member, stat.S_IFREG | (item.mode & 0o7777), data, item.uid, item.gid))
            elif item.is_symlink:
                tree.add(_entry(member, stat.S_IFLNK | 0o777, os.fsencode(item.readlink()), item.uid, item.gid))
    except BuildError:
        raise
    except ModuleNotFoundError as err:
        raise _Unreadable(f"its compression needs Python's {err.name}") from None
    except UnicodeDecodeError:
        raise _Unreadable("PySquashfsImage cannot read a name that is not UTF-8") from None
    except Exception as err:
        raise _Unreadable(f"damaged squashfs image: {err}") from None
    finally:
        image.close()


def _unsquashfs(unsquashfs: str, path: Path, tree: InitramfsTree, budget: Budget) -> None:
    """Extract with ``unsquashfs`` and read the directory (owners are kept when qppsuite runs as root)."""
    with tempfile.TemporaryDirectory(prefix="qppsuite-squashfs-") as tmp:
        out = Path(tmp) / "root"
        command = [unsquashfs, "-no-progress", "-quiet", "-d", str(out), str(path)]
        done = run_tool(command, DEBUGFS_TIMEOUT, f"root filesystem {path}: ")
        if done.returncode != 0:
            said = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
            raise BuildError(f"root filesystem {path}: damaged squashfs image (unsquashfs: {(said or ['failed'])[-1]})")
        _read_directory(out, tree, budget)


def _squashfs_path(item: object) -> str:
    parts: list[str] = []
    node = item
    while getattr(node, "parent", None) is not None:
        parts.append(os.fsdecode(node._name))  # type: ignore[attr-defined]
        node = node.parent  # type: ignore[attr-defined]
    return "/".join(reversed(parts))


def _read_ext(path: Path, tree: InitramfsTree, budget: Budget) -> None:
    debugfs = find_tool("debugfs")
    if debugfs is None:
        raise BuildError(f"cannot read ext2/3/4 image {path}: debugfs is not installed (Debian's e2fsprogs)")

    def ask(*args: str) -> bytes:
        done = run_tool([debugfs, *args, str(path)], DEBUGFS_TIMEOUT, f"root filesystem {path}: ")
        _check_debugfs(path, done)
        return done.stdout

    with tempfile.TemporaryDirectory(prefix="qppsuite-ext-") as tmp:
        out = Path(tmp) / "root"
        out.mkdir()
        ask("-R", f"rdump / {out}")
        _read_directory(out, tree, budget)
        # rdump chowns after it chmods, and Linux's chown clears setuid and setgid: the modes and owners come
        # from the image's own listing instead (``ls -p``: /inode/mode/uid/gid/name/size/ per entry).
        directories = ["", *(e.path for e in tree.entries() if e.is_dir)]
        commands = Path(tmp) / "commands"
        commands.write_bytes(b"".join(b'ls -p "/%s"\n' % os.fsencode(d) for d in directories if '"' not in d))
        _apply_listing(tree, ask("-f", str(commands)))


def ext_has(image: Path, path: str) -> bool:
    """Whether the ext2/3/4 ``image`` holds ``path`` (any kind of file), asked of ``debugfs -R stat``: an image
    that becomes a disk as it is is never read whole."""
    debugfs = find_tool("debugfs")
    if debugfs is None or '"' in path:
        return False
    try:
        done = run_tool([debugfs, "-R", f'stat "{path}"', str(image)], DEBUGFS_TIMEOUT)
    except BuildError:  # it took too long: no such file as far as the import can tell
        return False
    return done.returncode == 0 and b"Inode:" in done.stdout


def _check_debugfs(path: Path, done: subprocess.CompletedProcess[bytes]) -> None:
    said = done.stderr.decode("utf-8", "replace").splitlines()
    problems = [line for line in said if line and not line.startswith("debugfs ")]
    if done.returncode != 0 or problems:
        raise BuildError(f"root filesystem {path}: debugfs cannot read it: {(problems or ['failed'])[0]}")


def _apply_listing(tree: InitramfsTree, listing: bytes) -> None:
    """Give the tree's entries the permission bits and owners of debugfs's ``ls -p`` listing."""
    directory = ""
    for line in listing.split(b"\n"):
        if line.startswith(b'debugfs: ls -p "/'):
            directory = os.fsdecode(line[len(b'debugfs: ls -p "/') : -1])
            continue
        fields = line.split(b"/")
        if len(fields) < 7 or fields[0] != b"" or fields[5] in (b".", b".."):
            continue
        try:
            mode, uid, gid = int(fields[2], 8), int(fields[3]), int(fields[4])
        except ValueError:
            continue
        name = os.fsdecode(b"/".join(fields[5:-2]))
        entry = tree.get(f"{directory}/{name}" if directory else name)
        if entry is not None and not stat.S_ISLNK(entry.mode):
            kind = stat.S_IFMT(entry.mode)
            tree.replace(dataclasses.replace(entry, mode=kind | stat.S_IMODE(mode), uid=uid, gid=gid))
