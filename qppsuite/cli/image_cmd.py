"""``qppsuite image build|import|list|info``: make image bundles and look inside them.

Progress and tables go to the terminal; ``build`` prints only the bundle's
path on stdout, so scripts can capture it (``IMG=$(qppsuite image build)``).
"""

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from qppsuite.cli import app
from qppsuite.cli.terminal import SafeConsole, styled
from qppsuite.errors import ImageError
from qppsuite.images.bundle import ImageBundle, images_dir, list_images, open_image

image_app = typer.Typer(help="Build and inspect image bundles (kernel, initramfs, OSI profile).", no_args_is_help=True)
app.add_typer(image_app, name="image")

console = SafeConsole()
status_console = SafeConsole(stderr=True)

CacheOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache directory (default: $QPPSUITE_CACHE, else the XDG cache dir)."),
]


class ListFormat(StrEnum):
    table = "table"
    json = "json"


class Variant(StrEnum):
    """The image variants of qppsuite.images.builder.VARIANTS (not imported here: it pulls in apt)."""

    busybox = "busybox"
    minbase = "minbase"


class InfoFormat(StrEnum):
    text = "text"
    json = "json"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _bundle_size(bundle: ImageBundle) -> int:
    return sum(int(entry.get("size", 0)) for entry in bundle.manifest["files"].values())


def _kernel_label(manifest: dict[str, Any]) -> str:
    kernel = manifest["kernel"]
    release, version = kernel.get("release"), kernel.get("version")
    return f"{release} ({version})" if release and version else str(release or version or kernel["file"])


def _summary(bundle: ImageBundle) -> dict[str, Any]:
    return {
        "name": bundle.name,
        "kernel": bundle.manifest["kernel"].get("release"),
        "kernel_version": bundle.manifest["kernel"].get("version"),
        "packages": bundle.manifest.get("requested_packages", []),
        "profile": bundle.profile_path is not None,
        "size": _bundle_size(bundle),
        "path": str(bundle.path),
    }


@contextmanager
def _progress(title: str, started: float) -> Iterator[Callable[[str], None]]:
    """A spinner titled ``title``, and the function a build's steps report to: each step is printed on stderr
    with the seconds since ``started`` (``time.monotonic()``) and becomes the spinner's text."""
    with status_console.status(styled(title)) as status:

        def progress(message: str) -> None:
            status_console.print(styled((f"{time.monotonic() - started:6.1f}s ", "dim"), message))
            status.update(styled(message))

        yield progress


@image_app.command("build")
def build(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Image name (default: debian-armhf, debian-armhf-minbase with --variant minbase, then -SUITE "
            "for a suite other than bookworm, plus +PKG for each extra package)."
        ),
    ] = None,
    packages: Annotated[
        str, typer.Option("--packages", help="Extra Debian armhf packages, comma-separated (e.g. strace,python3).")
    ] = "",
    suite: Annotated[
        str,
        typer.Option("--suite", help="Debian suite to take every package from, through the host's apt archive."),
    ] = "bookworm",
    kernel: Annotated[
        str | None,
        typer.Option(
            "--kernel", metavar="VERSION", help="armmp kernel release, e.g. 6.12.117+deb13 (default: the newest)"
        ),
    ] = None,
    variant: Annotated[
        Variant,
        typer.Option(
            "--variant",
            help="The userland: busybox's applets, or minbase, Debian's minimal system as debootstrap "
            "--variant=minbase installs it (dash, bash, coreutils, apt...).",
        ),
    ] = Variant.busybox,
    cache_dir: CacheOption = None,
) -> None:
    """Build an image bundle from Debian packages and print its path."""
    from qppsuite.images.builder import build_image, default_image_name, parse_package_list  # apt, debfiles: only here

    extra = parse_package_list(packages)
    image_name = name or default_image_name(extra, suite, variant.value)
    started = time.monotonic()
    with _progress(f"building image '{image_name}'", started) as progress:
        bundle = build_image(
            image_name,
            packages=extra,
            suite=suite,
            kernel=kernel,
            variant=variant.value,
            cache=cache_dir,
            progress=progress,
        )
    profile = "with" if bundle.profile_path else "without"
    status_console.print(
        styled(
            ("built", "green"),
            f" '{bundle.name}' ({human_size(_bundle_size(bundle))}, {profile} OSI profile) "
            f"in {time.monotonic() - started:.1f}s",
        )
    )
    print(bundle.path)


