"""The disk on the machine: present only when configured, in the device tree and snapshots, and its DMA."""

import hashlib
import struct
from pathlib import Path

import fdt
import pytest
from unicorn import arm_const as A

from qppsuite.core import board
from qppsuite.core.board import RAM_BASE, VIRTIO_BASE
from qppsuite.core.devices.virtio_blk import DiskError
from qppsuite.core.devices.virtio_mmio import (
    STATUS_ACKNOWLEDGE,
    STATUS_DRIVER,
    STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
    VIRTIO_F_VERSION_1,
    VIRTQ_DESC_F_NEXT,
    VIRTQ_DESC_F_WRITE,
    DriverFeatures,
    DriverFeaturesSel,
    QueueDescLow,
    QueueDeviceLow,
    QueueDriverLow,
    QueueNum,
    QueueReady,
    Status,
)
from qppsuite.core.kernel import KernelImage
from qppsuite.core.machine import Machine, MachineConfig
from qppsuite.core.snapshot import SnapshotError

#: sha256 of the device tree below as the board made it before the disk existed (commit f8a575c).
DTB_WITHOUT_DISK = "a24d155b65d85cf38505960cbb30dd96947a01ab4b7ac6f28efcb7be2ae1ea22"


def arm(*words: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in words)


def test_without_a_disk_the_device_tree_is_the_one_before_disks_existed() -> None:
    layout = board.plan_layout(256 << 20, 5 << 20, 20 << 20)
    assert hashlib.sha256(board.device_tree(layout, "console=ttyAMA0 quiet")).hexdigest() == DTB_WITHOUT_DISK


def test_with_a_disk_the_device_tree_names_its_transport_as_qemu_virt_does() -> None:
    layout = board.plan_layout(256 << 20, 5 << 20, 20 << 20)
    tree = fdt.parse_dtb(board.device_tree(layout, "console=ttyAMA0", disk=True))
    node = tree.get_node("virtio_mmio@a000000")
    assert node.get_property("compatible").value == "virtio,mmio"
    assert list(node.get_property("reg").data) == [VIRTIO_BASE, 0x200]
    assert list(node.get_property("interrupts").data) == [0, board.DISK_SPI, 4]
    assert node.exist_property("dma-coherent")


def bare(code: bytes, disk: Path | None, max_insns: int = 1000) -> Machine:
    return Machine(MachineConfig(kernel=KernelImage(code + b"\0" * 64, "Image", False), max_insns=max_insns, disk=disk))


def test_the_disk_is_in_the_device_state_only_when_attached(tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(4096))
    without, with_disk = bare(arm(0xEAFFFFFE), None), bare(arm(0xEAFFFFFE), disk)
    assert "disk" not in without.device_state() and without.devices.disk is None
    assert with_disk.device_state()["disk"]["backend"]["sectors"] == 8
    for machine in (without, with_disk):
        machine.run()
    with pytest.raises(SnapshotError, match="with a disk; this one has none"):
        without.restore(with_disk.snapshot())
    with pytest.raises(SnapshotError, match="with no disk; this one has one"):
        with_disk.restore(without.snapshot())


def test_a_disk_that_cannot_be_opened_stops_the_machine_being_built(tmp_path: Path) -> None:
    with pytest.raises(DiskError, match="No such file"):
        bare(arm(0xEAFFFFFE), tmp_path / "nothing.img")


def test_code_read_from_the_disk_over_translated_code_runs_as_read(tmp_path: Path) -> None:
    """docs/engine.md, "Devices writing RAM": the machine drops translated code after a device's DMA.

    The code calls a subroutine (translated), makes the disk read sector 0 over it with one store to
    QueueNotify, and calls it again: the second call runs what the disk held.
    """
    sub = 0x1000  # offset of the subroutine in the image, which the machine loads at RAM + 0x8000
    code = arm(
        0xE3002050,  # movw r2, #0x50       (QueueNotify)
        0xE3402A00,  # movt r2, #0x0a00     (VIRTIO_BASE)
        0xE3A01000,  # mov r1, #0
        0xEB000000 | ((sub - 20) >> 2),  # bl sub
        0xE1A03000,  # mov r3, r0
        0xE5821000,  # str r1, [r2]         (the disk reads over sub)
        0xEB000000 | ((sub - 32) >> 2),  # bl sub
        0xEAFFFFFE,  # b .
    )
    image = code.ljust(sub, b"\0") + arm(0xE3A00001, 0xE12FFF1E)  # sub: mov r0, #1; bx lr
    disk = tmp_path / "disk.img"
    disk.write_bytes(arm(0xE3A00002, 0xE12FFF1E).ljust(512, b"\0"))  # mov r0, #2; bx lr
    machine = bare(image, disk, max_insns=200)
    transport = machine.devices.disk
    assert transport is not None
    # A driver's set-up, done from the host: one queue of 4 at RAM + 16 MiB, one IN request of sector 0 whose
    # data buffer is the subroutine's first 512 bytes, made available; the guest code only notifies.
    rings = RAM_BASE + (16 << 20)
    desc, avail, used, header, status = rings, rings + 0x100, rings + 0x200, rings + 0x300, rings + 0x400
    for value in (STATUS_ACKNOWLEDGE, STATUS_ACKNOWLEDGE | STATUS_DRIVER):
        transport.write(Status, value, 4)
    transport.write(DriverFeaturesSel, 1, 4)
    transport.write(DriverFeatures, 1 << (VIRTIO_F_VERSION_1 - 32), 4)
    transport.write(Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK, 4)
    for register, value in ((QueueNum, 4), (QueueDescLow, desc), (QueueDriverLow, avail), (QueueDeviceLow, used)):
        transport.write(register, value, 4)
    transport.write(QueueReady, 1, 4)
    transport.write(Status, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK, 4)
    target = RAM_BASE + machine.config.kernel.load_offset + sub
    machine.phys.write(header, struct.pack("<IIQ", 0, 0, 0))
    machine.phys.write(desc, struct.pack("<QIHH", header, 16, VIRTQ_DESC_F_NEXT, 1))
    machine.phys.write(desc + 16, struct.pack("<QIHH", target, 512, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2))
    machine.phys.write(desc + 32, struct.pack("<QIHH", status, 1, VIRTQ_DESC_F_WRITE, 0))
    machine.phys.write(avail, struct.pack("<HHH", 0, 1, 0))
    machine.run()
    assert machine.phys.read(status, 1) == b"\0"
    assert (machine.engine.reg(A.UC_ARM_REG_R3), machine.engine.reg(A.UC_ARM_REG_R0)) == (1, 2)
