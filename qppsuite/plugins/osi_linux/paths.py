"""File paths as ``readlink /proc/PID/fd/N`` and ``/proc/PID/maps`` print them (``d_path``).

The walk follows ``fs/d_path.c``'s ``prepend_path``: up ``d_parent`` to the
mount's root, then across to ``mnt_mountpoint`` in ``mnt_parent``, until the
mount that is its own parent (the namespace root).  Pseudo filesystems name
their files through ``d_dname`` instead; the three a process commonly holds
are recognised by the superblock's magic: pipes (``pipe:[ino]``), sockets
(``socket:[ino]``) and anonymous inodes (``anon_inode:[eventfd]``...).
"""

import struct

from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import KernelLayout

# include/uapi/linux/magic.h
PIPEFS_MAGIC = 0x50495045
SOCKFS_MAGIC = 0x534F434B
ANON_INODE_FS_MAGIC = 0x09041934
#: A path deeper than this, or a name longer than NAME_MAX, means corrupt or cyclic dentries.
MAX_PATH_DEPTH = 512
NAME_MAX = 255
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

    def file_path(self, file: int) -> tuple[str, bool]:
        """(path, partial) of the open file ``file``; partial when a pointer on the way was bad."""
        layout = self.layout
        dentry = self._pointer(file + layout.file_path_dentry)
        vfsmount = self._pointer(file + layout.file_path_mnt)
        if dentry is None or vfsmount is None:
            return "", True
        sb = self._pointer(dentry + layout.dentry_sb)
        magic = self.mem.u32(sb + layout.sb_magic) if sb is not None else None
        if magic in (PIPEFS_MAGIC, SOCKFS_MAGIC):
            inode = self._pointer(file + layout.file_inode)
            ino = self.mem.u32(inode + layout.inode_ino) if inode is not None else None
            kind = "pipe" if magic == PIPEFS_MAGIC else "socket"
            return (f"{kind}:[{ino}]", False) if ino is not None else (f"{kind}:[?]", True)
        if magic == ANON_INODE_FS_MAGIC:
            name = self._name(dentry)
            return ("anon_inode:" + name.decode("utf-8", "replace"), False) if name is not None else ("", True)
        return self.d_path(vfsmount, dentry)

    def d_path(self, vfsmount: int, dentry: int) -> tuple[str, bool]:
        """(path, partial) of ``dentry`` seen through ``vfsmount``, from the namespace root."""
        layout = self.layout
        parts: list[bytes] = []
        partial = False
        mount = vfsmount - layout.mount_vfsmount
        first = dentry
        seen: set[tuple[int, int]] = set()
        while True:
            if (mount, dentry) in seen or len(seen) >= MAX_PATH_DEPTH:
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
            parts.append(name)
            dentry = parent
        path = "/" + "/".join(part.decode("utf-8", "replace") for part in reversed(parts))
        if not partial and self._unlinked(first):
            path += " (deleted)"
        return path, partial

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
