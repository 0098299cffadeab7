"""The plugin manager of one run: loading in requirement order, lookups, failures and the lifecycle."""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

from qppsuite.core.qpp.args import PluginArgs, bind_args
from qppsuite.core.qpp.callbacks import Callback
from qppsuite.core.qpp.context import RunContext
from qppsuite.core.qpp.exports import exported_functions
from qppsuite.core.qpp.failures import PluginCallbackError, PluginFailure, log_failure, logger
from qppsuite.core.qpp.loading import PluginSource, discover, resolve, unknown_name
from qppsuite.core.qpp.plugin import Plugin, validated
from qppsuite.errors import PluginError

_LISTED_CALLBACKS = 12
"""A plugin creating more callbacks than this is not listed whole in an error line."""


class QPP:
    """The plugin manager of one run: loads plugins, resolves imports, owns callbacks.

    Use it as a context manager so ``unload_all`` runs however the run ends::

        with QPP(Guest(machine), context=RunContext(...), strict=strict) as qpp:
            qpp.add_builtin(CorePlugin(machine))
            qpp.load_all(parse_plugin_list(plugins), parse_plugin_args(p_items))
            qpp.start_all()
            reason = machine.run()
            qpp.stop_all(reason)
    """

    def __init__(self, machine: Any = None, *, context: RunContext | None = None, strict: bool = False) -> None:
        #: What plugins get as ``self.machine``: the host's :class:`~qppsuite.core.guest.Guest`, or None.
        self.machine = machine
        #: What plugins get as ``self.context``.
        self.context = context if context is not None else RunContext()
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
        cls = validated(kind, source)
        self._check_unique(cls.name, source)
        missing = [r for r in cls.requires if r not in self._plugins]
        if missing:
            raise PluginError(
                unknown_name(f"host plugin '{cls.name}' requires '{missing[0]}'", missing[0], self._plugins, "loaded")
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
                        unknown_name(f"{needer} '{name}', which is not available", name, {*available, *done}),
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
        # Each plugin sees the guest through its own view, whose hooks report their failures under its name
        # (a host's stand-in without views, or None, is given as it is).
        for_plugin = getattr(self.machine, "for_plugin", None)
        plugin.machine = self.machine if for_plugin is None else for_plugin(name, self._failed)
        plugin.context = self.context
        vars(plugin)["args"] = values  # shadows the class-level declarations, see Plugin
        self._plugins[name] = plugin
        self._sources[name] = source
        self._callbacks[name] = {spec.name: Callback(name, spec, self) for spec in type(plugin).callbacks}
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
            raise PluginError(unknown_name(f"plugin '{name}' is not loaded", name, self._plugins, "loaded")) from None

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
            close = difflib.get_close_matches(name, list(callbacks), n=1)
            suggestion = f" (did you mean '{close[0]}'?)" if close else ""
            if len(callbacks) <= _LISTED_CALLBACKS:
                listed = f"it creates: {', '.join(callbacks) or 'none'}"
            else:  # syscalls creates over 800
                listed = f"it creates {len(callbacks)}: `qppsuite plugins {plugin}` lists them"
            raise PluginError(f"plugin '{plugin}' creates no callback '{name}'{suggestion}; {listed}")
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
                unknown_name(f"cannot {action}: plugin '{plugin}' is not loaded", plugin, self._plugins, "loaded"),
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
