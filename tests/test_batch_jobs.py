"""`qppsuite batch`'s jobs: the YAML file and the samples template, their checks, ids and hashes (no guest)."""

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from qppsuite.batch import outdir
from qppsuite.batch.jobs import JobsFileError, load_jobs_file, load_samples, sample_label
from qppsuite.channel import parse_file_spec
from tests.cli_entry import run_main


def _hash(image: str) -> str:
    """An image's content hash as the tests see it: its name, so a changed image name changes every job."""
    return image


def _write(tmp_path: Path, text: str, name: str = "jobs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_apply_to_each_job_and_merge_budget_and_plugin_args(tmp_path: Path) -> None:
    (tmp_path / "probe.sh").write_text("echo probe\n")
    path = _write(
        tmp_path,
        """
defaults:
  plugins: [osi_linux, syscalls, syscalls_logger]
  plugin_args: {syscalls_logger: {only: command}}
  budget: {timeout: 60, instructions: 900000000}
jobs:
  - label: one
    cmd: uname -a
    budget: {instructions: 500000000}
  - label: two
    cmd_file: probe.sh
    plugin_args: {syscalls: {string_limit: 32}}
    files: [probe.sh, {host: probe.sh, guest: /root/p.sh}]
""",
    )
    one, two = load_jobs_file(path, _hash)
    assert one.spec["budget"] == {"timeout": 60, "instructions": 500000000}
    assert two.spec["plugin_args"] == {"syscalls_logger": {"only": "command"}, "syscalls": {"string_limit": 32}}
    assert two.spec["cmd_file"] == str(tmp_path / "probe.sh")
    assert two.spec["files"] == [{"host": str(tmp_path / "probe.sh")}, {"host": str(tmp_path / "probe.sh"),
                                                                         "guest": "/root/p.sh"}]
    args = one.run_arguments(Path("/o/run.sqlite"), Path("/o/console.log"), Path("/o/copied"))
    assert args[0] == "debian-armhf"
    assert args[args.index("--max-insns") + 1] == "500000000"
    assert args[args.index("--timeout") + 1] == "60"
    assert "syscalls_logger:db=/o/run.sqlite" in args
    assert "syscalls_logger:only=command" in args
    assert args[args.index("--cmd") + 1] == "uname -a"


def test_job_ids_are_safe_file_names_and_distinct(tmp_path: Path) -> None:
    path = _write(tmp_path, 'jobs:\n - {label: plain.bin}\n - {label: "../up"}\n - {label: "a b"}\n - {label: "a_b"}\n')
    ids = [job.id for job in load_jobs_file(path, _hash)]
    assert ids[0] == "plain.bin" and ids[3] == "a_b"
    assert len(set(ids)) == 4
    assert all("/" not in i and not i.startswith(".") for i in ids)


def test_sha256_follows_the_files_the_job_reads(tmp_path: Path) -> None:
    sample = tmp_path / "sample"
    sample.write_text("one")
    path = _write(tmp_path, "jobs:\n - {label: x, files: [sample], cmd: sample}\n")
    before = load_jobs_file(path, _hash)[0].sha256
    assert load_jobs_file(path, _hash)[0].sha256 == before
    sample.write_text("two")
    assert load_jobs_file(path, _hash)[0].sha256 != before


def test_template_makes_one_job_per_sample(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("b.sh", "a b.sh"):
        (samples / name).write_text("echo hi\n")
    template = _write(tmp_path, "cmd: sh {sample}\nbudget: {timeout: 30}\n", "job.yaml")
    jobs = load_samples(samples, template, _hash)
    assert [job.label for job in jobs] == ["a b.sh", "b.sh"]
    assert jobs[0].spec["cmd"] == "sh '/root/samples/a b.sh'"
    assert jobs[0].spec["files"] == [{"host": str(samples / "a b.sh"), "guest": "/root/samples/a b.sh"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs: [\n", "not valid YAML at line 2"),
        ("defaults: {}\n", "the top level: 'jobs' is a required property"),
        ("jobs:\n - {label: a, budgett: {}}\n", 'job 1 ("a"): the top level: Additional properties'),
        ("jobs:\n - {label: a}\n - {label: b, budget: {instructions: 0}}\n", 'job 2 ("b"): budget/instructions:'),
        ("jobs:\n - {cmd: true}\n", "job 1: the top level: 'label' is a required property"),
        ("jobs:\n - {label: a, cmd: x, cmd_file: y}\n", "cmd and cmd_file both give the command"),
        ("jobs:\n - {label: a}\n - {label: a}\n", 'job 2 ("a"): label used by an earlier job'),
        ("jobs:\n - {label: a, plugin_args: {syscalls_logger: {db: x.db}}}\n", "the batch names each job's database"),
        ("jobs:\n - {label: a, files: [missing.bin]}\n", "files/0: missing.bin does not exist"),
        ("jobs:\n - {label: a, budget: {instructions: 1.5}}\n", "budget/instructions: 1.5 is not of type 'integer'"),
        # break test of issue 15: each of these was a traceback, or failed job by job at run time
        ('jobs:\n - {label: a, cmd: "echo \\0"}\n', 'job 1 ("a"): cmd: a NUL byte'),
        ("jobs:\n - {label: a, budget: {timeout: .nan}}\n", "budget/timeout: nan is no number of seconds"),
        ("jobs:\n - {label: a, ram: 99999999}\n", "ram: 99999999 is greater than the maximum of 3000"),
        ("jobs:\n - {label: a, copy_out: [/a/x, /b/x]}\n", "copy_out: /a/x and /b/x would both be copied/x"),
        ("jobs:\n - {label: a, files: ['~nosuchuser/x']}\n", "files/0: ~nosuchuser/x: "),
        ("[" * 100_000, "nested too deeply to be a jobs file"),
        ("jobs:\n - {label: " + "x" * 300 + "}\n", "is too long"),
    ],
)
def test_a_bad_jobs_file_is_one_line_naming_the_job_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path, _hash)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    code, stderr = run_main(["batch", str(path), "--pool", "-o", str(tmp_path / "out")])
    assert code == 1
    assert stderr.startswith("error: ") and message in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{dir}"], "is a directory: give the job for each file with --template"),
        (["{file}", "--template", "{file}"], "--template goes with a directory of samples"),
        (["{file}", "--pool", "--ray", "localhost:1"], "--pool and --ray both say where jobs run"),
        (["{missing}"], "cannot read it: No such file or directory"),
    ],
)
def test_bad_batch_arguments_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    jobs = _write(tmp_path, "jobs:\n - {label: a}\n")
    names = {"dir": str(tmp_path), "file": str(jobs), "missing": str(tmp_path / "none.yaml")}
    code, stderr = run_main(["batch", *(a.format(**names) for a in args)])
    assert code != 0
    assert message in stderr and "Traceback" not in stderr
    assert stderr.count("\n") <= 2  # the line and its hint


