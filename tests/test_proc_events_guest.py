"""proc_events on the oracle image, against what the guest says of its own processes and what its strace prints.

One run: a shell prints its own view ($$, children's pids from ``$!`` and ``$$``, exit statuses from
``$?``) of a child exiting 3, a sleep killed by SIGKILL, perl exiting 5, and python3 forking a child
that execs echo, spawning sh through vfork, starting a thread and failing an exec; then
``strace -f -e trace=process`` traces a second shell, whose calls and ``+++`` lines the table must
hold too, and python3 whose thread execs sh (strace: the leader ``superseded by execve``, no exit).
A plugin registered on ``on_proc_event`` keeps every event the table holds.
"""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any, ClassVar

import pytest
from oracle.guest import logged_run
from oracle.strace_log import parse

from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.proc_events.model import ProcEvent

PYTHON = """import os, subprocess, threading
pid = os.fork()
if pid == 0:
    os.execv("/bin/echo", ["echo", "CHILD", str(os.getpid()), "a b"])
_, st = os.waitpid(pid, 0)
print("PY", os.getpid(), pid, os.waitstatus_to_exitcode(st))
p = subprocess.Popen(["/bin/sh", "-c", "exit 4"])
print("SPAWN", p.pid, p.wait())
t = threading.Thread(target=lambda: None); t.start(); t.join()
print("THREAD", t.native_id)
try:
    os.execv("/nonexistent/x", ["x"])
except OSError as e:
    print("EXECFAIL", e.errno)
"""
THREAD_EXEC = """import os, threading, time
threading.Thread(target=lambda: os.execv("/bin/sh", ["sh", "-c", "exit 12"])).start()
time.sleep(30)
"""
TRACED = 'sh -c "exit 7"; sleep 100 & kill -TERM $!; wait; perl -e "exit 2"; /nonexistent/y; true'
CMD = f"""echo ME $$
sh -c 'echo SH $$; exit 3'; echo STATUS SH $?
sleep 100 & P=$!; echo SLEEP $P; kill -9 $P; wait $P; echo STATUS SLEEP $?
perl -e 'print "PERL $$\\n"; exit 5'; echo STATUS PERL $?
python3 -c '{PYTHON}'; echo STATUS PY $?
strace -f -s 256 -e trace=process -o /tmp/s.txt sh -c '{TRACED}'; echo STRACE-BEGIN; cat /tmp/s.txt; echo STRACE-END
strace -f -e trace=execve -o /tmp/t.txt python3 -c '{THREAD_EXEC}'; echo STATUS THX $?
echo THX-BEGIN; cat /tmp/t.txt; echo THX-END
"""


class Listener(Plugin):
    """Keeps what on_proc_event runs it with."""

    name = "proc_listener"
    requires = ("proc_events",)
    seen: ClassVar[list[ProcEvent]] = []

    def load(self) -> None:
        self.qpp.register("proc_events", "on_proc_event", self.event, owner=self.name)

    def event(self, event: ProcEvent) -> None:
        self.seen.append(event)


