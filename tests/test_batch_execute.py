"""One job's process and what its end means (qppsuite.batch.execute), without a guest: the reason a result gives
for what the run left (its runs row, its exit status, its stderr)."""

import itertools
from pathlib import Path
from typing import Any, ClassVar

import pytest

from qppsuite.batch import execute
from qppsuite.batch.jobs import Job, load_jobs_file
from qppsuite.errors import GuestStopped, guest_stopped


def _job(tmp_path: Path, entry: str = "{label: a, cmd: 'true'}") -> Job:
    path = tmp_path / "jobs.yaml"
    path.write_text(f"jobs:\n - {entry}\n")
    return load_jobs_file(path, lambda image: image)[0]


def test_a_stop_whose_message_names_its_kind_says_it_once(tmp_path: Path) -> None:
    run = {"stop_reason": "interrupted", "stop_message": "interrupted by SIGTERM"}
    assert execute._reason(_job(tmp_path), 143, None, run, tmp_path) == "interrupted by SIGTERM"
    run = {"stop_reason": "hang", "stop_message": "no instruction retired for 30 s"}
    assert execute._reason(_job(tmp_path), 2, None, run, tmp_path) == "hang: no instruction retired for 30 s"


class _Spawned:
    """What ``subprocess.Popen`` gives in these tests: a run process that has exited 0 already; its arguments and
    keywords are kept in ``calls``."""

    calls: ClassVar[list[tuple[list[str], dict[str, Any]]]] = []

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        self.calls.append((args, kwargs))
        self.pid, self.returncode = 1, 0

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


def test_the_run_process_works_in_the_jobs_own_directory_with_absolute_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin's relative output (coverage's ./coverage) lands in the job's work/ directory, not in the batch's
    working directory where two jobs would write the same file; so every path the run is given is absolute, the
    output directory and cache given relative included, and an earlier attempt's work/ is cleared."""
    project = tmp_path / "project"
    (project / "bundle").mkdir(parents=True)
    (project / "in.txt").write_text("x")
    (project / "probe.sh").write_text("true")
    monkeypatch.chdir(project)
    (project / "jobs.yaml").write_text(
        "jobs:\n - {label: a, image: bundle, cmd_file: probe.sh, files: [in.txt, {host: in.txt, guest: /root/i}],"
        " copy_out: [/root/o], plugins: [osi_linux, syscalls, coverage]}\n")
    job = load_jobs_file(Path("jobs.yaml"), lambda image: image)[0]
    directory = Path("out/jobs/a")  # -o out: relative
    (directory / execute.WORK_DIR / "coverage").mkdir(parents=True)
    (directory / execute.WORK_DIR / "coverage" / "drcov.old.log").write_text("an earlier attempt's")
    monkeypatch.setattr(execute.subprocess, "Popen", _Spawned)
    _Spawned.calls.clear()
    result = execute.run_job(job, directory, attempts=1, cache="cache")
    assert result is not None and result["status"] == "ok"
    [(args, kwargs)] = _Spawned.calls
    work = project / "out" / "jobs" / "a" / execute.WORK_DIR
    assert kwargs["cwd"] == work and list(work.iterdir()) == []
    assert kwargs["env"]["QPPSUITE_CACHE"] == str(project / "cache")
    run = args[args.index("run") + 1:]
    paths = [run[0]]  # the image
    for option, value in itertools.pairwise(run):
        if option in ("--console", "--cmd-file"):
            paths.append(value)
        elif option == "--file":
            paths.append(value.split(":")[0])
        elif option == "--copy-out":
            paths.append(value.split(":", 1)[1])
        elif option == "-p" and ":db=" in value:
            paths.append(value.split(":db=", 1)[1])
    assert len(paths) == 7, run
    assert all(Path(path).is_absolute() for path in paths), paths
    assert run[0] == str(project / "bundle")  # a bare name the cache has no image of: the batch's ./bundle


#: What `qppsuite run` printed for a kernel that panicked while booting (rdinit=/nonexistent): no plugin was
#: loaded, so no runs row says it.
BOOT_PANIC = ("error: panic: [    0.645955] Kernel panic - not syncing: VFS: Unable to mount root fs on "
              "unknown-block(0,0) (stopped after 227,556,086 instructions in 2.73 s (83 MIPS))\n")


def test_a_panic_while_booting_is_a_panic(tmp_path: Path) -> None:
    """No runs row: the stop is the run's own GuestStopped line (exit status 2), so `stop_reason = 'panic'` finds
    the job; another exit status, or another last error line, is no stop."""
    stderr = tmp_path / "stderr.log"
    stderr.write_text("qppsuite: booting\n" + BOOT_PANIC + "hint: see the console\n")
    run = execute._stop_of(2, stderr)
    assert run == {"stop_reason": "panic", "stop_message": "[    0.645955] Kernel panic - not syncing: VFS: Unable to "
                                                            "mount root fs on unknown-block(0,0)"}
    assert execute._reason(_job(tmp_path), 2, None, run, tmp_path) == (
        "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)")
    assert execute._stop_of(1, stderr) == {}
    stderr.write_text(BOOT_PANIC + "error: --copy-out: cannot write /x\n")
    assert execute._stop_of(2, stderr) == {}


def test_a_guest_stop_line_reads_back() -> None:
    for kind, message in (("panic", "Kernel panic - not syncing: (x) (stopped after y)"), ("max_insns", "budget")):
        line = f"error: {GuestStopped(kind, message, '5 instructions in 1.00 s (0 MIPS)')}"
        assert guest_stopped(line) == (kind, message)
    assert guest_stopped("error: the command exited with status 3 (stopped after 1 s)") is None
    assert guest_stopped("error: Panic: x (stopped after 1 s)") is None


def test_the_run_is_given_the_jobs_label(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--label`` names the job in its run database's runs.label: what tells the job's file from another's."""
    monkeypatch.setattr(execute.subprocess, "Popen", _Spawned)
    _Spawned.calls.clear()
    execute.run_job(_job(tmp_path, "{label: 'a job -x', cmd: 'true'}"), tmp_path / "out", attempts=1)
    [(args, _kwargs)] = _Spawned.calls
    assert args[args.index("--label") + 1] == "a job -x"
