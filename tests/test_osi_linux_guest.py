"""osi_linux against the guest's own view, on the real Debian image of each kernel version (5.10, 6.1, 6.12).

One boot of a --cmd that prints what the guest itself sees (``ps``,
``/proc/PID/maps``, ``ls -l /proc/PID/fd``, ``lsmod``, ``$$``) while a probe
plugin snapshots osi_linux's answers at the same moments: when the printing
command makes its exit_group (after it printed, before the shell goes on).
Every system call and every syscall return also cross-checks ``current``
against the CPU's own TTBR0, and on_task_change against the next syscall.
"""

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from console_sink import Console

from qppsuite.core.events import SvcEvent
from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.osi_linux import OsiLinux
from qppsuite.plugins.osi_linux.model import OsiFile, OsiMapping, OsiModule, OsiProcess, OsiThread
from qppsuite.session import RunOptions, RunResult, run

pytestmark = pytest.mark.boot

NR_WRITE = 4
NR_EXIT_GROUP = 248
TTBR_BASE_MASK = ~0x3FFF & 0xFFFFFFFF

# The known process is `cat` at the end of a pipe, holding a file, a file it
# writes, a deleted file and the pipe; `head`, `ls`, `ps`, `lsmod` each run
# once, so their exit_group marks the moment they printed.  The shell first
# moves to a directory of its own, which `cat` inherits and the agent has not.
GUEST_CMD = r"""
mkdir -p /tmp/qppsuite-osi-cwd/sub && cd /tmp/qppsuite-osi-cwd/sub
sleep 30 | cat 3< /init 4> /tmp/qppsuite-osi-out.txt 5> /tmp/qppsuite-osi-gone.txt > /dev/null &
pid=$!
while :; do read -r comm < /proc/$pid/comm; [ "$comm" = cat ] && break; sleep 0.05; done
rm /tmp/qppsuite-osi-gone.txt
echo "known=$pid"
echo "=== ps ==="
ps -o pid,ppid,comm
echo "=== maps ==="
head -n 1000 /proc/$pid/maps
echo "=== fds ==="
ls -l /proc/$pid/fd
echo "=== cwd ==="
echo "shell $$ $(pwd)"
echo "known $pid $(readlink /proc/$pid/cwd)"
echo "agent $PPID $(readlink /proc/$PPID/cwd)"
echo "kthreadd 2 $(readlink /proc/2/cwd)"
for ko in $(find /lib/modules -name '*.ko'); do insmod "$ko"; done
echo "=== lsmod ==="
lsmod
echo "=== end ==="
echo "self=$$"
sh -c 'echo "child=$$ parent=$PPID"'
kill $pid
"""


@dataclass
class Snapshot:
    """osi_linux's answers at one exit_group."""

    process: OsiProcess
    processes: list[OsiProcess]
    maps: dict[int, list[OsiMapping]] = field(default_factory=dict)
    fds: dict[int, dict[int, OsiFile]] = field(default_factory=dict)
    fd_names: dict[int, dict[int, OsiFile | None]] = field(default_factory=dict)
    threads: dict[int, list[OsiThread]] = field(default_factory=dict)
    cwds: dict[int, OsiFile | None] = field(default_factory=dict)
    modules: list[OsiModule] = field(default_factory=list)


