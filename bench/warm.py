"""A run from the snapshot of the booted guest against a cold qemu-system-arm boot: whole processes.

``python -m qppsuite run -q --cmd true`` (interpreter start-up, snapshot read and restore, the
command through the channel, power-off) against ``qemu-system-arm`` booting the same kernel and initramfs
to power-off, alternating, ``--pairs`` times; a first run makes the snapshot if there is none.
Printed: each pair's wall and CPU seconds and the median of the pairs' ratios (issue 11's target: at
most 0.3), and the snapshot's size on disk (at most 40 MB).

Usage: ``python bench/warm.py [--pairs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from boot import DEFAULT_IMAGE, qemu_command, time_process

from qppsuite.images.bundle import open_image
from qppsuite.session import RunOptions, ready_snapshot_key, ready_snapshot_path

WARM = [sys.executable, "-m", "qppsuite", "run", "-q", "--cmd", "true"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    options = parser.parse_args()
    image = open_image(DEFAULT_IMAGE)
    time_process(WARM)  # makes the snapshot if there is none, and warms the page cache
    path = ready_snapshot_path(RunOptions(), image, ready_snapshot_key(RunOptions(), image, image.bootargs))
    print(f"snapshot {path.name}: {path.stat().st_size / 1e6:.1f} MB on disk")
    walls, cpus = [], []
    for pair in range(1, options.pairs + 1):
        warm_wall, warm_cpu = time_process(WARM)
        qemu_wall, qemu_cpu = time_process(qemu_command(image))
        walls.append(warm_wall / qemu_wall)
        cpus.append(warm_cpu / qemu_cpu)
        print(
            f"pair {pair}: warm qppsuite {warm_wall:.2f} s wall, {warm_cpu:.2f} s CPU; cold qemu-system-arm "
            f"{qemu_wall:.2f} s wall, {qemu_cpu:.2f} s CPU; ratio {walls[-1]:.2f} wall, {cpus[-1]:.2f} CPU"
        )
    print(f"median of {options.pairs} pairs: {statistics.median(walls):.2f} wall, {statistics.median(cpus):.2f} CPU")


if __name__ == "__main__":
    main()
