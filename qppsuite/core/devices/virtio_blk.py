"""The virtio block device (VIRTIO 1.2, section 5.2) over a read-only file with a copy-on-write overlay.

The guest sees a disk (``/dev/vda`` in Linux) of the file's size, in 512-byte
sectors.  Reads come from the file, opened read-only; writes go to an overlay
of 4 KiB blocks in host memory, which later reads see, so the user's file never
changes and every run from power-on starts from the same disk.  The overlay is
the device's snapshot state: a run restored from a snapshot sees exactly what
the guest had written before it.  FLUSH succeeds at once (there is nothing
volatile below the overlay); GET_ID answers the serial given.

Requests (5.2.6): a 16-byte header (type, reserved, sector) in device-readable
buffers, then data, then the status byte as the last device-writable byte.
A request beyond the disk's end, or whose data is not whole sectors, ends with
VIRTIO_BLK_S_IOERR; an unknown type with VIRTIO_BLK_S_UNSUPP; a chain with no
room for a header or a status byte is returned unused (a guest error).
"""

import base64
import binascii
import os
import stat
import struct
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qppsuite.core.devices.base import DeviceStateError, state_field, state_int
from qppsuite.core.devices.virtio_mmio import QUEUE_NUM_MAX, Request, VirtioBackend
from qppsuite.errors import QppsuiteError

#: virtio device ID of a block device (5, "Device Types").
VIRTIO_ID_BLOCK = 2
SECTOR_SIZE = 512
#: The overlay's granularity: a guest write copies the 4 KiB blocks it touches.
BLOCK_SIZE = 4096

# Feature bits (5.2.3).
VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9

# Request types and status values (5.2.6).
VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2
VIRTIO_BLK_ID_BYTES = 20
HEADER = struct.Struct("<IIQ")

#: Offered limits: at most SEG_MAX data buffers of SIZE_MAX bytes (with header and status, a chain fits the
#: queue, and a request's data is under 4 MiB: virtio_mmio.MAX_REQUEST_BYTES).
SEG_MAX = QUEUE_NUM_MAX - 2
SIZE_MAX = 32 << 10
#: Bytes of configuration space (5.2.4, struct virtio_blk_config up to its secure-erase fields); unused ones read 0.
CONFIG_BYTES = 0x60
#: The serial GET_ID answers when none is given.
DEFAULT_SERIAL = b"qppsuite-vda"


class DiskError(QppsuiteError):
    """A disk file that cannot back the block device: missing, unreadable, not a file, or not whole sectors."""


