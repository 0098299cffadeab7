"""Single-step qemu-system-arm and qppsuite in lockstep; report the first instruction where they diverge.

When the differential test (tests/test_qemu_differential.py) shows that the
guest behaves differently under qppsuite than under QEMU, this tool finds the
instruction.  It drives QEMU through its gdbstub (the GDB remote protocol,
spoken here directly over a socket) and qppsuite's machine one instruction at
a time, and compares r0-r15 and CPSR after every instruction.

Two ways to start
-----------------
``entry``: both machines start at the kernel's entry with identical RAM.  The
qppsuite machine is built as ``qppsuite run`` builds it (kernel at
RAM+TEXT_OFFSET, initrd, DTB); those three regions are loaded into QEMU with
``-device loader`` and QEMU's CPU gets qppsuite's registers through gdb.  The
DTB describes qppsuite's board, so once the kernel probes devices (and once
qppsuite's timer interrupts; QEMU's gdb single-step masks interrupts) the two
legitimately part.  Use it for the early kernel and for CPU-only code::

    python tools/lockstep.py entry --steps 200000

``user``: both machines boot normally, each on its own board, with the same
``--cmd`` and ``norandmaps`` (so a process's stack and mappings are at the same
addresses); both run until a process (optionally by ``--comm``) reaches
``--pc`` in user mode, then only that process's user-mode instructions are
stepped and compared.  Whenever it enters the kernel (system call, page fault,
qppsuite's timer interrupt) both machines run freely until the process is
back in user mode, where the comparison resumes.  This is the mode for
"busybox ps crashes only under qppsuite"::

    python tools/lockstep.py user --cmd "/bin/busybox ps" --comm busybox --pc 0x38770 --steps 500000

(the pc: the program's entry point from ``readelf -h``, a symbol, or a crash
report; a busybox shell runs applets inside itself, so name the program with a
slash to make it a process of its own).

What counts as a divergence
---------------------------
Any difference in r0-r15 or CPSR after an instruction, with one exception:
an MRC from a CP15 c0 ID register (MIDR, CTR, CCSIDR...) whose destination
differs is a *note*, not a divergence, and QEMU's register is set to
qppsuite's value: the two emulators model different Cortex-A15 revisions
(QEMU r4p0, Unicorn r2p1).  In user mode, values the kernel hands over
legitimately differ (pids, times, /proc contents, AT_RANDOM stack canaries);
``--max-divergences N`` reports up to N divergences, copying qppsuite's
registers into QEMU after each, so one can read past the benign ones.

The report gives the step, qppsuite's instruction count, the instruction
(disassembled, with its bytes in both machines), the differing registers, the
exceptions either machine took during that step, and the last instructions
before it.  Exit status: 0 no divergence, 1 divergence, 2 the tool could not
run (message on stderr).

Limits: one CPU; registers only (memory is compared for the instruction bytes
at a divergence, not throughout); in ``user`` mode a signal handler runs
unobserved and the comparison resumes when the process returns to where it
was interrupted; QEMU and qppsuite must both be able to boot the image.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import capstone

from qppsuite.core.board import RAM_BASE
from qppsuite.core.cpu import CPSR_IT_MASK, CPSR_MODE_MASK, CPSR_T, MODE_USR, ExceptionEvent, ExceptionKind
from qppsuite.core.machine import Machine
from qppsuite.errors import QppsuiteError
from qppsuite.images.bundle import ImageBundle, open_image
from qppsuite.profiles.profile import KernelProfile
from qppsuite.session import DEFAULT_IMAGE, GUEST_CMD_PATH, RunOptions, build_machine, guest_command_overlay

QEMU = "qemu-system-arm"
REG_NAMES = (*(f"r{i}" for i in range(13)), "sp", "lr", "pc", "cpsr")
#: GDB register numbers in QEMU's arm-core.xml: r0-r15 are 0-15, CPSR is 25.
GDB_REGNUM = (*range(16), 25)
PC, CPSR = 15, 16
VECTORS_HIGH = 0xFFFF0000
#: Start of the kernel's linear map of RAM (CONFIG_PAGE_OFFSET of the armmp kernels); both boards put RAM at RAM_BASE.
PAGE_OFFSET = 0xC0000000
USER_TOP = 0xBFFFFFFF
#: How often one instruction may trap and be re-run (page faults, lazy VFP) before the tool gives up on it.
MAX_RETRIES = 8
#: Exceptions after which the interrupted instruction runs again (it had not retired).
RETRIED = {ExceptionKind.DATA_ABORT, ExceptionKind.PREFETCH_ABORT, ExceptionKind.UNDEFINED, ExceptionKind.IRQ}
#: Preferred return address relative to the exception-mode LR, by vector offset (ARM ARM B1.8.3).
RETURN_FROM_LR = {0x08: 0, 0x0C: -4, 0x10: -8, 0x18: -4}


class LockstepError(QppsuiteError):
    """The tool cannot set up or drive one of the two machines."""


class MachineStopped(LockstepError):
    """The qppsuite machine ended its run (power-off, panic...) while the tool drove it."""


# --- the GDB remote protocol ---------------------------------------------------------------------


class GdbRemote:
    """A minimal GDB remote-protocol client: registers, memory, step, continue, breakpoints."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        # QEMU accepts 'P' (write one register) only once the client has read the target description.
        self.command("qSupported:xmlRegisters=arm")
        self.command("qXfer:features:read:target.xml:0,ffb")

    def _send(self, data: str) -> None:
        self.sock.sendall(b"$%s#%02x" % (data.encode(), sum(data.encode()) & 0xFF))

    def _packet(self, timeout: float | None) -> str:
        self.sock.settimeout(timeout)
        while True:
            start = self._buf.find(b"$")
            end = self._buf.find(b"#", start)
            if start >= 0 and end >= 0 and len(self._buf) >= end + 3:
                body = self._buf[start + 1 : end]
                self._buf = self._buf[end + 3 :]
                self.sock.sendall(b"+")
                return body.decode()
            chunk = self.sock.recv(65536)
            if not chunk:
                raise LockstepError("qemu closed the gdb connection")
            self._buf += chunk

    def command(self, data: str, timeout: float | None = 30.0) -> str:
        self._send(data)
        reply = self._packet(timeout)
        if reply.startswith("E") and len(reply) == 3:
            raise LockstepError(f"qemu's gdbstub refused '{data[:40]}': {reply}")
        return reply

    def registers(self) -> list[int]:
        raw = bytes.fromhex(self.command("g"))
        return list(struct.unpack_from("<17I", raw))

    def write_register(self, index: int, value: int) -> None:
        self.command(f"P{GDB_REGNUM[index]:x}={struct.pack('<I', value & 0xFFFFFFFF).hex()}")

    def read_memory(self, addr: int, size: int) -> bytes:
        return bytes.fromhex(self.command(f"m{addr:x},{size:x}"))

    def monitor(self, command: str) -> str:
        """Run a QEMU monitor command through the stub (``qRcmd``) and return its output."""
        self._send("qRcmd," + command.encode().hex())
        out = []
        while (reply := self._packet(30.0)) != "OK":
            if not reply.startswith("O") or reply.startswith("E"):
                raise LockstepError(f"qemu monitor command '{command}' failed: {reply}")
            out.append(bytes.fromhex(reply[1:]).decode(errors="replace"))
        return "".join(out)

    def read_physical(self, paddr: int, size: int) -> bytes:
        """Physical memory through the monitor's ``xp``: the stub's own reads translate with the
        CPU's current privilege, so from user mode they cannot reach kernel data, and QEMU 7.2's
        stub has no physical-memory mode."""
        words = (size + 3) // 4
        values = []
        for line in self.monitor(f"xp /{words}wx {paddr:#x}").splitlines():
            if ":" in line:
                values += [int(v, 16) for v in line.split(":", 1)[1].split()]
        if len(values) != words:
            raise LockstepError(f"qemu monitor could not read {size} bytes at physical {paddr:#x}")
        return struct.pack(f"<{words}I", *values)[:size]

    def read_kernel_memory(self, vaddr: int, size: int) -> bytes:
        """Kernel lowmem (the linear map) by virtual address, from any CPU mode."""
        return self.read_physical(vaddr - PAGE_OFFSET + RAM_BASE, size)

    def step(self) -> None:
        self.command("s")

    def set_breakpoint(self, addr: int) -> None:
        self.command(f"Z0,{addr:x},4")

    def remove_breakpoint(self, addr: int) -> None:
        self.command(f"z0,{addr:x},4")

    def cont(self, timeout: float) -> bool:
        """Continue until the next stop; False (and the CPU stopped again) when ``timeout`` passes first."""
        self._send("c")
        try:
            self._packet(timeout)
            return True
        except TimeoutError:
            self.sock.sendall(b"\x03")
            self._packet(30.0)
            return False


