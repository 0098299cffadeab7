"""Debian trixie's 6.12 armmp kernel on the machine: built with ``image build --suite trixie``, booted from
power-on, its timers and idle loop working (issue 12: the first ``sleep 0.1`` never returned)."""

import pytest
from console_sink import Console

from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, run


@pytest.mark.boot
def test_trixie_kernel_boots_and_sleep_returns(trixie_image: ImageBundle) -> None:
    """`sleep 0.1` and poweroff's own sleep return: the timer IRQ is taken in 6.12's idle loop, which unmasks
    IRQs only in default_idle_call(), hundreds of instructions after the WFI (docs/engine.md, "Time").

    Before the fix the run spun in the idle loop at a few MIPS until the wall-clock budget; the whole run
    now takes about 640 M instructions, 0.1 s of them asleep (which costs none)."""
    assert trixie_image.manifest["suite"] == "trixie"
    release = trixie_image.manifest["kernel"]["release"]
    assert release.startswith("6.12.") and release.endswith("+deb13-armmp")
    console = Console()
    options = RunOptions(
        cmd="uname -r; sleep 0.1; echo slept; cat /proc/uptime",
        cold=True,
        plugins=("syscalls",),
        timeout_seconds=180,
        max_insns=1_500_000_000,
    )
    result = run(options, console, image=trixie_image)
    assert result.reason.kind == "poweroff", (result.reason, console.text[-2000:])
    after_init = console.text.split("Run /init as init process", 1)[1].replace("\r", "").splitlines()
    assert after_init[1:3] == [release, "slept"], after_init[:6]
    assert float(after_init[3].split()[0]) >= 0.1  # the guest's own uptime saw the sleep
    assert "QPPSUITE-EXIT 0" in after_init
