"""`qppsuite batch`'s runner around its jobs: per-job errors, the output directory's lock, resume (no guest: the
job executor is a fake that writes what a run would)."""

import contextlib
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from qppsuite.batch import outdir, runner
from qppsuite.batch.jobs import Job, load_jobs_file
from qppsuite.batch.progress import BatchProgress
from qppsuite.cli.terminal import SafeConsole


def _jobs(tmp_path: Path, labels: list[str]) -> list[Job]:
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n" + "".join(f" - {{label: {label}, cmd: 'true'}}\n" for label in labels))
    return load_jobs_file(path, lambda image: image)


def _progress(total: int) -> tuple[BatchProgress, io.StringIO]:
    text = io.StringIO()
    return BatchProgress(SafeConsole(file=text, force_terminal=False), total=total, skipped=0), text


def _fake_run(ran: list[str], fail: dict[str, Exception] | None = None) -> Any:
    """A ``run_job`` that makes the job's database with one run and returns ok, or raises ``fail[label]``."""

    def run_job(job: Job, directory: Path, *, attempts: int, **_: Any) -> dict[str, Any]:
        ran.append(job.label)
        if fail and job.label in fail:
            raise fail[job.label]
        outdir.clear_attempt(directory)
        with contextlib.closing(sqlite3.connect(directory / outdir.DATABASE_FILE)) as conn:
            conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, stop_reason TEXT)")
            conn.execute("INSERT INTO runs (stop_reason) VALUES ('poweroff')")
            conn.commit()
        return {"format": outdir.FORMAT, "id": job.id, "label": job.label, "sha256": job.sha256, "status": "ok",
                "reason": None, "attempts": attempts, "wall_s": 0.5, "insns_executed": 1}

    return run_job


@pytest.fixture(autouse=True)
def _no_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "_make_ready_snapshots", lambda jobs, cache: None)


def test_one_jobs_error_fails_that_job_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = _jobs(tmp_path, ["ok1", "bad", "ok2", "nodir"])
    out = tmp_path / "out"
    (out / "jobs").mkdir(parents=True)
    (out / "jobs" / "nodir").touch()  # its directory is a file: nothing of it can be written
    ran: list[str] = []
    monkeypatch.setattr(runner, "run_job", _fake_run(ran, {"bad": ValueError("embedded null byte"),
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
