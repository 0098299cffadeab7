"""A real Debian kernel on the virtio disk: it finds /dev/vda, reads the file's sectors, writes to the overlay.

The guest's own tools are the oracle: its dmesg, ``dd | md5sum`` against the host's md5 of the same sectors.
The armmp kernels build virtio_mmio and virtio_blk as modules: they come from the image's own kernel package
(:mod:`qppsuite.images.modules`) and are loaded with busybox ``insmod`` in dependency order.
"""

import dataclasses
import hashlib
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from console_sink import Console

from qppsuite.channel import GuestFile, parse_file_spec
from qppsuite.core.snapshot import SnapshotError
from qppsuite.images.bundle import ImageBundle, cache_dir
from qppsuite.images.initramfs import overlay_archive
from qppsuite.images.modules import KernelModule, kernel_modules
from qppsuite.recording import Recording, RecordingError, record, replay
from qppsuite.session import RunOptions, run, save_snapshot

SECTORS = 2048  # 1 MiB
#: A write in the guest: 4 KiB of this text at sector WRITE_AT, read back past the page cache: with O_DIRECT, or
#: (bullseye's busybox dd has no iflag=direct) after dropping the page cache.
PATTERN = b"qppsuite-disk-write\n"
WRITE_AT = 1000
WRITTEN = (PATTERN * (4096 // len(PATTERN) + 1))[:4096]


def deb_of(image: ImageBundle) -> tuple[Path, str]:
    """The package the image's kernel came from (in the image builder's apt cache), and its release."""
    kernel = image.manifest["kernel"]
    version = str(kernel["version"]).replace(":", "%3a")
    deb = cache_dir() / "apt" / "cache" / "archives" / f"{kernel['package']}_{version}_armhf.deb"
    return deb, str(kernel["release"])


def image_modules(image: ImageBundle) -> list[KernelModule]:
    """virtio_mmio and virtio_blk (and what they need) from the image's kernel package."""
    return kernel_modules(*deb_of(image), ["virtio_mmio", "virtio_blk"])


def module_files(modules: list[KernelModule], folder: Path) -> list[GuestFile]:
    """The modules as --file files for the guest's /tmp/mod/."""
    files = []
    for module in modules:
        host = folder / f"{module.name}.ko"
        host.write_bytes(module.data)
        files += parse_file_spec(f"{host}:/tmp/mod/{module.name}.ko")
    return files


def make_disk(path: Path) -> Path:
    path.write_bytes(random.Random(0x5EED).randbytes(SECTORS * 512))
    return path


def insmod(modules: list[KernelModule], where: str) -> str:
    return "".join(f"insmod {where}/{module.name}.ko\n" for module in modules)


def sectors_md5(path: Path, first: int, count: int) -> str:
    return hashlib.md5(path.read_bytes()[first * 512 : (first + count) * 512]).hexdigest()


READ_BACK = (
    "echo 3 > /proc/sys/vm/drop_caches\n"
    f"{{ dd if=/dev/vda bs=4096 skip={WRITE_AT // 8} count=1 iflag=direct 2>/dev/null || "
    f"dd if=/dev/vda bs=4096 skip={WRITE_AT // 8} count=1 2>/dev/null; }} | md5sum\n"
)
GUEST_CHECKS = (
    f"""
cat /sys/block/vda/size
dd if=/dev/vda bs=512 skip=100 count=300 2>/dev/null | md5sum
dd if=/dev/vda bs=512 skip={SECTORS - 8} count=8 2>/dev/null | md5sum
yes {PATTERN.decode().strip()} | head -c 4096 > /tmp/w
dd if=/tmp/w of=/dev/vda bs=512 seek={WRITE_AT} conv=notrunc 2>/dev/null
sync
"""
    + READ_BACK
)


@pytest.mark.boot
def test_the_kernel_finds_vda_reads_the_files_sectors_and_writes_only_the_overlay(
    suite_image: ImageBundle, tmp_path: Path
) -> None:
    assert WRITE_AT % 8 == 0
    disk = make_disk(tmp_path / "disk.img")
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    modules = image_modules(suite_image)
    # The modules ride in an initrd overlay; /init runs the command (no channel, no snapshot).
    initrd = tmp_path / "initrd"
    assert suite_image.initrd_path is not None
    overlay = overlay_archive({f"/lib/modules/qpp/{module.name}.ko": module.data for module in modules})
    initrd.write_bytes(suite_image.initrd_path.read_bytes() + overlay)
    image = dataclasses.replace(suite_image, initrd_path=initrd)
    console = Console()
    cmd = insmod(modules, "/lib/modules/qpp") + "dmesg | grep vda\n" + GUEST_CHECKS
    result = run(RunOptions(image=image.path, cmd=cmd, disk=disk, cache=tmp_path), console, image=image)
    text = console.text
    assert result.ok, (result.reason, text[-3000:])
    assert re.search(rf"\[vda\] {SECTORS} 512-byte logical blocks", text), text[-3000:]
    lines = text.split("QPPSUITE-EXIT")[0].splitlines()
    sums = [line.split()[0] for line in lines if line.endswith("  -")]
    assert f"\n{SECTORS}\n" in text.replace("\r", "")
    assert sums == [sectors_md5(disk, 100, 300), sectors_md5(disk, SECTORS - 8, 8), hashlib.md5(WRITTEN).hexdigest()]
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before, "the disk file changed"
    assert "QPPSUITE-EXIT 0" in text


@pytest.mark.boot
def test_a_snapshot_keeps_what_the_guest_wrote_and_refuses_another_disk(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """The user's path: modules in with --file, a write saved as a snapshot, a run from it reads the write back
    with O_DIRECT (from the device, whose overlay the snapshot restored, not from the page cache)."""
    disk = make_disk(tmp_path / "disk.img")
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    modules = image_modules(default_image)
    files = module_files(modules, tmp_path)
    write = insmod(modules, "/tmp/mod") + (
        f"yes {PATTERN.decode().strip()} | head -c 4096 > /tmp/w\n"
        f"dd if=/tmp/w of=/dev/vda bs=512 seek={WRITE_AT} conv=notrunc 2>/dev/null\nsync\n"
    )
    options = RunOptions(image=default_image.path, cache=tmp_path, disk=disk)
    console = Console()
    save_snapshot("written", dataclasses.replace(options, cmd=write, files=files), console)
    console = Console()
    read = READ_BACK
    result = run(dataclasses.replace(options, cmd=read, start_from="written"), console, image=default_image)
    assert result.ok and result.start == "restored", (result.reason, console.text[-2000:])
    assert f"{hashlib.md5(WRITTEN).hexdigest()}  -" in console.text
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before
    other = make_disk(tmp_path / "other.img")
    other.write_bytes(b"\0" * 512 + other.read_bytes()[512:])
    with pytest.raises(SnapshotError, match="it was made with the disk of sha256"):
        run(dataclasses.replace(options, disk=other, cmd=read, start_from="written"), Console(), image=default_image)


@pytest.mark.boot
def test_a_recording_with_a_disk_replays_identically_and_only_with_that_disk(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    (tmp_path / "images").mkdir()  # a cache of its own (its snapshots), with the image
    (tmp_path / "images" / default_image.name).symlink_to(default_image.path)
    disk = make_disk(tmp_path / "disk.img")
    modules = image_modules(default_image)
    files = module_files(modules, tmp_path)
    cmd = insmod(modules, "/tmp/mod") + GUEST_CHECKS
    options = RunOptions(image=default_image.path, cache=tmp_path, disk=disk, cmd=cmd, files=files, warm=True)
    recording, result = record(options)
    assert result.ok and recording.disk == {"path": str(disk), "sha256": hashlib.sha256(disk.read_bytes()).hexdigest()}
    path = tmp_path / "run.json"
    recording.save(path)
    replayed = replay(Recording.load(path), cache=tmp_path)
    assert replayed.ok and replayed.insn_count == recording.insn_count
    other = make_disk(tmp_path / "other.img")
    other.write_bytes(bytes(512) + other.read_bytes()[512:])
    with pytest.raises(RecordingError, match="is not the recorded one"):
        replay(Recording.load(path), cache=tmp_path, disk=other)


@pytest.mark.boot
def test_an_ext4_disk_mounts_and_a_program_copied_onto_it_runs_from_it(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """The kernel reads a file system and runs code it read from the disk into pages that held other code
    (the page cache dropped between runs): the machine's drop of translated code after DMA (docs/engine.md)."""
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    if mkfs is None:
        pytest.skip("no mkfs.ext4 on this host")
    tree = tmp_path / "tree"
    tree.mkdir()
    data = random.Random(3).randbytes(2 << 20)
    (tree / "data").write_bytes(data)
    disk = tmp_path / "fs.img"
    with disk.open("wb") as stream:
        stream.truncate(16 << 20)
    subprocess.run([mkfs, "-q", "-F", "-d", str(tree), str(disk)], check=True, capture_output=True)
    before = hashlib.sha256(disk.read_bytes()).hexdigest()
    # crc32c is asked of the crypto API by name (request_module, no modprobe in the guest): not in ext4's depends=
    modules = kernel_modules(*deb_of(default_image), ["virtio_mmio", "virtio_blk", "crc32c_generic", "ext4"])
    cmd = insmod(modules, "/tmp/mod") + (
        "mkdir -p /mnt && mount -t ext4 /dev/vda /mnt\n"
        "md5sum /mnt/data\n"
        "cp /bin/busybox /mnt/busybox && sync\n"
        "for round in 1 2 3; do echo 3 > /proc/sys/vm/drop_caches; /mnt/busybox echo ran-from-disk-$round; done\n"
        "umount /mnt\n"
    )
    console = Console()
    options = RunOptions(
        image=default_image.path, cache=tmp_path, disk=disk, cmd=cmd, files=module_files(modules, tmp_path)
    )
    result = run(options, console, image=default_image)
    text = console.text
    assert result.ok, (result.reason, text[-2000:])
    assert f"{hashlib.md5(data).hexdigest()}  /mnt/data" in text
    assert all(f"ran-from-disk-{round}" in text for round in (1, 2, 3)), text[-2000:]
    assert hashlib.sha256(disk.read_bytes()).hexdigest() == before
