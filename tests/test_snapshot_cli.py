"""Snapshots as a user meets them: `qppsuite run` restores the booted guest by default, `snapshot save NAME` /
`run --from NAME` start runs after a command of the user's, and every bad snapshot or name is one line.

The runs go through the real CLI (a `python -m qppsuite` process) on the default image, with a cache of
their own (the image files linked from the user's cache), so the snapshots they make and damage are theirs.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from qppsuite.core.qpp import QPP, RunContext
from qppsuite.core.snapshot import SnapshotError
from qppsuite.images.bundle import ImageBundle, cache_dir
from qppsuite.session import RunOptions, ready_snapshot_key, ready_snapshot_path, run, snapshot_path

SUMMARY = re.compile(r"^qppsuite: guest powered off after ([\d,]+) instructions in [\d.]+ s \(\d+ MIPS\)$", re.M)


def qppsuite(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``qppsuite ARGS --cache-dir CACHE``, as a shell runs it (stdout: the guest console)."""
    return subprocess.run(
        [sys.executable, "-m", "qppsuite", *args, "--cache-dir", str(cache)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str], *words: str, code: int = 2) -> None:
    """The command failed with exit status ``code`` and one error line holding ``words`` (and perhaps a hint)."""
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    error, *rest = done.stderr.strip().splitlines()
    assert error.startswith("error: ") and all(word in error for word in words), error
    assert rest == [] or (len(rest) == 1 and rest[0].startswith("hint: ")), rest


def private_cache(root: Path) -> Path:
    """A cache with the user's images and unpacked kernels (linked) and no snapshot."""
    root.mkdir()
    for part in ("images", "kernels"):
        (cache_dir() / part).mkdir(parents=True, exist_ok=True)
        (root / part).symlink_to(cache_dir() / part)
    return root


