"""`qppsuite batch`'s runner around its jobs: per-job errors, the output directory's lock, resume (no guest: the
job executor is a fake that writes what a run would)."""

import _thread
import contextlib
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import weakref
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from qppsuite.batch import outdir, ready, runner, scratch
from qppsuite.batch.jobs import Job, load_jobs_file
from qppsuite.batch.progress import BatchProgress
from qppsuite.cli.terminal import SafeConsole
from qppsuite.core.qpp import QPP
from tests.cli_entry import run_main
from tests.test_run_database import call, start


def _jobs(tmp_path: Path, labels: list[str]) -> list[Job]:
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n" + "".join(f" - {{label: {label}, cmd: 'true'}}\n" for label in labels))
    return load_jobs_file(path, lambda image: image)


def _progress(total: int) -> tuple[BatchProgress, io.StringIO]:
    text = io.StringIO()
    return BatchProgress(SafeConsole(file=text, force_terminal=False), total=total, skipped=0), text


@pytest.fixture(scope="module")
def run_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run database of one run (syscalls_logger fired by hand), as a job's would be."""
    path = tmp_path_factory.mktemp("run") / outdir.DATABASE_FILE
    with QPP(None) as qpp:
        harness = start(qpp, ["syscalls", "syscalls_logger"], {"syscalls_logger": {"db": str(path)}})
        call(harness)
        qpp.stop_all(None)
    return path


def _fake_run(ran: list[str], database: Path, fail: dict[str, BaseException] | None = None) -> Any:
    """A ``run_job`` that copies a real run database as the job's and returns ok, or raises ``fail[label]``; a
    KeyboardInterrupt there is a Ctrl-C as the job runs: in a pool's thread it reaches the batch's main thread,
    and the job, stopped, has no result (as a real run's)."""

    def run_job(job: Job, directory: Path, *, attempts: int, stop: threading.Event | None = None,
                **_: Any) -> dict[str, Any] | None:
        ran.append(job.label)
        if fail and isinstance(fail.get(job.label), KeyboardInterrupt) and stop is not None:
            _thread.interrupt_main(signal.SIGINT)
            stop.wait(30)
            return None
        if fail and job.label in fail:
            raise fail[job.label]
        outdir.clear_attempt(directory)
        shutil.copyfile(database, directory / outdir.DATABASE_FILE)
        with contextlib.closing(sqlite3.connect(directory / outdir.DATABASE_FILE)) as conn, conn:
            conn.execute("UPDATE runs SET label = ?", (job.label,))  # as `qppsuite run --label` writes it
        return {"format": outdir.FORMAT, "id": job.id, "label": job.label, "sha256": job.sha256, "status": "ok",
                "reason": None, "attempts": attempts, "wall_s": 0.5, "insns_executed": 1}

    return run_job


_machines_to_prepare = ready.machines_to_prepare


@pytest.fixture(autouse=True)
def _no_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ready, "machines_to_prepare", lambda jobs, cache: [])


def test_one_jobs_error_fails_that_job_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            run_database: Path) -> None:
    jobs = _jobs(tmp_path, ["ok1", "bad", "ok2", "nodir"])
    out = tmp_path / "out"
    (out / "jobs").mkdir(parents=True)
    (out / "jobs" / "nodir").touch()  # its directory is a file: nothing of it can be written
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, run_database, {"bad": ValueError("embedded null byte"),
                                                           "nodir": NotADirectoryError(20, "Not a directory")}))
    progress, text = _progress(len(jobs))
    summary = runner.run_batch(jobs, out, progress, workers=1, use_ray=False)
    assert sorted(ran) == ["bad", "nodir", "ok1", "ok2"]
    assert (summary.ok, summary.failed, summary.not_run) == (2, 2, 0)
    bad = outdir.read_result(outdir.job_dir(out, "bad"))
    assert bad is not None and bad["reason"] == "batch error (ValueError: embedded null byte)"
    assert outdir.is_complete(outdir.job_dir(out, "ok2"), jobs[2].sha256)
    assert "Traceback" not in text.getvalue()


def test_a_result_without_wall_time_is_shown(tmp_path: Path) -> None:
    progress, text = _progress(1)
    job = _jobs(tmp_path, ["gone"])[0]
    progress.job_finished(runner._failed(job, 2, "worker crashed", RuntimeError("worker died\nmore")))
    assert "gone: worker crashed (RuntimeError: worker died)" in text.getvalue()


