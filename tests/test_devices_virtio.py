"""virtio-mmio transport and virtio-blk device: a driver's set-up, requests, a hostile guest, snapshots.

Guest RAM is a bytearray behind the same accessors the machine gives the device (``PhysicalMemory``);
the "driver" below does what Linux's virtio_mmio and virtio_blk do, step by step (VIRTIO 1.2, 3.1.1, 2.7.13).
"""

import hashlib
import json
import logging
import random
import struct
from pathlib import Path

import pytest

from qppsuite.core.devices.base import DeviceStateError
from qppsuite.core.devices.virtio_blk import (
    BLOCK_SIZE,
    SECTOR_SIZE,
    VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
    CowDisk,
    DiskError,
    VirtioBlk,
)
from qppsuite.core.devices.virtio_mmio import (
    INT_CONFIG,
    INT_VRING,
    MAGIC,
    MAX_REQUEST_BYTES,
    QUEUE_NUM_MAX,
    STATUS_ACKNOWLEDGE,
    STATUS_DEVICE_NEEDS_RESET,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
    VIRTIO_F_INDIRECT_DESC,
    VIRTIO_F_VERSION_1,
    VIRTQ_AVAIL_F_NO_INTERRUPT,
    VIRTQ_DESC_F_INDIRECT,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    Config,
    DeviceFeatures,
    DeviceFeaturesSel,
    DeviceID,
    DriverFeatures,
    DriverFeaturesSel,
    InterruptACK,
    InterruptStatus,
    MagicValue,
    QueueDescHigh,
    QueueDescLow,
    QueueDeviceLow,
    QueueDriverLow,
    QueueNotify,
    QueueNum,
    QueueNumMax,
    QueueReady,
    QueueSel,
    Status,
    Version,
    VirtioMmio,
)
from qppsuite.core.memory import PhysicalMemory

RAM_BASE = 0x40000000
DESC, AVAIL, USED, BUFFERS = RAM_BASE + 0x1000, RAM_BASE + 0x2000, RAM_BASE + 0x3000, RAM_BASE + 0x10000
QUEUE = 16
DISK_SECTORS = 2048


