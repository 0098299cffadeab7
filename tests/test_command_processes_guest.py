"""processes.command on a real run, against what the guest's shell says its processes are.

One run of the oracle image with two files put in through the channel (a small one by the serial line, one
of 20 KB by hypercall, as ``--file`` and a batch's ``files`` and ``--template`` put them) and a command that
starts two children and prints their pids, its own and its parent's (the channel agent's).  The processes
marked as the command's must be exactly those, and the agent's writes of the files must be 0's rows.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from oracle.guest import logged_run, query

from qppsuite.channel import BULK_FROM, GuestFile
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.file_activity import FileActivity

DOC = Path(__file__).resolve().parents[1] / "docs" / "batch.md"
SECRET = "root:*:19000:0:99999:7:::\n"
BIG = 20 * 1024
CMD = 'sleep 0.1 & S=$!; cat /etc/shadow /root/samples/big > /dev/null & C=$!; wait; echo "PIDS $$ $PPID $S $C"'


@pytest.fixture(scope="module")
def command_run(oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    where = tmp_path_factory.mktemp("command")
    (where / "secret").write_text(SECRET)
    (where / "big").write_bytes(b"s" * BIG)
    files = [GuestFile(where / "secret", "/etc/shadow", 0o600), GuestFile(where / "big", "/root/samples/big", 0o644)]
    ran = logged_run(oracle_image, CMD, where / "command.db", [FileActivity], files=files)
    said = re.search(r"^PIDS (\d+) (\d+) (\d+) (\d+)$", ran.console, re.M)
    assert said is not None, ran.console[-2000:]
    shell, agent, sleep, cat = map(int, said.groups())
    return {"db": ran.db, "shell": shell, "agent": agent, "children": {sleep, cat}}


@pytest.mark.boot
def test_the_commands_processes_are_its_shell_and_the_children_it_started(command_run: dict[str, Any]) -> None:
    processes = query(command_run["db"], "SELECT pid, name, command FROM processes")
    assert {p["command"] for p in processes} == {0, 1}  # every row decided
    marked = {p["pid"] for p in processes if p["command"] == 1}
    assert marked == {command_run["shell"], *command_run["children"]}, processes
    assert [p["command"] for p in processes if p["pid"] == command_run["agent"]] == [0]


@pytest.mark.boot
def test_the_agents_delivery_of_the_files_is_not_the_commands(command_run: dict[str, Any]) -> None:
    """Issue 15: the agent writing /etc/shadow and /root/samples/big was the job's 'opened /etc/shadow'."""
    rows = query(
        command_run["db"],
        "SELECT f.path, f.pid, f.bytes_read, f.bytes_written, p.command FROM file_activity f "
        "JOIN processes p ON p.id = f.process_id WHERE f.path IN ('/etc/shadow', '/root/samples/big')",
    )
    written = {(r["path"], r["command"]) for r in rows if r["bytes_written"]}
    assert written == {("/etc/shadow", 0), ("/root/samples/big", 0)}, rows
    read = {(r["path"], r["pid"], r["command"]) for r in rows if r["bytes_read"]}
    (cat,) = {r["pid"] for r in rows if r["bytes_read"]}
    assert cat in command_run["children"]
    assert read == {("/etc/shadow", cat, 1), ("/root/samples/big", cat, 1)}, rows
    assert all(r["pid"] not in command_run["children"] for r in rows if r["command"] == 0)
    agent_side = query(
        command_run["db"],
        "SELECT DISTINCT p.pid FROM file_activity f JOIN processes p ON p.id = f.process_id "
        "WHERE p.command = 0 AND f.path IN ('/etc/shadow', '/root/samples/big')",
    )
    assert agent_side and all(r["pid"] != command_run["shell"] for r in agent_side)


def test_the_files_take_both_ways_in() -> None:
    """The small file goes on the serial line, the big one by hypercall (qpp-recv: another agent process)."""
    assert len(SECRET) < BULK_FROM <= BIG


def _doc_query(marker: str) -> list[str]:
    """The SQL of docs/batch.md's `qppsuite query` lines that hold ``marker``, in order."""
    found = []
    for line in DOC.read_text().splitlines():
        words = shlex.split(line) if line.startswith("qppsuite query ") and marker in line else []
        if words:
            found.append(words[3])
    return found


@pytest.mark.boot
def test_a_template_batch_blames_only_the_sample_that_did_it(default_image: ImageBundle, tmp_path: Path) -> None:
    """Issue 15's break test: in --template mode the agent writes every sample to /root/samples/NAME, and a job's
    files to theirs (/etc/shadow here), so "which samples wrote under /root" and "which opened /etc/shadow"
    answered every sample.  docs/batch.md's queries, as written, name the one sample whose command did."""
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "quiet.sh").write_text("echo quiet\n")
    (samples / "writer.sh").write_text("echo hi > /root/out.txt; cat /etc/shadow > /dev/null\n")
    (tmp_path / "secret").write_text(SECRET)
    (tmp_path / "job.yaml").write_text(
        "cmd: sh {sample}\nplugins: [osi_linux, syscalls, syscalls_logger, file_activity]\n"
        "files: [{host: secret, guest: /etc/shadow}]\nbudget: {timeout: 120}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "batch", "samples", "--template", "job.yaml", "--pool", "--workers", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    merged = tmp_path / "batch-samples" / "batch.sqlite"

    def labels(sql: str) -> set[str]:
        return {row["label"] for row in query(merged, sql)}

    everyone = {"quiet.sh", "writer.sh"}
    # Without the join, qppsuite's own deliveries count: both samples "wrote under /root" and "opened /etc/shadow".
    unjoined = "SELECT r.label FROM file_activity f JOIN runs r ON r.id = f.run_id WHERE f.bytes_written > 0 AND "
    assert labels(unjoined + "f.path LIKE '/root/%'") == labels(unjoined + "f.path = '/etc/shadow'") == everyone
    (under_root,) = _doc_query("'/root/%'")
    assert labels(under_root) == {"writer.sh"}
    shadow = _doc_query("/etc/shadow")
    assert len(shadow) == 2 and all(labels(sql) == {"writer.sh"} for sql in shadow)
