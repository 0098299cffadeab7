"""One job's process and what its end means (qppsuite.batch.execute), without a guest: the reason a result gives
for what the run left (its runs row, its exit status, its stderr)."""

from pathlib import Path

from qppsuite.batch import execute
from qppsuite.batch.jobs import Job, load_jobs_file


def _job(tmp_path: Path, entry: str = "{label: a, cmd: 'true'}") -> Job:
    path = tmp_path / "jobs.yaml"
    path.write_text(f"jobs:\n - {entry}\n")
    return load_jobs_file(path, lambda image: image)[0]


def test_a_stop_whose_message_names_its_kind_says_it_once(tmp_path: Path) -> None:
    run = {"stop_reason": "interrupted", "stop_message": "interrupted by SIGTERM"}
    assert execute._reason(_job(tmp_path), 143, None, run, tmp_path) == "interrupted by SIGTERM"
    run = {"stop_reason": "hang", "stop_message": "no instruction retired for 30 s"}
    assert execute._reason(_job(tmp_path), 2, None, run, tmp_path) == "hang: no instruction retired for 30 s"