@pytest.fixture
def disk_file(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(random.Random(7).randbytes(DISK_SECTORS * SECTOR_SIZE))
    return path


class Rig:
    """1 MiB of guest RAM, a block device on ``disk_file`` behind a transport, and a driver's moves."""

    def __init__(self, disk_file: Path) -> None:
        self.ram = PhysicalMemory(bytearray(1 << 20), RAM_BASE)
        self.irq: list[bool] = []
        self.blk = VirtioBlk(CowDisk(disk_file))
        self.dev = VirtioMmio(self.blk, self.irq.append, self.ram.read, self.ram.write)
        self.next_buffer = BUFFERS
        self.avail_idx = 0
        self.used_seen = 0

    def r(self, offset: int, size: int = 4) -> int:
        return self.dev.read(offset, size)

    def w(self, offset: int, value: int, size: int = 4) -> None:
        self.dev.write(offset, value, size)

    def negotiate(self, features: int = 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_F_INDIRECT_DESC) -> int:
        """3.1.1 up to FEATURES_OK; the Status the device then shows."""
        self.w(Status, 0)
        self.w(Status, STATUS_ACKNOWLEDGE)
        self.w(Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER)
        for word in (0, 1):
            self.w(DriverFeaturesSel, word)
            self.w(DriverFeatures, (features >> (32 * word)) & 0xFFFFFFFF)
        self.w(Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)
        return self.r(Status)

    def setup_queue(self, num: int = QUEUE) -> None:
        self.w(QueueSel, 0)
        assert self.r(QueueReady) == 0
        self.w(QueueNum, num)
        self.w(QueueDescLow, DESC)
        self.w(QueueDescHigh, 0)
        self.w(QueueDriverLow, AVAIL)
        self.w(QueueDeviceLow, USED)
        self.w(QueueReady, 1)

    def start(self) -> None:
        assert self.negotiate() & STATUS_FEATURES_OK
        self.setup_queue()
        self.w(Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK)

    def buffer(self, data: bytes | int) -> tuple[int, int]:
        """Guest memory holding ``data`` (or that many zero bytes)."""
        content = bytes(data) if isinstance(data, int) else data
        addr = self.next_buffer
        self.ram.write(addr, content)
        self.next_buffer += (len(content) + 15) & ~15
        return addr, len(content)

    def put_desc(self, table: int, index: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.ram.write(table + 16 * index, struct.pack("<QIHH", addr, length, flags, nxt))

    def submit(self, segments: list[tuple[int, int, bool]], head: int = 0, notify: bool = True) -> None:
        """A chain of (addr, length, device-writable) from descriptor ``head`` on, made available."""
        for i, (addr, length, writable) in enumerate(segments):
            last = i == len(segments) - 1
            flags = (VIRTQ_DESC_F_WRITE if writable else 0) | (0 if last else VIRTQ_DESC_F_NEXT)
            self.put_desc(DESC, head + i, addr, length, flags, head + i + 1)
        self.make_available(head, notify)

    def make_available(self, head: int, notify: bool = True) -> None:
        self.ram.write(AVAIL + 4 + 2 * (self.avail_idx % QUEUE), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.ram.write(AVAIL + 2, struct.pack("<H", self.avail_idx))
        if notify:
            self.w(QueueNotify, 0)

    def used(self) -> list[tuple[int, int]]:
        """Used elements (id, len) added since the last call."""
        idx = struct.unpack("<H", self.ram.read(USED + 2, 2))[0]
        out = []
        while self.used_seen != idx:
            out.append(struct.unpack("<II", self.ram.read(USED + 4 + 8 * (self.used_seen % QUEUE), 8)))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return out

    def block_request(self, kind: int, sector: int, data: bytes | int) -> tuple[int, bytes, int]:
        """A virtio-blk request as Linux lays it out (header, data, status): (status, data read, used length)."""
        header = self.buffer(struct.pack("<IIQ", kind, 0, sector))
        writes_data = kind in (VIRTIO_BLK_T_IN, VIRTIO_BLK_T_GET_ID)
        body = self.buffer(data) if data else None
        status = self.buffer(b"\xff")
        chain = [(*header, False)] + ([(*body, writes_data)] if body else []) + [(*status, True)]
        self.submit(chain)
        (used,) = self.used()
        got = self.ram.read(body[0], body[1]) if body else b""
        return self.ram.read(status[0], 1)[0], got, used[1]


@pytest.fixture
def rig(disk_file: Path) -> Rig:
    return Rig(disk_file)


def test_identity_registers_and_feature_words(rig: Rig) -> None:
    assert rig.r(MagicValue) == MAGIC and rig.r(Version) == 2 and rig.r(DeviceID) == 2
    rig.w(DeviceFeaturesSel, 1)
    assert rig.r(DeviceFeatures) & 1 == 1  # VIRTIO_F_VERSION_1 is bit 32
    rig.w(DeviceFeaturesSel, 0)
    assert rig.r(DeviceFeatures) >> VIRTIO_F_INDIRECT_DESC & 1
    assert rig.r(QueueNumMax) == QUEUE_NUM_MAX
    rig.w(QueueSel, 1)
    assert rig.r(QueueNumMax) == 0  # one queue only


def test_capacity_and_block_size_are_in_the_configuration_space(rig: Rig) -> None:
    capacity = rig.r(Config) | rig.r(Config + 4) << 32
    assert capacity == DISK_SECTORS
    assert rig.r(Config + 20) == SECTOR_SIZE  # blk_size
    assert rig.r(Config, 1) == DISK_SECTORS & 0xFF  # byte reads of the configuration space work too


def test_features_without_version_1_are_refused(rig: Rig) -> None:
    assert not rig.negotiate(features=0) & STATUS_FEATURES_OK
    assert not rig.negotiate(features=1 << VIRTIO_F_VERSION_1 | 1 << 40) & STATUS_FEATURES_OK  # not offered
    assert rig.negotiate() & STATUS_FEATURES_OK


def test_a_read_returns_the_files_sectors_and_raises_the_interrupt(rig: Rig, disk_file: Path) -> None:
    rig.start()
    status, data, used = rig.block_request(VIRTIO_BLK_T_IN, 5, 3 * SECTOR_SIZE)
    assert status == VIRTIO_BLK_S_OK and used == 3 * SECTOR_SIZE + 1
    assert data == disk_file.read_bytes()[5 * SECTOR_SIZE : 8 * SECTOR_SIZE]
    assert rig.irq == [True] and rig.r(InterruptStatus) == INT_VRING
    rig.w(InterruptACK, INT_VRING)
    assert rig.irq == [True, False]


def test_a_write_lands_in_the_overlay_and_the_file_is_unchanged(rig: Rig, disk_file: Path) -> None:
    before = hashlib.sha256(disk_file.read_bytes()).hexdigest()
    rig.start()
    payload = bytes(range(256)) * 6  # 3 sectors, across a 4 KiB block boundary below
    status, _, used = rig.block_request(VIRTIO_BLK_T_OUT, 7, payload)
    assert status == VIRTIO_BLK_S_OK and used == 1
    status, data, _ = rig.block_request(VIRTIO_BLK_T_IN, 6, 5 * SECTOR_SIZE)
    original = disk_file.read_bytes()
    assert data == original[6 * SECTOR_SIZE : 7 * SECTOR_SIZE] + payload + original[10 * SECTOR_SIZE : 11 * SECTOR_SIZE]
    assert hashlib.sha256(disk_file.read_bytes()).hexdigest() == before
    assert sorted(rig.blk.disk.overlay) == [0, 1]  # sectors 7..9 span the first two 4 KiB blocks


def test_flush_and_get_id(rig: Rig) -> None:
    rig.start()
    assert rig.block_request(VIRTIO_BLK_T_FLUSH, 0, b"")[0] == VIRTIO_BLK_S_OK
    status, serial, used = rig.block_request(VIRTIO_BLK_T_GET_ID, 0, 20)
    assert status == VIRTIO_BLK_S_OK and serial.rstrip(b"\0") == b"qppsuite-vda" and used == 21


def test_requests_past_the_end_or_of_part_sectors_fail_with_ioerr_and_unknown_types_unsupp(rig: Rig) -> None:
    rig.start()
    assert rig.block_request(VIRTIO_BLK_T_IN, DISK_SECTORS - 1, 2 * SECTOR_SIZE)[0] == VIRTIO_BLK_S_IOERR
    assert rig.block_request(VIRTIO_BLK_T_OUT, 2**63, b"x" * SECTOR_SIZE)[0] == VIRTIO_BLK_S_IOERR
    assert rig.block_request(VIRTIO_BLK_T_IN, 0, 100)[0] == VIRTIO_BLK_S_IOERR
    assert rig.block_request(99, 0, b"")[0] == VIRTIO_BLK_S_UNSUPP
    assert not rig.r(Status) & STATUS_DEVICE_NEEDS_RESET  # failed requests, a working device


def test_an_indirect_table_carries_a_whole_request(rig: Rig, disk_file: Path) -> None:
    rig.start()
    table = rig.buffer(16 * 3)[0]
    header, body, status = rig.buffer(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 2)), rig.buffer(1024), rig.buffer(1)
    rig.put_desc(table, 0, *header, VIRTQ_DESC_F_NEXT, 1)
    rig.put_desc(table, 1, *body, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2)
    rig.put_desc(table, 2, *status, VIRTQ_DESC_F_WRITE, 0)
    rig.put_desc(DESC, 3, table, 48, VIRTQ_DESC_F_INDIRECT, 0)
    rig.make_available(3)
    assert rig.used() == [(3, 1025)]
    assert rig.ram.read(body[0], 1024) == disk_file.read_bytes()[1024:2048]


def test_no_interrupt_when_the_driver_asks_for_none(rig: Rig) -> None:
    rig.start()
    rig.ram.write(AVAIL, struct.pack("<H", VIRTQ_AVAIL_F_NO_INTERRUPT))
    rig.block_request(VIRTIO_BLK_T_FLUSH, 0, b"")
    assert rig.irq == [] and rig.r(InterruptStatus) == 0


def broken(rig: Rig, caplog: pytest.LogCaptureFixture) -> bool:
    """The device stopped itself (DEVICE_NEEDS_RESET, a configuration interrupt) and said so in the guest log."""
    status = rig.r(Status)
    return bool(status & STATUS_DEVICE_NEEDS_RESET and rig.r(InterruptStatus) & INT_CONFIG and caplog.records)


def test_a_descriptor_loop_stops_the_device_instead_of_looping(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.start()
    header = rig.buffer(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0))
    rig.put_desc(DESC, 0, *header, VIRTQ_DESC_F_NEXT, 1)
    rig.put_desc(DESC, 1, *rig.buffer(SECTOR_SIZE), VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2)
    rig.put_desc(DESC, 2, *rig.buffer(SECTOR_SIZE), VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1)  # back to 1
    with caplog.at_level(logging.WARNING, "qppsuite.guest"):
        rig.make_available(0)
    assert broken(rig, caplog) and rig.used() == []
    assert "more than" in caplog.records[0].getMessage()
    rig.make_available(0)  # a device that needs a reset serves nothing
    assert rig.used() == []


@pytest.mark.parametrize(
    "desc",
    [
        (0x1000, SECTOR_SIZE),  # below RAM
        (RAM_BASE + (1 << 20) - 8, SECTOR_SIZE),  # runs past the end of RAM
        (2**64 - 8, 16),  # a 64-bit address
        (BUFFERS, 0xFFFFFFFF),  # a huge length
    ],
    ids=["below-ram", "past-ram", "64-bit", "huge"],
)
def test_buffers_outside_ram_or_too_long_stop_the_device(
    rig: Rig, caplog: pytest.LogCaptureFixture, desc: tuple[int, int]
) -> None:
    rig.start()
    header = rig.buffer(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0))
    with caplog.at_level(logging.WARNING, "qppsuite.guest"):
        rig.submit([(*header, False), (*desc, True), (*rig.buffer(1), True)])
    assert broken(rig, caplog) and rig.used() == []


def test_a_request_over_the_size_limit_stops_the_device(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.start()
    header = rig.buffer(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0))
    big = [(RAM_BASE, 512 << 10, True)] * (MAX_REQUEST_BYTES // (512 << 10) + 1)  # the same RAM, named 9 times
    with caplog.at_level(logging.WARNING, "qppsuite.guest"):
        rig.submit([(*header, False), *big])
    assert broken(rig, caplog)


def test_avail_index_far_ahead_and_descriptor_index_out_of_range_stop_the_device(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.start()
    rig.ram.write(AVAIL + 4, struct.pack("<H", QUEUE + 3))  # head past the table
    rig.ram.write(AVAIL + 2, struct.pack("<H", 1))
    with caplog.at_level(logging.WARNING, "qppsuite.guest"):
        rig.w(QueueNotify, 0)
    assert broken(rig, caplog)
    rig.start()  # a reset (Status 0) and a new set-up make it work again
    rig.avail_idx = rig.used_seen = 0
    rig.ram.write(USED, bytes(8))
    rig.ram.write(AVAIL + 2, struct.pack("<H", 40))  # 40 buffers in a 16-entry queue
    rig.w(QueueNotify, 0)
    assert rig.r(Status) & STATUS_DEVICE_NEEDS_RESET


def test_queue_not_ready_bad_queue_and_early_notify_are_ignored(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "qppsuite.guest"):
        rig.w(QueueNotify, 0)  # before DRIVER_OK
        rig.negotiate()
        rig.w(QueueNum, 12)  # not a power of two: the queue does not become ready
        rig.w(QueueReady, 1)
        assert rig.r(QueueReady) == 0
        rig.w(QueueNum, QUEUE)
        rig.w(QueueDescLow, 0x1000)  # not RAM
        rig.w(QueueReady, 1)
        assert rig.r(QueueReady) == 0
        rig.w(Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK)
        rig.w(QueueNotify, 0)  # not ready
        rig.w(QueueNotify, 7)  # no such queue
        rig.w(QueueSel, 5)
        rig.w(QueueNum, 4)  # no such queue
        rig.w(MagicValue, 1)  # read-only
        rig.w(Status, 1, size=1)  # registers are 32-bit
        rig.r(0x300)  # past the window
    assert not rig.r(Status) & STATUS_DEVICE_NEEDS_RESET and rig.irq == []
    assert len(caplog.records) >= 8


def test_reset_in_the_middle_forgets_queues_and_interrupts_but_keeps_the_disk(rig: Rig) -> None:
    rig.start()
    rig.block_request(VIRTIO_BLK_T_OUT, 0, b"w" * SECTOR_SIZE)
    assert rig.irq == [True]
    rig.w(Status, 0)
    assert rig.r(Status) == 0 and rig.r(QueueReady) == 0 and rig.r(InterruptStatus) == 0 and rig.irq == [True, False]
    rig.w(QueueNotify, 0)  # nothing to serve, nothing raised
    rig.avail_idx = rig.used_seen = 0
    rig.ram.write(USED, bytes(8))
    rig.start()
    assert rig.block_request(VIRTIO_BLK_T_IN, 0, SECTOR_SIZE)[1] == b"w" * SECTOR_SIZE


def test_state_round_trips_through_json_with_the_overlay(rig: Rig, disk_file: Path) -> None:
    rig.start()
    rig.block_request(VIRTIO_BLK_T_OUT, 9, b"s" * SECTOR_SIZE)
    state = json.loads(json.dumps(rig.dev.get_state()))
    other = Rig(disk_file)
    other.ram = rig.ram
    other.dev = VirtioMmio(other.blk, other.irq.append, rig.ram.read, rig.ram.write)
    other.dev.set_state(state)
    assert other.dev.get_state() == state and other.irq == [True]  # the pending interrupt is driven again
    other.avail_idx, other.used_seen = rig.avail_idx, rig.used_seen
    other.next_buffer = rig.next_buffer
    assert other.block_request(VIRTIO_BLK_T_IN, 9, SECTOR_SIZE)[1] == b"s" * SECTOR_SIZE


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: s.update(status=-1),
        lambda s: s["queues"][0].update(num=3, ready=True),
        lambda s: s["queues"][0].update(desc=[1]),
        lambda s: s.update(queues=[]),
        lambda s: s["backend"].update(sectors=1),
        lambda s: s["backend"]["overlay"].update({"0": "not base64!"}),
        lambda s: s["backend"]["overlay"].update({str(DISK_SECTORS): "AAAA"}),
        lambda s: s["backend"]["overlay"].update({"0": "AAAA"}),
    ],
)
def test_a_corrupt_state_is_a_device_state_error(rig: Rig, corrupt: object) -> None:
    rig.start()
    state = json.loads(json.dumps(rig.dev.get_state()))
    corrupt(state)  # type: ignore[operator]
    with pytest.raises(DeviceStateError):
        rig.dev.set_state(state)


def test_disk_files_that_cannot_back_a_disk_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "odd.img").write_bytes(b"x" * 1000)
    (tmp_path / "empty.img").write_bytes(b"")
    for name, words in (
        ("missing.img", "No such file"),
        (".", "not a regular file"),
        ("odd.img", "not a whole number"),
        ("empty.img", "not a whole number"),
    ):
        with pytest.raises(DiskError, match=words) as info:
            CowDisk(tmp_path / name)
        assert "\n" not in str(info.value)


