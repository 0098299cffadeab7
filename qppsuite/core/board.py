"""The board: where RAM and devices live, which interrupts they raise, and its device tree.

A ``linux,dummy-virt`` board in the spirit of QEMU's ``-M virt``, cut down to
what the Debian armmp kernel needs with no arch timer (Unicorn's generic timer
never interrupts): GICv2, an SP804 for clockevent/clocksource/sched_clock, a
PL011 console, a second PL011 for the host<->guest channel, PSCI over SMC and,
only when a disk is attached, one virtio-mmio transport with a block device
(``/dev/vda``).  Without a disk the devices and the device tree are exactly
those of a board that never had one.  The device tree is built in Python (``fdt``).
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import fdt

from qppsuite.core.devices.gic import Gic
from qppsuite.core.devices.pl011 import Pl011
from qppsuite.core.devices.psci import PowerEvent, Psci
from qppsuite.core.devices.sp804 import Sp804
from qppsuite.core.devices.virtio_mmio import WINDOW_SIZE, DmaRead, DmaWrite, VirtioBackend, VirtioMmio

RAM_BASE = 0x40000000
GICD_BASE = 0x08000000
GICC_BASE = 0x08010000
GICC_SIZE = 0x2000
UART_BASE = 0x09000000
TIMER_BASE = 0x09010000
#: The second PL011, ``ttyAMA1``: the host<->guest channel (qppsuite/channel.py).
CHANNEL_BASE = 0x09020000
MMIO_SIZE = 0x1000
#: The virtio-mmio transport of the disk, where QEMU's virt board puts its first one (VIRT_MMIO).
VIRTIO_BASE = 0x0A000000
VIRTIO_SIZE = WINDOW_SIZE

# Shared peripheral interrupts (GIC SPI numbers; the interrupt ID is 32 + n).
UART_SPI = 1
TIMER_SPI = 2
CHANNEL_SPI = 3
#: The disk's transport (QEMU's virt board: VIRTIO_IRQ, its first transport's).
DISK_SPI = 16
NUM_IRQS = 96

#: Offset of the kernel image from the start of RAM (the ARM boot protocol's TEXT_OFFSET).
KERNEL_OFFSET = 0x8000

PHANDLE_GIC = 1
PHANDLE_APB_PCLK = 2
PHANDLE_TIMCLK = 3

TIMCLK_HZ = 1_000_000
APB_PCLK_HZ = 24_000_000
IRQ_TYPE_LEVEL_HIGH = 4
GIC_SPI = 0

#: ``/chosen/rng-seed``, as QEMU's virt board passes one.  Without it the kernel's
#: CRNG is not ready when userspace starts, and the board offers no cycle counter
#: (no arch timer), so the first read of /dev/urandom busy-waits for billions of
#: instructions in try_to_generate_entropy().  The seed is fixed so runs stay
#: deterministic (ASLR and every other guest randomness is the same each run).
RNG_SEED = hashlib.sha256(b"qppsuite board rng-seed").digest()


@dataclass(frozen=True)
class BootLayout:
    """Where the boot loader puts things in guest physical memory."""

    ram_size: int
    kernel: int
    dtb: int
    initrd: int
    initrd_size: int


RAM_MAX_MIB = 3000
"""Most guest RAM: it sits at RAM_BASE (1 GiB) in a 32-bit physical space, and unicorn 2.1.4 fails to map a
region that reaches the 4 GiB boundary (3072 MiB crashes inside the engine; 3000 boots)."""


MmioMap = Callable[[int, int, Callable[[int, int], int], Callable[[int, int, int], None]], None]
"""``map_mmio(base, size, read(offset, size), write(offset, value, size))``: the engine's MMIO mapping."""


@dataclass(frozen=True)
class Devices:
    """The board's devices, made and wired by :func:`create_devices`."""

    gic: Gic
    timer: Sp804
    uart: Pl011
    channel: Pl011
    psci: Psci
    #: The disk's virtio-mmio transport, when a disk is attached.
    disk: VirtioMmio | None = None

    def reset(self) -> None:
        """Every device to its reset state, as at power-on."""
        for device in (self.gic.distributor, self.gic.cpu_interface, self.timer, self.uart, self.channel, self.psci):
            device.reset()
        if self.disk is not None:
            self.disk.reset()


