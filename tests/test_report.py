"""``qppsuite report`` and ``qppsuite stats --plot`` on real runs' databases, in a real browser, and on hostile files.

The guest tests run ``python -m qppsuite run`` as a user does (the default image, the logger with
proc_events and file_activity) and hold the page to the database: every process, every count, every mark of
the timeline.  The browser test opens the page in Debian's Chromium (installed through apt like the other
host tools, :mod:`host_tools`) driven by Playwright with that executable, so no browser is downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from cli_entry import run_main
from host_tools import host_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.syscalls import classes
from qppsuite.plugins.syscalls.table import SYSCALLS
from qppsuite.plugins.syscalls_logger import reader
from qppsuite.plugins.syscalls_logger.database import SYSCALL_ROW, SyscallDatabase
from qppsuite.report import data
from qppsuite.report.html import ACTIVITY_ID, OPEN_SECTIONS, TIMELINE_ID

TREE = Path(__file__).resolve().parent.parent
PLUGINS = "syscalls_logger,proc_events,file_activity"
FULL_STACK = f"{PLUGINS},net_activity"
#: A guest process name and paths made of what breaks pages: a closing script tag, quotes, Plotly's
#: HTML subset, a control byte and a byte that is not UTF-8.  comm keeps 15 bytes of the script's name.
#: Then a connection refused, for net_activity's endpoints and the errors table.
HOSTILE_CMD = r"""mkdir -p '/tmp/<'
printf 'x' > '/tmp/</script>'
f=$(printf '/tmp/q"'"'"'<b>\001\377')
printf '#!/bin/sh\ncat "/tmp/</script>" "/tmp/missing-<i>"\n' > "$f"
chmod +x "$f"
"$f"
echo hi | nc 127.0.0.1 1
echo done
"""


def qppsuite_run(image: ImageBundle, db: Path, cmd: str | None = None, plugins: str = PLUGINS) -> None:
    """``python -m qppsuite run -q`` of ``image`` with ``plugins`` into ``db``, as a user runs it."""
    args = [sys.executable, "-m", "qppsuite", "run", "-q", image.name, "--plugins", plugins]
    args += ["-p", f"syscalls_logger:db={db}"] + (["--cmd", cmd] if cmd else [])
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    subprocess.run(args, check=True, env=env, timeout=600, capture_output=True)


@pytest.fixture(scope="module")
def default_run(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The default workload's database and its report."""
    work = tmp_path_factory.mktemp("report")
    db, page = work / "default.db", work / "default.html"
    qppsuite_run(default_image, db)
    code, output = run_main(["report", str(db), "-o", str(page)])
    assert code == 0 and "Traceback" not in output, output
    return db, page


