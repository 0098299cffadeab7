"""``qppsuite plugins [NAME]``: what plugins exist and what each offers to others.

Writing a plugin that builds on another means knowing its exports, callbacks
and arguments; this command shows them without reading source.  A plugin that
cannot be imported still gets a row, with the reason, so one broken install
does not hide the rest.
"""

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table

from qppsuite.cli import app
from qppsuite.cli.terminal import SafeConsole, lines, styled
from qppsuite.core.events import CorePlugin
from qppsuite.core.qpp import Plugin, PluginSource, discover, exported_functions, plugin_description, resolve
from qppsuite.errors import PluginError

console = SafeConsole()

# The machine adds these itself on every run; listing them shows the callbacks plugins build on.
HOST_PLUGINS = {"core": PluginSource("host", "qppsuite.core.events.CorePlugin", cls=CorePlugin)}


@app.command("plugins")
def plugins(
    name: Annotated[
        str | None, typer.Argument(help="Show one plugin: a name, or the path of a plugin .py file.")
    ] = None,
) -> None:
    """List available plugins (built-in and installed), or describe one in detail."""
    if name is None:
        console.print(_overview())
        return
    source = HOST_PLUGINS[name] if name in HOST_PLUGINS else resolve(name)
    cls = source.plugin_class()
    console.print(styled((cls.name, "bold"), f" — {plugin_description(cls) or '(no description)'}"))
    console.print(f"source: {source}", highlight=False)
    requires = ", ".join(cls.requires) or "none"
    console.print(f"requires: {requires}   plugin API: v{cls.api_version}", highlight=False)
    console.print(_arguments_table(cls) if cls.args else "arguments: none")
    console.print(_exports_table(cls) if exported_functions(cls) else "exports: none")
    callbacks = ", ".join(cls.callbacks) or "none"
    console.print(f"callbacks: {callbacks}", highlight=False)


def _overview() -> Table:
    table = Table(title="Available plugins", title_justify="left")
    for column in ("Plugin", "Source", "Description", "Requires", "Arguments", "Exports", "Callbacks"):
        table.add_column(column)
    for plugin_name, source in [*HOST_PLUGINS.items(), *sorted(discover().items())]:
        try:
            cls = source.plugin_class()
        except PluginError as err:
            table.add_row(plugin_name, source.kind, styled((f"not loadable: {err}", "red")), "", "", "", "")
            continue
        table.add_row(
            cls.name,
            source.kind,
            plugin_description(cls),
            ", ".join(cls.requires),
            lines(f"{key}: {arg.type_name} = {arg.default!r}" for key, arg in cls.args.items()),
            lines(exported_functions(cls)),
            lines(cls.callbacks),
        )
    return table


def _arguments_table(cls: type[Plugin]) -> Table:
    table = Table(title=f"Arguments (-p {cls.name}:key=value)", title_justify="left")
    for column in ("Argument", "Type", "Default", "Choices", "Help"):
        table.add_column(column)
    for key, arg in cls.args.items():
        choices = ", ".join(str(c) for c in arg.choices) if arg.choices is not None else ""
        table.add_row(key, arg.type_name, repr(arg.default), choices, arg.help)
    return table


def _exports_table(cls: type[Plugin]) -> Table:
    table = Table(title=f"Exports (qpp.import_function('{cls.name}', name))", title_justify="left")
    for column in ("Function", "Signature", "Description"):
        table.add_column(column)
    for fn_name, fn in exported_functions(cls).items():
        table.add_row(fn_name, _signature(fn), (inspect.getdoc(fn) or "").split("\n")[0])
    return table


def _signature(fn: Callable[..., Any]) -> str:
    """The signature a caller of the bound method sees, i.e. without ``self``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return "(...)"
    parameters = list(signature.parameters.values())[1:]
    return str(signature.replace(parameters=parameters))
