"""Cold boot to power-off of the default image: qppsuite against qemu-system-arm, in one run.

Both emulators boot the image's kernel, initramfs and bootargs and run the
default workload to power-off.  Figures printed:

* the whole process as a user runs it, ``python -m qppsuite run -q --cold IMAGE``
  (interpreter start-up and imports included; ``--cold``, since a run restores the image's ready
  snapshot by default) against ``qemu-system-arm``,
  alternating, ``--pairs`` times: wall and CPU seconds of each pair, and the
  median of the pairs' ratios qppsuite / qemu (target: <= 1.0);
* qppsuite's guest instructions and MIPS (QEMU exposes no instruction count);
* host seconds per phase: *kernel* is from the start to the "Run /init" console
  line, *userspace* is the rest up to power-off (for qppsuite with the guest
  instructions of each phase; the first user-mode system call, from the core's
  ``on_svc`` event, is printed too: a kernel usermode helper runs before /init).

QEMU is timed as a process (launch to exit), its console read as it streams.
For the phases, one more qppsuite boot is timed in-process from ``session.run``
(image open, kernel load, machine set-up, boot, power-off).  The host-side
decompression of the zImage is cached by content hash, so a first run on a
machine pays it once; it is timed separately too.

``--profile N`` adds a cProfile run of a full boot and prints the N functions
with the largest cumulative time (the profiler slows Python code, not the
engine, so the shares of Python functions are overstated).

Usage: ``python bench/boot.py [--image NAME] [--pairs N] [--profile N]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from qppsuite.core.events import SvcEvent
from qppsuite.core.kernel import decompress_zimage
from qppsuite.core.qpp import QPP
from qppsuite.images.bundle import ImageBundle, open_image
from qppsuite.session import DEFAULT_IMAGE, RunOptions, run

INIT_LINE = b"Run /init as init process"
QEMU = "qemu-system-arm"


@dataclass
class Timing:
    """One boot: wall seconds, and where the kernel phase ended."""

    total: float
    init_line: float
    insns: int | None = None
    insns_to_init_line: int | None = None
    first_svc: float | None = None
    insns_to_first_svc: int | None = None


def qemu_command(image: ImageBundle) -> list[str]:
    assert image.initrd_path is not None
    return [
        QEMU, "-M", "virt", "-cpu", "cortex-a15", "-m", "256", "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(image.kernel_path), "-initrd", str(image.initrd_path), "-append", image.bootargs,
    ]  # fmt: skip


def time_qemu(image: ImageBundle) -> Timing:
    """Launch to exit; the "Run /init" line is timestamped as the serial console streams to our pipe."""
    start = time.perf_counter()
    proc = subprocess.Popen(qemu_command(image), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    init_at: float | None = None
    while chunk := os.read(fd, 65536):
        if init_at is None:
            seen = seen[-64:] + chunk
            if INIT_LINE in seen:
                init_at = time.perf_counter() - start
    proc.wait()
    total = time.perf_counter() - start
    if proc.returncode != 0 or init_at is None:
        raise SystemExit(f"{QEMU} failed (exit {proc.returncode}, /init line seen: {init_at is not None})")
    return Timing(total, init_at)


def time_qppsuite(image: ImageBundle) -> Timing:
    """In-process, with two one-shot observers: the "Run /init" line and the first system call."""
    start = time.perf_counter()
    marks: dict[str, tuple[float, int]] = {}
    seen = bytearray()

    def attach(qpp: QPP) -> None:
        machine = qpp.machine

        def on_console(data: bytes) -> None:
            seen.extend(data)
            if INIT_LINE in seen:
                marks["init"] = (time.perf_counter() - start, machine.insn_count)
                qpp.unregister("core", "on_console", on_console)
            del seen[:-64]

        def on_svc(event: SvcEvent) -> None:
            marks["svc"] = (time.perf_counter() - start, event.insn_count)
            qpp.unregister("core", "on_svc", on_svc)

        qpp.register("core", "on_console", on_console, owner="core")
        qpp.register("core", "on_svc", on_svc, owner="core")

    result = run(RunOptions(image=image.path), None, image=image, on_loaded=attach)
    total = time.perf_counter() - start
    if not result.ok or "init" not in marks:
        raise SystemExit(f"qppsuite boot failed: {result.reason.message}")
    svc_at, svc_insns = marks.get("svc", (None, None))
    return Timing(total, marks["init"][0], result.insn_count, marks["init"][1], svc_at, svc_insns)


def time_process(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one process, launch to exit; its output is discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def interpreter_startup() -> float:
    """A fresh Python that imports what ``qppsuite run`` imports, as a user's process pays it."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import qppsuite.cli"], check=True)
    return time.perf_counter() - start


