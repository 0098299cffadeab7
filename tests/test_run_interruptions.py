"""Runs that end early: Ctrl-C, SIGTERM, a full disk, a wall-clock budget, a plugin calling sys.exit.

Each is the whole ``qppsuite`` process as a user runs it, on the real default
image; the database is then read back: what was committed is kept, and the
``runs`` row says how the run ended.  See docs/reliability.md.
"""

import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_entry import run_main

from qppsuite.images.bundle import ImageBundle
from qppsuite.recording import RecordingError, check_writable

STACK = ["--plugins", "osi_linux,syscalls,syscalls_logger"]
#: A guest that keeps making system calls forever (the hang check sees progress, so only a budget stops it).
BUSY = "while true; do cat /proc/version >/dev/null; done"


def _qppsuite(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qppsuite", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def _rows(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM syscalls").fetchone()[0])
    except sqlite3.Error:
        return 0


def _wait_for_rows(db: Path, child: subprocess.Popen[str], at_least: int = 200) -> None:
    deadline = time.monotonic() + 300
    while _rows(db) < at_least:
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, "no rows committed in 300 s"
        time.sleep(0.5)


def _run_row(db: Path) -> sqlite3.Row:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    row = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    assert row["syscall_count"] == conn.execute("SELECT COUNT(*) FROM syscalls").fetchone()[0]
    return row


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.mark.boot
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGQUIT, 131)])
def test_a_signal_mid_run_stops_cleanly_commits_the_last_batch_and_ends_the_run_row(
    default_image: ImageBundle, tmp_path: Path, signum: int, code: int
) -> None:
    db = tmp_path / "calls.db"
    child = _qppsuite(["run", "-q", *STACK, "-p", f"syscalls_logger:db={db}", "--cmd", BUSY])
    _wait_for_rows(db, child)
    child.send_signal(signum)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == code, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in _one_error_line(stderr)
    run = _run_row(db)
    assert (run["stop_reason"], run["ended_at"] is not None) == ("interrupted", True)


