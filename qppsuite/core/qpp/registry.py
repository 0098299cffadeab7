"""QPP, the plugin-to-plugin system: unique names, exports, callbacks, requirements.

This is the Python form of the QEMU "plugin-to-plugin" series.  Every analysis
plugin has a unique name, may export functions, may create named callbacks that
others register on, and may require other plugins, which load first.  The host
(the machine, or a test) owns one :class:`QPP` and drives the lifecycle:
``load_all`` -> ``start_all`` -> ``stop_all(reason)`` -> ``unload_all``.

Everything a user can get wrong fails *at load time* with a
:class:`~qppsuite.errors.PluginError` that names what was asked for and what
exists, so a typo never surfaces as a crash an hour into a guest run.  Two hot
paths are kept free of bookkeeping because the core fires ``on_svc`` on every
system call: running a :class:`Callback` is a loop over a tuple, and an imported
function is the exporting plugin's bound method itself.

This module knows no plugin by name and imports nothing from the machine; the
core exposes itself through :meth:`QPP.add_builtin` like any other plugin.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import pkgutil
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace, TracebackType
from typing import Any, ClassVar, TypeVar

from qppsuite.errors import PluginError

API_VERSION = 1
"""The plugin API a plugin is built for; bump it when a change breaks existing plugins."""

ENTRY_POINT_GROUP = "qppsuite.plugins"
BUILTIN_PACKAGE = "qppsuite.plugins"

logger = logging.getLogger("qppsuite.qpp")

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_EXPORT_MARK = "__qpp_export__"
_TRACEBACK_FRAMES = 8

F = TypeVar("F", bound=Callable[..., Any])


class PluginCallbackError(PluginError):
    """Strict mode: a plugin raised in a callback or a lifecycle method, so the run must stop."""

    def __init__(self, failure: PluginFailure) -> None:
        super().__init__(str(failure), hint="run without --strict to report plugin errors and carry on")
        self.failure = failure


# --------------------------------------------------------------------------- arguments


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


# --------------------------------------------------------------------------- plugins


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


class Plugin:
    """Base class of every analysis plugin.

    ``args`` is two things on purpose (the contract others code against): on the
    class, the dict of declared :class:`Arg` s; on a loaded instance, the
    :class:`PluginArgs` namespace of parsed values.  It is typed ``Any`` so that
    both ``args = {...}`` declarations and ``self.args.key`` reads type-check.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    api_version: ClassVar[int] = API_VERSION
    args: ClassVar[Any] = {}
    callbacks: ClassVar[tuple[str, ...]] = ()

    # Set by the manager before load().
    qpp: QPP
    machine: Any

    def load(self) -> None:
        """Import functions and register on other plugins' callbacks; requirements are loaded."""

    def start(self) -> None:
        """The guest is about to run."""

    def stop(self, reason: Any) -> None:
        """The guest stopped; ``reason`` is the core's stop-reason object."""

    def unload(self) -> None:
        """Flush and close; called even when the run ends on an error or Ctrl-C."""

    def callback(self, name: str) -> Callback:
        """One of this plugin's own callbacks, to run it; fetch it once in ``load`` on hot paths."""
        return self.qpp.callback(self.name, name)

    def __repr__(self) -> str:
        return f"<plugin {getattr(self, 'name', '?')} {type(self).__qualname__}>"


def plugin_description(cls: type[Plugin]) -> str:
    """The one-line description: ``description`` or else the docstring's first line."""
    if cls.description:
        return cls.description
    doc = inspect.getdoc(cls) if cls.__doc__ else None
    return doc.splitlines()[0] if doc else ""


# --------------------------------------------------------------------------- callbacks


@dataclass(frozen=True)
class PluginFailure:
    """An exception a plugin raised in a callback function or a lifecycle method."""

    plugin: str
    where: str
    error: BaseException

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' raised in {self.where}: {type(self.error).__name__}: {self.error}"

    def traceback(self) -> str:
        """The plugin's own frames only (QPP's dispatch frames are noise to a plugin author)."""
        frames = [f for f in traceback.extract_tb(self.error.__traceback__) if f.filename != __file__]
        lines = traceback.StackSummary.from_list(frames[-_TRACEBACK_FRAMES:]).format()
        lines += traceback.format_exception_only(type(self.error), self.error)
        return "".join(lines).rstrip("\n")


