"""The :class:`Plugin` base class, and the checks a plugin class passes before it loads."""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any, ClassVar

from qppsuite.core.qpp.args import Arg
from qppsuite.core.qpp.context import RunContext
from qppsuite.core.qpp.specs import CallbackSpec
from qppsuite.errors import PluginError

if TYPE_CHECKING:
    from qppsuite.core.guest import Guest
    from qppsuite.core.qpp.callbacks import Callback
    from qppsuite.core.qpp.loading import PluginSource
    from qppsuite.core.qpp.registry import QPP

API_VERSION = 2
"""The plugin API a plugin is built for; bump it when a change breaks existing plugins.

2: callbacks are declared as :class:`CallbackSpec` s, checked when a function registers and called with
keywords; ``self.machine`` is the typed :class:`~qppsuite.core.guest.Guest`; the run's facts are
``self.context`` (:class:`RunContext`).  A plugin built for 1 is refused with a line saying so."""

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


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
    callbacks: ClassVar[tuple[CallbackSpec, ...]] = ()

    # Set by the manager before load().
    qpp: QPP
    #: The guest: registers, memory, hooks, time (None when the host runs plugins without a machine).
    machine: Guest
    context: RunContext

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


def validated(found: object, source: PluginSource) -> type[Plugin]:
    """Check a plugin class's declarations, so mistakes surface when it loads, not mid-run."""
    if not (isinstance(found, type) and issubclass(found, Plugin)):
        raise PluginError(f"{source} provides {found!r}, which is not a Plugin subclass")
    cls = found
    name = getattr(cls, "name", None)
    label = f"plugin '{name}' ({source})" if isinstance(name, str) else str(source)
    if cls.api_version != API_VERSION:
        raise PluginError(
            f"{label} is built for plugin API v{cls.api_version}; this qppsuite provides API v{API_VERSION}",
            hint="v2 declares callbacks as CallbackSpec(...) and calls them with keywords: docs/plugins.md, "
            "'Moving from API v1'",
        )
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise PluginError(f"{source}: plugin class {cls.__qualname__} needs a `name` of letters, digits, _")
    if source.name is not None and name != source.name:
        raise PluginError(f"{source} provides a plugin named '{name}'; it must be named '{source.name}'")
    if isinstance(cls.requires, str) or not all(isinstance(r, str) for r in cls.requires):
        raise PluginError(f"{label}: `requires` must be a tuple of plugin names, got {cls.requires!r}")
    if name in cls.requires:
        raise PluginError(f"{label} requires itself")
    if not isinstance(cls.callbacks, tuple | list) or not all(isinstance(c, CallbackSpec) for c in cls.callbacks):
        raise PluginError(
            f"{label}: `callbacks` must be a tuple of CallbackSpec(name, description, **params), "
            f"got {cls.callbacks!r}",
            hint="names alone are plugin API v1's form: docs/plugins.md, 'Moving from API v1'",
        )
    for spec in cls.callbacks:
        problem = spec.problem()
        if problem is not None:
            raise PluginError(f"{label}: {problem}")
    names = [spec.name for spec in cls.callbacks]
    if len(set(names)) != len(names):
        raise PluginError(f"{label} declares a callback twice: {', '.join(names)}")
    if not isinstance(cls.args, dict) or not all(
        isinstance(k, str) and _NAME_RE.match(k) and isinstance(v, Arg) for k, v in cls.args.items()
    ):
        raise PluginError(f"{label}: `args` must map identifiers to Arg(...), got {cls.args!r}")
    return cls
