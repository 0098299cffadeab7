"""Image bundle loading, verification and its errors, listing, and the `image` CLI (fast, no network)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.errors import ImageError
from qppsuite.images.bundle import ImageBundle, cache_dir, images_dir, list_images, open_image
from qppsuite.images.initramfs import overlay_archive


def make_bundle(cache: Path, name: str, *, profile: bool = True, packages: tuple[str, ...] = ()) -> Path:
    """A small but well-formed bundle, laid out the way the builder writes one."""
    path = images_dir(cache) / name
    path.mkdir(parents=True)
    files = {
        "vmlinuz": b"zImage" * 1000,
        "initrd.cpio.gz": overlay_archive({"init": b"#!/bin/sh\n"}),
        "config": b"CONFIG_ARM=y\n",
    }
    if profile:
        files["profile.json"] = b'{"arch": "arm"}\n'
    for file_name, data in files.items():
        (path / file_name).write_bytes(data)
    manifest: dict[str, Any] = {
        "format": 1,
        "name": name,
        "created_by": "qppsuite test",
        "kernel": {
            "file": "vmlinuz",
            "package": "linux-image-6.1.0-50-armmp",
            "version": "6.1.176-1",
            "release": "6.1.0-50-armmp",
            "config": "config",
        },
        "initrd": {"file": "initrd.cpio.gz"},
        "profile": {"file": "profile.json"} if profile else None,
        "bootargs": "console=ttyAMA0 cryptomgr.notests",
        "packages": [{"name": "busybox-static", "version": "1:1.35.0", "architecture": "armhf", "sha256": "0" * 64}],
        "requested_packages": list(packages),
        "files": {
            file_name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for file_name, data in files.items()
        },
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path


def rewrite_manifest(path: Path, **changes: Any) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QPPSUITE_CACHE", str(tmp_path / "env"))
    assert cache_dir(tmp_path / "flag") == tmp_path / "flag"
    assert cache_dir() == tmp_path / "env"
    assert images_dir() == tmp_path / "env" / "images"
    monkeypatch.delenv("QPPSUITE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "qppsuite"


def test_open_by_name_and_by_path(tmp_path: Path) -> None:
    path = make_bundle(tmp_path, "demo")
    by_name = open_image("demo", cache=tmp_path)
    by_path = open_image(path)
    assert by_name == by_path
    assert isinstance(by_name, ImageBundle)
    assert by_name.name == "demo"
    assert by_name.kernel_path == path / "vmlinuz"
    assert by_name.initrd_path == path / "initrd.cpio.gz"
    assert by_name.profile_path == path / "profile.json"
    assert by_name.bootargs == "console=ttyAMA0 cryptomgr.notests"
    assert open_image(str(path)).path == path


def test_profile_is_optional(tmp_path: Path) -> None:
    make_bundle(tmp_path, "bare", profile=False)
    assert open_image("bare", cache=tmp_path).profile_path is None


def test_unknown_name_lists_what_exists(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"image 'x' not found in .*; available: none"):
        open_image("x", cache=tmp_path)
    make_bundle(tmp_path, "b")
    make_bundle(tmp_path, "a")
    with pytest.raises(ImageError, match=r"image 'x' not found in .*; available: a, b$"):
        open_image("x", cache=tmp_path)


def test_missing_directory_path(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist"):
        open_image(tmp_path / "nowhere")


def test_corrupt_file_is_caught_by_its_sha256(tmp_path: Path) -> None:
    path = make_bundle(tmp_path, "demo")
    data = bytearray((path / "vmlinuz").read_bytes())
    data[100] ^= 0xFF
    (path / "vmlinuz").write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"image 'demo': 'vmlinuz' is corrupt \(sha256"):
        open_image("demo", cache=tmp_path)
    assert open_image("demo", cache=tmp_path, verify=False).kernel_path == path / "vmlinuz"


def test_truncated_initrd_is_reported_as_truncated(tmp_path: Path) -> None:
    path = make_bundle(tmp_path, "demo")
    initrd = path / "initrd.cpio.gz"
    initrd.write_bytes(initrd.read_bytes()[:-7])
    with pytest.raises(ImageError, match=r"'initrd.cpio.gz' is truncated \(\d+ bytes, manifest says \d+\)"):
        open_image("demo", cache=tmp_path)


def test_missing_listed_file(tmp_path: Path) -> None:
    path = make_bundle(tmp_path, "demo")
    (path / "config").unlink()
    with pytest.raises(ImageError, match="missing 'config' listed in its manifest"):
        open_image("demo", cache=tmp_path)


def test_missing_kernel_even_without_verification(tmp_path: Path) -> None:
    path = make_bundle(tmp_path, "demo")
    (path / "vmlinuz").unlink()
    with pytest.raises(ImageError, match="missing its kernel file 'vmlinuz'"):
        open_image("demo", cache=tmp_path, verify=False)


def test_manifest_problems(tmp_path: Path) -> None:
    path = make_bundle(tmp_path, "demo")
    rewrite_manifest(path, format=2)
    with pytest.raises(ImageError, match="has format 2; this qppsuite reads format 1"):
        open_image(path)
    rewrite_manifest(path, format=1, profile={"file": "elsewhere.json"})
    with pytest.raises(ImageError, match=r"profile file 'elsewhere\.json' is not listed"):
        open_image(path, verify=False)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ImageError, match="unreadable"):
        open_image(path)
    (path / "manifest.json").unlink()
    with pytest.raises(ImageError, match=r"is not an image bundle: it has no manifest\.json"):
        open_image(path)


def test_list_images_sorted_skipping_broken_and_in_progress(tmp_path: Path) -> None:
    make_bundle(tmp_path, "zeta")
    make_bundle(tmp_path, "alpha", packages=("strace",))
    (images_dir(tmp_path) / "broken").mkdir()
    make_bundle(tmp_path, ".build-alpha-123")
    assert [b.name for b in list_images(tmp_path)] == ["alpha", "zeta"]
    assert list_images(tmp_path / "empty") == []


runner = CliRunner()


def test_cli_list_json_and_table(tmp_path: Path) -> None:
    make_bundle(tmp_path, "alpha", packages=("strace",))
    (images_dir(tmp_path) / "broken").mkdir()
    result = runner.invoke(app, ["image", "list", "--cache-dir", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["name"] == "alpha" and rows[0]["packages"] == ["strace"]
    assert rows[0]["kernel"] == "6.1.0-50-armmp" and rows[0]["profile"] is True
    assert rows[1]["name"] == "broken" and "no manifest.json" in rows[1]["error"]
    table = runner.invoke(app, ["image", "list", "--cache-dir", str(tmp_path)])
    assert table.exit_code == 0 and "alpha" in table.stdout and "unreadable" in table.stdout


def test_cli_info_json_and_text(tmp_path: Path) -> None:
    make_bundle(tmp_path, "alpha")
    result = runner.invoke(app, ["image", "info", "alpha", "--cache-dir", str(tmp_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["name"] == "alpha" and info["verified"] is True
    assert set(info["files"]) == {"vmlinuz", "initrd.cpio.gz", "config", "profile.json"}
    text = runner.invoke(app, ["image", "info", "alpha", "--cache-dir", str(tmp_path)])
    assert text.exit_code == 0 and "linux-image-6.1.0-50-armmp" in text.stdout and "verified" in text.stdout


def test_cli_build_derives_the_name_and_prints_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str], str, str | None, Path | None]] = []
    variants: list[str] = []

    def fake_build(
        name: str,
        *,
        packages: list[str],
        suite: str,
        kernel: str | None,
        variant: str,
        cache: Path | None,
        progress: Any,
    ) -> ImageBundle:
        calls.append((name, list(packages), suite, kernel, cache))
        variants.append(variant)
        progress("a step")
        return open_image(make_bundle(tmp_path, name))

    monkeypatch.setattr("qppsuite.images.builder.build_image", fake_build)
    result = runner.invoke(
        app, ["image", "build", "--packages", "strace, python3,strace", "--cache-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert calls == [("debian-armhf+strace+python3", ["strace", "python3"], "bookworm", None, tmp_path)]
    assert result.stdout.strip().endswith(str(images_dir(tmp_path) / "debian-armhf+strace+python3"))
    args = ["image", "build", "--suite", "trixie", "--kernel", "6.12.117+deb13", "--cache-dir", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    assert calls[1] == ("debian-armhf-trixie", [], "trixie", "6.12.117+deb13", tmp_path)
    args = ["image", "build", "--variant", "minbase", "--suite", "trixie", "--packages", "python3"]
    assert runner.invoke(app, [*args, "--cache-dir", str(tmp_path)]).exit_code == 0
    assert calls[2] == ("debian-armhf-minbase-trixie+python3", ["python3"], "trixie", None, tmp_path)
    assert variants == ["busybox", "busybox", "minbase"]
    assert runner.invoke(app, ["image", "build", "--variant", "nosuch", "--cache-dir", str(tmp_path)]).exit_code == 2


def _qppsuite(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from qppsuite.cli import main; main()", *args, "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )


def test_cli_errors_are_one_red_line_and_nonzero(tmp_path: Path) -> None:
    make_bundle(tmp_path, "alpha")
    missing = _qppsuite("image", "info", "nope", cache=tmp_path)
    assert missing.returncode == 1
    first_line = missing.stderr.splitlines()[0]
    assert first_line == f"error: image 'nope' not found in {images_dir(tmp_path)}; available: alpha"
    assert "Traceback" not in missing.stderr

    path = images_dir(tmp_path) / "alpha"
    (path / "profile.json").write_text('{"arch": "x86"}\n')
    corrupt = _qppsuite("image", "info", "alpha", cache=tmp_path)
    assert corrupt.returncode == 1
    assert corrupt.stderr.splitlines()[0].startswith("error: image 'alpha': 'profile.json' is corrupt")


@pytest.mark.parametrize("suite", ["bad/suite", "trixie-updates", "Trixie"])
def test_cli_build_refuses_a_bad_suite_in_one_line(tmp_path: Path, suite: str) -> None:
    """A suite is a codename: refused before apt runs, one line, no traceback."""
    result = _qppsuite("image", "build", "x", "--suite", suite, cache=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: invalid suite '{suite}'")
    assert "Traceback" not in result.stderr