class OsiProbe(Plugin):
    """Snapshots osi_linux at exit_group, and checks ``current`` at every syscall and its return."""

    name = "osi_probe"
    requires = ("osi_linux",)

    def load(self) -> None:
        self.osi: OsiLinux = self.qpp.get("osi_linux")  # type: ignore[assignment]
        self.qpp.register("core", "on_svc", self.on_svc, owner=self.name)
        self.qpp.register("osi_linux", "on_task_change", self.on_task_change, owner=self.name)
        self.snapshots: list[Snapshot] = []
        self.writes: list[tuple[OsiProcess, bytes]] = []
        self.svc_checked = 0
        self.svc_mismatches: list[tuple[int, int | None]] = []
        self.return_checked = 0
        self.return_mismatches: list[tuple[int, int | None]] = []
        self.changes = 0
        self.change_current_ok = 0
        self.change_errors: list[str] = []
        self.last_new: OsiThread | None = None
        self.next_svc_checked = 0
        self.next_svc_mismatches: list[tuple[OsiThread, OsiThread | None]] = []
        self._return_hooks: dict[int, int] = {}

    def _ttbr_base(self) -> int:
        return int(self.machine.registers.read("ttbr0")) & TTBR_BASE_MASK

    def on_task_change(self, old: OsiThread | None, new: OsiThread) -> None:
        self.changes += 1
        if old is not None and old.task == new.task:
            self.change_errors.append(f"old == new {new}")
        current = self.osi.get_current_thread()
        if current == new:
            self.change_current_ok += 1
        else:
            self.change_errors.append(f"current {current} != new {new}")
        self.last_new = new

    def on_svc(self, event: SvcEvent) -> None:
        cpu = self.machine.registers
        process = self.osi.get_current_process()
        thread = self.osi.get_current_thread()
        if process is None or thread is None:
            return
        if self.last_new is not None:
            self.next_svc_checked += 1
            # the same task; its comm may differ (a kernel worker that exec'd a usermode helper)
            if (self.last_new.task, self.last_new.tid) != (thread.task, thread.tid):
                self.next_svc_mismatches.append((self.last_new, thread))
            self.last_new = None
        self.svc_checked += 1
        if process.asid != self._ttbr_base():
            self.svc_mismatches.append((self._ttbr_base(), process.asid))
        ret = event.pc + (2 if event.thumb else 4)
        if ret not in self._return_hooks and len(self._return_hooks) < 64:
            self._return_hooks[ret] = self.machine.hooks.at_address(ret, self.on_return)
        nr = cpu.read("r7")
        if nr == NR_WRITE:
            count = min(cpu.read("r2"), 256)
            try:
                data = self.machine.memory.read(cpu.read("r1"), count)
            except Exception:
                data = b""
            self.writes.append((process, data))
        elif nr == NR_EXIT_GROUP:
            self.snapshots.append(self._snapshot(process))

    def on_return(self, _pc: int) -> None:
        if self.machine.registers.mode != "usr":
            return
        process = self.osi.get_current_process()
        self.return_checked += 1
        if process is None or process.asid != self._ttbr_base():
            self.return_mismatches.append((self._ttbr_base(), process.asid if process else None))

    def _snapshot(self, process: OsiProcess) -> Snapshot:
        osi = self.osi
        snap = Snapshot(process, osi.get_processes(), modules=osi.get_modules())
        for other in snap.processes:
            snap.cwds[other.pid] = osi.get_cwd(other)
            if other.is_kernel_thread:
                continue
            snap.maps[other.pid] = osi.get_mappings(other)
            fds = osi.get_fds(other)
            snap.fds[other.pid] = fds
            snap.fd_names[other.pid] = {fd: osi.fd_to_filename(other, fd) for fd in [*fds, 99]}
            snap.threads[other.pid] = osi.get_threads(other)
        return snap


@dataclass
class GuestRun:
    result: RunResult
    console: str
    probe: OsiProbe
    known: int

    def section(self, name: str) -> list[str]:
        body = self.console.replace("\r\n", "\n").split(f"=== {name} ===\n", 1)[1]
        return body.split("=== ", 1)[0].splitlines()

    def snapshot_of(self, name: str) -> Snapshot:
        found = [s for s in self.probe.snapshots if s.process.name == name]
        assert len(found) == 1, [s.process.name for s in self.probe.snapshots]
        return found[0]


@pytest.fixture(scope="module")
def guest(suite_image: ImageBundle) -> GuestRun:
    """The run above on each kernel version (conftest's KERNEL_SUITES)."""
    console = Console()
    probes: list[OsiProbe] = []
    result = run(
        RunOptions(cmd=GUEST_CMD, plugins=["osi_linux", OsiProbe], strict=True),  # type: ignore[list-item]
        console,
        image=suite_image,
        on_loaded=lambda qpp: probes.append(qpp.get("osi_probe")),  # type: ignore[arg-type]
    )
    assert result.ok, (result.reason, console.text[-3000:])
    known = int(re.search(r"known=(\d+)", console.text).group(1))  # type: ignore[union-attr]
    return GuestRun(result, console.text, probes[0], known)


def _ps_rows(lines: list[str]) -> list[tuple[int, int, str]]:
    rows = []
    for line in lines[1:]:
        pid, ppid, comm = line.split(None, 2)
        rows.append((int(pid), int(ppid), comm.strip()))
    return rows


def _same_name(ps_name: str, osi: OsiProcess) -> bool:
    """ps shows a workqueue worker as comm + '-'/'+' + its work description (wq_worker_comm), cut to 15."""
    if ps_name == osi.name:
        return True
    return osi.is_kernel_thread and osi.name.startswith("kworker/") and ps_name[: len(osi.name) + 1] in (
        osi.name + "-", osi.name + "+"
    )


