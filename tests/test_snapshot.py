"""Snapshots: a machine restored from a file goes on exactly as the machine that saved it; bad files are one line.

The run is saved mid-boot (in the kernel, with timers armed and interrupts in
flight), written to a file and read back into a freshly built machine.  Both
machines then run to power-off: the console output after the save and the
final instruction count must be identical.
"""

import copy
import dataclasses
import zipfile
from pathlib import Path

import pytest

from qppsuite import session
from qppsuite.core import snapshot
from qppsuite.core.snapshot import SnapshotError
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, build_machine

pytestmark = pytest.mark.boot

SAVE_AT = 150_000_000  # in the kernel, before init: devices, timers and the IRQ line all busy


def saved(default_image: ImageBundle, path: Path) -> tuple[bytes, int]:
    """Boot to SAVE_AT, write a snapshot to ``path``, run on to power-off: (console after the save, final count)."""
    console = bytearray()
    machine = build_machine(RunOptions(max_insns=SAVE_AT), default_image, console.extend)
    assert machine.run().kind == "max_insns"
    snapshot.write(machine.snapshot({"image": default_image.name}), path)
    mark = len(console)
    machine.config.max_insns = None
    machine.restore(snapshot.read(path))  # restoring onto itself changes nothing either
    reason = machine.run()
    assert reason.ok, reason.message
    return bytes(console[mark:]), machine.insn_count


def test_a_restored_machine_runs_on_exactly_as_the_one_that_saved_it(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    path = tmp_path / "mid-boot.snapshot"
    after, final = saved(default_image, path)
    snap = snapshot.read(path)
    assert snap.insn_count == SAVE_AT and snap.key == {"image": default_image.name}
    assert path.stat().st_size < 40 << 20  # 256 MiB of RAM, mostly zero

    console = bytearray()
    machine = build_machine(RunOptions(), default_image, console.extend)
    machine.restore(snap)
    assert machine.insn_count == SAVE_AT
    reason = machine.run()
    assert reason.ok, reason.message
    assert b"QPPSUITE-EXIT 0" in console
    assert bytes(console) == after
    assert machine.insn_count == final


def test_a_damaged_or_edited_snapshot_is_one_line(default_image: ImageBundle, tmp_path: Path) -> None:
    path = tmp_path / "good.snapshot"
    saved(default_image, path)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.snapshot"
    truncated.write_bytes(data[: len(data) // 2])
    edited = tmp_path / "edited.snapshot"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(edited, "w") as target:
        for name in source.namelist():
            content = source.read(name)
            target.writestr(name, content.replace(b'"retired"', b'"retirex"') if name == "state.json" else content)
    not_zip = tmp_path / "text.snapshot"
    not_zip.write_text("[bold]not a snapshot\x1b[31m")
    for bad, why in (
        (truncated, "damaged"),
        (edited, "state.json does not match its recorded sha256"),
        (not_zip, "damaged"),
        (tmp_path / "missing.snapshot", "does not exist"),
    ):
        with pytest.raises(SnapshotError, match=why) as caught:
            snapshot.read(bad)
        assert "\n" not in str(caught.value)

    other = build_machine(RunOptions(ram_mib=512), default_image, None)
    with pytest.raises(SnapshotError, match="256 MiB of RAM; this one has 512 MiB"):
        other.restore(snapshot.read(path))


@pytest.fixture(scope="module")
def good_snapshot(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> snapshot.Snapshot:
    path = tmp_path_factory.mktemp("edited") / "good.snapshot"
    saved(default_image, path)
    return snapshot.read(path)


@pytest.mark.parametrize(
    ("part", "field", "value"),
    [
        ("clock", "ns_per_insn", 0),  # a ZeroDivisionError traceback once
        ("clock", "retired", "abc"),  # a TypeError traceback once
        ("clock", "retired", -1),  # a run that went on, from instruction -1, once
        ("clock", "skipped_ns", 2.5),
        ("loop", "last_ttbr0", "x"),
        ("loop", "rootfs_watched", 1),
    ],
)
@pytest.mark.boot
def test_a_snapshot_whose_state_was_edited_is_refused_in_one_line(
    default_image: ImageBundle, good_snapshot: snapshot.Snapshot, part: str, field: str, value: object
) -> None:
    """An edit that keeps the members' sha256 right (made by hand) still may not crash or mislead a run."""
    good = good_snapshot
    state = copy.deepcopy(good.state)
    state[part][field] = value
    machine = build_machine(RunOptions(), default_image, None)
    with pytest.raises(SnapshotError, match=f"does not fit this machine: .*{field}") as caught:
        machine.restore(dataclasses.replace(good, state=state))
    assert "\n" not in str(caught.value)


@pytest.mark.boot
def test_a_restored_machines_ram_is_exactly_the_snapshots_whatever_the_boot_loader_wrote(
    default_image: ImageBundle,
) -> None:
    """restore() zeroes RAM by dropping its pages: the kernel and initrd a fresh machine holds must not stay."""
    assert session.run(session.RunOptions(cmd="true", warm=True), None, image=default_image).ok  # the snapshot
    key = session.ready_snapshot_key(session.RunOptions(), default_image, default_image.bootargs)
    snap = snapshot.read(session.ready_snapshot_path(session.RunOptions(), default_image, key))
    machine = session.build_machine(session.RunOptions(warm=True), default_image, None)
    zero = next(number for number in range(snap.ram_size // 4096) if number not in set(snap.pages))
    machine.phys.write(machine.phys.base + zero * 4096, b"left over" * 400)  # a page the snapshot has as zeros
    machine.restore(snap)
    pages, data = snapshot.nonzero_pages(machine.phys.read(machine.phys.base, snap.ram_size))
    assert list(pages) == list(snap.pages) and data == bytes(snap.ram)