def create_devices(
    map_mmio: MmioMap,
    now_ns: Callable[[], int],
    cpu_irq: Callable[[bool], None],
    console: Callable[[bytes], None],
    channel: Callable[[bytes], None],
    power: Callable[[PowerEvent], None],
    disk: tuple[VirtioBackend, DmaRead, DmaWrite] | None = None,
) -> Devices:
    """Make the devices and wire them, as QEMU's ``virt.c`` (``machvirt_init``) wires its own.

    Each device gets its MMIO window (the addresses the device tree gives the
    kernel), each device interrupt goes to its GIC SPI, and the GIC's output
    drives the CPU's IRQ line (``cpu_irq``).  ``now_ns`` is virtual time for the
    SP804, ``console`` receives what the PL011 transmits, ``channel`` what the
    second PL011 (a line with a baud rate and flow control, ``ttyAMA1``) transmits, ``power`` the PSCI
    power requests (served over SMC: the machine calls :meth:`Psci.call`).  ``disk`` is a virtio device
    (the block device) and the accessors of guest physical memory its transport reaches buffers through,
    as QEMU's ``create_virtio_devices`` wires a transport at VIRTIO_BASE on DISK_SPI; None: no transport.
    """
    gic = Gic(irq_out=cpu_irq, num_irqs=NUM_IRQS)
    timer = Sp804(now_ns=now_ns, irq_out=lambda level: gic.set_irq(32 + TIMER_SPI, level))
    uart = Pl011(on_tx=console, irq_out=lambda level: gic.set_irq(32 + UART_SPI, level))
    channel_port = Pl011(on_tx=channel, irq_out=lambda level: gic.set_irq(32 + CHANNEL_SPI, level), now_ns=now_ns)
    psci = Psci(on_power=power)
    windows = (
        (GICD_BASE, MMIO_SIZE, gic.distributor),
        (GICC_BASE, GICC_SIZE, gic.cpu_interface),
        (UART_BASE, MMIO_SIZE, uart),
        (TIMER_BASE, MMIO_SIZE, timer),
        (CHANNEL_BASE, MMIO_SIZE, channel_port),
    )
    for base, size, device in windows:
        map_mmio(base, size, device.read, device.write)
    transport = None
    if disk is not None:
        backend, dma_read, dma_write = disk
        transport = VirtioMmio(backend, lambda level: gic.set_irq(32 + DISK_SPI, level), dma_read, dma_write)
        # The engine maps whole 4 KiB pages; accesses past the transport's window are its guest errors.
        map_mmio(VIRTIO_BASE, MMIO_SIZE, transport.read, transport.write)
    return Devices(gic, timer, uart, channel_port, psci, transport)


def minimum_ram_mib(kernel_size: int, initrd_size: int, kernel_offset: int = KERNEL_OFFSET) -> int:
    """The least RAM, in MiB (a multiple of 16), that :func:`plan_layout` accepts for these sizes."""
    mib = 16
    while mib <= RAM_MAX_MIB:
        try:
            plan_layout(mib << 20, kernel_size, initrd_size, kernel_offset)
        except ValueError:
            mib += 16
            continue
        return mib
    return RAM_MAX_MIB + 1


