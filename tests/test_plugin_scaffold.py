"""``qppsuite plugin new``: the package it writes installs with pip and runs on a real guest, test included."""

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from qppsuite.core.qpp import resolve
from qppsuite.images.bundle import ImageBundle, cache_dir
from qppsuite.scaffold import ScaffoldError, class_name, write_package


def test_the_package_has_the_plugin_its_entry_point_and_a_boot_test(tmp_path: Path) -> None:
    root = write_package("call_census", tmp_path)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        "README.md",
        "pyproject.toml",
        "src/call_census/__init__.py",
        "tests/test_call_census.py",
    ]
    assert (
        '[project.entry-points."qppsuite.plugins"]\ncall_census = "call_census:CallCensus"'
        in (root / "pyproject.toml").read_text()
    )
    cls = resolve(str(root / "src" / "call_census" / "__init__.py")).plugin_class()
    assert cls.name == "call_census" and cls.__name__ == "CallCensus" == class_name("call_census")
    assert cls.requires == ("osi_linux", "syscalls") and [s.name for s in cls.callbacks] == ["on_new_process"]
    assert "@pytest.mark.boot" in (root / "tests" / "test_call_census.py").read_text()


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("Bad-Name", "use lower-case letters"),
        ("class", "use lower-case letters"),
        ("osi_linux", "a plugin named 'osi_linux' exists already"),
        ("core", "a plugin named 'core' exists already"),
        ("json", "a Python module named 'json' exists already"),
    ],
)
def test_a_bad_or_taken_name_is_refused(tmp_path: Path, name: str, complaint: str) -> None:
    with pytest.raises(ScaffoldError, match=complaint):
        write_package(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_directory_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ScaffoldError, match="exists already; nothing was written"):
        write_package("mine", tmp_path)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


@pytest.mark.boot
def test_the_scaffolded_plugin_installs_lists_and_passes_its_own_boot_test(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """Exactly what the command tells a user: `qppsuite plugin new`, `pip install -e`, then its own test, which
    boots the guest with `--plugins NAME` (in a virtual environment that sees this qppsuite)."""
    env = {**os.environ, "QPPSUITE_CACHE": str(cache_dir())}
    made = subprocess.run(
        [sys.executable, "-m", "qppsuite", "plugin", "new", "call_census", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    venv.create(tmp_path / "venv", system_site_packages=True)  # pip below is this interpreter's, told --python
    python = str(tmp_path / "venv" / "bin" / "python")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "-e", str(tmp_path / "call_census")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    listed = subprocess.run(
        [python, "-m", "qppsuite", "plugins"], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
    )
    [line] = [x for x in listed.stdout.splitlines() if x.startswith("call_census ")]
    assert line.split(maxsplit=3)[1:] == [
        "entry",
        "point",
        "System calls counted per process, printed when the guest stops",
    ]
    details = subprocess.run(
        [python, "-m", "qppsuite", "plugins", "call_census"], capture_output=True, text=True, env=env, check=False
    )
    assert "entry point call_census = call_census:CallCensus (qppsuite-call_census 0.1.0)" in details.stdout
    own_test = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "call_census")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1800,
    )
    assert own_test.returncode == 0, own_test.stdout + own_test.stderr
    assert "1 passed" in own_test.stdout
