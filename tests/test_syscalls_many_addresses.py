"""A guest that makes system calls from thousands of addresses: the host keeps a bounded number of hooks.

The program (tools/arm_svc_program.py) is a hand-assembled static ARM ELF: getpid from
SITES distinct SVC instructions, ROUNDS times over.  Every call must still be paired with its
return, and the syscalls plugin's return hooks must stay under RETURN_HOOK_CACHE plus the
calls blocked at that moment, however many addresses the guest uses; so must the entry hooks the
engine holds, counted by the engine rather than by the plugin.  The Unicorn hooks the engine walks
at every block do not grow at all: entry hooks are a table in the native instruction counter.
"""

import sqlite3
from pathlib import Path

import pytest
from oracle.guest import logged_run
from tool_modules import load_tool

from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.syscalls import RETURN_HOOK_CACHE, Syscalls
from qppsuite.session import RunOptions, run

SITES = 9000  # past 8,170 the return pcs reach a page never run before (0x20000)
ROUNDS = 2
BLOCKED_AT_MOST = 16  # threads the guest has blocked in a call at one time (init, the shell, its waits)
MACHINE_HOOKS = 3  # the machine's exception, unmapped-memory and undefined-instruction hooks
OSI_ENTRY_HOOKS = 2  # osi_linux's __switch_to and do_exit


class HookWatch(Plugin):
    """Samples the syscalls plugin's return hooks and the engine's live hooks at every call."""

    name = "hook_watch"
    requires = ("syscalls",)

    def load(self) -> None:
        self.most = 0
        self.most_in_engine = 0
        self.most_entries = 0
        syscalls = self.qpp.get("syscalls")
        assert isinstance(syscalls, Syscalls)
        self.syscalls = syscalls
        self.qpp.register("syscalls", "on_syscall", self.sample, owner=self.name)

    def sample(self) -> None:
        self.most = max(self.most, self.syscalls.return_hook_count)
        self.most_in_engine = max(self.most_in_engine, self.machine._machine.engine.hook_count)
        self.most_entries = max(self.most_entries, self.machine._machine.engine.entry_hook_count)


@pytest.mark.boot
def test_calls_from_thousands_of_addresses_keep_the_hooks_bounded_and_every_call_paired(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    tool = load_tool("arm_svc_program")
    cmd = tool.uudecode_command(tool.program(SITES, ROUNDS), "/tmp/svcs") + "/tmp/svcs && echo PROGRAM-DONE"
    watches: list[HookWatch] = []
    logged = logged_run(
        default_image,
        cmd,
        tmp_path / "many.db",
        extra=[HookWatch],
        on_loaded=lambda qpp: watches.append(qpp.get("hook_watch")),
    )
    assert "PROGRAM-DONE" in logged.console
    conn = sqlite3.connect(tmp_path / "many.db")
    pid, exit_status, state = conn.execute(
        "SELECT pid, exit_status, state FROM processes WHERE name = 'svcs'"
    ).fetchone()
    assert (exit_status, state) == (0, "X")  # it ends with the exit system call, not exit_group: do_exit saw it
    rows = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT pc), SUM(returned), SUM(retval = pid) FROM syscalls "
        "WHERE pid = ? AND name = 'getpid'",
        (pid,),
    ).fetchone()
    assert rows == (SITES * ROUNDS, SITES, SITES * ROUNDS, SITES * ROUNDS)
    assert watches[0].most <= RETURN_HOOK_CACHE + BLOCKED_AT_MOST, watches[0].most
    assert watches[0].most_entries <= RETURN_HOOK_CACHE + BLOCKED_AT_MOST + OSI_ENTRY_HOOKS, watches[0].most_entries
    assert watches[0].most_in_engine == MACHINE_HOOKS, watches[0].most_in_engine


@pytest.mark.boot
def test_tracing_calls_from_many_addresses_does_not_change_the_guests_execution(
    default_image: ImageBundle, tmp_path: Path
) -> None:
    """Plugins observe, they do not perturb: the traced run executes exactly the bare run's instructions, so a
    recording made bare replays with plugins.  Hooks added and dropped per call used to end quanta early, and
    each such stop counted one instruction that had not run: 44,335 instructions more at 2,000 addresses."""
    tool = load_tool("arm_svc_program")
    cmd = tool.uudecode_command(tool.program(2000, ROUNDS), "/tmp/svcs") + "/tmp/svcs && echo PROGRAM-DONE"
    bare = run(RunOptions(cmd=cmd, warm=True), None, image=default_image)
    stack = ["osi_linux", "syscalls", "syscalls_logger"]
    traced = run(
        RunOptions(
            cmd=cmd, plugins=stack, plugin_args={"syscalls_logger": {"db": str(tmp_path / "t.db")}}, warm=True
        ),
        None,
        image=default_image,
    )
    assert bare.ok and traced.ok
    assert traced.insn_count == bare.insn_count