@image_app.command("import")
def import_(
    name: Annotated[str, typer.Argument(help="Name of the new image.")],
    rootfs: Annotated[
        Path,
        typer.Option(
            "--rootfs",
            help="The root filesystem: a directory, a tar or cpio archive (plain, gz, xz, zst...), a squashfs or "
            "an ext2/3/4 image.",
        ),
    ],
    kernel: Annotated[
        Path | None,
        typer.Option("--kernel", metavar="FILE", help="An ARM zImage or Image (default: Debian's armmp kernel)."),
    ] = None,
    vmlinux: Annotated[
        Path | None,
        typer.Option("--vmlinux", metavar="FILE", help="--kernel's vmlinux with DWARF, to build the OSI profile from."),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", metavar="FILE", help="--kernel's profile: qppsuite's JSON or a Volatility 3 ISF."),
    ] = None,
    init: Annotated[
        str | None,
        typer.Option(
            "--init",
            metavar="CMD",
            help="What a run without --cmd runs, as PID 1's child (default: the first of /etc/init.d/rcS, "
            "/sbin/init, /etc/init, /bin/init the root filesystem has).",
        ),
    ] = None,
    suite: Annotated[
        str, typer.Option("--suite", help="Debian suite of the toolkit's busybox and the default kernel.")
    ] = "bookworm",
    disk: Annotated[
        bool,
        typer.Option(
            "--disk",
            help="Put the root filesystem on the guest's disk (/dev/vda, ext4) instead of in its RAM: for roots "
            "too large for --ram.  An ext2/3/4 image is the disk as it is.",
        ),
    ] = False,
    cache_dir: CacheOption = None,
) -> None:
    """Make an image from your own root filesystem (a firmware's, a debootstrap'd Debian) and print its path."""
    from qppsuite.images.importer import import_image  # apt, archive readers: only here

    started = time.monotonic()
    with _progress(f"importing image '{name}'", started) as progress:
        bundle = import_image(
            name,
            rootfs.expanduser(),
            kernel=kernel,
            vmlinux=vmlinux,
            profile=profile,
            init=init,
            suite=suite,
            disk=disk,
            cache=cache_dir,
            progress=progress,
        )
    source = bundle.manifest.get("rootfs") or {}
    command = bundle.manifest.get("init")
    status_console.print(
        styled(
            ("imported", "green"),
            f" '{bundle.name}' from {source.get('format', '?')} {source.get('source', '?')} "
            f"({human_size(_bundle_size(bundle))}, {'with' if bundle.profile_path else 'without'} OSI profile) "
            f"in {time.monotonic() - started:.1f}s; ",
            f"runs without --cmd run {command}" if command else "no init found: runs need --cmd",
        )
    )
    print(bundle.path)


@image_app.command("list")
def list_(
    cache_dir: CacheOption = None,
    output: Annotated[ListFormat, typer.Option("--format", help="Output format.")] = ListFormat.table,
) -> None:
    """List built images."""
    bundles = list_images(cache_dir)
    broken = _unreadable_bundles(cache_dir, {b.path.name for b in bundles})
    if output is ListFormat.json:
        rows = [_summary(b) for b in bundles] + [{"name": name, "error": message} for name, message in broken.items()]
        print(json.dumps(rows, indent=2))
        return
    if not bundles and not broken:
        status_console.print(f"no images in {images_dir(cache_dir)}; build one with `qppsuite image build`")
        return
    table = Table(title=f"Images in {images_dir(cache_dir)}", title_justify="left")
    for column in ("Name", "Kernel", "Packages", "Profile", "Size", "Path"):
        table.add_column(column, overflow="fold")
    for bundle in bundles:
        table.add_row(
            bundle.name,
            _kernel_label(bundle.manifest),
            ", ".join(bundle.manifest.get("requested_packages", [])) or "-",
            "yes" if bundle.profile_path else "no",
            human_size(_bundle_size(bundle)),
            str(bundle.path),
        )
    for name, message in broken.items():
        table.add_row(name, styled((f"unreadable: {message}", "red")), "", "", "", "")
    console.print(table)


