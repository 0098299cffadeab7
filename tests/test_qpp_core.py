"""QPP semantics: unique names, exports, callbacks, requirements, versions, lifecycle, failures."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from qppsuite.core.qpp import (
    API_VERSION,
    QPP,
    Callback,
    CallbackSpec,
    Plugin,
    PluginCallbackError,
    PluginFailure,
    export,
    exported_functions,
)
from qppsuite.errors import PluginError, QppsuiteError

EVENTS: list[str] = []


@pytest.fixture(autouse=True)
def _clear_events() -> None:
    EVENTS.clear()


class Recording(Plugin):
    """Records its lifecycle in EVENTS so order can be asserted."""

    def load(self) -> None:
        EVENTS.append(f"load {self.name}")

    def start(self) -> None:
        EVENTS.append(f"start {self.name}")

    def stop(self, reason: Any) -> None:
        EVENTS.append(f"stop {self.name} {reason}")

    def unload(self) -> None:
        EVENTS.append(f"unload {self.name}")


class Base(Recording):
    name = "base"
    callbacks = (CallbackSpec("on_event", "an event with a value", value=Any), CallbackSpec("on_other", "no value"))

    @export
    def twice(self, x: int) -> int:
        return 2 * x

    @export
    def ident(self, x: Any) -> Any:
        return x

    def not_exported(self) -> None:
        raise AssertionError("never importable")


class Middle(Recording):
    name = "middle"
    requires = ("base",)


class Top(Recording):
    name = "top"
    requires = ("middle", "base")


class CycleA(Plugin):
    name = "cycle_a"
    requires = ("cycle_b",)


class CycleB(Plugin):
    name = "cycle_b"
    requires = ("cycle_c",)


class CycleC(Plugin):
    name = "cycle_c"
    requires = ("cycle_a",)


def collecting(qpp: QPP) -> list[PluginFailure]:
    failures: list[PluginFailure] = []
    qpp.reporter = failures.append
    return failures


# --------------------------------------------------------------------------- names and order


def test_requirements_load_first_and_unload_in_reverse() -> None:
    with QPP() as qpp:
        qpp.load_all([Top, Middle, Base])  # listed users first: requirements still load first
        assert qpp.loaded == ["base", "middle", "top"]
        qpp.start_all()
        qpp.stop_all("halt")
    assert EVENTS == [
        "load base", "load middle", "load top",
        "start base", "start middle", "start top",
        "stop top halt", "stop middle halt", "stop base halt",
        "unload top", "unload middle", "unload base",
    ]  # fmt: skip


def test_loading_a_loaded_plugin_again_is_a_no_op() -> None:
    qpp = QPP()
    first = qpp.load(Base)
    assert qpp.load(Base) is first
    qpp.load_all([Middle, Base, Middle])
    assert qpp.loaded == ["base", "middle"]
    assert EVENTS == ["load base", "load middle"]


def test_two_plugins_with_one_name_is_an_error_naming_both_sources() -> None:
    class Impostor(Plugin):
        name = "base"

    qpp = QPP()
    qpp.load(Base)
    with pytest.raises(PluginError) as err:
        qpp.load(Impostor)
    message = str(err.value)
    assert "two plugins are named 'base'" in message
    assert "test_qpp_core.Base" in message and "Impostor" in message
    assert qpp.get("base").__class__ is Base


def test_two_plugins_with_one_name_in_one_batch_is_an_error() -> None:
    class Impostor(Plugin):
        name = "base"

    with pytest.raises(PluginError, match=r"two plugins are named 'base': class .*Base and class .*Impostor"):
        QPP().load_all([Base, Impostor])


def test_requirement_cycle_shows_the_cycle() -> None:
    with pytest.raises(PluginError, match=r"cycle: cycle_a -> cycle_b -> cycle_c -> cycle_a$"):
        QPP().load_all([CycleA, CycleB, CycleC])


def test_requirement_cycle_of_two() -> None:
    class Ping(Plugin):
        name = "ping"
        requires = ("pong",)

    class Pong(Plugin):
        name = "pong"
        requires = ("ping",)

    with pytest.raises(PluginError, match=r"cycle: pong -> ping -> pong"):
        QPP().load_all([Pong, Ping])


def test_a_plugin_requiring_itself_is_refused() -> None:
    class Narcissus(Plugin):
        name = "narcissus"
        requires = ("narcissus",)

    with pytest.raises(PluginError, match="requires itself"):
        QPP().load(Narcissus)


def test_missing_requirement_lists_what_is_available() -> None:
    class Needy(Plugin):
        name = "needy"
        requires = ("osi_linnux",)

    with pytest.raises(PluginError) as err:
        QPP().load(Needy)
    message = str(err.value)
    assert "plugin 'needy' requires 'osi_linnux', which is not available" in message
    assert "did you mean 'osi_linux'" in message and "syscalls_logger" in message
    assert err.value.hint is not None and "--plugins" in err.value.hint


def test_nothing_loads_when_the_plan_fails() -> None:
    class Needy(Recording):
        name = "needy"
        requires = ("nowhere",)

    qpp = QPP()
    with pytest.raises(PluginError):
        qpp.load_all([Base, Needy])
    assert qpp.loaded == [] and EVENTS == []


def test_incompatible_api_version_is_refused() -> None:
    class FromTheFuture(Plugin):
        name = "future"
        api_version = API_VERSION + 1

    with pytest.raises(PluginError, match=r"'future' .* built for plugin API v3; this qppsuite provides API v2"):
        QPP().load(FromTheFuture)


@pytest.mark.parametrize(
    ("attrs", "complaint"),
    [
        ({}, "needs a `name`"),
        ({"name": "has space"}, "needs a `name`"),
        ({"name": "ok", "requires": "base"}, "`requires` must be a tuple"),
        ({"name": "ok", "callbacks": ("on_x",)}, r"`callbacks` must be a tuple of CallbackSpec\(name, description"),
        ({"name": "ok", "callbacks": (CallbackSpec("on x"),)}, "callback name 'on x' is not an identifier"),
        ({"name": "ok", "callbacks": (CallbackSpec("on_x", "", **{"a b": int}),)}, "parameter 'a b' is not an"),
        ({"name": "ok", "callbacks": (CallbackSpec("on_x"), CallbackSpec("on_x"))}, "declares a callback twice"),
        ({"name": "ok", "args": {"n": 3}}, "`args` must map identifiers to Arg"),
    ],
)
def test_bad_declarations_are_refused_at_load(attrs: dict[str, Any], complaint: str) -> None:
    broken = type("Broken", (Plugin,), attrs)
    with pytest.raises(PluginError, match=complaint):
        QPP().load(broken)


def test_unknown_plugin_is_an_error_listing_the_available_ones() -> None:
    with pytest.raises(PluginError, match=r"unknown plugin 'sycalls' \(did you mean 'syscalls'\?\); available: "):
        QPP().load("sycalls")


def test_plugin_error_is_a_user_facing_error() -> None:
    assert issubclass(PluginError, QppsuiteError)
    assert issubclass(PluginCallbackError, PluginError)


# --------------------------------------------------------------------------- exports


def test_imported_function_is_the_bound_method_itself() -> None:
    qpp = QPP()
    base = qpp.load(Base)
    twice = qpp.import_function("base", "twice")
    assert twice == base.twice and twice.__self__ is base
    assert twice(21) == 42


def test_exports_are_only_marked_methods() -> None:
    assert list(exported_functions(Base)) == ["twice", "ident"]

    class Override(Base):
        name = "override"

        def twice(self, x: int) -> int:  # redefined without @export: no longer exported
            return x

    assert list(exported_functions(Override)) == ["ident"]


def test_importing_an_unexported_function_lists_the_exports() -> None:
    qpp = QPP()
    qpp.load(Base)
    expected = r"plugin 'base' exports no function 'not_exported'; it exports: twice, ident$"
    with pytest.raises(PluginError, match=expected):
        qpp.import_function("base", "not_exported")


def test_importing_from_a_plugin_that_is_not_loaded_fails_at_load_time() -> None:
    class Importer(Recording):
        name = "importer"

        def load(self) -> None:
            self.twice = self.qpp.import_function("bsae", "twice")

    qpp = QPP()
    qpp.load(Base)
    with pytest.raises(PluginError) as err:
        qpp.load(Importer)
    message = str(err.value)
    assert message.startswith("plugin 'importer' failed to load: cannot import bsae:twice")
    assert "did you mean 'base'" in message and "loaded: base" in message
    assert qpp.loaded == ["base"]


# --------------------------------------------------------------------------- callbacks


class Listener(Recording):
    name = "listener"
    requires = ("base",)

    def load(self) -> None:
        super().load()
        self.seen: list[tuple[Any, ...]] = []
        self.qpp.register("base", "on_event", self.on_event, owner=self.name)

    def on_event(self, value: Any) -> None:
        self.seen.append(value)
        EVENTS.append(f"listener got {value}")


def test_callbacks_run_registered_functions_in_order_with_arguments() -> None:
    qpp = QPP()
    base = qpp.load(Base)
    listener = qpp.load(Listener)
    qpp.register("base", "on_event", lambda value: EVENTS.append(f"second got {value}"), owner="test")
    on_event = base.callback("on_event")
    assert isinstance(on_event, Callback) and on_event.qualname == "base:on_event"
    on_event(value=(1, "two"))
    assert EVENTS[-2:] == ["listener got (1, 'two')", "second got (1, 'two')"]
    assert listener.seen == [(1, "two")]


def test_callback_is_truthy_only_when_something_is_registered() -> None:
    qpp = QPP()
    base = qpp.load(Base)
    on_other = base.callback("on_other")
    assert not on_other
    on_other()  # running with nobody registered is fine

    def fn() -> None:
        EVENTS.append("fn")

    qpp.register("base", "on_other", fn, owner="test")
    assert on_other
    on_other()
    qpp.unregister("base", "on_other", fn)
    assert not on_other
    on_other()
    assert EVENTS == ["load base", "fn"]


def test_registering_on_a_missing_callback_lists_the_callbacks() -> None:
    qpp = QPP()
    qpp.load(Base)
    expected = (
        r"plugin 'base' creates no callback 'on_evnt' \(did you mean 'on_event'\?\); it creates: on_event, on_other$"
    )
    with pytest.raises(PluginError, match=expected):
        qpp.register("base", "on_evnt", print, owner="test")


def test_running_a_callback_the_plugin_did_not_declare_is_an_error() -> None:
    qpp = QPP()
    base = qpp.load(Base)
    with pytest.raises(PluginError, match="creates no callback 'on_undeclared'"):
        base.callback("on_undeclared")


def test_registering_on_a_plugin_that_is_not_loaded_is_an_error() -> None:
    qpp = QPP()
    expected = r"cannot use callback base:on_event: plugin 'base' is not loaded; loaded: none$"
    with pytest.raises(PluginError, match=expected):
        qpp.register("base", "on_event", print, owner="test")


def test_unregistering_a_function_that_is_not_registered_is_an_error() -> None:
    qpp = QPP()
    qpp.load(Base)
    listener = qpp.load(Listener)
    with pytest.raises(PluginError, match=r"print is not registered on base:on_event; registered: Listener.on_event"):
        qpp.unregister("base", "on_event", print)
    qpp.unregister("base", "on_event", listener.on_event)  # a fresh bound method compares equal
    with pytest.raises(PluginError, match="registered: nothing"):
        qpp.unregister("base", "on_event", listener.on_event)


def test_registering_one_function_twice_is_an_error() -> None:
    qpp = QPP()
    qpp.load(Base)
    listener = qpp.load(Listener)
    with pytest.raises(PluginError, match="already registered on base:on_event by 'listener'"):
        qpp.register("base", "on_event", listener.on_event, owner="listener")


def test_a_function_may_unregister_itself_while_the_callback_runs() -> None:
    qpp = QPP()
    base = qpp.load(Base)

    def once() -> None:
        EVENTS.append("once")
        qpp.unregister("base", "on_other", once)

    def always() -> None:
        EVENTS.append("always")

    qpp.register("base", "on_other", once, owner="test")
    qpp.register("base", "on_other", always, owner="test")
    base.callback("on_other")()
    base.callback("on_other")()
    assert EVENTS == ["load base", "once", "always", "always"]


def test_a_plugin_that_fails_to_load_leaves_no_registrations_behind() -> None:
    class HalfLoaded(Plugin):
        name = "half"
        requires = ("base",)

        def load(self) -> None:
            self.qpp.register("base", "on_event", self.on_event, owner=self.name)
            raise RuntimeError("disk full")

        def on_event(self) -> None:
            EVENTS.append("half ran")

    qpp = QPP()
    base = qpp.load(Base)
    with pytest.raises(PluginError, match=r"plugin 'half' failed to load: RuntimeError: disk full"):
        qpp.load(HalfLoaded)
    assert qpp.loaded == ["base"]
    assert not base.callback("on_event")


# --------------------------------------------------------------------------- failures


class Faulty(Plugin):
    name = "faulty"
    requires = ("base",)

    def load(self) -> None:
        self.qpp.register("base", "on_event", self.on_event, owner=self.name)

    def on_event(self, value: int) -> None:
        raise ValueError(f"bad value {value}")


def test_a_failing_function_does_not_stop_the_others_and_is_reported_once() -> None:
    qpp = QPP()
    failures = collecting(qpp)
    base = qpp.load(Base)
    qpp.load(Faulty)
    listener = qpp.load(Listener)
    on_event = base.callback("on_event")
    for value in range(3):
        on_event(value=value)
    assert listener.seen == [0, 1, 2]
    assert len(failures) == 1
    failure = failures[0]
    assert (failure.plugin, failure.where) == ("faulty", "base:on_event")
    assert str(failure) == "plugin 'faulty' raised in base:on_event: ValueError: bad value 0"
    short = failure.traceback()
    assert "in on_event" in short and "ValueError: bad value 0" in short
    assert "/core/qpp/" not in short  # the dispatcher's frames are not the plugin author's business
    assert qpp.failure_counts == {("faulty", "base:on_event"): 3}


def test_default_reporter_logs_to_the_qpp_logger(caplog: pytest.LogCaptureFixture) -> None:
    qpp = QPP()
    base = qpp.load(Base)
    qpp.load(Faulty)
    with caplog.at_level(logging.ERROR, logger="qppsuite.qpp"):
        base.callback("on_event")(value=7)
        base.callback("on_event")(value=8)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "plugin 'faulty' raised in base:on_event: ValueError: bad value 7" in errors[0].getMessage()
    with caplog.at_level(logging.WARNING, logger="qppsuite.qpp"):
        qpp.unload_all()
    assert "plugin 'faulty' raised 1 more times in base:on_event (not shown)" in caplog.text


def test_strict_mode_raises_after_every_function_ran() -> None:
    qpp = QPP(strict=True)
    failures = collecting(qpp)
    base = qpp.load(Base)
    qpp.load(Faulty)
    listener = qpp.load(Listener)
    with pytest.raises(PluginCallbackError) as err:
        base.callback("on_event")(value=5)
    assert listener.seen == [5]
    assert str(err.value) == "plugin 'faulty' raised in base:on_event: ValueError: bad value 5"
    assert isinstance(err.value.__cause__, ValueError)
    assert err.value.failure is failures[0]


def test_strict_error_from_a_nested_callback_is_passed_on_not_rewrapped() -> None:
    class Relay(Plugin):
        name = "relay"
        requires = ("base",)
        callbacks = (CallbackSpec("on_relayed"),)

        def load(self) -> None:
            self.qpp.register("base", "on_other", self.relay, owner=self.name)

        def relay(self) -> None:
            self.callback("on_relayed")()

    def broken() -> None:
        raise KeyError("deep")

    qpp = QPP(strict=True)
    failures = collecting(qpp)
    base = qpp.load(Base)
    qpp.load(Relay)
    qpp.register("relay", "on_relayed", broken, owner="deep")
    with pytest.raises(PluginCallbackError) as err:
        base.callback("on_other")()
    assert err.value.failure.plugin == "deep" and err.value.failure.where == "relay:on_relayed"
    assert len(failures) == 1


def test_keyboard_interrupt_in_a_callback_is_not_swallowed() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    qpp = QPP()
    base = qpp.load(Base)
    qpp.register("base", "on_other", interrupted, owner="test")
    with pytest.raises(KeyboardInterrupt):
        base.callback("on_other")()


def test_lifecycle_failures_are_reported_and_the_rest_still_runs() -> None:
    class BadStart(Recording):
        name = "bad_start"

        def start(self) -> None:
            raise OSError("no device")

        def unload(self) -> None:
            raise OSError("cannot flush")

    with QPP() as qpp:
        failures = collecting(qpp)
        qpp.load_all([Base, BadStart, Middle])
        qpp.start_all()
    assert EVENTS == [
        "load base", "load bad_start", "load middle",
        "start base", "start middle",
        "unload middle", "unload base",
    ]  # fmt: skip
    assert [(f.plugin, f.where) for f in failures] == [("bad_start", "start()"), ("bad_start", "unload()")]


def test_strict_lifecycle_failure_stops_the_run_and_everything_unloads() -> None:
    class BadStart(Recording):
        name = "bad_start"

        def start(self) -> None:
            raise OSError("no device")

    expected = r"'bad_start' raised in start\(\): OSError: no device"
    with pytest.raises(PluginCallbackError, match=expected), QPP(strict=True) as qpp:
        collecting(qpp)
        qpp.load_all([Base, BadStart])
        qpp.start_all()
        EVENTS.append("guest ran")
    assert EVENTS == ["load base", "load bad_start", "start base", "unload bad_start", "unload base"]


# --------------------------------------------------------------------------- lifecycle


def test_unload_happens_when_the_run_raises() -> None:
    with pytest.raises(RuntimeError, match="guest exploded"), QPP() as qpp:
        qpp.load_all([Base, Middle, Top])
        qpp.start_all()
        raise RuntimeError("guest exploded")
    assert EVENTS[-3:] == ["unload top", "unload middle", "unload base"]


def test_unload_happens_on_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt), QPP() as qpp:
        qpp.load_all([Base, Middle, Top])
        qpp.start_all()
        raise KeyboardInterrupt
    assert EVENTS[-3:] == ["unload top", "unload middle", "unload base"]


def test_unload_happens_when_loading_fails_halfway() -> None:
    class Explodes(Recording):
        name = "explodes"
        requires = ("middle",)

        def load(self) -> None:
            raise RuntimeError("boom")

    with pytest.raises(PluginError, match="plugin 'explodes' failed to load: RuntimeError: boom"), QPP() as qpp:
        qpp.load_all([Explodes, Middle, Base])
    assert EVENTS == ["load base", "load middle", "unload middle", "unload base"]


def test_ctrl_c_during_one_unload_does_not_skip_the_others() -> None:
    class Stubborn(Recording):
        name = "stubborn"
        requires = ("base",)

        def unload(self) -> None:
            raise KeyboardInterrupt

    qpp = QPP()
    qpp.load_all([Stubborn, Middle, Base])
    with pytest.raises(KeyboardInterrupt):
        qpp.unload_all()
    assert EVENTS[-2:] == ["unload middle", "unload base"]


def test_unload_all_is_idempotent_and_closes_the_manager() -> None:
    qpp = QPP()
    qpp.load(Base)
    qpp.unload_all()
    qpp.unload_all()
    assert EVENTS.count("unload base") == 1
    with pytest.raises(PluginError, match="already unloaded"):
        qpp.load(Middle)


def test_a_dependency_may_run_its_callback_from_unload_to_already_unloaded_users() -> None:
    class Flusher(Recording):
        name = "flusher"
        callbacks = (CallbackSpec("on_final", "the last words", words=str),)

        def unload(self) -> None:
            super().unload()
            self.callback("on_final")(words="last words")

    class User(Recording):
        name = "user"
        requires = ("flusher",)

        def load(self) -> None:
            super().load()
            heard = lambda words: EVENTS.append(f"user heard {words}")  # noqa: E731
            self.qpp.register("flusher", "on_final", heard, owner=self.name)

    qpp = QPP()
    qpp.load_all([User, Flusher])
    qpp.unload_all()
    assert EVENTS == ["load flusher", "load user", "unload user", "unload flusher", "user heard last words"]
    assert not qpp.callback("flusher", "on_final")  # registrations are dropped after the last unload


def test_plugins_cannot_be_loaded_after_the_guest_started() -> None:
    qpp = QPP()
    qpp.load(Base)
    qpp.start_all()
    with pytest.raises(PluginError, match="before the guest starts"):
        qpp.load(Middle)
    with pytest.raises(PluginError, match="start_all runs once"):
        qpp.start_all()


def test_builtin_host_plugin_is_loaded_and_required_like_any_other() -> None:
    class Core(Recording):
        name = "core"
        callbacks = (CallbackSpec("on_svc", "a system call", number=int),)

        def __init__(self, machine: object) -> None:
            self.owner_machine = machine

    class SvcCounter(Recording):
        name = "svc_counter"
        requires = ("core",)

        def load(self) -> None:
            super().load()
            self.count = 0
            self.qpp.register("core", "on_svc", self.on_svc, owner=self.name)

        def on_svc(self, number: int) -> None:
            self.count += 1

    machine = object()
    qpp = QPP(machine)
    core = Core(machine)
    qpp.add_builtin(core)
    counter = qpp.load(SvcCounter)
    assert counter.machine is machine and core.machine is machine
    assert str(qpp.source("core")).startswith("host ")
    for number in range(5):
        core.callback("on_svc")(number=number)
    assert counter.count == 5
    with pytest.raises(PluginError, match=r"two plugins are named 'core': host .*Core \(loaded\) and class"):
        qpp.load(type("FakeCore", (Plugin,), {"name": "core"}))
    assert qpp.load("core") is core  # naming a loaded plugin again is harmless
    qpp.load_all(["core", "svc_counter"])
    assert qpp.loaded == ["core", "svc_counter"]


def test_get_unknown_plugin_lists_the_loaded_ones() -> None:
    qpp = QPP()
    qpp.load(Base)
    with pytest.raises(PluginError, match=r"plugin 'bse' is not loaded \(did you mean 'base'\?\); loaded: base"):
        qpp.get("bse")
