"""file_activity on the oracle image, against what the guest's own programs say they did.

One run: python3 creates, writes, reads, renames and deletes files (by absolute paths and relative to a
directory fd) and prints its own byte counts and errors; the shell writes a file by redirection, cat
copies it, mv renames and rm deletes, and wc prints the sizes.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

import pytest
from oracle.guest import logged_run

from qppsuite.images.bundle import ImageBundle

PYTHON = """import os
os.makedirs("/tmp/fa", exist_ok=True)
fd = os.open("/tmp/fa/one", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
w = os.write(fd, b"x" * 10000) + os.write(fd, b"tail\\n") + os.writev(fd, [b"ab", b"cde"])
os.close(fd)
r = 0
with open("/tmp/fa/one", "rb", buffering=0) as f:
    while chunk := f.read(4096):
        r += len(chunk)
d = os.open("/tmp/fa", os.O_RDONLY | os.O_DIRECTORY)
with open("rel", "wb", opener=lambda p, fl: os.open(p, fl, 0o644, dir_fd=d)) as f:
    w2 = f.write(b"relative!")
os.rename("/tmp/fa/one", "/tmp/fa/two")
os.rename("rel", "rel2", src_dir_fd=d, dst_dir_fd=d)
for attempt in (lambda: os.rename("/tmp/fa/missing", "/tmp/fa/x"), lambda: os.open("/tmp/fa/nothere", os.O_RDONLY)):
    try:
        attempt()
    except OSError as e:
        print("FAILED", e.errno)
os.unlink("/tmp/fa/two")
os.unlink("rel2", dir_fd=d)
os.rmdir("/tmp/fa")
print("PY", os.getpid(), "WROTE", w, "READ", r, "WROTE2", w2)
"""
CMD = f"""python3 -c '{PYTHON}'
echo hello there > /tmp/s1; cat /tmp/s1 > /tmp/s2; mv /tmp/s2 /tmp/s3; echo SIZES $(wc -c < /tmp/s1) $(wc -c < /tmp/s3)
rm /tmp/s1 /tmp/s3; echo SH $$
"""


@pytest.fixture(scope="module")
def activity(oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("file_activity") / "files.db"
    text = logged_run(oracle_image, CMD, db, ["file_activity"]).console  # type: ignore[list-item]
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    files = [
        dict(r) for r in conn.execute("SELECT f.*, p.name FROM file_activity f JOIN processes p ON p.id = f.process_id")
    ]
    ops = [dict(r) for r in conn.execute("SELECT * FROM file_ops ORDER BY insn_count")]
    conn.close()
    said = {m[1]: m[2].split() for m in re.finditer(r"^(PY|SIZES|SH) (.*)$", text, re.M)}
    failed = [int(m[1]) for m in re.finditer(r"^FAILED (\d+)$", text, re.M)]
    return {"files": files, "ops": ops, "said": said, "failed": failed}


def _file(activity: dict[str, Any], pid: int, path: str) -> dict[str, Any]:
    (row,) = [f for f in activity["files"] if f["pid"] == pid and f["path"] == path]
    return row


@pytest.mark.boot
def test_python_s_byte_counts_and_errors(activity: dict[str, Any]) -> None:
    said = activity["said"]["PY"]
    pid, wrote, read, wrote2 = int(said[0]), int(said[2]), int(said[4]), int(said[6])
    assert (wrote, read, wrote2) == (10010, 10010, 9) and activity["failed"] == [2, 2]
    one = _file(activity, pid, "/tmp/fa/one")
    assert (one["opens"], one["bytes_written"], one["writes"], one["bytes_read"]) == (2, wrote, 3, read)
    assert one["reads"] == 4 and one["read_errors"] == one["write_errors"] == one["open_errors"] == 0  # 3 + EOF
    rel = _file(activity, pid, "/tmp/fa/rel")  # opened relative to a directory fd: named by the fd it got
    assert (rel["opens"], rel["bytes_written"]) == (1, wrote2)
    assert (_file(activity, pid, "/tmp/fa/nothere")["open_errors"], _file(activity, pid, "/tmp/fa")["opens"]) == (1, 1)
    ops = [
        (o["call"], o["op"], o["path"], o["new_path"], o["ok"], o["errno"]) for o in activity["ops"] if o["pid"] == pid
    ]
    assert [op for op in ops if "/tmp/fa" in op[2]] == [
        ("rename", "rename", "/tmp/fa/one", "/tmp/fa/two", 1, None),
        ("renameat", "rename", "/tmp/fa/rel", "/tmp/fa/rel2", 1, None),  # relative to the directory fd
        ("rename", "rename", "/tmp/fa/missing", "/tmp/fa/x", 0, "ENOENT"),
        ("unlink", "unlink", "/tmp/fa/two", None, 1, None),
        ("unlinkat", "unlink", "/tmp/fa/rel2", None, 1, None),
        ("rmdir", "rmdir", "/tmp/fa", None, 1, None),
    ]


@pytest.mark.boot
def test_the_shell_s_redirection_cat_mv_and_rm(activity: dict[str, Any]) -> None:
    said = activity["said"]
    shell, (size1, size3) = int(said["SH"][0]), (int(v) for v in said["SIZES"])
    assert size1 == size3 == len("hello there\n")
    assert _file(activity, shell, "/tmp/s1")["bytes_written"] == size1  # echo is the shell's own
    (cat,) = [f["pid"] for f in activity["files"] if f["name"] == "cat" and f["path"] == "/tmp/s1"]
    assert _file(activity, cat, "/tmp/s1")["bytes_read"] == size1
    assert _file(activity, cat, "/tmp/s2")["bytes_written"] == size3  # the shell opened it; cat wrote it
    moved = [o for o in activity["ops"] if o["op"] == "rename" and o["path"] == "/tmp/s2"]
    assert [(o["new_path"], o["ok"]) for o in moved] == [("/tmp/s3", 1)]
    removed = {o["path"] for o in activity["ops"] if o["op"] == "unlink" and o["ok"]}
    assert {"/tmp/s1", "/tmp/s3"} <= removed