def _unreadable_bundles(cache_dir: Path | None, readable: set[str]) -> dict[str, str]:
    """Image directories the loader refuses, with its reason: listing them beats hiding them."""
    root = images_dir(cache_dir)
    if not root.is_dir():
        return {}
    broken = {}
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.name.startswith(".") and path.name not in readable:
            try:
                open_image(path, verify=False)
            except ImageError as err:
                broken[path.name] = str(err)
    return broken


@image_app.command("info")
def info(
    name: Annotated[str, typer.Argument(help="Image name, or the path of a bundle directory.")],
    cache_dir: CacheOption = None,
    output: Annotated[InfoFormat, typer.Option("--format", help="Output format.")] = InfoFormat.text,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Check every file's sha256.")] = True,
) -> None:
    """Show an image's manifest: kernel, packages, files; verifies checksums by default."""
    bundle = open_image(name, cache=cache_dir, verify=verify)
    if output is InfoFormat.json:
        print(json.dumps({"path": str(bundle.path), "verified": verify, **bundle.manifest}, indent=2))
        return
    manifest = bundle.manifest
    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("name", bundle.name)
    overview.add_row("path", str(bundle.path))
    overview.add_row("created by", str(manifest.get("created_by", "?")))
    kernel = manifest["kernel"]
    overview.add_row("kernel", f"{kernel.get('package', kernel['file'])} {kernel.get('version', '')}".strip())
    overview.add_row("release", str(kernel.get("release", "?")))
    overview.add_row("suite", str(manifest.get("suite", "?")))
    if "variant" in manifest:
        overview.add_row("variant", str(manifest["variant"]))
    initrd = manifest.get("initrd") or {}
    if "ram_mib" in initrd:
        unpacked = human_size(int(initrd.get("rootfs_bytes", 0)))
        overview.add_row("ram", f"{initrd['ram_mib']} MiB by default ({unpacked} of files in the guest's RAM)")
    if "rootfs" in manifest:
        rootfs = manifest["rootfs"]
        overview.add_row("root filesystem", f"{rootfs.get('format', '?')} {rootfs.get('source', '?')} (imported)")
        overview.add_row("init", str(manifest.get("init") or "none (runs need --cmd)"))
    if bundle.disk_path is not None:
        overview.add_row("disk", f"{bundle.disk_path.name}: /dev/vda, the root file system")
    overview.add_row("bootargs", bundle.bootargs)
    overview.add_row("profile", bundle.profile_path.name if bundle.profile_path else "none")
    overview.add_row("modules", ", ".join(manifest.get("modules", [])) or "none")
    overview.add_row("extra packages", ", ".join(manifest.get("requested_packages", [])) or "none")
    overview.add_row("checksums", "verified" if verify else "not checked")
    console.print(overview)

    packages = Table(title="Packages", title_justify="left")
    for column in ("Package", "Version", "Arch", "sha256"):
        packages.add_column(column, overflow="fold")
    for package in manifest.get("packages", []):
        packages.add_row(
            package["name"], package["version"], package.get("architecture", ""), package.get("sha256", "")[:16]
        )
    console.print(packages)

    files = Table(title="Files", title_justify="left")
    for column in ("File", "Size", "sha256"):
        files.add_column(column)
    for file_name, entry in sorted(manifest["files"].items()):
        files.add_row(file_name, human_size(int(entry.get("size", 0))), str(entry.get("sha256", ""))[:16])
    console.print(files)
