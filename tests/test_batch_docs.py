"""docs/batch.md's example jobs file, run as written (with its probe.sh), gives what the page shows."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qppsuite.images.bundle import ImageBundle

DOC = Path(__file__).parent.parent / "docs" / "batch.md"


def _block(language: str, after: str) -> str:
    """The first ```LANGUAGE block of docs/batch.md after the line ``after``."""
    text = DOC.read_text()
    found = re.search(rf"^```{language}\n(.*?)^```", text[text.index(after):], re.S | re.M)
    assert found is not None
    return found.group(1)


@pytest.mark.boot
def test_the_documented_example_runs(tmp_path: Path, default_image: ImageBundle) -> None:
    (tmp_path / "jobs.yaml").write_text(_block("yaml", "### An example"))
    (tmp_path / "probe.sh").write_text(_block("sh", "### An example"))
    (tmp_path / "note.txt").write_text("twelve bytes")
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "batch", "jobs.yaml", "--pool"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 1, done.stderr
    assert "4 jobs: 2 ok, 2 failed, 0 not run" in done.stderr
    out = tmp_path / "batch-jobs"
    results = {r["label"]: r for r in (json.loads(p.read_text()) for p in out.glob("jobs/*/result.json"))}
    assert {label: (r["status"], r["reason"]) for label, r in results.items()} == {
        "uname": ("ok", None),
        "probe": ("ok", None),
        "panics": ("failed", "kernel panic: sysrq triggered crash"),
        "spins": ("failed", "budget exceeded: 300000000 instructions"),
    }
    assert (out / "jobs" / "probe" / "copied" / "answer.txt").read_text() == "12 /root/note.txt\n"
