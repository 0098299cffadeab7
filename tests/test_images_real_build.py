"""A real build of the default image through apt (downloads on first run, then reuses the cache).

The build goes to the normal cache directory (``$QPPSUITE_CACHE`` or the XDG
cache), the same one ``qppsuite run`` uses, so the ~700 MB of packages are
fetched once per machine.  Rebuilding is byte-identical, so running these
tests never changes an image a user already has from the same package lists.
The ``qemu`` tests boot the result in qemu-system-arm as an independent check
of /init and the workload.
"""

from __future__ import annotations

import gzip
import re
import stat
import subprocess
from pathlib import Path

import pytest
from host_tools import host_tool

from qppsuite.images.apt import file_sha256
from qppsuite.images.builder import build_image, busybox_applets, modinfo
from qppsuite.images.bundle import ImageBundle, cache_dir, open_image
from qppsuite.images.guest import guest_script
from qppsuite.images.initramfs import CpioEntry, overlay_archive, read_cpio_newc

pytestmark = pytest.mark.boot  # the real packages and image, through apt


@pytest.fixture(scope="module")
def default_image() -> ImageBundle:
    return build_image(cache=cache_dir())


@pytest.fixture(scope="module")
def initramfs(default_image: ImageBundle) -> dict[str, CpioEntry]:
    assert default_image.initrd_path is not None
    return {e.path: e for e in read_cpio_newc(gzip.decompress(default_image.initrd_path.read_bytes()))}


def test_manifest_records_exact_inputs(default_image: ImageBundle) -> None:
    manifest = default_image.manifest
    kernel = manifest["kernel"]
    assert re.fullmatch(r"linux-image-\d+\.\d+\.\d+-\d+-armmp", kernel["package"])
    assert kernel["release"] == kernel["package"].removeprefix("linux-image-")
    assert kernel["version"] and kernel["file"] == "vmlinuz" and kernel["config"] == "config"
    names = {p["name"]: p for p in manifest["packages"]}
    assert kernel["package"] in names and "busybox-static" in names
    assert names[kernel["package"]]["version"] == kernel["version"]
    for package in manifest["packages"]:
        assert package["architecture"] == "armhf" and re.fullmatch(r"[0-9a-f]{64}", package["sha256"])
    if manifest["profile"] is not None:
        assert f"{kernel['package']}-dbg" in names
    assert manifest["bootargs"] == "console=ttyAMA0 cryptomgr.notests"
    assert set(manifest["files"]) >= {"vmlinuz", "initrd.cpio.gz", "config"}
    config = (default_image.path / "config").read_text()
    assert "CONFIG_BLK_DEV_INITRD=y" in config and "CONFIG_DEVTMPFS=y" in config
    open_image(default_image.path, verify=True)


def test_initramfs_has_init_busybox_workload_and_a_module(
    default_image: ImageBundle, initramfs: dict[str, CpioEntry]
) -> None:
    init = initramfs["init"]
    assert init.data == guest_script("init.sh") and init.mode & 0o111
    assert initramfs["etc/qppsuite/workload.sh"].data == guest_script("workload.sh")
    busybox = initramfs["bin/busybox"]
    assert busybox.data.startswith(b"\x7fELF") and busybox.mode & 0o111
    assert stat.S_ISCHR(initramfs["dev/console"].mode) and initramfs["dev/console"].rdev == (5, 1)

    release = default_image.manifest["kernel"]["release"]
    modules = [p for p in initramfs if p.startswith(f"lib/modules/{release}/") and p.endswith(".ko")]
    assert modules == default_image.manifest["modules"] and modules
    info = modinfo(initramfs[modules[0]].data)
    assert info["depends"] == "" and info["vermagic"].split()[0] == release


def test_busybox_applets_are_linked_where_busybox_installs_them(initramfs: dict[str, CpioEntry]) -> None:
    applets = busybox_applets(initramfs["bin/busybox"].data)
    assert applets["sh"] == "bin" and applets["insmod"] == "sbin" and applets["nc"] == "usr/bin"
    for applet in ("sh", "mount", "insmod", "lsmod", "poweroff", "ip", "ps", "nc", "tr", "wc", "find"):
        link = initramfs[f"{applets[applet]}/{applet}"]
        assert stat.S_ISLNK(link.mode) and link.data == b"/bin/busybox", applet


