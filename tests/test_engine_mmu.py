"""The host-side page-table walker (core/mmu.py) against the engine's own MMU, on a live boot.

Plugins read guest memory through the walker while the guest's own accesses go
through the engine's MMU, so the two must agree.  At system calls (user mode)
and at interrupts taken in kernel mode, every sampled address is translated
both ways, for a read in the CPU's current mode and tables: the same physical
address, or a fault on both sides.  Samples cover each process's user pages
around its pc and stack, the kernel's lowmem and vmalloc areas, and unmapped
addresses, in many address spaces.
"""

import pytest
from unicorn import unicorn_const as U

from qppsuite.core.cpu import CPSR_MODE_MASK, MODE_USR, ExceptionEvent, ExceptionKind
from qppsuite.core.events import SvcEvent
from qppsuite.core.machine import Machine
from qppsuite.core.mmu import ACCESS_READ, MmuFault, walk
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, build_machine

pytestmark = pytest.mark.boot

KERNEL_SAMPLES = [0xC0000000 + i * 0x00123000 for i in range(0, 200)] + [0xE0000000 + i * 0x1000 for i in range(64)]


def compare(machine: Machine, addresses: list[int]) -> tuple[int, list[str]]:
    """(addresses compared, disagreements) for reads in the CPU's current state."""
    cpsr = machine.cpu.cpsr
    regs = machine.cpu.translation_regs()
    privileged = cpsr & CPSR_MODE_MASK != MODE_USR
    wrong = []
    for vaddr in addresses:
        ours = walk(machine.phys.read_u32, regs, vaddr, ACCESS_READ, privileged)
        theirs = machine.engine.translate(vaddr, U.UC_PROT_READ)
        expected = None if isinstance(ours, MmuFault) else ours[0]
        if expected != theirs:
            wrong.append(
                f"{vaddr:#x} ttbr0 {regs.ttbr0:#x} dacr {regs.dacr:#x} mode {cpsr & 0x1F:#x}: {ours} against {theirs}"
            )
    return len(addresses), wrong


def test_the_walker_and_the_engines_mmu_agree_on_a_live_boot(default_image: ImageBundle) -> None:
    machine = build_machine(RunOptions(), default_image, None)
    compared = {"user": 0, "kernel": 0}
    spaces: set[int] = set()
    wrong: list[str] = []
    calls = [0]

    def on_svc(event: SvcEvent) -> None:
        calls[0] += 1
        asid = machine.cpu.cp15["contextidr"].read() & 0xFF  # Linux gives each mm its own ASID
        if calls[0] % 5 and asid in spaces:  # every new address space, and a fifth of the other calls
            return
        spaces.add(asid)
        sp = machine.cpu.read("sp")
        pages = [(event.pc & ~0xFFF) + d * 0x1000 for d in range(-8, 9)] + [
            (sp & ~0xFFF) + d * 0x1000 for d in range(-4, 9)
        ]
        n, bad = compare(machine, [p & 0xFFFFFFFF for p in pages] + KERNEL_SAMPLES[::8])
        compared["user"] += n
        wrong.extend(bad)

    def on_exception(event: ExceptionEvent) -> None:
        if event.kind is not ExceptionKind.IRQ or event.from_mode == "usr":
            return
        n, bad = compare(machine, [*KERNEL_SAMPLES, 0x00010000, 0x00400000, 0xBEF00000])
        compared["kernel"] += n
        wrong.extend(bad)

    machine.events.on_svc = on_svc
    machine.events.on_exception = on_exception
    reason = machine.run()
    assert reason.ok, reason.message
    assert not wrong, "\n".join(wrong[:20])
    assert compared["user"] > 10_000 and compared["kernel"] > 10_000, compared
    assert len(spaces) > 20  # many address spaces: every process of the workload
