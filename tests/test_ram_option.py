"""--ram: the valid range is stated, and every value outside it is one line, before anything boots."""

import subprocess
import sys

import pytest

from qppsuite.core.board import RAM_MAX_MIB, minimum_ram_mib, plan_layout
from qppsuite.errors import GuestError
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, build_machine


@pytest.mark.parametrize("ram", ["0", "-1", "4096", "100000", "lots"])
def test_a_ram_outside_the_board_is_one_line(ram: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "run", f"--ram={ram}", "--cmd", "true"], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: Invalid value for '--ram'") and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 2  # the line and its hint


def test_the_least_ram_for_a_kernel_is_what_the_layout_accepts() -> None:
    kernel, initrd = 20 << 20, 1 << 20
    least = minimum_ram_mib(kernel, initrd)
    plan_layout(least << 20, kernel, initrd)
    with pytest.raises(ValueError, match=r"too small for a 20\.0 MiB kernel and a 1\.0 MiB initrd"):
        plan_layout((least - 16) << 20, kernel, initrd)
    assert minimum_ram_mib(kernel, initrd) <= RAM_MAX_MIB


@pytest.mark.boot  # needs the image, though nothing boots
def test_too_little_ram_for_the_image_says_how_much_it_needs(default_image: ImageBundle) -> None:
    with pytest.raises(GuestError) as refused:
        build_machine(RunOptions(image=default_image.path, ram_mib=128), default_image, None)
    assert refused.value.hint is not None and refused.value.hint.startswith("this kernel and initrd need --ram ")
    with pytest.raises(GuestError, match="this board holds 16 to 3000 MiB"):
        build_machine(RunOptions(image=default_image.path, ram_mib=4096), default_image, None)
