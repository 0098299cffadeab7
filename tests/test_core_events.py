"""The core's events, delivered through QPP on a real boot, and plugin failures during a run."""

from collections import Counter
from typing import Any, ClassVar

import pytest

from qppsuite.core.cpu import ExceptionKind
from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.profiles.profile import KernelProfile
from qppsuite.session import RunOptions, run


class EventRecorder(Plugin):
    """Registers on every core event, plus one address hook and (briefly) a block hook."""

    name = "event_recorder"
    log: ClassVar[dict[str, Any]] = {}

    def load(self) -> None:
        log = self.log
        log.update(counts=Counter(), exceptions=Counter(), console=bytearray(), switches=set(), order=[])
        for event in ("on_start", "on_stop", "on_svc", "on_exception", "on_asid_change", "on_console"):
            self.qpp.register("core", event, getattr(self, event), owner=self.name)

    def on_start(self) -> None:
        self.log["order"].append("start")
        self.log["blocks"] = 0
        self._block = self.machine.hooks.on_blocks(self.on_block)

    def on_block(self, pc: int, size: int) -> None:
        self.log["blocks"] += 1
        if self.log["blocks"] == 1000:
            self.machine.hooks.remove(self._block)

    def on_stop(self, reason: Any) -> None:
        self.log["order"].append("stop")
        self.log["reason"] = reason

    def on_svc(self, event: Any) -> None:
        log = self.log
        log["counts"]["svc"] += 1
        assert self.machine.registers.mode == "usr", "on_svc fires before the exception entry"
        if self.machine.registers.read("r7") == 11 and "execve_hook" not in log:  # execve: hook the SVC's own pc
            log["execve_hook"] = event.pc
            log["hook_hits"] = 0
            self.machine.hooks.at_address(event.pc, self.on_address)

    def on_address(self, pc: int) -> None:
        self.log["hook_hits"] += 1
        self.log["hook_pc"] = pc

    def on_exception(self, event: Any) -> None:
        self.log["exceptions"][event.kind] += 1
        if event.kind is ExceptionKind.DATA_ABORT:
            assert event.fault_address is not None and event.fault_status is not None

    def on_asid_change(self, switch: Any) -> None:
        self.log["switches"].add(switch.new_ttbr0)

    def on_console(self, data: bytes) -> None:
        self.log["console"] += data


@pytest.fixture(scope="module")
def recorded(default_image: ImageBundle) -> dict[str, Any]:
    console = bytearray()
    result = run(
        RunOptions(cmd="ls / > /dev/null; echo events-ok", plugins=[EventRecorder]), console.extend, image=default_image
    )
    assert result.ok, result.reason
    EventRecorder.log["sink"] = bytes(console)
    return EventRecorder.log


@pytest.mark.boot
def test_start_and_stop_bracket_the_run(recorded: dict[str, Any]) -> None:
    assert recorded["order"] == ["start", "stop"]
    assert recorded["reason"].kind == "poweroff"


@pytest.mark.boot
def test_exceptions_of_every_kind_are_reported(recorded: dict[str, Any]) -> None:
    kinds = recorded["exceptions"]
    assert kinds[ExceptionKind.IRQ] > 10, "timer interrupts"
    assert kinds[ExceptionKind.DATA_ABORT] > 100, "demand paging in userspace"
    assert kinds[ExceptionKind.PREFETCH_ABORT] > 10
    assert kinds[ExceptionKind.UNDEFINED] > 0, "lazy VFP enabling traps"
    assert ExceptionKind.SVC not in kinds, "system calls come through on_svc only"
    assert recorded["counts"]["svc"] > 100


@pytest.mark.boot
def test_address_space_switches_and_console(recorded: dict[str, Any]) -> None:
    assert len(recorded["switches"]) >= 3, "init, the shell, ls and friends each have their own page tables"
    assert bytes(recorded["console"]) == recorded["sink"]
    assert b"events-ok" in recorded["console"]


@pytest.mark.boot
def test_opt_in_hooks_fire_and_can_be_removed(recorded: dict[str, Any]) -> None:
    assert recorded["blocks"] == 1000, "the block hook ran until it removed itself"
    assert recorded["hook_hits"] >= 1, "an address hook added mid-run fires on later executions"
    assert recorded["hook_pc"] == recorded["execve_hook"]


class Exploder(Plugin):
    name = "exploder"
    unloaded: ClassVar[list[str]] = []

    def load(self) -> None:
        self.qpp.register("core", "on_svc", self.on_svc, owner=self.name)

    def on_svc(self, event: Any) -> None:
        raise RuntimeError("boom")

    def unload(self) -> None:
        self.unloaded.append("unloaded")


@pytest.mark.boot
def test_strict_mode_stops_the_run_cleanly_and_unloads(default_image: ImageBundle) -> None:
    Exploder.unloaded.clear()
    result = run(RunOptions(plugins=[Exploder], strict=True, warm=True), None, image=default_image)
    assert result.reason.kind == "plugin"
    assert "exploder" in result.reason.message and "boom" in result.reason.message
    assert Exploder.unloaded == ["unloaded"]


@pytest.mark.boot
def test_default_mode_reports_and_continues(default_image: ImageBundle, caplog: Any) -> None:
    Exploder.unloaded.clear()
    result = run(RunOptions(plugins=[Exploder], cmd="echo still-running", warm=True), None, image=default_image)
    assert result.ok, result.reason
    assert Exploder.unloaded == ["unloaded"]


class HookAtFirstSwitch(Plugin):
    """Installs an entry hook from inside on_asid_change (the engine's TLB fill) at the first switch."""

    name = "hook_at_first_switch"
    requires = ("core",)
    address = 0  # a kernel function's virtual address, set by the test

    def load(self) -> None:
        self.entries = 0
        self.handle: int | None = None
        self.qpp.register("core", "on_asid_change", self._switch, owner=self.name)

    def _switch(self) -> None:
        if self.handle is None:
            self.handle = self.machine.hooks.at_entry(self.address, self._entered)

    def _entered(self, _pc: int) -> None:
        self.entries += 1


@pytest.mark.boot
def test_a_hook_installed_during_an_address_space_switch_leaves_the_boot_alone(default_image: ImageBundle) -> None:
    """Regression: dropping translated code from inside the TLB fill re-entered it and injected an abort."""
    HookAtFirstSwitch.address = KernelProfile.load(default_image.profile_path).symbol("do_exit")  # type: ignore[arg-type]
    result = run(
        RunOptions(cmd="true", plugins=[HookAtFirstSwitch], strict=True), lambda _data: None, image=default_image
    )  # type: ignore[list-item]
    assert result.ok, result.reason
