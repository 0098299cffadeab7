"""The :class:`Plugin` base class, and the checks a plugin class passes before it loads."""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any, ClassVar

from qppsuite.core.qpp.args import Arg
from qppsuite.errors import PluginError

if TYPE_CHECKING:
    from qppsuite.core.qpp.callbacks import Callback
    from qppsuite.core.qpp.loading import PluginSource
    from qppsuite.core.qpp.registry import QPP

API_VERSION = 1
"""The plugin API a plugin is built for; bump it when a change breaks existing plugins."""

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


def validated(found: object, source: PluginSource) -> type[Plugin]:
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