@pytest.fixture(scope="module")
def hostile_run(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("hostile")
    db, page = work / "hostile.db", work / "hostile.html"
    qppsuite_run(default_image, db, HOSTILE_CMD, FULL_STACK)
    code, output = run_main(["report", str(db), "-o", str(page)])
    assert code == 0, output
    return db, page


def _rows(db: Path, sql: str, *params: object) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    conn.text_factory = lambda b: b.decode("utf-8", "backslashreplace")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _built(db: Path) -> data.RunReport:
    conn = reader.open_readonly(db)
    try:
        return data.build(conn)
    finally:
        conn.close()


@pytest.mark.boot
def test_the_report_holds_every_process_and_count_of_the_database(default_run: tuple[Path, Path]) -> None:
    db, page = default_run
    built = _built(db)
    processes = _rows(db, "SELECT id, pid, name, exit_status FROM processes WHERE run_id = 1")
    calls = _rows(db, "SELECT seq, insn_count, virtual_ns, process_id, number, name, errno FROM syscalls ORDER BY seq")
    assert len(built.processes) == len(processes) > 30  # the default workload's shells and applets
    assert {p.id for p in built.processes} == {r["id"] for r in processes}
    per_process = Counter(r["process_id"] for r in calls)
    failed = Counter(r["process_id"] for r in calls if r["errno"] is not None)
    for p in built.processes:
        assert (p.syscalls, p.failed) == (per_process[p.id], failed[p.id]), p.name
        assert sum(c for _, c, _ in p.top_calls) <= p.syscalls
    summary = built.summary
    assert (summary["syscalls"], summary["failed"]) == (len(calls), sum(failed.values()))
    assert summary["plugins"] == ["osi_linux", "syscalls", "syscalls_logger", "proc_events", "file_activity"]
    assert summary["stop_reason"] == "poweroff" and summary["image"] == "debian-armhf"
    # The timeline's marks are the calls, in call order, each on its process's row, in strace's class.
    rows = [built.processes[r].id for r in built.calls.row]
    assert built.calls.seq == [r["seq"] for r in calls] and built.calls.insn == [r["insn_count"] for r in calls]
    assert rows == [r["process_id"] for r in calls]
    assert built.calls.kind == [classes.kind(r["number"], r["name"]) for r in calls]
    assert sum(sum(v) for v in built.activity.counts.values()) == len(calls)
    # The axis is the guest's virtual time: each mark at its call's virtual_ns, each life bar within the run.
    assert built.timebase.virtual and built.calls.at == [r["virtual_ns"] / 1e6 for r in calls]
    assert summary["virtual_ns"] >= calls[-1]["virtual_ns"] > 1e9  # the default workload runs after a ~1 s boot
    # The run's end, as the logger recorded it (runs.virtual_ns), is the summary's time and the axis's last anchor.
    ((end_insn, end_ns),) = _rows(db, "SELECT insn_count, virtual_ns FROM runs")
    assert summary["virtual_ns"] == end_ns and end_insn >= calls[-1]["insn_count"]
    assert built.timebase.at(end_insn) == end_ns / 1e6
    for p in built.processes:
        assert p.first_at is not None and p.last_at is not None and 0 <= p.first_at <= p.last_at, p.name
        assert p.last_at <= end_ns / 1e6, p.name
    # The workload's own facts: its subshells' exit codes (`exit 7`, `exit 3`), files from file_activity.
    ended = {p.ended for p in built.processes}
    assert {"exited 7", "exited 3"} <= ended
    paths = {f.path for p in built.processes for f in p.files}
    assert {r["path"] for r in _rows(db, "SELECT path FROM file_activity")} == paths
    # Without net_activity, endpoints come from the calls' decoded addresses: the workload's nc pair on :5555.
    endpoints = {e["endpoint"] for p in built.processes if p.name == "nc" for e in p.endpoints}
    assert {"AF_INET6 :::5555", "AF_INET 127.0.0.1:5555"} <= endpoints
    html = page.read_text()
    assert "<th>bytes read</th>" in html and "<th>calls naming it</th>" not in html  # file_activity's counts
    for p in built.processes:
        assert f'id="proc-{p.id}"' in html and f'href="#proc-{p.id}"' in html
    assert f"{len(calls):,}" in html and "src=" not in html.split("</head>")[0]  # no script from the network


def _in_chromium(page: Path, shot: Path) -> dict[str, Any]:
    """Open ``page`` in Debian's Chromium: script errors and requests off the file, the timeline's row labels
    and traces, the activity bars' sums, and a screenshot at ``shot``."""
    chromium = host_tool("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            tab.on("request", lambda req: None if req.url.startswith(("file:", "data:")) else errors.append(req.url))
            tab.goto(page.as_uri())
            tab.wait_for_selector(f"#{TIMELINE_ID} .main-svg")
            seen = {
                "ticks": tab.eval_on_selector_all(f"#{TIMELINE_ID} .ytick text", "ts => ts.map(t => t.textContent)"),
                "tick_elements": tab.eval_on_selector_all(f"#{TIMELINE_ID} .ytick text *", "es => es.length"),
                "traces": tab.evaluate(
                    f"document.getElementById('{TIMELINE_ID}').data.map(t => [t.name, t.x.length, t.mode])"
                ),
                "bars": tab.evaluate(
                    f"document.getElementById('{ACTIVITY_ID}').data.map(t => t.y.reduce((a, b) => a + b))"
                ),
            }
            tab.screenshot(path=str(shot))
            # The last process's section, folded in a page of many processes, opens from its link in the tree.
            target = tab.eval_on_selector("#tree li:last-child > a", "a => a.getAttribute('href').slice(1)")
            seen["folded"] = tab.evaluate(f"!document.getElementById('{target}').open")
            tab.click(f"#tree a[href='#{target}']")
            # The page opens it on `hashchange`, an event the browser fires after the click returns: wait for it.
            with contextlib.suppress(sync_api.TimeoutError):
                tab.wait_for_function(f"document.getElementById('{target}').open", timeout=10_000)
            seen["unfolded"] = tab.evaluate(f"document.getElementById('{target}').open")
        finally:
            browser.close()
    seen["errors"] = errors
    return seen


@pytest.mark.boot
def test_the_report_renders_in_chromium_with_one_timeline_row_per_process(
    default_run: tuple[Path, Path], tmp_path: Path
) -> None:
    db, page = default_run
    built = _built(db)
    shot = tmp_path / "report.png"
    seen = _in_chromium(page, shot)
    assert seen["errors"] == []
    assert seen["ticks"] == [f"{p.name} [{p.pid}]" for p in built.processes]  # one row per process, tree order
    traces = seen["traces"]
    marks = sum(n for name, n, mode in traces if mode == "markers" and not name.startswith("failed"))
    failed = next(n for name, n, _ in traces if name.startswith("failed"))
    assert (marks, failed) == (built.summary["syscalls"], built.summary["failed"])
    assert sum(seen["bars"]) == built.summary["syscalls"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert (seen["folded"], seen["unfolded"]) == (len(built.processes) > OPEN_SECTIONS, True)


@pytest.mark.boot
def test_a_command_only_run_shows_the_command_s_processes_and_a_live_one_to_the_run_s_end(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """Break test 14b, 2 and 3, in a real run: `sleep 100 &` still runs when the command ends, and only=command
    leaves the agent's calls out: they are "not logged", off the timeline, and not counted by stats."""
    db = tmp_path / "c.db"
    args = [sys.executable, "-m", "qppsuite", "run", "-q", default_image.name]
    args += ["--plugins", "syscalls_logger,proc_events"]
    args += ["-p", f"syscalls_logger:db={db}", "-p", "syscalls_logger:only=command", "--cmd", "sleep 100 & echo hi"]
    subprocess.run(args, check=True, env={**os.environ, "PYTHONPATH": str(TREE)}, timeout=600, capture_output=True)
    built = _built(db)
    (run,) = _rows(db, "SELECT insn_count, logged FROM runs")
    callers = {r["process_id"] for r in _rows(db, "SELECT DISTINCT process_id FROM syscalls")}
    assert built.logged == run["logged"] == "command"
    assert {built.processes[n].id for n in built.timeline_rows} == callers
    assert len(built.processes) > len(callers) > 1  # the agent's processes are in the tree, not logged
    # The backgrounded child (busybox runs its applet as /proc/self/exe: named exe), reparented to init.
    (sleep,) = [p for p in built.processes if p.logged and p.ended.startswith("still running")]
    assert sleep.ppid == 1 and sleep.names[0] == "sh", (sleep.names, sleep.ended)
    row_of_sleep = built.processes.index(sleep)
    last_call = max(at for at, row in zip(built.calls.at, built.calls.row, strict=True) if row == row_of_sleep)
    assert sleep.last_insn == run["insn_count"] and sleep.last_at is not None and sleep.last_at > last_call
    shown = _shown("processes", str(db))
    assert "calls not logged" in shown and " 0 syscalls" not in shown, shown
    assert f"by {len(callers)} of the run's {len(built.processes)} processes (only=command" in _shown("stats", str(db))


@pytest.mark.boot
def test_guest_names_and_paths_stay_text(
    hostile_run: tuple[Path, Path], default_run: tuple[Path, Path], tmp_path: Path
) -> None:
    db, page = hostile_run
    html = _ours(page.read_text())
    built = _built(db)
    (hostile,) = [p for p in built.processes if p.name.startswith('q"')]
    assert hostile.name == "q\"'<b>\x01\\xff"  # comm's \xff is stored as {"hex": ...} and shown escaped
    assert _script_tags(html) == _script_tags(_ours(default_run[1].read_text())) == (5, 5)  # none of the guest's
    assert "<b>\\x01" not in html and "<i>" not in html and "\x01" not in html
    assert "q&quot;&#x27;&lt;b&gt;\\x01\\xff" in html  # shown as text, the control byte made visible
    assert "/tmp/&lt;/script&gt;" in html
    paths = {f.path for p in built.processes for f in p.files}
    assert {"/tmp/</script>", "/tmp/missing-<i>"} <= paths
    # net_activity's socket of the refused connection, and the error in its process's table.
    (nc,) = [p for p in built.processes if p.name == "nc"]
    assert [(e["socket"], e["remote"], e["failed calls"]) for e in nc.endpoints] == [
        ("AF_INET SOCK_STREAM", "127.0.0.1:1", "connect ECONNREFUSED")
    ]
    assert ("connect", "ECONNREFUSED", 1) in nc.errors and built.sources["endpoints"].startswith("net_activity")
    # In the browser the name is the label's text, not markup: Plotly made no <b> element of it.
    seen = _in_chromium(page, tmp_path / "hostile.png")
    assert seen["errors"] == [] and seen["tick_elements"] == 0
    assert [t for t in seen["ticks"] if t.startswith("q")] == [f"q\"'<b>\\x01\\xff [{hostile.pid}]"], seen["ticks"]


def _ours(html: str) -> str:
    """The page without plotly.js's own text (which holds tags and control bytes in its strings)."""
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert html.count(bundle) == 1
    return html.replace(bundle, "")


def _script_tags(html: str) -> tuple[int, int]:
    """Script tags opened and closed, any case: the page has five (PlotlyConfig, plotly.js, two figures, and
    the one that opens the folded section a link points to)."""
    return len(re.findall(r"<script", html, re.I)), len(re.findall(r"</script", html, re.I))


# -- without a guest: hostile and damaged files -------------------------------------------------------------


def _hostile_db(path: Path, name: str, path_arg: str) -> Path:
    """A run with one process named ``name`` that opened ``path_arg`` and failed, written by the logger's writer."""
    db = SyscallDatabase(path, {"image": "<img src=x onerror=alert(1)>"})
    proc = {
        "id": db.new_process_id(),
        "pid": 7,
        "ppid": 1,
        "name": name,
        "names": json.dumps(["sh", name]),
        "start_time": 1,
        "first_seen_insn": 100,
        "last_seen_insn": 300,
        "syscall_count": 2,
    }
    openat = SYSCALLS[322]
    for seq, errno in ((1, None), (2, "ENOENT")):
        row = {
            "seq": seq,
            "insn_count": 100 * seq,
            "process_id": proc["id"],
            "pid": 7,
            "tid": 7,
            "process_name": name,
            "number": openat.number,
            "name": openat.name,
            "args": json.dumps({"dfd": "AT_FDCWD", "filename": path_arg, "flags": "O_RDONLY"}),
            "errno": errno,
            "retval": -2 if errno else 3,
            "text": f'openat(AT_FDCWD, "{path_arg}", O_RDONLY)',
        }
        db.add(tuple(map(row.get, SYSCALL_ROW)), proc)
    db.end_run({"stop_reason": "poweroff"})
    db.close()
    return path


def _benign_page(tmp_path: Path) -> str:
    page = tmp_path / "benign.html"
    code, output = run_main(["report", str(_hostile_db(tmp_path / "benign.db", "cat", "/etc/passwd")), "-o", str(page)])
    assert code == 0, output
    return page.read_text()


@pytest.mark.parametrize(
    "name",
    ["</script><script>alert(1)</script>", "\"'><b>x</b>", "\x1b[31mred\u202e", "a\u2028b</SCRIPT >", "\\xff\ud7ff"],
)
def test_hostile_names_and_paths_never_leave_text(tmp_path: Path, name: str) -> None:
    db = _hostile_db(tmp_path / "h.db", name, f"/tmp/{name}")
    page = tmp_path / "h.html"
    code, output = run_main(["report", str(db), "-o", str(page)])
    assert code == 0, output
    html = _ours(page.read_text())
    assert _script_tags(html) == _script_tags(_ours(_benign_page(tmp_path))) == (5, 5)
    assert "<b>" not in html and "<img" not in html and "\x1b" not in html and "\u202e" not in html
    built = _built(db)
    shown = name.replace("\\", "\\\\")  # a guest's backslash is doubled: "\\xff" typed is not the byte 0xff
    assert [p.name for p in built.processes] == [shown] and built.processes[0].files[0].path == f"/tmp/{shown}"
    assert built.processes[0].errors == [("openat", "ENOENT", 1)]


def _family(path: Path, parents: dict[int, int], end: bool = True) -> Path:
    """A run whose processes have the pids and parents of ``parents`` (pid -> ppid), started in that order."""
    db = SyscallDatabase(path, {"image": "family"})
    for start, (pid, ppid) in enumerate(parents.items()):
        proc = {
            "id": db.new_process_id(),
            "pid": pid,
            "ppid": ppid,
            "name": f"p{pid}",
            "names": json.dumps([f"p{pid}"]),
            "start_time": start,
            "syscall_count": 1,
        }
        row = {"seq": start + 1, "insn_count": start, "process_id": proc["id"], "pid": pid, "name": "getpid"}
        db.add(tuple(map(row.get, SYSCALL_ROW)), proc)
    if end:
        db.end_run({"stop_reason": "poweroff"})
    else:
        db.flush()
    db.close()
    return path


class _TreeDepths(HTMLParser):
    """Each process link of the tree with the number of lists around it; the lists must close as they open."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.links: list[tuple[str | None, int]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "div" and ("id", "tree") in attrs:
            self.inside = True
        elif self.inside and tag == "ul":
            self.depth += 1
        elif self.inside and tag == "a":
            self.links.append((dict(attrs)["href"], self.depth))

    def handle_endtag(self, tag: str) -> None:
        if self.inside and tag == "ul":
            self.depth -= 1
        elif self.inside and tag == "div":
            self.inside = False


def test_the_tree_nests_each_process_under_its_parent(tmp_path: Path) -> None:
    db = _family(tmp_path / "f.db", {1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 21: 20, 30: 0})
    page = tmp_path / "f.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    parser = _TreeDepths()
    parser.feed(page.read_text())
    built = _built(db)
    assert parser.depth == 0  # every list closed
    depths = [depth for _, depth in parser.links]
    assert [p.pid for p in built.processes] == [1, 10, 11, 12, 20, 21, 30]
    assert depths == [1, 2, 3, 4, 2, 3, 1]
    assert [href for href, _ in parser.links] == [f"#proc-{p.id}" for p in built.processes]


def test_a_run_that_never_ended_says_so_in_the_page(tmp_path: Path) -> None:
    db = _family(tmp_path / "f.db", {1: 0}, end=False)
    page = tmp_path / "f.html"
    code, output = run_main(["report", str(db), "-o", str(page)])
    assert code == 0 and output.startswith("warning: run 1 never ended"), output
    assert '<p class="warning">run 1 never ended' in page.read_text()


def test_text_columns_holding_bytes_that_are_not_utf8_are_shown_escaped(tmp_path: Path) -> None:
    db = _hostile_db(tmp_path / "h.db", "cat", "/etc/passwd")
    with sqlite3.connect(db) as conn:  # what an edited or damaged file may hold: </script> then 0xff 0x1b
        conn.execute("UPDATE processes SET name = CAST(X'3c2f7363726970743eff1b' AS TEXT)")
        conn.execute("UPDATE syscalls SET text = CAST(X'6f70656e617428ff3c623e29' AS TEXT)")
    page = tmp_path / "h.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    html = _ours(page.read_text())
    assert "&lt;/script&gt;\\xff\\x1b [7]" in html  # the process's name, as a row label
    assert "6f70656e617428ff3c623e29" in html  # the call's line, in its hover text, as the {"hex"} form of it
    assert _script_tags(html) == (5, 5)


def test_a_report_without_file_activity_names_files_from_the_calls(tmp_path: Path) -> None:
    db = _hostile_db(tmp_path / "h.db", "cat", "/etc/passwd")
    built = _built(db)
    (file,) = built.processes[0].files
    assert (file.path, file.calls, file.errors) == ("/etc/passwd", 2, 1)
    assert built.sources["files"].startswith("syscalls")
    page = tmp_path / "h.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    html = page.read_text()
    assert "<th>calls naming it</th>" in html and "<th>bytes read</th>" not in html


def test_the_axis_is_virtual_time_and_older_files_fall_back_to_instructions(tmp_path: Path) -> None:
    db = _hostile_db(tmp_path / "h.db", "cat", "/etc/passwd")
    with sqlite3.connect(db) as conn:  # the calls at 100 and 200 instructions, 2 and 6 ms
        conn.execute("UPDATE syscalls SET virtual_ns = CASE seq WHEN 1 THEN 2000000 ELSE 6000000 END")
    built = _built(db)
    axis = built.timebase
    assert axis.virtual and built.calls.at == [2.0, 6.0]
    # Exact at a call, linear between two, from power-on (0, 0) before the first, the mean rate after the last.
    assert [axis.at(i) for i in (100, 150, 200, 50, 300)] == [2.0, 4.0, 6.0, 1.0, 9.0]
    (proc,) = built.processes
    assert (proc.first_at, proc.last_at) == (2.0, 9.0)  # first seen at 100, last at 300 instructions
    assert built.summary["virtual_ns"] == 6_000_000 and built.activity.edges[0] == 2.0
    page = tmp_path / "h.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    html = page.read_text()
    assert "guest virtual time (ms since power-on)" in html and "0.006 s (at the last logged event)" in html
    assert "#2 at 6.000 ms, 200 insns" in html
    with sqlite3.connect(db) as conn:  # a file without virtual times: an older schema's, or an edited one
        conn.execute("UPDATE syscalls SET virtual_ns = NULL WHERE seq = 2")
    built = _built(db)
    assert not built.timebase.virtual and built.calls.at == [100.0, 200.0]
    assert (built.processes[0].first_at, built.processes[0].last_at) == (100.0, 300.0)
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    assert "guest instructions executed" in page.read_text()


def test_stats_plot_writes_the_activity_figure(tmp_path: Path) -> None:
    db = _hostile_db(tmp_path / "h.db", "cat", "/etc/passwd")
    code, output = run_main(["stats", str(db), "--plot", str(tmp_path / "a.png")])
    assert code == 0, output
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "give a file ending in .png" in _one_line(["stats", str(db), "--plot", str(tmp_path / "a.txt")])
    assert "cannot write" in _one_line(["stats", str(db), "--plot", str(tmp_path / "no" / "a.png")])


def _one_line(args: list[str]) -> str:
    code, output = run_main(args)
    assert code != 0, output
    assert "Traceback" not in output and output.startswith("error:") and len(output.strip().splitlines()) == 1, output
    return output


def test_damaged_foreign_or_missing_databases_are_one_line(tmp_path: Path) -> None:
    good = _hostile_db(tmp_path / "good.db", "cat", "/etc/passwd")
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(good.read_bytes()[:4096] + os.urandom(8192))
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    text = tmp_path / "text.db"
    text.write_text("not a database")
    for db in (damaged, foreign, text, tmp_path / "missing.db", tmp_path):
        _one_line(["report", str(db), "-o", str(tmp_path / "out.html")])
    assert "no run 9" in _one_line(["report", str(good), "--run", "9", "-o", str(tmp_path / "out.html")])
    assert "cannot write" in _one_line(["report", str(good), "-o", str(tmp_path / "no" / "such" / "dir.html")])
    assert "would replace the database" in _one_line(["report", str(good), "-o", str(good)])
    assert good.read_bytes()[:16] == b"SQLite format 3\x00"
    assert not (tmp_path / "out.html").exists()


def test_the_output_never_replaces_a_device_a_fifo_a_link_or_the_database_s_journal(tmp_path: Path) -> None:
    """Break test of issue 14: `-o /dev/full` renamed a file over the device, and `-o DB-wal` lost rows."""
    good = _hostile_db(tmp_path / "good.db", "cat", "/etc/passwd")
    for side in ("-wal", "-shm", "-journal"):
        assert "would replace the database" in _one_line(["report", str(good), "-o", str(good) + side])
    assert "empty" in _one_line(["report", str(good), "-o", ""])
    assert "is a directory" in _one_line(["report", str(good), "-o", str(tmp_path)])
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "link.html"
    link.symlink_to(real)
    assert run_main(["report", str(good), "-o", str(link)])[0] == 0
    assert link.is_symlink() and real.read_text().startswith("<!DOCTYPE html>")
    assert run_main(["report", str(good), "-o", "/dev/null"])[0] == 0
    assert Path("/dev/null").is_char_device()
    assert "No space left on device" in _one_line(["report", str(good), "-o", "/dev/full"])
    assert Path("/dev/full").is_char_device()


def test_the_page_goes_to_standard_output_with_a_dash_and_a_name_ending_in_a_slash_is_refused(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    """Break test of issue 14: `-o -` wrote a file named `-`, `-o r.html/` wrote `r.html`, and an error named
    `/proc/6830/status` for `-o /proc/self/status`."""
    good = _hostile_db(tmp_path / "good.db", "cat", "/etc/passwd")
    code, output = run_main(["report", str(good), "-o", "-"])
    assert code == 0 and output.endswith("2 calls): standard output\n"), output
    assert not Path("-").exists() and not (tmp_path / "-").exists()
    assert "r.html/: names a directory" in _one_line(["report", str(good), "-o", str(tmp_path / "r.html") + "/"])
    assert not (tmp_path / "r.html").exists()
    assert "cannot write /proc/self/status:" in _one_line(["report", str(good), "-o", "/proc/self/status"])


def test_the_run_s_label_and_batch_status_are_in_the_title_and_summary(tmp_path: Path) -> None:
    """Break test of issue 14: the page never showed the run's label (`run --label`, a batch job's)."""
    db = _hostile_db(tmp_path / "h.db", "cat", "/etc/passwd")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET label = '<b>sample-1</b>', batch_status = 'failed', batch_reason = 'panic'")
    page = tmp_path / "h.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    html = _ours(page.read_text())
    assert "<title>qppsuite run 1 [&lt;b&gt;sample-1&lt;/b&gt;]: " in html
    assert "<th>label</th><td>&lt;b&gt;sample-1&lt;/b&gt;</td>" in html
    assert "<th>batch job</th><td>failed: panic</td>" in html


def test_a_process_row_with_a_damaged_names_column_is_one_line(tmp_path: Path) -> None:
    db = _hostile_db(tmp_path / "h.db", "cat", "/etc/passwd")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE processes SET names = '[not json'")
    _one_line(["report", str(db), "-o", str(tmp_path / "out.html")])


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE runs SET insn_count = 'many', plugins = '{\"not\": \"a list\"}'",
        "UPDATE runs SET plugins = '[not json'",
        "UPDATE syscalls SET insn_count = 'x'",
        "UPDATE syscalls SET args = '[1, 2'",
        "UPDATE processes SET exit_status = 'dead', state = NULL",
        "UPDATE runs SET started_at = 'yesterday', ended_at = 7",
        "DELETE FROM processes",
    ],
)
def test_an_edited_database_is_reported_or_one_line(tmp_path: Path, edit: str) -> None:
    db = _hostile_db(tmp_path / "h.db", "cat", "/etc/passwd")
    with sqlite3.connect(db) as conn:
        conn.execute(edit)
    code, output = run_main(["report", str(db), "-o", str(tmp_path / "out.html")])
    lines = output.strip().splitlines()
    assert "Traceback" not in output and all(line.startswith(("warning:", "error:", "report of")) for line in lines)
    assert (code == 0) == (tmp_path / "out.html").exists(), output


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.integers(0, 40_000), st.binary(min_size=1, max_size=400)), min_size=1, max_size=4))
def test_a_database_with_random_bytes_overwritten_is_reported_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, damage: list[tuple[int, bytes]]
) -> None:
    work = tmp_path_factory.mktemp("damaged")
    db = _family(work / "d.db", {pid: max(0, pid - 1) for pid in range(1, 200)})
    raw = bytearray(db.read_bytes())
    for offset, garbage in damage:
        raw[offset : offset + len(garbage)] = garbage
    db.write_bytes(bytes(raw))
    code, output = run_main(["report", str(db), "-o", str(work / "out.html")])
    lines = output.strip().splitlines()
    assert "Traceback" not in output and all(line.startswith(("warning:", "error:", "report of")) for line in lines)
    assert (code == 0) == (work / "out.html").exists(), output


def test_every_call_of_the_table_has_strace_s_classes() -> None:
    assert classes.kind(11) == "process"  # execve: TRACE_FILE|TRACE_PROCESS
    assert classes.kind(281) == "network"  # socket
    assert classes.kind(192) == "memory"  # mmap2: TRACE_DESC|TRACE_MEMORY
    assert classes.kind(3) == "file"  # read: TRACE_DESC
    assert classes.kind(174) == "signal"  # rt_sigaction
    assert classes.kind(403) == "time"  # clock_gettime64: TRACE_CLOCK
    assert classes.kind(240) == "other"  # futex: no class in strace
    assert classes.kind(None, "openat") == "file" and classes.kind(None, "no_such_call") == "other"
    for number, spec in SYSCALLS.items():
        assert classes.kind(number) == classes.kind(None, spec.name) in classes.KINDS


def test_a_plugin_table_another_run_made_is_not_this_run_s_source(tmp_path: Path) -> None:
    """Break test of issue 14: a file whose first run loaded net_activity and proc_events has their tables; a
    later run without them must take its endpoints and names from its own calls, not from those tables."""
    db = _hostile_db(tmp_path / "two.db", "cat", "/etc/passwd")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE net_sockets (id INTEGER PRIMARY KEY, run_id INTEGER)")
        conn.execute("CREATE TABLE proc_events (id INTEGER PRIMARY KEY, run_id INTEGER)")
        conn.execute("UPDATE runs SET plugins = ?", (json.dumps(["osi_linux", "syscalls", "syscalls_logger"]),))
    sources = _built(db).sources
    assert sources["endpoints"] == "syscalls (decoded socket addresses)"
    assert sources["names over time"] == "processes.names (no times)"


# -- break test 14b: lifetimes, only=command, files without the logger, renames, many processes ----------------------


def _shown(*args: str) -> str:
    """What ``qppsuite ARGS`` writes to stdout (it must succeed)."""
    from typer.testing import CliRunner

    from qppsuite.cli import app

    result = CliRunner().invoke(app, list(args), terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def _plugin_table(db: SyscallDatabase, name: str, columns: dict[str, type], keys: tuple[tuple[str, str], ...]) -> Any:
    """An analysis plugin's table in ``db``, as the run database declares one (its rows written at each commit)."""
    from qppsuite.plugins.syscalls_logger.database import ROW_ID_STRIDE
    from qppsuite.plugins.syscalls_logger.tables import PluginTable

    table = PluginTable(
        name,
        columns,
        pk="id",
        foreign_keys=keys,
        indexes=(),
        run_id=db.run_id,
        first_id=db.run_id * ROW_ID_STRIDE + 1,
        buffered=lambda: None,
    )
    db.define(table)
    return table


def _process(db: SyscallDatabase, pid: int, ppid: int, name: str, insn: int | None, **fields: Any) -> dict[str, Any]:
    """A processes row as the writer makes one at a process's first sight, with ``fields`` changed."""
    from qppsuite.plugins.osi_linux.model import OsiProcess

    row = db.processes.process(OsiProcess(pid, pid, ppid, name, 0, 0, pid, False), insn)
    row.update(fields)
    db.processes.changed(row)
    return row


def _call(db: SyscallDatabase, proc: dict[str, Any], seq: int, insn: int, ns: int | None, name: str = "getpid") -> None:
    """A logged call of ``proc`` at ``insn`` instructions and ``ns`` virtual ns."""
    spec = next(s for s in SYSCALLS.values() if s.name == name)
    row = {
        "seq": seq,
        "insn_count": insn,
        "virtual_ns": ns,
        "process_id": proc["id"],
        "pid": proc["pid"],
        "tid": proc["pid"],
        "process_name": proc["name"],
        "number": spec.number,
        "name": name,
        "retval": 0,
        "text": f"{name}() = 0",
    }
    proc["syscall_count"] += 1
    proc["last_seen_insn"] = max(proc["last_seen_insn"] or 0, insn)
    db.add(tuple(map(row.get, SYSCALL_ROW)), proc)


def test_lifetimes_end_at_the_exit_or_the_run_s_end_not_at_the_last_call(tmp_path: Path) -> None:
    """Break test 14b, 2: a bar ended at the process's last call; a killed blocked process exited later, a
    still-running one lived to the run's end, and one whose only call was found blocked had no bar at all."""
    from qppsuite.plugins.proc_events.model import COLUMNS, FOREIGN_KEYS

    plugins = ["osi_linux", "syscalls", "syscalls_logger", "proc_events"]
    db = SyscallDatabase(tmp_path / "l.db", {"image": "lives", "plugins": json.dumps(plugins)})
    events = _plugin_table(db, "proc_events", COLUMNS, FOREIGN_KEYS)
    init = _process(db, 1, 0, "init", 50, state="S")
    _call(db, init, 1, 50, 500_000, "wait4")  # found blocked at the start: first and last seen at 50
    sh = _process(db, 90, 1, "sh", 100, state="X", exit_status=0)
    _call(db, sh, 2, 100, 1_000_000)
    _call(db, sh, 3, 200, 2_000_000)
    sleep = _process(db, 93, 90, "sleep", 300, state="S")
    _call(db, sleep, 4, 300, 3_000_000, "nanosleep")
    python = _process(db, 95, 90, "python3", 400, state="X", exit_status=15)
    _call(db, python, 5, 400, 4_000_000, "nanosleep")  # blocked, then killed by SIGTERM
    events.add({"kind": "exit", "process_id": python["id"], "pid": 95, "insn_count": 600, "virtual_ns": 9_000_000,
                "wait_status": 15, "signal": "SIGTERM"})  # fmt: skip
    events.add({"kind": "exit", "process_id": sh["id"], "pid": 90, "insn_count": 250, "virtual_ns": 2_500_000,
                "wait_status": 0})  # fmt: skip
    db.end_run({"stop_reason": "poweroff", "insn_count": 1000})
    db.close()
    built = _built(tmp_path / "l.db")
    by_pid = {p.pid: p for p in built.processes}
    # The axis: the calls and the exits; past the last (600, 9 ms) the run's mean rate, 1000 insns at 15 ms.
    assert built.timebase.at(1000) == 15.0 and built.summary["virtual_ns"] == 9_000_000
    assert (by_pid[95].last_insn, by_pid[95].last_at, by_pid[95].ended) == (600, 9.0, "killed by SIGTERM")
    assert (by_pid[90].last_insn, by_pid[90].last_at, by_pid[90].ended) == (250, 2.5, "exited 0")
    assert (by_pid[93].last_insn, by_pid[93].last_at) == (1000, 15.0)
    assert by_pid[93].ended == "still running (state S)"
    assert (by_pid[1].first_at, by_pid[1].last_at) == (0.5, 15.0)
    # A process with calls but no first or last sighting (an edited or older file): its calls' span.
    with sqlite3.connect(tmp_path / "l.db") as conn:
        conn.execute("UPDATE processes SET first_seen_insn = NULL, last_seen_insn = NULL WHERE pid = 90")
        conn.execute("DELETE FROM proc_events WHERE pid = 90")
    sh_again = next(p for p in _built(tmp_path / "l.db").processes if p.pid == 90)
    assert (sh_again.first_at, sh_again.last_at) == (1.0, 2.0)
    # processes says the signal's name too, as the report does.
    output = _shown("processes", str(tmp_path / "l.db"))
    assert "killed by SIGTERM" in output and "signal 15" not in output, output


def _command_run(path: Path) -> Path:
    """A run of only=command: the agent and head made calls that were not logged; the command's sh and cat did."""
    plugins = json.dumps(["osi_linux", "syscalls", "syscalls_logger"])
    db = SyscallDatabase(path, {"image": "command", "plugins": plugins})
    agent = _process(db, 80, 1, "sh", 10, state="S")
    _process(db, 81, 80, "head", 20, state="X", exit_status=0)
    sh = _process(db, 90, 80, "sh", 100, state="X", exit_status=0)
    _call(db, sh, 1, 100, 1_000_000, "execve")
    _call(db, sh, 2, 150, 1_500_000, "clone")
    cat = _process(db, 91, 90, "cat", 200, state="X", exit_status=0)
    _call(db, cat, 3, 200, 2_000_000, "exit_group")
    assert agent["syscall_count"] == 0
    db.end_run({"stop_reason": "poweroff", "insn_count": 1000, "logged": "command"})
    db.close()
    return path


def test_processes_outside_the_command_say_their_calls_were_not_logged(tmp_path: Path) -> None:
    """Break test 14b, 3: with only=command every other process was "0 syscalls", stats counted them, and the
    report drew empty timeline rows for them."""
    db = _command_run(tmp_path / "c.db")
    built = _built(db)
    assert built.logged == "command"
    assert [(p.pid, p.logged) for p in built.processes] == [(80, False), (81, False), (90, True), (91, True)]
    assert [built.processes[n].pid for n in built.timeline_rows] == [90, 91]
    page = tmp_path / "c.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    html = page.read_text()
    assert "2 processes whose calls were not logged" in html and "4, 2 processes of the command" in html
    assert " 0 calls" not in _ours(html)
    assert html.count("calls not logged (not the command's") == 6  # the tree, the sections' heads and calls
    output = _shown("processes", str(db))
    assert "0 syscalls" not in output, output
    assert output.count("calls not logged") == 2 and ": 2 syscalls" in output and ": 1 syscall," in output
    assert [r["syscalls"] for r in json.loads(_shown("processes", str(db), "--format", "json"))] == [None, None, 2, 1]
    output = _shown("stats", str(db))
    assert "3 system calls by 2 of the run's 4 processes (only=command" in output, output
    assert json.loads(_shown("stats", str(db), "--format", "json"))["calling_processes"] == 2


def _file_activity_run(path: Path, logger: bool) -> Path:
    """python3 wrote /tmp/data.txt, renamed it to /tmp/data2.txt and unlinked that; file_activity's tables, with
    the logger or without it (then file_activity wrote the run database itself)."""
    from qppsuite.plugins.file_activity.model import FILE_COLUMNS, FILE_FOREIGN_KEYS, OP_COLUMNS, OP_FOREIGN_KEYS

    plugins = ["osi_linux", "syscalls", *(["syscalls_logger"] if logger else []), "file_activity"]
    db = SyscallDatabase(path, {"image": "files", "plugins": json.dumps(plugins)})
    files = _plugin_table(db, "file_activity", FILE_COLUMNS, FILE_FOREIGN_KEYS)
    ops = _plugin_table(db, "file_ops", OP_COLUMNS, OP_FOREIGN_KEYS)
    python = _process(db, 95, 1, "python3", 1000)
    if logger:
        _call(db, python, 1, 1000, 2_000_000, "openat")
    files.add({"process_id": python["id"], "pid": 95, "path": "/tmp/data.txt", "opens": 1, "writes": 1,
               "bytes_written": 5, "first_insn_count": 1000, "last_insn_count": 1500})  # fmt: skip
    ops.add({"process_id": python["id"], "pid": 95, "insn_count": 2000, "virtual_ns": 5_000_000, "call": "rename",
             "op": "rename", "path": "/tmp/data.txt", "new_path": "/tmp/data2.txt", "ok": 1})  # fmt: skip
    ops.add({"process_id": python["id"], "pid": 95, "insn_count": 3000, "virtual_ns": 6_000_000, "call": "unlink",
             "op": "unlink", "path": "/tmp/data2.txt", "ok": 0, "errno": "EACCES"})  # fmt: skip
    db.end_run({"stop_reason": "poweroff", "insn_count": 5000, **({} if logger else {"syscall_count": None})})
    db.close()
    return path


def test_a_file_the_logger_did_not_write_has_lifetimes_and_says_its_calls_were_not_recorded(tmp_path: Path) -> None:
    """Break test 14b, 4: `--plugins file_activity` alone: the page said "a file older than schema 4", "system
    calls 0", "0 calls" for every process, drew no lifetime and an activity figure of "calls per 1 instructions"."""
    db = _file_activity_run(tmp_path / "f.db", logger=False)
    built = _built(db)
    (python,) = built.processes
    assert built.logged == "none" and not python.logged and built.timebase.virtual
    assert built.summary["virtual_ns"] == 6_000_000  # file_ops' times date the run
    assert (python.first_insn, python.last_insn, python.last_at) == (1000, 3000, 6.0)
    page = tmp_path / "f.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    html = page.read_text()
    assert "not recorded (syscalls_logger did not write this file)" in html and "schema 4" not in html
    assert " 0 calls" not in _ours(html) and "calls not recorded" in html and "calls per" not in html
    assert "No system calls to draw: syscalls_logger did not write this file." in html
    assert "0.006 s (at the last logged event)" in html
    assert "no logged system calls to draw" in _one_line(["stats", str(db), "--plot", str(tmp_path / "a.png")])


@pytest.mark.parametrize("logger", [True, False])
def test_renames_and_deletions_are_in_the_process_s_section(tmp_path: Path, logger: bool) -> None:
    """Break test 14b, 6: file_ops' renames and unlinks were nowhere in the page; /tmp/data2.txt was missing."""
    db = _file_activity_run(tmp_path / "f.db", logger)
    built = _built(db)
    (python,) = built.processes
    assert [op[1:] for op in python.file_ops] == [
        ("rename", "/tmp/data.txt", "/tmp/data2.txt", None, "ok"),
        ("unlink", "/tmp/data2.txt", None, None, "EACCES"),
    ]
    assert [op[0] for op in python.file_ops] == [5.0, 6.0]  # their own virtual times, in ms
    page = tmp_path / "f.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    html = page.read_text()
    section = html.split(f'id="proc-{python.id}"')[1]
    assert "<h4>Renames and deletions</h4>" in section and "/tmp/data2.txt" in section and "EACCES" in section


def test_an_empty_path_argument_is_no_file_touched(tmp_path: Path) -> None:
    """Break test 14b, 7: statx(fd, "", AT_EMPTY_PATH) made a file named "" with 106 calls."""
    db = SyscallDatabase(tmp_path / "e.db", {"image": "empty"})
    proc = _process(db, 7, 1, "ls", 100)
    statx = next(s for s in SYSCALLS.values() if s.name == "statx")
    for seq, path in ((1, ""), (2, "/etc"), (3, "")):
        row = {"seq": seq, "insn_count": 100 * seq, "process_id": proc["id"], "pid": 7, "number": statx.number,
               "name": "statx", "args": json.dumps({"dfd": 3, "path": path, "flags": "AT_EMPTY_PATH"})}  # fmt: skip
        db.add(tuple(map(row.get, SYSCALL_ROW)), proc)
    db.end_run({"stop_reason": "poweroff"})
    db.close()
    (ls,) = _built(tmp_path / "e.db").processes
    assert [(f.path, f.calls) for f in ls.files] == [("/etc", 1)]


def test_a_tall_timeline_has_no_blank_margins_an_axis_on_top_and_folded_sections(tmp_path: Path) -> None:
    """Break test 14b, 10: 308 processes made a 6,900 px timeline with 300 px of blank above and below its rows,
    its time axis only at the bottom, and a page 208,000 px tall."""
    from qppsuite.report import html as report_html

    db = _family(tmp_path / "t.db", {pid: max(0, pid - 1) for pid in range(1, 61)})
    built = _built(db)
    figure = report_html.timeline_figure(built)
    assert tuple(figure.layout.yaxis.range) == (59.5, -0.5) and figure.layout.yaxis.autorange is None
    assert (figure.layout.xaxis2.side, figure.layout.xaxis2.matches) == ("top", "x")
    page = tmp_path / "t.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    sections = re.findall(r'<details class="process" id="proc-\d+"( open)?>', page.read_text())
    assert len(sections) == 60 and not any(sections)  # folded; a link to one opens it (the page's script)
    small = _family(tmp_path / "s.db", {1: 0, 2: 1})
    figure = report_html.timeline_figure(_built(small))
    assert tuple(figure.layout.yaxis.range) == (1.5, -0.5) and "xaxis2" not in figure.to_plotly_json()["layout"]
    assert run_main(["report", str(small), "-o", str(page)])[0] == 0
    assert re.findall(r'<details class="process" id="proc-\d+"( open)?>', page.read_text()) == [" open", " open"]


def test_one_call_is_singular_and_an_empty_plot_path_is_refused_as_empty(tmp_path: Path) -> None:
    """Break test 14b, 11: "1 system calls", and `stats --plot ''` said "cannot write a figure to ."."""
    db = _family(tmp_path / "one.db", {1: 0})
    assert "1 system call by 1 process" in _shown("stats", str(db))
    assert _shown("syscalls", str(db)).splitlines()[-1] == "1 system call"
    assert ": 1 syscall" in _shown("processes", str(db))
    page = tmp_path / "one.html"
    assert run_main(["report", str(db), "-o", str(page)])[0] == 0
    assert "1 call (0 failed)" in page.read_text() and "1 calls" not in _ours(page.read_text())
    assert "file name is empty" in _one_line(["stats", str(db), "--plot", ""])


def test_no_two_kinds_are_both_blue() -> None:
    """Break test 14b, 11: "file" (#0072B2) and "time" (#56B4E9) were both blue on the timeline."""
    from qppsuite.report.html import KIND_COLOURS

    def blue(colour: str) -> bool:
        r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        return b > max(r, g) + 40

    assert len(set(KIND_COLOURS.values())) == len(KIND_COLOURS)
    assert [kind for kind, colour in KIND_COLOURS.items() if blue(colour)] == ["file"]


def test_without_the_logger_proc_events_exits_end_the_lifetimes_and_the_others_ran_to_the_end(tmp_path: Path) -> None:
    """Break test 14b, 2 and 4: `--plugins proc_events` alone; no process state was taken at the end, but
    proc_events sees every exit, so a process without one still ran when the run ended."""
    from qppsuite.plugins.proc_events.model import COLUMNS, FOREIGN_KEYS

    db = SyscallDatabase(tmp_path / "p.db", {"image": "events", "plugins": json.dumps(["osi_linux", "proc_events"])})
    events = _plugin_table(db, "proc_events", COLUMNS, FOREIGN_KEYS)
    sh = _process(db, 90, 1, "sh", 1000)
    child = _process(db, 91, 90, "sh", 1500)
    events.add({"kind": "fork", "process_id": sh["id"], "pid": 90, "insn_count": 1000, "virtual_ns": 2_000_000})
    events.add({"kind": "exit", "process_id": child["id"], "pid": 91, "insn_count": 2000, "virtual_ns": 5_000_000,
                "wait_status": 3 << 8})  # fmt: skip
    db.end_run({"stop_reason": "poweroff", "insn_count": 5000, "syscall_count": None})
    db.close()
    built = _built(tmp_path / "p.db")
    by_pid = {p.pid: p for p in built.processes}
    assert (by_pid[91].ended, by_pid[91].last_at) == ("exited 3", 5.0)
    assert (by_pid[90].ended, by_pid[90].last_insn) == ("still running (no exit seen)", 5000)
    assert not any(p.logged for p in built.processes) and built.logged == "none"


def test_a_run_stopped_long_after_its_last_call_ends_at_its_recorded_virtual_time(tmp_path: Path) -> None:
    """Break test 19 (A): a run stopped by --timeout long after its last call was drawn to an end extrapolated at
    the mean rate since power-on (idle included), far past the real one; the run's end (runs.insn_count,
    runs.virtual_ns) is the axis's last anchor, and the summary's virtual time."""
    plugins = ["osi_linux", "syscalls", "syscalls_logger"]
    db = SyscallDatabase(tmp_path / "t.db", {"image": "hang", "plugins": json.dumps(plugins)})
    sh = _process(db, 90, 1, "sh", 100, state="S")
    _call(db, sh, 1, 100, 10_000_000)  # mostly idle before: 100 insns in 10 ms
    _call(db, sh, 2, 200, 20_000_000, "nanosleep")
    db.end_run({"stop_reason": "timeout", "insn_count": 1200, "virtual_ns": 24_000_000})  # busy after: 4 ns/insn
    db.close()
    built = _built(tmp_path / "t.db")
    (proc,) = built.processes
    assert (proc.last_insn, proc.last_at) == (1200, 24.0)  # not 120 ms, at the mean rate since power-on
    assert built.timebase.at(700) == 22.0  # between the last call and the end: interpolated
    assert built.summary["virtual_ns"] == 24_000_000
    page = tmp_path / "t.html"
    assert run_main(["report", str(tmp_path / "t.db"), "-o", str(page)])[0] == 0
    assert "0.024 s (at the run's end)" in page.read_text()


def test_bin_widths_and_time_ticks_read_as_times_not_exponents_or_si_prefixes(tmp_path: Path) -> None:
    """Break test 19 (B): the activity figure said "calls per 1.03e+03 ms" (page and stats --plot, which share
    Timebase.span), and the timeline's ticks read "20k" and "0.2M" ms (Plotly's SI prefixes)."""
    axis = data.Timebase((1,), (1,))
    assert [axis.span(w) for w in (1030.4, 999.4, 2.5, 0.00123, 59_999, 1_234_567)] == [
        "1.03 s", "999 ms", "2.5 ms", "0.00123 ms", "60 s", "1,230 s",
    ]  # fmt: skip
    assert data.Timebase().span(1234.0) == "1,234 instructions"
    db = SyscallDatabase(tmp_path / "s.db", {"image": "slow", "plugins": json.dumps(["syscalls_logger"])})
    sh = _process(db, 90, 1, "sh", 100, state="X", exit_status=0)
    _call(db, sh, 1, 100, 1_000_000)
    _call(db, sh, 2, 200, 103_001_000_000)  # 103,000 ms later: 100 bins of 1,030 ms
    db.end_run({"stop_reason": "poweroff", "insn_count": 300})
    db.close()
    page = tmp_path / "s.html"
    assert run_main(["report", str(tmp_path / "s.db"), "-o", str(page)])[0] == 0
    html = page.read_text()
    assert "calls per 1.03 s" in html and "e+03" not in _ours(html)
    assert html.count('"tickformat":",.6~r"') == 2  # the timeline's time axis and the activity figure's
    code, output = run_main(["stats", str(tmp_path / "s.db"), "--plot", str(tmp_path / "a.png")])
    assert code == 0, output


def test_table_cells_break_only_long_unbroken_strings_in_chromium(tmp_path: Path) -> None:
    """Break test 19 (C): with word-break:break-all a long path squeezed the cells beside it, which broke
    mid-word ("renam|e", "4,837.83|9" in the Renames and deletions table).  Only a long unbroken string wraps,
    and the table stays within the page."""
    from qppsuite.plugins.file_activity.model import FILE_COLUMNS, FILE_FOREIGN_KEYS, OP_COLUMNS, OP_FOREIGN_KEYS

    plugins = ["osi_linux", "syscalls", "file_activity"]
    db = SyscallDatabase(tmp_path / "w.db", {"image": "wrap", "plugins": json.dumps(plugins)})
    _plugin_table(db, "file_activity", FILE_COLUMNS, FILE_FOREIGN_KEYS)
    ops = _plugin_table(db, "file_ops", OP_COLUMNS, OP_FOREIGN_KEYS)
    python = _process(db, 95, 1, "python3", 1000)
    long_path = "/tmp/" + "d" * 300
    ops.add({"process_id": python["id"], "pid": 95, "insn_count": 2000, "virtual_ns": 4_837_839_000, "call": "rename",
             "op": "rename", "path": long_path, "new_path": long_path + "2", "ok": 1})  # fmt: skip
    db.end_run({"stop_reason": "poweroff", "insn_count": 5000, "syscall_count": None})
    db.close()
    page = tmp_path / "w.html"
    assert run_main(["report", str(tmp_path / "w.db"), "-o", str(page)])[0] == 0
    chromium = host_tool("chromium", "chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": 900, "height": 700})
            tab.goto(page.as_uri())
            table = f"#proc-{python['id']} h4:has-text('Renames') + table"
            # The lines each cell's text takes, and the table's right edge.
            lines = tab.eval_on_selector_all(
                f"{table} td",
                "tds => tds.map(td => { const r = document.createRange(); r.selectNodeContents(td);"
                " return [td.textContent.slice(0, 12), r.getClientRects().length]; })",
            )
            right = tab.eval_on_selector(table, "t => t.getBoundingClientRect().right")
        finally:
            browser.close()
    assert [n for cell, n in lines if cell and not cell.startswith("/tmp/")] == [1, 1, 1]  # time, op, result
    assert all(n > 1 for cell, n in lines if cell.startswith("/tmp/")), lines
    assert right <= 900, right


def test_kernel_threads_are_marked_grouped_and_left_off_the_timeline(tmp_path: Path) -> None:
    """Break test 19 (D): a cold run's kernel threads (children of kthreadd, ppid 2, the run not seeing kthreadd
    itself) were roots saying "0 calls", with empty timeline rows.  They are grouped in the tree, say what they
    are, and the timeline leaves them out, saying how many; a user-mode helper kthreadd started (it execs and
    makes calls) stays a process."""
    plugins = ["osi_linux", "syscalls", "syscalls_logger"]
    db = SyscallDatabase(tmp_path / "k.db", {"image": "cold", "plugins": json.dumps(plugins)})
    init = _process(db, 1, 0, "init", 100, state="S")
    _call(db, init, 1, 100, 1_000_000, "wait4")
    for pid, name in ((3, "rcu_gp"), (7, "kworker/0:1")):
        _process(db, pid, 2, name, 50, state="I")
    helper = _process(db, 40, 2, "modprobe", 300, state="X", exit_status=0)
    _call(db, helper, 2, 300, 3_000_000, "execve")
    db.end_run({"stop_reason": "poweroff", "insn_count": 1000})
    db.close()
    built = _built(tmp_path / "k.db")
    assert [(p.pid, p.kernel_thread) for p in built.processes] == [(1, False), (3, True), (7, True), (40, False)]
    assert [built.processes[n].pid for n in built.timeline_rows] == [1, 40]
    page = tmp_path / "k.html"
    assert run_main(["report", str(tmp_path / "k.db"), "-o", str(page)])[0] == 0
    html = page.read_text()
    tree = html.split('id="tree">')[1].split("</div>")[0]
    group = tree.split('<details id="kernel-threads">')[1]
    assert "2 kernel threads (kthreadd, pid 2, and the threads it made" in group
    assert "rcu_gp" in group and "kworker/0:1" in group and "modprobe" not in group and "init" not in group
    assert "0 calls" not in _ours(html)
    # Each kernel thread, in the tree, in its section's heading and instead of its top calls.
    assert html.count("kernel thread: makes no system calls the logger sees") == 6
    assert "2 kernel threads (no system calls the logger sees) are left out; the tree lists them." in html
    assert "4, 2 kernel threads among them" in html
