"""Image bundles from a user's own root filesystem (``qppsuite image import``).

The way firmware-rehosting tools pair a generic kernel with a firmware's userland: the user's root
filesystem (any format :mod:`qppsuite.images.filesystems` reads) becomes the initramfs, byte for byte, with
three additions that stay out of its way:

- ``/.qppsuite/``: the toolkit (Debian's static busybox and a link per applet, in ``/.qppsuite/bin``) and
  qppsuite's init (``/.qppsuite/init``), which the boot line's ``rdinit=`` names, so the image's own
  ``/init`` is neither run nor replaced;
- ``/etc/qppsuite/workload.sh``: the image's init command (``--init``), what a run without ``--cmd`` runs,
  as PID 1's child, with the image's own ``/bin/sh``;
- the mount points init needs (``/proc``, ``/sys``, ``/dev``, ``/tmp``, ``/root``) when the tree lacks them.

The kernel is Debian's armmp kernel of the suite with the OSI profile built from its debug package, unless
the user brings one (``--kernel``) with its debug vmlinux (``--vmlinux``) or a profile (``--profile``: ours
or a Volatility 3 ISF).  A kernel brought without either is imported without a profile: osi_linux then says
how to make one.
"""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qppsuite import __version__
from qppsuite.core.kernel import BANNER, load_kernel
from qppsuite.errors import BuildError, ImageError
from qppsuite.images.apt import AptPackage, PrivateApt
from qppsuite.images.builder import (
    BUSYBOX_PACKAGE,
    CONFIG_FILE,
    DEFAULT_BOOTARGS,
    DEFAULT_SUITE,
    INITRD_FILE,
    KERNEL_FILE,
    PROFILE_FILE,
    TOOLKIT_DIR,
    add_toolkit,
    build_profile,
    bundle_workspace,
    busybox_applets,
    default_ram_mib,
    extract_kernel,
    fetch_inputs,
    make_bundle,
    open_data_tar,
    optional_profile_builder,
    package_record,
    write_bundle,
)
from qppsuite.images.bundle import MANIFEST_FORMAT, ImageBundle
from qppsuite.images.filesystems import detect_format, ext_has, read_rootfs
from qppsuite.images.guest import guest_script
from qppsuite.images.initramfs import CpioEntry, InitramfsTree, rootfs_bytes
from qppsuite.images.modules import kernel_modules
from qppsuite.images.rootdisk import DISK_FILE, DISK_MODULES, add_disk_boot, make_ext4
from qppsuite.profiles.profile import KernelProfile, ProfileError, release_from_banner

#: The init qppsuite runs as PID 1 in an imported image, named on the boot line.
INIT_PATH = ".qppsuite/init"
WORKLOAD_PATH = "etc/qppsuite/workload.sh"
#: What ``--init`` defaults to: the first of these the root filesystem has.  An rc script comes first
#: because the init programs (busybox init, systemd) refuse to run as anything but PID 1.
INIT_CANDIDATES = ("/etc/init.d/rcS", "/sbin/init", "/etc/init", "/bin/init")
ELF_MAGIC = b"\x7fELF"
#: The longest kernel banner read from a kernel image (the real ones are about 200 bytes).
BANNER_LIMIT = 512

Progress = Callable[[str], None]


@dataclass(frozen=True)
class UserKernel:
    """A kernel the user brings: its file, and its profile's bytes (None: imported without one)."""

    vmlinuz: bytes
    release: str
    profile: bytes | None
    profile_origin: str | None


def default_init(tree: InitramfsTree) -> str | None:
    """The first of :data:`INIT_CANDIDATES` the tree holds as a link or an executable file, or None."""
    for path in INIT_CANDIDATES:
        entry = tree.get(path.lstrip("/"))
        if entry is not None and (stat.S_ISLNK(entry.mode) or (stat.S_ISREG(entry.mode) and entry.mode & 0o111)):
            return path
    return None


def _regular_file(path: Path, option: str) -> bytes:
    """The first bytes of ``path`` after checking it is a regular file (reading a FIFO would block)."""
    if not path.is_file():
        raise BuildError(f"{option} {path} is no regular file" if path.exists() else f"{option} {path} does not exist")
    try:
        with path.open("rb") as handle:
            return handle.read(64)
    except OSError as err:
        raise BuildError(f"{option} {path}: {err.strerror}") from None