def test_a_sample_name_that_is_not_utf8_is_a_label_and_a_guest_name_with_its_bytes_escaped(tmp_path: Path) -> None:
    """Break test of issue 15: a sample named b"bad\\xff" was a UnicodeEncodeError traceback."""
    import os

    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / os.fsdecode(b"bad\xff")).write_text("echo hi\n")
    template = _write(tmp_path, "cmd: sh {sample}\n", "job.yaml")
    (job,) = load_samples(samples, template, _hash)
    assert job.label == "bad\\xff" and job.spec["cmd"] == "sh '/root/samples/bad\\xff'"
    assert job.spec["files"][0]["host"] == str(samples / os.fsdecode(b"bad\xff"))


def test_the_output_directory_cannot_be_the_samples_directory(tmp_path: Path) -> None:
    """Break test of issue 15: with -o SAMPLES, batch.json and batch.sqlite became samples of the next run."""
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "a.sh").write_text("echo hi\n")
    template = _write(tmp_path, "cmd: sh {sample}\n", "job.yaml")
    code, stderr = run_main(["batch", str(samples), "--template", str(template), "--pool", "-o", str(samples)])
    assert code == 1 and stderr.startswith("error: -o ") and "cannot be the samples directory" in stderr, stderr
    assert sorted(p.name for p in samples.iterdir()) == ["a.sh"]


def test_the_ram_limit_is_the_board_s() -> None:
    from qppsuite.batch.jobs import JOB_SCHEMA
    from qppsuite.core.board import RAM_MAX_MIB

    assert json.loads(JOB_SCHEMA.read_text())["properties"]["ram"]["maximum"] == RAM_MAX_MIB


def test_complete_means_ok_for_the_same_sha256(tmp_path: Path) -> None:
    directory = tmp_path / "job"
    directory.mkdir()
    assert not outdir.is_complete(directory, "s1")
    outdir.write_result(directory, {"status": "failed", "sha256": "s1"})
    assert not outdir.is_complete(directory, "s1")
    outdir.write_result(directory, {"status": "ok", "sha256": "s1"})
    assert outdir.is_complete(directory, "s1")
    assert not outdir.is_complete(directory, "s2")
    (directory / outdir.RESULT_FILE).write_text("[1")
    assert not outdir.is_complete(directory, "s1")
    assert json.loads(json.dumps(outdir.read_result(directory))) is None


