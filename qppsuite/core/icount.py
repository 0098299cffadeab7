"""The instruction counter: a native block hook that counts whole blocks (``_icount.c``).

Unicorn counts instructions only by calling a hook before every one (``uc_emu_start``'s
``count``).  The core counts per translated block instead: a C hook, once per block,
adds the number of instructions the engine's translator put in it (``tb->icount``) and
ends the run at a block boundary once the budget is spent.  What it counts, and how
the machine makes the count exact where a block is left early, is in docs/engine.md
("Time").
"""

from __future__ import annotations

import ctypes
import importlib.util
from typing import Any

from unicorn import unicorn_const as U
from unicorn.unicorn_py3.unicorn import uclib

from qppsuite.errors import QppsuiteError

#: Slots of the native cache of blocks' instruction counts (``QPP_ICOUNT_SLOTS`` in ``_icount.c``).
SLOTS = 65536
#: Slots of the table of watched block addresses at first; it doubles to stay under half full.
WATCH_SLOTS = 64
#: ``entry(address, size)``: a block starting at a watched address is about to run.
ENTRY_CFUNC = ctypes.CFUNCTYPE(None, ctypes.c_uint64, ctypes.c_uint32)
#: ``UC_CTL_READ_WRITE(UC_CTL_TB_REQUEST_CACHE, 2)`` (unicorn.h's ``UC_CTL`` macro).
REQUEST_CACHE = U.UC_CTL_TB_REQUEST_CACHE | (2 << 26) | ((U.UC_CTL_IO_WRITE | U.UC_CTL_IO_READ) << 30)


class _Slot(ctypes.Structure):
    _fields_ = (
        ("pc", ctypes.c_uint64),
        ("size", ctypes.c_uint32),
        ("icount", ctypes.c_uint16),
        ("generation", ctypes.c_uint16),
    )


class _State(ctypes.Structure):
    """``struct qpp_icount`` in ``_icount.c``, field for field."""

    _fields_ = (
        ("executed", ctypes.c_uint64),
        ("budget", ctypes.c_uint64),
        ("limit", ctypes.c_uint64),
        ("last_pc", ctypes.c_uint64),
        ("last_size", ctypes.c_uint32),
        ("last_icount", ctypes.c_uint32),
        ("budget_stop", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),
        ("lookups", ctypes.c_uint64),
        ("stop", ctypes.c_void_p),
        ("ctl", ctypes.c_void_p),
        ("reg_read", ctypes.c_void_p),
        ("request_cache", ctypes.c_int32),
        ("stop_pending", ctypes.c_uint32),
        ("entry", ctypes.c_void_p),
        ("watch", ctypes.POINTER(ctypes.c_uint32)),
        ("watch_mask", ctypes.c_uint32),
        ("watched", ctypes.c_uint32),
        ("removed", ctypes.c_uint32),
        ("stop_unmasked", ctypes.c_uint32),
        ("cache", _Slot * SLOTS),
    )


class IcountError(QppsuiteError):
    """The native counter is missing or is not the one this module describes."""


def _library() -> ctypes.CDLL:
    spec = importlib.util.find_spec("qppsuite.core._icount")
    if spec is None or spec.origin is None:
        raise IcountError(
            "qppsuite's native instruction counter (qppsuite/core/_icount.c) is not built",
            hint="reinstall qppsuite: python3 -m pip install -e .",
        )
    lib = ctypes.CDLL(spec.origin)
    lib.qpp_icount_size.restype = ctypes.c_size_t
    lib.qpp_icount_watch.argtypes = lib.qpp_icount_unwatch.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
    lib.qpp_icount_rehash.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32)
    lib.qpp_icount_rehash.restype = None
    if lib.qpp_icount_size() != ctypes.sizeof(_State):
        raise IcountError("qppsuite/core/_icount.c and qppsuite/core/icount.py disagree on the counter's layout")
    return lib


