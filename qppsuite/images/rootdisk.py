"""A root filesystem on a disk: the ext4 image the guest mounts from its virtio block device (``/dev/vda``).

A root filesystem that does not fit comfortably in the guest's RAM (the initramfs is unpacked into a tmpfs
that may fill half of it) goes on a disk instead (``image import --disk``).  The bundle then holds the disk
image and a small initramfs: qppsuite's toolkit and init, and the kernel modules that reach the disk, which
the Debian armmp kernels build as modules (CONFIG_VIRTIO_MMIO, CONFIG_VIRTIO_BLK, CONFIG_EXT4_FS=m).  The
init loads them, mounts the disk, copies the toolkit onto it and ``switch_root``s there
(qppsuite/images/guest/init.sh).  The guest's writes never reach the file: the device keeps them in memory
(qppsuite/core/devices/virtio_blk.py).

An ext2/3/4 source is the disk as it is.  Any other source is written to a new ext4 with e2fsprogs'
``mkfs.ext4 -d`` (the reference way to make one from a tree without mounting it), whose owners and special
permission bits are then set from the tree with ``debugfs -w`` (``set_inode_field``), so an import by a user
who is not root keeps them too.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from qppsuite.errors import BuildError
from qppsuite.images.filesystems import find_tool, run_tool
from qppsuite.images.initramfs import InitramfsTree

DISK_FILE = "rootfs.img"
#: Kernel modules the guest loads, with their dependencies, to mount its root disk: crc32c is asked of the
#: crypto API by name (ext4's metadata checksums, fs/ext4/super.c), so it is in no module's ``depends=``.
DISK_MODULES = ("virtio_mmio", "virtio_blk", "crc32c_generic", "ext4")
#: Where the initramfs keeps those modules, and the file whose lines name them in load order.
MODULES_DIR = ".qppsuite/modules"
ROOT_DISK_MARKER = ".qppsuite/root-disk"
MIB = 1 << 20
#: A made disk holds the tree's files plus this share and :data:`HEADROOM` (metadata, and room to write).
SLACK = 0.25
HEADROOM = 64 * MIB
MKFS_TIMEOUT = 1800


def _tool(name: str) -> str:
    found = find_tool(name)
    if found is None:
        raise BuildError(f"--disk needs {name} (Debian's e2fsprogs)")
    return found


def add_disk_boot(tree: InitramfsTree, modules: dict[str, bytes]) -> None:
    """The modules (name -> ``.ko`` bytes, in load order) and the marker that makes init mount the disk."""
    for name, data in modules.items():
        tree.add_file(f"{MODULES_DIR}/{name}.ko", data)
    tree.add_file(ROOT_DISK_MARKER, "".join(f"{name}\n" for name in modules).encode())


def make_ext4(tree: InitramfsTree, out: Path) -> None:
    """Write ``tree`` as a new ext4 image at ``out``, owners and permission bits as the tree has them."""
    files = sum(len(e.data) for e in tree.entries() if stat.S_ISREG(e.mode))
    size_mib = -(-int(files * (1 + SLACK) + HEADROOM) // MIB)
    with tempfile.TemporaryDirectory(prefix="qppsuite-disk-", dir=out.parent) as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        fixes: list[str] = []
        for entry in sorted(tree.entries(), key=lambda e: e.path.split("/")):
            path = root / os.fsdecode(os.fsencode(entry.path))
            if entry.is_dir:
                path.mkdir(exist_ok=True)
            elif stat.S_ISREG(entry.mode):
                path.write_bytes(entry.data)
            elif stat.S_ISLNK(entry.mode):
                os.symlink(os.fsdecode(entry.data), path)
            else:
                continue  # devices: devtmpfs provides them
            if not stat.S_ISLNK(entry.mode):
                path.chmod(stat.S_IMODE(entry.mode) & 0o777 | 0o700 * entry.is_dir)
            # mkfs.ext4 -d copies the temporary files' owners (the importing user) and modes (setuid
            # cannot be kept by a user who is not root, directories had to stay writable): every entry's own.
            if '"' not in entry.path and "\n" not in entry.path:
                quoted = f'"/{entry.path}"'
                fixes += [f"set_inode_field {quoted} uid {entry.uid}", f"set_inode_field {quoted} gid {entry.gid}"]
                if not stat.S_ISLNK(entry.mode):
                    fixes.append(f"set_inode_field {quoted} mode 0{entry.mode:o}")
        _run([_tool("mkfs.ext4"), "-q", "-F", "-E", "root_owner=0:0", "-d", str(root), str(out), f"{size_mib}M"])
        if fixes:
            commands = Path(tmp) / "commands"
            commands.write_text("\n".join(fixes) + "\n", encoding="utf-8", errors="surrogateescape")
            _run([_tool("debugfs"), "-w", "-f", str(commands), str(out)])


def _run(command: list[str]) -> None:
    done = run_tool(command, MKFS_TIMEOUT)
    said = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    problems = [line for line in said if not line.startswith(("debugfs ", "mke2fs "))]
    if done.returncode != 0 or problems:
        raise BuildError(f"{Path(command[0]).name} failed: {(problems or said or ['no message'])[0]}")
