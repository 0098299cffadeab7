"""File paths as ``readlink /proc/PID/fd/N`` and ``/proc/PID/maps`` print them (``d_path``).

The walk follows ``fs/d_path.c``'s ``prepend_path``: up ``d_parent`` to the
mount's root, then across to ``mnt_mountpoint`` in ``mnt_parent``, until the
mount that is its own parent (the namespace root).  Pseudo filesystems name
their files through ``d_dname`` instead; the three a process commonly holds
are recognised by the superblock's magic: pipes (``pipe:[ino]``), sockets
(``socket:[ino]``) and anonymous inodes (``anon_inode:[eventfd]``...).

A path is read as far as the kernel itself would print it: ``PATH_MAX`` bytes,
the buffer ``readlink /proc/PID/fd/N`` hands to ``d_path`` (fs/proc/base.c),
which fails with ENAMETOOLONG beyond.  A longer path keeps its deepest
components under that bound and is marked ``truncated``, its text starting
with ``...`` in place of the components left out (strace marks a cut string
with ``...`` too).
"""

import struct
from typing import NamedTuple

from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import KernelLayout
from qppsuite.plugins.osi_linux.model import split_text

# include/uapi/linux/magic.h
PIPEFS_MAGIC = 0x50495045
SOCKFS_MAGIC = 0x534F434B
ANON_INODE_FS_MAGIC = 0x09041934
#: Bytes of a path, its NUL included (include/uapi/linux/limits.h); a longer one is truncated.
PATH_MAX = 4096
#: A name longer than this means a corrupt dentry (include/uapi/linux/limits.h).
NAME_MAX = 255
#: Steps of a walk (one per component or mount crossing): more than a PATH_MAX path can take means corrupt dentries.
MAX_WALK_STEPS = 2 * PATH_MAX
TRUNCATED_PREFIX = "..."


class FilePath(NamedTuple):
    """A file's path as the kernel prints it.

    ``partial``: a pointer on the way was bad, ``path`` is what could be read.
    ``truncated``: the path is longer than ``PATH_MAX``; ``path`` is
    ``.../`` and its deepest components.  ``raw``: the path's bytes when they
    are not UTF-8 (``path`` then has U+FFFD in their place), else None.
    """

    path: str
    partial: bool = False
    truncated: bool = False
    raw: bytes | None = None
#: Ceiling on the fd table we read (the kernel's own default nr_open ceiling is 1M).
MAX_FDS = 1 << 16