@pytest.fixture(scope="module")
def timeline(oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    Listener.seen.clear()
    db = tmp_path_factory.mktemp("proc_events") / "events.db"
    run = logged_run(oracle_image, CMD, db, ["proc_events", Listener])  # type: ignore[list-item]
    text = run.console
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    events = [dict(r) for r in conn.execute("SELECT * FROM proc_events ORDER BY insn_count, id")]
    conn.close()
    said = {
        m[1]: m[2].split() for m in re.finditer(r"^(ME|SH|SLEEP|PERL|CHILD|PY|SPAWN|THREAD|EXECFAIL) (.*)$", text, re.M)
    }
    statuses = {m[1]: int(m[2]) for m in re.finditer(r"^STATUS (\w+) (\d+)$", text, re.M)}
    strace = text[text.index("STRACE-BEGIN") : text.index("STRACE-END")].split("\n", 1)[1]
    thx = text[text.index("THX-BEGIN") : text.index("THX-END")].split("\n", 1)[1]
    return {
        "events": events, "said": said, "statuses": statuses, "strace": strace, "thx": thx,
        "seen": list(Listener.seen),
    }  # fmt: skip


def _one(events: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [e for e in events if all(e[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


@pytest.mark.boot
def test_the_table_is_what_the_shell_says_of_its_children(timeline: dict[str, Any]) -> None:
    events, said, statuses = timeline["events"], timeline["said"], timeline["statuses"]
    me, sh, sleep, perl = (int(said[k][0]) for k in ("ME", "SH", "SLEEP", "PERL"))
    assert statuses == {"SH": 3, "SLEEP": 128 + 9, "PERL": 5, "PY": 0, "THX": 12}
    for child in (sh, sleep, perl):
        _one(events, kind="fork", pid=me, child_pid=child, ok=1)
    assert _one(events, kind="exit", pid=sh)["exit_status"] == 3
    killed = _one(events, kind="exit", pid=sleep)
    assert (killed["exit_status"], killed["signal"], killed["wait_status"]) == (None, "SIGKILL", 9)
    exec_perl = _one(events, kind="exec", pid=perl)
    assert (exec_perl["path"], exec_perl["ok"], exec_perl["name"]) == ("/usr/bin/perl", 1, "perl")
    assert json.loads(exec_perl["argv"]) == ["perl", "-e", 'print "PERL $$\\n"; exit 5']
    assert _one(events, kind="exit", pid=perl)["exit_status"] == 5


@pytest.mark.boot
def test_the_table_is_what_python_says_of_its_fork_spawn_thread_and_exec(timeline: dict[str, Any]) -> None:
    events, said = timeline["events"], timeline["said"]
    py, child, status = (int(v) for v in said["PY"])
    assert status == 0 and said["CHILD"] == [str(child), "a", "b"]
    _one(events, kind="fork", pid=py, child_pid=child, call="clone")
    echo = _one(events, kind="exec", pid=child)
    assert (echo["path"], json.loads(echo["argv"]), echo["ok"]) == (
        "/bin/echo",
        ["echo", "CHILD", str(child), "a b"],
        1,
    )
    assert _one(events, kind="exit", pid=child)["exit_status"] == 0
    spawned, spawn_status = (int(v) for v in said["SPAWN"])
    vfork = _one(events, kind="fork", pid=py, child_pid=spawned)
    assert vfork["call"] == "vfork"  # python's subprocess: the child runs (and execs) before the parent returns
    assert vfork["insn_count"] < _one(events, kind="exec", pid=spawned)["insn_count"]
    assert _one(events, kind="exit", pid=spawned)["exit_status"] == spawn_status == 4
    thread = _one(events, kind="thread", pid=py)
    assert thread["child_pid"] == int(said["THREAD"][0]) and "CLONE_THREAD" in thread["flags"]
    assert thread["child_process_id"] == thread["process_id"]
    assert _one(events, kind="thread_exit", tid=int(said["THREAD"][0]))["pid"] == py
    failed = _one(events, kind="exec", pid=py, ok=0)
    assert (failed["path"], failed["retval"], failed["errno"]) == ("/nonexistent/x", -2, "ENOENT")
    assert said["EXECFAIL"] == ["2"]


@pytest.mark.boot
def test_the_table_holds_what_the_guests_strace_printed(timeline: dict[str, Any]) -> None:
    events, text = timeline["events"], timeline["strace"]
    calls = parse(text)
    forks = {(c.tid, c.retval) for c in calls if c.name in ("clone", "clone3", "fork", "vfork") and c.retval}
    execs = {
        (c.tid, c.strings[0][0].decode(), tuple(s.decode() for s, _ in c.strings[1:]), c.errno)
        for c in calls
        if c.name == "execve"
    }
    exits = {
        (int(m[1]), int(m[2]) if m[2] else None, m[3])
        for m in re.finditer(r"^(\d+)\s+\+\+\+ (?:exited with (\d+)|killed by (SIG\w+)) \+\+\+$", text, re.M)
    }
    traced = {c.tid for c in calls} | {pid for pid, _, _ in exits}  # the killed sleep made no traced call
    assert len(forks) == 4 and len(execs) == 4 and len(exits) == len(traced) == 5
    mine = [e for e in events if e["tid"] in traced]
    assert {(e["pid"], e["child_pid"]) for e in mine if e["kind"] == "fork"} == forks
    assert {
        (e["pid"], e["path"], tuple(json.loads(e["argv"])), e["errno"]) for e in mine if e["kind"] == "exec"
    } == execs
    assert {(e["pid"], e["exit_status"], e["signal"]) for e in mine if e["kind"] == "exit"} == exits


@pytest.mark.boot
def test_a_leader_superseded_by_its_threads_exec_is_a_thread_exit_not_the_process_exit(
    timeline: dict[str, Any],
) -> None:
    """strace: ``LEADER +++ superseded by execve in pid THREAD +++``, then one ``LEADER +++ exited with 12 +++``."""
    events, text = timeline["events"], timeline["thx"]
    found = re.search(r"^(\d+)\s+\+\+\+ superseded by execve in pid (\d+) \+\+\+$", text, re.M)
    assert found is not None, text
    leader, thread = int(found[1]), int(found[2])
    ended = re.findall(rf"^{leader}\s+\+\+\+ (.*) \+\+\+$", text, re.M)
    assert ended == [f"superseded by execve in pid {thread}", "exited with 12"]
    ends = [(e["kind"], e["tid"], e["exit_status"]) for e in events if e["pid"] == leader and "exit" in e["kind"]]
    assert ends == [("thread_exit", leader, 0), ("exit", leader, 12)]
    execd = _one(events, kind="exec", pid=leader, tid=thread)
    assert (execd["path"], execd["ok"], execd["name"]) == ("/bin/sh", 1, "sh")


@pytest.mark.boot
def test_the_callback_ran_once_per_row_in_time_order(timeline: dict[str, Any]) -> None:
    events, seen = timeline["events"], timeline["seen"]
    assert sorted((e.kind, e.pid, e.tid, e.insn_count) for e in seen) == sorted(
        (e["kind"], e["pid"], e["tid"], e["insn_count"]) for e in events
    )
    times = [(e["insn_count"], e["virtual_ns"]) for e in events]
    assert all(ns is not None and ns > 0 for _, ns in times)
    assert [ns for _, ns in times] == sorted(ns for _, ns in times)  # virtual time follows the instruction count
