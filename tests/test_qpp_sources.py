"""Where plugins come from: built-in modules, installed entry points, and file paths."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import pytest

from qppsuite.core.qpp import QPP, PluginSource, discover, discover_all, resolve
from qppsuite.core.qpp import loading as qpp_loading
from qppsuite.errors import PluginError

PAIR = Path(__file__).parent / "qpp_plugins"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dedent(text))
    return path


def install_distribution(site: Path, dist: str, modules: dict[str, str], entry_points: dict[str, str]) -> None:
    """Lay out an installed distribution (a .dist-info with entry_points.txt) the way pip would."""
    for module, text in modules.items():
        write(site / f"{module}.py", text)
    info = site / f"{dist}-1.0.dist-info"
    write(info / "METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    write(info / "entry_points.txt", f"[qppsuite.plugins]\n{lines}")


TINY = """
    from qppsuite.core.qpp import CallbackSpec, Plugin, export

    class Tiny(Plugin):
        '''A tiny installed plugin.'''
        name = "tiny"
        callbacks = (CallbackSpec("on_tiny", "something tiny happened", size=int),)

        @export
        def size(self) -> int:
            return 1
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = tmp_path / "site-packages"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    for name in [m for m in sys.modules if m.startswith(("tiny_", "fake_builtins"))]:
        del sys.modules[name]


# --------------------------------------------------------------------------- built-in


def test_builtin_plugins_are_discovered_by_module_name() -> None:
    found = discover()
    for name in ("osi_linux", "syscalls", "syscalls_logger"):
        assert found[name] == PluginSource("built-in", f"qppsuite.plugins.{name}", name)
    assert str(found["syscalls"]) == "built-in qppsuite.plugins.syscalls"