def kernel_banners(path: Path) -> list[str]:
    """Every ``Linux version ...`` string in the kernel at ``path`` (a zImage is unpacked on the host), the
    last first: 6.1 keeps a copy without the build number (``# SMP``) in init/version.c besides the real
    ``linux_banner`` of init/version-timestamp.c.  BuildError when the file is no ARM Linux kernel or holds
    no banner."""
    head = _regular_file(path, "--kernel")[:4]
    if head == ELF_MAGIC:
        raise BuildError(
            f"--kernel {path} is an ELF file (a vmlinux?): give the zImage or Image the boot loader loads, and "
            "the vmlinux as --vmlinux"
        )
    try:
        image = load_kernel(path, decompress=True)
    except ImageError as err:
        raise BuildError(f"--kernel: {err}") from None
    banners = []
    start = image.data.find(BANNER)
    while start >= 0:
        raw = image.data[start : start + BANNER_LIMIT].split(b"\0", 1)[0]
        banners.append(raw.decode("ascii", "replace").strip())
        start = image.data.find(BANNER, start + 1)
    if not banners:
        raise BuildError(
            f"--kernel {path}: its payload is compressed in a way qppsuite cannot unpack (xz and gzip are read),"
            " so its version is unknown"
        )
    return banners[::-1]


def user_kernel(kernel: Path, vmlinux: Path | None, profile: Path | None, report: Progress) -> UserKernel:
    """Read ``--kernel`` and its profile (built from ``--vmlinux``, or ``--profile`` as given), checking that
    the profile describes that very kernel (the same banner)."""
    banners = kernel_banners(kernel)
    try:
        release = release_from_banner(banners[0])
    except ProfileError as err:
        raise BuildError(f"--kernel {kernel}: {err}") from None
    vmlinuz = kernel.read_bytes()
    data: bytes | None = None
    origin: str | None = None
    if vmlinux is not None:
        _regular_file(vmlinux, "--vmlinux")
        builder = optional_profile_builder()
        if builder is None:
            raise BuildError("--vmlinux: this qppsuite has no profile builder installed")
        report(f"building the OSI profile from {vmlinux}")
        try:
            data = (json.dumps(builder[1](vmlinux), indent=1, sort_keys=True) + "\n").encode()
        except (ImageError, OSError) as err:
            raise BuildError(f"--vmlinux {vmlinux}: {err}") from None
        origin = str(vmlinux)
    elif profile is not None:
        _regular_file(profile, "--profile")
        try:
            data = profile.read_bytes()
        except OSError as err:
            raise BuildError(f"--profile {profile}: {err.strerror}") from None
        origin = str(profile)
    if data is not None:
        try:
            loaded = KernelProfile(json.loads(data), origin or "?")
        except (ValueError, RecursionError, ProfileError) as err:
            raise BuildError(f"profile {origin} is not usable: {err}") from None
        if loaded.banner.strip() not in banners:
            theirs, ours = loaded.banner.strip(), banners[0]
            pairs = enumerate(zip(theirs, ours, strict=False))
            at = next((i for i, (a, b) in pairs if a != b), min(len(theirs), len(ours)))
            start = max(0, at - 30)
            raise BuildError(
                f"profile {origin} describes another kernel: its banner has …{theirs[start : at + 40]!r} where "
                f"--kernel {kernel} has …{ours[start : at + 40]!r}"
            )
    return UserKernel(vmlinuz, release, data, origin)


