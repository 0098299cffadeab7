"""Record once, replay with plugins, and catch divergences."""

import json
import sqlite3
import time
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.recording import Recording, RecordingError, default_path, record, replay
from qppsuite.session import RunOptions


class SvcCounter(Plugin):
    name = "svc_counter"
    count: ClassVar[list[int]] = [0]

    def load(self) -> None:
        self.count[0] = 0
        self.qpp.register("core", "on_svc", lambda: self.count.__setitem__(0, self.count[0] + 1), owner=self.name)


class Meddler(Plugin):
    """Changes what the guest writes: an analysis that perturbs the run."""

    name = "meddler"

    def load(self) -> None:
        self.qpp.register("core", "on_svc", self.on_svc, owner=self.name)

    def on_svc(self) -> None:
        cpu = self.machine.registers
        if cpu.read("r7") == 4:  # write(fd, buf, n)
            data = self.machine.memory.read(cpu.read("r1"), cpu.read("r2"))
            if b"recorded-run" in data:
                self.machine.memory.write(cpu.read("r1"), data.replace(b"recorded-run", b"meddled-run!"))


@pytest.fixture(scope="module")
def recording(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rec, result = record(RunOptions(image=default_image.path, cmd="echo recorded-run"))
    assert result.ok
    path = tmp_path_factory.mktemp("rec") / "run.json"
    rec.save(path)
    return path


@pytest.mark.boot
def test_replay_with_plugins_is_the_same_execution(recording: Path) -> None:
    rec = Recording.load(recording)
    assert rec.stop_kind == "poweroff" and rec.insn_count > 100_000_000
    result = replay(rec, [SvcCounter])
    assert result.insn_count == rec.insn_count
    assert SvcCounter.count[0] > 50


@pytest.mark.boot
def test_a_plugin_that_perturbs_the_guest_is_a_divergence_and_the_log_says_so(recording: Path, tmp_path: Path) -> None:
    db = tmp_path / "diverged.db"
    with pytest.raises(RecordingError, match="replay diverged"):
        replay(
            Recording.load(recording),
            [Meddler, "osi_linux", "syscalls", "syscalls_logger"],
            {"syscalls_logger": {"db": str(db)}},
        )
    with sqlite3.connect(db) as conn:
        reason, message = conn.execute("SELECT stop_reason, stop_message FROM runs").fetchone()
    assert reason == "diverged" and message.startswith("replay diverged"), (reason, message)
    shown = CliRunner().invoke(app, ["stats", str(db)])
    assert shown.exit_code == 0 and "warning: run 1 ended diverged: replay diverged" in shown.output


@pytest.mark.boot
def test_a_changed_image_or_damaged_file_is_refused(recording: Path, tmp_path: Path) -> None:
    data = json.loads(recording.read_text())
    data["image_files"]["vmlinuz"] = "0" * 64
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    with pytest.raises(RecordingError, match="not the recorded one: vmlinuz changed"):
        replay(Recording.load(other))
    (tmp_path / "junk.json").write_text("{nope")
    with pytest.raises(RecordingError, match="not a qppsuite recording"):
        Recording.load(tmp_path / "junk.json")
    with pytest.raises(RecordingError, match="cannot read recording"):
        Recording.load(tmp_path / "missing.json")


def test_recordings_made_in_the_same_second_get_their_own_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    second_of_all = time.struct_time((2026, 12, 5, 20, 47, 51, 5, 339, 0))
    monkeypatch.setattr(time, "gmtime", lambda *_: second_of_all)
    first = default_path("debian-armhf")
    assert first == Path("recordings/debian-armhf-20261205T204751Z.json")
    first.parent.mkdir()
    first.write_text("{}")
    second = default_path("debian-armhf")
    assert second == Path("recordings/debian-armhf-20261205T204751Z-2.json")
    second.write_text("{}")
    assert default_path("debian-armhf").name == "debian-armhf-20261205T204751Z-3.json"


def test_a_recording_never_overwrites_one_another_record_wrote_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records run at once all chose the same free name before any wrote it; the later ones overwrote it."""
    monkeypatch.chdir(tmp_path)
    taken = Path("recordings/taken.json")
    taken.parent.mkdir()
    taken.write_text("another record's")
    names = iter([taken, Path("recordings/free.json")])
    monkeypatch.setattr("qppsuite.recording.default_path", lambda _image: next(names))
    rec = Recording("debian-armhf", {}, {}, "poweroff", 1, "0" * 64, 0)
    assert rec.save_new("debian-armhf") == Path("recordings/free.json")
    assert taken.read_text() == "another record's"
    assert Recording.load(Path("recordings/free.json")).insn_count == 1

