"""The snapshot file alone (no guest): any byte of it changed is one SnapshotError line, never another exception."""

import os
import zipfile
from array import array
from pathlib import Path

import pytest

from qppsuite.core import snapshot
from qppsuite.core.snapshot import Snapshot, SnapshotError


def test_every_byte_of_a_snapshot_flipped_is_a_snapshot_error_or_the_same_snapshot(tmp_path: Path) -> None:
    """A flipped byte inside a deflate stream can fail in zlib before the archive's CRC is checked."""
    ram = os.urandom(1000).ljust(snapshot.PAGE_SIZE, b"\0") + bytes(range(256)) * 16
    good = Snapshot(b"cpu", 1 << 20, array("I", [3, 9]), ram, {"clock": {"retired": 7}}, {"kind": "test"})
    path = tmp_path / "good.snapshot"
    snapshot.write(good, path)
    data = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("ram.bin")
    start = info.header_offset + 30 + len(info.filename)
    bad = tmp_path / "bad.snapshot"
    errors = 0
    for offset in range(start, start + info.compress_size):
        bad.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1 :])
        try:
            again = snapshot.read(bad)
        except SnapshotError as exc:
            assert "\n" not in str(exc)
            errors += 1
        else:
            assert (again.ram, again.state) == (good.ram, good.state)
    assert errors >= info.compress_size - 8


def test_a_named_snapshot_made_meanwhile_by_another_run_is_never_overwritten(tmp_path: Path) -> None:
    """Two `snapshot save NAME` at once both found NAME free, and the later one renamed its file over the first."""
    first = Snapshot(b"one", 1 << 20, array("I", []), b"", {"clock": {"retired": 1}})
    second = Snapshot(b"two", 1 << 20, array("I", []), b"", {"clock": {"retired": 2}})
    path = tmp_path / "name.snapshot"
    snapshot.write(first, path, replace=False)
    with pytest.raises(SnapshotError, match="made by another run meanwhile"):
        snapshot.write(second, path, replace=False)
    assert snapshot.read(path).cpu == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["name.snapshot"]  # no partial file left
    snapshot.write(second, path)  # the ready snapshot is replaced whole
    assert snapshot.read(path).cpu == b"two"
