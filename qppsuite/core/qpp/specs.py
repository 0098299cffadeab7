"""Callback specifications: the signature a plugin promises for each callback it creates.

A plugin declares ``callbacks = (CallbackSpec("on_x", "what it means", event=Event), ...)``.  Every
function registered on ``on_x`` is checked against the specification when it registers, the way pluggy
checks a hook implementation against its hookspec: each of its parameters must be one of the
specification's (by name; a subset is enough), so a mistake fails at load time naming the plugin, the
callback and the parameter, not in the middle of a run.  Callbacks are called with keywords only, so a
later version can add an argument without breaking a function that does not take it.
"""

from __future__ import annotations

import inspect
import keyword
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qppsuite.errors import PluginError

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: A module path in a type's text (``qppsuite.plugins.osi_linux.model.``), left out of what users read.
_MODULE_PATH = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])")


@dataclass(frozen=True)
class CallbackSpec:
    """One callback a plugin creates: its name, one line saying when it runs, and its parameters.

    ``CallbackSpec("on_syscall_return", "a system call returned", ctx=SyscallContext, retval=int)``:
    the keyword arguments after the description are the parameters, in order, with their types (a type
    or its name as a string).  The types document the callback (``qppsuite plugins NAME`` shows them);
    the names are what registration checks and what the callback passes.
    """

    name: str
    doc: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __init__(self, name: str, doc: str = "", /, **params: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "doc", doc)
        object.__setattr__(self, "params", params)

    @property
    def signature(self) -> str:
        """``on_x(event: Event)``, as ``qppsuite plugins NAME`` prints it."""
        return f"{self.name}({', '.join(f'{p}: {type_name(t)}' for p, t in self.params.items())})"

    def problem(self) -> str | None:
        """What is wrong with the declaration itself, or None."""
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name) or keyword.iskeyword(self.name):
            return f"callback name {self.name!r} is not an identifier"
        if not isinstance(self.doc, str):
            return f"callback '{self.name}': the description must be a string, got {self.doc!r}"
        for param in self.params:
            if not _NAME_RE.match(param) or keyword.iskeyword(param):
                return f"callback '{self.name}': parameter {param!r} is not an identifier"
        return None


def type_name(kind: Any) -> str:
    """A parameter's type as a reader writes it: ``SyscallContext``, ``OsiThread | None`` (no module paths)."""
    if isinstance(kind, str):
        return kind
    if isinstance(kind, type):
        return kind.__name__
    return _MODULE_PATH.sub("", repr(kind))


def positional_caller(spec: CallbackSpec, fn: Callable[..., Any], owner: str, where: str) -> Callable[..., Any]:
    """What the callback runs for ``fn``: a function taking the specification's arguments positionally, in its
    order, and passing ``fn`` those it takes by name (``fn`` itself when it takes them all, in that order).

    Raises :class:`~qppsuite.errors.PluginError` naming ``owner``, ``where`` (``plugin:callback``) and the
    parameter when ``fn`` cannot be called with keywords from ``spec``: a parameter the specification does not
    have (without a default), a positional-only one without a default, or a function whose signature cannot
    be read (some builtins).
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise PluginError(
            f"plugin '{owner}' registered {_fn_name(fn)} on {where}: its signature cannot be read ({exc})"
        ) from exc
    _check_self(spec, fn, owner, where)
    taken: list[str] = []
    leading = True  # what fn takes are its first parameters, positional-or-keyword: it can take them by position
    everything = False
    for index, param in enumerate(signature.parameters.values()):
        if param.kind is param.VAR_KEYWORD:
            everything = True
        elif param.kind is param.VAR_POSITIONAL:
            if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
                raise PluginError(
                    f"plugin '{owner}' registered {_fn_name(fn)} on {where}: parameter '*{param.name}' would get "
                    f"nothing: {spec.signature} passes its arguments by name",
                    hint="take them by name, or all of them with **kwargs",
                )
        elif param.name in spec.params and param.kind is not param.POSITIONAL_ONLY:
            leading = leading and param.kind is param.POSITIONAL_OR_KEYWORD and index == len(taken)
            taken.append(param.name)
        elif param.default is param.empty:
            reason = "is positional-only in" if param.name in spec.params else "is not an argument of"
            raise PluginError(
                f"plugin '{owner}' registered {_fn_name(fn)} on {where}: parameter '{param.name}' {reason} "
                f"{spec.signature}",
                hint="a callback function takes some or all of the callback's arguments, by name",
            )
    names = tuple(spec.params)
    if everything:
        return lambda *args: fn(**dict(zip(names, args, strict=True)))
    positions = [names.index(name) for name in taken]
    if not taken:
        return lambda *_: fn()
    if leading:  # by position, the cheapest call
        if positions == list(range(len(names))):
            return fn
        if len(positions) == 1:
            (position,) = positions
            return lambda *args: fn(args[position])
        pick = operator.itemgetter(*positions)
        return lambda *args: fn(*pick(args))
    if len(taken) == 1:
        (name,), (position,) = taken, positions
        return lambda *args: fn(**{name: args[position]})
    pick = operator.itemgetter(*positions)
    return lambda *args: fn(**dict(zip(taken, pick(args), strict=True)))


def _check_self(spec: CallbackSpec, fn: Callable[..., Any], owner: str, where: str) -> None:
    """Refuse a method written without ``self``: its first parameter, named like one of the callback's
    arguments, would receive the plugin object instead."""
    function = getattr(fn, "__func__", None)
    if function is None or not inspect.ismethod(fn):
        return
    try:
        first = next(iter(inspect.signature(function).parameters.values()), None)
    except (TypeError, ValueError):
        return
    if first is not None and first.name in spec.params:
        raise PluginError(
            f"plugin '{owner}' registered {_fn_name(fn)} on {where}: its first parameter '{first.name}' would "
            f"receive the object it is bound to, not {spec.name}'s '{first.name}'",
            hint="a method's first parameter is self",
        )


def _fn_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
