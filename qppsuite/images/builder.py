"""Build image bundles from Debian armhf packages: kernel, busybox initramfs, profile, manifest.

The recipe: pick the newest ``linux-image-<abi>-armmp`` whose ``-dbg`` twin
exists (the profile needs the exact same build), take its zImage, config and
one self-contained module; make a busybox initramfs with qppsuite's ``/init``
and workload plus any packages the user asked for (with their dependency
closure); build the OSI profile from the debug vmlinux when the profile
builder is installed; and write everything with a manifest of sha256s into a
bundle directory, atomically.

Every input is pinned by apt's index (exact versions and hashes), and every
output is written reproducibly, so rebuilding with the same lists yields
byte-identical files.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import io
import json
import lzma
import re
import shutil
import struct
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debian.arfile import ArError
from debian.debfile import DebError, DebFile
from debian.debian_support import Version
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from qppsuite import __version__
from qppsuite.core.rootfs import MIB, RootfsFit
from qppsuite.errors import BuildError, ImageError
from qppsuite.images.apt import AptPackage, PrivateApt, file_sha256, host_sources, sources_for_suite
from qppsuite.images.bundle import MANIFEST_FORMAT, MANIFEST_NAME, ImageBundle, cache_dir, open_image
from qppsuite.images.guest import guest_script
from qppsuite.images.initramfs import CpioEntry, InitramfsTree, rootfs_bytes

DEFAULT_IMAGE = "debian-armhf"
#: ``busybox``: busybox-static's applets are the userland; ``minbase``: Debian's own, as debootstrap's
#: minbase variant installs it (qppsuite/images/minbase.py).
VARIANTS = ("busybox", "minbase")
DEFAULT_VARIANT = "busybox"
ARCHITECTURE = "armhf"
KERNEL_FLAVOUR = "armmp"
# The release part is 6.1.0-28 in bookworm and 6.12.117+deb13 in trixie; flavours such as -rt-armmp and
# -armmp-lpae are other kernels and do not match.
KERNEL_PACKAGE = re.compile(rf"^linux-image-(?P<abi>\d+\.\d+(?:\.\d+)?(?:\+[a-z0-9.]+)?(?:-\d+)?)-{KERNEL_FLAVOUR}$")
DEFAULT_SUITE = "bookworm"
BUSYBOX_PACKAGE = "busybox-static"
DEFAULT_BOOTARGS = "console=ttyAMA0 cryptomgr.notests"
IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")

# Bundle file names (the manifest records them; the loader and other tools rely on them).
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.cpio.gz"
CONFIG_FILE = "config"
PROFILE_FILE = "profile.json"

# Modules the workload loads, in order of preference.  Each must have no
# dependencies (busybox insmod does not resolve them) and must initialise
# without hardware: an NLS table only registers itself.
MODULE_CANDIDATES = (
    "kernel/fs/nls/nls_ascii.ko",
    "kernel/fs/nls/nls_cp437.ko",
    "kernel/fs/nls/nls_iso8859-1.ko",
)

#: The toolkit's directory in every image (qppsuite/images/guest/init.sh).
TOOLKIT_DIR = ".qppsuite/bin"

# Where `busybox --install` puts applets, indexed by busybox's BB_DIR_* codes.
BUSYBOX_DIRS = ("", "bin", "sbin", "usr/bin", "usr/sbin")
# Applets whose location is fixed in every busybox build; used to recognise its table.
BUSYBOX_ANCHORS = {"sh": "bin", "mount": "bin", "init": "sbin", "insmod": "sbin", "poweroff": "sbin"}

ZIMAGE_MAGIC_OFFSET = 0x24
ZIMAGE_MAGIC = 0x016F2818
XZ_MAGIC = b"\xfd7zXZ\x00"

#: The --ram a run takes by default (qppsuite run's --ram, RunOptions.ram_mib).
DEFAULT_RAM_MIB = 256
#: What the armmp kernel keeps of RAM besides the initrd before it unpacks it: its own image, the CMA area
#: (16 MiB) and page tables.  Measured from the boot line ``Memory: AK/TK available`` as T - A - initrd:
#: 6.1.0-50-armmp at --ram 320, 327680K - 244652K - 43729K = 39299K; 6.12.118+deb13-armmp at --ram 352,
#: 360448K - 279452K - 36791K = 44205K (43.2 MiB); rounded up.
KERNEL_RESERVED_BYTES = 44 * MIB

# Room for the ~240 MB debug vmlinux plus slack on top of the downloads.
PROFILE_SCRATCH_BYTES = 400 * 2**20
BUILD_SLACK_BYTES = 200 * 2**20

Progress = Callable[[str], None]
# (extract_vmlinux, build_kernel_profile) from qppsuite.profiles.dbg / .dwarf
ProfileBuilder = tuple[Callable[[Path, Path], Path], Callable[[Path], dict[str, Any]]]


@dataclass(frozen=True)
class KernelParts:
    """What the image takes from the kernel package."""

    release: str
    vmlinuz: bytes
    config: bytes
    modules: dict[str, bytes]  # initramfs path -> .ko


def default_image_name(packages: Sequence[str], suite: str = DEFAULT_SUITE, variant: str = DEFAULT_VARIANT) -> str:
    """``debian-armhf`` (``debian-armhf-minbase`` for the minbase variant, then ``-SUITE`` for another suite)
    plus ``+pkg`` per extra package, so each variant, suite and package set gets its own bundle."""
    base = DEFAULT_IMAGE if variant == DEFAULT_VARIANT else f"{DEFAULT_IMAGE}-{variant}"
    if suite != DEFAULT_SUITE:
        base = f"{base}-{suite}"
    return "+".join([base, *packages])


def parse_package_list(text: str) -> list[str]:
    """``"strace, python3"`` -> ``["strace", "python3"]`` (order kept, duplicates dropped)."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if name and name not in names:
            names.append(name)
    return names


