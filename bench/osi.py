"""What osi_linux costs: ``get_current_process()`` per call, and ``on_task_change`` left on for a whole run.

Three kinds of default-workload runs, back to back in one invocation of this
script (best wall time of ``--repeat`` runs each, so a busy neighbour on the
shared machine inflates nothing):

* ``baseline``: no plugin at all;
* ``switch_to``: osi_linux with one no-op function on ``on_task_change`` (the
  shipped mechanism: ``Machine.add_entry_hook`` on ``__switch_to``, a block
  hook bounded to that one address);
* ``switch_to_code_hook``: the same with a plain address (code) hook there;
* ``asid``: the alternative, deriving task changes from ``core:on_asid_change``
  (a function there asks osi_linux for the current thread); it is cheaper only
  because it sees fewer changes, and it is not correct (see the counts).

A fourth run measures ``get_current_process()`` at the guest's own system
calls (user mode, so ``current`` comes from ``__entry_task``): the *first*
call after the guest has run (which also pays for the host CPU caches the
emulator evicted), a *cold* call (translations re-walked, the cached process
re-validated by one block read), an *uncached* one (the process never seen
before), and *warm* repeated calls at the same instruction.

The ratios use the median CPU seconds of this process over the repeats (wall
seconds are shown too, but other work on a shared machine inflates them), and
"in task-change code" is the time spent inside osi_linux's hook and callback,
which no neighbour can inflate much.

Usage: ``python bench/osi.py [--repeat N] [--samples N]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from typing import Any

from qppsuite.core.events import AddressSpaceSwitch
from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import open_image
from qppsuite.plugins.osi_linux import OsiLinux
from qppsuite.plugins.osi_linux.model import OsiThread
from qppsuite.session import DEFAULT_IMAGE, RunOptions, RunResult, run

WARM_CALLS = 200


class TaskChangeCounter(Plugin):
    """A no-op on_task_change function: what a plugin that merely leaves the callback on pays."""

    name = "bench_switch"
    requires = ("osi_linux",)

    def load(self) -> None:
        self.changes = 0
        self.osi: OsiLinux = self.qpp.get("osi_linux")  # type: ignore[assignment]
        self.qpp.register("osi_linux", "on_task_change", self.on_change, owner=self.name)

    def on_change(self, old: OsiThread | None, new: OsiThread) -> None:
        self.changes += 1


class TimedOsiLinux(OsiLinux):
    """osi_linux timing its own task-change work (the switch hook and its address-space watch)."""

    spent = 0.0

    def _on_switch_to(self, pc: int) -> None:
        t0 = time.perf_counter()
        super()._on_switch_to(pc)
        self.spent += time.perf_counter() - t0

    def _on_asid_change(self, switch: AddressSpaceSwitch) -> None:
        t0 = time.perf_counter()
        super()._on_asid_change(switch)
        self.spent += time.perf_counter() - t0


class CodeHookOsiLinux(TimedOsiLinux):
    """The same on an address (code) hook: the mechanism osi_linux does not ship."""

    def _update_switch_hook(self) -> None:
        if self.on_task_change and self._switch_hook is None:
            self._switch_hook = self.machine.hooks.at_address(self.layout.switch_to, self._on_switch_to)


class AsidTaskChange(Plugin):
    """The alternative mechanism: a task change is assumed at every address-space switch."""

    name = "bench_asid"
    requires = ("osi_linux",)

    def load(self) -> None:
        self.changes = 0
        self.spent = 0.0
        self.osi: OsiLinux = self.qpp.get("osi_linux")  # type: ignore[assignment]
        self.last: OsiThread | None = None
        self.qpp.register("core", "on_asid_change", self.on_asid, owner=self.name)

    def on_asid(self, switch: AddressSpaceSwitch) -> None:
        t0 = time.perf_counter()
        new = self.osi.get_current_thread()
        if new is not None and new != self.last:
            self.changes += 1
            self.last = new
        self.spent += time.perf_counter() - t0


class CurrentProcessTimer(Plugin):
    """Times get_current_process() at every 20th system call of the run (in user mode, at the SVC)."""

    name = "bench_current"
    requires = ("osi_linux",)

    def load(self) -> None:
        self.osi: OsiLinux = self.qpp.get("osi_linux")  # type: ignore[assignment]
        self.qpp.register("core", "on_svc", self.on_svc, owner=self.name)
        self.count = 0
        self.first: list[float] = []
        self.cold: list[float] = []
        self.uncached: list[float] = []
        self.warm: list[float] = []

    def on_svc(self) -> None:
        self.count += 1
        if self.count % 20:
            return
        osi = self.osi
        clock = time.perf_counter
        t0 = clock()
        process = osi.get_current_process()
        self.first.append(clock() - t0)
        if process is None:
            return
        # bench only: what the next instruction would cost, with the host's CPU caches warm
        osi.mem.invalidate()
        osi._memo = None
        t0 = clock()
        osi.get_current_process()
        self.cold.append(clock() - t0)
        osi.mem.invalidate()
        osi._memo = None
        osi.tasks._processes.clear()
        t0 = clock()
        osi.get_current_process()
        self.uncached.append(clock() - t0)
        t0 = clock()
        for _ in range(WARM_CALLS):
            osi.get_current_process()
        self.warm.append((clock() - t0) / WARM_CALLS)


def timed_run(plugins: list[Any], image: Any) -> tuple[RunResult, float, dict[str, Plugin]]:
    """One default-workload run: its result, its CPU seconds, and the plugins it loaded."""
    loaded: dict[str, Plugin] = {}

    def keep(qpp: Any) -> None:
        loaded.update({name: qpp.get(name) for name in qpp.loaded})

    cpu = time.process_time()
    result = run(RunOptions(plugins=plugins), None, image=image, on_loaded=keep)
    cpu = time.process_time() - cpu
    if not result.ok:
        raise SystemExit(f"run failed: {result.reason}")
    return result, cpu, loaded


def us(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[int(len(values) * 0.9)]
    return f"{statistics.median(values) * 1e6:.1f} | {p90 * 1e6:.1f} | {len(values)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each configuration (best wall time kept)")
    args = parser.parse_args()
    image = open_image(DEFAULT_IMAGE)

    configs: dict[str, list[Any]] = {
        "baseline": [],
        "switch_to": [TimedOsiLinux, TaskChangeCounter],
        "switch_to_code_hook": [CodeHookOsiLinux, TaskChangeCounter],
        "asid": ["osi_linux", AsidTaskChange],
    }
    walls: dict[str, list[float]] = {label: [] for label in configs}
    cpus: dict[str, list[float]] = {label: [] for label in configs}
    insns: dict[str, int] = {}
    changes: dict[str, int] = {}
    spent: dict[str, float] = {}
    for _ in range(args.repeat):
        for label, plugins in configs.items():  # interleaved, so drift hits every configuration alike
            result, cpu_seconds, loaded = timed_run(plugins, image)
            walls[label].append(result.wall_seconds)
            cpus[label].append(cpu_seconds)
            insns[label] = result.insn_count
            for plugin in loaded.values():
                if isinstance(plugin, TaskChangeCounter | AsidTaskChange):
                    changes[label] = plugin.changes
                if isinstance(plugin, TimedOsiLinux | AsidTaskChange):
                    spent[label] = min(spent.get(label, float("inf")), plugin.spent)
    _, _, loaded = timed_run(["osi_linux", CurrentProcessTimer], image)
    timer = loaded["bench_current"]
    assert isinstance(timer, CurrentProcessTimer)

    when = time.strftime("%c", time.gmtime())
    print(f"Machine: {platform.machine()}, Python {platform.python_version()}, {when} UTC")
    print(f"Settings: default workload, {args.repeat} interleaved runs per configuration (medians).\n")
    print(
        "| Configuration | CPU s | vs. baseline | wall s | vs. baseline | guest instructions | task changes "
        "| in task-change code |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    cpu = {label: statistics.median(values) for label, values in cpus.items()}
    wall = {label: statistics.median(values) for label, values in walls.items()}
    for label in configs:
        seen = f"{changes[label]:,}" if label in changes else "-"
        inside = f"{spent[label] * 1e3:.0f} ms ({spent[label] / cpu['baseline']:.1%})" if label in spent else "-"
        print(
            f"| {label} | {cpu[label]:.2f} | {cpu[label] / cpu['baseline']:.3f}x "
            f"| {wall[label]:.2f} | {wall[label] / wall['baseline']:.3f}x | {insns[label]:,} | {seen} | {inside} |"
        )
    print("\nCPU seconds of every run:", {label: [round(v, 2) for v in values] for label, values in cpus.items()})
    print("\n| get_current_process() | median µs | p90 µs | samples |")
    print("|---|---:|---:|---:|")
    print(f"| warm (same instruction, {WARM_CALLS} calls averaged) | {us(timer.warm)} |")
    print(f"| first call after the guest ran | {us(timer.first)} |")
    print(f"| cold: new instruction, host caches warm | {us(timer.cold)} |")
    print(f"| uncached: process never seen before | {us(timer.uncached)} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
