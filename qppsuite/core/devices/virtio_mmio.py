"""The virtio-mmio transport, version 2, with split virtqueues (VIRTIO 1.2, sections 4.2 and 2.7).

One transport carries one virtio device (a :class:`VirtioBackend`, such as
:class:`~qppsuite.core.devices.virtio_blk.VirtioBlk`) behind a 0x200-byte
window: the registers of section 4.2.2 below 0x100 (32-bit accesses only) and
the device's configuration space from 0x100.  Only the modern interface is
offered: Version reads 2 and VIRTIO_F_VERSION_1 must be accepted, so drivers
older than Linux 4.0 see no device.

The guest's buffers are reached through guest physical memory (``dma_read``,
``dma_write``, which raise :class:`~qppsuite.core.memory.GuestMemoryError`
outside RAM).  Requests complete synchronously when the driver writes
QueueNotify: every available buffer is served, put in the used ring, and the
interrupt (level: InterruptStatus != 0) raised, all before the store returns,
so completion depends on nothing but the guest's instructions.

The guest is hostile.  A queue it makes ready must have a power-of-two size up
to QUEUE_NUM_MAX and rings inside RAM; a chain may hold at most QUEUE_NUM_MAX
descriptors (a loop ends there), one level of indirection and
MAX_REQUEST_BYTES of buffers; any other inconsistency (an index past the
queue, a ring or buffer outside RAM, a readable descriptor after a writable
one) stops the device: DEVICE_NEEDS_RESET is set and a configuration-change
interrupt raised (section 2.1.2), and the device serves nothing until the
driver resets it.  Each kind of problem is logged once as a guest error (the keys
hold no value the guest chooses, so a guest cannot grow them); nothing raises.
"""

import struct
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qppsuite.core.devices.base import (
    Device,
    DeviceStateError,
    IrqLine,
    MmioDevice,
    state_field,
    state_int,
)
from qppsuite.core.memory import GuestMemoryError

# Register offsets (VIRTIO 1.2, 4.2.2 "MMIO Device Register Layout").
MagicValue = 0x000
Version = 0x004
DeviceID = 0x008
VendorID = 0x00C
DeviceFeatures = 0x010
DeviceFeaturesSel = 0x014
DriverFeatures = 0x020
DriverFeaturesSel = 0x024
QueueSel = 0x030
QueueNumMax = 0x034
QueueNum = 0x038
QueueReady = 0x044
QueueNotify = 0x050
InterruptStatus = 0x060
InterruptACK = 0x064
Status = 0x070
QueueDescLow = 0x080
QueueDescHigh = 0x084
QueueDriverLow = 0x090
QueueDriverHigh = 0x094
QueueDeviceLow = 0x0A0
QueueDeviceHigh = 0x0A4
SHMSel = 0x0AC
SHMLenLow = 0x0B0
SHMLenHigh = 0x0B4
SHMBaseLow = 0x0B8
SHMBaseHigh = 0x0BC
ConfigGeneration = 0x0FC
Config = 0x100

MAGIC = 0x74726976  # "virt"
VERSION = 2
#: VendorID: QEMU's, which is what Linux's drivers see on the virt board (no driver matches on it).
VENDOR_ID = 0x554D4551
#: The transport's window (QEMU's virtio-mmio size).
WINDOW_SIZE = 0x200

# Device status bits (2.1).
STATUS_ACKNOWLEDGE = 1
STATUS_DRIVER = 2
STATUS_DRIVER_OK = 4
STATUS_FEATURES_OK = 8
STATUS_DEVICE_NEEDS_RESET = 64
STATUS_FAILED = 128

# InterruptStatus bits (4.2.2).
INT_VRING = 1
INT_CONFIG = 2

# Reserved feature bits the transport itself offers (6).
VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_VERSION_1 = 32

# Split virtqueue layout (2.7).
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
DESC_SIZE = 16

#: The largest queue a driver may make (QueueNumMax), and so the longest descriptor chain.
QUEUE_NUM_MAX = 128
#: The most bytes of buffers one request may name; more is a broken chain.
MAX_REQUEST_BYTES = 4 << 20

_DESC = struct.Struct("<QIHH")

#: ``dma_read(paddr, size) -> bytes`` from guest RAM; raises GuestMemoryError outside it.
DmaRead = Callable[[int, int], bytes]
#: ``dma_write(paddr, data)`` into guest RAM; raises GuestMemoryError outside it.
DmaWrite = Callable[[int, bytes], None]


class ChainError(Exception):
    """A descriptor chain or ring the device cannot follow (the device then needs a reset)."""


