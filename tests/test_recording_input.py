"""Input the guest receives (files, scripts, keys) is stamped, recorded, and replayed at the same instants."""

import base64
import errno
import hashlib
import io
import json
import os
import pty
import select
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from cli_entry import run_main

from qppsuite.cli.keyboard import END_OF_INPUT, LEAVE_KEY, KeyboardInput
from qppsuite.cli.run_cmd import check_console
from qppsuite.cli.terminal import ConsoleStream
from qppsuite.core.hypercall import FROM_HOST, HYPERCALL_A32
from qppsuite.errors import ImageError
from qppsuite.images.bundle import ImageBundle
from qppsuite.images.guest.transfer import Assembler, elf_executable, movw
from qppsuite.recording import Recording, RecordingError, pack_inputs, unpack_inputs
from qppsuite.session import RunOptions, run


def qppsuite(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qppsuite", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True, text=True, timeout=900, cwd=cwd, check=False,
    )  # fmt: skip


# -- without the image ----------------------------------------------------------------------------------
def test_inputs_pack_and_unpack_to_the_same_stamps() -> None:
    stamps = [(10, "channel", b"F 3 755 /x\nabc"), (10, "console", b"\x03"), (99, "channel", b"X - - -\n")]
    packed = json.loads(json.dumps(pack_inputs(stamps)))
    assert unpack_inputs(packed) == stamps


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda d: d["inputs"]["stamps"][0].__setitem__(2, 5), "input stamps cover"),
        (lambda d: d["inputs"].__setitem__("data", "AAAA"), "does not decode"),
        (lambda d: d["inputs"]["stamps"].reverse(), "comes after"),
        (lambda d: d["inputs"]["stamps"][0].__setitem__(1, "keyboard"), "damaged recording"),
    ],
)
def test_a_recording_with_edited_input_is_refused_in_one_line(tmp_path: Path, edit, problem: str) -> None:  # type: ignore[no-untyped-def]
    rec = Recording(
        image="x",
        image_files={},
        options={},
        stop_kind="poweroff",
        insn_count=100,
        console_sha256="0" * 64,
        console_bytes=0,
        inputs=pack_inputs([(10, "channel", b"abcd"), (20, "console", b"ef")]),
    )
    path = tmp_path / "rec.json"
    rec.save(path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordingError, match=problem):
        Recording.load(path)
    code, err = run_main(["replay", str(path)])
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) <= 2


def test_keyboard_from_a_pipe_gives_its_bytes_then_ctrl_d_only_once_the_guest_waited() -> None:
    read_end, write_end = os.pipe()
    keys = KeyboardInput(read_end, leave=None)
    os.write(write_end, b"id\nexit\n")
    os.close(write_end)
    time.sleep(0.2)
    assert keys.poll(3) == b"id\n" and keys.poll(100) == b"exit\n"
    assert keys.poll(100) == b""  # the pipe ended, but the guest has not waited for input since
    keys.wait(1.0)
    assert keys.poll(100) == END_OF_INPUT
    assert keys.poll(100) == b""


def test_keyboard_on_a_terminal_leaves_at_ctrl_close_bracket_after_what_came_before() -> None:
    read_end, write_end = os.pipe()
    keys = KeyboardInput(read_end, leave=LEAVE_KEY)
    os.write(write_end, b"ls\r" + bytes([LEAVE_KEY]) + b"never")
    keys.wait(2.0)
    time.sleep(0.1)
    assert keys.poll(100) == b"ls\r"
    assert keys.poll(100) is None
    os.close(write_end)


def test_an_interactive_console_passes_cursor_controls_and_escapes_the_rest() -> None:
    class Sink:
        def __init__(self) -> None:
            self.data = b""

        def write(self, data: bytes) -> None:
            self.data += data

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return True

    sink = Sink()
    stream = ConsoleStream(sink, interactive=True)  # type: ignore[arg-type]
    for chunk in (b"ab\x1b[", b"2K\x1b[1;3", b"1mred\x1b]0;evil title\x07", b"\x1b[?1049h\x08\x1b"):
        stream(chunk)
    assert sink.data == b"ab\x1b[2K\x1b[1;31mred\\x1b]0;evil title\x07\\x1b[?1049h\x08"