def host_decompression(image: ImageBundle) -> float:
    data = image.kernel_path.read_bytes()
    start = time.perf_counter()
    decompress_zimage(data)
    return time.perf_counter() - start


def profile(image: ImageBundle, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run(RunOptions(image=image.path), None, image=image)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((cumtime, tottime, ncalls, f"{filename.rsplit('/', 2)[-1]}:{line}({func})"))
    rows.sort(reverse=True)
    total = rows[0][0]  # the boot itself (session.run): percentages are of the whole boot
    out = io.StringIO()
    out.write(f"cProfile of one boot: {total:.2f} s under the profiler\n")
    out.write(f"{'cum %':>6} {'cum s':>7} {'self s':>7} {'calls':>10}  function\n")
    for cumtime, tottime, ncalls, name in rows[:top]:
        out.write(f"{100 * cumtime / total:6.1f} {cumtime:7.2f} {tottime:7.2f} {ncalls:10d}  {name}\n")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="image name or path (default: %(default)s)")
    parser.add_argument("--pairs", type=int, default=5, help="whole-process pairs, alternating (default: 5)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also profile a boot, print top N")
    args = parser.parse_args()
    if shutil.which(QEMU) is None:
        raise SystemExit(f"{QEMU} is not installed (apt-get install qemu-system-arm)")
    image = open_image(args.image)

    startup = interpreter_startup()
    unpack = host_decompression(image)
    qemu = time_qemu(image)
    ours = time_qppsuite(image)
    assert ours.insns is not None and ours.insns_to_init_line is not None
    kernel_insns, user_insns = ours.insns_to_init_line, ours.insns - ours.insns_to_init_line
    user_s = ours.total - ours.init_line

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    python = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {load}; Python {python}")
    print(f"image: {image.name} ({image.manifest.get('kernel', {}).get('release', '?')}), bootargs {image.bootargs!r}")
    print(f"{'':24}{'qppsuite':>10}{QEMU:>18}")
    print(f"{'kernel (to Run /init)':24}{ours.init_line:10.2f}{qemu.init_line:18.2f}")
    print(f"{'userspace':24}{ours.total - ours.init_line:10.2f}{qemu.total - qemu.init_line:18.2f}")
    print(f"{'total (s)':24}{ours.total:10.2f}{qemu.total:18.2f}")
    print(
        f"qppsuite guest instructions: kernel {kernel_insns:,} ({kernel_insns / ours.init_line / 1e6:.0f} MIPS), "
        f"userspace {user_insns:,} ({user_insns / user_s / 1e6:.0f} MIPS), "
        f"total {ours.insns:,} ({ours.insns / ours.total / 1e6:.0f} MIPS)"
    )
    print(f"interpreter start-up and imports: {startup:.2f} s")
    ours_cmd = [sys.executable, "-m", "qppsuite", "run", "-q", "--cold", str(image.path)]
    ratios: list[tuple[float, float]] = []
    for pair in range(args.pairs):
        q_wall, q_cpu = time_process(ours_cmd)
        m_wall, m_cpu = time_process(qemu_command(image))
        ratios.append((q_wall / m_wall, q_cpu / m_cpu))
        print(
            f"pair {pair + 1}: qppsuite {q_wall:.2f} s wall, {q_cpu:.2f} s CPU; "
            f"{QEMU} {m_wall:.2f} s wall, {m_cpu:.2f} s CPU; ratio {ratios[-1][0]:.2f} wall, {ratios[-1][1]:.2f} CPU"
        )
    if ratios:
        wall_ratio = statistics.median(r[0] for r in ratios)
        cpu_ratio = statistics.median(r[1] for r in ratios)
        print(f"whole process, median of {len(ratios)} pairs: qppsuite/qemu {wall_ratio:.2f} wall, {cpu_ratio:.2f} CPU")
    if ours.first_svc is not None and ours.insns_to_first_svc is not None:
        print(
            f"first user-mode system call (a kernel usermode helper runs before /init): "
            f"{ours.first_svc:.2f} s, instruction {ours.insns_to_first_svc:,}"
        )
    print(f"host zImage decompression (cached after the first run): {unpack:.2f} s")
    if args.profile:
        print(profile(image, args.profile))


if __name__ == "__main__":
    main()