# --- the two machines ------------------------------------------------------------------------------


@dataclass
class Region:
    """A piece of guest physical memory to give QEMU as-is."""

    name: str
    addr: int
    data: bytes


class QemuSide:
    """qemu-system-arm stopped under its gdbstub (``-S``), on a Unix socket private to this run."""

    def __init__(self, args: list[str], workdir: Path) -> None:
        qemu = shutil.which(QEMU)
        if qemu is None:
            raise LockstepError(f"{QEMU} is not installed (apt-get install qemu-system-arm)")
        sock_path = workdir / "gdb.sock"
        self.serial_log = workdir / "qemu-serial.log"
        command = [
            qemu, "-M", "virt", "-cpu", "cortex-a15", "-nographic", "-no-reboot", "-nic", "none",
            "-monitor", "none", "-serial", f"file:{self.serial_log}", "-S",
            "-gdb", f"unix:{sock_path},server=on,wait=off", *args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(sock_path))
                break
            except OSError:
                sock.close()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
                    raise LockstepError(f"{QEMU} did not open its gdbstub: {err or 'timeout'}") from None
                time.sleep(0.05)
        self.gdb = GdbRemote(sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.gdb.sock.close()
        self.proc.kill()
        self.proc.wait()


class QppsuiteSide:
    """The qppsuite machine, advanced one quantum at a time by this tool instead of ``Machine.run``.

    It relies on two private pieces of :class:`~qppsuite.core.machine.Machine`,
    kept here in one place: ``_quantum()`` (one pass of the run loop: deliver a
    pending IRQ, run up to ``config.quantum`` instructions, take an abort,
    update the timer) and ``_stop`` (cleared after a stop this tool requested,
    so the machine can go on).  ``config.quantum = 1`` makes a quantum one
    instruction, which is what the engine's ``count=1`` gives.
    """

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.exceptions: list[ExceptionEvent] = []
        machine.events.on_exception = lambda event: self.exceptions.append(event)
        self._normal_quantum = machine.config.quantum
        # Single-stepping is slow in wall time and the tool bounds its own runs, so no hang detection.
        machine.config.hang_seconds = float("inf")
        machine.config.hang_insns = 1 << 62

    def registers(self) -> list[int]:
        cpu = self.machine.cpu
        return [cpu.read(name) for name in REG_NAMES[:16]] + [cpu.cpsr]

    def step(self) -> list[ExceptionEvent]:
        """One pass of the run loop with a one-instruction quantum; the exceptions it took."""
        self.exceptions.clear()
        self.machine.config.quantum = 1
        self._quantum()
        return list(self.exceptions)

    def _quantum(self) -> None:
        machine = self.machine
        machine._quantum()
        stop = machine._stop
        if stop is not None and stop.kind != "lockstep":
            raise MachineStopped(f"qppsuite stopped: {stop.message}")
        machine._stop = None

    def run_until(self, begin: int, end: int, accept: Callable[[int], bool], max_insns: int) -> bool:
        """Run at full speed until an instruction in ``[begin, end]`` with ``accept(pc)`` is about to execute.

        False when ``max_insns`` pass first.  The instruction is not executed
        (the code hook stops the engine before it).
        """
        machine = self.machine
        machine.config.quantum = self._normal_quantum
        hit: list[int] = []

        def on_code(addr: int, _size: int) -> None:
            if not hit and accept(addr):
                hit.append(addr)
                machine.request_stop("lockstep", f"reached {addr:#x}")

        handle = machine.engine.hook_code(on_code, begin, end)
        machine.uc.ctl_flush_tb()  # code translated earlier has no hook call
        try:
            limit = machine.insn_count + max_insns
            while not hit and machine.insn_count < limit:
                self._quantum()
        finally:
            machine.engine.hook_del(handle)
            machine.uc.ctl_flush_tb()
            machine.config.quantum = self._normal_quantum
        return bool(hit)


# --- comparison ------------------------------------------------------------------------------------


def is_id_register_read(insn: int, thumb: bool) -> int | None:
    """Rt of ``MRC p15, <opc1>, Rt, c0, ...`` (an ID register read), else None."""
    arm_mrc = insn & 0x0F100F10 == 0x0E100F10 and insn >> 28 != 0xF
    match = insn & 0xFF100F10 == 0xEE100F10 if thumb else arm_mrc
    if match and (insn >> 16) & 0xF == 0:
        return (insn >> 12) & 0xF
    return None


@dataclass
class StepRecord:
    """One compared instruction, for the history shown before a divergence."""

    step: int
    pc: int
    thumb: bool
    raw: bytes
    text: str


@dataclass
class Divergence:
    step: int
    insn_count: int
    record: StepRecord
    qemu_bytes: bytes
    qpp: list[int]
    qemu: list[int]
    exceptions: list[str]
    history: list[StepRecord]
    note: str = ""

    @property
    def differing(self) -> list[str]:
        return [REG_NAMES[i] for i in range(17) if self.qpp[i] != self.qemu[i]]

    def format(self) -> str:
        lines = [
            f"DIVERGENCE at step {self.step} (qppsuite instruction {self.insn_count:,}) after "
            f"{self.record.pc:#010x}: {self.record.text}",
            f"  instruction bytes: qppsuite {self.record.raw.hex()}  qemu {self.qemu_bytes.hex()}",
        ]
        if self.note:
            lines.append(f"  {self.note}")
        if self.exceptions:
            lines.append(f"  exceptions during the step: {', '.join(self.exceptions)}")
        for name in self.differing:
            i = REG_NAMES.index(name)
            lines.append(f"  {name:>4}: qppsuite {self.qpp[i]:#010x}  qemu {self.qemu[i]:#010x}")
        lines.append("  last instructions:")
        lines.extend(f"    {r.step:>8}  {r.pc:#010x}  {r.text}" for r in self.history)
        return "\n".join(lines)


@dataclass
class Report:
    steps: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ended: str = ""

    def format(self) -> str:
        out = [*self.notes, *(d.format() for d in self.divergences)]
        verdict = f"{len(self.divergences)} divergence(s)" if self.divergences else "no divergence"
        out.append(f"{self.steps} steps compared, {verdict}" + (f"; {self.ended}" if self.ended else ""))
        return "\n".join(out)


class Lockstep:
    """The comparison loop shared by both start modes."""

    def __init__(self, qpp: QppsuiteSide, qemu: QemuSide, max_divergences: int, trace: bool) -> None:
        self.qpp = qpp
        self.qemu = qemu
        self.max_divergences = max_divergences
        self.trace = trace
        self.report = Report()
        self.history: deque[StepRecord] = deque(maxlen=12)
        self.disasm = {
            False: capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_ARM),
            True: capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB),
        }

    def current_instruction(self, step: int) -> tuple[StepRecord, int]:
        cpu = self.qpp.machine.cpu
        pc, thumb = cpu.pc, cpu.thumb
        try:
            raw = self.qpp.machine.memory.read(pc, 4)
        except QppsuiteError:
            raw = b""
        text = "<unreadable>"
        for insn in self.disasm[thumb].disasm(raw, pc, 1):
            raw = raw[: insn.size]
            text = f"{insn.mnemonic} {insn.op_str}".strip()
        word = int.from_bytes(raw, "little")
        if thumb and len(raw) == 4:  # a 32-bit Thumb instruction: first halfword is the high one
            word = int.from_bytes(raw[:2], "little") << 16 | int.from_bytes(raw[2:], "little")
        return StepRecord(step, pc, thumb, raw, text), word

    def compare(
        self, step: int, record: StepRecord, word: int, exceptions: list[str], qemu_regs: list[int] | None = None
    ) -> bool:
        """Compare after ``record`` executed; True when the run may go on."""
        qpp, qemu = self.qpp.registers(), qemu_regs or self.qemu.gdb.registers()
        qpp[PC] &= ~1
        qemu[PC] &= ~1
        if qpp != qemu:
            rt = is_id_register_read(word, record.thumb)
            differing = [i for i in range(17) if qpp[i] != qemu[i]]
            if rt is not None and differing == [rt]:
                self.report.notes.append(
                    f"note: step {step} {record.pc:#010x} {record.text}: ID register differs "
                    f"(qppsuite {qpp[rt]:#x}, qemu {qemu[rt]:#x}; different Cortex-A15 revisions); qemu set to ours"
                )
                self.qemu.gdb.write_register(rt, qpp[rt])
            else:
                try:
                    qemu_bytes = self.qemu.gdb.read_memory(record.pc, max(len(record.raw), 2))
                except LockstepError:
                    qemu_bytes = b""
                self.report.divergences.append(
                    Divergence(
                        step, self.qpp.machine.insn_count, record, qemu_bytes, qpp, qemu, exceptions,
                        list(self.history),
                    )
                )  # fmt: skip
                if len(self.report.divergences) >= self.max_divergences:
                    return False
                for i in differing:
                    self.qemu.gdb.write_register(i, qpp[i])
        self.history.append(record)
        if self.trace:
            print(f"{step:>8}  {record.pc:#010x}  {record.text}")
        return True


