"""Kernel modules from a Debian kernel package, with what they depend on, in the order to load them.

The armmp kernels build virtio-mmio and virtio-blk as modules (CONFIG_VIRTIO_MMIO=m, CONFIG_VIRTIO_BLK=m),
so a guest that is to see its disk must ``insmod`` them first, and busybox ``insmod`` resolves no
dependency.  The package has no ``modules.dep`` (Debian's postinst runs depmod on the target), so the
dependencies come from where depmod's own build input has them: each module's ``.modinfo`` section,
``depends=a,b`` (written by modpost; modules built into the kernel are never named there).  The package's
``modules.builtin`` says which names are built in: asking for one gives nothing to load.

Bookworm and bullseye ship ``lib/modules/RELEASE/kernel/.../NAME.ko``; trixie ships them under
``usr/lib/modules`` (merged /usr), XZ-compressed (``.ko.xz``), and they come back decompressed.
"""

import lzma
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from debian.arfile import ArError
from debian.debfile import DebError, DebFile

from qppsuite.errors import ImageError
from qppsuite.images.builder import modinfo


@dataclass(frozen=True)
class KernelModule:
    """A module: its name (``virtio_blk``), its path in the package, and its ``.ko`` bytes, decompressed."""

    name: str
    path: str
    data: bytes

    @property
    def depends(self) -> list[str]:
        """The modules it needs loaded first (its ``.modinfo`` ``depends=``); BuildError for a damaged file."""
        value = modinfo(self.data).get("depends", "")
        return [module_name(name) for name in value.split(",") if name]


def module_name(file_name: str) -> str:
    """The kernel's name of a module file: ``virtio-blk.ko.xz`` -> ``virtio_blk`` (kmod's rule: '-' is '_')."""
    base = file_name.rsplit("/", 1)[-1]
    for suffix in (".xz", ".ko"):
        base = base.removesuffix(suffix)
    return base.replace("-", "_")


def _members(deb: Path) -> Iterable[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """Every regular file of the package's data archive, as (path without ./, archive, member)."""
    try:
        with DebFile(str(deb)).data.tgz() as tar:
            for member in tar:
                if member.isreg():
                    yield member.name.removeprefix("./"), tar, member
    except (ArError, DebError, tarfile.TarError, lzma.LZMAError, OSError, EOFError) as exc:
        raise ImageError(f"{deb.name} is not a readable Debian package: {exc}") from None


def _module_dir(path: str, release: str) -> bool:
    return path.startswith((f"lib/modules/{release}/", f"usr/lib/modules/{release}/"))


def kernel_modules(deb: Path, release: str, names: Sequence[str]) -> list[KernelModule]:
    """``names`` and every module they depend on, from the kernel package ``deb`` of ``release``
    (``6.1.0-50-armmp``), in an order that loads each after its dependencies; names built into the kernel
    are left out.  One pass over the package per level of dependency.

    Raises :class:`ImageError` for a package that cannot be read, a name it neither ships nor builds in,
    or a dependency cycle.
    """
    wanted = {module_name(name) for name in names}
    found: dict[str, KernelModule] = {}
    builtin: set[str] = set()
    shipped: set[str] = set()
    first = True
    while wanted:
        for path, tar, member in _members(deb):
            if not _module_dir(path, release):
                continue
            if first and path.endswith("/modules.builtin"):
                handle = tar.extractfile(member)
                builtin = {module_name(line) for line in handle.read().decode().split()} if handle else set()
            if not path.endswith((".ko", ".ko.xz")):
                continue
            name = module_name(path)
            shipped.add(name)
            if name in wanted:
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if path.endswith(".xz"):
                    try:
                        data = lzma.decompress(data, format=lzma.FORMAT_XZ)
                    except lzma.LZMAError as exc:
                        raise ImageError(f"{deb.name}: {path} is damaged: {exc}") from None
                found[name] = KernelModule(name, path.removeprefix("usr/").removesuffix(".xz"), data)
        first = False
        if not shipped:
            raise ImageError(f"{deb.name} ships no modules of kernel release {release}")
        missing = wanted - found.keys() - builtin
        if missing:
            raise ImageError(f"{deb.name}: no module {', '.join(sorted(missing))} (neither shipped nor built in)")
        wanted = {dep for module in found.values() for dep in module.depends} - found.keys() - builtin
    return _load_order([module_name(name) for name in names], found)


def _load_order(roots: Sequence[str], modules: dict[str, KernelModule]) -> list[KernelModule]:
    """Depth first, each module after what it depends on; ImageError for a cycle."""
    order: list[KernelModule] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done or name not in modules:  # not in modules: built in
            return
        if name in path:
            raise ImageError(f"kernel modules depend on each other in a cycle: {' -> '.join([*path, name])}")
        path.append(name)
        for dep in modules[name].depends:
            visit(dep)
        path.pop()
        done.add(name)
        order.append(modules[name])

    for root in roots:
        visit(root)
    return order