class PathReader:
    """Full paths of files and the open-file table of a process; bounded, never raises."""

    def __init__(self, mem: KernelMemory, layout: KernelLayout) -> None:
        self.mem = mem
        self.layout = layout

    def _pointer(self, vaddr: int) -> int | None:
        value = self.mem.u32(vaddr)
        if value is None or not (self.layout.page_offset <= value <= 0xFFFFF000 and value & 3 == 0):
            return None
        return value

    def _name(self, dentry: int) -> bytes | None:
        layout = self.layout
        length = self.mem.u32(dentry + layout.dentry_name_len)
        ptr = self._pointer(dentry + layout.dentry_name_ptr)
        if length is None or ptr is None or length > NAME_MAX:
            return None
        return self.mem.read(ptr, length)

    def file_path(self, file: int) -> FilePath:
        """The path of the open file ``file``."""
        layout = self.layout
        dentry = self._pointer(file + layout.file_path_dentry)
        vfsmount = self._pointer(file + layout.file_path_mnt)
        if dentry is None or vfsmount is None:
            return FilePath("", partial=True)
        sb = self._pointer(dentry + layout.dentry_sb)
        magic = self.mem.u32(sb + layout.sb_magic) if sb is not None else None
        if magic in (PIPEFS_MAGIC, SOCKFS_MAGIC):
            inode = self._pointer(file + layout.file_inode)
            ino = self.mem.u32(inode + layout.inode_ino) if inode is not None else None
            kind = "pipe" if magic == PIPEFS_MAGIC else "socket"
            return FilePath(f"{kind}:[{ino}]") if ino is not None else FilePath(f"{kind}:[?]", partial=True)
        if magic == ANON_INODE_FS_MAGIC:
            name = self._name(dentry)
            if name is None:
                return FilePath("", True)
            text, raw = split_text(b"anon_inode:" + name)
            return FilePath(text, raw=raw)
        return self.d_path(vfsmount, dentry)

    def working_directory(self, task: int) -> FilePath | None:
        """The working directory of ``task`` as ``readlink /proc/PID/cwd`` gives it (``fs->pwd``, fs/proc/base.c
        ``proc_cwd_link``); None when the profile cannot say where it is or the task has no ``fs_struct`` (an
        exiting task past ``exit_fs``)."""
        cwd = self.layout.cwd
        if cwd is None:
            return None
        fs = self._pointer(task + cwd.task_fs)
        if fs is None:
            return None
        dentry = self._pointer(fs + cwd.pwd_dentry)
        vfsmount = self._pointer(fs + cwd.pwd_mnt)
        if dentry is None or vfsmount is None:
            return FilePath("", partial=True)
        return self.d_path(vfsmount, dentry)

    def d_path(self, vfsmount: int, dentry: int) -> FilePath:
        """The path of ``dentry`` seen through ``vfsmount``, from the namespace root."""
        layout = self.layout
        parts: list[bytes] = []
        length = 1  # the NUL
        partial = truncated = False
        mount = vfsmount - layout.mount_vfsmount
        first = dentry
        seen: set[tuple[int, int]] = set()
        while True:
            if (mount, dentry) in seen or len(seen) >= MAX_WALK_STEPS:
                partial = True
                break
            seen.add((mount, dentry))
            mnt_root = self._pointer(mount + layout.mount_vfsmount + layout.vfsmount_root)
            parent = self._pointer(dentry + layout.dentry_parent)
            if mnt_root is None or parent is None:
                partial = True
                break
            if dentry in (mnt_root, parent):  # the mount's root, or IS_ROOT
                mnt_parent = self._pointer(mount + layout.mount_parent)
                if mnt_parent is None:
                    partial = True
                    break
                if mnt_parent == mount:
                    break  # the namespace's root mount: done
                mountpoint = self._pointer(mount + layout.mount_mountpoint)
                if mountpoint is None:
                    partial = True
                    break
                dentry, mount = mountpoint, mnt_parent
                continue
            name = self._name(dentry)
            if name is None:
                partial = True
                break
            length += 1 + len(name)
            if length > PATH_MAX - len(TRUNCATED_PREFIX):
                truncated = True
                break
            parts.append(name)
            dentry = parent
        path = b"/" + b"/".join(reversed(parts))
        if truncated:
            path = TRUNCATED_PREFIX.encode() + path
        if not partial and self._unlinked(first):
            path += b" (deleted)"
        text, raw = split_text(path)
        return FilePath(text, partial, truncated, raw)

    def _unlinked(self, dentry: int) -> bool:
        """``d_unlinked``: unhashed and not a filesystem root."""
        pprev = self.mem.u32(dentry + self.layout.dentry_hash_pprev)
        parent = self.mem.u32(dentry + self.layout.dentry_parent)
        return pprev == 0 and parent != dentry

    def open_files(self, files_struct: int) -> tuple[dict[int, int], bool]:
        """{fd: struct file address} of a ``files_struct``, and whether the table was read whole."""
        layout = self.layout
        fdt = self._pointer(files_struct + layout.files_fdt)
        if fdt is None:
            return {}, False
        max_fds = self.mem.u32(fdt + layout.fdt_max_fds)
        array = self._pointer(fdt + layout.fdt_fd)
        if max_fds is None or array is None:
            return {}, False
        complete = max_fds <= MAX_FDS
        count = min(max_fds, MAX_FDS)
        raw = self.mem.read(array, 4 * count)
        if raw is None:
            return {}, False
        files = struct.unpack_from(f"<{count}I", raw)
        return {fd: file for fd, file in enumerate(files) if file}, complete