class BlockCounter:
    """The native block hook of one engine, and the run's count it keeps.

    ``executed`` counts every instruction of each block entered since :meth:`start`
    (blocks are entered whole: see :meth:`left_block_at` for one left early).  It also calls
    ``entry(address, size)`` for each block entered at an address :meth:`watch` was given, after
    counting it, unless the budget ended the run before that block.
    """

    def __init__(self, handle: Any, entry: Any) -> None:
        """``entry`` is an :data:`ENTRY_CFUNC`, kept alive by the caller as long as the engine."""
        self._lib = lib = _library()
        self._state = state = _State()
        state.entry = ctypes.cast(entry, ctypes.c_void_p)
        self._table = (ctypes.c_uint32 * WATCH_SLOTS)()
        lib.qpp_icount_rehash(ctypes.byref(state), self._table, WATCH_SLOTS - 1)
        state.stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p)
        state.ctl = ctypes.cast(uclib.uc_ctl, ctypes.c_void_p)
        state.reg_read = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p)
        state.request_cache = REQUEST_CACHE
        hook = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            handle,
            ctypes.byref(hook),
            U.UC_HOOK_BLOCK,
            ctypes.cast(lib.qpp_icount_block, ctypes.c_void_p),
            ctypes.byref(state),
            ctypes.c_uint64(1),
            ctypes.c_uint64(0),
        )
        if status != U.UC_ERR_OK:
            raise IcountError(f"the instruction counter's block hook was refused: unicorn error {status}")

    def watch(self, address: int) -> None:
        """Call ``entry`` for every block that starts at ``address`` (bit 0, Thumb, ignored) from now on."""
        state = self._state
        if 2 * (state.watched + state.removed + 1) > state.watch_mask + 1:
            slots = state.watch_mask + 1
            if 4 * (state.watched + 1) > slots:  # mostly live addresses: grow; mostly removed ones: clean
                slots *= 2
            table = (ctypes.c_uint32 * slots)()
            self._lib.qpp_icount_rehash(ctypes.byref(state), table, slots - 1)
            self._table = table  # the old table is no longer read
        self._lib.qpp_icount_watch(ctypes.byref(state), address & 0xFFFFFFFE)

    def unwatch(self, address: int) -> None:
        """Stop calling ``entry`` for blocks that start at ``address``."""
        self._lib.qpp_icount_unwatch(ctypes.byref(self._state), address & 0xFFFFFFFE)

    def start(self, budget: int, limit: int = 1 << 62, *, until_unmasked: bool = False) -> None:
        """Begin a run that enters no block past ``budget`` instructions but its first, and none past ``limit``
        (so a run whose first block does not fit in ``limit`` ends at once, with nothing executed); with
        ``until_unmasked``, and no block but the first that starts with CPSR.I clear either."""
        state = self._state
        state.executed = 0
        state.budget = budget
        state.limit = limit
        state.stop_unmasked = int(until_unmasked)
        state.budget_stop = 0
        state.stop_pending = 0
        state.last_size = 0

    def end(self) -> int:
        """The run is over: its count, and 0 from now on (``budget_reached`` keeps how it ended)."""
        state = self._state
        executed = int(state.executed)
        state.executed = 0
        state.budget = state.limit = 0
        state.last_size = 0
        return executed

    @property
    def executed(self) -> int:
        """Instructions of the blocks entered since :meth:`start`."""
        return int(self._state.executed)

    @property
    def budget_reached(self) -> bool:
        """Whether the run ended before a block the budget or the limit did not allow."""
        return self._state.budget_stop == 1

    @property
    def unmasked(self) -> bool:
        """Whether the run ended before a block that starts with CPSR.I clear (``until_unmasked``)."""
        return self._state.budget_stop == 3

    @property
    def between_blocks(self) -> bool:
        """Whether the run ended before a block (budget, limit, ``until_unmasked`` or
        :meth:`stop_before_next_block`): every block it entered ran whole."""
        return self._state.budget_stop != 0

    def last_block(self) -> tuple[int, int] | None:
        """``(start, end)`` virtual addresses of the block entered last, or None once it is accounted for."""
        state = self._state
        if state.last_size == 0:
            return None
        return int(state.last_pc), int(state.last_pc + state.last_size)

    @property
    def last_icount(self) -> int:
        """Instructions of the block entered last, as the translator counted them (what :attr:`executed` grew by)."""
        return int(self._state.last_icount)

    def take_back(self, insns: int) -> None:
        """Uncount ``insns`` instructions of the last block, which did not run, and close that block."""
        state = self._state
        state.executed -= min(insns, state.executed)
        state.last_size = 0

    def stop_before_next_block(self) -> None:
        """End the run before the next block starts (the current one runs to its end)."""
        self._state.stop_pending = 1

    def close_block(self) -> None:
        """The last block is accounted for: nothing of it is taken back later."""
        self._state.last_size = 0

    def forget(self) -> None:
        """Look every block's count up again (the cache keys on address and length only)."""
        self._state.generation += 1
