"""Plugin arguments: ``--plugins`` and ``-p plugin:key=value`` parsing, typing, and every refusal."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qppsuite.core.qpp import QPP, Arg, Plugin, PluginArgs, bind_args, parse_plugin_args, parse_plugin_list
from qppsuite.errors import PluginError


class Tunable(Plugin):
    name = "tunable"
    args: ClassVar[Any] = {
        "dump": Arg(str, "ps", help="what to dump", choices=("ps", "maps", "none")),
        "every": Arg(int, 100, help="instructions between samples"),
        "verbose": Arg(bool, False),
        "ratio": Arg(float, 0.5),
        "out": Arg(Path, None, help="output file"),
    }

    def load(self) -> None:
        self.seen_at_load = dict(vars(self.args))


class Plain(Plugin):
    name = "plain"


def test_parse_plugin_list_splits_commas_and_repeats_in_order() -> None:
    assert parse_plugin_list(["osi_linux, syscalls", "./my plugin.py,", " syscalls_logger "]) == [
        "osi_linux",
        "syscalls",
        "./my plugin.py",
        "syscalls_logger",
    ]
    assert parse_plugin_list([]) == []


def test_parse_plugin_args_groups_by_plugin() -> None:
    parsed = parse_plugin_args(["osi_linux:dump=ps", "syscalls_logger:db=/tmp/a=b:c.db", "osi_linux:every=0x10"])
    assert parsed == {"osi_linux": {"dump": "ps", "every": "0x10"}, "syscalls_logger": {"db": "/tmp/a=b:c.db"}}
    assert parse_plugin_args(["p:empty="]) == {"p": {"empty": ""}}


@pytest.mark.parametrize("item", ["osi_linux", "osi_linux:dump", "osi_linux=ps", ":dump=ps", "osi_linux:=ps"])
def test_malformed_plugin_args_are_refused(item: str) -> None:
    with pytest.raises(PluginError, match=r"is not of the form plugin:key=value"):
        parse_plugin_args([item])


def test_a_key_given_twice_is_refused() -> None:
    with pytest.raises(PluginError, match=r"plugin argument 'p:k' is given twice"):
        parse_plugin_args(["p:k=1", "p:k=2"])


@given(
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True),
        st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), st.text(), max_size=4),
        max_size=4,
    )
)
def test_parse_plugin_args_round_trips(expected: dict[str, dict[str, str]]) -> None:
    items = [f"{plugin}:{key}={value}" for plugin, values in expected.items() for key, value in values.items()]
    assert parse_plugin_args(items) == {p: v for p, v in expected.items() if v}


def test_defaults_apply_when_nothing_is_given() -> None:
    values = bind_args(Tunable, {})
    assert vars(values) == {"dump": "ps", "every": 100, "verbose": False, "ratio": 0.5, "out": None}


def test_values_are_converted_to_their_declared_types() -> None:
    values = bind_args(Tunable, {"dump": "maps", "every": "0x20", "verbose": "Yes", "ratio": "2.5", "out": "~/x.db"})
    assert values.dump == "maps" and values.every == 32 and values.verbose is True and values.ratio == 2.5
    assert values.out == Path.home() / "x.db"
    assert bind_args(Tunable, {"verbose": "off"}).verbose is False


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"every": "ten"}, r"plugin 'tunable' argument 'every': 'ten' is not an int"),
        ({"ratio": "half"}, r"argument 'ratio': 'half' is not a float"),
        ({"verbose": "maybe"}, r"argument 'verbose': 'maybe' is not a bool \(use true/false"),
        ({"dump": "threads"}, r"argument 'dump': 'threads' is not one of ps, maps, none"),
        (
            {"evry": "1"},
            r"plugin 'tunable' has no argument 'evry'; its arguments: dump \(str\), every \(int\), "
            r"verbose \(bool\), ratio \(float\), out \(path\)",
        ),
    ],
)
def test_bad_values_and_unknown_keys_list_what_is_valid(given: dict[str, str], message: str) -> None:
    with pytest.raises(PluginError, match=message):
        bind_args(Tunable, given)


def test_a_plugin_without_arguments_says_so() -> None:
    with pytest.raises(PluginError, match=r"plugin 'plain' has no argument 'x'; it takes no arguments"):
        bind_args(Plain, {"x": "1"})


def test_reading_an_undeclared_argument_names_the_declared_ones() -> None:
    values = PluginArgs(dump="ps", every=3)
    with pytest.raises(AttributeError, match=r"no plugin argument 'dmp'; declared: dump, every"):
        _ = values.dmp
    assert getattr(values, "dmp", "fallback") == "fallback"  # hasattr/getattr defaults still work


def test_arg_declarations_are_checked() -> None:
    with pytest.raises(PluginError, match=r"type 'list' is not supported; supported: str, int, bool, float, path"):
        Arg(list, [])
    with pytest.raises(PluginError, match=r"default 'x' is not one of a, b"):
        Arg(str, "x", choices=["a", "b"])
    assert repr(Arg(int, 3, choices=(1, 3))) == "Arg(int, 3, choices=[1, 3])"


def test_load_all_passes_parsed_arguments_to_the_plugin_before_load() -> None:
    qpp = QPP()
    qpp.load_all([Tunable], parse_plugin_args(["tunable:every=7", "tunable:verbose=1"]))
    plugin = qpp.get("tunable")
    assert plugin.seen_at_load["every"] == 7 and plugin.seen_at_load["verbose"] is True
    assert plugin.args.every == 7
    assert isinstance(Tunable.args["every"], Arg)  # the class keeps its declarations


def test_arguments_for_a_plugin_that_is_not_loaded_are_refused_before_anything_loads() -> None:
    qpp = QPP()
    with pytest.raises(
        PluginError,
        match=r"arguments given for plugin 'osi_linux', which this command does not load; loading: tunable",
    ):
        qpp.load_all([Tunable], {"osi_linux": {"dump": "ps"}})
    assert qpp.loaded == []


def test_a_bad_argument_loads_nothing() -> None:
    qpp = QPP()
    with pytest.raises(PluginError, match="'every': 'x' is not an int"):
        qpp.load_all([Plain, Tunable], {"tunable": {"every": "x"}})
    assert qpp.loaded == []


def test_arguments_reach_plugins_loaded_as_requirements() -> None:
    class NeedsTunable(Plugin):
        name = "needs_tunable"
        requires = ("tunable",)

    qpp = QPP()
    qpp.load_all([NeedsTunable, Tunable], {"tunable": {"dump": "none"}})
    assert qpp.loaded == ["tunable", "needs_tunable"]
    assert qpp.get("tunable").args.dump == "none"
