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
    machine.clear_stop()
    machine.config.max_insns = 800
    assert machine.run().kind == "max_insns" and machine.insn_count == 800  # 100 more calls, none seen
    assert len(calls) == 99


def _calls_of_many_functions(count: int) -> tuple[bytes, int]:
    """``loop: bl f0 ; ... ; bl f(count-1) ; b loop`` then ``count`` functions of one ``bx lr``: the code and the
    offset of f0 (function i is at f0 + 4 * i)."""
    f0 = 4 * (count + 1)
    words = [0xEB000000 | (((f0 + 4 * i) - (4 * i + 8)) >> 2 & 0xFFFFFF) for i in range(count)]
    words.append(0xEA000000 | ((0 - (4 * count + 8)) >> 2 & 0xFFFFFF))
    return arm(*words, *[0xE12FFF1E] * count), f0


def test_entry_hooks_at_hundreds_of_addresses_come_and_go_and_cost_the_engine_no_hook() -> None:
    """Entry hooks live in the instruction counter's native table, not in Unicorn's hook list (which the engine
    walks at every block): the table grows past its first 64 slots, reuses removed slots, and the engine's
    own hook count does not move."""
    count = 300
    code, f0 = _calls_of_many_functions(count)
    iteration = 2 * count + 1
    machine = Machine(
        MachineConfig(kernel=KernelImage(code + b"\0" * 64, "Image", False), max_insns=3 * iteration)
    )
    base = machine.layout.kernel
    engine_hooks = machine.engine.hook_count
    calls: list[int] = []
    handles = {i: machine.add_entry_hook(base + f0 + 4 * i, calls.append) for i in range(count)}
    assert machine.engine.hook_count == engine_hooks and machine.engine.entry_hook_count == count
    assert machine.run().kind == "max_insns"
    assert calls == [base + f0 + 4 * i for i in range(count)] * 3

    for i in range(0, count, 2):  # every other one goes; a few come back
        machine.remove_hook(handles.pop(i))
    for i in range(0, 40, 2):
        handles[i] = machine.add_entry_hook(base + f0 + 4 * i, calls.append)
    calls.clear()
    machine.clear_stop()
    machine.config.max_insns = 4 * iteration
    assert machine.run().kind == "max_insns"
    watched = sorted(handles)
    assert calls == [base + f0 + 4 * i for i in watched]
    assert machine.engine.hook_count == engine_hooks and machine.engine.entry_hook_count == len(handles)


def test_entry_hooks_at_one_address_run_in_order_and_a_stop_skips_the_rest_and_the_block() -> None:
    machine, func = machine_with_loop(400)
    seen: list[str] = []

    def first(_pc: int) -> None:
        seen.append("first")
        if len(seen) == 5:
            machine.request_stop("plugin", "enough")

    machine.add_entry_hook(func, first)
    machine.add_entry_hook(func, lambda _pc: seen.append("second"))
    reason = machine.run()
    assert reason.kind == "plugin"
    assert seen == ["first", "second"] * 2 + ["first"]
    # two whole iterations (bl, add, bx, b) and the third bl: the hooked block (add, bx) did not run.
    assert machine.insn_count == 2 * 4 + 1
