"""The snapshot file alone (no guest): any byte of it changed is one SnapshotError line, never another exception."""

import os
import zipfile
from array import array
from pathlib import Path

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
