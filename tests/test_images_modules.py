"""Kernel modules and their dependencies, in load order, from a kernel package (qppsuite/images/modules.py)."""

import lzma
from pathlib import Path

import pytest
from test_images_builder import make_deb, make_module

from qppsuite.errors import ImageError
from qppsuite.images.modules import kernel_modules, module_name

RELEASE = "6.1.0-50-armmp"
BASE = f"lib/modules/{RELEASE}/kernel/"


def ko(depends: str) -> bytes:
    return make_module([f"depends={depends}", f"vermagic={RELEASE} SMP"])


def test_module_names_follow_kmod() -> None:
    assert module_name("usr/lib/modules/r/kernel/drivers/block/virtio-blk.ko.xz") == "virtio_blk"
    assert module_name("virtio_mmio.ko") == "virtio_mmio"


def test_dependencies_come_first_built_in_ones_are_left_out_and_xz_is_undone(tmp_path: Path) -> None:
    files = {
        BASE + "fs/ext4/ext4.ko": ko("jbd2,mbcache,crc16"),
        BASE + "fs/jbd2/jbd2.ko": ko(""),
        BASE + "fs/mbcache.ko": ko(""),
        BASE + "lib/crc16.ko.xz": lzma.compress(ko(""), format=lzma.FORMAT_XZ),
        BASE + "drivers/block/virtio_blk.ko": ko(""),
        BASE + "drivers/virtio/virtio_mmio.ko": ko(""),
        f"lib/modules/{RELEASE}/modules.builtin": b"kernel/drivers/virtio/virtio.ko\n",
        "lib/modules/5.10.0-32-armmp/kernel/fs/ext4/ext4.ko": b"another release's",
    }
    deb = make_deb(tmp_path / "k.deb", files)
    modules = kernel_modules(deb, RELEASE, ["virtio-mmio", "virtio", "ext4"])
    assert [m.name for m in modules] == ["virtio_mmio", "jbd2", "mbcache", "crc16", "ext4"]
    assert modules[3].data == ko("") and modules[3].path == f"lib/modules/{RELEASE}/kernel/lib/crc16.ko"


def test_a_missing_module_a_release_without_modules_and_a_cycle_are_one_line_errors(tmp_path: Path) -> None:
    deb = make_deb(tmp_path / "k.deb", {BASE + "a.ko": ko("b"), BASE + "b.ko": ko("a"), BASE + "c.ko": ko("gone")})
    with pytest.raises(ImageError, match="no module nothere"):
        kernel_modules(deb, RELEASE, ["nothere"])
    with pytest.raises(ImageError, match="no module gone"):
        kernel_modules(deb, RELEASE, ["c"])
    with pytest.raises(ImageError, match=r"ships no modules of kernel release 9\.9"):
        kernel_modules(deb, "9.9", ["a"])
    with pytest.raises(ImageError, match="a -> b -> a"):
        kernel_modules(deb, RELEASE, ["a"])
    (tmp_path / "bad.deb").write_bytes(b"not a package")
    with pytest.raises(ImageError, match="not a readable Debian package"):
        kernel_modules(tmp_path / "bad.deb", RELEASE, ["a"])
