"""The Unicorn engine, set up the one way that boots Linux, with fast paths.

Why a module of its own: the unicorn Python binding costs ~1.5 µs per register
access and wraps every hook in generic glue.  The machine touches registers at
every exception and system call, so this module talks to libunicorn through
ctypes directly for those few hot operations, and keeps the rest of the binding
for everything else.  It also owns the instruction counter that the
public API lacks (a native block hook, :mod:`qppsuite.core.icount`), and finds
the abort record the engine keeps where the guest cannot see it (docs/engine.md).
"""

import ctypes
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import unicorn
from unicorn import Uc, UcError
from unicorn import arm_const as A
from unicorn import unicorn_const as U
from unicorn.unicorn_py3.unicorn import UcContext, uclib

from qppsuite.core.icount import ENTRY_CFUNC, BlockCounter
from qppsuite.errors import QppsuiteError

UNICORN_VERSION = "2.1.4"

_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_reg_read = uclib.uc_reg_read
_reg_write = uclib.uc_reg_write
_byref = ctypes.byref
_vmem_translate = uclib.uc_vmem_translate
_vmem_translate.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64))
_vmem_read = uclib.uc_vmem_read
_vmem_read.argtypes = (ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)

INTR_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
CODE_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)
MEM_CFUNC = ctypes.CFUNCTYPE(
    ctypes.c_bool, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p
)
INSN_INVALID_CFUNC = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)


#: unicorn's ARM exception numbers (target/arm/cpu.h ``EXCP_*``) as the interrupt hook reports them.
EXCP_SWI = 2
EXCP_PREFETCH_ABORT = 3
EXCP_DATA_ABORT = 4
EXCP_BKPT = 7
EXCP_SMC = 13

#: ``uc_emu_start`` results that end a quantum on an access the guest must be told about.
_FAULTS = (U.UC_ERR_READ_UNMAPPED, U.UC_ERR_WRITE_UNMAPPED, U.UC_ERR_FETCH_UNMAPPED)

FAULT_RECORD = 0xBD4
"""Offset of ``exception.fsr`` (32 bits, then ``.vaddress``, 64 bits) in unicorn 2.1.4's ``CPUARMState``."""
FS_SECTION_TRANSLATION = 0x5
BANKED_SP_SVC = 0x1A4
"""Offset of ``banked_r13[1]``, the SVC mode's sp while another mode runs, in unicorn 2.1.4's ``CPUARMState``."""
MODE_SVC = 0x13
MODE_SYS = 0x1F
FAULT_TEST_ADDRESS = 0x12345678
_SELF_TEST_CP15 = {"sctlr": (1, 0, 0, 0), "ttbr0": (2, 0, 0, 0), "ttbcr": (2, 0, 0, 2), "dacr": (3, 0, 0, 0)}


class _CpReg(ctypes.Structure):
    """``uc_arm_cp_reg``: the engine's handle on one coprocessor register."""

    _fields_ = (
        ("cp", ctypes.c_uint32),
        ("is64", ctypes.c_uint32),
        ("sec", ctypes.c_uint32),
        ("crn", ctypes.c_uint32),
        ("crm", ctypes.c_uint32),
        ("opc1", ctypes.c_uint32),
        ("opc2", ctypes.c_uint32),
        ("val", ctypes.c_uint64),
    )


class EngineError(QppsuiteError):
    """The installed Unicorn is not the one whose behaviour the machine relies on."""


class CpRegister:
    """One CP15 register with a pre-built ctypes request: a read is one C call."""

    __slots__ = ("_handle", "_ref", "_req", "name")

    def __init__(self, handle: ctypes.c_void_p, name: str, crn: int, opc1: int, crm: int, opc2: int) -> None:
        self.name = name
        self._handle = handle
        self._req = _CpReg(15, 0, 0, crn, crm, opc1, opc2, 0)
        self._ref = ctypes.byref(self._req)

    def read(self) -> int:
        _reg_read(self._handle, A.UC_ARM_REG_CP_REG, self._ref)
        return int(self._req.val)

    def write(self, value: int) -> None:
        self._req.val = value & 0xFFFFFFFF
        _reg_write(self._handle, A.UC_ARM_REG_CP_REG, self._ref)


