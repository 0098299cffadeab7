"""What every emulated device promises the machine: reset, snapshot state, MMIO access.

The guest is untrusted input.  Whatever it writes, at whatever offset and size,
a device must neither raise nor corrupt its state: it reports the access once on
the ``qppsuite.guest`` logger (QEMU's ``LOG_GUEST_ERROR``) and carries on, reads
answering 0.  Snapshots and record/replay need the same small, explicit state,
so each device declares it as a JSON-serializable dict (QEMU's ``VMState``).
"""

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from qppsuite.errors import QppsuiteError

#: Guest misbehaviour (bad offsets, sizes, values) goes here, never to the user as an error.
guest_log = logging.getLogger("qppsuite.guest")

#: An interrupt output: called with the new level (True = asserted) when the line changes.
IrqLine = Callable[[bool], None]

#: Virtual time in nanoseconds; it only moves forward and never reads the host clock.
VirtualNow = Callable[[], int]

#: The access sizes an MMIO callback may pass, in bytes.
ACCESS_SIZES = (1, 2, 4)


class DeviceStateError(QppsuiteError):
    """A snapshot's state for a device is missing fields or holds values the device cannot take."""


class Device(ABC):
    """A device with resettable, snapshot-able state (MMIO or not, e.g. PSCI)."""

    name: str

    def __init__(self) -> None:
        # Keys of guest errors already reported: a guest stuck in a loop must not flood the log.
        self._reported: set[Hashable] = set()

    @abstractmethod
    def reset(self) -> None:
        """Put the device in its power-on state (the machine calls this again on SYSTEM_RESET)."""

    @abstractmethod
    def get_state(self) -> dict[str, Any]:
        """The device's state as plain JSON types: exactly what a snapshot must save."""

    @abstractmethod
    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_state` output; raises :class:`DeviceStateError` if it does not fit."""

    def guest_error(self, key: Hashable, message: str) -> None:
        """Log a guest error once per ``key`` so a misbehaving guest cannot flood the log."""
        if key in self._reported:
            return
        self._reported.add(key)
        guest_log.warning("%s: %s", self.name, message)


class MmioDevice(Device):
    """A device behind a window of guest-physical address space.

    ``read``/``write`` receive the offset into the window and the access size
    (1, 2 or 4 bytes, little-endian value); they never raise for guest input.
    """

    size: int

    @abstractmethod
    def read(self, offset: int, size: int) -> int:
        """The value the guest reads; 0 (and a logged guest error) for bad accesses."""

    @abstractmethod
    def write(self, offset: int, value: int, size: int) -> None:
        """Apply a guest store; bad accesses are logged and ignored."""

    def access_ok(self, offset: int, size: int, write: bool) -> bool:
        """Whether ``size`` bytes at ``offset`` are a naturally aligned access inside the window."""
        if size in ACCESS_SIZES and offset % size == 0 and offset >= 0 and offset + size <= self.size:
            return True
        kind = "write" if write else "read"
        self.guest_error(("bad-access", kind, offset, size), f"bad {size}-byte {kind} at offset {offset:#x}")
        return False


class WordRegisterDevice(MmioDevice):
    """An MMIO device whose registers are all 32-bit words (the PrimeCell peripherals).

    Narrower reads return the addressed bytes of the word (with the word
    read's side effects, as the bus would); narrower writes are taken as the
    zero-extended word when they hit its low byte lane (``strb`` to UARTDR)
    and are logged otherwise.
    """

    def read(self, offset: int, size: int) -> int:
        if not self.access_ok(offset, size, write=False):
            return 0
        word = self.read_word(offset & ~3)
        return (word >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, value: int, size: int) -> None:
        if not self.access_ok(offset, size, write=True):
            return
        if offset & 3:
            self.guest_error(("subword-write", offset), f"{size}-byte write inside the register at {offset & ~3:#x}")
            return
        self.write_word(offset, value & 0xFFFFFFFF)

    @abstractmethod
    def read_word(self, offset: int) -> int:
        """The register at word-aligned ``offset``."""

    @abstractmethod
    def write_word(self, offset: int, value: int) -> None:
        """Store ``value`` to the register at word-aligned ``offset``."""


def state_field(state: Mapping[str, Any], device: str, key: str, kind: type) -> Any:
    """``state[key]`` checked to be a ``kind``: a corrupt snapshot is a user error, not a crash."""
    if not isinstance(state, Mapping) or key not in state:
        raise DeviceStateError(f"{device} state has no field {key!r}")
    value = state[key]
    # bool is an int subclass: a flag stored where a register belongs is corruption too.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DeviceStateError(f"{device} state field {key!r} is {type(value).__name__}, expected {kind.__name__}")
    return value


def state_int(state: Mapping[str, Any], device: str, key: str, bits: int = 32) -> int:
    """An unsigned integer field that must fit in ``bits`` bits."""
    value: int = state_field(state, device, key, int)
    if not 0 <= value < (1 << bits):
        raise DeviceStateError(f"{device} state field {key!r} = {value} does not fit in {bits} bits")
    return value


def state_int_list(state: Mapping[str, Any], device: str, key: str, length: int, bits: int = 32) -> list[int]:
    """A list of ``length`` unsigned ``bits``-bit integers."""
    values: list[Any] = state_field(state, device, key, list)
    if len(values) != length:
        raise DeviceStateError(f"{device} state field {key!r} has {len(values)} entries, expected {length}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < (1 << bits):
            raise DeviceStateError(f"{device} state field {key!r} holds {value!r}, not a {bits}-bit value")
    return list(values)


def words_to_bits(words: list[int]) -> int:
    """Join 32-bit words (word 0 least significant) into one bitmap, as the registers lay them out."""
    bits = 0
    for index, word in enumerate(words):
        bits |= word << (32 * index)
    return bits


def bits_to_words(bits: int, count: int) -> list[int]:
    """Split a bitmap into ``count`` 32-bit words: JSON-friendly (no integers beyond 2**53)."""
    return [(bits >> (32 * index)) & 0xFFFFFFFF for index in range(count)]