def test_process_list_matches_ps(guest: GuestRun) -> None:
    ps = _ps_rows(guest.section("ps"))
    snap = guest.snapshot_of("ps")
    osi = {p.pid: p for p in snap.processes}
    assert len(ps) > 30
    assert sorted(osi) == sorted(pid for pid, _, _ in ps)
    for pid, ppid, name in ps:
        assert osi[pid].ppid == ppid, (pid, osi[pid])
        assert _same_name(name, osi[pid]), (name, osi[pid])
        assert not osi[pid].partial
    # init's name is what ps shows (checked above): "init" on 6.1 and 6.12, "sh" on bullseye (all run /bin/sh /init)
    assert not osi[1].is_kernel_thread and osi[1].asid is not None
    assert osi[2].name == "kthreadd" and osi[2].is_kernel_thread and osi[2].asid is None
    assert snap.process.name == "ps" and snap.process.pid in osi


def test_processes_have_distinct_address_spaces(guest: GuestRun) -> None:
    user = [p for p in guest.snapshot_of("ps").processes if not p.is_kernel_thread]
    assert len({p.asid for p in user}) == len(user)
    assert all(p.asid is not None and p.asid & 0x3FFF == 0 for p in user)


def _maps_rows(lines: list[str]) -> list[tuple[int, int, str, int, str]]:
    rows = []
    for line in lines:
        fields = line.split(None, 5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        rows.append((start, end, fields[1], int(fields[2], 16), fields[5] if len(fields) > 5 else ""))
    return rows


def test_mappings_match_proc_maps(guest: GuestRun) -> None:
    expected = _maps_rows(guest.section("maps"))
    mappings = guest.snapshot_of("head").maps[guest.known]
    got = [(m.start, m.end, m.perms, m.offset, m.path) for m in mappings]
    assert got == expected
    paths = {m.path for m in mappings}
    assert {"[heap]", "[stack]", "[vdso]", "[vvar]", "[sigpage]", "[vectors]"} <= paths
    assert paths & {"/bin/busybox", "/usr/bin/busybox"}  # trixie's /usr is merged
    assert not any(m.partial for m in mappings)


def test_fds_match_proc_fd(guest: GuestRun) -> None:
    expected = {}
    for line in guest.section("fds"):
        found = re.search(r" (\d+) -> (.*)$", line)
        if found:
            expected[int(found.group(1))] = found.group(2)
    snap = guest.snapshot_of("ls")
    files = snap.fds[guest.known]
    assert not any(f.truncated or f.partial for f in files.values())
    fds = {fd: f.path for fd, f in files.items()}
    assert fds == expected
    assert re.fullmatch(r"pipe:\[\d+\]", fds[0])
    assert fds[3] == "/init"
    assert fds[4] == "/tmp/qppsuite-osi-out.txt"
    assert fds[5] == "/tmp/qppsuite-osi-gone.txt (deleted)"
    assert fds[1] == "/dev/null"
    assert snap.fd_names[guest.known] == {**files, 99: None}


def test_working_directories_match_proc_cwd(guest: GuestRun) -> None:
    """``get_cwd`` is ``readlink /proc/PID/cwd``: the shell's after its ``cd`` (which ``pwd`` prints too), the
    known ``cat``'s inherited from it, the agent's and a kernel thread's (init_fs)."""
    said = {}
    for line in guest.section("cwd"):
        who, pid, path = line.split(" ", 2)
        said[who] = (int(pid), path)
    assert said["shell"][1] == said["known"][1] == "/tmp/qppsuite-osi-cwd/sub"
    assert said["known"][0] == guest.known and said["agent"][1] != said["shell"][1]
    cwds = guest.snapshot_of("ls").cwds  # taken before the section printed; no process here moved since
    for pid, path in said.values():
        assert cwds[pid] == OsiFile(path), (pid, cwds[pid], path)


def test_modules_match_lsmod(guest: GuestRun) -> None:
    rows = [line.split() for line in guest.section("lsmod")[1:]]
    expected = {(row[0], int(row[1])) for row in rows}
    modules = guest.snapshot_of("lsmod").modules
    assert expected and {(m.name, m.size) for m in modules} == expected
    assert all(m.base >= 0xBF000000 for m in modules)  # the ARM module area, below PAGE_OFFSET


def test_current_process_at_the_shells_own_write(guest: GuestRun) -> None:
    shell = int(re.search(r"self=(\d+)", guest.console).group(1))  # type: ignore[union-attr]
    child, parent = map(int, re.search(r"child=(\d+) parent=(\d+)", guest.console).groups())  # type: ignore[union-attr]
    writers = {data: process for process, data in guest.probe.writes}
    assert writers[f"self={shell}\n".encode()].pid == shell
    child_process = writers[f"child={child} parent={parent}\n".encode()]
    assert (child_process.pid, child_process.ppid, child_process.name) == (child, shell, "sh")


def test_current_matches_the_cpu_address_space_at_every_syscall_and_return(guest: GuestRun) -> None:
    probe = guest.probe
    assert probe.svc_checked > 500
    assert probe.svc_mismatches == []
    assert probe.return_checked > 200
    assert probe.return_mismatches == []


def test_task_change_reports_the_task_that_then_runs(guest: GuestRun) -> None:
    probe = guest.probe
    assert probe.changes > 100
    assert probe.change_errors == []
    assert probe.change_current_ok == probe.changes
    assert probe.next_svc_checked > 30
    assert probe.next_svc_mismatches == []


def test_single_threaded_processes_list_their_leader(guest: GuestRun) -> None:
    snap = guest.snapshot_of("ls")
    for pid, threads in snap.threads.items():
        assert [(t.tid, t.pid) for t in threads] == [(pid, pid)]


def _other_kernel_profile(image: ImageBundle, path: Path, **symbols: int) -> Path:
    """The image's profile claiming to be for another release (and with ``symbols`` overridden)."""
    assert image.profile_path is not None
    data = json.loads(image.profile_path.read_text())
    data["banner"] = data["banner"].replace(data["release"], "6.1.0-99-armmp")
    data["release"] = "6.1.0-99-armmp"
    data["symbols"].update(symbols)
    path.write_text(json.dumps(data))
    return path


def test_a_profile_for_another_kernel_is_refused_before_the_guest_runs(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    fake = _other_kernel_profile(default_image, tmp_path / "other.json")
    result = run(
        RunOptions(plugins=["osi_linux"], plugin_args={"osi_linux": {"profile": str(fake)}}),
        None,
        image=default_image,
    )
    assert result.reason.kind == "plugin"
    assert default_image.profile_path is not None
    guest = json.loads(default_image.profile_path.read_text())["release"]  # the archive's newest armmp kernel
    assert "6.1.0-99-armmp" in result.reason.message and f"Linux {guest}" in result.reason.message
    assert result.insn_count < 1000


def test_the_banner_is_checked_in_guest_memory_once_the_kernel_is_up(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """With no banner at the load address to compare (as for a zImage), the check waits for the MMU."""
    assert default_image.profile_path is not None
    real = json.loads(default_image.profile_path.read_text())["symbols"]
    fake = _other_kernel_profile(default_image, tmp_path / "other.json", _text=real["linux_banner"] + 0x1000)
    console = Console()
    result = run(
        RunOptions(
            cmd="echo qppsuite-never-7f3a", plugins=["osi_linux"], plugin_args={"osi_linux": {"profile": str(fake)}}
        ),
        console,
        image=default_image,
    )
    assert result.reason.kind == "plugin"
    guest = json.loads(default_image.profile_path.read_text())["release"]
    assert f"is for Linux 6.1.0-99-armmp but the guest runs Linux {guest}" in result.reason.message
    # not at start, but at the first address-space switch: before the command ever ran
    assert result.insn_count > 1000 and "qppsuite-never-7f3a" not in console.text


def test_dump_ps_prints_the_process_tree_from_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from qppsuite.cli import main; main()", "run", "--quiet", "--cmd", "true",
         "--plugins", "osi_linux", "-p", "osi_linux:dump=ps"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines: list[Any] = done.stderr.splitlines()
    # PID PPID S(tate) THREADS NAME: init and kthreadd sleep, the kernel's idle workers show I.
    assert any(re.fullmatch(r"\s*1\s+0\s+S\s+1\s+init\s*", line) for line in lines), done.stderr
    assert any(re.fullmatch(r"\s*2\s+0\s+S\s+1\s+\[kthreadd\]\s*", line) for line in lines), done.stderr
    assert any(re.search(r"\s2\s+S\s+1\s+\[ksoftirqd/0\]", line) for line in lines), done.stderr
    assert any(re.search(r"\s2\s+I\s+1\s+\[rcu_gp\]", line) for line in lines), done.stderr
