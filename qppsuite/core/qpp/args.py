"""Declared plugin arguments: ``-p plugin:key=value`` is parsed and checked before any plugin runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from qppsuite.errors import PluginError

if TYPE_CHECKING:
    from qppsuite.core.qpp.plugin import Plugin

_ARG_TYPE_NAMES: dict[type, str] = {str: "str", int: "int", bool: "bool", float: "float", Path: "path"}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Arg:
    """A declared plugin argument, so ``-p plugin:key=value`` is checked before any plugin runs."""

    __slots__ = ("choices", "default", "help", "type")

    def __init__(self, type: type, default: Any, help: str = "", choices: Sequence[Any] | None = None) -> None:
        if type not in _ARG_TYPE_NAMES:
            raise PluginError(
                f"plugin argument type {getattr(type, '__name__', type)!r} is not supported; "
                f"supported: {', '.join(_ARG_TYPE_NAMES.values())}"
            )
        self.type = type
        self.default = default
        self.help = help
        self.choices: tuple[Any, ...] | None = tuple(choices) if choices is not None else None
        if self.choices is not None and default is not None and default not in self.choices:
            raise PluginError(f"plugin argument default {default!r} is not one of {self._choice_text()}")

    @property
    def type_name(self) -> str:
        """The name users see in listings and error messages (``path`` rather than ``Path``)."""
        return _ARG_TYPE_NAMES[self.type]

    def parse(self, text: str) -> Any:
        """Convert a command-line string; ``ValueError`` says why it is not acceptable."""
        value: Any
        if self.type is bool:
            lowered = text.strip().lower()
            if lowered in _TRUE:
                value = True
            elif lowered in _FALSE:
                value = False
            else:
                raise ValueError(f"{text!r} is not a bool (use true/false, yes/no, on/off, 1/0)")
        elif self.type is int:
            try:
                value = int(text, 0)  # base 0: guest addresses are naturally written in hex
            except ValueError:
                raise ValueError(f"{text!r} is not an int") from None
        elif self.type is float:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a float") from None
        elif self.type is Path:
            value = Path(text).expanduser()
        else:
            value = text
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{text!r} is not one of {self._choice_text()}")
        return value

    def _choice_text(self) -> str:
        return ", ".join(str(c) for c in self.choices or ())

    def __repr__(self) -> str:
        extra = f", choices={list(self.choices)!r}" if self.choices is not None else ""
        return f"Arg({self.type_name}, {self.default!r}{extra})"


class PluginArgs(SimpleNamespace):
    """Parsed argument values of one plugin, read as attributes (``self.args.dump``)."""

    def __getattr__(self, key: str) -> Any:
        declared = ", ".join(vars(self)) or "none"
        raise AttributeError(f"no plugin argument {key!r}; declared: {declared}")


def bind_args(cls: type[Plugin], given: dict[str, str]) -> PluginArgs:
    """Parse one plugin's ``key=value`` strings against its declared :class:`Arg` s."""
    declared: dict[str, Arg] = cls.args
    unknown = sorted(set(given) - set(declared))
    if unknown:
        if declared:
            valid = ", ".join(f"{key} ({arg.type_name})" for key, arg in declared.items())
            raise PluginError(f"plugin '{cls.name}' has no argument '{unknown[0]}'; its arguments: {valid}")
        raise PluginError(f"plugin '{cls.name}' has no argument '{unknown[0]}'; it takes no arguments")
    values: dict[str, Any] = {}
    for key, arg in declared.items():
        if key not in given:
            values[key] = arg.default
            continue
        try:
            values[key] = arg.parse(given[key])
        except ValueError as err:
            raise PluginError(f"plugin '{cls.name}' argument '{key}': {err}") from None
    return PluginArgs(**values)


def parse_plugin_args(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """Split repeated ``-p plugin:key=value`` options into ``{plugin: {key: value}}``.

    Giving one key twice is refused rather than silently letting the last win,
    because in a long command line that is almost always a mistake.
    """
    result: dict[str, dict[str, str]] = {}
    for item in items:
        plugin, colon, rest = item.partition(":")
        key, equals, value = rest.partition("=")
        plugin, key = plugin.strip(), key.strip()
        if not (colon and equals and plugin and key):
            raise PluginError(f"plugin argument {item!r} is not of the form plugin:key=value")
        values = result.setdefault(plugin, {})
        if key in values:
            raise PluginError(f"plugin argument '{plugin}:{key}' is given twice")
        values[key] = value
    return result


def parse_plugin_list(values: Iterable[str]) -> list[str]:
    """Split ``--plugins a,b,./x.py`` (possibly repeated) into specs, in the order given."""
    return [spec.strip() for value in values for spec in value.split(",") if spec.strip()]
