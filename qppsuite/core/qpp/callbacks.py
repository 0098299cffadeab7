"""Named callbacks: one plugin creates them, others register functions that run in registration order."""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qppsuite.core.qpp.specs import CallbackSpec, positional_caller
from qppsuite.errors import PluginError

if TYPE_CHECKING:
    from qppsuite.core.qpp.registry import QPP


class Callback:
    """A named callback created by one plugin; others register functions to run on it.

    It is called with keywords only, the arguments of its :class:`CallbackSpec`; each function receives
    those of them it takes (checked when it registers: :func:`~qppsuite.core.qpp.specs.picks`).
    Functions run in registration order.  An exception in one function is
    reported (once per registering plugin) and the remaining functions still
    run; in strict mode the first failure is raised after all of them ran.
    Registering or unregistering replaces the tuple, so a function may
    unregister itself while the callback is running.
    """

    __slots__ = ("_calls", "_entries", "_qpp", "name", "plugin", "spec")

    def __new__(cls, plugin: str, spec: CallbackSpec, qpp: QPP) -> Callback:
        # A class of its own, so that a caller's mistake names it: "syscalls:on_syscall() got an unexpected
        # keyword argument 'bogus'", "... takes 1 positional argument but 2 were given".
        loop = _dispatch_loop(tuple(spec.params))
        named = types.FunctionType(loop.__code__.replace(co_qualname=f"{plugin}:{spec.name}"), loop.__globals__)
        return object.__new__(type("Callback", (Callback,), {"__slots__": (), "__call__": named}))

    def __init__(self, plugin: str, spec: CallbackSpec, qpp: QPP) -> None:
        self.plugin = plugin
        self.spec = spec
        self.name = spec.name
        self._qpp = qpp
        #: (function, owner, what runs it: see :func:`~qppsuite.core.qpp.specs.positional_caller`)
        self._entries: tuple[tuple[Callable[..., Any], str, Callable[..., Any]], ...] = ()
        #: (what runs it, owner), in order: the dispatch loop's view of the entries.
        self._calls: tuple[tuple[Callable[..., Any], str], ...] = ()

    @property
    def qualname(self) -> str:
        """``plugin:callback``, the spelling used in every message."""
        return f"{self.plugin}:{self.name}"

    @property
    def registered(self) -> tuple[tuple[Callable[..., Any], str], ...]:
        """``(function, owner plugin)`` pairs in the order they run."""
        return tuple((fn, owner) for fn, owner, _ in self._entries)

    def register(self, fn: Callable[..., Any], owner: str) -> None:
        """Append ``fn`` once its parameters are checked against the specification.

        Raises :class:`~qppsuite.errors.PluginError` when ``fn`` is not callable, takes a parameter the
        callback does not pass, or is registered already (unregister would be ambiguous).
        """
        if not callable(fn):
            raise PluginError(f"plugin '{owner}' registered {fn!r} on {self.qualname}, which is not callable")
        for existing, by, _ in self._entries:
            if existing == fn:
                raise PluginError(f"{_fn_name(fn)} is already registered on {self.qualname} by '{by}'")
        self._set((*self._entries, (fn, owner, positional_caller(self.spec, fn, owner, self.qualname))))

    def _set(self, entries: tuple[tuple[Callable[..., Any], str, Callable[..., Any]], ...]) -> None:
        self._entries = entries
        self._calls = tuple((call, owner) for _, owner, call in entries)

    def unregister(self, fn: Callable[..., Any]) -> None:
        """Remove ``fn``; an unregistered function is an error, which catches stale bound methods."""
        kept = tuple(entry for entry in self._entries if entry[0] != fn)
        if len(kept) == len(self._entries):
            present = ", ".join(_fn_name(f) for f, _, _ in self._entries) or "nothing"
            raise PluginError(f"{_fn_name(fn)} is not registered on {self.qualname}; registered: {present}")
        self._set(kept)

    def _drop_owner(self, owner: str) -> None:
        self._set(tuple(entry for entry in self._entries if entry[1] != owner))

    def __call__(self, **kwargs: Any) -> None:
        """Run every registered function; replaced, for each list of parameters, by :func:`_dispatcher`'s."""
        raise NotImplementedError  # every instance is of a _dispatcher class

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:
        return f"<Callback {self.qualname} ({len(self._entries)} registered)>"


_DISPATCH = """\
def __call__(_self{params}):
    _first = None
    for _call, _owner in _self._calls:
        try:
            _call({args})
        except (Exception, SystemExit) as _exc:  # a plugin's sys.exit() is its failure, not the run's end
            _raised = _self._qpp._failed(_owner, _self.qualname, _exc)
            if _first is None:
                _first = _raised
    if _first is not None:
        raise _first
"""
"""The dispatch loop; its own names start with ``_``, which no parameter's name may (:meth:`CallbackSpec.problem`)."""


@functools.cache
def _dispatch_loop(params: tuple[str, ...]) -> types.FunctionType:
    """The ``__call__`` of a :class:`Callback` that takes exactly ``params``, keyword-only.

    The loop is generated once per list of parameters, as :mod:`dataclasses` generates ``__init__``: a call
    with keywords then binds them natively (a missing or unknown one is the caller's ``TypeError``) and runs
    each function with positional arguments, which costs what API v1's positional dispatch cost
    (bench/qpp.py).  The names are identifiers and not keywords (:meth:`CallbackSpec.problem`).  Its frames
    are this file's, which a plugin's traceback leaves out (:meth:`PluginFailure.traceback`).
    """
    namespace: dict[str, Any] = {}
    source = _DISPATCH.format(params=", *, " + ", ".join(params) if params else "", args=", ".join(params))
    exec(compile(source, __file__, "exec"), namespace)
    loop: types.FunctionType = namespace["__call__"]
    return loop


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