def import_image(
    name: str,
    rootfs: Path,
    *,
    kernel: Path | None = None,
    vmlinux: Path | None = None,
    profile: Path | None = None,
    init: str | None = None,
    suite: str = DEFAULT_SUITE,
    disk: bool = False,
    cache: Path | None = None,
    progress: Progress | None = None,
) -> ImageBundle:
    """Make the bundle ``name`` from the root filesystem at ``rootfs`` and return it, loaded and verified.

    ``init`` is the command a run without ``--cmd`` runs (default: :func:`default_init`; none found: the
    image runs nothing but what ``--cmd`` gives).  With ``disk`` the root filesystem goes on the guest's
    disk instead of into its RAM (:mod:`qppsuite.images.rootdisk`).  ``suite`` is the Debian release the
    toolkit's busybox and the default kernel come from.  Every failure is one BuildError line; nothing is
    left behind.
    """
    report: Progress = progress or (lambda _message: None)
    if vmlinux is not None and profile is not None:
        raise BuildError("give --vmlinux or --profile, not both: each is the kernel's profile")
    if kernel is None and (vmlinux is not None or profile is not None):
        raise BuildError("--vmlinux and --profile describe --kernel's kernel; Debian's kernel brings its own")
    if disk and kernel is not None:
        raise BuildError(
            "--disk needs Debian's kernel, whose modules reach the disk (a kernel of your own would need "
            "virtio-mmio, virtio-blk and ext4 built in, which qppsuite cannot check)"
        )
    if init is not None and (not init.strip() or "\0" in init or "\n" in init):
        raise BuildError("--init must be one line of shell, not empty")
    with bundle_workspace(name, suite, cache, report) as (apt, images):
        root = _read_root(rootfs, disk, report)
        command = init if init is not None else root.default_init()
        mine = user_kernel(kernel, vmlinux, profile, report) if kernel is not None else None
        with apt.locked():
            parts = _fetch(apt, mine is None, images.parent)
            return make_bundle(
                images, name, lambda staging: _assemble(staging, name, root, command, parts, mine, report)
            )


@dataclass(frozen=True)
class _Root:
    """The user's root filesystem: its source and format, its tree (None: an ext image that becomes the disk
    as it is, never read whole), and whether it goes on a disk."""

    source: Path
    kind: str
    tree: InitramfsTree | None
    disk: bool

    def default_init(self) -> str | None:
        if self.tree is not None:
            return default_init(self.tree)
        return next((path for path in INIT_CANDIDATES if ext_has(self.source, path)), None)


def _read_root(rootfs: Path, disk: bool, report: Progress) -> _Root:
    if not rootfs.exists():
        raise BuildError(f"root filesystem {rootfs} does not exist")
    if disk and detect_format(rootfs) == "ext2/3/4":
        return _Root(rootfs, "ext2/3/4", None, disk)
    kind, tree = read_rootfs(rootfs, report, for_disk=disk)
    return _Root(rootfs, kind, tree, disk)


@dataclass(frozen=True)
class _Debian:
    """What an import takes from the suite: busybox-static, and the kernel with its profile when the user
    brings none."""

    suite: str
    busybox: AptPackage
    kernel: AptPackage | None
    dbg: AptPackage | None
    debs: dict[str, Path]


def _fetch(apt: PrivateApt, with_kernel: bool, root: Path) -> _Debian:
    if with_kernel:
        inputs = fetch_inputs(apt, [], None, with_dbg=optional_profile_builder() is not None, root=root)
        busybox = next(p for p in inputs.initramfs if p.name == BUSYBOX_PACKAGE)
        return _Debian(inputs.suite, busybox, inputs.kernel, inputs.dbg, inputs.debs)
    apt.refresh()
    [busybox] = apt.show([BUSYBOX_PACKAGE])
    return _Debian(apt.suite or DEFAULT_SUITE, busybox, None, None, {busybox.name: apt.download(busybox)})


def busybox_binary(deb: Path) -> bytes:
    """The busybox binary in a busybox(-static) package (``/bin`` before trixie, ``/usr/bin`` from it)."""
    with open_data_tar(deb) as tar:
        for member in tar:
            if member.name.removeprefix("./") in ("bin/busybox", "usr/bin/busybox") and member.isreg():
                handle = tar.extractfile(member)
                if handle is not None:
                    return handle.read()
    raise BuildError(f"{deb.name} does not contain busybox")


def add_qppsuite_files(tree: InitramfsTree, busybox: bytes, command: str | None) -> None:
    """The toolkit, init, workload and mount points (see the module's docstring) into the user's tree."""
    for ours in (".qppsuite", "etc/qppsuite"):  # qppsuite's own places: whatever the tree has there goes
        entry = tree.get(ours)
        if entry is not None and not entry.is_dir:
            tree.remove(ours)
    binary = f"{TOOLKIT_DIR}/busybox"
    tree.add_file(binary, busybox, 0o755)
    add_toolkit(tree, busybox_applets(busybox), f"/{binary}")
    tree.add_file(INIT_PATH, guest_script("init.sh"), 0o755)
    tree.add_file(WORKLOAD_PATH, f"{command}\n".encode() if command else b":\n")
    for directory, perm in (("proc", 0o555), ("sys", 0o555), ("dev", 0o755), ("tmp", 0o1777), ("root", 0o700)):
        entry = tree.get(directory)
        # init mounts proc, sys and dev there and runs commands in /root: a file or a link in their place (a
        # debootstrap --foreign root has proc -> /proc) would stop it; /tmp may be a link (to /var/tmp)
        if entry is None or (not entry.is_dir and (directory != "tmp" or not stat.S_ISLNK(entry.mode))):
            tree.remove(directory)
            tree.add_directory(directory, perm)
    if "dev/console" not in tree:  # the kernel opens it for PID 1 before init mounts devtmpfs
        tree.add(CpioEntry.char_device("dev/console", 5, 1))


