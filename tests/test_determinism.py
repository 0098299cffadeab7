"""The core's determinism requirement: the same image and command give the same run, byte for byte.

Virtual time comes from retired instructions and interrupts arrive at exact
instruction counts, so nothing on the host (load, wall clock, scheduling) may
leak into the guest.  Each test runs the real default image twice in one
process and compares the whole console and the final instruction count: the
default workload booted from power-on, the short command from the ready
snapshot (what a restore brings back must not leak the host either).  The
short command prints what would expose a leak at once: uptime and the
kernel's clocks (virtual time), random bytes and a process's memory map (the
kernel's entropy pool and ASLR, seeded only from what the guest observes).
"""

import pytest

from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, RunResult, run

pytestmark = pytest.mark.boot

LEAK_REVEALING_CMD = (
    "cat /proc/uptime; cat /proc/self/maps; head -c 32 /dev/urandom | od -A n -t x1; "
    "grep -E 'timer|uart' /proc/interrupts; cat /proc/self/sched 2>/dev/null | head -n 8; date"
)


def boot(image: ImageBundle, cmd: str | None, warm: bool) -> tuple[RunResult, bytes]:
    console = bytearray()
    result = run(RunOptions(image=image.path, cmd=cmd, warm=warm), console.extend, image=image)
    return result, bytes(console)


def assert_identical_runs(image: ImageBundle, cmd: str | None, *, warm: bool) -> bytes:
    if warm:  # both runs restore the ready snapshot (a first warm run would boot to make it, console and all)
        assert boot(image, "true", warm)[0].ok
    first, first_console = boot(image, cmd, warm)
    second, second_console = boot(image, cmd, warm)
    assert first.reason.kind == "poweroff", first.reason
    assert b"QPPSUITE-EXIT 0" in first_console
    assert second.reason == first.reason
    assert second.insn_count == first.insn_count
    if second_console != first_console:
        first_lines, second_lines = first_console.splitlines(), second_console.splitlines()
        where = next(
            (i for i, (a, b) in enumerate(zip(first_lines, second_lines, strict=False)) if a != b),
            min(len(first_lines), len(second_lines)),
        )
        pytest.fail(
            f"console differs from line {where + 1}: "
            f"{first_lines[where : where + 1]!r} != {second_lines[where : where + 1]!r}"
        )
    return first_console


def test_short_command_runs_are_identical(default_image: ImageBundle) -> None:
    console = assert_identical_runs(default_image, LEAK_REVEALING_CMD, warm=True)
    assert b"[vdso]" in console and b"[stack]" in console  # the command really ran


def test_default_workload_runs_are_identical(default_image: ImageBundle) -> None:
    console = assert_identical_runs(default_image, None, warm=False)
    assert b"=== qppsuite: done ===" in console