class Engine:
    """A Cortex-A15 Unicorn instance with a 4 KiB page, translating with its own MMU (``UC_TLB_CPU``).

    Hooks registered here are raw ctypes callbacks.  A Python exception inside
    one cannot propagate through C, so it is stashed, the engine is stopped, and
    :meth:`run` re-raises it: a bug in a hook ends the run with its traceback
    instead of silently corrupting the guest.
    """

    def __init__(self) -> None:
        if unicorn.__version__ != UNICORN_VERSION:
            raise EngineError(
                f"unicorn {unicorn.__version__} is installed; qppsuite is verified against {UNICORN_VERSION}",
                hint=f"pip install 'unicorn=={UNICORN_VERSION}'",
            )
        # The binding's Uc() returns an architecture subclass its stubs do not describe.
        uc: Any = Uc(U.UC_ARCH_ARM, U.UC_MODE_ARM)
        # Order matters (docs/engine.md, "Set-up"): page size before anything else.
        uc.ctl_set_page_size(4096)
        uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_A15)
        # The engine's own MMU (QEMU's ARMv7 walker, native): Python sees only the aborts it raises.
        uc.ctl_set_tlb_mode(U.UC_TLB_CPU)
        self.uc: Any = uc
        self.handle: Any = uc._uch
        self._keep: list[Any] = []
        #: Hook handle -> its C callback, which must live as long as the engine may call it.
        self._callbacks: dict[int, Any] = {}
        #: Callbacks of hooks deleted since the last run began: the engine frees those hooks when a run ends.
        self._deleted: list[Any] = []
        self.hook_error: BaseException | None = None
        self._scratch = _u32()
        self._scratch_ref = ctypes.byref(self._scratch)
        self._paddr = _u64()
        self._paddr_ref = ctypes.byref(self._paddr)
        env = self._locate_cpu_state()
        self._fault_status, self._fault_address = self._locate_fault_record(env)
        self._sp_svc = self._locate_banked_sp_svc(env)
        #: Entry hooks: block address -> {handle: fn}, called by the instruction counter's native hook.
        self._entries: dict[int, dict[int, Callable[[int, int], None]]] = {}
        self._entry_handles: dict[int, int] = {}
        self._next_entry = -1
        self._entry_cfunc = ENTRY_CFUNC(self._on_entry)
        #: The instruction counter (docs/engine.md, "Time").
        self._blocks = BlockCounter(self.handle, self._entry_cfunc)
        self._stepping = False
        #: The address of the code or block hook running now (None outside one), and of the one that stopped the run.
        self._hook_pc: int | None = None
        self._stop_pc: int | None = None
        self._stop_asked = False
        #: Inside a device's MMIO callback (see stop()).
        self._in_device = False

    # -- registers -------------------------------------------------------
    def reg(self, reg_id: int) -> int:
        _reg_read(self.handle, reg_id, self._scratch_ref)
        return self._scratch.value

    def set_reg(self, reg_id: int, value: int) -> None:
        self._scratch.value = value & 0xFFFFFFFF
        _reg_write(self.handle, reg_id, self._scratch_ref)

    def banked(self, reg_id: int, mode: int) -> int:
        """Register ``reg_id`` (sp, lr or spsr) of CPSR mode ``mode``: the engine shows only the current mode's
        bank, so the CPSR's mode is switched for the read and back.  Straight ctypes calls: through
        :meth:`reg` and :meth:`set_reg` it cost 1 µs more, twice per traced system call."""
        handle, scratch, ref = self.handle, self._scratch, self._scratch_ref
        _reg_read(handle, A.UC_ARM_REG_CPSR, ref)
        cpsr = scratch.value
        if cpsr & 0x1F == mode:
            _reg_read(handle, reg_id, ref)
            return scratch.value
        if mode == MODE_SVC and reg_id == A.UC_ARM_REG_SP:
            # The kernel stack seen from user mode (twice per traced system call): read where the engine banks
            # it, located and tested at start-up (_locate_banked_sp_svc); the mode switches cost 5 µs a call.
            return self._sp_svc.value
        scratch.value = (cpsr & ~0x1F) | mode
        _reg_write(handle, A.UC_ARM_REG_CPSR, ref)
        _reg_read(handle, reg_id, ref)
        value = scratch.value
        scratch.value = cpsr
        _reg_write(handle, A.UC_ARM_REG_CPSR, ref)
        return value

    def cp15(self, name: str, crn: int, opc1: int, crm: int, opc2: int) -> CpRegister:
        return CpRegister(self.handle, name, crn, opc1, crm, opc2)

    def batch_reader(self, core: Sequence[int], cp15: Sequence[CpRegister]) -> Callable[[], list[int]]:
        """One C call that reads several core and CP15 registers (a guest memory read needs six).

        Returns a function giving the values in order: core registers first.
        """
        count = len(core) + len(cp15)
        ids = (ctypes.c_int * count)(*core, *([A.UC_ARM_REG_CP_REG] * len(cp15)))
        # The core values in one array, taken out by one slice (0.3 µs for ten, against 0.7 µs one by one).
        core_vals = (_u64 * len(core))()
        cp_vals = [_CpReg(15, 0, 0, r._req.crn, r._req.crm, r._req.opc1, r._req.opc2, 0) for r in cp15]
        base = ctypes.addressof(core_vals)
        ptrs = (ctypes.c_void_p * count)(
            *(base + i * ctypes.sizeof(_u64) for i in range(len(core))), *(ctypes.addressof(v) for v in cp_vals)
        )
        read_batch = uclib.uc_reg_read_batch
        handle = self.handle
        self._keep.append((ids, ptrs, core_vals, cp_vals))

        def read() -> list[int]:
            read_batch(handle, ids, ptrs, count)
            values: list[int] = core_vals[:]
            if cp_vals:
                values += [v.val for v in cp_vals]
            return values

        return read

    # -- hooks -----------------------------------------------------------
    def _guard(self, fn: Callable[..., Any], failure: Any) -> Callable[..., Any]:
        def guarded(*args: Any) -> Any:
            try:
                return fn(*args)
            except BaseException as exc:  # re-raised by run(); C cannot carry it
                return self._failed(exc, failure)

        return guarded

    def _failed(self, exc: BaseException, failure: Any) -> Any:
        if self.hook_error is None:
            self.hook_error = exc
        uclib.uc_emu_stop(self.handle)
        return failure

    def _add(self, htype: int, cfunc: Any, begin: int = 1, end: int = 0, *extra: Any) -> int:
        h = ctypes.c_size_t()
        status = uclib.uc_hook_add(self.handle, ctypes.byref(h), htype, cfunc, None, _u64(begin), _u64(end), *extra)
        if status != U.UC_ERR_OK:
            raise UcError(status)
        self._callbacks[h.value] = cfunc
        return h.value

    def hook_intr(self, fn: Callable[[int], None]) -> int:
        guarded = self._guard(fn, None)
        return self._add(U.UC_HOOK_INTR, INTR_CFUNC(lambda _h, intno, _u: guarded(intno)))

    def map_mmio(
        self, base: int, size: int, read: Callable[[int, int], int], write: Callable[[int, int, int], None]
    ) -> None:
        """Put a device at physical ``[base, base + size)``: ``read(offset, size)``, ``write(offset, value, size)``.

        Inside them :meth:`stop` waits for the end of the block (docs/engine.md, "A stop from a device"), and
        an exception ends the run and is raised by :meth:`run`, as from a hook.
        """
        guarded_read, guarded_write = self._guard(read, 0), self._guard(write, None)

        def on_read(_uc: Any, offset: int, width: int, _user: Any) -> int:
            self._in_device = True
            try:
                value: int = guarded_read(offset, width)
                return value
            finally:
                self._in_device = False

        def on_write(_uc: Any, offset: int, width: int, value: int, _user: Any) -> None:
            self._in_device = True
            try:
                guarded_write(offset, value, width)
            finally:
                self._in_device = False

        self.uc.mmio_map(base, size, on_read, None, on_write, None)

    def hook_mem_unmapped(self, fn: Callable[[int, int], bool]) -> int:
        """``fn(access, address) -> bool`` for an access to physical memory no region covers.

        ``access`` is ``UC_MEM_READ``, ``UC_MEM_WRITE`` or ``UC_MEM_FETCH``.  Returning False
        ends :meth:`run` with ``faulted``.
        """
        guarded = self._guard(fn, False)
        unmapped = U.UC_MEM_READ_UNMAPPED - U.UC_MEM_READ
        return self._add(
            U.UC_HOOK_MEM_UNMAPPED,
            MEM_CFUNC(lambda _h, kind, address, _size, _value, _u: guarded(kind - unmapped, address)),
        )

    def hook_insn_invalid(self, fn: Callable[[], bool]) -> int:
        guarded = self._guard(fn, False)
        return self._add(U.UC_HOOK_INSN_INVALID, INSN_INVALID_CFUNC(lambda _h, _u: guarded()))

    def hook_code(self, fn: Callable[[int, int], None], begin: int = 1, end: int = 0) -> int:
        """A code hook on ``[begin, end]`` (virtual); ``begin > end`` means every instruction.

        ``fn(address, size)`` runs before the instruction at ``address``; :meth:`in_flight` there
        counts the instructions before it, and :meth:`stop` leaves it unexecuted.
        """
        return self._add(U.UC_HOOK_CODE, self._at_address(fn), begin, end)

    def hook_block(self, fn: Callable[[int, int], None], begin: int = 1, end: int = 0) -> int:
        """A block hook for blocks starting in ``[begin, end]`` (virtual); ``begin > end`` means every block."""
        return self._add(U.UC_HOOK_BLOCK, self._at_address(fn), begin, end)

    def hook_entry(self, fn: Callable[[int, int], None], address: int) -> int:
        """``fn(address, size)`` before every translated block that starts at virtual ``address`` (bit 0 ignored).

        The same call as a block hook on ``[address, address]``, but no Unicorn hook: the instruction counter's
        native hook, which runs at every block, looks the address up in a table (``_icount.c``).  So the engine
        scans no more hooks however many entry hooks exist, and no translated code is dropped when one is added
        or deleted.  Handles are negative; :meth:`hook_del` deletes them at once.  Hooks at one address run in
        the order they were added, and none after one that stops the run, as Unicorn's do.
        """
        address &= 0xFFFFFFFE
        handle = self._next_entry
        self._next_entry -= 1
        self._entries.setdefault(address, {})[handle] = self._guard(fn, None)
        self._entry_handles[handle] = address
        self._blocks.watch(address)
        return handle

    def _on_entry(self, address: int, size: int) -> None:
        fns = self._entries.get(address)
        if not fns:
            return
        self._hook_pc = address
        self._stop_asked = False
        try:
            for fn in tuple(fns.values()):
                fn(address, size)
                if self._stop_asked or self.hook_error is not None:
                    break
        finally:
            self._hook_pc = None

    def _at_address(self, fn: Callable[[int, int], None]) -> Any:
        guarded = self._guard(fn, None)

        def call(_h: Any, address: int, size: int, _u: Any) -> None:
            self._hook_pc = address
            guarded(address, size)
            self._hook_pc = None

        return CODE_CFUNC(call)

    @property
    def hook_count(self) -> int:
        """Unicorn hooks added and not deleted, which the engine scans: the machine's own and every plugin's (the
        engine's counter excluded, entry hooks too: see :attr:`entry_hook_count`)."""
        return len(self._callbacks)

    @property
    def entry_hook_count(self) -> int:
        """Entry hooks (:meth:`hook_entry`) added and not deleted."""
        return len(self._entry_handles)

    def flush_tlb(self) -> None:
        """Drop every softTLB entry, as the guest's own TLBIALL would."""
        uclib.uc_ctl(self.handle, U.UC_CTL_TLB_FLUSH | (1 << 30))

    def drop_code_at(self, ranges: Iterable[tuple[int, int]]) -> None:
        """Drop the translated code of the guest-physical ranges ``[start, end)``, whatever virtual addresses it
        runs at; between runs only (docs/engine.md, "Devices writing RAM").

        The engine drops code by physical page but finds the page by translating a virtual address as an
        instruction fetch (``uc_ctl_remove_cache``).  With SCTLR.M clear for the call that address is the
        physical one; SCTLR is put back as it was, and the TLB is flushed on both sides so that no translation
        of either state outlives the call.
        """
        sctlr = self.cp15("sctlr", *_SELF_TEST_CP15["sctlr"])
        value = sctlr.read()
        sctlr.write(value & ~1)
        self.flush_tlb()
        try:
            for start, end in ranges:
                self.uc.ctl_remove_cache(start, end)
        finally:
            sctlr.write(value)
            self.flush_tlb()

    def hook_del(self, handle: int) -> None:
        """Delete a hook; its callback is released once the engine has freed the hook.

        ``uc_hook_del`` only marks the hook, which the engine skips from then on
        and frees when ``uc_emu_start`` returns (``clear_deleted_hooks``), so
        the callback (possibly the one running now) is kept until the next
        :meth:`run` ends.  Without the release every hook ever added stays in
        memory: a guest that makes calls from new addresses makes new hooks.
        """
        if handle < 0:
            address = self._entry_handles.pop(handle, None)
            if address is not None:
                fns = self._entries[address]
                del fns[handle]
                if not fns:
                    del self._entries[address]
                    self._blocks.unwatch(address)
            return
        uclib.uc_hook_del(self.handle, ctypes.c_size_t(handle))
        cfunc = self._callbacks.pop(handle, None)
        if cfunc is not None:
            self._deleted.append(cfunc)

    # -- execution ---------------------------------------------------------
    def run(self, pc: int, budget: int, limit: int = 1 << 62, *, until_unmasked: bool = False) -> tuple[int, bool]:
        """Run from ``pc`` (bit 0 = Thumb), entering no translated block past ``budget`` instructions but the
        first, and none past ``limit``; with ``until_unmasked``, no block but the first that starts with CPSR.I
        clear either (:attr:`unmasked` then tells so): the machine takes a pending IRQ there.

        Returns ``(executed, faulted)``: the instructions retired (exact: docs/engine.md,
        "Time") and whether the run stopped on an access to unmapped physical memory (see
        :meth:`hook_mem_unmapped`).  ``executed`` exceeds ``budget`` only when the run's first
        block alone does, and never exceeds ``limit`` (a run whose first block does not fit in
        it ends with nothing executed: :meth:`step` goes on from there).  :attr:`budget_reached`
        tells a run the budget or the limit ended from any other stop.
        """
        if self._stepping:
            self._stepping = False  # uc_emu_start drops the engine's count hook and all translated code
        blocks = self._blocks
        blocks.start(budget, limit, until_unmasked=until_unmasked)
        self._stop_pc = None
        status = self._start(pc, 0)
        if not blocks.between_blocks:
            self._account_stop()
        return self._result(status, blocks.end())

    def step(self, pc: int) -> tuple[int, bool]:
        """Run one instruction from ``pc``, or the rest of a Thumb IT block: :meth:`run` for single-stepping.

        Uses the engine's own ``count`` limit (a helper call per instruction, so translated code
        is dropped when stepping begins and when it ends); counts as :meth:`run` does.
        """
        if not self._stepping:
            self.uc.ctl_flush_tb()  # code translated for run() carries no per-instruction limit
            self._stepping = True
        blocks = self._blocks
        blocks.start(1 << 62)
        self._stop_pc = None
        status = self._start(pc, 1)
        self._account_stop()
        return self._result(status, blocks.end())

    def _start(self, pc: int, count: int) -> int:
        self.hook_error = None
        status = int(uclib.uc_emu_start(self.handle, _u64(pc), _u64(0xFFFFFFFF), _u64(0), ctypes.c_size_t(count)))
        self._deleted.clear()  # the engine freed every hook deleted until now
        return status

    def _result(self, status: int, executed: int) -> tuple[int, bool]:
        if self.hook_error is not None:
            err, self.hook_error = self.hook_error, None
            raise err
        if status == U.UC_ERR_OK:
            return executed, False
        if status in _FAULTS:
            return executed, True
        raise UcError(status)

    @property
    def budget_reached(self) -> bool:
        """Whether the last :meth:`run` ended because its next block would have gone past the budget or limit."""
        return self._blocks.budget_reached

    @property
    def unmasked(self) -> bool:
        """Whether the last :meth:`run` (``until_unmasked``) ended before a block that starts with CPSR.I clear."""
        return self._blocks.unmasked

    def stop(self) -> None:
        """End the run at the next instruction boundary the engine allows (``uc_emu_stop``).

        From a code hook, the hooked instruction does not run; from a block hook, the block
        does not; from a device's read or write, the block runs to its end; elsewhere the current
        instruction completes.  Inside a Thumb IT block the engine ignores the request (docs/engine.md,
        "Time").
        """
        if self._in_device:
            # From a device's callback, uc_emu_stop ends the run with the PC at the load or store, which then
            # runs again when the run resumes: a device would see the access twice.
            self._blocks.stop_before_next_block()
            return
        self._stop_pc = self._hook_pc
        self._stop_asked = True
        uclib.uc_emu_stop(self.handle)

    def in_flight(self) -> int:
        """Instructions retired so far in the running :meth:`run` or :meth:`step` (0 between runs).

        Inside a code or block hook, exactly those before the hooked instruction; elsewhere
        (a device read in the middle of a block) the whole block counts from its start.
        """
        blocks = self._blocks
        executed = blocks.executed
        hook_pc = self._hook_pc
        if hook_pc is not None:
            last = blocks.last_block()
            if last is not None and last[0] == hook_pc:
                # An entry hook (a syscall's return): the whole block is still to run, and the counter knows its
                # length; counting it from the code (a memory read through ctypes for Thumb) was 4 µs a return.
                return executed - blocks.last_icount
            executed -= self._not_run(hook_pc, self._thumb())
        return executed

    def left_block_at(self, pc: int, thumb: bool) -> None:
        """The running block was left at ``pc`` (an exception): its instructions from ``pc`` on did not run.

        Call from the interrupt or invalid-instruction hook, with the address of the first
        instruction that did not retire (the faulting one, or the one after an SVC).
        """
        self._blocks.take_back(self._not_run(pc, thumb))

    def _account_stop(self) -> None:
        """After a run that a stop request or an exception hook ended: take back what did not run."""
        last = self._blocks.last_block()
        if last is None:
            return
        pc = self.reg(A.UC_ARM_REG_PC) & ~1
        start, end = last
        # At the block's own start the run either never began the block (a stop from a hook on its first
        # instruction, or the count limit of a step) or ran it whole and looped back to it: only the hook that
        # stopped tells them apart.  A step stops at the instruction after the one it ran.
        if start < pc < end or (pc == start and (self._stepping or pc == self._stop_pc)):
            self._blocks.take_back(self._insns(pc, end, self._thumb()))
        else:
            self._blocks.close_block()

    def _not_run(self, pc: int, thumb: bool) -> int:
        """Instructions of the last block entered from ``pc`` to its end (0 when ``pc`` is not inside it)."""
        last = self._blocks.last_block()
        if last is None or not last[0] <= pc < last[1]:
            return 0
        return self._insns(pc, last[1], thumb)

    def _insns(self, start: int, end: int, thumb: bool) -> int:
        """Instructions in ``[start, end)`` of code as the CPU fetches it now (ARM ARM A6.1: a Thumb halfword
        0b11101, 0b11110 or 0b11111 in its top five bits begins a 32-bit instruction)."""
        if not thumb:
            return (end - start) // 4
        size = end - start
        buffer = ctypes.create_string_buffer(size)
        if _vmem_read(self.handle, start, U.UC_PROT_EXEC, buffer, size) != U.UC_ERR_OK:
            return size // 4  # the engine translated this code a moment ago; unreachable in practice
        code = buffer.raw
        count = offset = 0
        while offset < size:
            offset += 4 if code[offset + 1] >> 3 in (0x1D, 0x1E, 0x1F) else 2
            count += 1
        return count

    def _thumb(self) -> bool:
        return bool(self.reg(A.UC_ARM_REG_CPSR) & 0x20)

    def forget_block_counts(self) -> None:
        """Look every block's instruction count up again: for when code may have changed at the same addresses."""
        self._blocks.forget()

    # -- whole CPU state ---------------------------------------------------------
    def save_context(self) -> bytes:
        """The CPU's whole state as the engine keeps it (``uc_context_save``): registers of every mode, CP15,
        VFP/NEON.  Raw engine memory: only this engine build can restore it."""
        return bytes(self.uc.context_save())

    def restore_context(self, data: bytes) -> None:
        """Restore :meth:`save_context` bytes; ValueError if they are not this engine's context size."""
        size = uclib.uc_context_size(self.handle)
        if len(data) != size:
            raise ValueError(f"a CPU context of {len(data)} bytes; this engine's is {size}")
        context = UcContext.__new__(UcContext)
        context.__setstate__((data, size, U.UC_ARCH_ARM, U.UC_MODE_ARM))
        self.uc.context_restore(context)
        self.uc.ctl_flush_tb()
        self.flush_tlb()

    # -- translation -----------------------------------------------------------
    def translate(self, vaddr: int, prot: int) -> int | None:
        """The physical address the engine's MMU gives ``vaddr`` for an access of ``prot`` (``UC_PROT_READ``,
        ``_WRITE`` or ``_EXEC``) in the CPU's current mode and tables, or None where it would fault.

        A probe (``uc_vmem_translate``): nothing is raised into the guest, even from inside a hook.
        """
        status = _vmem_translate(self.handle, vaddr, prot, self._paddr_ref)
        return self._paddr.value if status == U.UC_ERR_OK else None

    # -- the abort record ------------------------------------------------------
    def fault(self) -> tuple[int, int]:
        """(FSR, faulting address) of the abort the engine raised, read inside the interrupt hook (intno 3 or 4).

        The engine's MMU records them (``env->exception.fsr`` and ``.vaddress``,
        target/arm/tlb_helper.c) for its exception entry, which unicorn never
        runs, so DFSR/DFAR (IFSR/IFAR) are not written: the entry the machine
        performs writes them from this.  The FSR is in the short-descriptor
        format (ARM ARM B4.1.52): status, domain, WnR.
        """
        return self._fault_status.value, self._fault_address.value & 0xFFFFFFFF

    def _locate_fault_record(self, env: int) -> tuple[ctypes.c_uint32, ctypes.c_uint64]:
        """Find the engine's CPU state and its exception record, and prove it with a real translation fault.

        The CPU state (``CPUARMState``) starts with ``regs[16]``: four register
        values written through the API are searched for in the memory that
        pointers in the engine's handle point at (read through /proc/self/mem,
        which fails cleanly on an unmapped address instead of crashing), and the
        one hit that follows a further write is kept.  The record is at a fixed
        offset from it in unicorn 2.1.4 (``FAULT_RECORD``); a load from an
        unmapped section must then give FSR 0x5 and its address, or no other
        engine build is trusted.  ``env``: the CPU state (:meth:`_locate_cpu_state`).
        """
        status = ctypes.c_uint32.from_address(env + FAULT_RECORD)
        address = ctypes.c_uint64.from_address(env + FAULT_RECORD + 4)
        got = self._fault_self_test(lambda: (status.value, address.value))
        if got != (FS_SECTION_TRANSLATION, FAULT_TEST_ADDRESS):
            raise EngineError(
                f"unicorn's abort record not found (a test fault read {got}): this engine build is not the verified one"
            )
        return status, address

    def _locate_banked_sp_svc(self, env: int) -> ctypes.c_uint32:
        """The SVC mode's banked sp in the CPU state (``env``), proved by two values written through the API.

        While another mode runs, QEMU keeps SVC's sp in ``banked_r13[1]`` (``BANKED_SP_SVC`` in unicorn 2.1.4);
        each value is written in SVC mode and read back at that offset from SYS mode.
        """
        sp_svc = ctypes.c_uint32.from_address(env + BANKED_SP_SVC)
        cpsr = self.reg(A.UC_ARM_REG_CPSR)
        self.set_reg(A.UC_ARM_REG_CPSR, (cpsr & ~0x1F) | MODE_SVC)
        saved = self.reg(A.UC_ARM_REG_SP)
        got = []
        for value in (0x5BA4C001, 0x5BA4C002):
            self.set_reg(A.UC_ARM_REG_CPSR, (cpsr & ~0x1F) | MODE_SVC)
            self.set_reg(A.UC_ARM_REG_SP, value)
            self.set_reg(A.UC_ARM_REG_CPSR, (cpsr & ~0x1F) | MODE_SYS)
            got.append(sp_svc.value)
        self.set_reg(A.UC_ARM_REG_CPSR, (cpsr & ~0x1F) | MODE_SVC)
        self.set_reg(A.UC_ARM_REG_SP, saved)
        self.set_reg(A.UC_ARM_REG_CPSR, cpsr)
        if got != [0x5BA4C001, 0x5BA4C002]:
            raise EngineError(
                f"unicorn's banked SVC sp not found (read {got}): this engine build is not the verified one"
            )
        return sp_svc

    def _locate_cpu_state(self) -> int:
        pattern = (0x51A7E001, 0x51A7E002, 0x51A7E003, 0x51A7E004)
        saved = [self.reg(A.UC_ARM_REG_R0 + i) for i in range(4)]
        for i, value in enumerate(pattern):
            self.set_reg(A.UC_ARM_REG_R0 + i, value)
        needle = struct.pack("<4I", *pattern)
        hits: set[int] = set()
        with open("/proc/self/mem", "rb", buffering=0) as mem:

            def read(addr: int, size: int) -> bytes:
                try:
                    mem.seek(addr)
                    return mem.read(size)
                except (OSError, OverflowError, ValueError):
                    return b""

            handle = read(self.handle.value, 0x2000)
            pointers = {struct.unpack_from("<Q", handle, o)[0] for o in range(0, len(handle) - 7, 8)}
            for pointer in sorted(p for p in pointers if 0x10000 <= p < 1 << 47 and not p & 7):
                blob = read(pointer, 0x20000)
                at = blob.find(needle)
                while at >= 0:
                    hits.add(pointer + at)
                    at = blob.find(needle, at + 4)
            self.set_reg(A.UC_ARM_REG_R0, 0x0BADF00D)
            confirmed = [h for h in hits if read(h, 4) == struct.pack("<I", 0x0BADF00D)]
        for i, value in enumerate(saved):
            self.set_reg(A.UC_ARM_REG_R0 + i, value)
        if len(confirmed) != 1:
            raise EngineError(
                f"unicorn's CPU state not found ({len(confirmed)} candidates): "
                "this engine build is not the verified one"
            )
        return confirmed[0]

    def _fault_self_test(self, record: Callable[[], tuple[int, int]]) -> tuple[int, int] | None:
        """Run ``ldr r0, [r1]`` with the MMU on and r1 in an unmapped section; the record as the abort arrives."""
        uc = self.uc
        base = 0x1000
        table = 0x4000  # an L1 table (16 KiB aligned): section 0 flat-mapped, read/write, domain 0
        uc.mem_map(0, 0x8000)
        uc.mem_write(table, struct.pack("<I", 0x00000C02))
        uc.mem_write(base, bytes.fromhex("000091e5feffffea"))  # ldr r0, [r1] ; b .
        regs = {name: self.cp15(name, *where) for name, where in _SELF_TEST_CP15.items()}
        saved = {name: reg.read() for name, reg in regs.items()}
        saved_r1 = self.reg(A.UC_ARM_REG_R1)
        regs["ttbr0"].write(table)
        regs["ttbcr"].write(0)
        regs["dacr"].write(0xFFFFFFFF)
        regs["sctlr"].write(saved["sctlr"] | 1)
        self.set_reg(A.UC_ARM_REG_R1, FAULT_TEST_ADDRESS)
        seen: list[tuple[int, int]] = []

        def intr(intno: int) -> None:
            if intno == EXCP_DATA_ABORT:
                seen.append(record())
            self.uc.emu_stop()

        h = self.hook_intr(intr)
        try:
            uclib.uc_emu_start(self.handle, _u64(base), _u64(0xFFFFFFFF), _u64(0), ctypes.c_size_t(8))
        finally:
            self.hook_del(h)
            for name in ("sctlr", "ttbr0", "ttbcr", "dacr"):
                regs[name].write(saved[name])
            self.set_reg(A.UC_ARM_REG_R1, saved_r1)
            self.set_reg(A.UC_ARM_REG_R0, 0)
            uc.mem_unmap(0, 0x8000)
            uc.ctl_flush_tb()
            self.flush_tlb()
        return seen[0] if seen else None
