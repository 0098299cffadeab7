"""A profile file is hostile input: whatever it holds, loading it for osi_linux ends in one ProfileError line or works.

"Loading it for osi_linux" is what the plugin does at load: ``KernelProfile.load``
then ``KernelLayout.from_profile``.  Hostile files are random bytes, random JSON,
and the default image's real profile (and its ISF form) with one field replaced
by a hostile value, so the damage lands where a real profile has data.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.osi_linux.layout import KernelLayout
from qppsuite.profiles.profile import KernelProfile, ProfileError, to_isf

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
HOSTILE = st.one_of(
    st.sampled_from([-1, -(2**63), 2**64, 200_000_000, 1 << 24, 0, 1.5, float("nan"), "0x10", "", None, True, [], {}]),
    JSON,
)


def _load_for_osi(path: Path) -> None:
    """What osi_linux does with its profile at load; only ProfileError may come out, in one line."""
    try:
        KernelLayout.from_profile(KernelProfile.load(path))
    except ProfileError as err:
        assert "\n" not in str(err)


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path into a JSON document (list items are left alone: profiles hold none that matter)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from _paths(inner, (*prefix, key))


def _replaced(document: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def _renamed(document: dict[str, Any], path: tuple[str, ...], name: str) -> dict[str, Any]:
    copy = json.loads(json.dumps(document))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[name] = node.pop(path[-1])
    return copy


@pytest.fixture(scope="module")
def real_profile(default_image: ImageBundle) -> dict[str, Any]:
    assert default_image.profile_path is not None
    data: dict[str, Any] = json.loads(default_image.profile_path.read_text())
    return data


def _osi_paths(document: dict[str, Any]) -> list[tuple[str, ...]]:
    """Key paths of a document, those osi_linux reads first (task_struct, symbols...), then a sample of the rest."""
    every = list(_paths(document))
    hot = [p for p in every if "task_struct" in p or p[0] in ("symbols", "constants", "enums", "format", "banner")]
    return hot + every[:: max(1, len(every) // 200)]


@pytest.mark.boot
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_hostile_field_in_the_real_profile_gives_one_line(
    real_profile: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(_osi_paths(real_profile)))
    file = tmp_path_factory.mktemp("p") / "profile.json"
    file.write_text(json.dumps(_replaced(real_profile, path, data.draw(HOSTILE))))
    _load_for_osi(file)


@pytest.mark.boot
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_key_renamed_to_hostile_text_in_the_real_profile_gives_one_line(
    real_profile: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = data.draw(st.sampled_from(_osi_paths(real_profile)))
    name = data.draw(st.sampled_from(["\n", "a\nb", "\x1b[31m", "[/]", ""]) | st.text(max_size=8))
    file = tmp_path_factory.mktemp("p") / "profile.json"
    file.write_text(json.dumps(_renamed(real_profile, path, name)))
    _load_for_osi(file)


@pytest.mark.boot
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_hostile_field_in_the_real_profile_as_isf_gives_one_line(
    real_profile: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    isf = to_isf(real_profile)
    path = data.draw(st.sampled_from(_osi_paths(isf)))
    file = tmp_path_factory.mktemp("p") / "isf.json"
    file.write_text(json.dumps(_replaced(isf, path, data.draw(HOSTILE))))
    _load_for_osi(file)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=JSON, shape=st.sampled_from(["profile", "isf", "bare"]))
def test_random_json_gives_one_line(tmp_path_factory: pytest.TempPathFactory, document: object, shape: str) -> None:
    if shape == "profile":
        document = {"format": "qppsuite-profile/1", "types": document, "symbols": document, "enums": document}
    elif shape == "isf":
        document = dict.fromkeys(("metadata", "base_types", "user_types", "enums", "symbols"), document)
    file = tmp_path_factory.mktemp("p") / "profile.json"
    file.write_text(json.dumps(document))
    with pytest.raises(ProfileError):
        _load_for_osi_strict(file)


def _load_for_osi_strict(path: Path) -> None:
    """As :func:`_load_for_osi`, for documents that cannot be a usable profile."""
    try:
        KernelLayout.from_profile(KernelProfile.load(path))
    except ProfileError as err:
        assert "\n" not in str(err)
        raise


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_random_bytes_give_one_line(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    file = tmp_path_factory.mktemp("p") / "profile.json"
    file.write_bytes(raw)
    with pytest.raises(ProfileError):
        _load_for_osi_strict(file)


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000, '{"format": "qppsuite-profile/1", "types": ' + "[" * 5000 + "]" * 5000 + "}", "9" * 5000],
    ids=["deep-json", "deep-types", "huge-number"],
)
def test_pathological_json_gives_one_line(tmp_path: Path, text: str) -> None:
    file = tmp_path / "profile.json"
    file.write_text(text)
    with pytest.raises(ProfileError):
        _load_for_osi_strict(file)


@pytest.mark.boot
def test_an_anonymous_member_containing_its_own_type_is_refused(real_profile: dict[str, Any], tmp_path: Path) -> None:
    isf = to_isf(real_profile)
    isf["user_types"]["task_struct"]["fields"]["loop"] = {
        "offset": 0, "anonymous": True, "type": {"kind": "struct", "name": "task_struct"}
    }
    file = tmp_path / "isf.json"
    file.write_text(json.dumps(isf))
    with pytest.raises(ProfileError, match=r"task_struct\.loop contains its own type"):
        _load_for_osi_strict(file)


@pytest.mark.boot
@pytest.mark.parametrize(
    ("member", "key", "value", "message"),
    [
        ("pid", "offset", -4, r"types/task_struct/members/pid/offset: -4 is less than the minimum of 0"),
        ("comm", "size", 200_000_000, r"types/task_struct/members/comm/size: 200000000 is greater than the maximum"),
        ("comm", "size", 200_000, r"task_struct\.comm \(offset \d+, size 200000\) ends beyond task_struct's own"),
        ("comm", "size", 64, r"task_struct\.comm is 64 bytes; Linux's is TASK_COMM_LEN, 16"),
        ("tasks", "offset", 1 << 20, r"task_struct\.tasks \(offset 1048576, size 8\) ends beyond task_struct's own"),
    ],
)
def test_an_absurd_offset_or_size_is_refused_at_load_naming_the_field(
    real_profile: dict[str, Any], tmp_path: Path, member: str, key: str, value: int, message: str
) -> None:
    file = tmp_path / "profile.json"
    file.write_text(json.dumps(_replaced(real_profile, ("types", "task_struct", "members", member, key), value)))
    with pytest.raises(ProfileError, match=message) as err:
        _load_for_osi_strict(file)
    assert "\n" not in str(err.value)


@pytest.mark.boot
def test_a_profile_s_schema_check_is_remembered_by_its_bytes_and_a_changed_file_is_checked_again(
    real_profile: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """jsonschema's import and check cost 0.17 s at every run with osi_linux: a file already found good is not
    checked again; one byte changed is a new file."""
    from qppsuite.profiles import profile as module

    monkeypatch.setenv("QPPSUITE_CACHE", str(tmp_path / "cache"))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(real_profile))
    release = KernelProfile.load(good).release  # checked, and remembered
    assert len(list((tmp_path / "cache" / "profiles-checked").iterdir())) == 1
    calls: list[object] = []
    monkeypatch.setattr(module, "schema_problem", lambda *args: calls.append(args) or None)
    again = tmp_path / "again.json"
    again.write_bytes(good.read_bytes())
    assert KernelProfile.load(again).release == release and calls == []
    damaged = tmp_path / "damaged.json"
    damaged.write_text(json.dumps(_replaced(real_profile, ("format",), "nonsense")))
    monkeypatch.undo()
    monkeypatch.setenv("QPPSUITE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ProfileError, match="damaged at"):
        KernelProfile.load(damaged)