# -- hostile inputs (issue 15, a break test's defects) ---------------------------------------------------------
def test_a_template_runs_regular_files_only_and_says_what_it_skipped(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "real").write_text("echo hi\n")
    secret = tmp_path / "secret"
    secret.write_text("not a sample")
    (samples / "shadowlink").symlink_to(secret)  # a link may point anywhere on the host: no sample
    (samples / "sub").mkdir()
    os.mkfifo(samples / "pipe")
    template = _write(tmp_path, "cmd: sh {sample}\n", "job.yaml")
    notes: list[str] = []
    jobs = load_samples(samples, template, _hash, note=notes.append)
    assert [job.label for job in jobs] == ["real"]
    assert notes == [f'{samples}: skipped 3 entries that are not regular files (links, directories, ...): '
                     '"pipe", "shadowlink", "sub"']


def test_a_template_with_a_label_is_refused(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "a").write_text("x")
    template = _write(tmp_path, "label: mine\ncmd: 'true'\n", "job.yaml")
    with pytest.raises(JobsFileError, match="label: each sample's job is labelled by its file name"):
        load_samples(samples, template, _hash)


def test_sample_names_that_show_alike_make_distinct_labels(tmp_path: Path) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / os.fsdecode(b"x\xff")).write_text("one")  # x and the byte 0xff
    (samples / "x\\xff").write_text("two")  # the four characters
    template = _write(tmp_path, "cmd: sh {sample}\n", "job.yaml")
    jobs = load_samples(samples, template, _hash)
    assert sorted(job.label for job in jobs) == ["x\\\\xff", "x\\xff"]
    assert len({job.id for job in jobs}) == 2


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("copy_out: ['/root/a:/tmp/x/e']", "copy_out: /root/a:/tmp/x/e: a guest path with ':' cannot be copied out"),
        ("cmd_file: dir", "cmd_file: dir is not a regular file"),
        ("files: [fifo]", "files/0: fifo is not a regular file or a directory"),
        ("files: [/dev/zero]", "files/0: /dev/zero is not a regular file or a directory"),
        ("image: ./plain", "image: ./plain is not a directory"),
    ],
)
def test_host_inputs_that_are_not_what_the_field_takes_are_one_line(tmp_path: Path, entry: str, said: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "plain").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    path = _write(tmp_path, f"jobs:\n - label: a\n   cmd: 'true'\n   {entry}\n".replace("cmd: 'true'\n   cmd_file",
                                                                                         "cmd_file"))
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path, _hash)
    assert str(raised.value) == f'{path}: job 1 ("a"): {said}'