def test_builtin_plugin_is_loaded_from_its_plugin_attribute(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(site / "fake_builtins" / "__init__.py", "")
    write(
        site / "fake_builtins" / "counter" / "__init__.py",
        """
        from qppsuite.core.qpp import Plugin

        class Counter(Plugin):
            name = "counter"

        plugin = Counter
        """,
    )
    write(
        site / "fake_builtins" / "misnamed.py",
        "from qppsuite.core.qpp import Plugin\nclass M(Plugin):\n    name = 'x'\n",
    )
    write(site / "fake_builtins" / "_private.py", "")
    monkeypatch.setattr(qpp_loading, "BUILTIN_PACKAGE", "fake_builtins")
    found = discover()
    assert sorted(found) == ["counter", "misnamed"]
    assert QPP().load("counter").__class__.__name__ == "Counter"
    with pytest.raises(PluginError, match=r"built-in fake_builtins.misnamed provides a plugin named 'x'; it must be"):
        QPP().load("misnamed")


# --------------------------------------------------------------------------- entry points


def test_entry_point_plugins_are_discovered_and_loaded(site: Path) -> None:
    install_distribution(site, "tinydist", {"tiny_plugin": TINY}, {"tiny": "tiny_plugin:Tiny"})
    source = discover()["tiny"]
    assert (source.kind, source.location, source.name) == ("entry point", "tiny_plugin:Tiny", "tiny")
    assert str(source) == "entry point tiny = tiny_plugin:Tiny (tinydist 1.0)"
    qpp = QPP()
    qpp.load("tiny")
    assert qpp.import_function("tiny", "size")() == 1


def test_entry_point_may_name_a_module_with_a_plugin_attribute(site: Path) -> None:
    install_distribution(site, "tinymod", {"tiny_mod": TINY + "\n    plugin = Tiny\n"}, {"tiny": "tiny_mod"})
    assert QPP().load("tiny").name == "tiny"


def test_requirements_resolve_through_entry_points(site: Path) -> None:
    user = """
        from qppsuite.core.qpp import Plugin

        class TinyUser(Plugin):
            name = "tiny_user"
            requires = ("tiny",)

            def load(self) -> None:
                self.size = self.qpp.import_function("tiny", "size")
    """
    install_distribution(
        site,
        "tinypair",
        {"tiny_plugin": TINY, "tiny_user": user},
        {"tiny": "tiny_plugin:Tiny", "tiny_user": "tiny_user:TinyUser"},
    )
    qpp = QPP()
    qpp.load("tiny_user")
    assert qpp.loaded == ["tiny", "tiny_user"]


def test_entry_point_whose_plugin_has_another_name_is_refused(site: Path) -> None:
    install_distribution(site, "liar", {"tiny_plugin": TINY}, {"big": "tiny_plugin:Tiny"})
    with pytest.raises(PluginError, match=r"entry point big = tiny_plugin:Tiny \(liar 1.0\) provides a plugin named"):
        QPP().load("big")


def test_entry_point_clashing_with_a_builtin_is_refused_by_name_and_hides_nothing(site: Path) -> None:
    install_distribution(site, "clash", {"tiny_plugin": TINY}, {"syscalls": "tiny_plugin:Tiny"})
    found = discover()
    assert {"osi_linux", "syscalls", "syscalls_logger"} <= set(found)
    assert found["syscalls"].rivals == (PluginSource("entry point", "tiny_plugin:Tiny", "syscalls"),)
    assert resolve("osi_linux").plugin_class().name == "osi_linux"
    with pytest.raises(PluginError) as err:
        QPP().load("syscalls")
    assert str(err.value) == (
        "two plugins are named 'syscalls': built-in qppsuite.plugins.syscalls"
        " and entry point syscalls = tiny_plugin:Tiny (clash 1.0)"
    )
    assert err.value.hint is not None and "uninstall" in err.value.hint


def test_two_distributions_with_one_plugin_name_are_both_listed_and_neither_loads(site: Path) -> None:
    other = TINY.replace("A tiny installed plugin.", "Another tiny plugin.")
    install_distribution(site, "tinyone", {"tiny_one": TINY}, {"tiny": "tiny_one:Tiny"})
    install_distribution(site, "tinytwo", {"tiny_two": other}, {"tiny": "tiny_two:Tiny"})
    every = [source for source in discover_all() if source.name == "tiny"]
    assert [(s.location, s.detail) for s in every] == [
        ("tiny_one:Tiny", "tinyone 1.0"),
        ("tiny_two:Tiny", "tinytwo 1.0"),
    ]
    assert [s.plugin_class().__module__ for s in every] == ["tiny_one", "tiny_two"]  # each alone imports
    with pytest.raises(PluginError) as err:
        QPP().load("tiny")
    assert str(err.value) == (
        "two plugins are named 'tiny': entry point tiny = tiny_one:Tiny (tinyone 1.0)"
        " and entry point tiny = tiny_two:Tiny (tinytwo 1.0)"
    )
    user = "from qppsuite.core.qpp import Plugin\nclass U(Plugin):\n    name = 'tiny_user'\n    requires = ('tiny',)\n"
    with pytest.raises(PluginError, match=r"^two plugins are named 'tiny': "):
        QPP().load(str(write(site / "tiny_user.py", user)))
    assert resolve("syscalls").plugin_class().name == "syscalls"  # every other name is unaffected


def test_one_distribution_found_twice_on_the_path_is_one_source(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_distribution(site, "tinydist", {"tiny_plugin": TINY}, {"tiny": "tiny_plugin:Tiny"})
    install_distribution(tmp_path / "shadowed", "tinydist", {"tiny_plugin": TINY}, {"tiny": "tiny_plugin:Tiny"})
    monkeypatch.syspath_prepend(str(tmp_path / "shadowed"))
    assert [source.name for source in discover_all()].count("tiny") == 1
    assert discover()["tiny"].rivals == ()


def test_entry_point_that_fails_to_import_says_which(site: Path) -> None:
    install_distribution(site, "broken", {"tiny_broken": "import no_such_module_anywhere\n"}, {"tiny": "tiny_broken:X"})
    with pytest.raises(PluginError, match=r"cannot import entry point tiny = tiny_broken:X .*ModuleNotFoundError"):
        QPP().load("tiny")


# --------------------------------------------------------------------------- files


def test_file_plugin_is_loaded_by_path_and_named_by_its_class(tmp_path: Path) -> None:
    path = write(tmp_path / "whatever_file_name.py", TINY)
    qpp = QPP()
    plugin = qpp.load(str(path))
    assert plugin.name == "tiny"
    assert qpp.source("tiny") == PluginSource("file", str(path.resolve()))
    assert qpp.load(str(path)) is plugin  # the same file again is the same plugin


def test_relative_file_paths_are_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "mine.py", TINY)
    monkeypatch.chdir(tmp_path)
    assert resolve("./mine.py") == PluginSource("file", str(tmp_path.resolve() / "mine.py"))
    assert resolve("mine.py").kind == "file"


def test_two_files_with_one_plugin_name_name_both_paths(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "tiny.py", TINY)
    second = write(tmp_path / "b" / "tiny.py", TINY)
    with pytest.raises(PluginError) as err:
        QPP().load_all([str(first), str(second)])
    assert str(err.value) == f"two plugins are named 'tiny': file {first.resolve()} and file {second.resolve()}"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"plugin file .*nothere.py does not exist"):
        QPP().load(str(tmp_path / "nothere.py"))


def test_file_without_a_plugin_class_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.py", "X = 1\n")
    with pytest.raises(PluginError, match=r"file .*empty.py defines no Plugin subclass and no `plugin` attribute"):
        QPP().load(str(path))


def test_file_with_several_plugin_classes_must_choose(tmp_path: Path) -> None:
    two = TINY + "\n    class Other(Plugin):\n        name = 'other'\n"
    path = write(tmp_path / "two.py", two)
    with pytest.raises(PluginError, match=r"defines several Plugin subclasses \(Tiny, Other\); set `plugin = "):
        QPP().load(str(path))
    chosen = write(tmp_path / "chosen.py", two + "\n    plugin = Other\n")
    assert QPP().load(str(chosen)).name == "other"


def test_file_with_a_syntax_error_says_which_file(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.py", "def oops(:\n")
    with pytest.raises(PluginError, match=r"cannot import file .*broken.py: SyntaxError"):
        QPP().load(str(path))
    with pytest.raises(PluginError, match="SyntaxError"):  # a failed import is not cached as a module
        QPP().load(str(path))


def test_file_attribute_that_is_not_a_plugin_class_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "odd.py", "plugin = 42\n")
    with pytest.raises(PluginError, match=r"file .*odd.py provides 42, which is not a Plugin subclass"):
        QPP().load(str(path))


def test_file_plugin_may_satisfy_a_requirement_given_in_the_same_batch() -> None:
    qpp = QPP()
    qpp.load_all([str(PAIR / "qpp_client.py"), str(PAIR / "qpp_srv.py")])
    assert qpp.loaded == ["qpp_srv", "qpp_client"]