def _assemble(
    staging: Path,
    name: str,
    root: _Root,
    command: str | None,
    parts: _Debian,
    mine: UserKernel | None,
    report: Progress,
) -> None:
    files: dict[str, bytes | Path] = {}
    used = [parts.busybox]
    kernel_section: dict[str, Any]
    modules: dict[str, bytes] = {}
    if mine is not None:
        files[KERNEL_FILE] = mine.vmlinuz
        kernel_section = {"file": KERNEL_FILE, "release": mine.release, "config": None}
        if mine.profile is not None:
            files[PROFILE_FILE] = mine.profile
    else:
        assert parts.kernel is not None
        release = parts.kernel.name.removeprefix("linux-image-")
        report(f"extracting kernel {release} ({parts.kernel.version})")
        kernel_deb = parts.debs[parts.kernel.name]
        kernel = extract_kernel(kernel_deb, release)
        files[KERNEL_FILE] = kernel.vmlinuz
        files[CONFIG_FILE] = kernel.config
        kernel_section = {
            "file": KERNEL_FILE,
            "package": parts.kernel.name,
            "version": parts.kernel.version,
            "release": release,
            "config": CONFIG_FILE,
        }
        used.append(parts.kernel)
        if root.disk:
            modules = {m.name: m.data for m in kernel_modules(kernel_deb, release, DISK_MODULES)}
        builder = optional_profile_builder()
        if builder is not None and parts.dbg is not None:
            report("building the OSI profile from the debug vmlinux")
            files[PROFILE_FILE] = build_profile(parts.debs[parts.dbg.name], staging, *builder)
            used.append(parts.dbg)
    report("assembling the initramfs")
    busybox = busybox_binary(parts.debs[parts.busybox.name])
    if root.disk:
        initrd = InitramfsTree()
        add_qppsuite_files(initrd, busybox, command)
        initrd.add_directory("sysroot")
        # busybox switch_root checks it is leaving an initramfs by finding a regular /init there
        initrd.add_file("init", guest_script("init.sh"), 0o755)
        add_disk_boot(initrd, modules)
        if root.tree is None:
            report(f"copying {root.source} as the disk")
            shutil.copyfile(root.source, staging / DISK_FILE)
        else:
            report("making the disk's ext4 file system")
            make_ext4(root.tree, staging / DISK_FILE)
        files[DISK_FILE] = staging / DISK_FILE
    else:
        assert root.tree is not None
        initrd = root.tree
        add_qppsuite_files(initrd, busybox, command)
    initrd_bytes = initrd.archive()
    files[INITRD_FILE] = initrd_bytes
    rootfs_size = rootfs_bytes(initrd.entries())
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "created_by": f"qppsuite {__version__}",
        "suite": parts.suite,
        "kernel": kernel_section,
        "initrd": {
            "file": INITRD_FILE,
            "rootfs_bytes": rootfs_size,
            "ram_mib": default_ram_mib(rootfs_size, len(initrd_bytes)),
        },
        "profile": {"file": PROFILE_FILE} if PROFILE_FILE in files else None,
        "disk": {"file": DISK_FILE} if root.disk else None,
        "bootargs": f"{DEFAULT_BOOTARGS} rdinit=/{INIT_PATH}",
        "packages": [package_record(p) for p in sorted(used, key=lambda p: p.name)],
        "rootfs": {"source": root.source.name or str(root.source), "format": root.kind},
        "init": command,
        "toolkit": f"/{TOOLKIT_DIR}",
    }
    if mine is not None and mine.profile_origin is not None:
        manifest["profile"]["source"] = Path(mine.profile_origin).name
    write_bundle(staging, files, manifest)
