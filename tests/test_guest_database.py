"""The three plugins on every kernel the archive serves (5.10, 6.1, 6.12), the whole command line as a user runs
it: the run ends by itself, ``sleep 0.1`` returns, and the database's processes are the ones the guest's own ``ps``
lists, with the same parents and names (issue 12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ps_oracle import PS_COMMAND, assert_processes_match_ps

from qppsuite.images.bundle import ImageBundle


@pytest.mark.boot
def test_the_database_lists_the_processes_ps_lists(suite_image: ImageBundle, tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    command = f"sleep 0.1; echo slept; sleep 3 & cat /proc/version >/dev/null; {PS_COMMAND}"
    done = subprocess.run(
        [
            sys.executable, "-m", "qppsuite", "run", str(suite_image.path), "--cmd", command,
            "--plugins", "osi_linux,syscalls,syscalls_logger", "-p", f"syscalls_logger:db={db}",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "slept" in done.stdout.replace("\r", "").splitlines()
    assert_processes_match_ps(done.stdout, db)
