"""Named callbacks: one plugin creates them, others register functions that run in registration order."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qppsuite.errors import PluginError

if TYPE_CHECKING:
    from qppsuite.core.qpp.failures import PluginCallbackError
    from qppsuite.core.qpp.registry import QPP


class Callback:
    """A named callback created by one plugin; others register functions to run on it.

    Functions run in registration order.  An exception in one function is
    reported (once per registering plugin) and the remaining functions still
    run; in strict mode the first failure is raised after all of them ran.
    Registering or unregistering replaces the tuple, so a function may
    unregister itself while the callback is running.
    """

    __slots__ = ("_entries", "_qpp", "name", "plugin")

    def __init__(self, plugin: str, name: str, qpp: QPP) -> None:
        self.plugin = plugin
        self.name = name
        self._qpp = qpp
        self._entries: tuple[tuple[Callable[..., Any], str], ...] = ()

    @property
    def qualname(self) -> str:
        """``plugin:callback``, the spelling used in every message."""
        return f"{self.plugin}:{self.name}"

    @property
    def registered(self) -> tuple[tuple[Callable[..., Any], str], ...]:
        """``(function, owner plugin)`` pairs in the order they run."""
        return self._entries

    def register(self, fn: Callable[..., Any], owner: str) -> None:
        """Append ``fn``; registering one function twice is refused (unregister would be ambiguous)."""
        if not callable(fn):
            raise PluginError(f"plugin '{owner}' registered {fn!r} on {self.qualname}, which is not callable")
        for existing, by in self._entries:
            if existing == fn:
                raise PluginError(f"{_fn_name(fn)} is already registered on {self.qualname} by '{by}'")
        self._entries = (*self._entries, (fn, owner))

    def unregister(self, fn: Callable[..., Any]) -> None:
        """Remove ``fn``; an unregistered function is an error, which catches stale bound methods."""
        kept = tuple(entry for entry in self._entries if entry[0] != fn)
        if len(kept) == len(self._entries):
            present = ", ".join(_fn_name(f) for f, _ in self._entries) or "nothing"
            raise PluginError(f"{_fn_name(fn)} is not registered on {self.qualname}; registered: {present}")
        self._entries = kept

    def _drop_owner(self, owner: str) -> None:
        self._entries = tuple(entry for entry in self._entries if entry[1] != owner)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        first: PluginCallbackError | None = None
        for fn, owner in self._entries:
            try:
                fn(*args, **kwargs)
            except (Exception, SystemExit) as exc:  # a plugin's sys.exit() is its failure, not the run's end
                raised = self._qpp._failed(owner, self.qualname, exc)
                if first is None:
                    first = raised
        if first is not None:
            raise first

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:
        return f"<Callback {self.qualname} ({len(self._entries)} registered)>"


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
