"""The ``syscalls`` plugin: every system call the guest makes, typed, and its return.

It listens to the core's ``on_svc`` (user mode, before the exception entry, ARM
or Thumb), names the call from r7 with the ARM EABI table, and runs
``on_syscall(ctx)``; when user mode resumes at the instruction after the SVC in
the same address space and thread it runs ``on_syscall_return(ctx, retval)``.
``on_sys_<name>`` / ``on_sys_<name>_return`` exist for every call in the table,
as PANDA's syscalls2 users expect.  Calls that never return are reported once
through ``on_syscall_noreturn(ctx)`` with ``ctx.ending`` saying why.

Nothing is read or built for a call unless a callback for it has a listener:
with nothing registered the cost is one SVC event and a few truth tests, and
no return hook is installed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, ClassVar

from qppsuite.core.events import SvcEvent
from qppsuite.core.guest import GuestMemoryError
from qppsuite.core.qpp import Arg, Callback, CallbackSpec, Plugin, export
from qppsuite.plugins.syscalls.arm_linux_abi import SIGNAL_NAMES
from qppsuite.plugins.syscalls.context import AddressSpace, Limits, SyscallContext
from qppsuite.plugins.syscalls.pairing import ReturnPairing
from qppsuite.plugins.syscalls.table import SYSCALLS, SyscallSpec
from qppsuite.plugins.syscalls.values import signed32

SIGRETURN_R0_OFFSET = {"sigreturn": 32, "rt_sigreturn": 128 + 32}
"""Where sigreturn finds the r0 it restores, from the user sp at the call (arch/arm/kernel/signal.c:
``struct sigframe`` starts with its ucontext: uc_flags, uc_link, a 12-byte stack_t, then the
sigcontext's trap_no, error_code, oldmask and arm_r0; ``struct rt_sigframe`` puts a 128-byte siginfo first)."""

RETURN_HOOK_CACHE = 256
"""Return pcs with no waiting call whose hooks are kept (the most recently used): more than the syscall
wrappers of a real program (perl and python3 runs use under 100), few enough to bound the engine's scan."""

TTBR0_ATTRIBUTES = 0x3FFF
"""TTBR0 below the translation table's base (TTBCR.N = 0, as Linux's 2-level tables use): walk attributes."""

THREAD_SIZE = 8192
"""Kernel stack size of a 32-bit ARM Linux thread: masking SVC-mode sp with it gives the thread's stack base."""

_MODE_MASK = 0x1F
_MODE_USR = 0x10
_MODE_SVC = 0x13
_CALL_REGS = (*(f"r{i}" for i in range(8)), "sp", "cpsr", "ttbr0")
"""What a call and a return read, in one engine call: r0-r7, sp, cpsr, ttbr0."""

GENERIC_CALLBACKS = (
    CallbackSpec("on_syscall", "a system call is made (arguments decoded on demand)", ctx=SyscallContext),
    CallbackSpec(
        "on_syscall_return",
        "a system call returned to its caller; retval is r0 as a signed 32-bit value",
        ctx=SyscallContext,
        retval=int,
    ),
    CallbackSpec(
        "on_syscall_noreturn", "a system call that will never return to its caller (ctx.ending says why)",
        ctx=SyscallContext,
    ),
)
PER_CALL_CALLBACKS = tuple(
    spec
    for call in SYSCALLS.values()
    for spec in (
        CallbackSpec(f"on_sys_{call.name}", f"{call.name} is made", ctx=SyscallContext),
        CallbackSpec(f"on_sys_{call.name}_return", f"{call.name} returned", ctx=SyscallContext, retval=int),
    )
)


class Syscalls(Plugin):
    """Typed ARM EABI system calls with return pairing: on_syscall, on_syscall_return, on_sys_<name>"""

    name = "syscalls"
    requires = ("core",)
    callbacks: ClassVar[tuple[CallbackSpec, ...]] = GENERIC_CALLBACKS + PER_CALL_CALLBACKS
    args: ClassVar[Any] = {
        "string_limit": Arg(int, 256, help="bytes of a C string argument to read"),
        "buf_limit": Arg(int, 64, help="bytes of a buffer argument to read"),
        "array_limit": Arg(int, 32, help="entries of an argv or iovec array to read"),
    }

    def load(self) -> None:
        if min(self.args.string_limit, self.args.buf_limit, self.args.array_limit) < 0:
            raise ValueError("string_limit, buf_limit and array_limit must not be negative")
        self.limits = Limits(self.args.string_limit, self.args.buf_limit, self.args.array_limit)
        self.pairing = ReturnPairing()
        self.on_syscall = self.callback("on_syscall")
        self.on_syscall_return = self.callback("on_syscall_return")
        self.on_syscall_noreturn = self.callback("on_syscall_noreturn")
        #: number -> (spec, on_sys_<name>, on_sys_<name>_return): one dict lookup per call.
        self._per_call: dict[int, tuple[SyscallSpec, Callback, Callback]] = {
            number: (spec, self.callback(f"on_sys_{spec.name}"), self.callback(f"on_sys_{spec.name}_return"))
            for number, spec in SYSCALLS.items()
        }
        #: Return pc -> its entry hook, least recently used first (see _watch_return).
        self._return_hooks: OrderedDict[int, int] = OrderedDict()
        self.calls_seen = 0
        machine = self.machine
        if machine is not None:
            self._registers = machine.registers
            self._number = machine.registers.reader("r7")
            self._memory = machine.memory
            self._regs = machine.registers.reader(*_CALL_REGS)
        self.qpp.register("core", "on_svc", self._svc, owner=self.name)

    # -- the hot path ----------------------------------------------------------
    def _svc(self, event: SvcEvent) -> None:
        self.calls_seen += 1
        generic = bool(self.on_syscall or self.on_syscall_return or self.on_syscall_noreturn)
        # With a generic listener every call is built: r7 comes with the other registers, in one engine call.
        regs = self._regs() if generic else None
        number = regs[7] if regs is not None else self._number()[0]
        entry = self._per_call.get(number)
        if entry is None:
            spec, on_sys, on_sys_return = None, None, None
        else:
            spec, on_sys, on_sys_return = entry
        if regs is None:
            if not (on_sys or on_sys_return):
                return
            regs = self._regs()
        ctx = SyscallContext(
            seq=self.pairing.next_seq(),
            insn_count=event.insn_count,
            pc=event.pc,
            thumb=event.thumb,
            number=number,
            name=spec.name if spec is not None else f"syscall_{number:#x}",
            spec=spec,
            raw_args=tuple(regs[:7]),
            asid=regs[10],
            thread=self._kernel_stack(regs[9], regs[8]),
            user_sp=regs[8],
            memory=self._memory,
            limits=self.limits,
        )
        ended = self.pairing.call(ctx)
        for old in ended:
            self._noreturn(old)
        if self.on_syscall:
            self.on_syscall(ctx=ctx)
        if on_sys:
            on_sys(ctx=ctx)
        if ctx.noreturn:
            offset = SIGRETURN_R0_OFFSET.get(ctx.name)
            if offset is not None:
                restored = self._read_u32(ctx.user_sp + offset)
                ctx.retval = None if restored is None else signed32(restored)
            self._noreturn(ctx)
        else:
            self._watch_return(ctx.return_pc)

    def _watch_return(self, pc: int) -> None:
        """A hook on the return pc: kept while calls wait there, and for the RETURN_HOOK_CACHE latest others.

        An entry hook suffices: the SVC ends its translated block, so user mode
        always resumes at the return pc as a block start, and an entry hook costs
        a native table probe per block however many exist (docs/engine.md,
        "Hooks").  Their number must still not grow with what the guest does (a
        guest calling from 40,000 addresses would keep 40,000), so hooks on pcs
        where no call waits are dropped, least recently used first, beyond
        RETURN_HOOK_CACHE; a program's few syscall wrappers stay hooked for good.
        """
        hooks = self._return_hooks
        if pc in hooks:
            hooks.move_to_end(pc)
            return
        hooks[pc] = self.machine.hooks.at_entry(pc, self._return_hook)
        waiting = self.pairing.waiting
        for _ in range(len(hooks) - RETURN_HOOK_CACHE):
            oldest, handle = next(iter(hooks.items()))
            if waiting.get(oldest):
                hooks.move_to_end(oldest)  # a call still waits there: keep it, look at the next
                continue
            del hooks[oldest]
            self.machine.hooks.remove(handle)

    @property
    def return_hook_count(self) -> int:
        """Return hooks installed now: at most RETURN_HOOK_CACHE plus one per return pc a call waits at."""
        return len(self._return_hooks)

    def _return_hook(self, pc: int) -> None:
        if not self.pairing.waiting.get(pc):
            return
        regs = self._regs()
        cpsr = regs[9]
        if cpsr & _MODE_MASK != _MODE_USR:
            return
        matched = self.pairing.returned(
            pc, regs[10], self._kernel_stack(cpsr, regs[8]), regs[0], regs[8], self._read_u32
        )
        if matched is None:
            return
        for old in matched.ended:
            self._noreturn(old)
        self._returned(matched.ctx, matched.retval)

    def _kernel_stack(self, cpsr: int, sp: int) -> int:
        """The base of the current thread's kernel stack: SVC mode's banked sp, masked (``sp``: the current mode's,
        ``cpsr`` the CPSR, both already read)."""
        if cpsr & _MODE_MASK == _MODE_SVC:
            return sp & ~(THREAD_SIZE - 1)
        return self._registers.banked("sp", "svc") & ~(THREAD_SIZE - 1)

    def _read_u32(self, address: int) -> int | None:
        try:
            return int(self._memory.read_u32(address))
        except GuestMemoryError:
            return None

    def _returned(self, ctx: SyscallContext, retval: int) -> None:
        ctx.reread_unreadable()
        if self.on_syscall_return:
            self.on_syscall_return(ctx=ctx, retval=retval)
        entry = self._per_call.get(ctx.number)
        if entry is not None and entry[2]:
            entry[2](ctx=ctx, retval=retval)

    def _noreturn(self, ctx: SyscallContext) -> None:
        if self.on_syscall_noreturn:
            self.on_syscall_noreturn(ctx=ctx)

    # -- with osi_linux: calls blocked at the start, threads that die ----------------
    def start(self) -> None:
        """With osi_linux loaded, take up the calls the guest is blocked in, and learn of each thread's death.

        syscalls needs only the core; osi_linux, when present, is what can read
        the kernel's tasks.  Plugins may start in a guest that is already running
        (a restored snapshot, the channel's ready point), where every user thread
        sits in a system call made before anyone listened: each is reported now,
        as if just made (:meth:`_found_blocked`), so its return pairs with it.  A
        thread's death (osi_linux's ``on_thread_exit``) ends its blocked calls as
        ``killed``.  Without osi_linux, the returns of calls made before the start
        are not reported, and a dead thread's calls end ``lost`` at its next call
        or ``pending`` when the run ends.
        """
        if "osi_linux" in self.qpp.loaded:
            self._found_blocked()
            self.qpp.register("osi_linux", "on_thread_exit", self._thread_exit, owner=self.name)

    def _found_blocked(self) -> None:
        """Report the call each user thread is inside, read by osi_linux from its kernel stack, as a call made now.

        ``ctx.task`` names the thread (``found_blocked``); the arguments are decoded in the thread's own
        address space.  The context is the one the thread's return will pair with: ``asid`` is what TTBR0
        will hold then, the process's page-table base with the attribute bits Linux sets in every
        process's TTBR0 (``TTB_FLAGS_*``, arch/arm/mm/proc-v7-2level.S ``cpu_v7_switch_mm``), taken from
        TTBR0 now; ``thread`` is the thread's kernel stack.  Runs once, before the guest does.
        """
        get_syscall = self.qpp.import_function("osi_linux", "get_syscall")
        get_threads = self.qpp.import_function("osi_linux", "get_threads")
        attributes = self.machine.registers.read("ttbr0") & TTBR0_ATTRIBUTES
        for process in self.qpp.import_function("osi_linux", "get_processes")():
            if process.is_kernel_thread or process.asid is None:
                continue
            memory = AddressSpace(self._memory, process.asid)
            for thread in get_threads(process):
                call = get_syscall(thread)
                if call is None:
                    continue
                entry = self._per_call.get(call.number)
                spec = entry[0] if entry is not None else None
                if not (self.on_syscall or self.on_syscall_return or self.on_syscall_noreturn) and not (
                    entry is not None and (entry[1] or entry[2])
                ):
                    continue  # as in _svc: nothing is built for a call nobody listens to
                ctx = SyscallContext(
                    seq=self.pairing.next_seq(),
                    insn_count=self.machine.insn_count,
                    pc=call.pc,
                    thumb=call.thumb,
                    number=call.number,
                    name=spec.name if spec is not None else f"syscall_{call.number:#x}",
                    spec=spec,
                    raw_args=call.args,
                    asid=process.asid | attributes,
                    thread=call.stack,
                    user_sp=call.sp,
                    memory=memory,
                    limits=self.limits,
                    task=thread.task,
                )
                self.pairing.blocked(ctx)
                if self.on_syscall:
                    self.on_syscall(ctx=ctx)
                if entry is not None and entry[1]:
                    entry[1](ctx=ctx)
                self._watch_return(ctx.return_pc)

    def _thread_exit(self, thread: Any, code: int) -> None:
        """do_exit runs on the dying thread's kernel stack: its base is the pairing key."""
        signal = code & 0x7F
        ended = self.pairing.thread_died(
            self._registers.banked("sp", "svc") & ~(THREAD_SIZE - 1), SIGNAL_NAMES.get(signal) if signal else None
        )
        for ctx in ended:
            self._noreturn(ctx)

    # -- lifecycle --------------------------------------------------------------
    def stop(self, reason: Any) -> None:
        """Calls still blocked when the guest stopped are reported as never having returned."""
        for ctx in self.pairing.drain():
            self._noreturn(ctx)

    def unload(self) -> None:
        if self.machine is not None:
            for handle in self._return_hooks.values():
                self.machine.hooks.remove(handle)
        self._return_hooks.clear()

    # -- exports -------------------------------------------------------------
    @export
    def syscall_spec(self, number: int) -> SyscallSpec | None:
        """The table entry for a call number (None for a number the ARM EABI table lacks)."""
        return SYSCALLS.get(number)

    @export
    def pending_calls(self) -> list[SyscallContext]:
        """Calls made and not yet returned, in call order (e.g. what each blocked thread waits in)."""
        return sorted((c for stack in self.pairing.pending.values() for c in stack), key=lambda c: c.seq)


plugin = Syscalls
