"""The machine: one Cortex-A15, its RAM and devices, virtual time, and the run loop.

The loop runs the guest in instruction-count quanta, each ending at the next
timer deadline, so interrupts arrive exactly when virtual time says and a run
is deterministic.  The engine translates with its own ARMv7 MMU; everything it
does not do for a full system lives in two hooks: the interrupt hook (SVC,
SMC, BKPT, and the aborts its MMU raises, whose entry the machine performs)
and the invalid-instruction hook (undefined instructions, WFE/YIELD).  Nothing
else is hooked unless a plugin asks (:meth:`Machine.add_address_hook`,
:meth:`Machine.add_block_hook`).
"""

import ctypes
import mmap
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from unicorn import UcError
from unicorn import arm_const as A
from unicorn import unicorn_const as U

from qppsuite.core import board, hypercall
from qppsuite.core.clock import VirtualClock
from qppsuite.core.cpu import (
    CPSR_I,
    CPSR_MODE_MASK,
    CPSR_T,
    MODE_NAMES,
    Cpu,
    ExceptionEvent,
    ExceptionKind,
)
from qppsuite.core.devices.base import DeviceStateError, state_field, state_int
from qppsuite.core.devices.psci import PowerEvent
from qppsuite.core.devices.virtio_blk import CowDisk, VirtioBlk
from qppsuite.core.engine import EXCP_BKPT, EXCP_DATA_ABORT, EXCP_PREFETCH_ABORT, EXCP_SMC, EXCP_SWI, Engine
from qppsuite.core.events import AddressSpaceSwitch, CoreEvents, StopReason, SvcEvent
from qppsuite.core.kernel import KernelImage
from qppsuite.core.memory import GuestMemoryError, PhysicalMemory, VirtualMemory
from qppsuite.core.mmu import ACCESS_FETCH, FS_EXTERNAL, MmuFault
from qppsuite.core.rootfs import RootfsFit, RootfsWatch
from qppsuite.core.snapshot import PAGE_SIZE, Snapshot, SnapshotError, nonzero_pages
from qppsuite.errors import GuestError, PluginError

_WFE_YIELD = {
    (False, 0xE320F002),
    (False, 0xE320F001),
    (True, 0xBF20),
    (True, 0xBF10),
    (True, 0xF3AF8002),
    (True, 0xF3AF8001),
}

PANIC_MARKER = b"Kernel panic - not syncing"

#: Hooks removed during a quantum are deleted when it ends; this many waiting end it early.
DEFERRED_DELETIONS = 8
#: Consecutive aborts with no instruction executed in between that mean the guest cannot progress.
STUCK_FAULTS = 1000


@dataclass
class MachineConfig:
    """What to boot and the limits of the run."""

    kernel: KernelImage
    initrd: bytes = b""
    bootargs: str = "console=ttyAMA0"
    ram_mib: int = 256
    max_insns: int | None = None
    #: Instructions per quantum when no timer deadline comes sooner.
    quantum: int = 4_000_000
    #: No console output and no system call for this many instructions is a hang.
    hang_insns: int = 4_000_000_000
    #: ... or for this many wall-clock seconds.
    hang_seconds: float = 600.0
    #: The whole run's wall-clock budget in seconds, whatever the guest does (None: no limit).  A guest
    #: that keeps making system calls is making progress, so only this stops it.
    timeout_seconds: float | None = None
    #: When that budget began (``time.monotonic()``; None: at the first :meth:`Machine.run`).  Every later
    #: ``run()`` of the machine spends the same budget.
    timeout_from: float | None = None
    #: Bytes of tmpfs the initrd's files fill once unpacked (the image's manifest says; None: not known),
    #: checked against the rootfs the kernel gives them (:mod:`qppsuite.core.rootfs`).
    rootfs_bytes: int | None = None
    #: A raw disk image for the guest's ``/dev/vda`` (virtio-blk over virtio-mmio), read-only: the guest's writes
    #: stay in memory (:mod:`qppsuite.core.devices.virtio_blk`).  None: no disk, and no transport on the board.
    disk: Path | None = None


#: Where input goes: the console (``ttyAMA0``), the channel (``ttyAMA1``), and hypercalls' FROM_HOST answers.
PORTS = ("console", "channel", hypercall.PORT)
#: The most bytes of host input (:class:`HostInput`) given to the console at one quantum's start: Linux's
#: tty layer takes them from the UART's interrupt handler, and a pasted megabyte must not outrun it.
HOST_INPUT_CHUNK = 256
#: The longest the run loop waits for host input while the guest is idle before letting virtual time jump.
HOST_INPUT_WAIT = 0.05


class HostInput(Protocol):
    """Input typed or piped by the host's user for the guest console, polled by the run loop."""

    def poll(self, limit: int) -> bytes | None:
        """What has arrived since the last poll, at most ``limit`` bytes (the rest waits), without blocking;
        None once the user has left the console (the run then stops, ``detached``)."""
        ...

    def wait(self, seconds: float) -> None:
        """Block until input is waiting or ``seconds`` have passed."""
        ...


