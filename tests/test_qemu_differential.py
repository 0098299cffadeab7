"""Differential check: the default workload's userspace output in qppsuite against qemu-system-arm, on the
default (bookworm) image and on trixie's.

Both machines boot the image's own kernel, initramfs and bootargs; QEMU's
``-M virt -cpu cortex-a15`` is the reference.  The userspace part of the
console (from "Run /init" to the ``QPPSUITE-EXIT`` line) must match line for
line once the rules below have normalised what legitimately differs between
the two boards and between two runs.  Each rule is named and says why its
difference is legitimate; anything else that differs is an emulator
divergence, to be root-caused (tools/lockstep.py, docs/debugging.md).

The rules themselves are tested without QEMU: they must erase the legitimate
differences and nothing else.
"""

import difflib
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from host_tools import host_tool

from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, run

QEMU = "qemu-system-arm"
START_MARKER = "Run /init as init process"
EXIT_LINE = re.compile(r"^QPPSUITE-EXIT \d+$")

Lines = list[str]


@dataclass(frozen=True)
class Rule:
    """One legitimate difference and how to erase it."""

    name: str
    why: str
    apply: Callable[[Lines], Lines]


def substitute(pattern: str, replacement: str) -> Callable[[Lines], Lines]:
    regex = re.compile(pattern)
    return lambda lines: [regex.sub(replacement, line) for line in lines]


def drop(pattern: str) -> Callable[[Lines], Lines]:
    regex = re.compile(pattern)
    return lambda lines: [line for line in lines if not regex.search(line)]


PS_LINE = re.compile(r"^(\s*)(\d+)(\s+)(\d+)(\s+\S.*)$")


def renumber_user_pids(lines: Lines) -> Lines:
    """Replace user pids (>1) in ``ps`` lines and ``pid=N`` markers by their rank among the ps listing's pids."""
    pids = sorted({int(m[2]) for line in lines if (m := PS_LINE.match(line)) and int(m[2]) > 2 and m[4] != "2"})
    rank = {pid: f"#{i}" for i, pid in enumerate(pids, 1)}

    def name(pid: str) -> str:
        return rank.get(int(pid), pid)

    out = []
    for line in lines:
        m = PS_LINE.match(line)
        if m:
            line = f"{m[1]}{name(m[2])}{m[3]}{name(m[4])}{m[5]}"
        out.append(re.sub(r"\bpid=(\d+)", lambda p: f"pid={name(p[1])}", line))
    return out


