"""Real boots of the default image: the full path from kernel entry to PSCI power-off."""

import json
import subprocess
import sys
from typing import Any, ClassVar

import construct
import pytest
from console_sink import Console

from qppsuite.core.memory import GuestMemoryError
from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, run

MARKER = b"qpp-memory-probe:0123456789"


class MemoryProbe(Plugin):
    """At the guest's write() of MARKER, exercise the core memory and register API on live state."""

    name = "memory_probe"
    seen: ClassVar[dict[str, Any]] = {}

    def load(self) -> None:
        self.qpp.register("core", "on_svc", self.on_svc, owner=self.name)

    def on_svc(self, event: Any) -> None:
        cpu, mem = self.machine.registers, self.machine.memory
        if cpu.read("r7") != 4 or "data" in self.seen:  # write(fd, buf, count)
            return
        buf, count = cpu.read("r1"), cpu.read("r2")
        data = mem.read(buf, count)
        if MARKER not in data:
            return
        seen = self.seen
        seen.update(data=data, fd=cpu.read("r0"), mode=cpu.mode, thumb=event.thumb, pc=event.pc)
        seen["cstring"] = mem.read_cstring(buf, limit=8)
        paddr = mem.translate(buf)
        seen["phys"] = self.machine.memory.read_phys(paddr, 8)
        layout = construct.Struct("magic" / construct.Bytes(4), "colon_at" / construct.Int8ul)
        seen["struct"] = mem.read_struct(layout, buf)
        seen["sp_svc"] = cpu.banked("sp", "svc")
        seen["sp_usr"] = cpu.read("sp")
        for name, address in (("null", 0), ("unmapped", 0xDEAD0000)):
            try:
                mem.read(address, 4)
            except GuestMemoryError as exc:
                seen[name] = exc
        seen["ttbr0"] = cpu.read("ttbr0")
        seen["other_as"] = mem.read(buf, count, ttbr0=seen["ttbr0"])

    def stop(self, reason: Any) -> None:
        self.seen["device_state"] = json.loads(json.dumps(self.machine._machine.device_state()))


@pytest.fixture(scope="module")
def probed_boot(default_image: ImageBundle) -> tuple[Any, str]:
    console = Console()
    MemoryProbe.seen.clear()
    cmd = f"printf '{MARKER.decode()}\\n'; echo boot-ok-$((6*7))"
    result = run(RunOptions(cmd=cmd, plugins=[MemoryProbe]), console, image=default_image)
    return result, console.text


@pytest.mark.boot
def test_boots_to_userspace_and_powers_off(probed_boot: tuple[Any, str]) -> None:
    result, text = probed_boot
    assert result.ok, result.reason
    assert result.reason.kind == "poweroff"
    assert "Linux version 6.1" in text
    assert "Run /init as init process" in text
    assert "boot-ok-42" in text
    assert "QPPSUITE-EXIT 0" in text
    assert "Kernel panic" not in text and "Oops" not in text


@pytest.mark.boot
def test_memory_api_reads_live_user_memory(probed_boot: tuple[Any, str]) -> None:
    seen = MemoryProbe.seen
    assert seen["data"].startswith(MARKER)
    assert seen["fd"] == 1 and seen["mode"] == "usr"
    assert seen["cstring"] == MARKER[:8]
    assert seen["phys"] == MARKER[:8], "the virtual read and the physical read of its translation agree"
    assert seen["struct"].magic == b"qpp-" and seen["struct"].colon_at == ord("m")
    assert seen["other_as"] == seen["data"], "an explicit TTBR0 reads the same address space"
    assert 0xC0000000 <= seen["sp_svc"] < 0xFF000000, "the banked SVC stack is a kernel address"
    assert seen["sp_usr"] < 0xC0000000
    assert isinstance(seen["null"], GuestMemoryError) and seen["null"].address == 0
    assert isinstance(seen["unmapped"], GuestMemoryError) and "translation" in seen["unmapped"].reason


@pytest.mark.boot
def test_device_state_is_explicit_and_serialisable_after_a_boot(probed_boot: tuple[Any, str]) -> None:
    """What snapshots and record/replay will save: every device's state as plain JSON, live values in it."""
    state = MemoryProbe.seen["device_state"]
    assert set(state) == {"gic", "timer", "uart", "channel", "psci", "clock"}
    assert state["psci"]["power_event"] == "off"
    assert state["clock"]["retired"] > 100_000_000


@pytest.mark.boot
def test_idle_time_costs_no_instructions(default_image: ImageBundle) -> None:
    """WFI skips virtual time: a 3-second sleep adds far fewer instructions than 3 s of busy CPU."""
    console = Console()
    result = run(RunOptions(cmd="sleep 3; cat /proc/uptime", warm=True), console, image=default_image)
    assert result.ok, result.reason
    uptime = float(console.text.split("QPPSUITE-EXIT")[0].strip().splitlines()[-1].split()[0])
    assert uptime >= 3.0
    # 3 s at the clock's 4 ns per instruction would be 750 M instructions if the guest were busy.
    assert result.insn_count < 450_000_000


@pytest.mark.boot
def test_max_insns_stops_with_a_reason(default_image: ImageBundle) -> None:
    console = Console()
    result = run(RunOptions(max_insns=100_000_000), console, image=default_image)
    assert result.reason.kind == "max_insns"
    assert result.insn_count == 100_000_000
    assert "Booting Linux" in console.text, "the console up to the stop is kept"


@pytest.mark.boot
def test_missing_init_is_reported_as_a_panic(default_image: ImageBundle) -> None:
    console = Console()
    result = run(RunOptions(extra_bootargs="rdinit=/no/such/init"), console, image=default_image)
    assert result.reason.kind == "panic"
    assert "Kernel panic - not syncing" in result.reason.message


def qppsuite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qppsuite", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.boot
def test_cli_run_exit_codes_and_console_file(default_image: ImageBundle, tmp_path: Any) -> None:
    console = tmp_path / "console.txt"
    ok = qppsuite("run", str(default_image.path), "--cmd", "echo cli-ok", "--console", str(console))
    assert ok.returncode == 0, ok.stderr
    assert "cli-ok" in console.read_text()
    assert "guest powered off" in ok.stderr
    stopped = qppsuite("run", str(default_image.path), "--max-insns", "1000000", "--quiet")
    assert stopped.returncode == 2
    assert stopped.stderr.strip().startswith("error: max_insns: instruction budget of 1000000 reached")
    missing = qppsuite("run", "no-such-image")
    assert missing.returncode == 1
    assert "Traceback" not in missing.stderr
    assert "image 'no-such-image' not found" in missing.stderr
