"""osi_linux refuses at load, with a one-line message, when it has no usable profile."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from qppsuite.core.events import CoreEvents, CorePlugin
from qppsuite.core.qpp import QPP, RunContext
from qppsuite.errors import PluginError
from qppsuite.profiles.profile import PROFILE_FORMAT


def _load(context: RunContext, args: dict[str, str] | None = None) -> None:
    machine = SimpleNamespace(events=CoreEvents())
    with QPP(None, context=context) as qpp:
        qpp.add_builtin(CorePlugin(machine))  # type: ignore[arg-type]
        qpp.load_all(["osi_linux"], {"osi_linux": args} if args else {})


def test_no_profile_names_the_image_and_the_argument() -> None:
    with pytest.raises(PluginError, match="image 'bare' carries none") as err:
        _load(RunContext(image="bare"))
    hint = err.value.hint
    assert hint is not None and "osi_linux:profile=" in hint and "\n" not in hint
    # a kernel without debug info: how to get either kind of profile
    assert "Volatility 3 ISF" in hint and "qppsuite profile build" in hint


def test_a_missing_profile_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="does not exist"):
        _load(RunContext(), {"profile": str(tmp_path / "nope.json")})


def test_a_profile_lacking_a_needed_member_says_which(tmp_path: Path) -> None:
    profile = {
        "format": PROFILE_FORMAT, "banner": "Linux version 6.1.0-x", "release": "6.1.0-x", "arch": "arm",
        "pointer_size": 4, "endian": "little", "symbols": {"init_task": 0xC1000000}, "types": {},
        "enums": {}, "constants": {"PAGE_OFFSET": 0xC0000000},
    }
    path = tmp_path / "thin.json"
    path.write_text(json.dumps(profile))
    with pytest.raises(PluginError, match=r"cannot use profile .*thin\.json: profile has no") as err:
        _load(RunContext(profile=path))
    assert "\n" not in str(err.value)


@pytest.mark.boot
def test_the_real_profile_resolves_every_offset(default_image: object) -> None:
    from qppsuite.plugins.osi_linux.layout import KernelLayout
    from qppsuite.profiles.profile import KernelProfile

    path = getattr(default_image, "profile_path", None)
    assert path is not None
    layout = KernelLayout.from_profile(KernelProfile.load(path))
    assert layout.page_offset == 0xC0000000 and layout.comm_len == 16
    assert layout.maple is not None and layout.maple.range64_slots == 32 and layout.maple.arange64_slots == 21
    assert layout.entry_task is not None and layout.banner.startswith("Linux version 6.1.0")
