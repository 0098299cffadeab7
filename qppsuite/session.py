"""One analysis run: an image, a machine, the plugins on it, and how it ended.

This is the glue the CLI calls and tests drive directly.  It is the one place
that knows both the image format (workloads, the ``--cmd`` overlay) and the
plugin host; the core machine knows neither.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qppsuite.core.events import CorePlugin, StopReason
from qppsuite.core.image import ImageBundle, cache_dir, open_image
from qppsuite.core.kernel import load_kernel
from qppsuite.core.machine import Machine, MachineConfig
from qppsuite.core.qpp import QPP
from qppsuite.errors import ImageError
from qppsuite.images.initramfs import overlay_archive

DEFAULT_IMAGE = "debian-armhf"
#: Where /init looks for the user's command (see qppsuite/images/guest/init.sh).
GUEST_CMD_PATH = "/etc/qppsuite/cmd"


@dataclass
class RunOptions:
    """Everything ``qppsuite run`` can be told."""

    image: str | Path = DEFAULT_IMAGE
    cmd: str | None = None
    plugins: Sequence[str] = ()
    plugin_args: dict[str, dict[str, str]] = field(default_factory=dict)
    strict: bool = False
    max_insns: int | None = None
    ram_mib: int = 256
    cache: Path | None = None
    #: Boot a zImage as-is (its own decompressor runs in the guest) instead of unpacking it on the host.
    host_decompress: bool = True
    extra_bootargs: str = ""
    hang_seconds: float = 600.0


@dataclass(frozen=True)
class RunResult:
    """How a run ended, with the figures a user or benchmark wants."""

    reason: StopReason
    insn_count: int
    wall_seconds: float
    image: ImageBundle
    plugins: list[str]

    @property
    def ok(self) -> bool:
        return self.reason.ok


def guest_command_overlay(cmd: str) -> bytes:
    """The ``--cmd`` delivery: a cpio appended to the initrd (no keystrokes, fully deterministic)."""
    return overlay_archive({GUEST_CMD_PATH: cmd.encode() + b"\n"})


def image_labels(image: ImageBundle) -> dict[str, str]:
    """What plugins may want to know about the image (osi_linux finds its profile here)."""
    labels = {"image": image.name, "image_path": str(image.path)}
    kernel = image.manifest.get("kernel") or {}
    if kernel.get("release"):
        labels["kernel_release"] = str(kernel["release"])
    if image.profile_path is not None:
        labels["profile"] = str(image.profile_path)
    return labels


def build_machine(options: RunOptions, image: ImageBundle, console: Callable[[bytes], None] | None) -> Machine:
    """A machine loaded with ``image`` (and the ``--cmd`` overlay), ready to run."""
    kernel = load_kernel(
        image.kernel_path, decompress=options.host_decompress, cache_dir=cache_dir(options.cache) / "kernels"
    )
    initrd = b""
    if image.initrd_path is not None:
        try:
            initrd = image.initrd_path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read initrd {image.initrd_path}: {exc.strerror}") from exc
    if options.cmd is not None:
        if not initrd:
            raise ImageError(f"image '{image.name}' has no initramfs, so --cmd cannot be delivered")
        initrd += guest_command_overlay(options.cmd)
    bootargs = " ".join(part for part in (image.bootargs, options.extra_bootargs) if part)
    config = MachineConfig(
        kernel=kernel,
        initrd=initrd,
        bootargs=bootargs,
        ram_mib=options.ram_mib,
        max_insns=options.max_insns,
        hang_seconds=options.hang_seconds,
        labels=image_labels(image),
    )
    return Machine(config, console=console)


def run(
    options: RunOptions,
    console: Callable[[bytes], None] | None,
    *,
    image: ImageBundle | None = None,
    on_loaded: Callable[[QPP], Any] | None = None,
) -> RunResult:
    """Boot, run plugins, and always unload them (flushing their files), however the run ends."""
    image = image or open_image(options.image, cache=options.cache)
    machine = build_machine(options, image, console)
    start = time.monotonic()
    with QPP(machine, strict=options.strict) as qpp:
        qpp.add_builtin(CorePlugin())
        qpp.load_all(list(options.plugins), options.plugin_args)
        if on_loaded is not None:
            on_loaded(qpp)
        qpp.start_all()
        reason = machine.run()
        qpp.stop_all(reason)
        loaded = [name for name in qpp.loaded if name != "core"]
    return RunResult(reason, machine.insn_count, time.monotonic() - start, image, loaded)