@pytest.fixture(scope="module")
def cache(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's cache, with its ready snapshot: a copy of the user's, or made by a first run."""
    root = private_cache(tmp_path_factory.mktemp("snapshots") / "cache")
    key = ready_snapshot_key(RunOptions(), default_image, default_image.bootargs)
    theirs, ours = (ready_snapshot_path(RunOptions(cache=where), default_image, key) for where in (None, root))
    if theirs.is_file():
        ours.parent.mkdir(parents=True)
        shutil.copyfile(theirs, ours)
    made = run(RunOptions(cmd="true", warm=True, cache=root), None, image=default_image)
    assert made.ok, made.reason.message
    return root


def test_a_snapshot_name_is_a_plain_file_name() -> None:
    image: Any = type("Image", (), {"name": "img"})()
    assert snapshot_path(Path("/c"), image, "tools-1.2_x") == Path("/c/snapshots/img/tools-1.2_x.snapshot")
    for bad in ("a/b", "..", ".hidden", "-opt", "", "tab\tname", "nul\0", "new\nline", "é", "x" * 65, "a\\b"):
        with pytest.raises(SnapshotError, match="snapshot name"):
            snapshot_path(Path("/c"), image, bad)


@pytest.mark.boot
def test_run_boots_once_to_make_the_snapshot_then_restores_it_with_the_same_output_and_summary(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    cache = private_cache(tmp_path / "cache")
    command = "echo from-the-guest; exit 3"
    booted = qppsuite(cache, "run", "--kernel-log", "--cmd", command)  # the kernel's lines: left out without it
    [ready] = (cache / "snapshots" / "debian-armhf").glob("ready-*.snapshot")
    made = ready.stat().st_mtime_ns
    restored = qppsuite(cache, "run", "--kernel-log", "--cmd", command)
    for done in (booted, restored):
        assert done.returncode == 0, done.stderr  # the guest powered off; the command's status is on the console
        assert "from-the-guest\n" in done.stdout and "the command ended: exit status 3 ──" in done.stderr
    assert "Linux version" in booted.stdout and "Linux version" not in restored.stdout  # the boot is not re-run
    counts = [SUMMARY.search(done.stderr) for done in (booted, restored)]
    assert all(counts), (booted.stderr, restored.stderr)
    assert counts[0][1] == counts[1][1]  # type: ignore[index]  # the same run, instruction for instruction
    assert ready.stat().st_mtime_ns == made  # restored, not made again


@pytest.mark.boot
def test_the_run_context_names_a_restored_start_and_a_boot_has_none(default_image: ImageBundle, cache: Path) -> None:
    contexts: list[RunContext] = []

    def note(qpp: QPP) -> None:
        contexts.append(qpp.context)

    for cold in (False, True):
        result = run(
            RunOptions(cmd="true", warm=True, cold=cold, cache=cache), None, image=default_image, on_loaded=note
        )
        assert result.ok, result.reason.message
    restored, booted = contexts
    [ready] = (cache / "snapshots" / default_image.name).glob("ready-*.snapshot")
    assert restored.snapshot == ready.stem
    assert booted.snapshot is None
    assert restored.image == default_image.name and restored.profile == default_image.profile_path
    assert restored.options["cmd"] == "true" and restored.plugins == ("core",)


@pytest.mark.boot
def test_max_insns_counts_from_power_on_and_a_budget_before_the_snapshot_boots_from_power_on(
    default_image: ImageBundle, cache: Path, tmp_path: Path
) -> None:
    def started(budget: int, where: Path) -> tuple[str | None, str, int]:
        result = run(RunOptions(cmd="true", warm=True, max_insns=budget, cache=where), None, image=default_image)
        return result.start, result.reason.kind, result.insn_count

    # Before the ready point: a boot from power-on with /init running the command (no channel), to the budget.
    assert started(100_000_000, cache) == (None, "max_insns", 100_000_000)
    # Past it: restored, and the budget still counts the boot the snapshot holds.
    whole = run(RunOptions(cmd="true", warm=True, cache=cache), None, image=default_image)
    assert started(whole.insn_count, cache) == ("restored", "poweroff", whole.insn_count)
    assert started(whole.insn_count - 1, cache) == ("restored", "max_insns", whole.insn_count - 1)
    # With no snapshot yet, a budget makes one first, so the run is the one it is with the snapshot.
    empty = private_cache(tmp_path / "empty")
    assert started(whole.insn_count - 1, empty) == ("restored", "max_insns", whole.insn_count - 1)
    assert list((empty / "snapshots" / default_image.name).glob("ready-*.snapshot"))


@pytest.mark.boot
def test_an_image_without_an_initramfs_boots_as_before_and_files_for_it_are_one_line(
    default_image: ImageBundle, cache: Path, tmp_path: Path
) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    manifest = json.loads((default_image.path / "manifest.json").read_text())
    kernel = manifest["kernel"]["file"]
    manifest["files"] = {kernel: manifest["files"][kernel]}
    for part in ("initrd", "profile"):
        manifest.pop(part, None)
    (bare / "manifest.json").write_text(json.dumps(manifest))
    (bare / kernel).symlink_to(default_image.path / kernel)
    done = qppsuite(cache, "run", "-q", str(bare), "--max-insns", "20000000")
    one_line_error(done, "max_insns", "20,000,000")  # the kernel ran from power-on, as it always did
    (tmp_path / "f").write_text("x")
    one_line_error(qppsuite(cache, "run", "-q", str(bare), "--file", str(tmp_path / "f")), "no initramfs", code=1)


@pytest.mark.boot
def test_save_then_run_from_a_named_snapshot_many_times(cache: Path, tmp_path: Path) -> None:
    # over 16 KB, so it goes in by hypercall (qpp-recv), as a user's real tools do
    (tmp_path / "tool").write_text("#!/bin/sh\necho tool says $1\nexit 0\n" + "# padding\n" * 2000)
    (tmp_path / "tool").chmod(0o755)
    saved = qppsuite(
        cache, "snapshot", "save", "configured", "--file", str(tmp_path / "tool"), "--cmd", "echo x > /root/conf"
    )
    assert saved.returncode == 0, saved.stderr
    assert "saved snapshot configured at instruction" in saved.stderr
    path = cache / "snapshots" / "debian-armhf" / "configured.snapshot"
    assert path.is_file()
    runs = [qppsuite(cache, "run", "--from", "configured", "--cmd", "tool hi; cat /root/conf") for _ in range(2)]
    for done in runs:
        assert done.returncode == 0, done.stderr
        assert "tool says hi\nx\n" in done.stdout and "exit status 0 ──" in done.stderr
        assert "Linux version" not in done.stdout
        assert "guest powered off from snapshot configured after" in done.stderr
    assert runs[0].stderr.split(" after ")[1].split(" in ")[0] == runs[1].stderr.split(" after ")[1].split(" in ")[0]
    chained = qppsuite(cache, "snapshot", "save", "more", "--from", "configured", "--cmd", "echo y >> /root/conf")
    assert chained.returncode == 0, chained.stderr
    done = qppsuite(cache, "run", "--from", "more", "--cmd", "cat /root/conf")
    assert "x\ny\n" in done.stdout and "exit status 0 ──" in done.stderr, done.stderr

    before = path.read_bytes()
    one_line_error(qppsuite(cache, "snapshot", "save", "configured", "--cmd", "true"), "'configured'", "exists")
    assert path.read_bytes() == before  # never overwritten
    one_line_error(qppsuite(cache, "snapshot", "save", "failed", "--cmd", "false"), "status 1", "not saved")
    assert not (cache / "snapshots" / "debian-armhf" / "failed.snapshot").exists()
    one_line_error(qppsuite(cache, "run", "--from", "configured", "--max-insns", "1000"), "past --max-insns")
    one_line_error(qppsuite(cache, "run", "--from", "configured", "--cold"), "--cold and --from")

    listed = qppsuite(cache, "snapshot", "list")
    assert listed.returncode == 0 and "configured" in listed.stdout and "more" in listed.stdout
    assert qppsuite(cache, "snapshot", "delete", "more").returncode == 0
    assert not (cache / "snapshots" / "debian-armhf" / "more.snapshot").exists()
    one_line_error(qppsuite(cache, "snapshot", "delete", "more"), "no snapshot 'more'")
    one_line_error(qppsuite(cache, "run", "--from", "more"), "no snapshot 'more'")


def _rewrite(path: Path, edit: Any) -> None:
    """Rewrite the snapshot's meta.json through ``edit(meta)``, every other member as it was."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(members["meta.json"])
    edit(meta)
    members["meta.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.boot
def test_a_named_snapshot_of_another_version_image_or_ram_or_damaged_is_one_line(cache: Path) -> None:
    saved = qppsuite(cache, "snapshot", "save", "base", "-q", "--cmd", "true")
    assert saved.returncode == 0, saved.stderr
    base = cache / "snapshots" / "debian-armhf" / "base.snapshot"
    one_line_error(qppsuite(cache, "run", "--from", "base", "--ram", "512"), "--ram 256", "--ram 512")
    one_line_error(qppsuite(cache, "run", "--from", "base", "--bootargs", "quiet"), "kernel command line")

    cases = {
        "version": (lambda meta: meta["key"].update(qppsuite="0.0.1"), "made by qppsuite 0.0.1"),
        "image": (lambda meta: meta["key"]["image_files"].update({"vmlinuz": "0" * 64}), "other files of image"),
    }
    for name, (edit, words) in cases.items():
        other = base.with_name(f"{name}.snapshot")
        other.write_bytes(base.read_bytes())
        _rewrite(other, edit)
        one_line_error(qppsuite(cache, "run", "--from", name), f"snapshot '{name}' cannot start this run", words)

    truncated = base.with_name("truncated.snapshot")
    truncated.write_bytes(base.read_bytes()[: base.stat().st_size // 2])
    one_line_error(qppsuite(cache, "run", "--from", "truncated"), "truncated.snapshot is damaged")
    edited = bytearray(base.read_bytes())
    with zipfile.ZipFile(base) as archive:
        ram = archive.getinfo("ram.bin")
    middle = ram.header_offset + 30 + len(ram.filename) + ram.compress_size // 2
    edited[middle] ^= 0xFF
    base.with_name("edited.snapshot").write_bytes(edited)
    one_line_error(qppsuite(cache, "run", "--from", "edited"), "edited.snapshot is damaged")
    for args in (["run", "--from", "../base"], ["snapshot", "save", "a/b"], ["snapshot", "save", "ready-x"]):
        one_line_error(qppsuite(cache, *args), "snapshot name")


@pytest.mark.boot
def test_a_damaged_ready_snapshot_is_made_again_and_says_so_in_one_line(cache: Path) -> None:
    assert qppsuite(cache, "run", "-q", "--cmd", "true").returncode == 0
    [ready] = (cache / "snapshots" / "debian-armhf").glob("ready-*.snapshot")
    ready.write_bytes(ready.read_bytes()[:-1000])
    done = qppsuite(cache, "run", "--cmd", "echo still-runs")
    assert done.returncode == 0, done.stderr
    assert "still-runs" in done.stdout and "Traceback" not in done.stderr
    [notice] = [line for line in done.stderr.splitlines() if "booting to make it again" in line]
    assert notice.startswith("qppsuite: snapshot ") and "is damaged" in notice
    quiet = qppsuite(cache, "run", "-q", "--cmd", "true")
    assert quiet.returncode == 0 and quiet.stderr == ""  # made again: restored without a word
    os.truncate(ready, 10)
    quiet = qppsuite(cache, "run", "-q", "--cmd", "true")
    assert quiet.returncode == 0 and quiet.stderr == ""  # -q: rebuilt silently


@pytest.mark.boot
def test_a_cache_where_the_snapshot_cannot_be_written_is_one_line(default_image: ImageBundle, tmp_path: Path) -> None:
    cache = private_cache(tmp_path / "cache")
    (cache / "snapshots").write_text("a file where the directory should be")  # root may write anywhere else
    one_line_error(qppsuite(cache, "run", "-q", "--cmd", "true"), "cannot write snapshot", "Not a directory")


@pytest.mark.boot
def test_making_the_ready_snapshot_drops_the_ready_snapshots_no_run_can_use_again(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """After a qppsuite upgrade or an image rebuild the old ready snapshot would stay in the cache for good: the
    boot that makes the new one deletes it, and keeps what another run may still use (another --ram) and the
    user's named snapshots."""
    root = private_cache(tmp_path / "cache")
    assert qppsuite(root, "run", "-q", "--cmd", "true").returncode == 0
    where = root / "snapshots" / "debian-armhf"
    [ready] = where.glob("ready-*.snapshot")
    edits = {
        "ready-version": lambda meta: meta["key"].update(qppsuite="0.0.1"),
        "ready-image": lambda meta: meta["key"]["image_files"].update({"vmlinuz": "0" * 64}),
        "ready-agent": lambda meta: meta["key"].update(agent="0" * 64),
        "ready-ram": lambda meta: meta["key"].update(ram_mib=512),
        "named-old": lambda meta: meta["key"].update(qppsuite="0.0.1"),
    }
    for name, edit in edits.items():
        copy = where / f"{name}.snapshot"
        shutil.copyfile(ready, copy)
        _rewrite(copy, edit)
    (where / "ready-damaged.snapshot").write_bytes(b"not a snapshot")
    ready.unlink()
    assert qppsuite(root, "run", "-q", "--cmd", "true").returncode == 0
    left = sorted(path.name for path in where.glob("*.snapshot"))
    assert left == sorted(["named-old.snapshot", "ready-ram.snapshot", ready.name]), left