def qemu_return_pc(regs: list[int], thumb_before: bool) -> int | None:
    """Where QEMU's CPU returns after the exception it just entered (from its vector and the new mode's LR)."""
    vector = regs[PC] - VECTORS_HIGH
    if vector == 0x04:  # undefined: LR is the next instruction
        return regs[14] - (2 if thumb_before else 4)
    offset = RETURN_FROM_LR.get(vector)
    return None if offset is None else (regs[14] + offset) & 0xFFFFFFFF


# --- mode: kernel entry ----------------------------------------------------------------------------


def boot_regions(machine: Machine) -> list[Region]:
    """What qppsuite's boot loader put in RAM: kernel, initrd, DTB (exact bytes, from the machine's RAM)."""
    layout = machine.layout
    phys = machine.phys
    dtb_size = int.from_bytes(phys.read(layout.dtb + 4, 4), "big")  # FDT header: totalsize
    regions = [Region("kernel", layout.kernel, phys.read(layout.kernel, len(machine.config.kernel.data)))]
    if layout.initrd_size:
        regions.append(Region("initrd", layout.initrd, phys.read(layout.initrd, layout.initrd_size)))
    regions.append(Region("dtb", layout.dtb, phys.read(layout.dtb, dtb_size)))
    return regions


@contextlib.contextmanager
def entry_machines(image: ImageBundle, ram_mib: int) -> Iterator[tuple[QppsuiteSide, QemuSide]]:
    machine = build_machine(RunOptions(image=image.path, ram_mib=ram_mib), image, None)
    with tempfile.TemporaryDirectory(prefix="lockstep-") as tmp:
        workdir = Path(tmp)
        loaders = []
        for region in boot_regions(machine):
            path = workdir / f"{region.name}.bin"
            path.write_bytes(region.data)
            loaders += ["-device", f"loader,file={path},addr={region.addr:#x},force-raw=on"]
        qemu = QemuSide(["-m", str(ram_mib), *loaders], workdir)
        try:
            qpp = QppsuiteSide(machine)
            for i, value in enumerate(qpp.registers()):
                qemu.gdb.write_register(i, value)
            yield qpp, qemu
        finally:
            qemu.close()