def test_the_overlay_keeps_a_last_block_the_file_ends_inside(tmp_path: Path) -> None:
    path = tmp_path / "small.img"
    path.write_bytes(bytes(BLOCK_SIZE + SECTOR_SIZE))
    disk = CowDisk(path)
    disk.write(BLOCK_SIZE, b"e" * SECTOR_SIZE)
    assert len(disk.overlay[1]) == SECTOR_SIZE and disk.read(BLOCK_SIZE - 4, 8) == bytes(4) + b"eeee"


@pytest.mark.parametrize("nested", [False, True], ids=["loop-in-table", "indirect-in-indirect"])
def test_a_broken_indirect_table_stops_the_device(rig: Rig, caplog: pytest.LogCaptureFixture, nested: bool) -> None:
    rig.start()
    table = rig.buffer(16 * 2)[0]
    header = rig.buffer(struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0))
    rig.put_desc(table, 0, *header, VIRTQ_DESC_F_NEXT, 1)
    if nested:
        rig.put_desc(table, 1, table, 32, VIRTQ_DESC_F_INDIRECT, 0)
    else:
        rig.put_desc(table, 1, *rig.buffer(SECTOR_SIZE), VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1)  # itself
    rig.put_desc(DESC, 0, table, 32, VIRTQ_DESC_F_INDIRECT, 0)
    with caplog.at_level(logging.WARNING, "qppsuite.guest"):
        rig.make_available(0)
    assert broken(rig, caplog) and rig.used() == []


