"""``qppsuite plugins [NAME]``: what plugins exist and what each offers to others.

The listing is one line per plugin (name, source, description), so that it
reads at 80 columns and in a pipe; ``qppsuite plugins NAME`` shows what
writing a plugin on top of another needs: its arguments, exports and
callbacks.  ``--format json`` gives both to tools (the shape is in
docs/plugins.md).  A plugin that cannot be imported, or whose name two
sources claim, still gets its line, so one broken install hides nothing else.
Names and descriptions come from third-party packages: they are data, printed
through :class:`SafeConsole` and :func:`styled`.
"""

import inspect
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.text import Text

from qppsuite.cli import app
from qppsuite.cli.terminal import SafeConsole, styled
from qppsuite.core.events import CorePlugin
from qppsuite.core.qpp import (
    CallbackSpec,
    Plugin,
    PluginSource,
    discover_all,
    exported_functions,
    plugin_description,
    resolve,
)
from qppsuite.core.qpp.specs import type_name
from qppsuite.errors import PluginError

console = SafeConsole()

# The machine adds these itself on every run; listing them shows the callbacks plugins build on.
HOST_PLUGINS = {"core": PluginSource("host", "qppsuite.core.events.CorePlugin", cls=CorePlugin)}

#: The module path in an annotation (``qppsuite.plugins.osi_linux.types.OsiThread``), left out of signatures.
_MODULE_PATH = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])")
#: Help and docstring lines in the details view start under the name they describe.
_INDENT = 6
#: Callbacks taking the same arguments are listed one by one up to this many, else as one paragraph of names.
_CALLBACK_GROUP = 4


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


@dataclass(frozen=True)
class Listed:
    """One line of the listing: a source, and what importing it gave (a description, or why it failed)."""

    name: str
    source: PluginSource
    duplicate: bool
    description: str
    error: str | None

    def record(self) -> dict[str, Any]:
        """The line as JSON, documented in docs/plugins.md."""
        return {
            **_source_record(self.name, self.source),
            "description": None if self.error else self.description,
            "duplicate": self.duplicate,
            "error": self.error,
        }


@app.command("plugins")
def plugins(
    name: Annotated[
        str | None, typer.Argument(help="Show one plugin: a name, or the path of a plugin .py file.")
    ] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="text, or json for tools.")] = OutputFormat.text,
) -> None:
    """List available plugins (built-in and installed), one line each, or describe one in detail."""
    if name is None:
        listed = _listing()
        if fmt is OutputFormat.json:
            print(json.dumps([entry.record() for entry in listed], indent=2))
        else:
            _print_listing(listed)
        return
    source = HOST_PLUGINS[name] if name in HOST_PLUGINS else resolve(name)
    cls = source.plugin_class()
    if fmt is OutputFormat.json:
        print(json.dumps(_details_record(source, cls), indent=2))
    else:
        _print_details(source, cls)


# --------------------------------------------------------------------------- the listing


def _listing() -> list[Listed]:
    """The host's plugins, then every discovered source by name (one name's sources in discovery order)."""
    named = [*HOST_PLUGINS.items(), *sorted(((s.name or "", s) for s in discover_all()), key=lambda p: p[0])]
    claims = Counter(name for name, _ in named)
    listed = []
    for name, source in named:
        try:
            description, error = plugin_description(source.plugin_class()), None
        except PluginError as err:
            description, error = "", str(err)
        listed.append(Listed(name, source, claims[name] > 1, description, error))
    return listed


def _print_listing(listed: list[Listed]) -> None:
    """Aligned columns without borders; a description is cut at the terminal's width, a name never."""
    width = _cut_width()
    names = [styled((entry.name, "bold")) for entry in listed]
    sources = [styled(_source_text(entry.source, entry.duplicate)) for entry in listed]
    name_width = max(name.cell_len for name in names) + 2
    source_width = max(source.cell_len for source in sources) + 2
    for entry, name, source in zip(listed, names, sources, strict=True):
        line = Text.assemble(name, " " * (name_width - name.cell_len), source, " " * (source_width - source.cell_len))
        about = styled(("(duplicate) ", "bold yellow")) if entry.duplicate else Text()
        if entry.error:
            about.append_text(styled(("not loadable: ", "red"), entry.error))
        else:
            about.append_text(styled(entry.description))
        if width is not None:
            about.truncate(max(width - line.cell_len, 1), overflow="ellipsis")
        line.append_text(about)
        line.rstrip()
        console.print(line, soft_wrap=True)
    if any(entry.duplicate for entry in listed):
        note = " one name, several plugins: loading it is refused until one remains"
        console.print(styled(("(duplicate)", "bold yellow"), note))


def _cut_width() -> int | None:
    """The width descriptions are cut at: a terminal's, or COLUMNS; in a pipe, lines are kept whole."""
    return console.width if console.is_terminal or os.environ.get("COLUMNS", "").isdigit() else None


def _source_text(source: PluginSource, duplicate: bool) -> str:
    """``host``, ``built-in``, ``entry point`` or ``file``: where a listed plugin comes from, in a word or two.

    The distribution's name and version (as long as its author likes) are in ``plugins NAME`` and the JSON; the
    listing names it only for a duplicate name, whose sources it tells apart."""
    if source.kind == "entry point" and source.detail and duplicate:
        return f"entry point {source.detail}"
    return source.kind