def lockstep_from_entry(
    image: ImageBundle, steps: int, *, ram_mib: int = 256, max_divergences: int = 1, trace: bool = False
) -> Report:
    """Compare ``steps`` instructions from the kernel's first one."""
    with entry_machines(image, ram_mib) as (qpp, qemu):
        return compare_steps(qpp, qemu, steps, max_divergences=max_divergences, trace=trace)


def compare_steps(
    qpp: QppsuiteSide, qemu: QemuSide, steps: int, *, max_divergences: int = 1, trace: bool = False
) -> Report:
    """Step both machines from where they are now, in any mode, comparing after every instruction."""
    loop = Lockstep(qpp, qemu, max_divergences, trace)
    for step in range(1, steps + 1):
        record, word = loop.current_instruction(step)
        before = qpp.machine.insn_count
        taken = qpp.step()
        # A step can retire more than one instruction (an IT block: docs/engine.md, "Time"); a fault retires none.
        for _ in range(1 if taken else max(1, qpp.machine.insn_count - before)):
            qemu.gdb.step()
        regs = qemu.gdb.registers()
        # No step stops inside an IT block: if qemu is still in one, step it out of the block too.
        for _ in range(4):
            if not regs[CPSR] & CPSR_IT_MASK or qpp.machine.cpu.cpsr & CPSR_IT_MASK:
                break
            qemu.gdb.step()
            regs = qemu.gdb.registers()
        loop.report.steps = step
        if any(e.kind is ExceptionKind.IRQ for e in taken):
            loop.report.ended = f"qppsuite took an IRQ at step {step}; qemu's gdb single-step masks interrupts"
            break
        if not loop.compare(step, record, word, [e.kind.name for e in taken], regs):
            break
    return loop.report