@pytest.mark.parametrize("seed", range(20))
def test_random_chains_and_register_writes_never_raise_and_the_log_stays_bounded(disk_file: Path, seed: int) -> None:
    """A guest making random chains (addresses in and out of RAM, any length, flags and next index, indirect
    tables of random descriptors, block requests of any type and sector) between random register accesses
    (any offset, size and value, Status 0 mid-way).  Nothing raises, the state always restores, the file is
    untouched, and problems are keyed by kind and offset, never by a value the guest chooses (which would let
    it grow the set of reported problems without bound)."""
    rng = random.Random(seed)
    rig = Rig(disk_file)
    served = 0
    before = disk_file.read_bytes()
    addresses = (BUFFERS, BUFFERS + 0x800, RAM_BASE + (1 << 20) - 16, 0, 0xFFFFFFFF, 2**64 - 16)
    offsets = [*range(0, 0x104, 4), 0x13C, 0x1FC, 0x200, 0xFFC]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logging.getLogger("qppsuite.guest"), "disabled", True)
        for _ in range(400):
            if rng.random() < 0.1 or rig.r(Status) & STATUS_DEVICE_NEEDS_RESET or not rig.r(QueueReady):
                rig.start()
                rig.avail_idx = rig.used_seen = 0
                rig.ram.write(USED, bytes(4))
            header = struct.pack("<IIQ", rng.choice((0, 1, 4, 8, 99)), 0, rng.choice((0, 5, DISK_SECTORS, 2**63)))
            rig.ram.write(BUFFERS, header)
            table = rng.choice((DESC, DESC + 0x200))
            for index in range(QUEUE):
                flags = rng.getrandbits(3)
                length = rng.choice((0, 1, 16, SECTOR_SIZE, 4096, 32 * 16, 0xFFFFFFFF))
                addr = DESC + 0x200 if flags & VIRTQ_DESC_F_INDIRECT else rng.choice(addresses)
                rig.put_desc(table, index, addr, length, flags, rng.choice((index + 1, rng.randrange(2 * QUEUE))))
            rig.make_available(rng.randrange(QUEUE), notify=rng.random() < 0.9)
            for _ in range(rng.randrange(3)):
                size = rng.choice((1, 2, 4, 4))
                offset = rng.choice(offsets) + rng.choice((0, 0, 1, 2))
                rig.r(offset, size)
                rig.w(offset, rng.choice((0, 1, QUEUE, rng.getrandbits(32))), size)
            served += len(rig.used())
            if rng.random() < 0.1:  # whatever the guest did, a snapshot of the device restores
                state = json.loads(json.dumps(rig.dev.get_state()))
                copy = VirtioMmio(VirtioBlk(CowDisk(disk_file)), [].append, rig.ram.read, rig.ram.write)
                copy.set_state(state)
                assert copy.get_state() == state
    for key in rig.dev._reported | rig.blk._reported:
        parts = key if isinstance(key, tuple) else (key,)
        assert all(isinstance(part, str) or 0 <= part < 0x1000 for part in parts), key
    assert disk_file.read_bytes() == before
    assert served > 0  # some random chains were whole requests


