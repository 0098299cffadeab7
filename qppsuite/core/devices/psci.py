"""PSCI 0.2 firmware (ARM DEN 0022C) over SMC: how the guest powers the board off or resets it.

There is no firmware in the guest's world: the machine's SMC hook hands r0
(the function ID) and r1-r3 to :meth:`Psci.call` and writes the result back
to r0.  The board has one CPU and no trusted OS, so only the calls Linux
needs on it succeed; SYSTEM_OFF and SYSTEM_RESET become a :class:`PowerEvent`
that the machine acts on (it is told through ``on_power`` and can also read
:attr:`Psci.power_event`).  Everything else answers NOT_SUPPORTED.
"""

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from qppsuite.core.devices.base import Device, DeviceStateError, state_field

# Function IDs (DEN 0022C table 5); the 0xC4... forms are the SMC64 calling convention.
PSCI_0_2_FN_PSCI_VERSION = 0x84000000
PSCI_0_2_FN_CPU_SUSPEND = 0x84000001
PSCI_0_2_FN64_CPU_SUSPEND = 0xC4000001
PSCI_0_2_FN_CPU_OFF = 0x84000002
PSCI_0_2_FN_CPU_ON = 0x84000003
PSCI_0_2_FN64_CPU_ON = 0xC4000003
PSCI_0_2_FN_AFFINITY_INFO = 0x84000004
PSCI_0_2_FN64_AFFINITY_INFO = 0xC4000004
PSCI_0_2_FN_MIGRATE = 0x84000005
PSCI_0_2_FN64_MIGRATE = 0xC4000005
PSCI_0_2_FN_MIGRATE_INFO_TYPE = 0x84000006
PSCI_0_2_FN_MIGRATE_INFO_UP_CPU = 0x84000007
PSCI_0_2_FN64_MIGRATE_INFO_UP_CPU = 0xC4000007
PSCI_0_2_FN_SYSTEM_OFF = 0x84000008
PSCI_0_2_FN_SYSTEM_RESET = 0x84000009

PSCI_FUNCTION_NAMES: dict[int, str] = {
    PSCI_0_2_FN_PSCI_VERSION: "PSCI_VERSION",
    PSCI_0_2_FN_CPU_SUSPEND: "CPU_SUSPEND",
    PSCI_0_2_FN64_CPU_SUSPEND: "CPU_SUSPEND (SMC64)",
    PSCI_0_2_FN_CPU_OFF: "CPU_OFF",
    PSCI_0_2_FN_CPU_ON: "CPU_ON",
    PSCI_0_2_FN64_CPU_ON: "CPU_ON (SMC64)",
    PSCI_0_2_FN_AFFINITY_INFO: "AFFINITY_INFO",
    PSCI_0_2_FN64_AFFINITY_INFO: "AFFINITY_INFO (SMC64)",
    PSCI_0_2_FN_MIGRATE: "MIGRATE",
    PSCI_0_2_FN64_MIGRATE: "MIGRATE (SMC64)",
    PSCI_0_2_FN_MIGRATE_INFO_TYPE: "MIGRATE_INFO_TYPE",
    PSCI_0_2_FN_MIGRATE_INFO_UP_CPU: "MIGRATE_INFO_UP_CPU",
    PSCI_0_2_FN64_MIGRATE_INFO_UP_CPU: "MIGRATE_INFO_UP_CPU (SMC64)",
    PSCI_0_2_FN_SYSTEM_OFF: "SYSTEM_OFF",
    PSCI_0_2_FN_SYSTEM_RESET: "SYSTEM_RESET",
}

# Return values, as the unsigned 32-bit r0 the guest sees.
PSCI_RET_SUCCESS = 0
PSCI_RET_NOT_SUPPORTED = 0xFFFFFFFF  # -1

#: PSCI_VERSION: major 0 in bits 31:16, minor 2 in bits 15:0.
PSCI_VERSION_0_2 = 0x00000002
#: MIGRATE_INFO_TYPE 2: no trusted OS is present, so nothing ever needs migrating.
PSCI_0_2_TOS_MP = 2


class PowerEvent(Enum):
    """What the guest asked the board's power controller to do."""

    OFF = "off"
    RESET = "reset"


class Psci(Device):
    """The PSCI function dispatcher; ``on_power`` is called once per SYSTEM_OFF/SYSTEM_RESET."""

    name = "psci"
    power_event: PowerEvent | None

    def __init__(self, on_power: Callable[[PowerEvent], None]) -> None:
        super().__init__()
        self._on_power = on_power
        self.reset()

    def call(self, function_id: int, args: tuple[int, int, int]) -> int:
        """Run PSCI function ``function_id`` (r0) with r1-r3; returns the new r0 (unsigned 32-bit)."""
        function_id &= 0xFFFFFFFF
        if function_id == PSCI_0_2_FN_PSCI_VERSION:
            return PSCI_VERSION_0_2
        if function_id == PSCI_0_2_FN_MIGRATE_INFO_TYPE:
            return PSCI_0_2_TOS_MP
        if function_id in (PSCI_0_2_FN_SYSTEM_OFF, PSCI_0_2_FN_SYSTEM_RESET):
            event = PowerEvent.OFF if function_id == PSCI_0_2_FN_SYSTEM_OFF else PowerEvent.RESET
            self.power_event = event
            self._on_power(event)
            # These calls do not return on hardware; r0 matters only if the machine resumes the guest.
            return PSCI_RET_SUCCESS
        name = PSCI_FUNCTION_NAMES.get(function_id)
        if name is not None:
            self.guest_error(("unsupported", function_id), f"{name} ({function_id:#x}) is not supported")
        else:
            self.guest_error(("unknown", function_id), f"unknown function {function_id:#x} (args {args})")
        return PSCI_RET_NOT_SUPPORTED

    # -- Device ----------------------------------------------------------------------------
    def reset(self) -> None:
        self.power_event = None

    def get_state(self) -> dict[str, Any]:
        return {"power_event": None if self.power_event is None else self.power_event.value}

    def set_state(self, state: Mapping[str, Any]) -> None:
        if not isinstance(state, Mapping) or "power_event" not in state:
            raise DeviceStateError(f"{self.name} state has no field 'power_event'")
        value = state["power_event"]
        if value is None:
            self.power_event = None
            return
        text = state_field(state, self.name, "power_event", str)
        try:
            self.power_event = PowerEvent(text)
        except ValueError as err:
            known = ", ".join(event.value for event in PowerEvent)
            raise DeviceStateError(f"{self.name} power_event {text!r} is not one of: {known}") from err
