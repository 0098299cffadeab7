"""PSCI 0.2 over SMC: each function's answer, power events, snapshots."""

import json
import logging

import pytest

from qppsuite.core.devices.base import DeviceStateError
from qppsuite.core.devices.psci import (
    PSCI_0_2_FN64_AFFINITY_INFO,
    PSCI_0_2_FN64_CPU_ON,
    PSCI_0_2_FN64_CPU_SUSPEND,
    PSCI_0_2_FN64_MIGRATE,
    PSCI_0_2_FN64_MIGRATE_INFO_UP_CPU,
    PSCI_0_2_FN_AFFINITY_INFO,
    PSCI_0_2_FN_CPU_OFF,
    PSCI_0_2_FN_CPU_ON,
    PSCI_0_2_FN_CPU_SUSPEND,
    PSCI_0_2_FN_MIGRATE,
    PSCI_0_2_FN_MIGRATE_INFO_TYPE,
    PSCI_0_2_FN_MIGRATE_INFO_UP_CPU,
    PSCI_0_2_FN_PSCI_VERSION,
    PSCI_0_2_FN_SYSTEM_OFF,
    PSCI_0_2_FN_SYSTEM_RESET,
    PowerEvent,
    Psci,
)

NOT_SUPPORTED = 0xFFFFFFFF


def make() -> tuple[Psci, list[PowerEvent]]:
    events: list[PowerEvent] = []
    return Psci(on_power=events.append), events


def test_version_and_migrate_info_type() -> None:
    psci, events = make()
    assert psci.call(PSCI_0_2_FN_PSCI_VERSION, (0, 0, 0)) == 0x2
    assert psci.call(PSCI_0_2_FN_MIGRATE_INFO_TYPE, (0, 0, 0)) == 2
    assert events == [] and psci.power_event is None


@pytest.mark.parametrize(
    ("function_id", "event"),
    [(PSCI_0_2_FN_SYSTEM_OFF, PowerEvent.OFF), (PSCI_0_2_FN_SYSTEM_RESET, PowerEvent.RESET)],
)
def test_power_calls_raise_a_power_event(function_id: int, event: PowerEvent) -> None:
    psci, events = make()
    assert psci.call(function_id, (0, 0, 0)) == 0
    assert events == [event] and psci.power_event is event


@pytest.mark.parametrize(
    "function_id",
    [
        PSCI_0_2_FN_CPU_SUSPEND,
        PSCI_0_2_FN64_CPU_SUSPEND,
        PSCI_0_2_FN_CPU_OFF,
        PSCI_0_2_FN_CPU_ON,
        PSCI_0_2_FN64_CPU_ON,
        PSCI_0_2_FN_AFFINITY_INFO,
        PSCI_0_2_FN64_AFFINITY_INFO,
        PSCI_0_2_FN_MIGRATE,
        PSCI_0_2_FN64_MIGRATE,
        PSCI_0_2_FN_MIGRATE_INFO_UP_CPU,
        PSCI_0_2_FN64_MIGRATE_INFO_UP_CPU,
        0x8400000A,  # PSCI_FEATURES is PSCI 1.0, not 0.2
        0x12345678,
    ],
)
def test_everything_else_is_not_supported(function_id: int, caplog: pytest.LogCaptureFixture) -> None:
    psci, events = make()
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        assert psci.call(function_id, (1, 2, 3)) == NOT_SUPPORTED
        assert psci.call(function_id, (1, 2, 3)) == NOT_SUPPORTED
    assert len(caplog.records) == 1  # reported once
    assert f"{function_id:#x}" in caplog.text
    assert events == []


def test_sign_extended_function_ids_are_taken_as_32_bit() -> None:
    psci, _ = make()
    assert psci.call(PSCI_0_2_FN_PSCI_VERSION | (0xFFFFFFFF << 32), (0, 0, 0)) == 0x2


def test_state_round_trip_and_reset() -> None:
    psci, _ = make()
    assert psci.get_state() == {"power_event": None}
    psci.call(PSCI_0_2_FN_SYSTEM_RESET, (0, 0, 0))
    saved = json.loads(json.dumps(psci.get_state()))
    other, other_events = make()
    other.set_state(saved)
    assert other.power_event is PowerEvent.RESET and other_events == []
    other.reset()
    assert other.power_event is None
    other.set_state({"power_event": None})
    assert other.power_event is None
    with pytest.raises(DeviceStateError, match="not one of"):
        other.set_state({"power_event": "explode"})
    with pytest.raises(DeviceStateError, match="no field"):
        other.set_state({})
