"""Machine.add_entry_hook: a function entry seen at every call, added and removed during a run."""

import struct

from qppsuite.core.kernel import KernelImage
from qppsuite.core.machine import Machine, MachineConfig


def arm(*words: int) -> bytes:
    return b"".join(struct.pack("<I", w) for w in words)


# loop: bl func ; b loop ; func: add r0, r0, #1 ; bx lr   (MMU off: virtual == physical)
CODE = arm(0xEB000000, 0xEAFFFFFD, 0xE2800001, 0xE12FFF1E)


def machine_with_loop(max_insns: int) -> tuple[Machine, int]:
    """The loop as the 'kernel' (MMU off, so virtual == physical) and the address of func."""
    machine = Machine(MachineConfig(kernel=KernelImage(CODE + b"\0" * 64, "Image", False), max_insns=max_insns))
    return machine, machine.layout.kernel + 8


def test_entry_hook_fires_once_per_call_and_stops_when_removed() -> None:
    machine, func = machine_with_loop(400)
    calls: list[int] = []
    machine.add_entry_hook(func, calls.append)
    assert machine.run().kind == "max_insns"
    assert len(calls) == 100 and set(calls) == {func}  # 4 instructions per iteration


def test_entry_hook_added_after_the_code_was_translated() -> None:
    machine, func = machine_with_loop(400)
    calls: list[int] = []
    handle: list[int] = []

    def add_later(_pc: int) -> None:
        if not handle:
            handle.append(machine.add_entry_hook(func, calls.append))

    machine.add_address_hook(func - 4, add_later)  # the loop's `b`, after func ran once
    assert machine.run().kind == "max_insns"
    assert len(calls) == 99
    machine.remove_hook(handle[0])
    machine.config.max_insns = 800
    machine.run()
    assert len(calls) == 99