@dataclass(frozen=True)
class Request:
    """One descriptor chain: the device-readable buffers, then the device-writable ones, as ``(paddr, length)``.

    ``read`` gathers the readable bytes and ``write`` scatters into the writable ones; both stay within the
    buffers the chain named, which the transport has checked lie in RAM.
    """

    readable: tuple[tuple[int, int], ...]
    writable: tuple[tuple[int, int], ...]
    dma_read: DmaRead
    dma_write: DmaWrite

    @property
    def readable_bytes(self) -> int:
        return sum(length for _addr, length in self.readable)

    @property
    def writable_bytes(self) -> int:
        return sum(length for _addr, length in self.writable)

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes from ``offset`` into the readable buffers (fewer where they end)."""
        out = bytearray()
        for addr, length in self.readable:
            if offset >= length:
                offset -= length
                continue
            take = min(length - offset, size - len(out))
            out += self.dma_read(addr + offset, take)
            offset = 0
            if len(out) == size:
                break
        return bytes(out)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Scatter ``data`` into the writable buffers from ``offset`` (what does not fit is dropped)."""
        view = memoryview(data)
        for addr, length in self.writable:
            if not view:
                return
            if offset >= length:
                offset -= length
                continue
            take = min(length - offset, len(view))
            self.dma_write(addr + offset, bytes(view[:take]))
            view = view[take:]
            offset = 0


class VirtioBackend(Device):
    """A virtio device type behind a transport: its ID, features, configuration space and requests."""

    #: The virtio device ID (5: 2 is a block device).
    device_id: int
    #: Device-specific feature bits offered (the transport adds VERSION_1 and INDIRECT_DESC).
    features: int
    #: The device's configuration space, little-endian, as the driver reads it from offset 0x100.
    config: bytes
    #: How many virtqueues the device has.
    num_queues: int = 1

    @abstractmethod
    def handle(self, queue: int, request: Request) -> int:
        """Serve one request of ``queue``; the bytes written into its writable buffers (the used length)."""


@dataclass
class _Queue:
    """One split virtqueue as the driver set it up, and how far the device has consumed it."""

    num: int = 0
    ready: bool = False
    desc: int = 0
    driver: int = 0
    device: int = 0
    last_avail: int = 0
    used_idx: int = 0

    def state(self) -> dict[str, Any]:
        return {
            "num": self.num,
            "ready": self.ready,
            "desc": [self.desc & 0xFFFFFFFF, self.desc >> 32],
            "driver": [self.driver & 0xFFFFFFFF, self.driver >> 32],
            "device": [self.device & 0xFFFFFFFF, self.device >> 32],
            "last_avail": self.last_avail,
            "used_idx": self.used_idx,
        }


def _queue_from_state(state: Any, device: str) -> _Queue:
    queue = _Queue(
        num=state_int(state, device, "num"),
        ready=state_field(state, device, "ready", bool),
        last_avail=state_int(state, device, "last_avail", 16),
        used_idx=state_int(state, device, "used_idx", 16),
    )
    for key in ("desc", "driver", "device"):
        setattr(queue, key, _state_u64(state, device, key))
    if queue.ready and not _valid_num(queue.num):  # a queue not ready holds whatever the guest wrote
        raise DeviceStateError(f"{device} ready queue of size {queue.num}, which the device never accepts")
    return queue


def _state_u64(state: Any, device: str, key: str) -> int:
    """A 64-bit field saved as [low word, high word] (JSON numbers stay below 2**53)."""
    words = state_field(state, device, key, list)
    if len(words) != 2 or not all(isinstance(w, int) and not isinstance(w, bool) and 0 <= w < 1 << 32 for w in words):
        raise DeviceStateError(f"{device} state field {key!r} is not two 32-bit words")
    return int(words[0] | words[1] << 32)


def _valid_num(num: int) -> bool:
    return 0 < num <= QUEUE_NUM_MAX and num & (num - 1) == 0


