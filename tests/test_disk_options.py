"""--disk on the command line, in snapshot keys and in recordings (no guest: see test_guest_disk.py)."""

import hashlib
from pathlib import Path

import pytest
from cli_entry import run_main

from qppsuite.core.devices.virtio_blk import DiskError
from qppsuite.images.bundle import ImageBundle
from qppsuite.recording import Recording, RecordingError, _recorded_disk
from qppsuite.session import RunOptions, _refusal, disk_sha256, ready_snapshot_key


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(b"\x5a" * 4096)
    return path


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("missing.img", None, "No such file"),
        ("folder", "dir", "not a regular file"),
        ("odd.img", b"x" * 1000, "not a whole number of 512-byte sectors"),
    ],
)
def test_a_disk_that_cannot_be_used_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, name: str, content: bytes | str | None, words: str
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    code, stderr = run_main(["run", "--cache-dir", str(tmp_path), "--disk", str(path), str(tmp_path / "no-image")])
    assert code != 0
    assert words in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


def test_an_unreadable_disk_is_one_line(tmp_path: Path, disk: Path) -> None:
    disk.chmod(0)
    try:
        with open(disk, "rb"):
            pytest.skip("this user reads any file (root)")
    except PermissionError:
        pass
    with pytest.raises(DiskError, match="Permission denied"):
        disk_sha256(disk)


def bundle(tmp_path: Path) -> ImageBundle:
    manifest = {"name": "img", "files": {"vmlinuz": {"sha256": "0" * 64, "size": 1}}}
    return ImageBundle(tmp_path, "img", manifest, tmp_path / "vmlinuz", None, None, "")


def test_a_key_without_a_disk_is_the_key_before_disks_existed(tmp_path: Path) -> None:
    key = ready_snapshot_key(RunOptions(), bundle(tmp_path), "console=ttyAMA0")
    assert set(key) == {"kind", "qppsuite", "image_files", "ram_mib", "bootargs", "agent", "host_decompress"}


def test_a_snapshot_of_another_disk_or_none_is_refused_in_one_line(tmp_path: Path, disk: Path) -> None:
    image = bundle(tmp_path)
    with_disk = ready_snapshot_key(RunOptions(disk=disk), image, "")
    assert with_disk["disk"] == hashlib.sha256(disk.read_bytes()).hexdigest()
    without = ready_snapshot_key(RunOptions(), image, "")
    assert _refusal(with_disk, with_disk, image) is None and _refusal(without, without, image) is None
    assert _refusal(without, with_disk, image) == (
        f"it was made with no disk, and this run has the disk of sha256 {with_disk['disk'][:16]}…"
    )
    other = tmp_path / "other.img"
    other.write_bytes(bytes(512))
    refusal = _refusal(with_disk, ready_snapshot_key(RunOptions(disk=other), image, ""), image)
    assert refusal is not None and refusal.startswith(f"it was made with the disk of sha256 {with_disk['disk'][:16]}")


def test_a_replay_runs_with_the_recorded_disk_only(tmp_path: Path, disk: Path) -> None:
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    recording = Recording("img", {}, {}, "poweroff", 1, "0" * 64, 0, disk={"path": str(disk), "sha256": digest})
    assert _recorded_disk(recording, None) == disk
    moved = tmp_path / "moved.img"
    disk.rename(moved)
    assert _recorded_disk(recording, moved) == moved
    other = tmp_path / "other.img"
    other.write_bytes(bytes(4096))
    with pytest.raises(RecordingError, match="is not the recorded one"):
        _recorded_disk(recording, other)
    with pytest.raises(DiskError, match="No such file"):
        _recorded_disk(recording, None)  # the recorded path is gone
    without = Recording("img", {}, {}, "poweroff", 1, "0" * 64, 0)
    assert _recorded_disk(without, None) is None
    with pytest.raises(RecordingError, match="without a disk"):
        _recorded_disk(without, other)


def test_a_recording_keeps_its_disk_through_the_schema_and_one_without_has_no_field(tmp_path: Path, disk: Path) -> None:
    pinned = {"path": str(disk), "sha256": disk_sha256(disk)}
    Recording("img", {}, {}, "poweroff", 1, "0" * 64, 0, disk=pinned).save(tmp_path / "with.json")
    assert Recording.load(tmp_path / "with.json").disk == pinned
    Recording("img", {}, {}, "poweroff", 1, "0" * 64, 0).save(tmp_path / "without.json")
    assert '"disk"' not in (tmp_path / "without.json").read_text()
    assert Recording.load(tmp_path / "without.json").disk == {}
    (tmp_path / "bad.json").write_text((tmp_path / "with.json").read_text().replace(pinned["sha256"], "x"))
    with pytest.raises(RecordingError, match="damaged recording: disk"):
        Recording.load(tmp_path / "bad.json")