class CowDisk:
    """A disk image file, opened read-only, and the overlay of 4 KiB blocks the guest has written.

    ``read`` and ``write`` take byte offsets and lengths that are whole sectors inside the disk (the caller
    checks); the file is never written.
    """

    def __init__(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise DiskError(f"disk {path}: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DiskError(f"disk {path}: not a regular file")
            if info.st_size == 0 or info.st_size % SECTOR_SIZE:
                raise DiskError(
                    f"disk {path}: {info.st_size} bytes is not a whole number of {SECTOR_SIZE}-byte sectors"
                )
            os.pread(fd, 1, 0)  # a file that cannot be read (a directory on some systems, an I/O error) fails here
        except OSError as exc:
            os.close(fd)
            raise DiskError(f"disk {path}: {exc.strerror or exc}") from None
        except DiskError:
            os.close(fd)
            raise
        self.path = path
        self._fd = fd
        weakref.finalize(self, os.close, fd)  # a machine is dropped, not closed: its disk goes with it
        #: Bytes of disk (a multiple of SECTOR_SIZE).
        self.size = info.st_size
        #: Block number -> its current bytes (BLOCK_SIZE, or less for a last block the file ends inside).
        self.overlay: dict[int, bytearray] = {}

    @property
    def sectors(self) -> int:
        return self.size // SECTOR_SIZE

    def _base(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:  # the file shrank under us: what is gone reads as zeros
            data += bytes(length - len(data))
        return data

    def read(self, offset: int, length: int) -> bytearray:
        """``length`` bytes of the disk from ``offset``, as the guest last wrote them."""
        out = bytearray(self._base(offset, length))
        if self.overlay:
            for block in range(offset // BLOCK_SIZE, (offset + length - 1) // BLOCK_SIZE + 1):
                written = self.overlay.get(block)
                if written is None:
                    continue
                start = max(offset, block * BLOCK_SIZE)
                end = min(offset + length, block * BLOCK_SIZE + len(written))
                out[start - offset : end - offset] = written[start - block * BLOCK_SIZE : end - block * BLOCK_SIZE]
        return out

    def write(self, offset: int, data: bytes) -> None:
        """Put ``data`` at ``offset`` in the overlay; the file is untouched."""
        position = offset
        view = memoryview(data)
        while view:
            block = position // BLOCK_SIZE
            current = self.overlay.get(block)
            if current is None:
                start = block * BLOCK_SIZE
                current = bytearray(self._base(start, min(BLOCK_SIZE, self.size - start)))
                self.overlay[block] = current
            inside = position - block * BLOCK_SIZE
            take = min(len(current) - inside, len(view))
            current[inside : inside + take] = view[:take]
            view = view[take:]
            position += take

    def overlay_state(self) -> dict[str, str]:
        """The overlay as JSON: block number (decimal text) -> base64 of its bytes."""
        return {str(block): base64.b64encode(data).decode("ascii") for block, data in sorted(self.overlay.items())}

    def set_overlay_state(self, state: Mapping[str, Any], device: str) -> None:
        """Restore :meth:`overlay_state`; DeviceStateError for blocks outside the disk or of the wrong size."""
        overlay: dict[int, bytearray] = {}
        for key, text in state.items():
            if not isinstance(key, str) or not key.isdigit() or not isinstance(text, str):
                raise DeviceStateError(f"{device} overlay entry {key!r} is not a block number with base64 bytes")
            block = int(key)
            expected = min(BLOCK_SIZE, self.size - block * BLOCK_SIZE)
            try:
                data = base64.b64decode(text, validate=True)
            except binascii.Error:
                raise DeviceStateError(f"{device} overlay block {block} is not base64") from None
            if expected <= 0 or len(data) != expected:
                raise DeviceStateError(f"{device} overlay block {block} does not fit a {self.size}-byte disk")
            overlay[block] = bytearray(data)
        self.overlay = overlay


class VirtioBlk(VirtioBackend):
    """A virtio block device over ``disk``; GET_ID answers ``serial`` (at most 20 bytes)."""

    name = "virtio-blk"
    device_id = VIRTIO_ID_BLOCK
    features = (
        1 << VIRTIO_BLK_F_SIZE_MAX | 1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_BLK_SIZE | 1 << VIRTIO_BLK_F_FLUSH
    )

    def __init__(self, disk: CowDisk, serial: bytes = DEFAULT_SERIAL) -> None:
        super().__init__()
        self.disk = disk
        self.serial = serial[:VIRTIO_BLK_ID_BYTES]
        # capacity, size_max, seg_max, geometry (none), blk_size; the topology and later fields read 0.
        head = struct.pack("<QII4xI", disk.sectors, SIZE_MAX, SEG_MAX, SECTOR_SIZE)
        self.config = head + bytes(CONFIG_BYTES - len(head))

    # -- Device ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Nothing: the block device keeps no registers, and the disk's contents (the overlay) survive a reset."""

    def get_state(self) -> dict[str, Any]:
        return {"sectors": self.disk.sectors, "overlay": self.disk.overlay_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        sectors = state_int(state, self.name, "sectors", 53)
        if sectors != self.disk.sectors:
            raise DeviceStateError(f"{self.name} state is of a {sectors}-sector disk; this one has {self.disk.sectors}")
        self.disk.set_overlay_state(state_field(state, self.name, "overlay", dict), self.name)

    # -- requests -------------------------------------------------------------------------
    def handle(self, queue: int, request: Request) -> int:
        """Serve one request (5.2.6.1); the bytes written into the guest's buffers, status byte included."""
        if request.readable_bytes < HEADER.size or request.writable_bytes < 1:
            self.guest_error("short", "a request with no room for its header or status byte: returned unused")
            return 0
        kind, _reserved, sector = HEADER.unpack(request.read(0, HEADER.size))
        status_at = request.writable_bytes - 1
        written = 0
        if kind == VIRTIO_BLK_T_IN:
            status = self._in(request, sector, status_at)
            written = status_at if status == VIRTIO_BLK_S_OK else 0
        elif kind == VIRTIO_BLK_T_OUT:
            status = self._out(request, sector)
        elif kind == VIRTIO_BLK_T_FLUSH:
            status = VIRTIO_BLK_S_OK
        elif kind == VIRTIO_BLK_T_GET_ID:
            written = min(VIRTIO_BLK_ID_BYTES, status_at)
            request.write(0, self.serial.ljust(VIRTIO_BLK_ID_BYTES, b"\0")[:written])
            status = VIRTIO_BLK_S_OK
        else:
            self.guest_error("type", f"request type {kind}: unsupported")
            status = VIRTIO_BLK_S_UNSUPP
        request.write(status_at, bytes((status,)))
        return written + 1

    def _span_ok(self, sector: int, length: int, what: str) -> bool:
        if length % SECTOR_SIZE or sector * SECTOR_SIZE + length > self.disk.size:
            self.guest_error(
                ("span", what), f"{what} of {length} bytes at sector {sector}: not whole sectors inside the disk"
            )
            return False
        return True

    def _in(self, request: Request, sector: int, length: int) -> int:
        if not self._span_ok(sector, length, "read"):
            return VIRTIO_BLK_S_IOERR
        if length:
            try:
                data = self.disk.read(sector * SECTOR_SIZE, length)
            except OSError as exc:  # the host's file, not the guest: the guest sees a failing disk, as it would
                self.guest_error("host-io", f"reading {self.disk.path} failed: {exc.strerror or exc}")
                return VIRTIO_BLK_S_IOERR
            request.write(0, data)
        return VIRTIO_BLK_S_OK

    def _out(self, request: Request, sector: int) -> int:
        length = request.readable_bytes - HEADER.size
        if not self._span_ok(sector, length, "write"):
            return VIRTIO_BLK_S_IOERR
        if length:
            try:
                self.disk.write(sector * SECTOR_SIZE, request.read(HEADER.size, length))
            except OSError as exc:  # reading a block's first version from the file, to copy it
                self.guest_error("host-io", f"reading {self.disk.path} failed: {exc.strerror or exc}")
                return VIRTIO_BLK_S_IOERR
        return VIRTIO_BLK_S_OK
