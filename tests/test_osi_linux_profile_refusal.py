"""A damaged profile stops a real run with one line naming the field, and a non-zero exit.

The default image's own profile with one task_struct fact made wrong, through
the CLI as a user runs it: offsets the kernel image already contradicts are
refused before the guest runs (init_task is static data), the pid offset once
init exists, absurd sizes at load.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qppsuite.images.bundle import ImageBundle

pytestmark = pytest.mark.boot


def _qppsuite_run(profile: Path, *plugins: str, cold: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qppsuite", "run", "--quiet", "--cmd", "true", "--max-insns", "2000000000",
         "--plugins", ",".join(plugins), "-p", f"osi_linux:profile={profile}", *(["--cold"] if cold else [])],
        capture_output=True, text=True, timeout=600, check=False,
    )


def _damaged(image: ImageBundle, path: Path, member: str, key: str, change: int) -> Path:
    assert image.profile_path is not None
    data = json.loads(image.profile_path.read_text())
    data["types"]["task_struct"]["members"][member][key] += change
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("member", "shift", "message", "before_the_guest_runs"),
    [
        ("tasks", 8, r"task_struct\.tasks \(offset \d+\): the task list from init_task does not lead back", True),
        ("comm", 16, r"task_struct\.comm \(offset \d+\) of init_task reads .*, not a name starting 'swapper'", True),
        ("pid", -8, r"task_struct\.pid \(offset \d+\) of init \(the first task after init_task\) reads", False),
    ],
)
def test_a_wrong_offset_stops_the_run_naming_the_field(
    default_image: ImageBundle, tmp_path: Path, member: str, shift: int, message: str, before_the_guest_runs: bool
) -> None:
    # From power-on (--cold), where init_task is checked before the guest runs and init once it exists.
    done = _qppsuite_run(_damaged(default_image, tmp_path / "p.json", member, "offset", shift), "osi_linux", cold=True)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert re.search(f"error: plugin: osi_linux: profile .* does not fit the guest kernel: {message}", lines[0])
    count = re.search(r"after ([\d,]+) instructions", lines[0])
    assert count is not None
    assert (int(count.group(1).replace(",", "")) < 10_000) == before_the_guest_runs


def test_a_wrong_offset_stops_a_run_that_needs_osi_linux_for_another_plugin(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """syscalls_logger pulls osi_linux in: without the refusal every row would have no process."""
    profile = _damaged(default_image, tmp_path / "p.json", "pid", "offset", -8)
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "run", "--quiet", "--cmd", "true", "--max-insns", "2000000000",
         "--plugins", "syscalls_logger", "-p", f"osi_linux:profile={profile}",
         "-p", f"syscalls_logger:db={tmp_path / 'calls.db'}"],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 2 and "task_struct.pid" in done.stderr, done.stderr[-2000:]


def test_a_200_mb_comm_is_refused_at_load(default_image: ImageBundle, tmp_path: Path) -> None:
    done = _qppsuite_run(_damaged(default_image, tmp_path / "p.json", "comm", "size", 200_000_000), "osi_linux")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "types/task_struct/members/comm/size: 200000016 is greater than the maximum" in done.stderr
    assert "Traceback" not in done.stderr
