"""An initramfs too big for its rootfs: refused before boot or stopped at the kernel's word, with a --ram that fits.

The guest tests boot the oracle image (55.6 MiB of files in a 20.5 MiB initrd).
Its rootfs at the smallest RAM the board takes (176 MiB) still holds them, so
they shrink what the kernel keeps the real way a user might: ``cma=48M`` on
the kernel command line reserves 32 MiB more for the contiguous allocator.
"""

import shutil
from pathlib import Path

import pytest
from console_sink import Console

from qppsuite.core.rootfs import MIB, RootfsFit, RootfsWatch
from qppsuite.errors import GuestError
from qppsuite.images.bundle import ImageBundle, open_image
from qppsuite.images.initramfs import gunzip_members, read_cpio_newc, rootfs_bytes
from qppsuite.session import RunOptions, run

# Boot lines of the oracle image (a 21,508,365-byte initrd), printed by the guest kernel (mm/page_alloc.c).
MEMORY_AT_256 = b"[    0.000000] Memory: 202612K/262144K available (11264K kernel code, 1700K rwdata, 3736K rodata, "
MEMORY_AT_176_CMA_48M = b"[    0.000000] Memory: 88580K/180224K available (11264K kernel code, 1700K rwdata, "
ORACLE_INITRD = 21_508_365
ORACLE_ROOTFS = 58_351_616

SMALL_RAM = 176
SHRINK = "cma=48M"
MARKER = "ROOTFS-MARKER"


def test_the_pre_boot_check_refuses_only_what_cannot_fit_whatever_the_kernel_keeps() -> None:
    assert RootfsFit(ORACLE_ROOTFS, SMALL_RAM, ORACLE_INITRD).before_boot() is None
    # The same files at 128 MiB: half of what the initrd leaves is 53.7 MiB.
    why = RootfsFit(ORACLE_ROOTFS, 128, ORACLE_INITRD).before_boot()
    assert why is not None and "56 MiB of files" in why and "under 54 MiB" in why
    least = RootfsFit(ORACLE_ROOTFS, 128, ORACLE_INITRD).least_ram_mib()
    assert least % 16 == 0 and RootfsFit(ORACLE_ROOTFS, least, ORACLE_INITRD).before_boot() is None


def test_files_that_no_ram_of_this_board_holds_say_so() -> None:
    why = RootfsFit(10**15, 256, ORACLE_INITRD).before_boot()
    assert why is not None and why.endswith("no --ram fits: this board takes at most 3000 MiB")


def test_the_memory_line_gives_the_kernels_own_capacity() -> None:
    fit = RootfsFit(ORACLE_ROOTFS, 256, ORACLE_INITRD)
    assert fit.at_memory_line(MEMORY_AT_256) is None  # 98.9 MiB of rootfs
    small = RootfsFit(ORACLE_ROOTFS, SMALL_RAM, ORACLE_INITRD)
    why = small.at_memory_line(MEMORY_AT_176_CMA_48M)
    assert why is not None and "a 43 MiB tmpfs (half of the 87 MiB it reports available)" in why
    assert small.at_memory_line(b"Memory: 999999999K/1K available") is None  # not plausible at this RAM
    assert small.at_memory_line(b"no memory line") is None


def test_a_suggested_ram_holds_the_files_with_headroom() -> None:
    small = RootfsFit(ORACLE_ROOTFS, SMALL_RAM, ORACLE_INITRD)
    available = 88580 * 1024
    least = small.least_ram_mib(available)
    more = (least - SMALL_RAM) * MIB * 127 // 128
    assert (available + more) // 2 >= ORACLE_ROOTFS + 16 * MIB
    assert (available + more - 16 * MIB) // 2 < ORACLE_ROOTFS + 16 * MIB  # and not far more than that


def test_the_watch_reads_the_unpackers_failure_and_names_the_ram_when_it_can() -> None:
    failed = b"[    3.359699] Initramfs unpacking failed: write error"
    blind = RootfsWatch(None)
    assert blind.line(MEMORY_AT_176_CMA_48M) is None
    why = blind.line(failed)
    assert why is not None and "write error" in why and "a larger --ram" in why
    told = RootfsWatch(RootfsFit(ORACLE_ROOTFS, SMALL_RAM, ORACLE_INITRD))
    told.line(MEMORY_AT_176_CMA_48M)
    why = told.line(failed)
    assert why is not None and f"--ram {told.fit.least_ram_mib(88580 * 1024)} or more" in why  # type: ignore[union-attr]
    other = RootfsWatch(None).line(b"Initramfs unpacking failed: junk within compressed archive")
    assert other is not None and "junk within compressed archive" in other and "--ram" not in other