class VirtioMmio(MmioDevice):
    """A virtio-mmio transport (version 2, VIRTIO 1.2 section 4.2) in front of ``backend``.

    ``irq_out`` is its interrupt line, driven at InterruptStatus != 0 (level); ``dma_read(paddr, size)`` and
    ``dma_write(paddr, data)`` reach guest-physical RAM and raise GuestMemoryError outside it.  ``read`` and
    ``write`` take the offset into the window and an access size of 1, 2 or 4 bytes: registers below
    0x100 answer 32-bit accesses only, the configuration space any aligned one.
    """

    name = "virtio-mmio"
    size = WINDOW_SIZE

    def __init__(self, backend: VirtioBackend, irq_out: IrqLine, dma_read: DmaRead, dma_write: DmaWrite) -> None:
        super().__init__()
        self.backend = backend
        self._irq_out = irq_out
        self._irq_level = False
        self._dma_read = dma_read
        self._dma_write = dma_write
        #: Every feature offered, 64 bits.
        self.offered = backend.features | 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_F_INDIRECT_DESC
        self.queues = [_Queue() for _ in range(backend.num_queues)]
        self.reset()

    @property
    def irq_level(self) -> bool:
        """The level last driven on the interrupt line."""
        return self._irq_level

    # -- Device ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Device reset (4.2.3.1: the driver writes 0 to Status): every register and queue to its initial state."""
        self.status = 0
        self.device_features_sel = 0
        self.driver_features_sel = 0
        self.driver_features = 0
        self.queue_sel = 0
        self.interrupt_status = 0
        self.shm_sel = 0
        for index in range(len(self.queues)):
            self.queues[index] = _Queue()
        self.backend.reset()
        self._drive()

    def get_state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "device_features_sel": self.device_features_sel,
            "driver_features_sel": self.driver_features_sel,
            "driver_features": [self.driver_features & 0xFFFFFFFF, self.driver_features >> 32],
            "queue_sel": self.queue_sel,
            "interrupt_status": self.interrupt_status,
            "shm_sel": self.shm_sel,
            "queues": [queue.state() for queue in self.queues],
            "backend": self.backend.get_state(),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        status = state_int(state, self.name, "status", 8)
        registers = {
            key: state_int(state, self.name, key)
            for key in ("device_features_sel", "driver_features_sel", "queue_sel", "shm_sel")
        }
        interrupt_status = state_int(state, self.name, "interrupt_status", 2)
        driver_features = _state_u64(state, self.name, "driver_features")
        saved = state_field(state, self.name, "queues", list)
        if len(saved) != len(self.queues):
            raise DeviceStateError(f"{self.name} state has {len(saved)} queues, expected {len(self.queues)}")
        queues = [_queue_from_state(queue, self.name) for queue in saved]
        self.backend.set_state(state_field(state, self.name, "backend", dict))
        self.status = status
        self.device_features_sel = registers["device_features_sel"]
        self.driver_features_sel = registers["driver_features_sel"]
        self.queue_sel = registers["queue_sel"]
        self.shm_sel = registers["shm_sel"]
        self.driver_features = driver_features
        self.interrupt_status = interrupt_status
        self.queues = queues
        self._drive()

    # -- registers ------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if not self.access_ok(offset, size, write=False):
            return 0
        if offset >= Config:
            return self._config_read(offset - Config, size)
        if size != 4:
            self.guest_error(("narrow-read", offset), f"{size}-byte read of register {offset:#x} (32-bit only)")
            return 0
        queue = self._selected()
        if offset == MagicValue:
            return MAGIC
        if offset == Version:
            return VERSION
        if offset == DeviceID:
            return self.backend.device_id
        if offset == VendorID:
            return VENDOR_ID
        if offset == DeviceFeatures:
            return (self.offered >> (32 * self.device_features_sel)) & 0xFFFFFFFF if self.device_features_sel < 2 else 0
        if offset == QueueNumMax:
            return QUEUE_NUM_MAX if queue is not None else 0
        if offset == QueueReady:
            return int(queue is not None and queue.ready)
        if offset == InterruptStatus:
            return self.interrupt_status
        if offset == Status:
            return self.status
        if offset in (SHMLenLow, SHMLenHigh, SHMBaseLow, SHMBaseHigh):
            return 0xFFFFFFFF  # no shared memory region (4.2.2: a length of all ones)
        if offset == ConfigGeneration:
            return 0  # the configuration space never changes while the machine runs
        self.guest_error(("read", offset), f"read of write-only or unknown register {offset:#x}")
        return 0

    def write(self, offset: int, value: int, size: int) -> None:
        if not self.access_ok(offset, size, write=True):
            return
        if offset >= Config:
            self.guest_error(("config-write", offset), f"write of {value:#x} to read-only configuration {offset:#x}")
            return
        if size != 4:
            self.guest_error(("narrow-write", offset), f"{size}-byte write of register {offset:#x} (32-bit only)")
            return
        value &= 0xFFFFFFFF
        if offset == DeviceFeaturesSel:
            self.device_features_sel = value
        elif offset == DriverFeaturesSel:
            self.driver_features_sel = value
        elif offset == DriverFeatures:
            self._write_driver_features(value)
        elif offset == QueueSel:
            self.queue_sel = value
        elif offset in _QUEUE_REGISTERS:
            self._write_queue(offset, value)
        elif offset == QueueNotify:
            self._notify(value)
        elif offset == InterruptACK:
            self.interrupt_status &= ~value & (INT_VRING | INT_CONFIG)
            self._drive()
        elif offset == Status:
            self._write_status(value)
        elif offset == SHMSel:
            self.shm_sel = value
        else:
            self.guest_error(("write", offset), f"write of {value:#x} to read-only or unknown register {offset:#x}")

    def _config_read(self, offset: int, size: int) -> int:
        config = self.backend.config
        if offset + size > len(config):
            self.guest_error(("config-read", offset), f"read past the {len(config)}-byte configuration at {offset:#x}")
            return 0
        return int.from_bytes(config[offset : offset + size], "little")

    def _selected(self) -> _Queue | None:
        return self.queues[self.queue_sel] if self.queue_sel < len(self.queues) else None

    def _write_driver_features(self, value: int) -> None:
        if self.status & STATUS_FEATURES_OK:
            self.guest_error("features-late", "DriverFeatures written after FEATURES_OK: ignored")
            return
        if self.driver_features_sel >= 2:
            if value:
                self.guest_error("features-sel", f"features {value:#x} in an unknown word")
            return
        shift = 32 * self.driver_features_sel
        self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | value << shift

    def _write_queue(self, offset: int, value: int) -> None:
        queue = self._selected()
        if queue is None:
            self.guest_error(("no-queue", offset), f"queue register {offset:#x} for absent queue {self.queue_sel}")
            return
        if offset == QueueReady:
            if not value & 1:
                queue.ready = False
            elif not queue.ready:
                queue.ready = self._queue_usable(queue)
            return
        if queue.ready:
            self.guest_error(("queue-live", offset), f"queue register {offset:#x} written while the queue is ready")
            return
        if offset == QueueNum:
            queue.num = value
        else:
            name, shift = _QUEUE_REGISTERS[offset]
            setattr(queue, name, (getattr(queue, name) & ~(0xFFFFFFFF << shift)) | value << shift)

    def _queue_usable(self, queue: _Queue) -> bool:
        """Whether a queue about to become ready has a size the device takes and rings in RAM (2.7)."""
        if not _valid_num(queue.num):
            self.guest_error("queue-num", f"queue size {queue.num}: not a power of two up to {QUEUE_NUM_MAX}")
            return False
        areas = (
            (queue.desc, DESC_SIZE * queue.num, 16),
            (queue.driver, 6 + 2 * queue.num, 2),
            (queue.device, 6 + 8 * queue.num, 4),
        )
        for addr, length, align in areas:
            try:
                self._check_ram(addr, length)
            except GuestMemoryError:
                self.guest_error("ring-ram", f"virtqueue ring at {addr:#x} ({length} bytes) is not in RAM")
                return False
            if addr % align:
                self.guest_error("ring-align", f"virtqueue ring at {addr:#x} is not {align}-byte aligned")
                return False
        return True

    def _write_status(self, value: int) -> None:
        value &= 0xFF
        if value == 0:
            self.reset()
            return
        if value & STATUS_FEATURES_OK and not self.status & STATUS_FEATURES_OK:
            unknown = self.driver_features & ~self.offered
            if unknown or not self.driver_features >> VIRTIO_F_VERSION_1 & 1:
                # 3.1.1: the driver re-reads Status and finds FEATURES_OK clear: the features were refused.
                why = f"unoffered bits {unknown:#x}" if unknown else "no VIRTIO_F_VERSION_1"
                self.guest_error("features", f"features {self.driver_features:#x} refused: {why}")
                value &= ~STATUS_FEATURES_OK
        if self.status & ~value & ~STATUS_DEVICE_NEEDS_RESET:
            self.guest_error("status-clear", f"Status {value:#x} clears bits of {self.status:#x}")
        self.status = value | self.status & STATUS_DEVICE_NEEDS_RESET

    # -- queues ---------------------------------------------------------------------------
    def _notify(self, index: int) -> None:
        """QueueNotify: serve every buffer the driver made available on queue ``index`` (4.2.3.3)."""
        if self.status & STATUS_DEVICE_NEEDS_RESET:
            return
        if not self.status & STATUS_DRIVER_OK:
            self.guest_error("notify-early", f"QueueNotify {index} before DRIVER_OK: ignored")
            return
        if index >= len(self.queues) or not self.queues[index].ready:
            self.guest_error("notify", f"QueueNotify for queue {index}, which is absent or not ready")
            return
        try:
            self._serve(index, self.queues[index])
        except (ChainError, GuestMemoryError) as exc:
            self.guest_error(("broken", type(exc).__name__), f"queue {index}: {exc}; the device needs a reset")
            self.status |= STATUS_DEVICE_NEEDS_RESET
            self.interrupt_status |= INT_CONFIG
        self._drive()

    def _serve(self, index: int, queue: _Queue) -> None:
        num = queue.num
        avail_flags, avail_idx = struct.unpack("<HH", self._dma_read(queue.driver, 4))
        pending = (avail_idx - queue.last_avail) & 0xFFFF
        if pending > num:
            raise ChainError(f"avail index {avail_idx} is {pending} buffers ahead of a {num}-entry queue")
        served = False
        for _ in range(pending):
            slot = queue.driver + 4 + 2 * (queue.last_avail % num)
            head = int.from_bytes(self._dma_read(slot, 2), "little")
            request = self._chain(queue, head)
            written = self.backend.handle(index, request)
            used = queue.device + 4 + 8 * (queue.used_idx % num)
            self._dma_write(used, struct.pack("<II", head, written))
            queue.last_avail = (queue.last_avail + 1) & 0xFFFF
            queue.used_idx = (queue.used_idx + 1) & 0xFFFF
            self._dma_write(queue.device + 2, struct.pack("<H", queue.used_idx))
            served = True
        if served and not avail_flags & VIRTQ_AVAIL_F_NO_INTERRUPT:
            self.interrupt_status |= INT_VRING

    def _chain(self, queue: _Queue, head: int) -> Request:
        """The chain starting at descriptor ``head`` (2.7.5, 2.7.5.3): at most QUEUE_NUM_MAX descriptors."""
        readable: list[tuple[int, int]] = []
        writable: list[tuple[int, int]] = []
        table, size, index = queue.desc, queue.num, head
        indirect = False
        total = 0
        for _ in range(QUEUE_NUM_MAX + 1):
            if index >= size:
                raise ChainError(f"descriptor {index} is outside a table of {size}")
            addr, length, flags, following = _DESC.unpack(self._dma_read(table + DESC_SIZE * index, DESC_SIZE))
            if flags & VIRTQ_DESC_F_INDIRECT:
                if indirect or not self.driver_features >> VIRTIO_F_INDIRECT_DESC & 1:
                    raise ChainError("an indirect descriptor inside an indirect table, or indirection not negotiated")
                if flags & VIRTQ_DESC_F_NEXT or readable or writable:
                    raise ChainError("an indirect descriptor that is not a chain's only one")
                if not length or length % DESC_SIZE or length // DESC_SIZE > QUEUE_NUM_MAX:
                    raise ChainError(f"an indirect table of {length} bytes")
                table, size, index, indirect = addr, length // DESC_SIZE, 0, True
                continue
            total += length
            if total > MAX_REQUEST_BYTES:
                raise ChainError(f"a request of more than {MAX_REQUEST_BYTES} bytes")
            if length:
                self._check_ram(addr, length)
            if flags & VIRTQ_DESC_F_WRITE:
                writable.append((addr, length))
            elif writable:
                raise ChainError("a device-readable descriptor after a device-writable one")
            else:
                readable.append((addr, length))
            if not flags & VIRTQ_DESC_F_NEXT:
                return Request(tuple(readable), tuple(writable), self._dma_read, self._dma_write)
            index = following
        raise ChainError(f"a chain of more than {QUEUE_NUM_MAX} descriptors (a loop?)")

    def _check_ram(self, addr: int, length: int) -> None:
        """A buffer must lie in RAM: its first and last byte are, and RAM is one range."""
        self._dma_read(addr, 1)
        self._dma_read(addr + length - 1, 1)

    def _drive(self) -> None:
        level = bool(self.interrupt_status)
        if level != self._irq_level:
            self._irq_level = level
            self._irq_out(level)


# Queue address registers: (attribute, bit shift of the word).
_QUEUE_REGISTERS: dict[int, tuple[str, int]] = {
    QueueNum: ("num", 0),
    QueueReady: ("ready", 0),
    QueueDescLow: ("desc", 0),
    QueueDescHigh: ("desc", 32),
    QueueDriverLow: ("driver", 0),
    QueueDriverHigh: ("driver", 32),
    QueueDeviceLow: ("device", 0),
    QueueDeviceHigh: ("device", 32),
}