def test_interactive_with_stdin_closed_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "run", "-i", "--cmd", "true"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
        preexec_fn=lambda: os.close(0),  # as a shell's `<&-`
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip() == "error: -i: standard input is closed, so nothing can be typed into the guest"


class _Failing(io.BytesIO):
    """A console sink whose writes fail with ``code`` (a full disk, a pipe whose reader left)."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code
        self.tried = 0

    def write(self, data: object) -> int:
        self.tried += 1
        raise OSError(self.code, os.strerror(self.code))


def test_a_console_write_that_fails_stops_the_console_not_the_run() -> None:
    full = _Failing(errno.ENOSPC)
    stream = ConsoleStream(full, terminal=False)
    stream(b"one\n")
    stream(b"two\n")  # dropped: the console stopped at its first failure
    assert (stream.error is not None and stream.error.errno, full.tried) == (errno.ENOSPC, 1)
    with pytest.raises(ImageError, match=r"^cannot write console file c\.log: No space left on device; the rest"):
        check_console(stream, Path("c.log"))
    with pytest.raises(ImageError, match=r"^cannot write the console to standard output: No space left on device"):
        check_console(stream, None)
    piped = ConsoleStream(_Failing(errno.EPIPE), terminal=False)
    piped(b"one\n")
    check_console(piped, None)  # a reader that left early (`| head`) is not an error
    with pytest.raises(ImageError, match="Broken pipe"):
        check_console(piped, Path("fifo"))  # a --console FIFO whose reader left: the file asked for is short
    check_console(ConsoleStream(io.BytesIO(), terminal=False), Path("c.log"))
    check_console(None, None)


# -- on the real guest ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def recorded_file_run(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A recording of a run that gets 50 KB of random bytes through --file and prints their sha256."""
    work = tmp_path_factory.mktemp("rec-input")
    assert run(RunOptions(cmd="true", warm=True), None, image=default_image).ok  # the ready snapshot exists
    blob = os.urandom(50_000)
    (work / "blob").write_bytes(blob)
    done = qppsuite("record", "-o", "run.json", "--file", "blob:/root/blob", "--cmd", "sha256sum /root/blob", cwd=work)
    assert done.returncode == 0, done.stderr
    # The command's output shows as a run's does: its lines only, between marks, with its exit status.
    assert done.stdout == f"{hashlib.sha256(blob).hexdigest()}  /root/blob\n", done.stdout
    assert "── the command ended: exit status 0 ──" in done.stderr
    # It started from the snapshot just made (two full runs saw it boot instead: what it said is kept here).
    assert Recording.load(work / "run.json").extra.get("start") == "restored", done.stderr
    return work / "run.json", hashlib.sha256(blob).hexdigest()


