"""Guest, database and command-line text is shown as data: never rich markup, never raw control bytes.

Every viewer and the error printer get hostile strings (markup that would crash
rich or hide text, terminal escape sequences, bidirectional overrides, emoji
codes), fixed and from hypothesis; the output must show them literally, with
each control character escaped as strace would (``\\x1b``).
"""

import io
import json
import os
import pty
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from cli_entry import run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.cli.terminal import ConsoleStream, visible
from qppsuite.plugins.syscalls_logger.database import SYSCALL_ROW, SyscallDatabase
from qppsuite.recording import Recording

runner = CliRunner(env={"COLUMNS": "1000"})  # wide, so no cell is wrapped and text can be searched whole

HOSTILE = [
    "/tmp/[/]",
    "oops [/bold] here",
    "[bold red]x",
    "evil\x1b]0;owned\x07title",
    "\x1b[2J\x1b[31mred",
    "bell\x07back\x08space\rreturn",
    "new\nline: error: forged",
    "bidi\u202etxt.exe",
    "zero\u200bwidth",
    ":thumbs_up: :x:",
    "c1\x9bcsi",
]

#: What no output may hold: a terminal acts on these or does not show them.
_ACTED_ON = {"Cc", "Cf", "Zl", "Zp", "Cs", "Cn", "Co"}


def _raw_controls(output: str) -> list[str]:
    return [c for c in output if c != "\n" and unicodedata.category(c) in _ACTED_ON]


def _database(path: Path, name: str, thread: str | None = None, image: str = "test") -> Path:
    """A database as the logger writes it, with ``name`` as process name, path argument and buffer."""
    writer = SyscallDatabase(path, {"image": image})
    proc = {
        "id": writer.new_process_id(),
        "pid": 7,
        "ppid": 1,
        "name": name,
        "names": json.dumps(["sh", name]),
        "start_time": 1,
        "first_seen_insn": 0,
        "last_seen_insn": 0,
        "syscall_count": 1,
    }
    thread_row = {
        "id": writer.new_thread_id(),
        "process_id": proc["id"],
        "tid": 7,
        "name": thread if thread is not None else name,
        "names": json.dumps([thread if thread is not None else name]),
        "syscall_count": 1,
    }
    row = {
        "seq": 1,
        "insn_count": 100,
        "pc": 0x1000,
        "thumb": 0,
        "process_id": proc["id"],
        "pid": 7,
        "tid": 7,
        "ppid": 1,
        "process_name": name,
        "thread_name": thread if thread is not None else name,
        "number": 322,
        "name": "openat",
        "raw_args": "[0, 0, 0, 0, 0, 0, 0]",
        "args": json.dumps({"path": name}),
        "retval": -2,
        "errno": "ENOENT",
        "returned": 1,
        "child": 0,
        "asid": 1,
        "text": f"openat(AT_FDCWD, {json.dumps(name)}, O_RDONLY) = -1 ENOENT",
    }
    writer.add(tuple(map(row.get, SYSCALL_ROW)), proc, thread_row)
    writer.end_run({"stop_reason": "poweroff"})
    writer.close()
    return path


VIEWS: list[tuple[str, ...]] = [
    ("syscalls",),
    ("syscalls", "--format", "csv"),
    ("processes", "--threads"),
    ("stats",),
    ("query", "SELECT name, process_name, args FROM syscalls"),
]


def _view(db: Path, view: tuple[str, ...]) -> str:
    args = [view[0], str(db), *view[1:]]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
    return result.output


@pytest.mark.parametrize("name", HOSTILE)
def test_every_viewer_shows_hostile_guest_text_literally_with_control_bytes_escaped(tmp_path: Path, name: str) -> None:
    db = _database(tmp_path / "hostile.db", name)
    for view in VIEWS:
        output = _view(db, view)
        if view[-1] == "csv":  # piped csv is data for other tools, kept exact (on a terminal: see below)
            assert name in output or json.dumps(name)[1:-1] in output
            continue
        assert not _raw_controls(output), (view, output)
        if view[0] in ("syscalls", "processes"):
            assert visible(name) in output, (view, output)  # shown whole: nothing hidden by markup or emoji


def test_markup_that_would_hide_text_is_shown_as_typed(tmp_path: Path) -> None:
    output = _view(_database(tmp_path / "m.db", "[bold red]x"), ("processes",))
    assert "[bold red]x" in output
    assert "\\x1b" in _view(_database(tmp_path / "e.db", "a\x1b[31mb"), ("processes",))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=40), thread=st.text(max_size=20))
def test_random_guest_text_never_crashes_a_viewer_or_reaches_the_terminal_raw(
    tmp_path_factory: pytest.TempPathFactory, name: str, thread: str
) -> None:
    db = _database(tmp_path_factory.mktemp("h") / "random.db", name, thread)
    for view in VIEWS:
        output = _view(db, view)
        assert view[-1] == "csv" or not _raw_controls(output), view