def log_failure(failure: PluginFailure) -> None:
    """Default reporter: one log record with the plugin's name and a short traceback."""
    logger.error("%s\n%s", failure, failure.traceback())


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


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from; ``str()`` is what error messages print."""

    kind: str  # "built-in", "entry point", "file", "class" or "host"
    location: str  # module name, entry-point value, resolved path, or qualified class name
    name: str | None = None  # the name the source promises (module or entry-point name)
    detail: str = field(default="", compare=False)  # e.g. the distribution behind an entry point
    cls: type[Plugin] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        if self.kind == "entry point":
            text = f"entry point {self.name} = {self.location}"
            return f"{text} ({self.detail})" if self.detail else text
        return f"{self.kind} {self.location}"

    def plugin_class(self) -> type[Plugin]:
        """Import the source and return its validated :class:`Plugin` subclass."""
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
        return _validated(found, self)


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


def _validated(found: object, source: PluginSource) -> type[Plugin]:
    """Check a plugin class's declarations, so mistakes surface when it loads, not mid-run."""
    if not (isinstance(found, type) and issubclass(found, Plugin)):
        raise PluginError(f"{source} provides {found!r}, which is not a Plugin subclass")
    cls = found
    name = getattr(cls, "name", None)
    label = f"plugin '{name}' ({source})" if isinstance(name, str) else str(source)
    if cls.api_version != API_VERSION:
        raise PluginError(
            f"{label} is built for plugin API v{cls.api_version}; this qppsuite provides API v{API_VERSION}"
        )
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PluginError(f"{source}: plugin class {cls.__qualname__} needs a `name` of letters, digits, _")
    if source.name is not None and name != source.name:
        raise PluginError(f"{source} provides a plugin named '{name}'; it must be named '{source.name}'")
    if isinstance(cls.requires, str) or not all(isinstance(r, str) for r in cls.requires):
        raise PluginError(f"{label}: `requires` must be a tuple of plugin names, got {cls.requires!r}")
    if name in cls.requires:
        raise PluginError(f"{label} requires itself")
    if isinstance(cls.callbacks, str) or not all(isinstance(c, str) and _NAME_RE.match(c) for c in cls.callbacks):
        raise PluginError(f"{label}: `callbacks` must be a tuple of identifiers, got {cls.callbacks!r}")
    if len(set(cls.callbacks)) != len(cls.callbacks):
        raise PluginError(f"{label} declares a callback twice: {', '.join(cls.callbacks)}")
    if not isinstance(cls.args, dict) or not all(
        isinstance(k, str) and _NAME_RE.match(k) and isinstance(v, Arg) for k, v in cls.args.items()
    ):
        raise PluginError(f"{label}: `args` must map identifiers to Arg(...), got {cls.args!r}")
    return cls


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def discover() -> dict[str, PluginSource]:
    """Plugins available by name: built-in modules and the ``qppsuite.plugins`` entry points.

    Nothing is imported here; two sources claiming one name is an error
    naming both, because which one would load is otherwise a guess.
    """
    found: dict[str, PluginSource] = {}
    package = importlib.import_module(BUILTIN_PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            found[info.name] = PluginSource("built-in", f"{BUILTIN_PACKAGE}.{info.name}", info.name)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        detail = f"{dist.metadata['Name']} {dist.version}" if dist is not None else ""
        source = PluginSource("entry point", entry.value, entry.name, detail)
        other = found.get(entry.name)
        if other is not None and other != source:
            raise PluginError(f"two plugins are named '{entry.name}': {other} and {source}")
        found[entry.name] = source
    return found


def resolve(spec: str | type[Plugin]) -> PluginSource:
    """Turn a ``--plugins`` item (name, path to a .py file, or a Plugin class) into its source."""
    if isinstance(spec, type):
        return PluginSource("class", f"{spec.__module__}.{spec.__qualname__}", cls=spec)
    if _is_path(spec):
        return PluginSource("file", str(Path(spec).expanduser().resolve()))
    available = discover()
    if spec in available:
        return available[spec]
    raise PluginError(_unknown(f"unknown plugin '{spec}'", spec, available))


def _unknown(message: str, asked: str, existing: Iterable[str], label: str = "available") -> str:
    """``message`` plus a close-match suggestion and the list of what exists."""
    names = sorted(existing)
    close = difflib.get_close_matches(asked, names, n=1)
    suggestion = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{message}{suggestion}; {label}: {', '.join(names) or 'none'}"


# --------------------------------------------------------------------------- the manager


class QPP:
    """The plugin manager of one run: loads plugins, resolves imports, owns callbacks.

    Use it as a context manager so ``unload_all`` runs however the run ends::

        with QPP(machine, strict=strict) as qpp:
            qpp.add_builtin(core_plugin)
            qpp.load_all(parse_plugin_list(plugins), parse_plugin_args(p_items))
            qpp.start_all()
            reason = machine.run()
            qpp.stop_all(reason)
    """

    def __init__(self, machine: Any = None, *, strict: bool = False) -> None:
        self.machine = machine
        self.strict = strict
        self.reporter: Callable[[PluginFailure], None] = log_failure
        self._plugins: dict[str, Plugin] = {}
        self._sources: dict[str, PluginSource] = {}
        self._callbacks: dict[str, dict[str, Callback]] = {}
        self._failures: dict[tuple[str, str], int] = {}
        self._first_failures: list[PluginFailure] = []
        self._started = False
        self._closed = False

    # -- loading ---------------------------------------------------------------

    def add_builtin(self, plugin: Plugin) -> None:
        """Add a plugin the host constructed itself (the core), with default arguments."""
        self._check_loadable()
        kind = type(plugin)
        source = PluginSource("host", f"{kind.__module__}.{kind.__qualname__}", cls=kind)
        cls = _validated(kind, source)
        self._check_unique(cls.name, source)
        missing = [r for r in cls.requires if r not in self._plugins]
        if missing:
            raise PluginError(
                _unknown(f"host plugin '{cls.name}' requires '{missing[0]}'", missing[0], self._plugins, "loaded")
            )
        self._activate(plugin, source, bind_args(cls, {}))

    def load(self, spec: str | type[Plugin]) -> Plugin:
        """Load one plugin (a name, a path to a .py file, or a Plugin class) and its requirements."""
        source, cls = self._resolve(spec)
        self._load_resolved([(source, cls)], {})
        return self._plugins[cls.name]

    def load_all(self, specs: Sequence[str | type[Plugin]], args: dict[str, dict[str, str]] | None = None) -> None:
        """Load plugins and their requirements in dependency order, with ``-p`` arguments.

        Every spec, requirement and argument is checked before the first
        plugin's ``load()`` runs, so a typo costs nothing.  A spec naming an
        already-loaded plugin from the same source is a no-op.
        """
        self._load_resolved([self._resolve(spec) for spec in specs], args or {})

    def _resolve(self, spec: str | type[Plugin]) -> tuple[PluginSource, type[Plugin]]:
        """A loaded plugin's name resolves to itself (so ``--plugins core`` is harmless)."""
        if isinstance(spec, str) and spec in self._plugins:
            return self._sources[spec], type(self._plugins[spec])
        source = resolve(spec)
        return source, source.plugin_class()

    def _load_resolved(
        self, resolved: list[tuple[PluginSource, type[Plugin]]], args: dict[str, dict[str, str]]
    ) -> None:
        self._check_loadable()
        batch: dict[str, tuple[PluginSource, type[Plugin]]] = {}
        for source, cls in resolved:
            if cls.name in self._plugins:
                self._check_unique(cls.name, source)
                continue
            if cls.name in batch and batch[cls.name][0] != source:
                raise PluginError(f"two plugins are named '{cls.name}': {batch[cls.name][0]} and {source}")
            batch[cls.name] = (source, cls)
        order = self._plan(batch)
        planned = [cls.name for _, cls in order]
        for target in args:
            if target not in planned:
                raise PluginError(
                    f"arguments given for plugin '{target}', which this command does not load; "
                    f"loading: {', '.join(planned) or 'none'}"
                )
        bound = [(source, cls, bind_args(cls, args.get(cls.name, {}))) for source, cls in order]
        for source, cls, values in bound:
            try:
                plugin = cls()
            except Exception as err:
                raise PluginError(f"plugin '{cls.name}' failed to construct: {type(err).__name__}: {err}") from err
            self._activate(plugin, source, values)

    def _plan(self, batch: dict[str, tuple[PluginSource, type[Plugin]]]) -> list[tuple[PluginSource, type[Plugin]]]:
        """Depth-first over ``requires``: requirements first, a cycle shown as ``a -> b -> a``."""
        order: list[tuple[PluginSource, type[Plugin]]] = []
        done = set(self._plugins)
        path: list[str] = []
        available: dict[str, PluginSource] | None = None

        def visit(name: str) -> None:
            nonlocal available
            if name in done:
                return
            if name in path:
                cycle = [*path[path.index(name) :], name]
                raise PluginError(f"plugin requirement cycle: {' -> '.join(cycle)}")
            if name in batch:
                source, cls = batch[name]
            else:
                if available is None:
                    available = discover()
                if name not in available:
                    needer = f"plugin '{path[-1]}' requires" if path else "requirement"
                    raise PluginError(
                        _unknown(f"{needer} '{name}', which is not available", name, {*available, *done}),
                        hint=f"if '{name}' is a plugin file, list its path in --plugins as well",
                    )
                source = available[name]
                cls = source.plugin_class()
            path.append(name)
            for requirement in cls.requires:
                visit(requirement)
            path.pop()
            done.add(name)
            order.append((source, cls))

        for name in batch:
            visit(name)
        return order

    def _activate(self, plugin: Plugin, source: PluginSource, values: PluginArgs) -> None:
        """Bind, create its callbacks, run ``load()``; a failed load leaves no trace behind."""
        name = type(plugin).name
        plugin.qpp = self
        plugin.machine = self.machine
        vars(plugin)["args"] = values  # shadows the class-level declarations, see Plugin
        self._plugins[name] = plugin
        self._sources[name] = source
        self._callbacks[name] = {cb: Callback(name, cb, self) for cb in type(plugin).callbacks}
        try:
            plugin.load()
        except BaseException as err:
            self._forget(name)
            if isinstance(err, PluginError):
                raise PluginError(f"plugin '{name}' failed to load: {err}", hint=err.hint) from err
            if isinstance(err, Exception):
                raise PluginError(f"plugin '{name}' failed to load: {type(err).__name__}: {err}") from err
            raise

    def _forget(self, name: str) -> None:
        del self._plugins[name]
        del self._sources[name]
        del self._callbacks[name]
        for callbacks in self._callbacks.values():
            for cb in callbacks.values():
                cb._drop_owner(name)

    def _check_loadable(self) -> None:
        self._check_open()
        if self._started:
            raise PluginError("plugins must be loaded before the guest starts")

    def _check_open(self) -> None:
        if self._closed:
            raise PluginError("plugins were already unloaded; a new run needs a new QPP")

    def _check_unique(self, name: str, source: PluginSource) -> None:
        if name in self._sources and self._sources[name] != source:
            raise PluginError(f"two plugins are named '{name}': {self._sources[name]} (loaded) and {source}")

    # -- lookups ----------------------------------------------------------------

    @property
    def loaded(self) -> list[str]:
        """Names of the loaded plugins in load order (requirements before their users)."""
        return list(self._plugins)

    def get(self, name: str) -> Plugin:
        """The loaded plugin instance called ``name``."""
        try:
            return self._plugins[name]
        except KeyError:
            raise PluginError(_unknown(f"plugin '{name}' is not loaded", name, self._plugins, "loaded")) from None

    def source(self, name: str) -> PluginSource:
        """Where the loaded plugin ``name`` came from."""
        self.get(name)
        return self._sources[name]

    def import_function(self, plugin: str, function: str) -> Callable[..., Any]:
        """The exported function as the target's bound method, so calling it costs no lookup."""
        target = self._loaded_target(plugin, f"import {plugin}:{function}")
        exports = exported_functions(type(target))
        if function not in exports:
            listed = ", ".join(exports) or "nothing"
            raise PluginError(f"plugin '{plugin}' exports no function '{function}'; it exports: {listed}")
        bound: Callable[..., Any] = getattr(target, function)
        return bound

    def callback(self, plugin: str, name: str) -> Callback:
        """The callback ``plugin:name``; it exists once ``plugin`` is loaded."""
        self._loaded_target(plugin, f"use callback {plugin}:{name}")
        callbacks = self._callbacks[plugin]
        if name not in callbacks:
            listed = ", ".join(callbacks) or "none"
            raise PluginError(f"plugin '{plugin}' creates no callback '{name}'; it creates: {listed}")
        return callbacks[name]

    def register(self, plugin: str, callback: str, fn: Callable[..., Any], *, owner: str) -> None:
        """Run ``fn`` whenever ``plugin`` runs its callback ``callback``; ``owner`` is the registrant."""
        self.callback(plugin, callback).register(fn, owner)

    def unregister(self, plugin: str, callback: str, fn: Callable[..., Any]) -> None:
        """Stop running ``fn`` on ``plugin:callback``; an unregistered ``fn`` is an error."""
        self.callback(plugin, callback).unregister(fn)

    def _loaded_target(self, plugin: str, action: str) -> Plugin:
        if plugin not in self._plugins:
            raise PluginError(
                _unknown(f"cannot {action}: plugin '{plugin}' is not loaded", plugin, self._plugins, "loaded"),
                hint=f"list '{plugin}' in the importing plugin's `requires` so it loads first",
            )
        return self._plugins[plugin]

    # -- failures -------------------------------------------------------------------

    @property
    def failures(self) -> list[PluginFailure]:
        """The first failure of each ``(plugin, where)``, in the order they happened."""
        return list(self._first_failures)

    @property
    def failure_counts(self) -> dict[tuple[str, str], int]:
        """How often each ``(plugin, where)`` raised; only the first of each was reported."""
        return dict(self._failures)

    def _failed(self, plugin: str, where: str, error: BaseException) -> PluginCallbackError | None:
        """Report a plugin's exception the first time per (plugin, where); strict mode returns the error.

        A :class:`PluginCallbackError` coming out of a nested callback was
        already reported where it happened and is passed on unchanged.
        """
        if isinstance(error, PluginCallbackError):
            return error
        key = (plugin, where)
        count = self._failures.get(key, 0)
        self._failures[key] = count + 1
        failure = PluginFailure(plugin, where, error)
        if count == 0:
            self._first_failures.append(failure)
            try:
                self.reporter(failure)
            except Exception:
                logger.exception("the plugin failure reporter itself failed")
        if self.strict:
            raised = PluginCallbackError(failure)
            raised.__cause__ = error
            return raised
        return None

    def _run_each(self, names: Iterable[str], where: str, call: Callable[[Plugin], None]) -> None:
        """Call every plugin even if some raise; strict mode raises the first failure afterwards."""
        first: PluginCallbackError | None = None
        for name in names:
            try:
                call(self._plugins[name])
            except (Exception, SystemExit) as exc:
                raised = self._failed(name, where, exc)
                if first is None:
                    first = raised
        if first is not None:
            raise first

    # -- lifecycle -------------------------------------------------------------------

    def start_all(self) -> None:
        """Tell every plugin the guest starts, requirements first."""
        self._check_open()
        if self._started:
            raise PluginError("the guest was already started; start_all runs once per run")
        self._started = True
        self._run_each(list(self._plugins), "start()", lambda p: p.start())

    def stop_all(self, reason: Any) -> None:
        """Tell every plugin the guest stopped, users before the plugins they require."""
        self._check_open()
        self._run_each(reversed(list(self._plugins)), "stop()", lambda p: p.stop(reason))

    def unload_all(self) -> None:
        """Unload every plugin in reverse load order; never skipped, safe to call twice.

        Registrations stay in place until the last plugin unloaded, so a plugin
        may run its callbacks one final time from its own ``unload()`` (the
        qpp_srv pattern); functions registered by plugins that already
        unloaded still receive that call.  A Ctrl-C during one unload does not
        skip the others; it is re-raised at the end.  Plugin failures follow the
        strict rule like every other callback.
        """
        if self._closed:
            return
        self._closed = True
        interrupted: BaseException | None = None
        first: PluginCallbackError | None = None
        for name in reversed(list(self._plugins)):
            try:
                self._plugins[name].unload()
            except (Exception, SystemExit) as exc:
                raised = self._failed(name, "unload()", exc)
                if first is None:
                    first = raised
            except BaseException as exc:
                if interrupted is None:
                    interrupted = exc
        for callbacks in self._callbacks.values():
            for cb in callbacks.values():
                cb._entries = ()
        for (plugin, where), count in self._failures.items():
            if count > 1:
                logger.warning("plugin '%s' raised %d more times in %s (not shown)", plugin, count - 1, where)
        if interrupted is not None:
            raise interrupted
        if first is not None:
            raise first

    def __enter__(self) -> QPP:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.unload_all()
            return
        # Failures were already reported; the exception that ended the run is the one to show.
        with contextlib.suppress(PluginCallbackError):
            self.unload_all()
