"""`qppsuite batch` as a user runs it (``python -m qppsuite batch``): real guests, one process per job, the thread
pool and a local Ray instance, resume, a job killed mid-way, Ctrl-C, and the same job's database on two workers.

Each job is a few commands from the image's ready snapshot (about a second of guest work); a spinning job has a
small instruction budget or is stopped by the test.
"""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from qppsuite.images.bundle import ImageBundle

pytestmark = pytest.mark.boot

#: Guest instructions after the ready snapshot's (about 240 million): a spinning job runs out quickly.
SPIN_BUDGET = 350_000_000
SPIN = "while :; do :; done"
#: runs columns that are wall-clock times, and the label: the only ones two runs of one command may differ in
#: (on one worker).
WALL_TIME_COLUMNS = {"runs": {"started_at", "ended_at", "label"}}
#: ...and on a Ray worker (local or not), the path of that worker's unpacked copy of the image bundle.
WORKER_COLUMNS = {"runs": {"started_at", "ended_at", "image_path"}}

EIGHT_JOBS = f"""
defaults:
  budget: {{timeout: 120}}
jobs:
  - {{label: echo, cmd: "echo hello"}}
  - {{label: uname, cmd: "uname -a"}}
  - {{label: ls, cmd: "ls -l /bin | head -3"}}
  - {{label: cat-file, cmd: "cat /root/note.txt", files: [{{host: note.txt, guest: /root/note.txt}}]}}
  - {{label: same-1, cmd: "cat /proc/version; id"}}
  - {{label: same-2, cmd: "cat /proc/version; id"}}
  - {{label: panic, cmd: "echo c > /proc/sysrq-trigger"}}
  - {{label: spin, cmd: "{SPIN}", budget: {{instructions: {SPIN_BUDGET}}}}}
"""
EXPECTED = {
    "echo": ("ok", None),
    "uname": ("ok", None),
    "ls": ("ok", None),
    "cat-file": ("ok", None),
    "same-1": ("ok", None),
    "same-2": ("ok", None),
    "panic": ("failed", "kernel panic: sysrq triggered crash"),
    "spin": ("failed", f"budget exceeded: {SPIN_BUDGET} instructions"),
}


def batch(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qppsuite", "batch", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
        env=env,
    )