def test_a_jobs_file_that_is_no_regular_file_or_too_large_is_one_line(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    for path in (tmp_path / "fifo.yaml", Path("/dev/zero"), tmp_path):
        with pytest.raises(JobsFileError, match="not a regular file"):
            load_jobs_file(path, _hash)
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as stream:
        stream.truncate(65 << 20)  # sparse: nothing read
    with pytest.raises(JobsFileError, match="more than a jobs file may hold"):
        load_jobs_file(huge, _hash)


def _refused_files(path: Path, said: str) -> None:
    """The jobs file at ``path`` (job 1, "a") is refused in one line for its first ``files`` entry: ``said``."""
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path, _hash)
    assert str(raised.value).startswith(f'{path}: job 1 ("a"): files/0: {said}')
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("name", "said"),
    [
        (os.fsdecode(b"\xff\xfe"), '"{d}/\\\\xff\\\\xfe": a name that is not UTF-8 or holds a control character'),
        ("a\nb", '"{d}/a\\nb": a name that is not UTF-8 or holds a control character'),
        ("end ", '"{d}/end ": a file name ending in white space'),
    ],
)
def test_a_files_directory_entry_the_guest_path_cannot_take_is_one_line(tmp_path: Path, name: str, said: str) -> None:
    """Break test of issue 15: such a name failed the job in the run, at every rerun, instead of at job check."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / name).write_bytes(b"x")
    _refused_files(_write(tmp_path, "jobs:\n - {label: a, files: [tree]}\n"), said.format(d=tmp_path / "tree"))


def test_a_sample_name_the_guest_path_cannot_take_is_escaped(tmp_path: Path) -> None:
    """Break test of issue 15: a sample named ``a<newline>b`` (or ending in a blank) failed at run time, at
    every rerun: its guest name now shows those characters as \\xNN, as bytes that are not UTF-8 are."""
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("a\nb", "tab\tx ", " lead"):
        (samples / name).write_text("echo hi\n")
    template = _write(tmp_path, "cmd: sh {sample}\n", "job.yaml")
    guests = {job.label: job.spec["files"][0]["guest"] for job in load_samples(samples, template, _hash)}
    assert guests == {
        "a\nb": "/root/samples/a\\x0ab",
        "tab\tx ": "/root/samples/tab\\x09x\\x20",
        " lead": "/root/samples/ lead",
    }
    for guest in guests.values():
        parse_file_spec(f"{template}:{guest}")  # what the run checks: no newline, no blank at the end


def test_a_moved_project_or_corpus_keeps_its_jobs_sha256(tmp_path: Path) -> None:
    """The job's identity holds its host files by content and guest name, not by host path: a project or a
    samples directory copied elsewhere resumes instead of running again."""
    first = tmp_path / "one"
    (first / "samples").mkdir(parents=True)
    (first / "samples" / "s1").write_text("sample")
    (first / "probe.sh").write_text("echo hi\n")
    (first / "tree").mkdir()
    (first / "tree" / "f").write_text("f")
    _write(first, "jobs:\n - {label: a, cmd_file: probe.sh, files: [probe.sh, tree, {host: tree, guest: /t}]}\n")
    _write(first, "cmd: sh {sample}\n", "job.yaml")
    second = tmp_path / "two"
    shutil.copytree(first, second)

    def hashes(where: Path) -> list[str]:
        jobs = load_jobs_file(where / "jobs.yaml", _hash) + load_samples(where / "samples", where / "job.yaml", _hash)
        return [job.sha256 for job in jobs]

    assert hashes(second) == hashes(first)
    (second / "tree" / "f").write_text("changed")
    assert hashes(second)[0] != hashes(first)[0]


def test_the_mode_the_guest_gets_is_in_the_sha256(tmp_path: Path) -> None:
    """Break test of issue 15: after ``chmod +x`` of a sample (or of a file in a ``files:`` directory), the
    rerun said "complete already" and kept the run that failed with Permission denied."""
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "x").write_text("#!/bin/sh\necho hi\n")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_text("f")
    (tmp_path / "probe.sh").write_text("echo hi\n")
    template = _write(tmp_path, "cmd: '{sample}'\n", "job.yaml")
    path = _write(tmp_path, "jobs:\n - {label: a, files: [tree]}\n - {label: b, cmd_file: probe.sh}\n")

    def hashes() -> list[str]:
        return [job.sha256 for job in load_samples(samples, template, _hash) + load_jobs_file(path, _hash)]

    before = hashes()
    (samples / "x").chmod(0o755)
    (tmp_path / "tree" / "f").chmod(0o755)
    (tmp_path / "probe.sh").chmod(0o755)  # a script is read as text: its mode is not the guest's
    after = hashes()
    assert after[0] != before[0] and after[1] != before[1] and after[2] == before[2]


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda d: (d / "pw").symlink_to("/etc/passwd"), '"{d}/pw": a symbolic link (it may point anywhere'),
        (lambda d: (d / "loop").symlink_to(".."), '"{d}/loop": a symbolic link (it may point anywhere'),
        (lambda d: (d / "sub").mkdir() or (d / "sub" / "z").symlink_to("/dev/zero"), '"{d}/sub/z": a symbolic link'),
        (lambda d: os.mkfifo(d / "fifo"), '"{d}/fifo": a FIFO, socket or device: only regular files and directories'),
    ],
)
def test_a_files_directory_holding_a_link_or_a_fifo_is_one_line(tmp_path: Path, make: Any, said: str) -> None:
    """Break test of issue 15: links in a ``files:`` directory were followed (the host's /etc/passwd, the
    project's parent went into the guest) and a FIFO was dropped silently."""
    tree = tmp_path / "d"
    tree.mkdir()
    (tree / "f1").write_text("1")
    make(tree)
    _refused_files(_write(tmp_path, "jobs:\n - {label: a, cmd: 'true', files: [d]}\n"), said.format(d=tree))


def test_a_files_entry_that_is_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").write_text("x")
    (tmp_path / "link").symlink_to("real")
    path = _write(tmp_path, "jobs:\n - {label: a, cmd: 'true', files: [link]}\n")
    with pytest.raises(JobsFileError, match=r'files/0: .*/link": a symbolic link .*: name what it points to'):
        load_jobs_file(path, _hash)


def test_sample_in_a_template_s_script_is_one_note(tmp_path: Path) -> None:
    """Break test of issue 15: ``{sample}`` in a template's cmd_file stayed as written with nothing said."""
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "s1").write_text("echo hi\n")
    (tmp_path / "probe.sh").write_text("sh {sample}\n")
    (tmp_path / "plain.sh").write_text('for s in /root/samples/*; do sh "$s"; done\n')
    notes: list[str] = []
    template = _write(tmp_path, "cmd_file: probe.sh\n", "job.yaml")
    (job,) = load_samples(samples, template, _hash, note=notes.append)
    assert notes == [f"{template}: cmd_file: {{sample}} is replaced in cmd only, and stays as written in the script,"
                     " which runs with no arguments: the sample is the file in /root/samples/"]
    assert job.spec["cmd_file"] == str(tmp_path / "probe.sh")
    notes.clear()
    load_samples(samples, _write(tmp_path, "cmd_file: plain.sh\n", "job.yaml"), _hash, note=notes.append)
    assert notes == []