@pytest.mark.boot
def test_more_ctrl_c_during_shutdown_do_not_cut_the_last_commit_short(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    db = tmp_path / "calls.db"
    child = _qppsuite(["run", "-q", *STACK, "-p", f"syscalls_logger:db={db}", "--cmd", BUSY])
    _wait_for_rows(db, child)
    for _ in range(20):  # an impatient user: the first stops the run, the rest land in the shutdown
        if child.poll() is not None:
            break
        child.send_signal(signal.SIGINT)
        time.sleep(0.02)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    _one_error_line(stderr)
    assert _run_row(db)["stop_reason"] == "interrupted"


@pytest.mark.boot
def test_ctrl_c_during_record_stops_it_and_writes_no_recording(default_image: ImageBundle, tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    child = _qppsuite(["record", "-o", str(out), "--cmd", BUSY])
    time.sleep(3)  # wherever it is (loading, booting, running), the signal must stop it
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "nothing recorded" in _one_error_line(stderr)
    assert not out.exists()


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (384 * 1024, 384 * 1024))


@pytest.mark.boot
def test_a_database_write_failure_stops_the_run_with_one_line_and_keeps_what_was_committed(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    db = tmp_path / "calls.db"
    child = _qppsuite(
        ["run", "-q", *STACK, "-p", f"syscalls_logger:db={db}", "-p", "syscalls_logger:batch=50", "--cmd", BUSY],
        preexec_fn=_limit_file_size,
    )
    _, stderr = child.communicate(timeout=600)
    assert child.returncode not in (0, None), stderr
    assert "cannot write the run database" in _one_error_line(stderr)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM syscalls").fetchone()[0] >= 50  # the batches before the failure


@pytest.mark.boot
def test_the_wall_clock_budget_stops_a_guest_that_keeps_making_system_calls(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    db = tmp_path / "calls.db"
    child = _qppsuite(["run", "-q", *STACK, "-p", f"syscalls_logger:db={db}", "--timeout", "8", "--cmd", BUSY])
    _, stderr = child.communicate(timeout=600)
    assert child.returncode == 2, stderr
    assert "timeout: wall-clock budget of 8 s reached" in _one_error_line(stderr)
    assert _run_row(db)["stop_reason"] == "timeout"



@pytest.mark.parametrize("max_insns", [None, 10**12], ids=["boot-in-the-run", "boot-before-the-run"])
@pytest.mark.boot
def test_the_wall_clock_budget_includes_the_boot_that_makes_the_ready_snapshot(
    default_image: ImageBundle, tmp_path: Path, max_insns: int | None
) -> None:
    """With no ready snapshot yet, the run boots to make one (in its own machine, or first in another one when
    --max-insns counts from power-on); --timeout is the whole run's, so that boot spends it too.  It once
    started again afterwards: 4 s of budget took the boot's 2.5 s and 4 s more.  The budget is 15 s so that the
    boot fits it on a loaded machine too (over 4 s with a full test run and three helpers beside it); a boot
    started again after it would still overrun it by the boot's time (2.5 s or more)."""
    from test_snapshot_cli import private_cache

    cache = private_cache(tmp_path / "cache")
    budget = ["--max-insns", str(max_insns)] if max_insns is not None else []
    began = time.monotonic()
    child = _qppsuite(["run", "-q", "--timeout", "15", *budget, "--cmd", BUSY, "--cache-dir", str(cache)])
    _, stderr = child.communicate(timeout=600)
    took = time.monotonic() - began
    assert child.returncode == 2, stderr
    assert "timeout: wall-clock budget of 15 s reached" in _one_error_line(stderr)
    assert list(cache.glob("snapshots/*/ready-*.snapshot")), "the boot reached the ready point and saved it"
    assert took < 15 + 2.0, took  # start-up and stopping; the boot alone (2.5 s here) took its own 15 s before


PLUGIN_THAT_EXITS = """
import sys
from qppsuite.core.qpp import Plugin

class Quitter(Plugin):
    name = "quitter"

    def load(self):
        self.qpp.register("core", "on_svc", self.on_svc, owner=self.name)

    def on_svc(self, event):
        sys.exit(3)
"""


@pytest.mark.boot
@pytest.mark.parametrize("strict", [False, True])
def test_a_plugin_calling_sys_exit_is_a_plugin_failure(
    default_image: ImageBundle, tmp_path: Path, strict: bool
) -> None:
    plugin = tmp_path / "quitter.py"
    plugin.write_text(PLUGIN_THAT_EXITS)
    db = tmp_path / "calls.db"
    args = ["run", "-q", "--plugins", f"{plugin},syscalls_logger", "-p", f"syscalls_logger:db={db}"]
    args += ["--max-insns", "400000000"] + (["--strict"] if strict else [])
    child = _qppsuite(args)
    _, stderr = child.communicate(timeout=600)
    assert "plugin 'quitter' raised in core:on_svc: SystemExit: 3" in stderr, stderr
    assert "Traceback" not in stderr
    if strict:
        assert child.returncode not in (0, 3), stderr  # the run stopped on the failure, with its reason
        assert _one_error_line(stderr).startswith("error: plugin: plugin 'quitter' raised in core:on_svc")
        assert _run_row(db)["stop_reason"] == "plugin"  # and the database says why it ended
    else:
        # The run went on (to power-off, or the budget: exit 2) and then says the plugin failed, how often.
        assert child.returncode in (1, 2), stderr
        if child.returncode == 1:
            assert re.search(r"error: plugin 'quitter' raised in core:on_svc: SystemExit: 3 \(\d+ times\)", stderr)
        assert _run_row(db)["stop_reason"] in ("poweroff", "max_insns")


def test_an_unwritable_recording_path_is_refused_before_anything_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for bad in (blocker / "rec.json", tmp_path, Path("/proc/qppsuite-rec.json")):
        with pytest.raises(RecordingError, match="cannot write recording"):
            check_writable(bad)
    check_writable(tmp_path / "new" / "rec.json")
    assert list((tmp_path / "new").iterdir()) == []  # the probe leaves nothing behind
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "record", "-o", str(blocker / "rec.json"), "no-such-image"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "QPPSUITE_CACHE": str(tmp_path)},
    )
    assert done.returncode == 1
    assert "cannot write recording" in _one_error_line(done.stderr)  # not the image: the path is checked first


@pytest.mark.boot
@pytest.mark.parametrize(("signum", "delay"), [(signal.SIGINT, 0.05), (signal.SIGINT, 0.3), (signal.SIGTERM, 0.05)])
def test_a_signal_while_qppsuite_starts_is_one_line_and_its_exit_status(
    default_image: ImageBundle, signum: int, delay: float
) -> None:
    """Importing the CLI takes about half a second: a Ctrl-C there printed the traceback of an import."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qppsuite", "run", "-q", str(default_image.path), "--cmd", "true"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    if "init_import_site" in stderr:  # on a loaded machine the signal can come before Python runs any of ours
        pytest.skip("the signal reached Python's own start-up (importing site), before qppsuite's entry point")
    if "KeyboardInterrupt" in stderr and "<frozen runpy>" in stderr and "qppsuite" not in stderr:
        pytest.skip("the signal reached runpy's own imports (python -m), before any qppsuite module ran")
    if proc.returncode == -signum and not stderr:  # the default action: no handler of ours was installed yet
        name = signal.Signals(signum).name
        pytest.skip(f"{name} came before qppsuite's entry point installed its handlers (a loaded machine)")
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"interrupted by {signal.Signals(signum).name}" in lines[0], stderr


#: A signal delivered inside a weakref callback, as importlib's module locks run them during an import.
_IN_WEAKREF_CALLBACK = """
import os, signal, sys, weakref
import qppsuite.__main__ as entry
signal.signal(signal.SIGTERM, getattr(entry, sys.argv[1]))
class Module: pass
module = Module()
ref = weakref.ref(module, lambda _ref: os.kill(os.getpid(), signal.SIGTERM))
del module
print("carried on")
"""


@pytest.mark.parametrize(("handler", "stopped"), [("_stop_importing", True), ("_stop_early", False)])
def test_a_signal_during_the_cli_import_ends_the_process_even_inside_a_weakref_callback(
    handler: str, stopped: bool
) -> None:
    """CI saw a SIGTERM during the import print "Exception ignored" and the run go on to exit 0.

    The handler used while the CLI is imported must end the process whatever
    frame the signal lands in; the later one (SystemExit) is shown losing it there.
    """
    done = subprocess.run(
        [sys.executable, "-c", _IN_WEAKREF_CALLBACK, handler], capture_output=True, text=True, timeout=60
    )
    if stopped:
        assert done.returncode == 128 + signal.SIGTERM and not done.stdout, done
        assert done.stderr == "error: interrupted by SIGTERM\n"
    else:
        assert done.returncode == 0 and "carried on" in done.stdout and "Exception ignored" in done.stderr


@pytest.mark.boot
@pytest.mark.parametrize("args", [["--bootargs", "quiet é"], ["--bootargs", "quiet \x01"], ["--max-insns", "0"]])
def test_options_the_machine_cannot_take_are_one_line(default_image: ImageBundle, args: list[str]) -> None:
    code, stderr = run_main(["run", "-q", str(default_image.path), "--cmd", "true", *args])
    assert code == 2 and "Traceback" not in stderr and stderr.startswith(("error:", "Error:")), stderr
