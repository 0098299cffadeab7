"""Opt-in execution hooks for plugins, with what each costs.

The core runs guest code natively and calls Python only at exceptions; a hook asks for more, and every
hook costs something, so a plugin adds hooks only for what it needs and removes them when it is done.
Costs measured on this project's machine (bench/RESULTS.md; docs/engine.md, "Hooks"): a Python call is
about 1 µs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING

from qppsuite.errors import PluginError

if TYPE_CHECKING:
    from qppsuite.core.machine import Machine


#: ``failed(plugin, where, exception)``: how a hook's exception is reported (:meth:`QPP._failed`): it returns the
#: error to raise (strict mode, which stops the run) or None (the run goes on).
FailureSink = Callable[[str, str, BaseException], BaseException | None]


class Hooks:
    """Add and remove hooks on guest execution; each ``add`` returns a handle for :meth:`remove`.

    Each plugin has its own (``self.machine.hooks``): a hook function that raises is reported like a failing
    callback, once, naming the plugin and the hook, and the run goes on (with ``--strict`` it stops).  A
    function that is not callable, or cannot take the hook's arguments, is refused when it is added
    (:class:`~qppsuite.errors.PluginError`).
    """

    __slots__ = ("_failed", "_machine", "_owner")

    def __init__(self, machine: Machine, owner: str = "host", failed: FailureSink | None = None) -> None:
        self._machine = machine
        self._owner = owner
        self._failed = failed

    def at_entry(self, vaddr: int, fn: Callable[[int], None]) -> int:
        """Call ``fn(pc)`` whenever a translated block starting at ``vaddr`` runs: a function's entry, or the
        instruction after an SVC (any address space).

        Cost: nothing while it does not fire (the engine's native block counter looks the address up), then
        one Python call each time.  Only for addresses that are always branched to, never fallen into:
        a block that runs through ``vaddr`` without starting there does not call ``fn``.
        """
        return self._machine.add_entry_hook(vaddr, self._guarded(fn, 1, f"the entry hook at {vaddr:#x}"))

    def at_address(self, vaddr: int, fn: Callable[[int], None]) -> int:
        """Call ``fn(pc)`` before every execution of the instruction at ``vaddr`` (any address space).

        Cost: one Python call per execution, and the code translated at ``vaddr`` carries a check, which
        slows every block containing it (about 30 % of a whole run for a hot kernel function): prefer
        :meth:`at_entry` for function entries.
        """
        return self._machine.add_address_hook(vaddr, self._guarded(fn, 1, f"the address hook at {vaddr:#x}"))

    def on_blocks(self, fn: Callable[[int, int], None], *, begin: int = 0, end: int = 0xFFFFFFFF) -> int:
        """Call ``fn(pc, size)`` at every translated block executed whose first instruction is in
        ``[begin, end]`` (virtual, any address space; ``size`` in bytes).

        Cost: one Python call per block run in the range (about 1 µs; over all code, about a 10x slowdown),
        and adding or removing it drops the translated code so that it is translated again (milliseconds).
        Keep the range to the code of interest, and add it only while that code can run.
        """
        return self._machine.add_block_hook(self._guarded(fn, 2, f"the block hook on {begin:#x}-{end:#x}"), begin, end)

    def remove(self, handle: int) -> None:
        """Stop a hook at once; an unknown or already removed handle is ignored."""
        self._machine.remove_hook(handle)

    def _guarded(self, fn: Callable[..., None], arity: int, what: str) -> Callable[..., None]:
        """``fn``, checked now, and reporting its exceptions as this plugin's failures when it runs."""
        if not callable(fn):
            raise PluginError(f"plugin '{self._owner}' gave {what} {fn!r}, which is not callable")
        try:
            inspect.signature(fn).bind(*range(arity))
        except TypeError as exc:
            takes = "(pc)" if arity == 1 else "(pc, size)"
            raise PluginError(
                f"plugin '{self._owner}' gave {what} {_name(fn)}, which cannot take {takes}: {exc}"
            ) from None
        except ValueError:
            pass  # a builtin whose signature Python cannot read: it is called as it is
        failed = self._failed
        if failed is None:
            return fn
        owner = self._owner

        def hook(*args: int) -> None:
            try:
                fn(*args)
            except (Exception, SystemExit) as exc:  # a plugin's sys.exit() is its failure, not the run's end
                raised = failed(owner, what, exc)
                if raised is not None:
                    raise raised from exc

        return hook


def _name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
