"""A batch's output directory as the runner leaves it (the contract the merge reads), written by hand around real
run databases: batch.json, and per job its result.json and run.sqlite."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qppsuite.batch.outdir import last_run


@dataclass(frozen=True)
class JobSpec:
    """One job of the directory: ``status`` ok/failed writes its result.json, None leaves it unwritten (not run);
    ``database``, a run database copied in as the job's run.sqlite (its run labelled ``label`` unless
    ``labelled`` is false, or it has a label of its own already)."""

    label: str
    status: str | None
    reason: str | None = None
    database: Path | None = None
    stop_reason: str | None = None
    sha256: str | None = None  # the result's, when it must differ from batch.json's (a changed job)
    labelled: bool = True  # the copied database's run labelled with the job's label, as `qppsuite run --label` does

    @property
    def id(self) -> str:
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in self.label)


def write_outdir(outdir: Path, jobs: list[JobSpec]) -> Path:
    """The output directory of ``jobs``, in order; returns it."""
    (outdir / "jobs").mkdir(parents=True, exist_ok=True)
    entries = []
    for job in jobs:
        sha = f"sha-{job.id}"
        entries.append({"id": job.id, "label": job.label, "job": {"cmd": job.label}, "sha256": sha})
        directory = outdir / "jobs" / job.id
        directory.mkdir(exist_ok=True)
        if job.database is not None:
            (directory / "run.sqlite").write_bytes(job.database.read_bytes())
            if job.labelled:
                conn = sqlite3.connect(directory / "run.sqlite")
                try:
                    with conn:
                        conn.execute("UPDATE runs SET label = ? WHERE label IS NULL", (job.label,))
                finally:
                    conn.close()
        if job.status is not None:
            run = (last_run(job.database, ("stop_reason", "insn_count", "started_at", "ended_at"))
                   if job.database is not None else None) or {}
            result = {
                "format": 1,
                "id": job.id,
                "label": job.label,
                "sha256": job.sha256 or sha,
                "status": job.status,
                "reason": job.reason,
                "exit_code": 0 if job.status == "ok" else 1,
                "stop_reason": run.get("stop_reason", job.stop_reason),
                "attempts": 1,
                "started": run.get("started_at") or "2026-12-06T00:00:00+00:00",
                "ended": run.get("ended_at") or "2026-12-06T00:00:01+00:00",
                "wall_s": 1.0,
                "insn_count": run.get("insn_count"),
                "worker": "test",
            }
            (directory / "result.json").write_text(json.dumps(result))
    batch = {"format": 1, "jobs": entries, "created": "2026-12-06T00:00:00+00:00"}
    (outdir / "batch.json").write_text(json.dumps(batch))
    return outdir


def rows(db: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def content(db: Path) -> list[str]:
    """Every statement that rebuilds the file (schema and rows): equal for files of equal content."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [*conn.iterdump(), f"user_version {conn.execute('PRAGMA user_version').fetchone()[0]}"]
    finally:
        conn.close()


def tables_with_runs(db: Path) -> list[str]:
    """The file's tables that name a run (a run_id column): the logger's and the plugins'."""
    names = [name for (name,) in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return [n for n in names if any(c[1] == "run_id" for c in rows(db, "SELECT * FROM pragma_table_info(?)", n))]


def check_references(db: Path) -> None:
    """Every foreign key holds, and names a row of the same run: a process row of run 2 for a call of run 2."""
    assert rows(db, "PRAGMA foreign_key_check") == []
    for table in tables_with_runs(db):
        for _id, _seq, parent, column, to, *_ in rows(db, "SELECT * FROM pragma_foreign_key_list(?)", table):
            if (
                parent == "runs"
                or to != "id"
                or not any(c[1] == "run_id" for c in rows(db, "SELECT * FROM pragma_table_info(?)", parent))
            ):
                continue
            crossed = rows(
                db,
                f"SELECT COUNT(*) FROM [{table}] t JOIN [{parent}] p ON p.id = t.[{column}] WHERE p.run_id != t.run_id",
            )[0][0]
            assert crossed == 0, (table, column, parent)