@pytest.mark.parametrize(
    ("guest", "said"),
    [("relative", "a guest path must be absolute"), ("/root/x\\n", "a guest path must be absolute"),
     ("/root/x ", "may not begin or end with white space")],
)
def test_a_files_guest_path_the_run_would_refuse_is_refused_at_job_check(tmp_path: Path, guest: str,
                                                                          said: str) -> None:
    """Third break test of issue 15: such a path passed the job check and failed the job at every rerun."""
    (tmp_path / "f").write_text("x")
    path = _write(tmp_path, f'jobs:\n - {{label: a, files: [{{host: f, guest: "{guest}"}}]}}\n')
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path, _hash)
    assert str(raised.value).startswith(f'{path}: job 1 ("a"): files/0/guest: --file ') and said in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("where", ["label", "cmd", "plugin_args"])
def test_a_lone_surrogate_anywhere_in_a_job_is_one_line(tmp_path: Path, where: str) -> None:
    """Third break test of issue 15: `label: "a\\udcffb"` (YAML's escape) ended in a traceback."""
    job = {"label": "a", "cmd": "true"}
    if where == "plugin_args":
        job["plugin_args"] = {"coverage": {"process": "a\udcffb"}}  # type: ignore[assignment]
    else:
        job[where] = "a\udcffb"
    path = tmp_path / "jobs.yaml"
    path.write_text("jobs:\n - " + json.dumps(job) + "\n")
    with pytest.raises(JobsFileError) as raised:
        load_jobs_file(path, _hash)
    assert "not text (a lone surrogate)" in str(raised.value) and "\n" not in str(raised.value)


def test_a_sample_label_longer_than_a_label_is_cut_and_stays_its_own() -> None:
    """Third break test of issue 15: a 100-byte name of 0xff bytes made a 400-character label, and the whole
    template batch was refused for it."""
    long_a, long_b = os.fsdecode(b"\xff" * 100), os.fsdecode(b"\xff" * 99 + b"\xfe")
    label_a, label_b = sample_label(long_a), sample_label(long_b)
    assert len(label_a) == len(label_b) == 255 and label_a != label_b
    assert label_a.startswith("\\xff\\xff") and "…" in label_a
    assert sample_label("short\\name") == "short\\\\name"


def test_a_sample_whose_guest_name_grows_past_255_bytes_is_cut_and_stays_its_own(tmp_path: Path) -> None:
    """Third break test of issue 15: a name of 120 bytes 0x01 became a 480-byte guest name, which no guest file
    system takes: the job failed at every rerun."""
    samples = tmp_path / "samples"
    samples.mkdir()
    for last in (b"\x01", b"\x02"):
        (samples / os.fsdecode(b"\x01" * 119 + last)).write_bytes(b"x")
    template = _write(tmp_path, "cmd: 'true'\n", "job.yaml")
    files = [job.spec["files"][0] for job in load_samples(samples, template, _hash)]
    assert len({item["guest"] for item in files}) == 2
    for item in files:
        name = item["guest"].rsplit("/", 1)[1]
        assert len(name.encode()) <= 255 and name.startswith("\\x01\\x01")
        parse_file_spec(f"{item['host']}:{item['guest']}")  # what the run checks
