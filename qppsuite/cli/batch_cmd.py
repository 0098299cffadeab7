"""``qppsuite batch``: many runs, each its own process, on this machine's cores or a Ray cluster.

``batch`` is a command group whose default command is ``run``: ``qppsuite batch JOBS`` is ``qppsuite batch run
JOBS``.  Other commands (``merge``) register on :data:`batch_app` from their own modules.
"""

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from qppsuite.cli import app, err_console
from qppsuite.cli.terminal import styled
from qppsuite.errors import QppsuiteError

if TYPE_CHECKING:
    from qppsuite.batch.merge import Merged


class _RunByDefault(TyperGroup):
    """A group whose first argument, when it is no command's name (a jobs file), goes to ``run``."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click.Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


batch_app = typer.Typer(
    cls=_RunByDefault,
    help="Run many jobs (a YAML jobs file, or a directory of samples and a template): `qppsuite batch JOBS`.",
    no_args_is_help=True,
)
app.add_typer(batch_app, name="batch")


class BatchFailed(QppsuiteError):
    """Some jobs failed: the summary line, exit 1."""


@batch_app.command("run")
def batch_run(
    jobs: Annotated[Path, typer.Argument(help="Jobs file (YAML), or a directory of samples with --template")],
    template: Annotated[
        Path | None, typer.Option("--template", help="With a samples directory: the job (YAML) applied to each file")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", "-j", min=1, help="Jobs at a time (default: all cores)")
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option("--ray", metavar="ADDRESS", help="Run on the Ray cluster at ADDRESS (ray://HOST:PORT, HOST:PORT)"),
    ] = None,
    pool: Annotated[
        bool, typer.Option("--pool", "--no-ray", help="Use the local process pool even if Ray is installed")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Output directory (default: ./batch-<JOBS name>)")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Cache directory (default: $QPPSUITE_CACHE or the XDG cache)")
    ] = None,
) -> None:
    """Run every job of JOBS, each as its own `qppsuite run` process; rerun to retry the failed ones.

    Results go to OUTDIR/jobs/<id>/ (result.json, run.sqlite, console.log, stderr.log), and the merged
    database to OUTDIR/batch.sqlite.  Exit status: 0 if every job is ok, 1 if any failed, 130 on Ctrl-C.
    """
    from qppsuite.batch import jobs as jobs_module
    from qppsuite.batch.outdir import default_outdir, locked
    from qppsuite.batch.progress import BatchProgress
    from qppsuite.batch.runner import BatchInterrupted, ray_available, run_batch
    from qppsuite.batch.shipping import image_hash

    if pool and ray_address is not None:
        raise QppsuiteError("--pool and --ray both say where jobs run: use one")

    def hasher(image: str) -> str:
        return image_hash(image, cache_dir)

    if jobs.is_dir():
        if template is None:
            raise jobs_module.JobsFileError(f"{jobs} is a directory: give the job for each file with --template")
        job_list = jobs_module.load_samples(jobs, template, hasher, note=_note)
    elif template is not None:
        raise jobs_module.JobsFileError(f"--template goes with a directory of samples; {jobs} is not one")
    else:
        job_list = jobs_module.load_jobs_file(jobs, hasher)
    out = output if output is not None else default_outdir(jobs)
    if jobs.is_dir() and out.resolve() == jobs.resolve():  # its batch.json would be a sample of the next run
        raise jobs_module.JobsFileError(f"-o {out}: the output directory cannot be the samples directory")
    use_ray = ray_address is not None or (not pool and ray_available())
    count = workers or os.cpu_count() or 1
    progress = BatchProgress(err_console, total=len(job_list), skipped=0)
    interrupted: int | None = None
    with locked(out):  # one batch at a time in OUTDIR, its merge included
        try:
            summary = run_batch(
                job_list, out, progress, workers=count, use_ray=use_ray, ray_address=ray_address, cache=cache_dir
            )
        except BatchInterrupted as stopped:
            summary, interrupted = stopped.summary, stopped.signum
        merged = _merge(out)
    line = _summary_line(summary.skipped, merged)
    if interrupted is not None:
        err_console.print(styled(("interrupted:", "bold red"), f" {line}"), soft_wrap=True)
        raise typer.Exit(128 + interrupted)
    if len(merged.jobs) != merged.count("ok"):
        raise BatchFailed(line, hint=f"the reasons are in {out}/jobs/*/result.json; rerun the command to retry them")
    err_console.print(styled(("qppsuite:", "green"), f" {line}"), soft_wrap=True)


def _note(line: str) -> None:
    err_console.print(styled(("note:", "yellow"), f" {line}"), soft_wrap=True)


def _summary_line(skipped: int, merged: "Merged") -> str:
    """The batch's counts as the merged database has them (earlier invocations' results included), ``skipped``
    of the ok ones complete before this invocation."""
    ok = merged.count("ok")
    counts = f"{len(merged.jobs)} jobs: {ok} ok"
    if min(skipped, ok):  # a skipped job the merge then failed (its database damaged) is not complete
        counts += f" ({min(skipped, ok)} complete already)"
    counts += f", {merged.count('failed')} failed, {merged.count('not run')} not run"
    return f"{counts}; merged database {merged.path}"


def _merge(out: Path) -> "Merged":
    """``qppsuite batch merge``'s work over what is complete ; a job's input it could not read is one line."""
    from qppsuite.batch.merge import merge_batch

    merged = merge_batch(out)
    for problem in merged.problems:
        err_console.print(styled(("error:", "bold red"), f" {problem}"), soft_wrap=True)
    for hint in merged.hints:
        err_console.print(styled((f"hint: {hint}", "dim")), soft_wrap=True)
    return merged
