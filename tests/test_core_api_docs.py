"""docs/core-api.md stays true: its example plugin runs on a real boot and prints what the page says."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from qppsuite.images.bundle import ImageBundle

DOC = Path(__file__).resolve().parents[1] / "docs" / "core-api.md"


@pytest.mark.boot
def test_exec_watch_example_runs_as_documented(default_image: ImageBundle, tmp_path: Path) -> None:
    text = DOC.read_text()
    (code,) = re.findall(r"^```python\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert code.startswith("# exec_watch.py\n")
    (tmp_path / "exec_watch.py").write_text(code)
    (command,) = [b for b in re.findall(r"^```text\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)]
    assert command.strip() == 'qppsuite run --plugins ./exec_watch.py --cmd "sleep 0"'
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qppsuite",
            "run",
            str(default_image.path),
            "--plugins",
            "./exec_watch.py",
            "--cmd",
            "sleep 0",
            "--console",
            "console.txt",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"\d+ execs, run ended: poweroff", lines[-1])
    assert int(lines[-1].split()[0]) == len(lines) - 1
    assert any(re.fullmatch(r"exec /proc/self/exe argv0=sleep ttbr0=0x[0-9a-f]+ thumb", line) for line in lines)
    assert all(line.startswith("exec ") for line in lines[:-1])