def plan_layout(
    ram_size: int, kernel_size: int, initrd_size: int, kernel_offset: int = KERNEL_OFFSET, dtb_reserve: int = 0x10000
) -> BootLayout:
    """Place the initrd mid-RAM and the DTB right after it, as QEMU's ARM boot loader does.

    Not at the top of RAM: early memblock allocations grow down from there, and
    the armmp kernel does not protect a DTB it reaches through the FDT fixmap.
    Not low either: the kernel and its BSS grow up from the load address.
    """
    kernel = RAM_BASE + kernel_offset
    initrd = RAM_BASE + min(ram_size // 2, 128 << 20)
    dtb = (initrd + initrd_size + 0xFFF) & ~0xFFF
    # A kernel needs room for itself plus BSS and early page tables; 4x its size is generous.
    if initrd < kernel + 4 * kernel_size or dtb + dtb_reserve > RAM_BASE + ram_size - (32 << 20):
        raise ValueError(
            f"{ram_size >> 20} MiB of RAM is too small for a {kernel_size / (1 << 20):.1f} MiB kernel "
            f"and a {initrd_size / (1 << 20):.1f} MiB initrd: the kernel needs 4 times its size below "
            f"the initrd, placed at half of RAM, and 32 MiB must stay free above it"
        )
    return BootLayout(ram_size, kernel, dtb, initrd, initrd_size)


def device_tree(layout: BootLayout, bootargs: str, disk: bool = False) -> bytes:
    """The DTB the kernel boots with (r2 points at it); with ``disk``, a node for the disk's transport."""
    tree = fdt.FDT()
    root = tree.root
    root.append(fdt.PropStrings("compatible", "linux,dummy-virt"))
    root.append(fdt.PropStrings("model", "qppsuite ARM virtual board"))
    root.append(fdt.PropWords("#address-cells", 1))
    root.append(fdt.PropWords("#size-cells", 1))
    root.append(fdt.PropWords("interrupt-parent", PHANDLE_GIC))

    chosen = fdt.Node("chosen")
    chosen.append(fdt.PropStrings("bootargs", bootargs))
    chosen.append(fdt.PropStrings("stdout-path", f"/pl011@{UART_BASE:x}"))
    if layout.initrd_size:
        chosen.append(fdt.PropWords("linux,initrd-start", layout.initrd))
        chosen.append(fdt.PropWords("linux,initrd-end", layout.initrd + layout.initrd_size))
    chosen.append(fdt.PropBytes("rng-seed", data=RNG_SEED))
    root.append(chosen)

    memory = fdt.Node(f"memory@{RAM_BASE:x}")
    memory.append(fdt.PropStrings("device_type", "memory"))
    memory.append(fdt.PropWords("reg", RAM_BASE, layout.ram_size))
    root.append(memory)

    cpus = fdt.Node("cpus")
    cpus.append(fdt.PropWords("#address-cells", 1))
    cpus.append(fdt.PropWords("#size-cells", 0))
    cpu = fdt.Node("cpu@0")
    cpu.append(fdt.PropStrings("device_type", "cpu"))
    cpu.append(fdt.PropStrings("compatible", "arm,cortex-a15"))
    cpu.append(fdt.PropWords("reg", 0))
    cpus.append(cpu)
    root.append(cpus)

    psci = fdt.Node("psci")
    psci.append(fdt.PropStrings("compatible", "arm,psci-0.2", "arm,psci"))
    psci.append(fdt.PropStrings("method", "smc"))
    root.append(psci)

    gic = fdt.Node(f"intc@{GICD_BASE:x}")
    gic.append(fdt.PropStrings("compatible", "arm,cortex-a15-gic"))
    gic.append(fdt.Property("interrupt-controller"))
    gic.append(fdt.PropWords("#interrupt-cells", 3))
    gic.append(fdt.PropWords("reg", GICD_BASE, MMIO_SIZE, GICC_BASE, GICC_SIZE))
    gic.append(fdt.PropWords("phandle", PHANDLE_GIC))
    root.append(gic)

    for name, phandle, hz in (("apb-pclk", PHANDLE_APB_PCLK, APB_PCLK_HZ), ("timclk", PHANDLE_TIMCLK, TIMCLK_HZ)):
        clk = fdt.Node(name)
        clk.append(fdt.PropStrings("compatible", "fixed-clock"))
        clk.append(fdt.PropWords("#clock-cells", 0))
        clk.append(fdt.PropWords("clock-frequency", hz))
        clk.append(fdt.PropStrings("clock-output-names", name))
        clk.append(fdt.PropWords("phandle", phandle))
        root.append(clk)

    # Linux numbers PL011s by these aliases (of_alias_get_id): the console is ttyAMA0, the channel ttyAMA1.
    aliases = fdt.Node("aliases")
    for index, (base, spi) in enumerate(((UART_BASE, UART_SPI), (CHANNEL_BASE, CHANNEL_SPI))):
        uart = fdt.Node(f"pl011@{base:x}")
        uart.append(fdt.PropStrings("compatible", "arm,pl011", "arm,primecell"))
        uart.append(fdt.PropWords("reg", base, MMIO_SIZE))
        uart.append(fdt.PropWords("interrupts", GIC_SPI, spi, IRQ_TYPE_LEVEL_HIGH))
        uart.append(fdt.PropWords("clocks", PHANDLE_APB_PCLK, PHANDLE_APB_PCLK))
        uart.append(fdt.PropStrings("clock-names", "uartclk", "apb_pclk"))
        root.append(uart)
        aliases.append(fdt.PropStrings(f"serial{index}", f"/pl011@{base:x}"))
    root.append(aliases)

    timer = fdt.Node(f"timer@{TIMER_BASE:x}")
    timer.append(fdt.PropStrings("compatible", "arm,sp804", "arm,primecell"))
    timer.append(fdt.PropWords("reg", TIMER_BASE, MMIO_SIZE))
    timer.append(fdt.PropWords("interrupts", GIC_SPI, TIMER_SPI, IRQ_TYPE_LEVEL_HIGH))
    timer.append(fdt.PropWords("clocks", PHANDLE_TIMCLK, PHANDLE_TIMCLK, PHANDLE_APB_PCLK))
    timer.append(fdt.PropStrings("clock-names", "timclken1", "timclken2", "apb_pclk"))
    root.append(timer)

    if disk:
        # As QEMU's virt.c (create_virtio_devices) describes each transport, with a level interrupt like the PL011's.
        virtio = fdt.Node(f"virtio_mmio@{VIRTIO_BASE:x}")
        virtio.append(fdt.PropStrings("compatible", "virtio,mmio"))
        virtio.append(fdt.PropWords("reg", VIRTIO_BASE, VIRTIO_SIZE))
        virtio.append(fdt.PropWords("interrupts", GIC_SPI, DISK_SPI, IRQ_TYPE_LEVEL_HIGH))
        virtio.append(fdt.Property("dma-coherent"))
        root.append(virtio)

    blob: bytes = tree.to_dtb(version=17)
    return blob
