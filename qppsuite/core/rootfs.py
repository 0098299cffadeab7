"""Does the initramfs fit in the rootfs Linux unpacks it into?

Linux mounts its first root filesystem as tmpfs when it has ``CONFIG_TMPFS``
and is given no ``root=`` (init/do_mounts.c, ``rootfs_init_fs_context``),
sized as any tmpfs mounted without ``size=``: half the RAM pages the kernel
manages at that moment (mm/shmem.c, ``shmem_default_max_blocks``).  Those
pages are what the boot line ``Memory: 222748K/262144K available (...)``
(mm/page_alloc.c, ``mem_init_print_info``) calls available: the RAM less the
kernel, the initrd (still reserved while it is unpacked) and the kernel's own
reservations.  The initrd's files then go into that tmpfs (init/initramfs.c);
one that does not fit ends the unpacking with ``Initramfs unpacking failed:
write error``, and the kernel boots on with what was unpacked, so the
image's ``/init`` or the user's ``--cmd`` may be missing.

So a run is refused before boot when the files cannot fit in half of what
the initrd leaves of RAM, and stopped at the kernel's ``Memory:`` line (before
any unpacking) when they exceed half of what the kernel reports, or at the
unpacker's own failure message, whatever its cause.  Each refusal says which
``--ram`` would fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from qppsuite.core.board import RAM_MAX_MIB

MIB = 1 << 20

TMPFS_SHARE = 2
"""A tmpfs without ``size=`` may fill 1/TMPFS_SHARE of the kernel's RAM pages (mm/shmem.c)."""

PAGE_MAP_SHARE = 128
"""The kernel's ``struct page`` array takes 1/PAGE_MAP_SHARE of RAM (32 bytes per 4 KiB page on 32-bit ARM),
so each MiB more of RAM gives the kernel 127/128 MiB more pages."""

HEADROOM = 16 * MIB
"""Free space the suggested ``--ram`` leaves in the rootfs beyond the image's files: the guest's ``/tmp``
is that same tmpfs, and the workloads write there."""

RAM_STEP_MIB = 16
"""Suggested ``--ram`` values are rounded up to a multiple of this."""

MEMORY_LINE = re.compile(rb"Memory: (\d+)K/(\d+)K available")
UNPACK_FAILED = b"Initramfs unpacking failed: "


def reported_available(line: bytes) -> int | None:
    """The bytes a ``Memory: ...K/...K available`` boot line reports available, or None for another line."""
    found = MEMORY_LINE.search(line)
    return int(found.group(1)) * 1024 if found is not None else None


@dataclass(frozen=True)
class RootfsFit:
    """What the rootfs must hold: ``rootfs_bytes`` of the initrd's files in tmpfs pages, at ``ram_mib``.

    ``initrd_size`` is the initrd's size in bytes (it stays reserved in RAM while it is unpacked).
    """

    rootfs_bytes: int
    ram_mib: int
    initrd_size: int

    def least_ram_mib(self, available: int | None = None) -> int:
        """The smallest ``--ram`` (MiB, a multiple of :data:`RAM_STEP_MIB`) whose rootfs holds the files.

        ``available``: the bytes the kernel reported available at ``ram_mib``; without it the kernel's
        own reservations are taken as 0, which understates the answer (the pre-boot check only refuses
        what cannot fit at all).
        """
        ram = self.ram_mib * MIB
        if available is None:
            available = ram - self.initrd_size
        needed = TMPFS_SHARE * (self.rootfs_bytes + HEADROOM)
        extra = max(0, needed - available) * PAGE_MAP_SHARE // (PAGE_MAP_SHARE - 1)
        least = -(-(ram + extra) // (RAM_STEP_MIB * MIB)) * RAM_STEP_MIB
        return max(least, self.ram_mib + (RAM_STEP_MIB if extra else 0))

    def advice(self, available: int | None = None) -> str:
        """``use --ram N or more``, or why no RAM this board takes (at most RAM_MAX_MIB) is enough."""
        least = self.least_ram_mib(available)
        if least > RAM_MAX_MIB:
            return f"no --ram fits: this board takes at most {RAM_MAX_MIB} MiB"
        return f"use --ram {least} or more"

    def before_boot(self) -> str | None:
        """Why the files cannot fit whatever the kernel reserves (the initrd alone leaves too little), or None."""
        capacity = (self.ram_mib * MIB - self.initrd_size) // TMPFS_SHARE
        if self.rootfs_bytes <= capacity:
            return None
        return (
            f"the initramfs holds {self.rootfs_bytes / MIB:.0f} MiB of files, but at --ram {self.ram_mib} its "
            f"rootfs (a tmpfs of half the RAM the kernel keeps) is under {capacity / MIB:.0f} MiB; "
            f"{self.advice()}"
        )

    def at_memory_line(self, line: bytes) -> str | None:
        """Why the files will not fit, judged from the kernel's ``Memory: ...K available`` line, or None.

        Any other line, or one whose figures are not plausible for this RAM, gives None.
        """
        available = reported_available(line)
        if available is None or not 0 < available <= self.ram_mib * MIB:
            return None
        capacity = available // TMPFS_SHARE
        if self.rootfs_bytes <= capacity:
            return None
        return (
            f"the initramfs holds {self.rootfs_bytes / MIB:.0f} MiB of files, but at --ram {self.ram_mib} the "
            f"kernel's rootfs is a {capacity / MIB:.0f} MiB tmpfs (half of the {available / MIB:.0f} MiB it "
            f"reports available); {self.advice(available)}"
        )


class RootfsWatch:
    """Reads the kernel's boot lines for the rootfs verdict.

    The machine stops asking at the first system call: user space runs only
    once the unpacking is over (``kernel_init`` and the user-mode helpers wait
    for it, init/main.c and kernel/umh.c), so nothing the guest's programs
    print, however it imitates the kernel, is read.
    """

    def __init__(self, fit: RootfsFit | None) -> None:
        self.fit = fit
        self.available: int | None = None

    def line(self, line: bytes) -> str | None:
        """Why the run must stop, after this console line, or None."""
        available = reported_available(line)
        if available is not None:
            self.available = available
            return self.fit.at_memory_line(line) if self.fit is not None else None
        at = line.find(UNPACK_FAILED)
        if at < 0:
            return None
        said = line[at:].decode("ascii", "backslashreplace").strip()
        message = f"the kernel could not unpack the initramfs ('{said}'), so the guest would lack some of its files"
        if b"write error" in line:
            advice = self.fit.advice(self.available) if self.fit is not None else "use a larger --ram"
            message += f": the rootfs (a tmpfs of half the kernel's RAM) is full; {advice}"
        return message