def _cli_fakes(monkeypatch: pytest.MonkeyPatch, ran: list[str], database: Path,
               fail: dict[str, BaseException]) -> None:
    from qppsuite.batch import shipping

    monkeypatch.setattr(shipping, "image_hash", lambda image, cache=None: image)
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, database, fail))  # type: ignore[arg-type]


def test_a_second_batch_in_one_outdir_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             run_database: Path) -> None:
    ran: list[str] = []
    _cli_fakes(monkeypatch, ran, run_database, {})
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n - {label: a, cmd: 'true'}\n")
    out = tmp_path / "out"
    with outdir.locked(out):  # another batch, running
        code, stderr = run_main(["batch", str(jobs), "--pool", "-o", str(out)])
    assert code == 1 and ran == []
    assert f"{out} is in use by batch pid {os.getpid()}" in stderr and "Traceback" not in stderr
    code, stderr = run_main(["batch", str(jobs), "--pool", "-o", str(out)])  # released: this one runs
    assert code == 0 and ran == ["a"], stderr


def test_the_summary_counts_are_the_merged_databases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     run_database: Path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n - {label: a, cmd: 'true'}\n - {label: b, cmd: 'true'}\n")
    out = tmp_path / "out"
    ran: list[str] = []
    _cli_fakes(monkeypatch, ran, run_database, {"a": ValueError("a"), "b": ValueError("b")})
    run_main(["batch", str(jobs), "--pool", "-j1", "-o", str(out)])
    _cli_fakes(monkeypatch, ran, run_database, {"a": KeyboardInterrupt()})  # Ctrl-C as the rerun's first job starts
    code, stderr = run_main(["batch", str(jobs), "--pool", "-j1", "-o", str(out)])
    assert code == 130
    assert "2 jobs: 0 ok, 2 failed, 0 not run" in stderr  # b was not rerun: its earlier failure stands


def test_resume_reruns_an_ok_job_whose_database_is_gone_or_damaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   run_database: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n - {label: kept}\n - {label: gone}\n - {label: damaged}\n - {label: nodb, plugins: []}\n")
    jobs = load_jobs_file(path, lambda image: image)
    out = tmp_path / "out"
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, run_database))
    runner.run_batch(jobs, out, _progress(4)[0], workers=1, use_ray=False)
    (outdir.job_dir(out, "gone") / outdir.DATABASE_FILE).unlink()
    (outdir.job_dir(out, "damaged") / outdir.DATABASE_FILE).write_bytes(b"not a database" * 100)
    (outdir.job_dir(out, "nodb") / outdir.DATABASE_FILE).unlink()  # it has none: complete without
    ran.clear()
    summary = runner.run_batch(jobs, out, _progress(4)[0], workers=1, use_ray=False)
    assert sorted(ran) == ["damaged", "gone"]
    assert (summary.skipped, summary.ok) == (2, 2)