@dataclass
class _Hook:
    """An opt-in hook; ``active`` silences it at once, before the engine drops it at the end of the quantum."""

    vaddr: int | None
    fn: Callable[..., None] = field(repr=False)
    active: bool = True

    def at(self, addr: int, _size: int) -> None:
        if self.active:
            self.fn(addr)

    def block(self, addr: int, size: int) -> None:
        if self.active:
            self.fn(addr, size)


class Machine:
    """A full-system ARMv7 machine that boots Linux; plugins observe it through :attr:`events`."""

    def __init__(self, config: MachineConfig, console: Callable[[bytes], None] | None = None) -> None:
        self.config = config
        self.events = CoreEvents()
        self.engine = engine = Engine()
        self.uc = engine.uc
        self.cpu = Cpu(engine)
        self._console_sink = console

        if not 16 <= config.ram_mib <= board.RAM_MAX_MIB:
            raise GuestError(f"--ram {config.ram_mib}: this board holds 16 to {board.RAM_MAX_MIB} MiB of RAM")
        ram_size = config.ram_mib << 20
        # private: restore() zeroes it with MADV_DONTNEED, which a shared mapping would fill again from its object
        self._ram = mmap.mmap(-1, ram_size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        ram_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._ram))
        self.uc.mem_map_ptr(board.RAM_BASE, ram_size, U.UC_PROT_ALL, ram_ptr)
        self.phys = PhysicalMemory(self._ram, board.RAM_BASE)
        self.memory = VirtualMemory(self.phys, self.cpu.translation_regs)

        self.clock = VirtualClock(engine.in_flight)
        self.irq_line = False
        #: Where the guest's channel output goes (``ttyAMA1``); the host side sets it (qppsuite/channel.py).
        self.channel_sink: Callable[[bytes], None] | None = None
        #: Pages (numbers from physical 0) a device wrote by DMA during the quantum: their translated code goes.
        self._dma_pages: set[int] = set()
        disk = None
        if config.disk is not None:
            disk = (VirtioBlk(CowDisk(config.disk)), self.phys.read, self._dma_write)
        self.devices = board.create_devices(
            engine.map_mmio, self.clock.now_ns, self._set_irq_line, self._console, self._channel_out, self._power, disk
        )
        self.gic, self.timer, self.uart, self.psci = (
            self.devices.gic,
            self.devices.timer,
            self.devices.uart,
            self.devices.psci,
        )

        self._stop: StopReason | None = None
        self._fault: MmuFault | None = None
        self._in_exception = False
        self._deferred_retranslations: list[_Hook] = []
        self._deferred_deletions: list[int] = []
        self._last_abort_at = -1
        self._running = False
        self._last_ttbr0 = 0
        self._progress_insn = 0
        self._progress_wall = 0.0
        self._deadline_wall: float | None = None
        self._stuck = 0
        self._line = bytearray()
        self._hooks: dict[int, _Hook] = {}
        #: Input for the guest's serial ports waiting for the next quantum's start: (port, bytes).
        self._input: deque[tuple[str, bytes]] = deque()
        #: Recorded input to deliver at exact instruction counts (a replay): (insn count, port, bytes).
        self._schedule: deque[tuple[int, str, bytes]] = deque()
        #: A replay's end: the run stops here (``max_insns``) whatever else it does; a hard limit, never a budget.
        self.end_at: int | None = None
        #: While stepping towards a hard stop (--max-insns or a scheduled input): the count it is at.
        self._step_until: int | None = None
        #: The host's console input (an interactive run), polled at each quantum's start.
        self.host_input: HostInput | None = None
        #: Called as ``on_input(insn_count, port, data)`` for every delivery (a recording stamps input with it).
        self.on_input: Callable[[int, str, bytes], None] | None = None
        #: Where hypercalls' FROM_HOST bytes come from (:mod:`qppsuite.core.hypercall`); None: no hypercalls.
        self.hypercall_source: hypercall.Source | None = None
        #: Where hypercalls' TO_HOST bytes go (empty: the guest program's end); None: they are dropped.
        self.hypercall_sink: Callable[[bytes], None] | None = None
        #: A replay's recorded FROM_HOST answers, in order (:meth:`schedule_input`).
        self._hypercall_answers: deque[bytes] = deque()

        self._ttbr0 = self.cpu.cp15["ttbr0"]
        self._ram_lo, self._ram_hi = self.phys.base, self.phys.end
        engine.hook_intr(self._exception_entry)
        engine.hook_mem_unmapped(self._unmapped)
        engine.hook_insn_invalid(self._undefined)
        self.layout = self._load(config)

    # -- boot -------------------------------------------------------------
    def _load(self, config: MachineConfig) -> board.BootLayout:
        """Put kernel, initrd and DTB in RAM and set the registers a boot loader would."""
        try:
            layout = board.plan_layout(
                config.ram_mib << 20, len(config.kernel.data), len(config.initrd), config.kernel.load_offset
            )
        except ValueError as exc:
            least = board.minimum_ram_mib(len(config.kernel.data), len(config.initrd), config.kernel.load_offset)
            raise GuestError(str(exc), hint=f"this kernel and initrd need --ram {least} or more") from exc
        fit = None
        if config.initrd and config.rootfs_bytes is not None:
            fit = RootfsFit(config.rootfs_bytes, config.ram_mib, len(config.initrd))
            why = fit.before_boot()
            if why is not None:
                raise GuestError(why)
        self._rootfs_watch: RootfsWatch | None = RootfsWatch(fit) if config.initrd else None
        self.phys.write(layout.kernel, config.kernel.data)
        if config.initrd:
            self.phys.write(layout.initrd, config.initrd)
        dtb = board.device_tree(layout, config.bootargs, disk=config.disk is not None)
        self.phys.write(layout.dtb, dtb)
        self.devices.reset()
        engine = self.engine
        # MMU and caches off, SVC mode, IRQs/FIQs/aborts masked (Documentation/arm/booting.rst).
        engine.set_reg(A.UC_ARM_REG_CPSR, 0x1D3)
        engine.set_reg(A.UC_ARM_REG_R0, 0)
        engine.set_reg(A.UC_ARM_REG_R1, 0xFFFFFFFF)
        engine.set_reg(A.UC_ARM_REG_R2, layout.dtb)
        engine.set_reg(A.UC_ARM_REG_PC, layout.kernel)
        return layout

    # -- public API for plugins ---------------------------------------------
    @property
    def insn_count(self) -> int:
        """Guest instructions executed so far (exact, including the running quantum)."""
        return self.clock.insn_count

    def request_stop(self, kind: str, message: str) -> None:
        """Stop the run at the next opportunity (plugins: e.g. enough data collected)."""
        if self._stop is None:
            self._stop = StopReason(kind, message, self.clock.insn_count)
        self.engine.stop()

    def clear_stop(self) -> None:
        """Forget the stop the last :meth:`run` ended with, once handled, so the next run goes on from there."""
        self._stop = None

    def add_address_hook(self, vaddr: int, fn: Callable[[int], None]) -> int:
        """Call ``fn(pc)`` whenever execution reaches virtual address ``vaddr`` (any address space), before
        the instruction there runs.

        One Python call per execution of that address; only code translated at
        that address carries a call to it.
        """
        vaddr &= 0xFFFFFFFE
        hook = _Hook(vaddr, fn)
        return self._install(hook, self.engine.hook_code(hook.at, vaddr, vaddr))

    def add_entry_hook(self, vaddr: int, fn: Callable[[int], None]) -> int:
        """Call ``fn(pc)`` whenever a translated block starting at ``vaddr`` runs: a function entered by a branch.

        Only for addresses that are always branched to (function entries, the
        instruction after an SVC), never fallen into from the instruction
        before: a block that runs through ``vaddr`` without starting there does not call it.
        """
        vaddr &= 0xFFFFFFFE
        hook = _Hook(vaddr, fn)
        handle = self.engine.hook_entry(hook.at, vaddr)  # every block already calls the engine's counter
        self._hooks[handle] = hook
        return handle

    def add_block_hook(self, fn: Callable[[int, int], None], begin: int = 0, end: int = 0xFFFFFFFF) -> int:
        """Call ``fn(pc, size)`` at every translated block executed that starts in ``[begin, end]`` (virtual,
        any address space).  One Python call per block run in the range (about 1 µs): over all code, about a
        10x slowdown."""
        hook = _Hook(None, fn)
        return self._install(hook, self.engine.hook_block(hook.block, begin, end))

    def _install(self, hook: _Hook, handle: int) -> int:
        self._hooks[handle] = hook
        self._retranslate(hook)  # code translated before the hook existed carries no call to it
        return handle

    def _retranslate(self, hook: _Hook) -> None:
        """Drop the translated code of the hook's address, so that it is translated again with the hook.

        Unicorn finds that code by translating the address as an instruction
        fetch in the CPU's current state.  Inside a running quantum a fetch
        that state refuses raises an abort the guest never caused (a user page
        seen from the kernel, or a page of another address space), so the
        engine's own probe (:meth:`Engine.translate`) asks first; for an address it refuses, all translated
        code goes, which is only safe outside translated blocks: from a hook
        inside one, the quantum stops and the run loop flushes.
        """
        if hook.vaddr is not None and self._fetchable(hook.vaddr):
            self.uc.ctl_remove_cache(hook.vaddr, hook.vaddr + 4)
        elif self._running and not self._in_exception:
            self._deferred_retranslations.append(hook)
            self.engine.stop()
        else:
            self.uc.ctl_flush_tb()  # between quanta, or in the exception hook (no block is running)

    def _fetchable(self, vaddr: int) -> bool:
        """Whether an instruction fetch from ``vaddr`` in the CPU's current state translates to RAM."""
        paddr = self.engine.translate(vaddr, U.UC_PROT_EXEC)
        return paddr is not None and self._ram_lo <= paddr < self._ram_hi

    def remove_hook(self, handle: int) -> None:
        """Stop a hook now; translated code stops calling it once it is retranslated."""
        hook = self._hooks.pop(handle, None)
        if hook is None:
            return
        hook.active = False
        if handle < 0:  # an entry hook: no Unicorn hook, no translated code to drop
            self.engine.hook_del(handle)
        elif self._running and (hook.vaddr is None or not self._fetchable(hook.vaddr)):
            # Deleting a hook drops the code translated with it, translating its addresses in the current
            # state: inside a quantum, where that fetch faults, it raises an abort the guest never caused
            # (see _retranslate).  The deletion waits for the end of the quantum.
            self._deferred_deletions.append(handle)
            if len(self._deferred_deletions) >= DEFERRED_DELETIONS:
                self.engine.stop()  # the engine scans every hook it holds: keep them bounded
        else:
            self.engine.hook_del(handle)

    # -- the run loop ------------------------------------------------------
    def run(self) -> StopReason:
        """Run until power-off, a stop request, a guest failure or the instruction budget."""
        self._progress_wall = time.monotonic()
        self._step_until = None
        if self.config.timeout_seconds is not None and self._deadline_wall is None:
            began = self.config.timeout_from if self.config.timeout_from is not None else self._progress_wall
            self._deadline_wall = began + self.config.timeout_seconds
        self.events.on_start()
        try:
            while self._stop is None:
                self._quantum()
        except KeyboardInterrupt:
            self._stop = StopReason("interrupted", "interrupted by the user (Ctrl-C)", self.clock.insn_count)
        except GuestError as exc:
            self._stop = StopReason("error", str(exc), self.clock.insn_count)
        except PluginError as exc:  # strict mode: a plugin's failure ends the run cleanly
            self._stop = StopReason("plugin", str(exc), self.clock.insn_count)
        except (UcError, NotImplementedError) as exc:
            pc = self.cpu.pc
            self._stop = StopReason("error", f"emulation failed at pc {pc:#x}: {exc}", self.clock.insn_count)
        finally:
            self._running = False
        self._flush_console_line()
        reason = self._stop
        self.events.on_stop(reason=reason)
        return reason

    def _quantum(self) -> None:
        clock = self.clock
        config = self.config
        self._deliver_input()
        if self._stop is not None:  # the user left the console
            return
        budget = config.quantum
        if config.max_insns is not None:
            left = config.max_insns - clock.retired
            if left <= 0:
                self._stop = StopReason("max_insns", f"instruction budget of {config.max_insns} reached", clock.retired)
                return
            budget = min(budget, left)
        if self.end_at is not None and self.end_at <= clock.retired:
            end = f"the recorded run's end ({self.end_at:,} instructions)"
            self._stop = StopReason("max_insns", end, clock.retired)
            return
        # A recorded input's count is a hard limit only, not the budget: the budget decides whether a run that
        # ended early was a WFI (_idle below), and must be what it was when the input was recorded.
        target = self._hard_stop()
        deadline = self._next_deadline_ns()
        if deadline is not None:
            budget = min(budget, clock.insns_until(deadline))
        # A pending IRQ the CPU masks is taken at the first block boundary where CPSR.I is clear: an instruction
        # that clears it ends its block (docs/engine.md, "Time"), and the run stops before the next one.
        until_unmasked = False
        if self.irq_line:
            if self.cpu.cpsr & CPSR_I:
                until_unmasked = True
            else:
                self._take_irq()
        self._fault = None
        self._running = True
        if self._step_until is not None and clock.retired >= self._step_until:
            self._step_until = None
        if config.quantum == 1 or self._step_until is not None:
            # Instruction by instruction: a single-stepping tool, or the last instructions before a hard stop,
            # which falls inside a block (a run ends only between blocks).
            executed, faulted = self.engine.step(self.cpu.resume_address())
            budget = executed
        elif target is None:
            executed, faulted = self.engine.run(self.cpu.resume_address(), budget, until_unmasked=until_unmasked)
        else:
            executed, faulted = self.engine.run(
                self.cpu.resume_address(), budget, target - clock.retired, until_unmasked=until_unmasked
            )
            if executed == 0 and self.engine.budget_reached:
                self._step_until = target
        self._running = False
        # _retranslate and remove_hook may have stopped the quantum, a device's DMA did, or input for the guest
        # arrived: not a WFI
        cut_short = bool(self._deferred_retranslations or self._deferred_deletions or self._input or self._dma_pages)
        while self._deferred_deletions:
            self.engine.hook_del(self._deferred_deletions.pop())
        while self._deferred_retranslations:
            self._retranslate(self._deferred_retranslations.pop())
        if self._dma_pages:
            self._drop_code_after_dma()
        clock.retire(executed)
        self._check_address_space()
        if faulted:
            self._take_external_abort()
        elif (
            executed < budget
            and not self.engine.budget_reached
            and self._stop is None
            and not self.irq_line
            and not cut_short
        ):
            self._idle()
        self.timer.update()
        self.devices.channel.update()
        self._check_hang()

    def _hard_stop(self) -> int | None:
        """The instruction count no run may pass: --max-insns, or the next recorded input's (None: neither)."""
        targets = [limit for limit in (self.config.max_insns, self.end_at) if limit is not None]
        if self._schedule:
            targets.append(self._schedule[0][0])
        return min(targets, default=None)

    # -- input ---------------------------------------------------------------
    def send_to_console(self, data: bytes) -> None:
        """Bytes for the guest's console (``ttyAMA0``), as if typed; see :meth:`send_to_channel`."""
        self._queue_input("console", data)

    def send_to_channel(self, data: bytes) -> None:
        """Bytes for the guest on the channel port (``ttyAMA1``).

        Input reaches a port only at a quantum's start, between blocks: from a device's callback (the
        channel answering the guest) the running block ends first.  That instruction count is the input's
        stamp (:attr:`on_input`), and a replay delivers it at the same count (:meth:`schedule_input`).
        On the channel the bytes then arrive as the guest reads them, with flow control, so none is lost
        whatever its length (:class:`~qppsuite.core.devices.pl011.Pl011`).
        """
        self._queue_input("channel", data)

    def _queue_input(self, port: str, data: bytes) -> None:
        if data:
            self._input.append((port, bytes(data)))
            if self._running:
                self.engine.stop()

    def schedule_input(self, inputs: Iterable[tuple[int, str, bytes]]) -> None:
        """Deliver recorded input at exactly the instruction counts it was stamped with, in order.

        ``inputs`` holds ``(insn_count, port, data)``, ``port`` one of :data:`PORTS`.  The run stops at
        each count (stepping into a block if it must) and delivers there.  Raises :class:`ValueError` for
        counts out of order or already past, or an unknown port.
        """
        last = self.clock.retired
        for count, port, data in inputs:
            if port not in PORTS:
                raise ValueError(f"input at instruction {count} for an unknown port {port!r}")
            if count < last:
                where = "before the run's start" if last == self.clock.retired else "out of order"
                raise ValueError(
                    f"input at instruction {count:,} for port {port!r} is {where} "
                    f"(the run starts at instruction {self.clock.retired:,})"
                )
            if port == hypercall.PORT:
                # answered when the guest asks, which the replay reproduces: no stop is needed to deliver them
                self._hypercall_answers.append(bytes(data))
                self.hypercall_source = self._recorded_answer
            else:
                self._schedule.append((count, port, bytes(data)))
            last = count

    @property
    def pending_input(self) -> int:
        """Scheduled inputs (:meth:`schedule_input`) not delivered yet: a replay that ends with some diverged."""
        return len(self._schedule) + len(self._hypercall_answers)

    def _recorded_answer(self, _limit: int) -> bytes:
        return self._hypercall_answers.popleft() if self._hypercall_answers else b""

    def _deliver_input(self) -> None:
        """At a quantum's start: the recorded input due now, then what arrived from the host, onto the ports."""
        now = self.clock.retired
        schedule = self._schedule
        while schedule and schedule[0][0] == now:
            _, port, data = schedule.popleft()
            self._input.append((port, data))
        host = self.host_input
        if host is not None and not self.uart.rx_backlog:
            typed = host.poll(HOST_INPUT_CHUNK)
            if typed is None:
                self.host_input = None
                self._stop = StopReason("detached", "the user left the console", now)
            elif typed:
                self._input.append(("console", typed))
        if not self._input:
            return
        self._progress()
        while self._input:
            port, data = self._input.popleft()
            if self.on_input is not None:
                self.on_input(now, port, data)
            (self.uart if port == "console" else self.devices.channel).push_rx(data)

    def _idle(self) -> None:
        """WFI with nothing pending: jump virtual time to the next timer event or byte on the channel.

        In an interactive run the host's user is waited for first, in wall-clock time (at most until the
        deadline, or :data:`HOST_INPUT_WAIT`).  With no deadline the guest hangs, unless input may still
        come: the host's user, or a replay's recorded input.
        """
        deadline = self._next_deadline_ns()
        host = self.host_input
        if host is not None:
            gap = 0.0 if deadline is None else (deadline - self.clock.now_ns()) / 1e9
            host.wait(HOST_INPUT_WAIT if deadline is None else min(gap, HOST_INPUT_WAIT))
            self._progress()  # a user who types nothing is no hang
        if deadline is None:
            if host is None and not self._schedule:
                self._stop = StopReason(
                    "hang", "guest is idle (WFI) with no timer armed and no interrupt pending", self.clock.retired
                )
            return
        self.clock.skip_to(deadline)

    def _next_deadline_ns(self) -> int | None:
        deadlines = (self.timer.next_deadline_ns(), self.devices.channel.next_deadline_ns())
        return min((d for d in deadlines if d is not None), default=None)

    def _check_hang(self) -> None:
        config = self.config
        now = time.monotonic()
        if self._deadline_wall is not None and now > self._deadline_wall:
            self._stop = StopReason(
                "timeout", f"wall-clock budget of {config.timeout_seconds:g} s reached", self.clock.retired
            )
        elif self.clock.retired - self._progress_insn > config.hang_insns:
            self._stop = StopReason(
                "hang",
                f"no console output and no system call for {config.hang_insns} instructions",
                self.clock.retired,
            )
        elif now - self._progress_wall > config.hang_seconds:
            self._stop = StopReason(
                "hang",
                f"no console output and no system call for {config.hang_seconds:.0f} s",
                self.clock.retired,
            )

    def _progress(self) -> None:
        self._progress_insn = self.clock.insn_count
        self._progress_wall = time.monotonic()

    # -- interrupts and exceptions ------------------------------------------
    def _set_irq_line(self, level: bool) -> None:
        self.irq_line = level
        if level and self._running:
            self.engine.stop()  # end the quantum so the IRQ is taken promptly

    def _event_base(self) -> tuple[int, bool, str]:
        cpsr = self.cpu.cpsr
        return self.cpu.pc, bool(cpsr & CPSR_T), MODE_NAMES.get(cpsr & CPSR_MODE_MASK, "???")

    def _take_irq(self) -> None:
        self._check_address_space()
        pc, thumb, mode = self._event_base()
        if self.events.on_exception:
            self.events.on_exception(event=ExceptionEvent(ExceptionKind.IRQ, pc, thumb, mode, self.clock.insn_count))
        self.cpu.enter(ExceptionKind.IRQ, pc + 4)

    def _check_address_space(self) -> None:
        """Report a TTBR0 change (a switch of address space) to ``on_asid_change``.

        The engine's MMU reads TTBR0 itself, so the change is seen where Python
        runs next: an exception entry or the end of the quantum, before any
        system call or abort of the new address space is reported.
        """
        ttbr0 = self._ttbr0.read()
        if ttbr0 != self._last_ttbr0:
            old, self._last_ttbr0 = self._last_ttbr0, ttbr0
            if self.events.on_asid_change:
                contextidr = self.cpu.cp15["contextidr"].read()
                self.events.on_asid_change(switch=AddressSpaceSwitch(old, ttbr0, contextidr, self.clock.insn_count))

    def _abort(self, kind: ExceptionKind, status: int, vaddr: int) -> None:
        """Perform a prefetch or data abort entry (ARM ARM B1.9.7, B1.9.8) with its fault status and address.

        A guest whose abort handler itself aborts, with no instruction executed
        in between, cannot progress: after STUCK_FAULTS such aborts the run
        stops as a hang.
        """
        pc, thumb, mode = self._event_base()
        now = self.clock.insn_count
        self._stuck = self._stuck + 1 if now == self._last_abort_at else 0
        self._last_abort_at = now
        if self._stuck > STUCK_FAULTS:
            self.request_stop("hang", f"guest is stuck taking aborts at pc {pc:#x} without executing")
            return
        if kind is ExceptionKind.PREFETCH_ABORT:
            self.cpu.cp15["ifsr"].write(status)
            self.cpu.cp15["ifar"].write(vaddr)
            lr = pc + 4
        else:
            self.cpu.cp15["dfsr"].write(status)
            self.cpu.cp15["dfar"].write(vaddr)
            lr = pc + 8
        if self.events.on_exception:
            self.events.on_exception(event=ExceptionEvent(kind, pc, thumb, mode, now, vaddr, status))
        self.cpu.enter(kind, lr)

    def _unmapped(self, access: int, address: int) -> bool:
        """The engine's hook for an access to physical memory that is neither RAM nor a device: refused.

        The run loop then performs an external abort (a fetch) or stops the run (a load or store: the engine
        does not say which instruction made it).
        """
        self._fault = MmuFault(address, FS_EXTERNAL, 0, access)
        return False

    def _take_external_abort(self) -> None:
        fault = self._fault
        self._fault = None
        if fault is None:
            raise GuestError(f"unexplained emulation exception at pc {self.cpu.pc:#x}")
        if fault.access != ACCESS_FETCH:
            raise GuestError(f"the guest accessed {fault.vaddr:#x}, where this board has no RAM and no device")
        self._abort(ExceptionKind.PREFETCH_ABORT, fault.ifsr, fault.vaddr)

    def _exception_entry(self, intno: int) -> None:
        """The engine's exception hook: outside any translated block, where all code may be dropped."""
        self._in_exception = True
        try:
            self._interrupt(intno)
        finally:
            self._in_exception = False

    def _interrupt(self, intno: int) -> None:
        engine = self.engine
        self._check_address_space()
        if intno == EXCP_SWI:
            self._progress()
            if self._rootfs_watch is not None:
                self._rootfs_watch = None  # user space runs: the initramfs is unpacked (see rootfs.RootfsWatch)
            cpsr = engine.reg(A.UC_ARM_REG_CPSR)
            next_pc = engine.reg(A.UC_ARM_REG_PC)
            thumb = bool(cpsr & CPSR_T)
            engine.left_block_at(next_pc, thumb)
            if self.events.on_svc:
                self.events.on_svc(event=SvcEvent(next_pc - (2 if thumb else 4), thumb, self.clock.insn_count))
            self.cpu.enter(ExceptionKind.SVC, next_pc)
        elif intno == EXCP_SMC:
            engine.left_block_at(self.cpu.pc, bool(self.cpu.cpsr & CPSR_T))
            regs = [engine.reg(r) for r in (A.UC_ARM_REG_R0, A.UC_ARM_REG_R1, A.UC_ARM_REG_R2, A.UC_ARM_REG_R3)]
            engine.set_reg(A.UC_ARM_REG_R0, self.psci.call(regs[0], (regs[1], regs[2], regs[3])))
        elif intno == EXCP_BKPT:
            pc, thumb, mode = self._event_base()
            engine.left_block_at(pc, thumb)  # a BKPT counts as executed, as an SVC does
            insn_pc = pc - (2 if thumb else 4)
            self.cpu.cp15["ifsr"].write(0b00010)  # debug event
            self.cpu.cp15["ifar"].write(insn_pc)
            if self.events.on_exception:
                self.events.on_exception(
                    event=ExceptionEvent(ExceptionKind.PREFETCH_ABORT, insn_pc, thumb, mode, self.clock.insn_count)
                )
            self.cpu.enter(ExceptionKind.PREFETCH_ABORT, insn_pc + 4)
        elif intno in (EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT):
            engine.left_block_at(self.cpu.pc, bool(self.cpu.cpsr & CPSR_T))  # an aborted instruction does not retire
            status, vaddr = engine.fault()
            kind = ExceptionKind.PREFETCH_ABORT if intno == EXCP_PREFETCH_ABORT else ExceptionKind.DATA_ABORT
            self._abort(kind, status, vaddr)
        else:
            raise GuestError(f"unexpected CPU exception {intno} at pc {self.cpu.pc:#x}")

    def _undefined(self) -> bool:
        pc, thumb, mode = self._event_base()
        try:
            raw = self.memory.read(pc, 4)
        except Exception:
            raw = b"\0\0\0\0"
        if thumb:
            hw1 = int.from_bytes(raw[:2], "little")
            insn = (hw1 << 16) | int.from_bytes(raw[2:], "little") if hw1 >> 11 in (0x1D, 0x1E, 0x1F) else hw1
        else:
            insn = int.from_bytes(raw, "little")
        if (thumb, insn) in _WFE_YIELD:
            size = 4 if insn > 0xFFFF or not thumb else 2
            self.engine.left_block_at(pc + size, thumb)  # a NOP here: it retires
            self.engine.set_reg(A.UC_ARM_REG_PC, (pc + size) | (1 if thumb else 0))
            return True
        if insn == hypercall.HYPERCALL_A32 and not thumb and mode == "usr" and self.hypercall_source is not None:
            self.engine.left_block_at(pc + 4, False)  # it retires
            self.engine.set_reg(A.UC_ARM_REG_R0, self._hypercall() & 0xFFFFFFFF)
            self.engine.set_reg(A.UC_ARM_REG_PC, pc + 4)
            return True
        self.engine.left_block_at(pc, thumb)  # an undefined instruction does not retire
        if self.events.on_exception:
            self.events.on_exception(
                event=ExceptionEvent(ExceptionKind.UNDEFINED, pc, thumb, mode, self.clock.insn_count)
            )
        self.cpu.enter(ExceptionKind.UNDEFINED, pc + (2 if thumb else 4))
        return True

    def _hypercall(self) -> int:
        """Serve the hypercall the guest is making (:mod:`qppsuite.core.hypercall`); r0's new value."""
        op, buffer, length = (self.engine.reg(reg) for reg in (A.UC_ARM_REG_R0, A.UC_ARM_REG_R1, A.UC_ARM_REG_R2))
        length = min(length, hypercall.MAX_LENGTH)
        source = self.hypercall_source
        if op == hypercall.TO_HOST:
            try:
                data = self.memory.read(buffer, length)
            except GuestMemoryError:
                return -hypercall.EFAULT
            self._progress()
            if self.hypercall_sink is not None:
                self.hypercall_sink(data)
            return length
        if op != hypercall.FROM_HOST or source is None:
            return -hypercall.EINVAL
        try:  # the whole buffer, before any input is taken: a fault loses none
            for page in range(buffer & ~(PAGE_SIZE - 1), buffer + length, PAGE_SIZE):
                self.memory.translate(page, write=True)
        except GuestMemoryError:
            return -hypercall.EFAULT
        data = source(length)
        self.memory.write(buffer, data)
        self._progress()
        if self.on_input is not None:
            self.on_input(self.clock.insn_count, hypercall.PORT, data)
        return len(data)

    # -- devices' outputs ------------------------------------------------------
    def _console(self, data: bytes) -> None:
        self._progress()
        if self._console_sink is not None:
            self._console_sink(data)
        if self.events.on_console:
            self.events.on_console(data=data)
        for byte in data:
            if byte == 0x0A:
                self._end_console_line()
            else:
                self._line.append(byte)

    def _dma_write(self, paddr: int, data: bytes) -> None:
        """A device's write into guest RAM (GuestMemoryError outside it); the quantum ends after the block."""
        self.phys.write(paddr, data)
        if not self._dma_pages and self._running:
            self.engine.stop()
        self._dma_pages.update(range(paddr // PAGE_SIZE, (paddr + len(data) - 1) // PAGE_SIZE + 1))

    def _drop_code_after_dma(self) -> None:
        """Drop the translated code of the pages devices wrote, between quanta.

        The engine invalidates translated code when the guest's own stores hit its page, but not for writes
        from the host, not even through ``uc_mem_write`` (docs/engine.md, "Devices writing RAM"); a disk read
        into a page that held code (the page cache reused) would run the old code.
        """
        runs: list[tuple[int, int]] = []
        for page in sorted(self._dma_pages):
            start = page * PAGE_SIZE
            if runs and runs[-1][1] == start:
                runs[-1] = (runs[-1][0], start + PAGE_SIZE)
            else:
                runs.append((start, start + PAGE_SIZE))
        self._dma_pages.clear()
        self.engine.drop_code_at(runs)
        self.engine.forget_block_counts()  # new code may start where a block of the same length was

    def _channel_out(self, data: bytes) -> None:
        self._progress()
        if self.channel_sink is not None:
            self.channel_sink(data)

    def _end_console_line(self) -> None:
        line = bytes(self._line)
        self._line.clear()
        if PANIC_MARKER in line:
            self.request_stop("panic", line.decode("utf-8", "replace").strip())
        elif self._rootfs_watch is not None:
            why = self._rootfs_watch.line(line)
            if why is not None:
                self.request_stop("initramfs", why)

    def _flush_console_line(self) -> None:
        if PANIC_MARKER in self._line:
            self._end_console_line()

    def _power(self, event: PowerEvent) -> None:
        kind = "poweroff" if event is PowerEvent.OFF else "reset"
        self.request_stop(kind, f"guest requested system {event.value} through PSCI")

    # -- state --------------------------------------------------------------
    # -- snapshots -----------------------------------------------------------
    def snapshot(self, key: dict[str, Any] | None = None) -> Snapshot:
        """The whole machine now, between runs (:meth:`run` has returned): see :mod:`qppsuite.core.snapshot`.

        ``key``: what the snapshot is valid for, kept with it (the caller's: image, boot arguments...).
        """
        if self._running:
            raise GuestError("a snapshot is taken between runs, not inside one")
        self.engine.forget_block_counts()  # as a machine restored from it starts: counts the same from here
        pages, ram = nonzero_pages(self._ram)
        loop = {
            "last_ttbr0": self._last_ttbr0,
            "stuck": self._stuck,
            "last_abort_at": self._last_abort_at,
            "rootfs_watched": self._rootfs_watch is None,
        }
        return Snapshot(
            self.engine.save_context(), len(self._ram), pages, ram, {**self.device_state(), "loop": loop}, key or {}
        )

    def restore(self, snap: Snapshot) -> None:
        """Put the machine in the state ``snap`` holds; the next :meth:`run` goes on from there.

        The machine must have the snapshot's RAM size and no plugin hooks yet; raises SnapshotError (one
        line) for a snapshot that does not fit it.
        """
        if snap.ram_size != len(self._ram):
            raise SnapshotError(
                f"the snapshot is of a machine with {snap.ram_size >> 20} MiB of RAM; this one has "
                f"{len(self._ram) >> 20} MiB"
            )
        disk = self.devices.disk
        if ("disk" in snap.state) != (disk is not None):
            had, has = ("a disk", "none") if disk is None else ("no disk", "one")
            raise SnapshotError(f"the snapshot is of a machine with {had}; this one has {has}")
        try:
            state, loop = snap.state, snap.state["loop"]
            self.engine.restore_context(snap.cpu)
            self.gic.set_state(state["gic"])
            self.timer.set_state(state["timer"])
            self.uart.set_state(state["uart"])
            self.devices.channel.set_state(state["channel"])
            self.psci.set_state(state["psci"])
            self.clock.set_state(state["clock"])
            if disk is not None:
                disk.set_state(state["disk"])
            self._last_ttbr0 = state_int(loop, "run loop", "last_ttbr0")
            self._stuck = state_int(loop, "run loop", "stuck", 63)
            self._last_abort_at = state_field(loop, "run loop", "last_abort_at", int)  # -1: none yet
            watched = state_field(loop, "run loop", "rootfs_watched", bool)
        except (KeyError, TypeError, ValueError, DeviceStateError) as exc:
            raise SnapshotError(f"the snapshot's machine state does not fit this machine: {exc}") from None
        # Zero all RAM at once: the kernel drops the private anonymous mapping's pages (MADV_DONTNEED,
        # mm/madvise.c), which read as zeros again, instead of every byte being written (0.2 s of a 1 s run from
        # the snapshot).
        self._ram.madvise(mmap.MADV_DONTNEED)
        view = memoryview(self._ram)
        for index, number in enumerate(snap.pages):
            view[number * PAGE_SIZE : (number + 1) * PAGE_SIZE] = snap.ram[index * PAGE_SIZE : (index + 1) * PAGE_SIZE]
        if watched:
            self._rootfs_watch = None
        self.gic.drive_output()  # the CPU's IRQ line as the restored GIC drives it
        self._stop = None
        self._progress_insn = self.clock.insn_count

    def device_state(self) -> dict[str, Any]:
        """Every device's explicit state, for snapshots and record/replay."""
        return {
            "gic": self.gic.get_state(),
            "timer": self.timer.get_state(),
            "uart": self.uart.get_state(),
            "channel": self.devices.channel.get_state(),
            "psci": self.psci.get_state(),
            "clock": self.clock.get_state(),
        } | ({} if self.devices.disk is None else {"disk": self.devices.disk.get_state()})