@pytest.mark.boot
def test_a_file_run_records_its_input_and_replays_identically_with_the_plugin_stack(
    recorded_file_run: tuple[Path, str], tmp_path: Path
) -> None:
    path, digest = recorded_file_run
    rec = Recording.load(path)
    stamps = rec.input_stamps()
    line = b"".join(data for _, port, data in stamps if port == "channel")
    assert line.count(b"B 50000 644 /root/blob\n") == 1  # the header on the line...
    bulk = [data for _, port, data in stamps if port == "bulk"]
    assert hashlib.sha256(b"".join(bulk)).hexdigest() == digest  # ...the bytes by hypercall, in the recording
    assert bulk[-1] == b""  # the answer that ended the file
    (tmp_path / "blob").write_bytes(b"gone")  # the replay does not need the host file
    done = qppsuite(
        "replay", str(path), "--plugins", "osi_linux,syscalls,syscalls_logger",
        "-p", f"syscalls_logger:db={tmp_path / 'calls.db'}", "--console", "console.log", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    console = (tmp_path / "console.log").read_bytes()  # the replayed console, byte for byte the recorded one
    assert (hashlib.sha256(console).hexdigest(), len(console)) == (rec.console_sha256, rec.console_bytes)
    assert f"{digest}  /root/blob".encode() in console and done.stdout == ""
    assert f"replayed {rec.insn_count:,} instructions identically" in done.stderr
    assert f"qppsuite: run database {tmp_path / 'calls.db'} (run 1)" in done.stderr  # said, as a run says it


@pytest.mark.boot
def test_a_console_that_cannot_be_written_loses_neither_the_recording_nor_the_recorded_file(
    recorded_file_run: tuple[Path, str], tmp_path: Path
) -> None:
    path, _ = recorded_file_run
    kept = path.read_bytes()
    done = qppsuite("replay", str(path), "--console", str(path), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (1, f"error: --console {path} is the recording being replayed: give "
                                                 "another file\n") and path.read_bytes() == kept  # fmt: skip
    done = qppsuite("record", "-o", "full.json", "--console", "/dev/full", "--cmd", "echo x", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "error: cannot write console file /dev/full: No space left on device; the rest of the console was not written"
    )
    assert Recording.load(tmp_path / "full.json").insn_count > 0  # written before the error
    # A reader that leaves early (`| head -1`) is no error: the command runs to its end, the recording is written.
    reader = subprocess.Popen(
        [sys.executable, "-m", "qppsuite", "record", "-o", "piped.json", "--cmd", "seq 1 20000"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline() == b"1\r\n"  # the serial console's line end
    reader.stdout.close()
    err = reader.stderr.read().decode()
    assert reader.wait(timeout=900) == 0 and "Traceback" not in err, err
    assert "── the command ended: exit status 0 ──" in err and Recording.load(tmp_path / "piped.json").insn_count > 0


@pytest.mark.boot
def test_cold_runs_with_and_without_files_and_a_run_stopped_early_replay_identically(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """--cold with --file boots through the channel; its replay, given the file's bytes from the recording and
    no file to carry, must boot the same way (it once booted without the channel and never took the input)."""
    (tmp_path / "note").write_text("a small file\n")
    done = qppsuite("record", "--cold", "-o", "cold.json", "--file", "note:/tmp/note", "--cmd", "cat /tmp/note",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Recording.load(tmp_path / "cold.json").options["cold_channel"] is True
    # and without a file (the command goes in through /init), and stopped before any script went in
    plain = qppsuite("record", "--cold", "-o", "plain.json", "--cmd", "ls /", cwd=tmp_path)
    early = qppsuite("record", "--max-insns", "1000", "-o", "early.json", "--cmd", "echo hi", cwd=tmp_path)
    assert plain.returncode == 0 and early.returncode == 0, plain.stderr + early.stderr
    assert Recording.load(tmp_path / "plain.json").options["cold_channel"] is False
    for name in ("cold.json", "plain.json", "early.json"):
        again = qppsuite("replay", name, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "identically" in again.stderr


@pytest.mark.boot
def test_a_recording_whose_command_was_edited_is_refused(recorded_file_run: tuple[Path, str], tmp_path: Path) -> None:
    """The command went in as recorded input, so an edited options.cmd would replay 'identically' while the file
    names a command that never ran."""
    path, _ = recorded_file_run
    edited = json.loads(path.read_text())
    edited["options"]["cmd"] = "echo evil"
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    done = qppsuite("replay", str(tmp_path / "edited.json"), cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: the recording's options do not describe its input")


@pytest.mark.boot
def test_a_recording_whose_boot_arguments_were_edited_says_where_the_input_no_longer_fits(
    recorded_file_run: tuple[Path, str], tmp_path: Path
) -> None:
    path, _ = recorded_file_run
    edited = json.loads(path.read_text())
    edited["options"]["extra_bootargs"] = "initcall_debug"  # a longer boot: the ready point lies later
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    done = qppsuite("replay", str(tmp_path / "edited.json"), cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    error, hint = done.stderr.strip().splitlines()[-2:]
    assert "the recorded input cannot be delivered" in error and "before the run's start" in error, error
    assert hint.startswith("hint: the recording's options no longer lead to where it started")


@pytest.mark.boot
def test_a_replay_fed_other_input_diverges_in_one_line(recorded_file_run: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = recorded_file_run
    rec = Recording.load(path)
    stamps = rec.input_stamps()
    first = next(index for index, (_, port, _) in enumerate(stamps) if port == "bulk")
    count, port, data = stamps[first]
    flipped = bytes([data[0] ^ 0xFF]) + data[1:]  # the file's first byte: sha256sum prints another digest
    edited = json.loads(path.read_text())
    edited["inputs"] = pack_inputs([*stamps[:first], (count, port, flipped), *stamps[first + 1 :]])
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    done = qppsuite("replay", str(tmp_path / "edited.json"), cwd=tmp_path)
    assert done.returncode != 0
    assert "diverged" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.boot
def test_a_restored_recording_replays_identically_from_a_boot(
    recorded_file_run: tuple[Path, str], default_image: ImageBundle, tmp_path: Path
) -> None:
    """No ready snapshot in the replay's cache: it boots to the ready point, the same state as restored."""
    path, _ = recorded_file_run
    assert Recording.load(path).extra.get("start") == "restored"
    cache = tmp_path / "cache"
    (cache / "images").mkdir(parents=True)
    shutil.copytree(default_image.path, cache / "images" / default_image.name, symlinks=True)
    done = qppsuite("replay", str(path), "--cache-dir", str(cache), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "identically" in done.stderr


@pytest.mark.boot
def test_piped_stdin_reaches_an_interactive_shell(default_image: ImageBundle, tmp_path: Path) -> None:
    done = qppsuite("run", "-i", "-q", cwd=tmp_path, stdin=b"id; echo sum-$((40+2))\n")  # no exit: the pipe's end
    assert done.returncode == 0, done.stderr
    assert "uid=0(root)" in done.stdout and "sum-42" in done.stdout


def _read_until(fd: int, marker: bytes, seen: bytearray, seconds: float = 300) -> None:
    """Read the terminal into ``seen`` until ``marker`` appears in what arrives from now on."""
    start = len(seen)
    end = time.monotonic() + seconds
    while marker not in seen[start:]:
        assert time.monotonic() < end, f"{marker!r} not seen in {bytes(seen[-400:])!r}"
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                break


@pytest.mark.boot
def test_an_interactive_console_on_a_terminal_is_recorded_and_replays_identically_with_plugins(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    pid, fd = pty.fork()
    if pid == 0:  # the child: qppsuite on a pseudo-terminal, as a user's shell starts it
        os.chdir(tmp_path)
        os.execv(sys.executable, [sys.executable, "-m", "qppsuite", "record", "-i", "-o", "typed.json"])
    seen = bytearray()
    try:
        _read_until(fd, b"# ", seen)  # the guest shell's prompt
        os.write(fd, b"cat /proc/version | wc -c; echo typed-$((6*7))\r")
        _read_until(fd, b"typed-42", seen)
        os.write(fd, b"sleep 30\r")
        time.sleep(1.0)
        os.write(fd, b"\x03")  # Ctrl-C reaches the guest's foreground job, not qppsuite
        _read_until(fd, b"# ", seen)
        os.write(fd, b"exit\r")
        _read_until(fd, b"recorded", seen)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, bytes(seen[-600:])
    rec = Recording.load(tmp_path / "typed.json")
    typed = b"".join(data for _, port, data in rec.input_stamps() if port == "console")
    assert typed.startswith(b"cat /proc/version") and b"\x03" in typed and typed.endswith(b"exit\r")
    db = tmp_path / "calls.db"
    done = qppsuite(
        "replay", "typed.json", "--plugins", "osi_linux,syscalls,syscalls_logger", "-p", f"syscalls_logger:db={db}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(db) as conn:
        names = {name for (name,) in conn.execute("SELECT DISTINCT process_name FROM syscalls")}
    assert {"cat", "wc", "sleep"} <= names


@pytest.mark.boot
def test_a_hypercall_with_a_bad_buffer_gets_efault_and_with_no_transfer_gets_nothing(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """A guest program's own hypercalls: -EFAULT for an unmapped buffer, 0 when the host sends nothing."""
    asm = Assembler()
    asm.emit(movw(0, FROM_HOST), movw(1, 0), movw(2, 16), HYPERCALL_A32)  # buffer at address 0: unmapped
    asm.emit(0xE2604000)  # rsb r4, r0, #0
    asm.emit(movw(0, FROM_HOST), 0xE24D1040, movw(2, 16), HYPERCALL_A32)  # sub r1, sp, #64: a stack buffer
    asm.emit(0xE1A05000, 0xE1840205)  # mov r5, r0 ; orr r0, r4, r5, lsl #4
    asm.call(1)  # exit(r0): 14 if both answers are right
    program = tmp_path / "hyper"
    program.write_bytes(elf_executable(asm.code()))
    program.chmod(0o755)
    done = qppsuite("run", "--file", str(program), "--cmd", "hyper; echo status=$?", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "status=14" in done.stdout


def test_a_decompression_bomb_in_a_recording_is_refused_before_it_inflates(tmp_path: Path) -> None:
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros claimed as 4 bytes of input
    inputs = {"stamps": [[10, "channel", 4]], "data": base64.b64encode(bomb).decode()}
    with pytest.raises(ValueError, match="more than the 4 bytes"):
        unpack_inputs(inputs)


@pytest.mark.boot
def test_a_replay_that_leaves_recorded_input_undelivered_diverges(
    recorded_file_run: tuple[Path, str], tmp_path: Path
) -> None:
    path, _ = recorded_file_run
    rec = Recording.load(path)
    edited = json.loads(path.read_text())
    edited["inputs"] = pack_inputs([*rec.input_stamps(), (rec.insn_count + 10**12, "console", b"late\n")])
    (tmp_path / "late.json").write_text(json.dumps(edited))
    done = qppsuite("replay", str(tmp_path / "late.json"), cwd=tmp_path)
    assert done.returncode != 0 and "never delivered" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.boot
def test_a_file_the_guest_cannot_write_stops_the_run_and_its_bytes_are_never_read_as_requests(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    (tmp_path / "inject").write_bytes(b"R 22 - -\necho INJECTED-BY-FILE\n")  # the agent's own protocol
    done = qppsuite("run", "--file", "inject:/root", "--cmd", "echo SCRIPT-RAN", cwd=tmp_path)
    assert done.returncode == 2 and "could not write /root" in done.stderr
    assert "INJECTED-BY-FILE" not in done.stdout and "SCRIPT-RAN" not in done.stdout


@pytest.mark.boot
def test_a_copy_out_of_a_growing_file_and_of_proc_comes_back_at_the_size_it_had(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    done = qppsuite(
        "run", "--cmd", "(while :; do echo xxxx >> /tmp/log; done) & sleep 1",
        "--copy-out", "/tmp/log:log", "--copy-out", "/proc/version:version", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "log").read_bytes()
    assert log and set(log.replace(b"xxxx\n", b"").strip(b"\0")) <= set(b"x\n")
    assert (tmp_path / "version").read_text().startswith("Linux version ")


@pytest.mark.boot
def test_a_copy_out_of_a_device_or_a_fifo_is_refused_at_once(default_image: ImageBundle, tmp_path: Path) -> None:
    """Only regular files that open come back: sizing /dev/zero, a FIFO or /proc/kmsg by reading them never ended
    (the run hung to --timeout)."""
    refused = ["/tmp/fifo", "/dev/zero", "/proc/kmsg", "/sys/bus/platform/drivers_probe"]  # kmsg never ends;
    wanted = ["--copy-out", "/proc/version:version", "--copy-out", "/proc/1/maps:maps"]  # that one is write-only
    for path in refused:
        wanted += ["--copy-out", f"{path}:{Path(path).name}"]
    done = qppsuite("run", "--timeout", "120", "--cmd", "mkfifo /tmp/fifo", *wanted, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "timeout" not in done.stderr and "/tmp/fifo was not copied: no regular file" in done.stderr
    assert "stopped before" not in done.stderr  # the agent lived on (a failed redirection ended it once)
    assert not any((tmp_path / Path(path).name).exists() for path in refused)
    assert (tmp_path / "version").read_text().startswith("Linux version ")
    assert b"\0" not in (tmp_path / "maps").read_bytes()  # what one read gave, not padded to a second read's size


@pytest.mark.boot
def test_a_copy_out_the_guest_never_answered_says_the_guest_stopped_first(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    done = qppsuite("run", "-q", "--cmd", "poweroff -f", "--copy-out", "/etc/passwd:passwd", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "/etc/passwd was not copied: the guest stopped before the copy" in done.stderr
    assert "no regular file" not in done.stderr and not (tmp_path / "passwd").exists()
