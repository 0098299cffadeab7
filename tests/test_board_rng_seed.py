"""Regression: the board passes a fixed /chosen/rng-seed, as QEMU's virt board does.

Without it, the guest's CRNG is not ready in userspace and the board has no
cycle counter, so ``head /dev/urandom`` spun in try_to_generate_entropy() for
more than 4 G instructions and the run ended as a hang (found by the
determinism test; qemu-system-arm returned at once).
"""

import fdt
import pytest

from qppsuite.core import board
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, run


def test_device_tree_carries_the_fixed_rng_seed() -> None:
    layout = board.plan_layout(256 << 20, 8 << 20, 1 << 20, 0x208000)
    chosen = fdt.parse_dtb(board.device_tree(layout, "console=ttyAMA0")).get_node("chosen")
    seed = chosen.get_property("rng-seed")
    assert seed is not None
    # The parser guesses a type from the length: 32 bytes come back as eight big-endian cells.
    raw = bytes(seed.data) if isinstance(seed, fdt.PropBytes) else b"".join(w.to_bytes(4, "big") for w in seed.data)
    assert raw == board.RNG_SEED and len(raw) == 32


@pytest.mark.boot
def test_reading_urandom_in_userspace_does_not_stall(default_image: ImageBundle) -> None:
    console = bytearray()
    options = RunOptions(image=default_image.path, cmd="head -c 16 /dev/urandom | od -A n -t x1", max_insns=600_000_000)
    result = run(options, console.extend, image=default_image)
    assert result.reason.kind == "poweroff", result.reason
    assert b"random: crng init done" in console.split(b"Run /init")[0]
    assert b"QPPSUITE-EXIT 0" in console