RULES: tuple[Rule, ...] = (
    Rule(
        "printk-timestamp",
        "kernel log time is each board's clock: host time in QEMU, instruction-derived virtual time in qppsuite",
        substitute(r"^\[\s*\d+\.\d+\] ", "[time] "),
    ),
    Rule(
        "status-ctxt-switches",
        "how often `cat /proc/self/status` was switched out depends on where timer interrupts fall",
        substitute(r"^((?:non)?voluntary_ctxt_switches:\s*)\d+$", r"\1N"),
    ),
    Rule(
        "status-vmpte",
        "Linux allocates one PTE page per 2 MiB region touched; ASLR puts the stack and the vdso in one region or "
        "two, so VmPTE is 6 or 8 kB (it varies between two QEMU runs too)",
        substitute(r"^(VmPTE:\s*)\d+ kB$", r"\1N kB"),
    ),
    Rule(
        "status-sigq-limit",
        "the SigQ limit is RLIMIT_SIGPENDING = max_threads/2, computed from total RAM pages, which depend on the "
        "board's memory layout (reserved areas for kernel, initrd, DTB: 'Memory: 221708K' in QEMU, 222748K here)",
        substitute(r"^(SigQ:\s*\d+/)\d+$", r"\1N"),
    ),
    Rule(
        "interrupts-device-lines",
        "numbered /proc/interrupts lines list each board's devices (QEMU: arch_timer, pl031, pl061; qppsuite: "
        "sp804), and their counts depend on timing; the IPI and Err lines are still compared",
        drop(r"^\s*\d+:\s+\d+\s"),
    ),
    Rule(
        "cpuinfo-bogomips",
        "BogoMIPS comes from the delay timer: 2 x the 62.5 MHz arch timer in QEMU, a loop calibrated against "
        "virtual time in qppsuite (no arch timer)",
        substitute(r"^(BogoMIPS\s*:\s*)\d+\.\d+$", r"\1N"),
    ),
    Rule(
        "cpuinfo-evtstrm",
        "the 'evtstrm' hwcap is the arch timer's event stream; only QEMU's board has an arch timer (Unicorn's "
        "generic timer never interrupts, so qppsuite's device tree has none)",
        substitute(r"^(Features\s*:.*?) evtstrm\b", r"\1"),
    ),
    Rule(
        "cpuinfo-cpu-revision",
        "the two emulators model different Cortex-A15 silicon revisions (QEMU 7.2 r4p0, MIDR 0x414fc0f0; Unicorn "
        "2.1.4 r2p1, MIDR 0x412fc0f1); implementer, architecture and part are still compared",
        lambda lines: substitute(r"^(CPU (?:variant|revision)\s*:\s*).*$", r"\1N")(
            substitute(r"^(model name\s*:.*) rev \d+ ", r"\1 rev N ")(lines)
        ),
    ),
    Rule(
        "ps-kernel-threads",
        "kernel threads (children of kthreadd, pid 2) differ by board drivers, and a kworker's name shows the "
        "workqueue it last ran, which depends on timing",
        drop(r"^\s*\d+\s+2\s+\S"),
    ),
    Rule(
        "user-pids",
        "the workload polls with `sleep 0.05` (wait_for_exec, the nc listener check) a timing-dependent number of "
        "times, each poll a fork, so later pids shift (two QEMU runs printed 105..109 and 107..111); pids become "
        "their rank, so who is whose parent is still compared",
        renumber_user_pids,
    ),
    Rule(
        "status-pids",
        "`cat /proc/self/status` shows its own pid and its shell's, which shift with the same timing-dependent "
        "number of polling forks as user-pids (seen with Debian's 6.1.0-57 kernel: QEMU 95/80, qppsuite 94/79); "
        "the process tree itself is compared through ps",
        substitute(r"^((?:Tgid|Pid|PPid|NStgid|NSpid):\s*)\d+$", r"\1N"),
    ),
    Rule(
        "maps-aslr",
        "heap, stack, sigpage, vvar and vdso bases are randomised (ASLR): QEMU seeds the guest's RNG from the host "
        "each run, qppsuite from a fixed seed; the executable's own mappings are still compared",
        substitute(r"^[0-9a-f]{8}-[0-9a-f]{8}( .*\[(?:heap|stack|sigpage|vvar|vdso)\])$", r"ASLR-ASLR\1"),
    ),
    Rule(
        "ls-dates",
        "QEMU's virt board has a PL031 RTC holding host time; qppsuite's board has no RTC, so its clock starts "
        "at the epoch (Jan 1 00:00)",
        substitute(
            r"^([-bcdlps][-rwxsStT]{9}\s+\d+\s+\S+\s+\S+\s+\d+) \w{3} [ \d]\d (?:\d\d:\d\d| \d{4}) ", r"\1 DATE "
        ),
    ),
)


def normalise(lines: Lines) -> Lines:
    for rule in RULES:
        lines = rule.apply(lines)
    return lines


def userspace(console: str, who: str) -> Lines:
    """The console from the "Run /init" line through the ``QPPSUITE-EXIT`` line."""
    lines = console.replace("\r", "").split("\n")
    start = next((i for i, line in enumerate(lines) if START_MARKER in line), None)
    if start is None:
        pytest.fail(f"{who}: no '{START_MARKER}' line; console ends with {lines[-5:]!r}")
    end = next((i for i in range(start, len(lines)) if EXIT_LINE.match(lines[i])), None)
    if end is None:
        pytest.fail(f"{who}: no 'QPPSUITE-EXIT' line after /init; console ends with {lines[-5:]!r}")
    return lines[start : end + 1]


# --- the rules without QEMU (fast) -------------------------------------------------------------

PS_QEMU = """PID   PPID  COMMAND
    1     0 init
    2     0 kthreadd
    7     2 kworker/0:0-rcu
   72     2 kworker/0:2-eve
   79     1 sh
  107    79 sleep
  109    79 sleep
  111    79 ps
=== qppsuite: maps pid=109 ===
bef38000-bef39000 r-xp 00000000 00:00 0          [sigpage]
00010000-00145000 r-xp 00000000 00:02 9          /bin/busybox"""

PS_QPP = """PID   PPID  COMMAND
    1     0 init
    2     0 kthreadd
    7     2 kworker/0:0-eve
   79     1 sh
  105    79 sleep
  106    79 sleep
  109    79 ps
=== qppsuite: maps pid=106 ===
bef42000-bef43000 r-xp 00000000 00:00 0          [sigpage]
00010000-00145000 r-xp 00000000 00:02 9          /bin/busybox"""


