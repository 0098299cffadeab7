"""Image manifests and recordings are checked against one declared schema each: a bad field is one line.

The cases are the ones a user met (a ``files`` entry that is not an object breaking ``image list`` for
every image; six kinds of edited recording giving tracebacks), plus hypothesis feeding random JSON and
bytes to both loaders: only the loader's own one-line error may come out.
"""

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.errors import ImageError
from qppsuite.images.bundle import list_images, open_image
from qppsuite.recording import Recording, RecordingError

FILES = {"vmlinuz": b"kernel", "initrd.cpio.gz": b"initrd"}


def _bundle(root: Path, directory: str, **changes: Any) -> Path:
    """An image bundle directory with tiny files, its manifest edited by ``changes``."""
    path = root / "images" / directory
    path.mkdir(parents=True)
    for file_name, data in FILES.items():
        (path / file_name).write_bytes(data)
    manifest: dict[str, Any] = {
        "format": 1,
        "name": directory,
        "kernel": {"file": "vmlinuz", "release": "6.1.0-57-armmp"},
        "initrd": {"file": "initrd.cpio.gz"},
        "profile": None,
        "bootargs": "console=ttyAMA0",
        "files": {n: {"sha256": "0" * 64, "size": len(d)} for n, d in FILES.items()},
    }
    manifest.update(changes)
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"files": {"vmlinuz": "not an object", "initrd.cpio.gz": {"sha256": "0" * 64, "size": 6}}}, "files/vmlinuz"),
        ({"files": {"../../etc/passwd": {"sha256": "0" * 64, "size": 1}}}, "files"),
        ({"kernel": "vmlinuz"}, "kernel"),
        ({"kernel": {"file": "/etc/passwd"}}, "kernel/file"),
        ({"name": 7}, "name"),
        ({"bootargs": ["a"]}, "bootargs"),
        ({"files": {"vmlinuz": {"sha256": "xyz", "size": 6}}}, "files/vmlinuz/sha256"),
    ],
)
def test_a_bad_manifest_field_is_one_line_naming_it(tmp_path: Path, changes: dict[str, Any], field: str) -> None:
    path = _bundle(tmp_path, "bad", **changes)
    with pytest.raises(ImageError, match=f"is not a valid manifest: {field}"):
        open_image(path, verify=False)


def test_one_broken_bundle_does_not_hide_the_others_from_image_list(tmp_path: Path) -> None:
    _bundle(tmp_path, "good")
    _bundle(tmp_path, "broken", files={"vmlinuz": "x"})
    assert [b.name for b in list_images(tmp_path)] == ["good"]
    shown = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["image", "list", "--cache-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "good" in shown.output and "broken" in shown.output and "unreadable" in shown.output


GOOD_RECORDING: dict[str, Any] = {
    "format": "qppsuite-recording/1",
    "image": "debian-armhf",
    "image_files": {"vmlinuz": "0" * 64},
    "options": {"cmd": "true", "max_insns": None, "ram_mib": 256, "host_decompress": True, "extra_bootargs": ""},
    "stop_kind": "poweroff",
    "insn_count": 1,
    "console_sha256": "0" * 64,
    "console_bytes": 0,
}


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda r: r["options"].update(surprise=1), "options"),
        (lambda r: r.update(options=[1, 2]), "options"),
        (lambda r: r["options"].update(ram_mib="lots"), "options/ram_mib"),
        (lambda r: r.update(image=7), "image"),
        (lambda r: r.update(image_files="vmlinuz"), "image_files"),
        (lambda r: r.update(insn_count=-1), "insn_count"),
        (lambda r: r.pop("console_sha256"), "the top level"),
        (lambda r: r["options"].update(ram_mib=256.0), "options/ram_mib"),  # JSON Schema alone takes 256.0
        (lambda r: r.update(stop_kind="\u001b[31mboom"), "stop_kind"),
    ],
)
def test_an_edited_recording_is_one_line_naming_the_field(tmp_path: Path, edit: Any, says: str) -> None:
    data = json.loads(json.dumps(GOOD_RECORDING))
    edit(data)
    path = tmp_path / "rec.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RecordingError, match=f"damaged recording: {says}"):
        Recording.load(path)


def test_a_recording_that_is_not_utf8_or_too_deep_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "rec.json"
    path.write_bytes(b'{"format": "\xff\xfe"}')
    with pytest.raises(RecordingError, match="not UTF-8"):
        Recording.load(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RecordingError, match="not a qppsuite recording"):
        Recording.load(path)
    path.write_text(json.dumps(GOOD_RECORDING))
    assert Recording.load(path).image == "debian-armhf"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    document=st.dictionaries(st.sampled_from([*sorted(GOOD_RECORDING), "extra", "created"]), JSON, max_size=10).map(
        lambda d: {**GOOD_RECORDING, **d}
    ),
    raw=st.binary(max_size=200),
)
def test_random_recordings_and_manifests_give_only_the_one_line_error(
    tmp_path_factory: pytest.TempPathFactory, document: dict[str, Any], raw: bytes
) -> None:
    root = tmp_path_factory.mktemp("random")
    for content in (json.dumps(document).encode(), raw):
        recording = root / "rec.json"
        recording.write_bytes(content)
        with contextlib.suppress(RecordingError):
            Recording.load(recording)
        bundle = root / "images" / "b"
        bundle.mkdir(parents=True, exist_ok=True)
        (bundle / "manifest.json").write_bytes(content)
        with contextlib.suppress(ImageError):
            open_image(bundle, verify=False)
    manifest = {"format": 1, "name": "b", "kernel": document.get("options"), "files": document.get("image_files")}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with contextlib.suppress(ImageError):
        open_image(bundle, verify=False)