def test_gnu_cpio_lists_the_real_initrd(default_image: ImageBundle, initramfs: dict[str, CpioEntry]) -> None:
    cpio = host_tool("cpio", "cpio")
    assert default_image.initrd_path is not None
    listing = subprocess.run(
        [cpio, "-t", "--quiet"],
        input=gzip.decompress(default_image.initrd_path.read_bytes()),
        capture_output=True,
        check=True,
    )
    assert sorted(listing.stdout.decode().split("\n")[:-1]) == sorted(initramfs)


def test_rebuild_is_byte_identical_and_downloads_nothing(default_image: ImageBundle) -> None:
    archives = cache_dir() / "apt" / "cache" / "archives"
    before = {p.name: p.stat().st_mtime_ns for p in archives.glob("*.deb")}
    hashes = {
        name: file_sha256(default_image.path / name) for name in [*default_image.manifest["files"], "manifest.json"]
    }
    steps: list[str] = []
    again = build_image(cache=cache_dir(), progress=steps.append)
    assert {name: file_sha256(again.path / name) for name in hashes} == hashes
    assert {p.name: p.stat().st_mtime_ns for p in archives.glob("*.deb")} == before
    assert not any(step.startswith("downloading") for step in steps), steps


def test_extra_packages_come_with_their_dependencies() -> None:
    bundle = build_image("debian-armhf+strace", packages=["strace"], cache=cache_dir())
    assert bundle.manifest["requested_packages"] == ["strace"]
    names = {p["name"] for p in bundle.manifest["packages"]}
    assert {"strace", "libc6", "busybox-static"} <= names
    assert bundle.initrd_path is not None
    paths = {e.path for e in read_cpio_newc(gzip.decompress(bundle.initrd_path.read_bytes()))}
    assert {"usr/bin/strace", "lib/ld-linux-armhf.so.3", "bin/busybox", "init"} <= paths


# --- independent boot check in qemu ------------------------------------------------------------------


def boot_in_qemu(bundle: ImageBundle, initrd: Path) -> str:
    result = subprocess.run(
        [
            host_tool("qemu-system-arm", "qemu-system-arm"),
            "-M", "virt", "-cpu", "cortex-a15", "-m", "256", "-nographic", "-no-reboot",
            "-nic", "none", "-kernel", str(bundle.kernel_path), "-initrd", str(initrd),
            "-append", bundle.bootargs + " quiet",
        ],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=180,
        check=False,
    )  # fmt: skip
    return result.stdout.replace("\r", "")


@pytest.mark.qemu
def test_default_workload_runs_to_poweroff(default_image: ImageBundle) -> None:
    assert default_image.initrd_path is not None
    console = boot_in_qemu(default_image, default_image.initrd_path)
    markers = re.findall(r"^=== qppsuite: (.+) ===$", console, re.MULTILINE)
    sections = [m.split(" pid=")[0] for m in markers]
    assert sections == [
        "kernel", "fork-exec", "pipeline", "background", "file-io", "proc", "network", "processes",
        "maps", "fds", "modules", "done",
    ], console  # fmt: skip
    assert "QPPSUITE-EXIT 0" in console
    assert "reboot: Power down" in console
    assert "child exited with 7" in console and "subshell exited with 3" in console
    assert "pong from the server" in console and "ping from the client" in console
    pid = re.search(r"=== qppsuite: maps pid=(\d+) ===", console)
    assert pid and f"=== qppsuite: fds pid={pid[1]} ===" in console
    maps = console.split(f"maps pid={pid[1]} ===")[1].split("===")[0]
    assert "/bin/busybox" in maps and "[stack]" in maps
    module = Path(default_image.manifest["modules"][0]).stem
    assert f"loaded {module}.ko" in console and re.search(rf"^{module}\s+\d+\s+0", console, re.MULTILINE)


@pytest.mark.qemu
def test_cmd_overlay_replaces_the_workload(default_image: ImageBundle, tmp_path: Path) -> None:
    assert default_image.initrd_path is not None
    initrd = tmp_path / "initrd-with-cmd.cpio.gz"
    cmd = b"echo user command ran; cat /proc/self/comm; exit 3\n"
    initrd.write_bytes(default_image.initrd_path.read_bytes() + overlay_archive({"etc/qppsuite/cmd": cmd}))
    console = boot_in_qemu(default_image, initrd)
    assert "user command ran" in console
    assert "QPPSUITE-EXIT 3" in console
    assert "=== qppsuite:" not in console
