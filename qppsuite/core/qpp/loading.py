"""Where plugins come from: built-in modules, ``qppsuite.plugins`` entry points, files and classes.

Discovery imports nothing; a plugin's code is imported when it is loaded, and
its class is checked then (:func:`~qppsuite.core.qpp.plugin.validated`).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from qppsuite.core.qpp.plugin import Plugin, validated
from qppsuite.errors import PluginError

ENTRY_POINT_GROUP = "qppsuite.plugins"
BUILTIN_PACKAGE = "qppsuite.plugins"


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from; ``str()`` is what error messages print.

    ``rivals`` are the other sources that claim the same name (see
    :func:`discover`); a source with rivals refuses to load.
    """

    kind: str  # "built-in", "entry point", "file", "class" or "host"
    location: str  # module name, entry-point value, resolved path, or qualified class name
    name: str | None = None  # the name the source promises (module or entry-point name)
    detail: str = field(default="", compare=False)  # e.g. the distribution behind an entry point
    cls: type[Plugin] | None = field(default=None, compare=False, repr=False)
    rivals: tuple[PluginSource, ...] = field(default=(), compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind == "entry point":
            text = f"entry point {self.name} = {self.location}"
            return f"{text} ({self.detail})" if self.detail else text
        return f"{self.kind} {self.location}"

    def plugin_class(self) -> type[Plugin]:
        """Import the source and return its validated :class:`Plugin` subclass."""
        if self.rivals:
            claimants = [str(source) for source in (self, *self.rivals)]
            count = "two" if len(claimants) == 2 else str(len(claimants))
            raise PluginError(
                f"{count} plugins are named '{self.name}': {', '.join(claimants[:-1])} and {claimants[-1]}",
                hint="uninstall all but one of them (`qppsuite plugins` lists each)",
            )
        if self.cls is not None:
            found: object = self.cls
        elif self.kind == "file":
            found = _class_from_module(_import_file(Path(self.location), self), self)
        elif self.kind == "entry point":
            entry = importlib.metadata.EntryPoint(self.name or "", self.location, ENTRY_POINT_GROUP)
            loaded = _guarded_import(entry.load, self)
            found = _class_from_module(loaded, self) if isinstance(loaded, ModuleType) else loaded
        else:
            found = _class_from_module(_guarded_import(lambda: importlib.import_module(self.location), self), self)
        return validated(found, self)


def _guarded_import(do: Callable[[], Any], source: PluginSource) -> Any:
    try:
        return do()
    except PluginError as err:
        raise PluginError(f"cannot import {source}: {err}") from err
    except Exception as err:
        raise PluginError(f"cannot import {source}: {type(err).__name__}: {err}") from err


def _import_file(path: Path, source: PluginSource) -> ModuleType:
    """Import a plugin file once per process, so its classes keep one identity."""
    if not path.is_file():
        raise PluginError(f"plugin file {path} does not exist")
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"qppsuite_file_plugin_{stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and typing resolve names through sys.modules
    loader = spec.loader
    try:
        _guarded_import(lambda: loader.exec_module(module), source)
    except PluginError:
        del sys.modules[module_name]
        raise
    return module


def _class_from_module(module: ModuleType, source: PluginSource) -> object:
    """The module's ``plugin`` attribute, or else the one Plugin subclass it defines."""
    if hasattr(module, "plugin"):
        return module.plugin
    defined = [
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Plugin) and value.__module__ == module.__name__
    ]
    if len(defined) == 1:
        return defined[0]
    if not defined:
        raise PluginError(f"{source} defines no Plugin subclass and no `plugin` attribute")
    names = ", ".join(c.__name__ for c in defined)
    raise PluginError(f"{source} defines several Plugin subclasses ({names}); set `plugin = <the one>`")


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def discover_all() -> list[PluginSource]:
    """Every plugin source installed: built-in modules, then ``qppsuite.plugins`` entry points.

    Nothing is imported here.  One name may come more than once (two
    distributions, or a distribution and a built-in); :func:`discover` is the
    view by name.  The same entry point seen twice is one source.
    """
    found: list[PluginSource] = []
    package = importlib.import_module(BUILTIN_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            found.append(PluginSource("built-in", f"{BUILTIN_PACKAGE}.{info.name}", info.name))
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        detail = f"{dist.metadata['Name']} {dist.version}" if dist is not None else ""
        source = PluginSource("entry point", entry.value, entry.name, detail)
        if source not in found:
            found.append(source)
    return found


def discover() -> dict[str, PluginSource]:
    """Plugins available by name, from :func:`discover_all`.

    A name that several sources claim maps to the first, with the others as
    its ``rivals``: loading it is refused with a message naming each, because
    which one would load is otherwise a guess.  Every other name is unaffected.
    """
    claims: dict[str, list[PluginSource]] = {}
    for source in discover_all():
        claims.setdefault(source.name or "", []).append(source)
    return {
        name: replace(first, rivals=tuple(others)) if others else first
        for name, (first, *others) in claims.items()
    }


def resolve(spec: str | type[Plugin]) -> PluginSource:
    """Turn a ``--plugins`` item (name, path to a .py file, or a Plugin class) into its source."""
    if isinstance(spec, type):
        return PluginSource("class", f"{spec.__module__}.{spec.__qualname__}", cls=spec)
    if _is_path(spec):
        return PluginSource("file", str(Path(spec).expanduser().resolve()))
    available = discover()
    if spec in available:
        return available[spec]
    raise PluginError(
        unknown_name(f"unknown plugin '{spec}'", spec, available),
        hint=f"installed plugins are looked up in the Python environment at {sys.prefix}: one installed with "
        "another interpreter's pip is not seen (python -m pip install ...; python -m qppsuite ...)",
    )


def unknown_name(message: str, asked: str, existing: Iterable[str], label: str = "available") -> str:
    """``message`` plus a close-match suggestion and the list of what exists."""
    names = sorted(existing)
    close = difflib.get_close_matches(asked, names, n=1)
    suggestion = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{message}{suggestion}; {label}: {', '.join(names) or 'none'}"
