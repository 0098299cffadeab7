"""``qppsuite plugin new NAME``: a ready plugin package to start from.

The package is what an installed plugin is (docs/plugins.md, "Where plugins come from"): a Python package with
the plugin class, a ``pyproject.toml`` whose entry point in the group ``qppsuite.plugins`` names it, and a test
that boots the guest with it.  ``pip install -e DIR`` makes it loadable as ``--plugins NAME``.  The templates
are the files under ``plugin/`` with ``$name`` and ``$cls`` filled in (:class:`string.Template`).
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from qppsuite.core.qpp import discover_all
from qppsuite.errors import QppsuiteError

#: A plugin package's name: a Python module name, lower case (the entry point's and the module's).
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

#: Template file -> where it goes in the package (``$name`` replaced).
FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "plugin.py.tmpl": "src/$name/__init__.py",  # src layout: the project directory never shadows the package
    "test_plugin.py.tmpl": "tests/test_$name.py",
}


class ScaffoldError(QppsuiteError):
    """The package cannot be written: a bad name, a name taken, or a directory in the way."""


def class_name(name: str) -> str:
    """``file_stats`` -> ``FileStats``: the plugin class's name."""
    return "".join(part.capitalize() for part in name.split("_") if part) or name.capitalize()


def check_name(name: str) -> None:
    """Refuse a name that is no module name, or that a plugin already has (built-in or installed)."""
    if not NAME_RE.match(name) or keyword.iskeyword(name):
        raise ScaffoldError(
            f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter",
            hint="it becomes the module name, the entry point and what --plugins loads",
        )
    taken = {source.name: source for source in discover_all()}
    if name in taken or name == "core":
        raise ScaffoldError(
            f"a plugin named '{name}' exists already ({taken.get(name, 'host')})",
            hint="plugin names are unique in a run: choose another",
        )
    if importlib.util.find_spec(name) is not None:
        raise ScaffoldError(
            f"a Python module named '{name}' exists already; the plugin's package would hide it or be hidden",
            hint="choose another name",
        )


def write_package(name: str, parent: Path) -> Path:
    """Write the package ``parent/name`` and return its directory; nothing is overwritten.

    Raises :class:`ScaffoldError` for a bad or taken name, or when ``parent/name`` exists.
    """
    root = parent / name
    if NAME_RE.match(name) and root.exists():
        raise ScaffoldError(f"{root} exists already; nothing was written", hint="choose another name or --dir")
    check_name(name)
    values = {"name": name, "cls": class_name(name)}
    templates = resources.files(__package__) / "plugin"
    try:
        for template, target in FILES.items():
            path = root / Template(target).substitute(values)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(Template((templates / template).read_text()).substitute(values))
    except OSError as exc:
        raise ScaffoldError(f"cannot write {root}: {exc.strerror or exc}") from None
    return root
