"""Opt-in execution hooks for plugins, with what each costs.

The core runs guest code natively and calls Python only at exceptions; a hook asks for more, and every
hook costs something, so a plugin adds hooks only for what it needs and removes them when it is done.
Costs measured on this project's machine (bench/RESULTS.md; docs/engine.md, "Hooks"): a Python call is
about 1 µs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qppsuite.core.machine import Machine


class Hooks:
    """Add and remove hooks on guest execution; each ``add`` returns a handle for :meth:`remove`."""

    __slots__ = ("_machine",)

    def __init__(self, machine: Machine) -> None:
        self._machine = machine

    def at_entry(self, vaddr: int, fn: Callable[[int], None]) -> int:
        """Call ``fn(pc)`` whenever a translated block starting at ``vaddr`` runs: a function's entry, or the
        instruction after an SVC (any address space).

        Cost: nothing while it does not fire (the engine's native block counter looks the address up), then
        one Python call each time.  Only for addresses that are always branched to, never fallen into:
        a block that runs through ``vaddr`` without starting there does not call ``fn``.
        """
        return self._machine.add_entry_hook(vaddr, fn)

    def at_address(self, vaddr: int, fn: Callable[[int], None]) -> int:
        """Call ``fn(pc)`` before every execution of the instruction at ``vaddr`` (any address space).

        Cost: one Python call per execution, and the code translated at ``vaddr`` carries a check, which
        slows every block containing it (about 30 % of a whole run for a hot kernel function): prefer
        :meth:`at_entry` for function entries.
        """
        return self._machine.add_address_hook(vaddr, fn)

    def on_blocks(self, fn: Callable[[int, int], None], *, begin: int = 0, end: int = 0xFFFFFFFF) -> int:
        """Call ``fn(pc, size)`` at every translated block executed whose first instruction is in
        ``[begin, end]`` (virtual, any address space; ``size`` in bytes).

        Cost: one Python call per block run in the range (about 1 µs; over all code, about a 10x slowdown),
        and adding or removing it drops the translated code so that it is translated again (milliseconds).
        Keep the range to the code of interest, and add it only while that code can run.
        """
        return self._machine.add_block_hook(fn, begin, end)

    def remove(self, handle: int) -> None:
        """Stop a hook at once; an unknown or already removed handle is ignored."""
        self._machine.remove_hook(handle)