def test_any_register_value_a_guest_leaves_in_a_queue_not_ready_survives_a_snapshot(rig: Rig, disk_file: Path) -> None:
    rig.negotiate()
    for register in (QueueNum, QueueDescLow, QueueDescHigh, QueueSel):
        rig.w(register, 0xFFFFFFFF)
    rig.w(QueueSel, 0)
    state = json.loads(json.dumps(rig.dev.get_state()))
    copy = VirtioMmio(VirtioBlk(CowDisk(disk_file)), [].append, rig.ram.read, rig.ram.write)
    copy.set_state(state)
    assert copy.get_state() == state


def test_a_host_file_that_fails_to_read_is_an_io_error_for_the_guest(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.start()
    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.WARNING, "qppsuite.guest"):
        patch.setattr("os.pread", lambda *_args: (_ for _ in ()).throw(OSError(5, "Input/output error")))
        assert rig.block_request(VIRTIO_BLK_T_IN, 0, SECTOR_SIZE)[0] == VIRTIO_BLK_S_IOERR
        assert rig.block_request(VIRTIO_BLK_T_OUT, 0, b"x" * SECTOR_SIZE)[0] == VIRTIO_BLK_S_IOERR
    assert "Input/output error" in caplog.text and not rig.r(Status) & STATUS_DEVICE_NEEDS_RESET
