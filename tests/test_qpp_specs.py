"""Callback specifications: functions are checked when they register, and called with keywords."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qppsuite.core.qpp import QPP, CallbackSpec, Plugin, RunContext
from qppsuite.errors import PluginError


class Source(Plugin):
    name = "source"
    callbacks = (CallbackSpec("on_pair", "two values", first=int, second=str),)


def test_a_parameter_the_callback_does_not_pass_is_refused_at_registration_naming_everything() -> None:
    def handler(first: int, third: bytes) -> None:
        raise AssertionError("never called")

    qpp = QPP()
    qpp.load(Source)
    with pytest.raises(PluginError) as err:
        qpp.register("source", "on_pair", handler, owner="mine")
    assert str(err.value) == (
        "plugin 'mine' registered test_a_parameter_the_callback_does_not_pass_is_refused_at_registration_naming_"
        "everything.<locals>.handler on source:on_pair: parameter 'third' is not an argument of "
        "on_pair(first: int, second: str)"
    )
    assert not qpp.callback("source", "on_pair")


def test_a_positional_only_parameter_is_refused() -> None:
    def handler(first: int, /) -> None:
        raise AssertionError("never called")

    qpp = QPP()
    qpp.load(Source)
    with pytest.raises(PluginError, match="parameter 'first' is positional-only in on_pair"):
        qpp.register("source", "on_pair", handler, owner="mine")


def test_a_function_gets_the_arguments_it_takes_by_name_in_any_order() -> None:
    got: list[tuple[str, Any]] = []
    qpp = QPP()
    source = qpp.load(Source)
    qpp.register("source", "on_pair", lambda second, first: got.append(("both", (first, second))), owner="a")
    qpp.register("source", "on_pair", lambda second: got.append(("second", second)), owner="b")
    qpp.register("source", "on_pair", lambda: got.append(("none", None)), owner="c")
    qpp.register("source", "on_pair", lambda **every: got.append(("kwargs", every)), owner="d")
    qpp.register("source", "on_pair", lambda first, extra=7: got.append(("default", (first, extra))), owner="e")
    source.callback("on_pair")(first=1, second="x")
    assert got == [
        ("both", (1, "x")),
        ("second", "x"),
        ("none", None),
        ("kwargs", {"first": 1, "second": "x"}),
        ("default", (1, 7)),
    ]


def test_the_creator_must_pass_exactly_the_declared_arguments_by_name() -> None:
    qpp = QPP()
    source = qpp.load(Source)
    on_pair = source.callback("on_pair")
    on_pair(first=1, second="x")  # nobody registered: nothing runs
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'second'"):
        on_pair(first=1)
    qpp.register("source", "on_pair", lambda first: None, owner="a")
    with pytest.raises(TypeError, match="unexpected keyword argument 'third'"):
        on_pair(first=1, second="x", third=3)
    with pytest.raises(TypeError, match="takes 1 positional argument"):
        on_pair(1, "x")


def test_a_plugin_built_for_api_v1_is_refused_with_what_changed() -> None:
    class Old(Plugin):
        name = "old"
        api_version = 1

    with pytest.raises(PluginError, match=r"'old' .* built for plugin API v1; this qppsuite provides API v2") as err:
        QPP().load(Old)
    assert err.value.hint is not None and "CallbackSpec" in err.value.hint


def test_every_plugin_reads_the_run_context_the_host_gave() -> None:
    seen: list[RunContext] = []

    class Reader(Plugin):
        name = "reader"

        def load(self) -> None:
            seen.append(self.context)

    context = RunContext(image="img", image_path=Path("/x"), kernel_release="6.1", snapshot="ready-1")
    QPP(context=context).load(Reader)
    QPP().load(Reader)
    assert seen[0] is context
    assert seen[1] == RunContext() and seen[1].image is None and dict(seen[1].options) == {}


def test_a_callback_spec_shows_its_signature() -> None:
    assert CallbackSpec("on_x", "doc", ctx="SyscallContext", retval=int).signature == (
        "on_x(ctx: SyscallContext, retval: int)"
    )


seen: list[Any] = []


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda a, b, c: seen.append((a, b, c)), (1, 2, 3)),
        (lambda a, c, b: seen.append((a, b, c)), (1, 2, 3)),
        (lambda c, a: seen.append((a, c)), (1, 3)),
        (lambda b: seen.append(b), 2),
        (lambda *, c: seen.append(c), 3),
        (lambda b, x=5, *, a: seen.append((a, b, x)), (1, 2, 5)),
        (lambda *extra, a, **rest: seen.append((a, extra, rest)), (1, (), {"b": 2, "c": 3})),
        (lambda **every: seen.append(every), {"a": 1, "b": 2, "c": 3}),
        (lambda: seen.append("nothing"), "nothing"),
    ],
    ids=["all", "reordered", "two-reordered", "one", "keyword-only", "default-between", "star-args", "kwargs", "none"],
)
def test_every_shape_of_function_gets_its_arguments_by_name(fn: Any, expected: Any) -> None:
    class Three(Plugin):
        name = "three"
        callbacks = (CallbackSpec("on_three", "", a=int, b=int, c=int),)

    seen.clear()
    qpp = QPP()
    three = qpp.load(Three)
    qpp.register("three", "on_three", fn, owner="shape")
    three.callback("on_three")(a=1, b=2, c=3)
    assert seen == [expected]


def test_star_args_alone_and_a_forgotten_self_are_refused() -> None:
    class Mine(Plugin):
        name = "mine"

        def positional(self, *args: Any) -> None:
            raise AssertionError("never called")

        def selfless(first, second):  # the mistake under test: no self
            raise AssertionError("never called")

    qpp = QPP()
    qpp.load(Source)
    mine = qpp.load(Mine)
    with pytest.raises(PluginError, match=r"parameter '\*args' would get nothing: on_pair\(first: int, second: str\)"):
        qpp.register("source", "on_pair", mine.positional, owner="mine")
    with pytest.raises(PluginError, match=r"its first parameter 'first' would receive the object it is bound to"):
        qpp.register("source", "on_pair", mine.selfless, owner="mine")  # type: ignore[misc]


def test_a_misspelt_callback_is_suggested_and_a_long_list_is_not_printed() -> None:
    class Many(Plugin):
        name = "many"
        callbacks = tuple(CallbackSpec(f"on_event_{i}") for i in range(40))

    qpp = QPP()
    qpp.load(Many)
    with pytest.raises(PluginError) as err:
        qpp.register("many", "on_evnt_7", lambda: None, owner="x")
    assert str(err.value) == (
        "plugin 'many' creates no callback 'on_evnt_7' (did you mean 'on_event_7'?); "
        "it creates 40: `qppsuite plugins many` lists them"
    )


def test_a_hook_function_is_checked_when_added_and_its_failure_names_the_plugin() -> None:
    from qppsuite.core.guest.hooks import Hooks

    failures: list[tuple[str, str, str]] = []

    class FakeMachine:
        def add_entry_hook(self, vaddr: int, fn: Any) -> int:
            self.fn = fn
            return -1

    machine = FakeMachine()
    hooks = Hooks(machine, "mine", lambda owner, where, exc: failures.append((owner, where, str(exc))))  # type: ignore[arg-type, func-returns-value]
    with pytest.raises(PluginError, match=r"plugin 'mine' gave the entry hook at 0x1000 5, which is not callable"):
        hooks.at_entry(0x1000, 5)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match=r"cannot take \(pc\)"):
        hooks.at_entry(0x1000, lambda: None)  # type: ignore[arg-type, misc]

    def boom(pc: int) -> None:
        raise ValueError(f"boom at {pc:#x}")

    hooks.at_entry(0x1000, boom)
    machine.fn(0x1000)  # the run goes on: the failure is reported, not raised
    assert failures == [("mine", "the entry hook at 0x1000", "boom at 0x1000")]

