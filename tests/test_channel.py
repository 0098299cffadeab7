"""The host<->guest channel (qppsuite/channel.py): files in and out, a user's own program, the ready snapshot.

The guest's own view is the oracle: sha256sum inside the guest, the console, the database the logger wrote.
"""

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tool_modules import load_tool

from qppsuite.channel import Channel, ChannelError, parse_copy_out, parse_copy_outs, parse_file_spec
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, ready_snapshot_key, ready_snapshot_path, run


def test_file_and_copy_out_specs(tmp_path: Path) -> None:
    (tmp_path / "tool").write_bytes(b"x")
    (tmp_path / "tool").chmod(0o750)
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "a").write_bytes(b"a")
    [single] = parse_file_spec(str(tmp_path / "tool"))
    assert (single.guest, single.mode) == ("/usr/local/bin/tool", 0o750)
    assert parse_file_spec(f"{tmp_path / 'tool'}:/opt/")[0].guest == "/opt/tool"
    assert [f.guest for f in parse_file_spec(f"{tmp_path / 'tree'}:/srv/t")] == ["/srv/t/sub/a"]
    assert [f.guest for f in parse_file_spec(f"{tmp_path / 'tree'}:/srv/")] == ["/srv/tree/sub/a"]  # as a file's
    assert parse_copy_out("/tmp/out.bin").host == Path("out.bin")
    for bad in (f"{tmp_path / 'missing'}", f"{tmp_path / 'tool'}:relative", f"{tmp_path / 'tool'}:/a/../b"):
        with pytest.raises(ChannelError):
            parse_file_spec(bad)


def test_a_host_file_name_may_hold_colons(tmp_path: Path) -> None:
    """HOST is the longest part of HOST[:GUEST] before a colon that exists: a capture named by its time works."""
    (tmp_path / "capture-12:30:05.pcap").write_bytes(b"x")
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "a:b").write_bytes(b"ab")
    assert parse_file_spec(str(tmp_path / "capture-12:30:05.pcap"))[0].guest == "/usr/local/bin/capture-12:30:05.pcap"
    assert parse_file_spec(f"{tmp_path / 'capture-12:30:05.pcap'}:/tmp/c")[0].guest == "/tmp/c"
    [ab] = parse_file_spec(f"{tmp_path / 'a:b'}:/tmp/x")
    assert (ab.host.name, ab.guest) == ("a:b", "/tmp/x")
    [a] = parse_file_spec(f"{tmp_path / 'a'}:/tmp/b:c")
    assert (a.host.name, a.guest) == ("a", "/tmp/b:c")
    with pytest.raises(ChannelError, match="missing does not exist"):
        parse_file_spec(f"{tmp_path / 'missing'}:/tmp/x")
    for empty in ("", ":/tmp/x"):  # not the current directory
        with pytest.raises(ChannelError, match="no host"):
            parse_file_spec(empty)


@pytest.mark.boot
def test_files_go_in_and_come_out_intact_and_a_restored_run_equals_a_booted_one(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(200_000))
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    runs = []
    for cold in (True, False):
        out = tmp_path / f"back-{cold}.bin"
        console = bytearray()
        result = run(
            RunOptions(
                cmd="sha256sum /tmp/in/blob; cp /tmp/in/blob /tmp/out.bin",
                files=parse_file_spec(f"{blob}:/tmp/in/blob"),
                copy_out=[parse_copy_out(f"/tmp/out.bin:{out}")],
                cold=cold,
                warm=True,
            ),
            console.extend,
            image=default_image,
        )
        assert result.ok, result.reason.message
        assert f"{digest}  /tmp/in/blob".encode() in console
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
        runs.append((result.start, result.insn_count, bytes(console[console.index(digest.encode()) :])))
    (booted, booted_count, booted_console), (restored, restored_count, restored_console) = runs
    assert (booted, restored) == ("booted", "restored")
    assert restored_count == booted_count  # the same instant, the same instructions
    assert restored_console == booted_console
    key = ready_snapshot_key(RunOptions(), default_image, default_image.bootargs)
    assert ready_snapshot_path(RunOptions(), default_image, key).is_file()