def test_csv_on_a_terminal_is_escaped_like_every_other_view(tmp_path: Path) -> None:
    db = _database(tmp_path / "tty.db", "evil\x1b]0;owned\x07title")
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "qppsuite", "syscalls", str(db), "--format", "csv"],
        stdout=terminal,
        stderr=subprocess.PIPE,
    ) as child:
        os.close(terminal)
        output = b""
        while chunk := _read(controller):
            output += chunk
        assert child.wait(timeout=60) == 0
    os.close(controller)
    shown = output.decode()
    assert "evil\\x1b]0;owned\\x07title" in shown, shown
    assert not _raw_controls(shown.replace("\r", "")), shown


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the child closed the terminal
        return b""


def _error(args: list[str]) -> str:
    """stderr of the ``qppsuite`` entry point (which prints errors), which must exit non-zero."""
    code, output = run_main(args)
    assert code != 0
    assert "Traceback" not in output
    return output


@pytest.mark.parametrize("text", HOSTILE)
def test_the_error_printer_shows_hostile_user_text_literally(tmp_path: Path, text: str) -> None:
    cases = [
        ["run", "--cache-dir", str(tmp_path), f"img{text}"],  # an image name
        ["syscalls", str(tmp_path / f"db{text}.db")],  # a path
        ["run", "--cache-dir", str(tmp_path), "-p", f"nosuch:{text}=1", f"img{text}"],
    ]
    for args in cases:
        output = _error(args)
        assert output.startswith("error:"), output
        assert not _raw_controls(output), output
        assert visible(text) in output.replace("\n", ""), output


def test_a_recordings_hostile_image_name_is_shown_literally(tmp_path: Path) -> None:
    recording = tmp_path / "rec.json"
    Recording("[/]\x1b[2J", {}, {}, "poweroff", 1, "0" * 64, 0).save(recording)
    output = _error(["replay", str(recording), "--cache-dir", str(tmp_path)])
    assert output.startswith("error:") and "[/]\\x1b[2J" in output, output
    assert not _raw_controls(output), output


def test_the_guest_console_is_escaped_on_a_terminal_and_kept_exact_in_a_file() -> None:
    hostile = "ok \x1b]0;owned\x07 \u202eevil\r\n".encode() + b"\xff\n"
    terminal, file = io.BytesIO(), io.BytesIO()
    for stream, is_terminal in ((terminal, True), (file, False)):
        writer = ConsoleStream(stream, terminal=is_terminal)
        for i in range(len(hostile)):  # byte by byte: a UTF-8 sequence split across writes stays whole
            writer(hostile[i : i + 1])
    assert file.getvalue() == hostile
    shown = terminal.getvalue().decode()
    assert shown == "ok \\x1b]0;owned\\x07 \\u202eevil\r\n\\xff\n"


def test_visible_keeps_printable_text_and_escapes_only_what_a_terminal_acts_on() -> None:
    assert visible("héllo wörld 日本") == "héllo wörld 日本"
    # a C1 control as \u: \x9b is how the views show the byte 0x9b of text that is not UTF-8
    assert visible("a\x00b\x7fc\x9bd\ne\tf") == "a\\x00b\\x7fc\\u009bd\\x0ae\\x09f"
    assert visible("\u2028\U000e0001") == "\\u2028\\U000e0001"


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--ram", "[/]\x1b[2J"],
        ["syscalls", "x.db", "--format", "[bold]\x1b]0;t\x07"],
        ["no-such-command\x1b[2J"],
    ],
)
def test_a_bad_option_is_one_error_line_not_a_usage_panel(args: list[str]) -> None:
    output = _error(args)
    assert output.startswith("error:"), output
    assert len(output.splitlines()) <= 2, output  # the line, and the hint
    assert not _raw_controls(output), output


def test_a_backslash_the_guest_wrote_is_doubled_so_it_never_looks_like_an_escape(tmp_path: Path) -> None:
    """Left by issue 14: a process a program named ``a\\x1bb`` (backslash, x, 1, b) was shown exactly as one
    whose name holds the ESC byte.  The views double a guest's backslash, as strace does in a string."""
    typed = _database(tmp_path / "typed.db", "a\\x1bb")
    escape = _database(tmp_path / "esc.db", "a\x1bb")
    for view in (("syscalls",), ("processes", "--threads"), ("stats",)):
        shown_typed, shown_escape = _view(typed, view), _view(escape, view)
        assert "a\\\\x1bb" in shown_typed and "a\\x1bb" not in shown_typed.replace("a\\\\x1bb", ""), view
        assert "a\\x1bb" in shown_escape and "a\\\\x1bb" not in shown_escape, view
    # --process takes the name as the table shows it, or raw
    for db, spelling in ((typed, "a\\\\x1bb"), (typed, "a\\x1bb"), (escape, "a\\x1bb")):
        assert "\n1 system call" in _view(db, ("syscalls", "--process", spelling)), spelling


