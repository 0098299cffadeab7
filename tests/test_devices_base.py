"""The shared device contract: guest-error reporting, access checks, snapshot field validation."""

import logging
from collections.abc import Mapping
from typing import Any

import pytest

from qppsuite.core.devices.base import (
    DeviceStateError,
    WordRegisterDevice,
    bits_to_words,
    state_int,
    state_int_list,
    words_to_bits,
)
from qppsuite.errors import QppsuiteError


class Scratch(WordRegisterDevice):
    """One 32-bit register at 0x10 whose reads count, to see side effects of narrow reads."""

    name = "scratch"
    size = 0x100

    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.value = 0
        self.reads = 0

    def get_state(self) -> dict[str, Any]:
        return {"value": self.value}

    def set_state(self, state: Mapping[str, Any]) -> None:
        self.value = state_int(state, self.name, "value")

    def read_word(self, offset: int) -> int:
        if offset != 0x10:
            self.guest_error(("read", offset), f"read of unknown offset {offset:#x}")
            return 0
        self.reads += 1
        return self.value

    def write_word(self, offset: int, value: int) -> None:
        self.value = value


def test_narrow_reads_pick_bytes_of_the_word() -> None:
    dev = Scratch()
    dev.write(0x10, 0xA1B2C3D4, 4)
    assert [dev.read(0x10 + i, 1) for i in range(4)] == [0xD4, 0xC3, 0xB2, 0xA1]
    assert dev.read(0x12, 2) == 0xA1B2
    assert dev.reads == 5  # every narrow read is a read of the word, side effects included


def test_narrow_write_to_the_low_lane_zero_extends() -> None:
    dev = Scratch()
    dev.write(0x10, 0xFFFFFFFF, 4)
    dev.write(0x10, 0x41, 1)
    assert dev.read(0x10, 4) == 0x41
    dev.write(0x10, 0x1FFFF_FFFF, 4)
    assert dev.read(0x10, 4) == 0xFFFFFFFF  # values are truncated to the bus width


def test_bad_accesses_are_reported_once_each(caplog: pytest.LogCaptureFixture) -> None:
    dev = Scratch()
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        for _ in range(3):
            assert dev.read(0x11, 2) == 0  # misaligned
            assert dev.read(0x10, 8) == 0  # no such size
            assert dev.read(0xFE, 4) == 0  # runs off the window
            assert dev.read(-4, 4) == 0
            dev.write(0x11, 0x55, 1)  # not the low lane
            assert dev.read(0x20, 4) == 0  # the device's own complaint
    assert len(caplog.records) == 6
    assert all(record.name == "qppsuite.guest" for record in caplog.records)
    assert caplog.records[0].getMessage().startswith("scratch: ")
    assert dev.value == 0


def test_state_errors_are_user_facing_one_liners() -> None:
    assert issubclass(DeviceStateError, QppsuiteError)
    with pytest.raises(DeviceStateError, match="no field 'x'") as info:
        state_int({}, "dev", "x")
    assert "\n" not in str(info.value)
    with pytest.raises(DeviceStateError, match="expected int"):
        state_int({"x": True}, "dev", "x")
    with pytest.raises(DeviceStateError, match="does not fit"):
        state_int({"x": 256}, "dev", "x", bits=8)
    with pytest.raises(DeviceStateError, match="no field"):
        state_int(["not", "a", "mapping"], "dev", "x")  # type: ignore[arg-type]
    with pytest.raises(DeviceStateError, match="entries"):
        state_int_list({"x": [1, 2]}, "dev", "x", length=3)
    with pytest.raises(DeviceStateError, match="8-bit"):
        state_int_list({"x": [1, 2, -1]}, "dev", "x", length=3, bits=8)
    assert state_int_list({"x": [1, 2, 3]}, "dev", "x", length=3) == [1, 2, 3]


def test_bitmaps_round_trip_through_32_bit_words() -> None:
    bits = (1 << 95) | (1 << 64) | (1 << 33) | 1
    words = bits_to_words(bits, 3)
    assert words == [1, 2, 0x80000001]
    assert words_to_bits(words) == bits
    assert all(word < 2**32 for word in bits_to_words((1 << 96) - 1, 3))