@pytest.mark.boot
def test_a_users_own_static_program_runs_from_file_and_its_calls_are_logged_under_its_name(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    program = tmp_path / "mytool"
    program.write_bytes(load_tool("arm_svc_program").program(3, 2))
    program.chmod(0o755)
    db = tmp_path / "calls.db"
    done = subprocess.run(
        [
            sys.executable, "-m", "qppsuite", "run", "-q", "--file", str(program), "--cmd", "mytool",
            "--plugins", "osi_linux,syscalls,syscalls_logger", "-p", f"syscalls_logger:db={db}",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        names = conn.execute("SELECT name FROM syscalls WHERE process_name = 'mytool'").fetchall()
    assert [n for (n,) in names].count("getpid") == 6


def test_a_copy_out_replaces_the_host_file_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written beside the old file and renamed over it: a run killed while writing 100 MB left part of the new
    file under the final name, and the old one gone."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old contents")
    channel = Channel(copy_out=[parse_copy_out(f"/tmp/x:{target}")])
    channel.received["/tmp/x"] = b"new contents"

    def killed(*_args: object) -> None:
        raise KeyboardInterrupt  # as a signal arriving between the write and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        channel.write_copies()
    assert target.read_bytes() == b"old contents" and sorted(tmp_path.iterdir()) == [target]
    monkeypatch.undo()
    assert channel.write_copies() == [target]
    assert target.read_bytes() == b"new contents" and sorted(tmp_path.iterdir()) == [target]


def test_a_directorys_files_are_checked_as_guest_paths_and_its_links_followed_without_loops(tmp_path: Path) -> None:
    """A sample's directory is hostile input: a newline in a name once went onto the channel's line as it was,
    where "x\\nX - - -" injected a request; links to directories were not followed although cp -rL does."""
    tree = tmp_path / "tree"
    (tree / "real").mkdir(parents=True)
    (tree / "real" / "f").write_text("r")
    (tree / "link").symlink_to("real")
    (tree / "real" / "up").symlink_to("..")  # a loop: left out
    (tree / "dangling").symlink_to("nowhere")
    assert [f.guest for f in parse_file_spec(f"{tree}:/tmp/t")] == ["/tmp/t/link/f", "/tmp/t/real/f"]
    for bad in ("x\nX - - -", "caf\udce9"):  # a newline; a byte that is not UTF-8 (as os.fsdecode gives it)
        hostile = tmp_path / "hostile"
        shutil.rmtree(hostile, ignore_errors=True)
        hostile.mkdir()
        (hostile / "ok").write_text("ok")
        Path(os.fsencode(hostile).decode() + "/" + bad).write_text("bad")
        with pytest.raises(ChannelError, match="the file"):
            parse_file_spec(f"{hostile}:/tmp/h")


def test_a_command_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "run", "--cmd", os.fsdecode(b"echo caf\xe9")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: --cmd: byte 0xe9 at offset 8 is not UTF-8")


def test_copy_outs_expand_the_home_directory_and_may_not_share_a_host_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert parse_copy_out("/etc/passwd:~/pw").host == tmp_path / "pw"  # as --file expands it; not ./~/pw
    with pytest.raises(ChannelError, match="would both be written to"):
        parse_copy_outs(["/etc/passwd:out", "/etc/group:./out"])
    assert [c.guest for c in parse_copy_outs(["/etc/passwd", "/etc/group"])] == ["/etc/passwd", "/etc/group"]


def test_a_directory_that_cannot_be_listed_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tree" / "locked").mkdir(parents=True)
    real_iterdir = Path.iterdir

    def iterdir(self: Path) -> Iterator[Path]:  # root may list a mode-000 directory: refuse as the kernel would
        if self.name == "locked":
            raise PermissionError(13, "Permission denied")
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(ChannelError, match=r"cannot read the directory .*locked: Permission denied"):
        parse_file_spec(f"{tmp_path / 'tree'}:/tmp/t")



def test_the_script_s_handing_over_is_announced_when_its_request_is_sent() -> None:
    """The run's console marks the command's start there (CommandConsole.start), not at a guessed first line."""
    sent: list[bytes] = []
    events: list[str] = []
    channel = Channel(script=b"echo hi\n", send=lambda request: (sent.append(request), events.append("sent")))
    channel.on_script = lambda: events.append("script")
    channel.prepare()
    channel.feed(b"QPPSUITE-READY\nG\n")
    assert sent == [b"R 8 - -\necho hi\n"] and events == ["sent", "script"]
    channel.feed(b"S 0\nQPPSUITE-READY\nG\n")
    assert sent[-1] == b"X - - -\n" and events == ["sent", "script", "sent"]