# --- mode: one process in user mode ---------------------------------------------------------------


class CurrentTask:
    """Reads the current task_struct and its comm in user mode, from either machine's memory.

    In user mode TPIDRURO holds the user's TLS, so ``current`` comes from the
    per-cpu ``__entry_task`` (kept up to date by ``__switch_to``).
    """

    def __init__(self, profile: KernelProfile) -> None:
        self.entry_task = profile.symbol("__entry_task")
        self.per_cpu_offset = profile.symbol("__per_cpu_offset")
        self.comm_offset = profile.offset("task_struct", "comm")

    def task(self, read: Callable[[int, int], bytes]) -> int:
        offset = int.from_bytes(read(self.per_cpu_offset, 4), "little")
        return int.from_bytes(read((self.entry_task + offset) & 0xFFFFFFFF, 4), "little")

    def comm(self, read: Callable[[int, int], bytes], task: int) -> str:
        return read(task + self.comm_offset, 16).split(b"\0")[0].decode(errors="replace")


def lockstep_user(
    image: ImageBundle,
    cmd: str,
    pc: int,
    steps: int,
    *,
    comm: str | None = None,
    ram_mib: int = 256,
    max_divergences: int = 1,
    trace: bool = False,
    boot_insns: int = 3_000_000_000,
    kernel_insns: int = 500_000_000,
) -> Report:
    """Compare ``steps`` user-mode instructions of the process that first reaches ``pc`` (named ``comm``)."""
    if image.profile_path is None:
        raise LockstepError(f"image '{image.name}' has no kernel profile, needed to follow one process")
    current = CurrentTask(KernelProfile.load(image.profile_path))
    options = RunOptions(image=image.path, cmd=cmd, ram_mib=ram_mib, extra_bootargs="norandmaps")
    machine = build_machine(options, image, None)
    qpp = QppsuiteSide(machine)
    mem = machine.memory

    def qpp_read(addr: int, size: int) -> bytes:
        return mem.read(addr, size)

    def is_target_start(_addr: int) -> bool:
        return machine.cpu.mode == "usr" and (comm is None or current.comm(qpp_read, current.task(qpp_read)) == comm)

    if not qpp.run_until(pc, pc, is_target_start, boot_insns):
        raise LockstepError(f"qppsuite: no process{f' {comm!r}' if comm else ''} reached {pc:#x} in user mode")
    qpp_task = current.task(qpp_read)
    qpp_ttbr0 = machine.cpu.ttbr0.read()

    assert image.initrd_path is not None
    with tempfile.TemporaryDirectory(prefix="lockstep-") as tmp:
        workdir = Path(tmp)
        initrd = workdir / "initrd-with-cmd.cpio.gz"
        initrd.write_bytes(image.initrd_path.read_bytes() + guest_command_overlay(GUEST_CMD_PATH, cmd))
        bootargs = f"{image.bootargs} norandmaps"
        args = ["-m", str(ram_mib), "-kernel", str(image.kernel_path), "-initrd", str(initrd), "-append", bootargs]
        qemu = QemuSide(args, workdir)
        gdb = qemu.gdb
        try:

            def qemu_task_is(task: int | None) -> bool:
                regs = gdb.registers()
                if regs[CPSR] & CPSR_MODE_MASK != MODE_USR:
                    return False
                now = current.task(gdb.read_kernel_memory)
                if task is not None:
                    return now == task
                return comm is None or current.comm(gdb.read_kernel_memory, now) == comm

            def qemu_run_to(addr: int, task: int | None, seconds: float = 120.0) -> bool:
                gdb.set_breakpoint(addr)
                try:
                    deadline = time.monotonic() + seconds
                    while time.monotonic() < deadline:
                        if not gdb.cont(deadline - time.monotonic()):
                            return False
                        if gdb.registers()[PC] & ~1 == addr and qemu_task_is(task):
                            return True
                        gdb.remove_breakpoint(addr)  # step off it in the other process, then re-arm
                        gdb.step()
                        gdb.set_breakpoint(addr)
                    return False
                finally:
                    gdb.remove_breakpoint(addr)

            if not qemu_run_to(pc, None):
                raise LockstepError(f"qemu: no process{f' {comm!r}' if comm else ''} reached {pc:#x} in user mode")
            qemu_task = current.task(gdb.read_kernel_memory)
            loop = Lockstep(qpp, qemu, max_divergences, trace)
            loop.report.notes.append(
                f"synchronised at {pc:#x} (qppsuite instruction {machine.insn_count:,}, "
                f"task {qpp_task:#x} / qemu task {qemu_task:#x})"
            )

            def in_target(_addr: int) -> bool:
                return machine.cpu.ttbr0.read() == qpp_ttbr0 and current.task(qpp_read) == qpp_task

            def qpp_complete(record: StepRecord) -> tuple[list[str], int | None, ExceptionKind | None] | None:
                """Run the instruction at ``record`` in qppsuite until it has retired.

                Returns (exceptions, user pc after a kernel round trip, last
                exception), or None when the process did not come back to user mode.
                """
                names: list[str] = []
                back_at, last = None, None
                for _ in range(MAX_RETRIES):
                    taken = qpp.step()
                    names += [e.kind.name for e in taken]
                    if machine.cpu.mode == "usr":
                        return names, back_at, last
                    try:
                        if not qpp.run_until(0, USER_TOP, in_target, kernel_insns):
                            return None
                    except MachineStopped:
                        return None
                    back_at, last = machine.cpu.pc, taken[-1].kind if taken else None
                    # An abort, an undefined-instruction trap (lazy VFP) or an IRQ taken first: run it again.
                    if back_at != record.pc or last not in RETRIED:
                        return names, back_at, last
                return names, back_at, last

            def qemu_complete(qpp_back_at: int | None, qpp_last: ExceptionKind | None) -> list[str] | None:
                """Step qemu over one instruction (or IT block), following it through the kernel when it traps."""
                names: list[str] = []
                for _ in range(MAX_RETRIES + 4):  # an IT block holds up to 4 instructions
                    before = gdb.registers()
                    pc_before, thumb_before = before[PC] & ~1, bool(before[CPSR] & CPSR_T)
                    gdb.step()
                    regs = gdb.registers()
                    if regs[CPSR] & CPSR_MODE_MASK == MODE_USR:
                        if regs == before:
                            continue  # the stub reported a stop without executing (seen right after a breakpoint)
                        if regs[CPSR] & CPSR_IT_MASK:
                            continue  # qppsuite ran this IT block in one step (docs/engine.md, "Time")
                        break
                    vector = regs[PC] - VECTORS_HIGH
                    names.append(f"qemu vector {vector:#x}")
                    target: int | None
                    if vector == 0x08 and qpp_last is ExceptionKind.SVC and qpp_back_at is not None:
                        target = qpp_back_at  # the kernel may not return after the SVC (execve, signals)
                    else:
                        target = qemu_return_pc(regs, thumb_before)
                    if target is None or not qemu_run_to(target, qemu_task):
                        return None
                    if target != pc_before or vector == 0x08:
                        break
                return names

            record, word = loop.current_instruction(0)
            if not loop.compare(0, record, word, []):
                return loop.report
            for step in range(1, steps + 1):
                record, word = loop.current_instruction(step)
                done = qpp_complete(record)
                loop.report.steps = step
                if done is None:
                    loop.report.ended = "the process left user mode for good in qppsuite (exit, or --kernel-insns)"
                    break
                names, back_at, last = done
                qemu_names = qemu_complete(back_at, last)
                if qemu_names is None:
                    loop.report.ended = "qemu did not bring the process back to user mode where qppsuite did"
                    break
                if not loop.compare(step, record, word, names + qemu_names):
                    break
            return loop.report
        finally:
            qemu.close()