def select_kernel(apt: PrivateApt, wanted: str | None = None) -> tuple[AptPackage, AptPackage]:
    """The ``linux-image-<release>-armmp`` package to build from, and its ``-dbg`` twin.

    Without ``wanted``, the newest release (Debian version order) whose
    ``-dbg`` package also has a candidate.  ``wanted`` picks one release, given
    as apt lists it (``6.12.117+deb13``, ``6.12.117+deb13-armmp`` or the
    package name).  Raises BuildError naming the armmp kernels apt lists (and
    every linux-image name when none is armmp) when nothing fits.
    """
    names = apt.package_names("linux-image-")
    kernels = sorted(
        ((Version(match["abi"]), name) for name in names if (match := KERNEL_PACKAGE.match(name))), reverse=True
    )
    listed = ", ".join(name.removeprefix("linux-image-") for _abi, name in kernels)
    where = f" in {apt.suite}" if apt.suite else ""
    if not kernels:
        found = ", ".join(names) or "no linux-image-* package at all"
        raise BuildError(f"no linux-image-*-{KERNEL_FLAVOUR} kernel{where} in apt's lists; listed: {found}")
    candidates = [name for _abi, name in kernels]
    if wanted is not None:
        package = wanted if wanted.startswith("linux-image-") else f"linux-image-{wanted}"
        if not package.endswith(f"-{KERNEL_FLAVOUR}"):
            package += f"-{KERNEL_FLAVOUR}"
        if package not in candidates:
            raise BuildError(f"no {KERNEL_FLAVOUR} kernel {wanted}{where}; listed: {listed}")
        candidates = [package]
    without_dbg = []
    for name in candidates:
        if apt.has_package(name) and apt.has_package(f"{name}-dbg"):
            image, dbg = apt.show([name, f"{name}-dbg"])
            return image, dbg
        without_dbg.append(name.removeprefix("linux-image-"))
    raise BuildError(
        f"no linux-image-*-{KERNEL_FLAVOUR} kernel{where} with an installable -dbg package "
        f"(needed for the OSI profile); without one: {', '.join(without_dbg)}; listed: {listed}"
    )