def test_rules_erase_board_and_timing_differences() -> None:
    assert normalise(PS_QEMU.splitlines()) == normalise(PS_QPP.splitlines())
    qemu = ["[    0.784268] Run /init as init process", "VmPTE:\t       8 kB", "SigQ:\t0/1732", "BogoMIPS\t: 125.00"]
    qpp = ["[    0.740952] Run /init as init process", "VmPTE:\t       6 kB", "SigQ:\t0/1740", "BogoMIPS\t: 995.32"]
    assert normalise(qemu) == normalise(qpp)
    qemu_cpu = ["model name\t: ARMv7 Processor rev 0 (v7l)", "CPU variant\t: 0x4", "CPU revision\t: 0"]
    qpp_cpu = ["model name\t: ARMv7 Processor rev 1 (v7l)", "CPU variant\t: 0x2", "CPU revision\t: 1"]
    assert normalise(qemu_cpu) == normalise(qpp_cpu)
    assert normalise(["Features\t: half thumb vfpd32 lpae evtstrm "]) == normalise(
        ["Features\t: half thumb vfpd32 lpae "]
    )
    date = "lrwx------    1 root     root            64 {} 1 -> /dev/console"
    assert normalise([date.format("Nov 25 16:10")]) == normalise([date.format("Jan  1 00:00")])


@pytest.mark.parametrize(
    ("qemu_line", "qpp_line"),
    [
        ("child exited with 7", "child exited with 0"),
        (
            "00010000-00145000 r-xp 00000000 00:02 9          /bin/busybox",
            "00010000-00146000 r-xp 00000000 00:02 9 /bin/busybox",
        ),
        ("SigQ:\t0/1732", "SigQ:\t1/1732"),
        ("Features\t: half thumb vfpd32 lpae evtstrm", "Features\t: half thumb lpae"),
        ("CPU part\t: 0xc0f", "CPU part\t: 0xc09"),
        ("IPI2:          0  Rescheduling interrupts", "IPI2:          3  Rescheduling interrupts"),
        ("[    0.1] Unable to handle kernel paging request", "[    0.1] Run /init as init process"),
    ],
)
def test_rules_keep_real_differences(qemu_line: str, qpp_line: str) -> None:
    assert normalise([qemu_line]) != normalise([qpp_line])


def test_pid_renumbering_keeps_parenthood() -> None:
    """A process reparented (or a missing child) must still show after renumbering."""
    reparented = PS_QPP.replace("  106    79 sleep", "  106     1 sleep")
    assert normalise(PS_QEMU.splitlines()) != normalise(reparented.splitlines())
    missing = PS_QPP.replace("  106    79 sleep\n", "")
    assert normalise(PS_QEMU.splitlines()) != normalise(missing.splitlines())


# --- the differential boot ------------------------------------------------------------------------


def qemu_binary() -> str:
    """qemu-system-arm, installed through apt when missing (as root); skip only when that is impossible."""
    return host_tool(QEMU, "qemu-system-arm")


def boot_qemu(image: ImageBundle, serial_log: Path) -> str:
    assert image.initrd_path is not None
    command = [
        qemu_binary(), "-M", "virt", "-cpu", "cortex-a15", "-m", "256", "-nographic", "-no-reboot",
        # No NIC: the default virtio NIC needs an option ROM (efi-virtio.rom) the minimal install lacks.
        "-nic", "none", "-monitor", "none", "-serial", f"file:{serial_log}",
        "-kernel", str(image.kernel_path), "-initrd", str(image.initrd_path), "-append", image.bootargs,
    ]  # fmt: skip
    subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=300, check=True)
    return serial_log.read_text(errors="replace")


def boot_qppsuite(image: ImageBundle) -> str:
    console = bytearray()
    result = run(RunOptions(image=image.path), console.extend, image=image)
    assert result.reason.kind == "poweroff", result.reason
    return console.decode(errors="replace")


def compare_with_qemu(image: ImageBundle, tmp_path: Path) -> None:
    """The default workload's normalised userspace console, booted in qemu-system-arm and in qppsuite: equal."""
    reference = normalise(userspace(boot_qemu(image, tmp_path / "qemu-serial.log"), "qemu-system-arm"))
    ours = normalise(userspace(boot_qppsuite(image), "qppsuite"))
    assert reference[-1] == "QPPSUITE-EXIT 0", reference[-1]
    if ours != reference:
        diff = "\n".join(difflib.unified_diff(reference, ours, "qemu-system-arm", "qppsuite", lineterm="", n=2))
        pytest.fail(f"userspace output diverges from qemu-system-arm after normalisation:\n{diff}")


@pytest.mark.qemu
@pytest.mark.boot
def test_default_workload_matches_qemu(default_image: ImageBundle, tmp_path: Path) -> None:
    compare_with_qemu(default_image, tmp_path)


@pytest.mark.qemu
@pytest.mark.boot
def test_default_workload_matches_qemu_on_trixie(trixie_image: ImageBundle, tmp_path: Path) -> None:
    """The same on Debian trixie's 6.12 kernel and busybox (``image build --suite trixie``)."""
    compare_with_qemu(trixie_image, tmp_path)