def test_an_address_that_is_not_ray_is_one_error_at_once() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        with pytest.raises(runner.RayError, match="not a Ray cluster"):
            runner._reachable(f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


class _FakeBundle:
    """What the fake ``ray.put`` gives: a ref to an image's packed bytes, whose liveness the test can follow."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _FakeRay:
    """Enough of Ray for ``runner._run_ray`` on the driver: a task runs (in this process) when it is waited for,
    one task per ``wait``, the first submitted of those in flight (as a cluster of ``cpus`` CPUs that finishes
    one at a time).  It records the tasks in flight at most (:attr:`most_in_flight`), and on each submission and
    each wait how many bundles were alive and how many of those no task in flight held (:attr:`bundles_seen`:
    (alive, held by the driver only))."""

    class exceptions:
        RayError = RuntimeError

        class RayTaskError(RuntimeError):
            """What Ray raises when the task itself raised: ``cause`` is that exception."""

            def __init__(self, cause: Exception) -> None:
                super().__init__(f"ray::_ray_task() (pid=1, ip=127.0.0.1)\n{cause}")
                self.cause = cause

        class WorkerCrashedError(RuntimeError):
            pass

    def __init__(self, cpus: int = 1) -> None:
        self.cpus = cpus
        self.calls: dict[int, Any] = {}
        self.in_flight: dict[int, tuple[Any, ...]] = {}  # ref -> the task's arguments
        self.most_in_flight = 0
        self.bundles: list[weakref.ref[_FakeBundle]] = []
        self.bundles_seen: list[tuple[int, int]] = []
        self.events: list[tuple[str, str]] = []  # ("put", image), ("submit", label), ("done", label)
        self.cancelled: list[int] = []

    def init(self, **_: Any) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def put(self, value: Any) -> _FakeBundle:
        bundle = _FakeBundle(value)
        self.bundles.append(weakref.ref(bundle))
        self.events.append(("put", value.decode()))
        return bundle

    def alive(self) -> list[_FakeBundle]:
        return [bundle for bundle in (ref() for ref in self.bundles) if bundle is not None]

    def _see_bundles(self) -> None:
        alive = self.alive()
        held = {id(arg) for args in self.in_flight.values() for arg in args}
        self.bundles_seen.append((len(alive), sum(id(bundle) not in held for bundle in alive)))

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": float(self.cpus)}

    def remote(self, **_: Any) -> Any:
        fake = self

        class Task:
            def __init__(self, function: Any) -> None:
                self.function = function

            def remote(self, *args: Any) -> int:
                ref = len(fake.calls)
                fake.calls[ref] = lambda: self.function(*args)
                fake.in_flight[ref] = args
                fake.most_in_flight = max(fake.most_in_flight, len(fake.in_flight))
                fake.events.append(("submit", args[0].label))
                fake._see_bundles()
                return ref

        return Task

    def wait(self, pending: list[int], **_: Any) -> tuple[list[int], list[int]]:
        self._see_bundles()
        ref = pending[0]
        if ref in self.cancelled:  # what a cancelled task gives (its arguments held until Ray ends)
            self.calls[ref] = ("error", RuntimeError("cancelled"))
        elif ref in self.in_flight:
            call = self.calls[ref]
            try:
                self.calls[ref] = ("value", call())
            except Exception as exc:
                self.calls[ref] = ("error", exc)
            self.events.append(("done", self.in_flight.pop(ref)[0].label))
        return [ref], list(pending[1:])

    def get(self, ref: int) -> Any:
        kind, value = self.calls[ref]
        if kind == "error":
            raise value
        return value

    def cancel(self, ref: int) -> None:
        self.cancelled.append(ref)


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _FakeRay:
    """``import ray`` gives a :class:`_FakeRay`; images pack to their name and unpack to a directory."""
    import sys

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)  # type: ignore[arg-type]
    monkeypatch.setenv("QPPSUITE_CACHE", str(tmp_path / "cache"))  # the local workers' cache: their scratch
    monkeypatch.setattr(runner, "pack", lambda image, cache=None: image.encode())
    monkeypatch.setattr(runner, "image_hash", lambda image, cache=None: image)
    monkeypatch.setattr(runner, "unpack", lambda data, digest, cache=None: tmp_path / "unpacked" / digest)
    return fake


@pytest.mark.parametrize("use_ray", [False, True], ids=["pool", "ray"])
def test_attempts_count_a_start_that_left_no_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    run_database: Path, fake_ray: _FakeRay, use_ray: bool) -> None:
    jobs = _jobs(tmp_path, ["killed"])
    out = tmp_path / "out"
    ran: list[str] = []
    # the batch killed (SIGKILL, a reboot) while the job ran: as Ctrl-C, no result.json, here nothing else either
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, run_database, {"killed": KeyboardInterrupt()}))
    with pytest.raises(runner.BatchInterrupted):
        runner.run_batch(jobs, out, _progress(1)[0], workers=1, use_ray=use_ray)
    assert outdir.read_result(outdir.job_dir(out, "killed")) is None
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, run_database))
    runner.run_batch(jobs, out, _progress(1)[0], workers=1, use_ray=use_ray)
    result = outdir.read_result(outdir.job_dir(out, "killed"))
    assert result is not None and (result["status"], result["attempts"]) == ("ok", 2)
    # another version of the job starts counting again
    path = tmp_path / "jobs.yaml"
    path.write_text(path.read_text().replace("'true'", "'false'"))
    changed = load_jobs_file(path, lambda image: image)
    runner.run_batch(changed, out, _progress(1)[0], workers=1, use_ray=use_ray)
    result = outdir.read_result(outdir.job_dir(out, "killed"))
    assert result is not None and result["attempts"] == 1
    assert json.loads((outdir.job_dir(out, "killed") / outdir.ATTEMPTS_FILE).read_text()) == {
        "sha256": changed[0].sha256, "attempts": 1}


def test_an_image_ray_cannot_ship_fails_its_jobs_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    run_database: Path, fake_ray: _FakeRay) -> None:
    from qppsuite.errors import ImageError

    def pack(image: str, cache: Path | None = None) -> bytes:
        if image.startswith("broken"):
            raise ImageError(f"{image}: manifest.json: not JSON\nline 2")
        return image.encode()

    monkeypatch.setattr(runner, "pack", pack)
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n - {label: a, cmd: 'true'}\n - {label: b, cmd: 'true', image: \"broken\\e[31m\"}\n"
                    " - {label: c, cmd: 'true'}\n - {label: d, cmd: 'true', image: \"broken\\e[31m\"}\n")
    jobs = load_jobs_file(path, lambda image: image)
    out = tmp_path / "out"
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, run_database))
    progress, text = _progress(len(jobs))
    summary = runner.run_batch(jobs, out, progress, workers=1, use_ray=True)
    assert sorted(ran) == ["a", "c"]
    assert (summary.ok, summary.failed) == (2, 2)
    for label in ("b", "d"):
        result = outdir.read_result(outdir.job_dir(out, label))
        assert result is not None and result["status"] == "failed"
        assert result["reason"] == ("cannot ship image broken\\x1b[31m (ImageError: broken\\x1b[31m: manifest.json: "
                                    "not JSON)")
    assert "\x1b" not in text.getvalue() and "Traceback" not in text.getvalue()


@pytest.mark.parametrize("setting", ["1", "True"])
def test_a_tls_cluster_is_checked_by_its_tcp_connection_only(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    """With RAY_USE_TLS, Ray's server answers a plaintext preface with a TLS alert or by closing: here, a server
    that closes each connection it accepts once it has read what came.  Without TLS it is not Ray; with TLS,
    ray.init is left to say."""
    server = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{server.getsockname()[1]}"

    def close_each() -> None:
        with suppress(OSError):
            while True:
                connection = server.accept()[0]
                connection.settimeout(5)
                with suppress(OSError):
                    connection.recv(33)  # the preface and a SETTINGS frame: closed with nothing unread, no RST
                connection.close()

    threading.Thread(target=close_each, daemon=True).start()
    try:
        monkeypatch.delenv("RAY_USE_TLS", raising=False)
        with pytest.raises(runner.RayError, match="not a Ray cluster"):
            runner._reachable(address)
        monkeypatch.setenv("RAY_USE_TLS", setting)
        runner._reachable(address)
        monkeypatch.setenv("RAY_USE_TLS", "0")
        with pytest.raises(runner.RayError, match="not a Ray cluster"):
            runner._reachable(address)
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the accept
        server.close()
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
        monkeypatch.setenv("RAY_USE_TLS", setting)
        with pytest.raises(runner.RayError, match="cannot connect"):
            runner._reachable(address)


def test_only_machines_two_jobs_share_are_booted_beforehand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n - {label: a1, image: a}\n - {label: b, image: b}\n - {label: a2, image: a,"
                    " budget: {timeout: 900}}\n - {label: c1, image: c}\n - {label: c2, image: c}\n"
                    " - {label: a-big, image: a, ram: 512}\n - {label: a-big2, image: a, ram: 512}\n")
    jobs = load_jobs_file(path, lambda image: image)
    ready_already = {"c"}  # its snapshot is in the cache

    def machine_of(job: Job, cache: Path | None) -> ready.Machine | None:
        image = job.spec["image"]
        return None if image in ready_already else (image, int(job.spec.get("ram", 256)), "")

    monkeypatch.setattr(ready, "machine_of", machine_of)
    assert _machines_to_prepare(jobs, None) == [
        ["a", "-q", "--cmd", "true", "--timeout", "900", "--ram", "256"],  # the longest budget of its jobs
        ["a", "-q", "--cmd", "true", "--timeout", "600", "--ram", "512"],
    ]


#: A stand-in for a machine's boot: it says it runs (``NAME.live``), waits until two have said so or 20 s, records
#: how many ran at that moment (``NAME.seen``), and ends (``NAME.done``); ``sleep`` instead waits for good.
_BOOT = """
import os, pathlib, sys, time
folder, name = pathlib.Path(sys.argv[1]), sys.argv[2]
(folder / f"{name}.pid").write_text(str(os.getpid()))
if name.startswith("sleep"):
    time.sleep(300)
(folder / f"{name}.live").touch()
deadline = time.monotonic() + 20
while len(list(folder.glob("*.live"))) + len(list(folder.glob("*.done"))) < 2 and time.monotonic() < deadline:
    time.sleep(0.02)
(folder / f"{name}.seen").write_text(str(len(list(folder.glob("*.live")))))
(folder / f"{name}.live").rename(folder / f"{name}.done")
"""


def test_machines_boot_parallel_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ready, "RUN", [sys.executable, "-c", _BOOT])
    ready.prepare([[str(tmp_path), f"m{n}"] for n in range(3)], 2, None)
    seen = [int((tmp_path / f"m{n}.seen").read_text()) for n in range(3)]
    assert max(seen) == 2  # the first two booted together, never three at once


def test_ctrl_c_stops_the_machines_booting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ready, "RUN", [sys.executable, "-c", _BOOT])

    def ctrl_c_once_both_run() -> None:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        _thread.interrupt_main(signal.SIGINT)

    threading.Thread(target=ctrl_c_once_both_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        ready.prepare([[str(tmp_path), "sleep1"], [str(tmp_path), "sleep2"], [str(tmp_path), "sleep3"]], 2, None)
    pids = [int(path.read_text()) for path in tmp_path.glob("*.pid")]
    assert len(pids) == 2  # the third never started
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # stopped and reaped: no orphan
            os.kill(pid, 0)


@pytest.mark.parametrize(("address", "expected"), [(None, 3), ("127.0.0.1:6379", os.cpu_count() or 1)],
                         ids=["local", "cluster"])
def test_the_progress_says_machines_are_prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 run_database: Path, fake_ray: _FakeRay, address: str | None,
                                                 expected: int) -> None:
    prepared: list[tuple[list[list[str]], int]] = []
    monkeypatch.setattr(ready, "machines_to_prepare", lambda jobs, cache: [["debian-armhf", "-q"]])
    monkeypatch.setattr(ready, "prepare", lambda machines, parallel, cache: prepared.append((machines, parallel)))
    monkeypatch.setattr(runner, "_reachable", lambda address: None)
    monkeypatch.setattr(runner, "run_job", _fake_run([], run_database))
    progress, text = _progress(2)
    runner.run_batch(_jobs(tmp_path, ["a", "b"]), tmp_path / "out", progress, workers=3, use_ray=address is not None,
                     ray_address=address)
    assert prepared == [([["debian-armhf", "-q"]], expected)]  # a cluster's: booted on the driver's own cores
    lines = text.getvalue().splitlines()
    assert lines[0] == "preparing 1 machine: booting each once for its ready snapshot"
    assert len(lines) == 3


def _many_images(tmp_path: Path, images: int, jobs_each: int) -> list[Job]:
    """``jobs_each`` jobs (``j<image>-<n>``) on each of ``images`` images, interleaved in the jobs file."""
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n" + "".join(f" - {{label: j{i}-{n}, cmd: 'true', image: img{i}}}\n"
                                        for n in range(jobs_each) for i in range(images)))
    return load_jobs_file(path, lambda image: image)


def test_ray_keeps_a_window_of_tasks_and_ships_each_image_as_its_jobs_come(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_database: Path, fake_ray: _FakeRay) -> None:
    """A corpus of many images: at most the window (2 per CPU) in flight, each image packed when its first job
    is submitted and let go by the driver once its last one is, every job with its result."""
    fake_ray.cpus = 2
    jobs = _many_images(tmp_path, 12, 2)
    out = tmp_path / "out"
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, run_database))
    progress, _text = _progress(len(jobs))
    running: list[int] = []
    wait = fake_ray.wait
    monkeypatch.setattr(fake_ray, "wait", lambda pending, **kw: (running.append(progress.running), wait(pending))[1])
    summary = runner.run_batch(jobs, out, progress, workers=1, use_ray=True)
    assert (summary.ok, summary.failed, summary.not_run) == (24, 0, 0)
    for job in jobs:
        result = outdir.read_result(outdir.job_dir(out, job.id))
        assert result is not None and result["status"] == "ok"
    assert fake_ray.most_in_flight == 4  # the window: 2 per CPU
    assert max(running) == 2 and progress.running == 0  # never more running than the cluster's CPUs
    puts = [image for kind, image in fake_ray.events if kind == "put"]
    assert puts == [f"img{i}" for i in range(12)]  # each image once, in the order of its first job
    submitted = [label for kind, label in fake_ray.events if kind == "submit"]
    assert submitted == [f"j{i}-{n}" for i in range(12) for n in range(2)]  # an image's jobs together
    first_done = fake_ray.events.index(next(event for event in fake_ray.events if event[0] == "done"))
    assert first_done < fake_ray.events.index(("put", "img11"))  # not every image packed before a job ends
    assert max(alive for alive, _ in fake_ray.bundles_seen) <= 3  # the images of the window's tasks, at most
    assert max(driver_only for _, driver_only in fake_ray.bundles_seen) <= 1  # the image being submitted
    assert fake_ray.alive() == []  # every ref let go


def test_ctrl_c_mid_batch_on_ray_cancels_the_tasks_in_flight_and_submits_no_more(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_database: Path, fake_ray: _FakeRay) -> None:
    fake_ray.cpus = 2
    jobs = _many_images(tmp_path, 12, 2)
    out = tmp_path / "out"
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, run_database, {"j4-1": KeyboardInterrupt()}))
    progress, _text = _progress(len(jobs))
    with pytest.raises(runner.BatchInterrupted) as stopped:
        runner.run_batch(jobs, out, progress, workers=1, use_ray=True)
    assert (stopped.value.summary.ok, stopped.value.summary.not_run) == (9, 15)
    submitted = [label for kind, label in fake_ray.events if kind == "submit"]
    assert ran == [f"j{i}-{n}" for i in range(5) for n in range(2)]  # in order, to the one Ctrl-C stopped
    assert len(submitted) == 13 and len(fake_ray.cancelled) == 4  # the window in flight, cancelled
    for job in jobs:
        directory = outdir.job_dir(out, job.id)
        result = outdir.read_result(directory)
        assert (result is not None) == (job.label in ran[:-1]), job.label
        assert (directory / outdir.ATTEMPTS_FILE).is_file() == (job.label in submitted), job.label
    assert [image for kind, image in fake_ray.events if kind == "put"] == [f"img{i}" for i in range(7)]
    fake_ray._see_bundles()
    assert fake_ray.bundles_seen[-1][1] == 0  # the driver let go of the image it was submitting


def test_a_ray_failure_is_one_short_reason_and_its_line_has_its_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_database: Path, fake_ray: _FakeRay) -> None:
    """A dead Ray worker is ``worker crashed (Ray: <its error type>)``, not Ray's paragraph; an exception the task
    raised is a ``batch error`` naming it; their progress lines show the seconds since the job was submitted."""
    crashed = fake_ray.exceptions.WorkerCrashedError(
        "The worker died unexpectedly while executing this task. Check python-core-worker-*.log files for more "
        "information.")
    raised = fake_ray.exceptions.RayTaskError(PermissionError(13, "Permission denied"))
    jobs = _jobs(tmp_path, ["ok", "crashed", "raised"])
    out = tmp_path / "out"
    monkeypatch.setattr(runner, "run_job", _fake_run([], run_database, {"crashed": crashed, "raised": raised}))
    progress, text = _progress(len(jobs))
    summary = runner.run_batch(jobs, out, progress, workers=1, use_ray=True)
    assert (summary.ok, summary.failed) == (1, 2)
    reasons = {label: (outdir.read_result(outdir.job_dir(out, label)) or {}).get("reason")
               for label in ("crashed", "raised")}
    assert reasons == {"crashed": "worker crashed (Ray: WorkerCrashedError)",
                       "raised": "batch error (PermissionError: [Errno 13] Permission denied)"}
    lines = text.getvalue().splitlines()
    assert re.fullmatch(r"\[2/3\] failed crashed: worker crashed \(Ray: WorkerCrashedError\) \(\d+\.\d s\)",
                        lines[1]), lines
    assert re.search(r"raised: batch error .* \(\d+\.\d s\)$", lines[2]), lines


def test_a_pool_jobs_batch_error_line_has_its_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   run_database: Path) -> None:
    jobs = _jobs(tmp_path, ["bad"])
    monkeypatch.setattr(runner, "run_job", _fake_run([], run_database, {"bad": ValueError("embedded null byte")}))
    progress, text = _progress(1)
    runner.run_batch(jobs, tmp_path / "out", progress, workers=1, use_ray=False)
    assert re.fullmatch(r"\[1/1\] failed bad: batch error \(ValueError: embedded null byte\) \(\d+\.\d s\)\n",
                        text.getvalue()), text.getvalue()


def test_ray_scratch_directories_are_in_the_workers_cache_and_dead_workers_ones_go(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_database: Path, fake_ray: _FakeRay) -> None:
    """A task's scratch directory is under the cache's batch-scratch/ (it was /tmp/qppsuite-batch-*), and a worker
    killed under its task leaves one behind: the next task removes those whose process is gone, on this host."""
    root = tmp_path / "cache" / scratch.SCRATCH_DIR
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has
    host = socket.gethostname()
    left = {"dead": root / f"{gone.pid}@{host}@a-x1", "live": root / f"{os.getpid()}@{host}@b-x2",
            "elsewhere": root / f"{gone.pid}@other-{host}@c-x3", "not ours": root / "notes"}
    for directory in left.values():
        directory.mkdir(parents=True)
        (directory / outdir.DATABASE_FILE).write_text("an earlier task's")
    used: list[Path] = []
    fake = _fake_run([], run_database)

    def run_job(job: Job, directory: Path, **kwargs: Any) -> dict[str, Any] | None:
        used.append(directory)
        assert not left["dead"].exists()  # removed as the task started
        return fake(job, directory, **kwargs)

    monkeypatch.setattr(runner, "run_job", run_job)
    summary = runner.run_batch(_jobs(tmp_path, ["j"]), tmp_path / "out", _progress(1)[0], workers=1, use_ray=True)
    assert summary.ok == 1
    [directory] = used
    assert directory.parent == root and directory.name.startswith(f"{os.getpid()}@{host}@j-")
    assert sorted(path.name for path in root.iterdir()) == sorted(
        left[name].name for name in ("live", "elsewhere", "not ours"))


@pytest.mark.parametrize(("mode", "expected"), [
    (None, "the cluster requires authentication (Ray's token authentication)"),
    ("token", "the cluster refused this driver's authentication token"),
])
def test_a_cluster_refusing_for_authentication_is_one_line_and_rays_raw_lines_stay_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], fake_ray: _FakeRay,
        mode: str | None, expected: str) -> None:
    """Ray's C++ client writes each retry to fd 2 (``gcs_client.cc:210: Failed to get cluster ID …
    InvalidAuthToken``) and then raises "Failed to connect", which never says why: the line says it, with what
    to set, and none of the raw lines reaches the terminal."""
    raw = (b"[2026-12-06 07:50:01,000 W 1 1] gcs_client.cc:210: Failed to get cluster ID from GCS server: "
           b"Unauthenticated: InvalidAuthToken: Authentication token is missing\n")

    def init(**_: Any) -> None:
        for _ in range(20):
            os.write(2, raw)
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:26380")

    monkeypatch.setattr(fake_ray, "init", init)
    monkeypatch.setattr(runner, "_reachable", lambda address: None)
    if mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    capfd.readouterr()
    with pytest.raises(runner.RayError) as refused:
        runner.run_batch(_jobs(tmp_path, ["a"]), tmp_path / "out", _progress(1)[0], workers=1, use_ray=True,
                         ray_address="127.0.0.1:26380")
    assert str(refused.value) == f"--ray 127.0.0.1:26380: {expected}"
    assert "RAY_AUTH_TOKEN" in (refused.value.hint or "")
    assert capfd.readouterr().err == ""
    os.write(2, b"after\n")  # fd 2 is the terminal's again
    assert capfd.readouterr().err == "after\n"


def test_a_cluster_that_does_not_answer_is_still_cannot_connect(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_ray: _FakeRay) -> None:
    def init(**_: Any) -> None:
        os.write(2, b"gcs_client.cc:210: Failed to get cluster ID from GCS server: Unavailable\n")
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:26380")

    monkeypatch.setattr(fake_ray, "init", init)
    monkeypatch.setattr(runner, "_reachable", lambda address: None)
    with pytest.raises(runner.RayError, match="cannot connect: Failed to connect to Ray cluster"):
        runner.run_batch(_jobs(tmp_path, ["a"]), tmp_path / "out", _progress(1)[0], workers=1, use_ray=True,
                         ray_address="127.0.0.1:26380")


def test_an_output_directory_that_is_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       run_database: Path) -> None:
    ran: list[str] = []
    _cli_fakes(monkeypatch, ran, run_database, {})
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("jobs:\n - {label: a, cmd: 'true'}\n")
    (tmp_path / "afile").write_text("")
    code, stderr = run_main(["batch", str(jobs), "--pool", "-o", str(tmp_path / "afile")])
    assert (code, ran) == (1, [])
    assert stderr == f"error: the batch's output directory {tmp_path / 'afile'} is a file, not a directory\n"


class _RayInstallingItsSignalHandlers:
    """A stand-in for the ``ray`` module whose ``init`` does what Ray's does to the signal handlers (a Python
    SIGTERM handler of its own, and its C++ core's handlers in the process's table, which Python's own table
    does not see: here they ignore the signal), and
    whose first task submission receives a SIGTERM: whether :func:`runner._run_ray` stops as the pool does
    depends on the handler order only, no Ray needed."""

    def __init__(self) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None)
        self.libc.signal.restype = ctypes.c_void_p
        self.libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)

    def init(self, **_options: Any) -> None:
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(signum))  # as ray.init does
        for signum in runner.STOPPING:
            self.libc.signal(signum, 1)  # SIG_IGN, behind Python's back, as Ray's C++ core installs its own

    def remote(self, **_options: Any) -> Any:
        def task(_function: Any) -> Any:
            signal.raise_signal(signal.SIGTERM)  # the batch is stopped as its first job would be submitted
            raise AssertionError("the SIGTERM did not stop the batch")

        return task

    def shutdown(self) -> None:
        pass


def test_sigterm_stops_a_local_ray_batch_after_ray_init_installed_its_handlers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", _RayInstallingItsSignalHandlers())
    received: list[int] = []
    with pytest.raises(KeyboardInterrupt), runner._signals_interrupt(received):  # restores pytest's, C level too
        runner._run_ray([], tmp_path, None, runner.Summary(total=0), 1, None, tmp_path)  # type: ignore[arg-type]
    assert received == [signal.SIGTERM]


class _RaySignalledDuringInit(_RayInstallingItsSignalHandlers):
    """``ray.init`` taking its seconds, a SIGTERM landing in them: after Ray's handler is in (``sys.exit``), or
    before (ours); ``shutdown`` counted."""

    def __init__(self, after_rays_handler: bool) -> None:
        super().__init__()
        self.after_rays_handler = after_rays_handler
        self.shutdowns = 0

    def init(self, **options: Any) -> None:
        if self.after_rays_handler:  # Ray's Python handler, its C++ core's not yet (as the break test saw: exit 15)
            signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(signum))
        signal.raise_signal(signal.SIGTERM)
        raise AssertionError("the SIGTERM did not stop ray.init")

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.mark.parametrize("after_rays_handler", [True, False])
def test_sigterm_during_ray_init_stops_the_batch_and_what_ray_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, after_rays_handler: bool
) -> None:
    """Third break test of issue 15: a SIGTERM 2.5 s into a local-Ray batch (inside ray.init) ended it with
    Ray's sys.exit(15): no line, no merge, and Ray's agents left running."""
    fake = _RaySignalledDuringInit(after_rays_handler)
    monkeypatch.setitem(sys.modules, "ray", fake)
    received: list[int] = []
    with pytest.raises(KeyboardInterrupt), runner._signals_interrupt(received):
        runner._run_ray([], tmp_path, None, runner.Summary(total=0), 1, None, tmp_path)  # type: ignore[arg-type]
    assert received == [signal.SIGTERM] and fake.shutdowns == 1


def test_a_directory_at_an_attempt_file_s_name_is_cleared_with_the_attempt(tmp_path: Path) -> None:
    """A directory made by hand where the job's run.sqlite (or console.log...) goes is removed with the rest of
    the earlier attempt, not a ``batch error (IsADirectoryError...)`` on every rerun; attempts.json stays."""
    for name in (outdir.DATABASE_FILE, outdir.CONSOLE_FILE):
        (tmp_path / name / "inside").mkdir(parents=True)
    outdir.note_attempt(tmp_path, "sha", 1)
    outdir.clear_attempt(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == [outdir.ATTEMPTS_FILE]