def _source_record(name: str, source: PluginSource) -> dict[str, Any]:
    return {
        "name": name,
        "kind": source.kind,
        "location": source.location,
        "distribution": source.detail or None,
    }


# --------------------------------------------------------------------------- one plugin


def _print_details(source: PluginSource, cls: type[Plugin]) -> None:
    _line((cls.name, "bold"), f" — {plugin_description(cls) or '(no description)'}")
    _line(f"source: {source}")
    _line(f"requires: {', '.join(cls.requires) or 'none'}")
    _line(f"plugin API: v{cls.api_version}")
    if cls.args:
        _line((f"arguments (-p {cls.name}:key=value):", "bold"))
        for key, arg in cls.args.items():
            choices = f"  choices: {', '.join(_value_text(c) for c in arg.choices)}" if arg.choices is not None else ""
            _line("  ", (key, "bold"), f": {arg.type_name} = {_value_text(arg.default)}{choices}")
            _print_indented(arg.help)
    else:
        _line("arguments: none")
    exports = exported_functions(cls)
    if exports:
        _line((f"exports (qpp.import_function('{cls.name}', name)):", "bold"))
        for fn_name, fn in exports.items():
            _line("  ", (fn_name, "bold"), _signature(fn))
            _print_indented(_first_line(fn))
    else:
        _line("exports: none")
    if cls.callbacks:
        _line((f"callbacks (qpp.register('{cls.name}', name, fn, owner=...); fn takes arguments by name):", "bold"))
        _print_callbacks(cls.callbacks)
    else:
        _line("callbacks: none")


def _print_callbacks(specs: Sequence[CallbackSpec]) -> None:
    """Each callback with its arguments and description; a family of many (a name prefix such as ``on_sys_``,
    the same arguments: syscalls' hundreds of ``on_sys_<name>``) as one heading and a paragraph of names."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[CallbackSpec]] = {}
    for spec in specs:
        family = "_".join(spec.name.split("_", 2)[:2]) + "_" if spec.name.count("_") >= 2 else spec.name
        groups.setdefault((family, tuple((p, type_name(t)) for p, t in spec.params.items())), []).append(spec)
    for (family, params), group in groups.items():
        if len(group) <= _CALLBACK_GROUP:
            for spec in group:
                _line("  ", (spec.signature, "bold"))
                _print_indented(spec.doc)
        else:
            taking = ", ".join(f"{p}: {t}" for p, t in params)
            _line("  ", (f"{family}*({taking})", "bold"), f": {len(group)} callbacks")
            _print_indented(", ".join(spec.name for spec in group))


def _line(*parts: str | tuple[str, str]) -> None:
    """One line of the details, never wrapped by us (a path or a signature stays whole for copying)."""
    console.print(styled(*parts), soft_wrap=True)


def _print_indented(text: str, indent: int = _INDENT) -> None:
    """Text under its heading or name, wrapped at the console's width with the indent kept."""
    if not text:
        return
    for line in styled(text).wrap(console, max(console.width - indent, 20)):
        line.rstrip()
        console.print(Text(" " * indent) + line, soft_wrap=True)


def _details_record(source: PluginSource, cls: type[Plugin]) -> dict[str, Any]:
    """One plugin as JSON: its listing line plus what it offers, documented in docs/plugins.md."""
    return {
        **_source_record(cls.name, source),
        "description": plugin_description(cls),
        "duplicate": False,  # a duplicate name does not load, so it has no details
        "error": None,
        "requires": list(cls.requires),
        "api_version": cls.api_version,
        "arguments": [
            {
                "name": key,
                "type": arg.type_name,
                "default": _json_value(arg.default),
                "choices": None if arg.choices is None else [_json_value(c) for c in arg.choices],
                "help": arg.help,
            }
            for key, arg in cls.args.items()
        ],
        "exports": [
            {"name": fn_name, "signature": _signature(fn), "description": _first_line(fn)}
            for fn_name, fn in exported_functions(cls).items()
        ],
        "callbacks": [
            {
                "name": spec.name,
                "params": [{"name": p, "type": type_name(t)} for p, t in spec.params.items()],
                "description": spec.doc,
            }
            for spec in cls.callbacks
        ],
    }


def _value_text(value: Any) -> str:
    """An argument's default or choice as Python writes it (so ``''`` is visible); a ``Path`` as its text."""
    return repr(_json_value(value))


def _json_value(value: Any) -> Any:
    """An argument's default or choice: JSON's own types as they are, a ``Path`` as its text."""
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def _first_line(fn: Callable[..., Any]) -> str:
    return (inspect.getdoc(fn) or "").split("\n")[0]


class _Annotation:
    """An annotation shown as given: ``inspect`` prints an annotation it does not know by its ``repr``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _signature(fn: Callable[..., Any]) -> str:
    """The signature a caller of the bound method sees: no ``self``, and type names without their modules."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return "(...)"

    def short(annotation: Any) -> Any:
        if annotation is inspect.Parameter.empty:
            return annotation
        text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        return _Annotation(_MODULE_PATH.sub("", text))

    parameters = [p.replace(annotation=short(p.annotation)) for p in list(signature.parameters.values())[1:]]
    return str(signature.replace(parameters=parameters, return_annotation=short(signature.return_annotation)))