def test_guest_text_spelt_like_the_stored_form_of_other_bytes_is_shown_as_itself(tmp_path: Path) -> None:
    """A column holding ``{"hex": ...}`` is read as bytes that are not UTF-8; a program naming a file (or
    itself) with that very text must not be shown as those bytes (here, ``/etc/shadow``)."""
    from qppsuite.plugins.syscalls.values import column_text
    from qppsuite.plugins.syscalls_logger import reader

    forged = '{"hex": "' + b"/etc/shadow".hex() + '"}'
    stored = column_text(forged)
    assert stored != forged and reader.stored_text(stored) == forged
    assert reader.stored_value(stored) == {"hex": forged.encode().hex()}  # JSON: lossless, never /etc/shadow
    assert reader.stored_text(column_text("/tmp/a")) == "/tmp/a"
    db = _database(tmp_path / "forged.db", stored)
    for view in (("syscalls",), ("processes", "--threads")):
        output = _view(db, view)
        assert "/etc/shadow" not in output and forged in output, (view, output)


def test_a_name_is_suggested_once_as_the_views_show_it() -> None:
    """Re-check of issue 14: `--process 'mix\\'` suggested `mix\\\\\\x1b or mix\\\\\\x1b`: the name as stored (control
    byte raw) and as shown (escaped) were both in the list."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        db = _database(Path(tmp) / "esc.db", "mix\\\x1b")
        code, output = run_main(["syscalls", str(db), "--process", "mix\\"])
    assert code == 1 and output.rstrip().endswith("did you mean mix\\\\\\x1b?"), output


def test_csv_spells_guest_text_as_the_table_so_two_names_never_share_a_cell(tmp_path: Path) -> None:
    """Re-check of issue 14: in csv, a file a program named `{"hex": "2f74ff"}` and the file of bytes 2f 74 ff
    were one cell, and a process name that is not UTF-8 went to a `process_name.hex` column."""
    import csv as csv_module
    import sqlite3

    from qppsuite.plugins.syscalls.values import column_text

    forged = _database(tmp_path / "forged.db", '{"hex": "2f74ff"}')
    with sqlite3.connect(forged) as conn:  # as the logger stores such a name (column_text)
        conn.execute("UPDATE syscalls SET process_name = ?", (column_text('{"hex": "2f74ff"}'),))
    real = _database(tmp_path / "real.db", "x")
    with sqlite3.connect(real) as conn:
        conn.execute("""UPDATE syscalls SET args = '{"path": {"hex": "2f74ff"}}', process_name = '{"hex": "2f74ff"}'""")
    cells = []
    for db in (forged, real):
        (row,) = csv_module.DictReader(io.StringIO(_view(db, ("syscalls", "--format", "csv"))))
        assert "process_name.hex" not in row and "args.path.hex" not in row, row
        cells.append((row["args.path"], row["process_name"]))
    assert cells == [('{"hex": "2f74ff"}', '{"hex": "2f74ff"}'), ("/t\\xff", "/t\\xff")]
    typed = _database(tmp_path / "typed.db", "/t\\xff")  # backslash, x, f, f: doubled, so not the byte
    (row,) = csv_module.DictReader(io.StringIO(_view(typed, ("syscalls", "--format", "csv"))))
    assert row["args.path"] == row["process_name"] == "/t\\\\xff"


def test_a_carriage_return_in_guest_text_never_splits_a_csv_row(tmp_path: Path) -> None:
    """Re-check of issue 14: a process named `c\\rd` split its `processes --format csv` row in two."""
    import csv as csv_module

    db = _database(tmp_path / "cr.db", "c\rd")
    for view in (("syscalls", "--format", "csv"), ("processes", "--format", "csv")):
        rows = list(csv_module.reader(io.StringIO(_view(db, view), newline="")))
        assert len(rows) == 2 and any("c\rd" in cell for cell in rows[1]), (view, rows)


def test_command_line_bytes_that_are_not_utf8_are_shown_as_the_views_show_such_bytes(tmp_path: Path) -> None:
    """Re-check of issue 14: `--name open$'\\xff'` was echoed `open\\udcff`, and `--run $'\\x9b'` blamed the database
    (`cannot read ...: surrogates not allowed`)."""
    assert visible("open\udcff \ud800") == "open\\xff \\ud800"  # only surrogateescape's bytes are bytes
    db = _database(tmp_path / "a.db", "sh")
    code, output = run_main(["syscalls", str(db), "--name", "open\udcff"])
    assert code != 0 and "open\\xff" in output and "udc" not in output, output
    code, output = run_main(["syscalls", str(db), "--run", "\udc9b"])
    assert code != 0 and output.startswith("error: --run \\x9b: a run's id or label is UTF-8 text"), output
