"""Exported functions: plugin methods marked with :func:`export`, imported by others as bound methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from qppsuite.core.qpp.plugin import Plugin

_EXPORT_MARK = "__qpp_export__"

F = TypeVar("F", bound=Callable[..., Any])


def export(fn: F) -> F:
    """Mark a plugin method as callable by other plugins through :meth:`QPP.import_function`."""
    setattr(fn, _EXPORT_MARK, True)
    return fn


def exported_functions(cls: type[Plugin]) -> dict[str, Callable[..., Any]]:
    """The functions a plugin class exports, by name, in definition order (bases first)."""
    found: dict[str, Callable[..., Any]] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            if callable(value) and getattr(value, _EXPORT_MARK, False):
                found[attr] = value
            elif attr in found:
                del found[attr]  # a subclass redefined it without @export
    return found