def modinfo(ko: bytes) -> dict[str, str]:
    """A module's ``.modinfo`` key=value strings (what ``modinfo`` prints), from its ELF section."""
    try:
        section = ELFFile(io.BytesIO(ko)).get_section_by_name(".modinfo")
    except ELFError as err:
        raise BuildError(f"kernel module is not a valid ELF file: {err}") from None
    if section is None:
        return {}
    info: dict[str, str] = {}
    for item in section.data().split(b"\0"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            info.setdefault(key, value)
    return info


def check_zimage(data: bytes, origin: str) -> None:
    """Refuse anything but a complete ARM zImage with an intact XZ payload.

    Decompressing the payload once here (about half a second) turns a damaged
    download into a build error instead of a guest that dies mysteriously.
    """
    if len(data) < ZIMAGE_MAGIC_OFFSET + 4:
        raise BuildError(f"corrupt kernel in {origin}: only {len(data)} bytes")
    (magic,) = struct.unpack_from("<I", data, ZIMAGE_MAGIC_OFFSET)
    if magic != ZIMAGE_MAGIC:
        raise BuildError(f"corrupt kernel in {origin}: no ARM zImage magic at offset {ZIMAGE_MAGIC_OFFSET:#x}")
    # The decompressor's own code contains the magic too; the payload is the
    # first occurrence that decompresses to a complete stream.
    starts = [m.start() for m in re.finditer(re.escape(XZ_MAGIC), data)]
    if not starts:
        raise BuildError(f"corrupt kernel in {origin}: zImage holds no XZ stream")
    problem = "it does not decompress"
    for start in starts:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            decompressor.decompress(data[start:])
        except lzma.LZMAError as err:
            problem = f"it does not decompress ({err})"
            continue
        if decompressor.eof:
            return
        problem = "it is truncated"
    raise BuildError(f"corrupt kernel in {origin}: no intact XZ payload, {problem}")


def open_data_tar(deb: Path) -> tarfile.TarFile:
    """The package's data.tar (the files it installs); a damaged package is one BuildError line."""
    try:
        return DebFile(str(deb)).data.tgz()
    except (DebError, ArError, tarfile.TarError, lzma.LZMAError, OSError, EOFError) as err:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise
        raise BuildError(f"{deb.name} is not a readable Debian package: {err}") from None


def extract_kernel(deb: Path, release: str) -> KernelParts:
    """vmlinuz, config and the first self-contained candidate module from the kernel package.

    Trixie's kernel packages ship modules under ``usr/lib/modules`` (merged /usr) and XZ-compressed
    (``.ko.xz``, CONFIG_MODULE_COMPRESS_XZ); a module goes into the image decompressed, as
    ``lib/modules/RELEASE/...ko``, which is where the workload looks and what busybox insmod loads.
    """
    modules = [f"lib/modules/{release}/{candidate}" for candidate in MODULE_CANDIDATES]
    shipped = [f"{usr}{module}{xz}" for module in modules for usr in ("", "usr/") for xz in ("", ".xz")]
    wanted = {f"boot/vmlinuz-{release}", f"boot/config-{release}", *shipped}
    found: dict[str, bytes] = {}
    try:
        with open_data_tar(deb) as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in wanted and member.isreg():
                    handle = tar.extractfile(member)
                    if handle is not None:
                        data = handle.read()
                        if name.endswith(".ko.xz"):
                            name, data = name.removesuffix(".xz"), lzma.decompress(data, format=lzma.FORMAT_XZ)
                        found[name.removeprefix("usr/")] = data
                    if len(found) == len(modules) + 2:
                        break  # the rest is thousands of modules the image does not take
    except (tarfile.TarError, lzma.LZMAError, EOFError) as err:
        raise BuildError(f"{deb.name} is damaged: {err}") from None
    for needed in (f"boot/vmlinuz-{release}", f"boot/config-{release}"):
        if needed not in found:
            raise BuildError(f"{deb.name} has no {needed}")
    vmlinuz = found[f"boot/vmlinuz-{release}"]
    check_zimage(vmlinuz, deb.name)
    return KernelParts(
        release=release,
        vmlinuz=vmlinuz,
        config=found[f"boot/config-{release}"],
        modules=_choose_module(found, release, deb.name),
    )


def _choose_module(found: dict[str, bytes], release: str, origin: str) -> dict[str, bytes]:
    for candidate in MODULE_CANDIDATES:
        path = f"lib/modules/{release}/{candidate}"
        if path not in found:
            continue
        info = modinfo(found[path])
        if info.get("depends", "") == "" and info.get("vermagic", "").split(" ")[0] == release:
            return {path: found[path]}
    names = ", ".join(c.rsplit("/", 1)[-1] for c in MODULE_CANDIDATES)
    raise BuildError(f"{origin} has none of the self-contained modules the workload loads ({names})")


def busybox_applets(binary: bytes) -> dict[str, str]:
    """Applet name -> install directory, read from the busybox binary's own tables.

    A foreign-architecture busybox cannot be run to ask ``--list-full``, so
    this reads what that option prints from: ``applet_names`` (sorted,
    NUL-separated, starting ``[``, ``[[``) and ``applet_install_loc`` (one
    nibble per applet).  The location table is recognised by the applets whose
    place never varies; without it every applet goes to /bin, which the PATH
    still covers.
    """
    start = binary.find(b"[\0[[\0")
    if start < 0:
        raise BuildError("busybox binary has no applet name table")
    end = binary.index(b"\0\0", start)
    names = binary[start:end].decode("ascii", "replace").split("\0")
    if names != sorted(names):
        raise BuildError("busybox binary's applet name table is not sorted; not a busybox?")
    table_len = (len(names) + 1) // 2
    anchors = {names.index(a): BUSYBOX_DIRS.index(d) for a, d in BUSYBOX_ANCHORS.items() if a in names}
    for offset in _nibble_table_candidates(binary, table_len):
        table = binary[offset : offset + table_len]
        codes = [(table[i // 2] >> (4 * (i % 2))) & 0xF for i in range(len(names))]
        if anchors and all(codes[i] == code for i, code in anchors.items()):
            return {name: BUSYBOX_DIRS[code] or "bin" for name, code in zip(names, codes, strict=True)}
    return dict.fromkeys(names, "bin")


def _nibble_table_candidates(binary: bytes, length: int) -> list[int]:
    """Offsets of runs of ``length`` bytes whose nibbles are all valid BB_DIR_* codes."""
    valid = bytes(1 if (b & 0xF) < len(BUSYBOX_DIRS) and (b >> 4) < len(BUSYBOX_DIRS) else 0 for b in range(256))
    flags = binary.translate(valid)
    candidates: list[int] = []
    for match in re.finditer(b"\x01{%d,}" % length, flags):
        candidates.extend(range(match.start(), match.end() - length + 1))
    return candidates


def add_toolkit(tree: InitramfsTree, applets: Iterable[str], busybox: str) -> None:
    """The toolkit qppsuite's guest scripts run with in any root filesystem: in :data:`TOOLKIT_DIR`, a
    link to ``busybox`` (the binary's absolute path in the guest) for every applet but the binary itself."""
    for applet in sorted(applets):
        link = f"{TOOLKIT_DIR}/{applet}"
        if f"/{link}" != busybox:
            tree.add_symlink(link, busybox)


def build_initramfs(
    busybox_deb: Path, kernel: KernelParts, extra_debs: Sequence[Path], progress: Progress
) -> InitramfsTree:
    """The guest root: busybox and its applets, extra packages, modules, /init and the workload.

    The tree has the merged-/usr layout when busybox's package has it (``/usr/bin/busybox``, trixie on).
    """
    with open_data_tar(busybox_deb) as tar:
        merged_usr = "bin/busybox" not in {name.removeprefix("./") for name in tar.getnames()}
    tree = InitramfsTree(merged_usr=merged_usr)
    for directory in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc/qppsuite"):
        tree.add_directory(directory)
    tree.add_directory("tmp", 0o1777)
    tree.add_directory("root", 0o700)
    # The kernel opens /dev/console for PID 1 before /init can mount devtmpfs.
    tree.add(CpioEntry.char_device("dev/console", 5, 1))

    with open_data_tar(busybox_deb) as tar:
        tree.add_tar(tar, busybox_deb.name)
    busybox = tree.get("bin/busybox")
    if busybox is None:
        raise BuildError(f"{busybox_deb.name} does not contain /bin/busybox")
    applets = busybox_applets(busybox.data)
    for applet, directory in sorted(applets.items()):
        link = f"{directory}/{applet}"
        if link not in tree:  # "busybox" is itself an applet: never replace the binary
            tree.add_symlink(link, "/bin/busybox")
    add_toolkit(tree, applets, "/bin/busybox")

    for deb in extra_debs:
        progress(f"unpacking {deb.name}")
        with open_data_tar(deb) as tar:
            tree.add_tar(tar, deb.name)

    for path, data in kernel.modules.items():
        tree.add_file(path, data)
    # Written last so no package can replace them.
    tree.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    tree.add_file("etc/group", b"root:x:0:\n")
    tree.add_file("etc/qppsuite/workload.sh", guest_script("workload.sh"))
    tree.add_file("init", guest_script("init.sh"), 0o755)
    return tree


def default_ram_mib(rootfs_size: int, initrd_size: int) -> int:
    """The --ram an image's runs take when none is given: :data:`DEFAULT_RAM_MIB`, or the least whose rootfs
    holds the image's files and the headroom :class:`qppsuite.core.rootfs.RootfsFit` keeps for /tmp, with the
    kernel's own share of RAM taken as :data:`KERNEL_RESERVED_BYTES`."""
    fit = RootfsFit(rootfs_size, DEFAULT_RAM_MIB, initrd_size)
    return fit.least_ram_mib(DEFAULT_RAM_MIB * MIB - initrd_size - KERNEL_RESERVED_BYTES)


def optional_profile_builder() -> ProfileBuilder | None:
    """The DWARF profile builder's entry points, when that part of qppsuite is installed."""
    if importlib.util.find_spec("qppsuite.profiles.dwarf") is None:
        return None
    if importlib.util.find_spec("qppsuite.profiles.dbg") is None:
        return None
    dbg = importlib.import_module("qppsuite.profiles.dbg")
    dwarf = importlib.import_module("qppsuite.profiles.dwarf")
    return dbg.extract_vmlinux, dwarf.build_kernel_profile


def build_profile(
    dbg_deb: Path,
    scratch: Path,
    extract_vmlinux: Callable[[Path, Path], Path],
    build_kernel_profile: Callable[[Path], dict[str, Any]],
) -> bytes:
    """profile.json's bytes; the ~240 MB vmlinux lives only in ``scratch`` while it is read."""
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".vmlinux-") as tmp:
        vmlinux = extract_vmlinux(dbg_deb, Path(tmp))
        profile = build_kernel_profile(vmlinux)
    return (json.dumps(profile, indent=1, sort_keys=True) + "\n").encode()


def _check_free_space(where: Path, needed: int) -> None:
    free = shutil.disk_usage(where).free
    if free < needed:
        raise BuildError(
            f"not enough disk space in {where}: the build needs about {needed / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free"
        )


def package_record(package: AptPackage) -> dict[str, str]:
    return {
        "name": package.name,
        "version": package.version,
        "architecture": package.architecture,
        "sha256": package.sha256,
    }


def write_bundle(staging: Path, files: dict[str, bytes | Path], manifest: dict[str, Any]) -> None:
    """Write ``files`` (name -> bytes, or a file already written in ``staging``) and the manifest listing
    each with its sha256 and size."""
    records = {}
    for name, data in sorted(files.items()):
        if isinstance(data, bytes):
            (staging / name).write_bytes(data)
        records[name] = {"sha256": file_sha256(staging / name), "size": (staging / name).stat().st_size}
    manifest["files"] = records
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def _install_bundle(staging: Path, dest: Path) -> None:
    """Move the finished bundle into place; the old one (if any) is removed only afterwards.

    Readers never see a half-written bundle under the real name: at worst,
    for an instant, no bundle of that name.
    """
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".old-{dest.name}-"))
        dest.rename(old / dest.name)
    staging.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_image(
    name: str = DEFAULT_IMAGE,
    *,
    packages: Sequence[str] = (),
    suite: str = DEFAULT_SUITE,
    kernel: str | None = None,
    variant: str = DEFAULT_VARIANT,
    cache: Path | None = None,
    progress: Progress | None = None,
) -> ImageBundle:
    """Build (or rebuild, byte-identically) the bundle ``name`` and return it, loaded and verified.

    ``packages`` are extra Debian armhf packages unpacked into the initramfs
    with their dependencies.  ``suite`` is the Debian release every package
    comes from, through the host's configured archive (see
    :func:`qppsuite.images.apt.sources_for_suite`); ``kernel`` picks one armmp
    kernel release among those the suite lists (see :func:`select_kernel`;
    default: the newest).  ``variant`` is the userland (:data:`VARIANTS`): busybox's applets, or
    ``minbase``, Debian's minimal system (:mod:`qppsuite.images.minbase`).  ``progress`` receives one line
    per step.  Every failure is a one-line BuildError.
    """
    if variant not in VARIANTS:
        raise BuildError(f"unknown image variant {variant!r}: one of {', '.join(VARIANTS)}")
    report: Progress = progress or (lambda _message: None)
    with bundle_workspace(name, suite, cache, report) as (apt, images):
        return _build(name, list(packages), kernel, variant, apt, images, report)


@contextmanager
def bundle_workspace(name: str, suite: str, cache: Path | None, report: Progress) -> Iterator[tuple[PrivateApt, Path]]:
    """The private apt of ``suite`` and the images directory a new bundle ``name`` is made in.

    Checks the name, reclaims interrupted builds, and turns running out of disk into one BuildError line.
    """
    if not IMAGE_NAME.match(name):
        raise BuildError(f"invalid image name {name[:80]!r}: use up to 200 letters, digits and . _ + -")
    root = cache_dir(cache)
    images = root / "images"
    try:
        images.mkdir(parents=True, exist_ok=True)
        remove_stale_builds(root)
        sources = sources_for_suite(host_sources(), suite)
        yield PrivateApt(root / "apt", ARCHITECTURE, report, suite=suite, sources=sources), images
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise BuildError(f"no space left on the device holding {root} while building image '{name}'") from None
        raise


@dataclass(frozen=True)
class BuildInputs:
    """The exact packages an image is made from, downloaded, and the suite they come from."""

    suite: str
    kernel: AptPackage
    dbg: AptPackage | None  # only fetched when a profile will be built
    initramfs: list[AptPackage]  # busybox-static, the requested packages and their dependencies
    debs: dict[str, Path]  # package name -> .deb in the private apt cache


def _build(
    name: str,
    packages: list[str],
    kernel: str | None,
    variant: str,
    apt: PrivateApt,
    images: Path,
    report: Progress,
) -> ImageBundle:
    profile_builder = optional_profile_builder()
    # One build at a time per cache: builds share apt's state, and two
    # builds of one name must not interleave their bundle swaps.
    with apt.locked():
        wanted = packages
        if variant == "minbase":
            from qppsuite.images import minbase  # it builds on this module and the importer

            apt.refresh()
            wanted = minbase.select_packages(apt, packages)
        inputs = fetch_inputs(apt, wanted, kernel, with_dbg=profile_builder is not None, root=images.parent)
        return make_bundle(
            images,
            name,
            lambda staging: _assemble(staging, name, packages, variant, inputs, profile_builder, report),
        )


def make_bundle(images: Path, name: str, assemble: Callable[[Path], None]) -> ImageBundle:
    """Have ``assemble`` write a bundle into a fresh staging directory, put it in place as ``images/name``
    (atomically, see :func:`_install_bundle`) and return it loaded and verified."""
    staging = Path(tempfile.mkdtemp(dir=images, prefix=f".build-{name}-"))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would make the bundle private to this user
        assemble(staging)
        _install_bundle(staging, images / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        return open_image(images / name)
    except ImageError as err:
        raise BuildError(f"the freshly made image '{name}' does not load: {err}") from None


def fetch_inputs(
    apt: PrivateApt, packages: list[str], wanted_kernel: str | None, *, with_dbg: bool, root: Path
) -> BuildInputs:
    apt.refresh()
    try:
        kernel, dbg, initramfs = _resolve_inputs(apt, packages, wanted_kernel)
    except BuildError:
        if apt.updated:
            raise
        # Stale lists may name versions the archive no longer has: one update, then retry.
        apt.refresh(force=True)
        kernel, dbg, initramfs = _resolve_inputs(apt, packages, wanted_kernel)
    downloads = [kernel, *initramfs, *([dbg] if with_dbg else [])]
    scratch = PROFILE_SCRATCH_BYTES if with_dbg else 0
    _check_free_space(root, apt.missing_bytes(downloads) + scratch + BUILD_SLACK_BYTES)
    debs = {package.name: apt.download(package) for package in downloads}
    return BuildInputs(apt.suite or DEFAULT_SUITE, kernel, dbg if with_dbg else None, initramfs, debs)


def _resolve_inputs(
    apt: PrivateApt, packages: list[str], wanted_kernel: str | None
) -> tuple[AptPackage, AptPackage, list[AptPackage]]:
    kernel, dbg = select_kernel(apt, wanted_kernel)
    initramfs = apt.resolve([BUSYBOX_PACKAGE, *packages])
    return kernel, dbg, initramfs


def _assemble(
    staging: Path,
    name: str,
    packages: list[str],
    variant: str,
    inputs: BuildInputs,
    profile_builder: ProfileBuilder | None,
    report: Progress,
) -> None:
    release = inputs.kernel.name.removeprefix("linux-image-")
    report(f"extracting kernel {release} ({inputs.kernel.version})")
    kernel = extract_kernel(inputs.debs[inputs.kernel.name], release)

    report("assembling the initramfs")
    bootargs = DEFAULT_BOOTARGS
    if variant == "minbase":
        from qppsuite.images import minbase  # it builds on this module and the importer

        # busybox-static only gives the toolkit its binary, unless the user asked for the package itself
        unpacked = [inputs.debs[p.name] for p in inputs.initramfs if p.name != BUSYBOX_PACKAGE or p.name in packages]
        tree = minbase.build_minbase_initramfs(unpacked, inputs.debs[BUSYBOX_PACKAGE], kernel, report)
        bootargs = minbase.BOOTARGS
    else:
        extra = [inputs.debs[p.name] for p in inputs.initramfs if p.name != BUSYBOX_PACKAGE]
        tree = build_initramfs(inputs.debs[BUSYBOX_PACKAGE], kernel, extra, report)
    initrd = tree.archive()
    files: dict[str, bytes | Path] = {KERNEL_FILE: kernel.vmlinuz, CONFIG_FILE: kernel.config, INITRD_FILE: initrd}
    rootfs_size = rootfs_bytes(tree.entries())
    ram_mib = default_ram_mib(rootfs_size, len(initrd))

    if profile_builder is not None and inputs.dbg is not None:
        report("building the OSI profile from the debug vmlinux")
        files[PROFILE_FILE] = build_profile(inputs.debs[inputs.dbg.name], staging, *profile_builder)
    used = [inputs.kernel, *inputs.initramfs, *([inputs.dbg] if PROFILE_FILE in files and inputs.dbg else [])]
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "created_by": f"qppsuite {__version__}",
        "suite": inputs.suite,
        "kernel": {
            "file": KERNEL_FILE,
            "package": inputs.kernel.name,
            "version": inputs.kernel.version,
            "release": release,
            "config": CONFIG_FILE,
        },
        "initrd": {"file": INITRD_FILE, "rootfs_bytes": rootfs_size, "ram_mib": ram_mib},
        "profile": {"file": PROFILE_FILE} if PROFILE_FILE in files else None,
        "bootargs": bootargs,
        "variant": variant,
        "packages": [package_record(p) for p in sorted(used, key=lambda p: p.name)],
        "requested_packages": packages,
        "modules": sorted(kernel.modules),
        "toolkit": f"/{TOOLKIT_DIR}",
    }
    write_bundle(staging, files, manifest)


def remove_stale_builds(cache: Path | None = None) -> None:
    """Delete leftovers of interrupted builds (``.build-*``/``.old-*`` directories).

    They are invisible to the loader already; this only reclaims the space.
    Only directories older than a day are touched, so a build running in
    another process is never pulled out from under it.
    """
    images = cache_dir(cache) / "images"
    if not images.is_dir():
        return
    for leftover in images.iterdir():
        if leftover.name.startswith((".build-", ".old-")) and _age_s(leftover) > 86400:
            shutil.rmtree(leftover, ignore_errors=True)


def _age_s(path: Path) -> float:
    return time.time() - path.stat().st_mtime