def results(out: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((out / "jobs").glob("*/result.json")):
        result = json.loads(path.read_text())
        found[result["label"]] = result
    return found


def table_dump(database: Path, leave_out: dict[str, set[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, in id order, without the columns ``leave_out`` names per table."""
    with sqlite3.connect(database) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        dump = {}
        for table in tables:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            kept = [c for c in columns if c not in leave_out.get(table, set())]
            rows = conn.execute(f"SELECT {', '.join(kept)} FROM {table} ORDER BY rowid").fetchall()
            dump[table] = rows
    return dump


def check_eight(out: Path) -> dict[str, dict[str, Any]]:
    found = results(out)
    assert {label: (r["status"], r["reason"]) for label, r in found.items()} == EXPECTED
    for label, result in found.items():
        assert result["sha256"] and result["attempts"] >= 1, label
        database = out / "jobs" / result["id"] / "run.sqlite"
        with contextlib.closing(sqlite3.connect(database)) as conn:  # the run names its job (qppsuite run --label)
            assert conn.execute("SELECT label FROM runs").fetchall() == [(label,)], label
    assert found["panic"]["stop_reason"] == "panic" and found["spin"]["stop_reason"] == "max_insns"
    assert found["echo"]["stop_reason"] == "poweroff" and found["echo"]["exit_code"] == 0
    assert "hello" in (out / "jobs" / "echo" / "console.log").read_text()
    assert "a note for the guest" in (out / "jobs" / "cat-file" / "console.log").read_text()
    batch_json = json.loads((out / "batch.json").read_text())
    assert [job["label"] for job in batch_json["jobs"]] == list(EXPECTED)
    return found


@pytest.fixture
def eight_jobs(tmp_path: Path, default_image: ImageBundle) -> Path:
    (tmp_path / "note.txt").write_text("a note for the guest\n")
    path = tmp_path / "eight.yaml"
    path.write_text(EIGHT_JOBS)
    return path


def test_eight_jobs_on_the_pool_then_a_rerun_skips_the_complete_ones(eight_jobs: Path) -> None:
    out = eight_jobs.parent / "out"
    first = batch(str(eight_jobs), "--pool", "--workers", "2", "-o", str(out), cwd=eight_jobs.parent)
    assert first.returncode == 1, first.stderr
    assert "8 jobs: 6 ok, 2 failed, 0 not run" in first.stderr
    found = check_eight(out)
    # the same job on two workers: the same database content apart from wall times and its label
    assert table_dump(out / "jobs" / "same-1" / "run.sqlite", WALL_TIME_COLUMNS) == table_dump(
        out / "jobs" / "same-2" / "run.sqlite", WALL_TIME_COLUMNS
    )
    assert table_dump(out / "jobs" / "same-1" / "run.sqlite", {})["syscalls"]
    stamps = {label: (out / "jobs" / r["id"] / "stderr.log").stat().st_mtime_ns for label, r in found.items()}

    second = batch(str(eight_jobs), "--pool", "--workers", "2", "-o", str(out), cwd=eight_jobs.parent)
    assert second.returncode == 1, second.stderr
    assert "8 jobs: 6 ok (6 complete already), 2 failed, 0 not run" in second.stderr
    again = results(out)
    for label, result in again.items():
        if result["status"] == "ok":  # not run again: the same result, its files untouched
            assert result == found[label]
            assert (out / "jobs" / result["id"] / "stderr.log").stat().st_mtime_ns == stamps[label]
        else:  # retried
            assert result["attempts"] == 2 and result["reason"] == found[label]["reason"]
    # a changed job is not complete any more
    eight_jobs.write_text(EIGHT_JOBS.replace('"echo hello"', '"echo hello again"'))
    third = batch(str(eight_jobs), "--pool", "--workers", "2", "-o", str(out), cwd=eight_jobs.parent)
    assert "(5 complete already)" in third.stderr
    assert "hello again" in (out / "jobs" / "echo" / "console.log").read_text()


def test_eight_jobs_on_a_local_ray_instance(eight_jobs: Path) -> None:
    pytest.importorskip("ray")
    pool_out, ray_out = eight_jobs.parent / "pool", eight_jobs.parent / "ray"
    on_ray = batch(str(eight_jobs), "--workers", "2", "-o", str(ray_out), cwd=eight_jobs.parent)
    assert on_ray.returncode == 1, on_ray.stderr
    assert "8 jobs: 6 ok, 2 failed, 0 not run" in on_ray.stderr
    found = check_eight(ray_out)
    assert len({r["worker"] for r in found.values()}) == 2  # two Ray worker processes ran them
    # the same job on the pool and on a Ray worker (its own copy of the image): the same database content
    batch(str(eight_jobs), "--pool", "--workers", "2", "-o", str(pool_out), cwd=eight_jobs.parent)
    for label in ("same-1", "echo"):
        assert table_dump(ray_out / "jobs" / label / "run.sqlite", WORKER_COLUMNS) == table_dump(
            pool_out / "jobs" / label / "run.sqlite", WORKER_COLUMNS
        ), label


def run_process(*needles: bytes, timeout: float = 60) -> int:
    """The pid of the `qppsuite run` process whose command line holds every one of ``needles``, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if b"qppsuite\0run" in cmdline and all(needle in cmdline for needle in needles):
                    return int(entry.name)
        time.sleep(0.1)
    raise AssertionError(f"no run process with {needles}")


def job_process(job_dir: Path) -> int:
    """The pid of the `qppsuite run` process writing in ``job_dir``, once it runs."""
    return run_process(str(job_dir / "run.sqlite").encode())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


COUNTING = "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo counted $i"


def test_a_job_killed_midway_is_failed_and_retried(tmp_path: Path, default_image: ImageBundle) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f'jobs:\n  - {{label: count, cmd: "{COUNTING}", budget: {{timeout: 300}}}}\n')
    out = tmp_path / "out"
    running = subprocess.Popen(
        [sys.executable, "-m", "qppsuite", "batch", str(jobs), "--pool", "-o", str(out)],
        stderr=subprocess.PIPE, text=True,
    )
    os.kill(job_process((out / "jobs" / "count").absolute()), signal.SIGKILL)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 1, stderr
    killed = results(out)["count"]
    assert (killed["status"], killed["reason"], killed["attempts"]) == ("failed", "worker crashed (signal 9)", 1)
    retried = batch(str(jobs), "--pool", "-o", str(out), cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    result = results(out)["count"]
    assert (result["status"], result["attempts"]) == ("ok", 2)
    assert "counted 30000" in (out / "jobs" / "count" / "console.log").read_text()


def ray_job_process(label: str) -> int:
    """The pid of the `qppsuite run` process of the job ``label`` on a Ray worker (in its scratch directory)."""
    return run_process(f"@{label}-".encode(), b"/batch-scratch/", timeout=120)


def test_a_dead_ray_worker_is_its_jobs_failure_and_ray_prints_nothing(tmp_path: Path,
                                                                       default_image: ImageBundle) -> None:
    """Ray prints "(raylet) A worker died or was killed…" raw to the driver's stdout, with no public switch (Ray
    2.60); the batch turns it off through ``ray._private.worker._worker_logs_enabled``.  A Ray that drops or
    renames that flag is caught here: the other job keeps the batch alive long enough for the line to come."""
    pytest.importorskip("ray")
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(f'defaults: {{cmd: "{COUNTING}", budget: {{timeout: 300}}}}\njobs:\n  - {{label: killed}}\n'
                    f'  - {{label: counts}}\n')
    out = tmp_path / "out"
    running = subprocess.Popen(
        [sys.executable, "-m", "qppsuite", "batch", str(jobs), "--workers", "2", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        worker = int(Path(f"/proc/{ray_job_process('killed')}/stat").read_text().rsplit(")", 1)[1].split()[1])
        os.kill(worker, signal.SIGKILL)  # the Ray worker running the job (its run process goes with it)
        stdout, stderr = running.communicate(timeout=300)
    finally:
        running.kill()
    assert running.returncode == 1, stderr
    found = results(out)
    assert found["killed"]["status"] == "failed" and found["killed"]["reason"].startswith("worker crashed ("), found
    assert found["counts"]["status"] == "ok"
    assert "(raylet)" not in stdout + stderr and "A worker died" not in stdout + stderr, stdout + stderr
    assert "Traceback" not in stderr


def test_ctrl_c_stops_running_jobs_and_keeps_finished_ones(tmp_path: Path, default_image: ImageBundle) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        f'jobs:\n  - {{label: quick, cmd: "true"}}\n  - {{label: spin, cmd: "{SPIN}", budget: {{timeout: 300}}}}\n'
    )
    out = tmp_path / "out"
    running = subprocess.Popen(
        [sys.executable, "-m", "qppsuite", "batch", str(jobs), "--pool", "--workers", "2", "-o", str(out)],
        stderr=subprocess.PIPE, text=True,
    )
    spinning = job_process((out / "jobs" / "spin").absolute())
    deadline = time.monotonic() + 60
    while not (out / "jobs" / "quick" / "result.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=60)
    assert running.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("interrupted: 2 jobs: 1 ok, 0 failed, 1 not run")
    assert "Traceback" not in stderr
    assert results(out)["quick"]["status"] == "ok"
    assert not (out / "jobs" / "spin" / "result.json").exists()
    assert not alive(spinning)
    # the rerun runs what the Ctrl-C left (here it spins again: stopped by its budget this time)
    jobs.write_text(jobs.read_text().replace("timeout: 300", f"instructions: {SPIN_BUDGET}"))
    again = batch(str(jobs), "--pool", "-o", str(out), cwd=tmp_path)
    assert "2 jobs: 1 ok (1 complete already), 1 failed, 0 not run" in again.stderr


def test_a_plugins_relative_output_stays_with_its_job(tmp_path: Path, default_image: ImageBundle) -> None:
    """coverage writes ./coverage/drcov.<process>.<pid>...: two jobs running `ls` as pid 87 wrote one file in the
    batch's working directory, and one was lost; each now writes in its job's work/ directory."""
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("defaults: {plugins: [osi_linux, syscalls, coverage], plugin_args: {coverage: {process: ls}}}\n"
                    'jobs:\n  - {label: c1, cmd: "ls /"}\n  - {label: c2, cmd: "ls /etc"}\n')
    done = batch(str(jobs), "--pool", "--workers", "2", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    logs = {label: sorted((tmp_path / "out" / "jobs" / label / "work" / "coverage").glob("drcov.*"))
            for label in ("c1", "c2")}
    assert all(logs.values()), logs
    assert logs["c1"][0].read_bytes() != logs["c2"][0].read_bytes()
    assert not (tmp_path / "coverage").exists()


def test_a_kernel_that_panics_while_booting_is_a_panic(tmp_path: Path, default_image: ImageBundle) -> None:
    """No plugin loads before the ready snapshot, so no runs row says why; the run's own line does, and
    `stop_reason = 'panic'` finds the job in the merged database."""
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text('jobs:\n  - {label: noinit, cmd: "true", bootargs: "rdinit=/nonexistent"}\n')
    done = batch(str(jobs), "--pool", "-o", "out", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    result = results(tmp_path / "out")["noinit"]
    assert (result["stop_reason"], result["reason"]) == (
        "panic", "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)"), result
    with sqlite3.connect(tmp_path / "out" / "batch.sqlite") as conn:
        assert conn.execute("SELECT label FROM runs WHERE stop_reason = 'panic'").fetchall() == [("noinit",)]


def test_samples_directory_with_a_template(tmp_path: Path, default_image: ImageBundle) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    for name, text in (("hello.sh", "echo hello from a sample\n"), ("bye.sh", "echo bye\nexit 3\n")):
        (samples / name).write_text(text)
    template = tmp_path / "job.yaml"
    template.write_text("cmd: sh {sample}\nbudget: {timeout: 60}\n")
    done = batch(str(samples), "--template", str(template), "--pool", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "batch-samples"
    assert {label: r["status"] for label, r in results(out).items()} == {"hello.sh": "ok", "bye.sh": "ok"}
    assert "hello from a sample" in (out / "jobs" / "hello.sh" / "console.log").read_text()


#: A Ray cluster of its own (a head node with 2 CPUs), its workers with ``QPPSUITE_CACHE`` as the parent gives it;
#: it prints its address and lives until SIGTERM, when ray.shutdown (atexit) stops what ray.init started.  Its
#: drivers connect without Ray's token (RAY_AUTH_MODE=disabled in both): a real cluster's users have the token.
RAY_HEAD = """
import signal, sys, time
import ray
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ray.init(address="local", num_cpus=2, include_dashboard=False)
print(ray.get_runtime_context().gcs_address, flush=True)
while True:
    time.sleep(1)
"""


def test_ray_address_ships_the_image_once_by_hash(tmp_path: Path, default_image: ImageBundle) -> None:
    pytest.importorskip("ray")
    worker_cache = tmp_path / "worker-cache"  # another machine's cache: no image, no snapshot
    head = subprocess.Popen(
        [sys.executable, "-c", RAY_HEAD], stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, QPPSUITE_CACHE=str(worker_cache), RAY_AUTH_MODE="disabled"),
    )
    try:
        assert head.stdout is not None
        address = head.stdout.readline().strip()
        jobs = tmp_path / "jobs.yaml"
        jobs.write_text('jobs:\n  - {label: a, cmd: "echo a"}\n  - {label: b, cmd: "echo b"}\n')
        out = tmp_path / "out"
        no_token = dict(os.environ, RAY_AUTH_MODE="disabled")
        first = batch(str(jobs), "--ray", address, "-o", str(out), cwd=tmp_path, env=no_token)
        assert first.returncode == 0, first.stderr
        shipped = list((worker_cache / "batch-images").iterdir())
        assert [p.name for p in shipped] == [
            __import__("hashlib").sha256((default_image.path / "manifest.json").read_bytes()).hexdigest()
        ]
        assert not (worker_cache / "images").exists()  # never built there
        assert list((worker_cache / "snapshots" / default_image.name).glob("ready-*.snapshot"))
        with sqlite3.connect(out / "jobs" / "a" / "run.sqlite") as conn:
            started_from, image_path = conn.execute("SELECT started_from, image_path FROM runs").fetchone()
        assert started_from.startswith("ready-") and image_path == str(shipped[0])
        unpacked = shipped[0].stat().st_ino
        jobs.write_text(jobs.read_text().replace("echo b", "echo c"))
        second = batch(str(jobs), "--ray", address, "-o", str(out), cwd=tmp_path, env=no_token)
        assert second.returncode == 0, second.stderr
        assert "(1 complete already)" in second.stderr
        assert shipped[0].stat().st_ino == unpacked  # reused, not unpacked again
    finally:
        head.terminate()
        head.wait(60)