@pytest.mark.boot
def test_rootfs_bytes_is_what_the_guests_tmpfs_uses(default_image: ImageBundle) -> None:
    """The manifest's figure, and the archive read back, against the guest's own statfs of / (pages in use)."""
    assert default_image.initrd_path is not None
    recorded = default_image.manifest["initrd"]["rootfs_bytes"]
    assert recorded == rootfs_bytes(read_cpio_newc(gunzip_members(default_image.initrd_path.read_bytes())))
    console = Console()
    result = run(RunOptions(cmd="stat -f -c 'PAGES %b %f %S' /"), console, image=default_image)
    assert result.ok, result.reason.message
    total, free, size = (int(word) for word in console.text.split("PAGES ", 1)[1].split()[:3])
    assert size == 4096
    assert (total - free) * size == recorded + 4096  # and one page for the --cmd file itself


@pytest.mark.boot
def test_files_beyond_the_kernels_rootfs_stop_at_its_memory_line_and_the_suggested_ram_works(
    oracle_image: ImageBundle,
) -> None:
    console = Console()
    options = RunOptions(cmd=f"echo {MARKER}", ram_mib=SMALL_RAM, extra_bootargs=SHRINK)
    result = run(options, console, image=oracle_image)
    assert result.reason.kind == "initramfs", result.reason
    assert "Trying to unpack rootfs" not in console.text  # stopped before the unpacking began
    least = int(result.reason.message.split("use --ram ")[1].split()[0])
    assert least > SMALL_RAM
    console = Console()
    result = run(RunOptions(cmd=f"echo {MARKER}", ram_mib=least, extra_bootargs=SHRINK), console, image=oracle_image)
    assert result.ok, result.reason.message
    assert f"\n{MARKER}" in console.text.replace("\r", "")


@pytest.mark.boot
def test_without_the_manifests_figure_the_kernels_unpack_failure_stops_the_run(
    oracle_image: ImageBundle, tmp_path: Path
) -> None:
    """A bundle from before the figure existed: the kernel's own ``Initramfs unpacking failed`` is the verdict."""
    bundle = tmp_path / "old-bundle"
    bundle.mkdir()
    for part in oracle_image.path.iterdir():
        (bundle / part.name).symlink_to(part)
    manifest = (oracle_image.path / "manifest.json").read_text()
    (bundle / "manifest.json").unlink()
    (bundle / "manifest.json").write_text(manifest.replace('"rootfs_bytes"', '"rootfs_bytes_unknown"'))
    old = open_image(bundle)
    assert "rootfs_bytes" not in old.manifest["initrd"]
    console = Console()
    result = run(RunOptions(cmd=f"echo {MARKER}", ram_mib=SMALL_RAM, extra_bootargs=SHRINK), console, image=old)
    assert result.reason.kind == "initramfs", result.reason
    assert "Initramfs unpacking failed: write error" in result.reason.message
    assert MARKER not in console.text.replace(f"echo {MARKER}", "")


@pytest.mark.boot
def test_a_guest_imitating_the_kernels_message_does_not_stop_the_run(default_image: ImageBundle) -> None:
    console = Console()
    cmd = f"echo 'Initramfs unpacking failed: write error' > /dev/console; echo {MARKER}"
    result = run(RunOptions(cmd=cmd), console, image=default_image)
    assert result.ok, result.reason.message
    assert f"\n{MARKER}" in console.text.replace("\r", "")


@pytest.mark.boot
def test_a_manifest_figure_beyond_any_ram_is_refused_before_boot(default_image: ImageBundle, tmp_path: Path) -> None:
    """A hostile or mistaken manifest: one line naming the --ram, no boot (no guest instruction runs)."""
    bundle = tmp_path / "edited"
    shutil.copytree(default_image.path, bundle)
    manifest = (bundle / "manifest.json").read_text()
    recorded = default_image.manifest["initrd"]["rootfs_bytes"]
    (bundle / "manifest.json").write_text(manifest.replace(f'"rootfs_bytes": {recorded}', '"rootfs_bytes": 999999999'))
    with pytest.raises(GuestError, match=r"954 MiB of files, but at --ram 256 .* use --ram \d+ or more"):
        run(RunOptions(cmd="true"), Console(), image=open_image(bundle))