# --- command line ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--image", default=DEFAULT_IMAGE, help="image name or path (default: %(default)s)")
    common.add_argument("--ram", type=int, default=256, help="guest RAM in MiB (default: %(default)s)")
    common.add_argument("--steps", type=int, default=10_000, help="instructions to compare (default: %(default)s)")
    common.add_argument("--max-divergences", type=int, default=1, help="report up to N, resyncing qemu after each")
    common.add_argument("--trace", action="store_true", help="print every compared instruction")
    parser = argparse.ArgumentParser(prog="lockstep.py", description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    modes.add_parser("entry", parents=[common], help="from the kernel's first instruction, with identical RAM")
    user = modes.add_parser("user", parents=[common], help="one process's user-mode instructions, from a pc")
    user.add_argument("--cmd", required=True, help="guest command, as for 'qppsuite run --cmd'")
    user.add_argument("--pc", required=True, type=lambda s: int(s, 0), help="user-mode address to start at")
    user.add_argument("--comm", help="only the process with this name (task comm)")
    args = parser.parse_args(argv)
    try:
        image = open_image(args.image)
        if args.mode == "entry":
            report = lockstep_from_entry(
                image, args.steps, ram_mib=args.ram, max_divergences=args.max_divergences, trace=args.trace
            )
        else:
            report = lockstep_user(
                image, args.cmd, args.pc, args.steps, comm=args.comm, ram_mib=args.ram,
                max_divergences=args.max_divergences, trace=args.trace,
            )  # fmt: skip
    except QppsuiteError as exc:
        print(f"lockstep: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    return 1 if report.divergences else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
