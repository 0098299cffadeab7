"""The Unicorn engine, set up the one way that boots Linux, with fast paths.

Why a module of its own: the unicorn Python binding costs ~1.5 µs per register
access and wraps every hook in generic glue.  The machine touches registers and
takes TLB fills millions of times per boot, so this module talks to libunicorn
through ctypes directly for those few hot operations, and keeps the rest of the
binding for everything else.  It also owns the instruction counter that the
public API lacks (see ``unicorn-facts.md``: "The API exposes no instruction
counter").
"""

import ctypes
import struct
from collections.abc import Callable, Sequence
from typing import Any

import unicorn
from unicorn import Uc, UcError
from unicorn import arm_const as A
from unicorn import unicorn_const as U
from unicorn.unicorn_py3.unicorn import uclib

from qppsuite.errors import QppsuiteError

UNICORN_VERSION = "2.1.4"

_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_reg_read = uclib.uc_reg_read
_reg_write = uclib.uc_reg_write
_byref = ctypes.byref

TLB_FILL_CFUNC = ctypes.CFUNCTYPE(
    ctypes.c_bool, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p
)
INTR_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
CODE_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p)
INSN_INVALID_CFUNC = ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_void_p)


class TlbEntry(ctypes.Structure):
    """``uc_tlb_entry``: what a TLB-fill hook hands back to the engine."""

    _fields_ = (("paddr", ctypes.c_uint64), ("perms", ctypes.c_uint32))


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
    """A Cortex-A15 Unicorn instance with a 4 KiB page and the virtual TLB.

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
        # Order matters (unicorn-facts.md): page size before anything else.
        uc.ctl_set_page_size(4096)
        uc.ctl_set_cpu_model(A.UC_CPU_ARM_CORTEX_A15)
        uc.ctl_set_tlb_mode(U.UC_TLB_VIRTUAL)
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
        self._counter = self._locate_counter()

    # -- registers -------------------------------------------------------
    def reg(self, reg_id: int) -> int:
        _reg_read(self.handle, reg_id, self._scratch_ref)
        return self._scratch.value

    def set_reg(self, reg_id: int, value: int) -> None:
        self._scratch.value = value & 0xFFFFFFFF
        _reg_write(self.handle, reg_id, self._scratch_ref)

    def cp15(self, name: str, crn: int, opc1: int, crm: int, opc2: int) -> CpRegister:
        return CpRegister(self.handle, name, crn, opc1, crm, opc2)

    def batch_reader(self, core: Sequence[int], cp15: Sequence[CpRegister]) -> Callable[[], list[int]]:
        """One C call that reads several core and CP15 registers (the TLB fill needs six).

        Returns a function giving the values in order: core registers first.
        """
        count = len(core) + len(cp15)
        ids = (ctypes.c_int * count)(*core, *([A.UC_ARM_REG_CP_REG] * len(cp15)))
        core_vals = [_u64() for _ in core]
        cp_vals = [_CpReg(15, 0, 0, r._req.crn, r._req.crm, r._req.opc1, r._req.opc2, 0) for r in cp15]
        ptrs = (ctypes.c_void_p * count)(*(ctypes.addressof(v) for v in (*core_vals, *cp_vals)))
        read_batch = uclib.uc_reg_read_batch
        handle = self.handle
        self._keep.append((ids, ptrs, core_vals, cp_vals))

        def read() -> list[int]:
            read_batch(handle, ids, ptrs, count)
            return [v.value for v in core_vals] + [v.val for v in cp_vals]

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
        self.uc.emu_stop()
        return failure

    def _add(self, htype: int, cfunc: Any, begin: int = 1, end: int = 0, *extra: Any) -> int:
        h = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            self.handle, ctypes.byref(h), htype, cfunc, None, _u64(begin), _u64(end), *extra
        )
        if status != U.UC_ERR_OK:
            raise UcError(status)
        self._callbacks[h.value] = cfunc
        return h.value

    def hook_tlb_fill(self, fn: Callable[[int, int, Any], bool]) -> int:
        """``fn(vaddr, access, entry_ptr) -> bool``; fill ``TlbEntry.from_address(entry_ptr)``."""

        failed = self._failed

        # The hottest hook (hundreds of thousands per boot): one Python frame between C and ``fn``.
        def fill(_h: Any, vaddr: int, access: int, entry: int, _u: Any) -> bool:
            try:
                return fn(vaddr, access, entry)
            except BaseException as exc:
                return bool(failed(exc, False))

        return self._add(U.UC_HOOK_TLB_FILL, TLB_FILL_CFUNC(fill))

    def hook_intr(self, fn: Callable[[int], None]) -> int:
        guarded = self._guard(fn, None)
        return self._add(U.UC_HOOK_INTR, INTR_CFUNC(lambda _h, intno, _u: guarded(intno)))

    def hook_insn_invalid(self, fn: Callable[[], bool]) -> int:
        guarded = self._guard(fn, False)
        return self._add(U.UC_HOOK_INSN_INVALID, INSN_INVALID_CFUNC(lambda _h, _u: guarded()))

    def hook_code(self, fn: Callable[[int, int], None], begin: int = 1, end: int = 0) -> int:
        """A code hook on ``[begin, end]`` (virtual); ``begin > end`` means every instruction."""

        guarded = self._guard(fn, None)
        return self._add(U.UC_HOOK_CODE, CODE_CFUNC(lambda _h, a, s, _u: guarded(a, s)), begin, end)

    def hook_block(self, fn: Callable[[int, int], None], begin: int = 1, end: int = 0) -> int:
        """A block hook for blocks starting in ``[begin, end]`` (virtual); ``begin > end`` means every block."""
        guarded = self._guard(fn, None)
        return self._add(U.UC_HOOK_BLOCK, CODE_CFUNC(lambda _h, a, s, _u: guarded(a, s)), begin, end)

    @property
    def hook_count(self) -> int:
        """Hooks added and not deleted: the machine's own and every plugin's (the engine's counter excluded)."""
        return len(self._callbacks)

    def flush_tlb(self) -> None:
        """Drop every softTLB entry, as the guest's own TLBIALL would."""
        uclib.uc_ctl(self.handle, U.UC_CTL_TLB_FLUSH | (1 << 30))

    def hook_del(self, handle: int) -> None:
        """Delete a hook; its callback is released once the engine has freed the hook.

        ``uc_hook_del`` only marks the hook, which the engine skips from then on
        and frees when ``uc_emu_start`` returns (``clear_deleted_hooks``), so
        the callback (possibly the one running now) is kept until the next
        :meth:`run` ends.  Without the release every hook ever added stays in
        memory: a guest that makes calls from new addresses makes new hooks.
        """
        uclib.uc_hook_del(self.handle, ctypes.c_size_t(handle))
        cfunc = self._callbacks.pop(handle, None)
        if cfunc is not None:
            self._deleted.append(cfunc)

    # -- execution ---------------------------------------------------------
    def run(self, pc: int, count: int) -> tuple[int, bool]:
        """Run at most ``count`` instructions from ``pc`` (bit 0 = Thumb).

        Returns ``(executed, faulted)``: the engine's own count of executed
        instructions (quanta can overshoot, unicorn-facts.md bug 2) and whether it
        stopped on a refused TLB fill.
        """

        self.hook_error = None
        status = uclib.uc_emu_start(self.handle, _u64(pc), _u64(0xFFFFFFFF), _u64(0), ctypes.c_size_t(count))
        self._deleted.clear()  # the engine freed every hook deleted until now
        executed = self._counter.value
        if executed > count:
            executed -= 1  # the count hook ran once more, for the instruction it stopped
        self._counter.value = 0  # so in_flight() reads 0 between quanta
        if self.hook_error is not None:
            err, self.hook_error = self.hook_error, None
            raise err
        if status == U.UC_ERR_OK:
            return executed, False
        if status == U.UC_ERR_EXCEPTION:
            return executed, True
        raise UcError(status)

    def in_flight(self) -> int:
        """Instructions executed so far in the running quantum (0 between quanta)."""
        return self._counter.value

    def _locate_counter(self) -> ctypes.c_uint64:
        """Find ``uc->emu_counter`` by running known counts, and prove it twice.

        The struct offset depends on the libunicorn build; the version is pinned
        above and the self-test below refuses any other layout.
        """

        uc = self.uc
        base = 0x1000
        uc.mem_map(base, 0x1000)
        uc.mem_write(base, bytes.fromhex("010080e2fdffffea"))  # 1: add r0,r0,#1 ; b 1b

        def filler(vaddr: int, _access: int, entry: int) -> bool:
            e = TlbEntry.from_address(entry)
            e.paddr = vaddr
            e.perms = U.UC_PROT_ALL
            return True

        h = self.hook_tlb_fill(filler)
        blob_len = 0x4000
        uc.emu_start(base, 0xFFFFFFFF, count=12345)
        raw = ctypes.string_at(self.handle.value, blob_len)
        offsets = [o for o in range(0, blob_len - 8, 8) if struct.unpack_from("<Q", raw, o)[0] == 12346]
        found: ctypes.c_uint64 | None = None
        for off in offsets:
            cand = ctypes.c_uint64.from_address(self.handle.value + off)
            uc.emu_start(base, 0xFFFFFFFF, count=777)
            if cand.value == 778:
                found = cand
                break
        self.hook_del(h)
        uc.mem_unmap(base, 0x1000)
        uc.reg_write(A.UC_ARM_REG_R0, 0)
        uc.ctl_flush_tb()
        self.flush_tlb()
        if found is None:
            raise EngineError("unicorn's instruction counter not found: this engine build is not the verified one")
        return found
