"""Open files deep in the tree, on a real boot: a path longer than PATH_MAX is marked truncated, others are whole.

The guest keeps ``sleep`` holding three files: one 600 directories deep (1.2 KB
of path: whole, as the guest's own readlink gives it), one under 25
directories of 200-byte names (5 KB: the guest's readlink fails with
ENAMETOOLONG, osi_linux gives ``.../`` and the deepest components, marked
truncated), and /etc/passwd.  It stops sleep, then opens a marker, at which
a probe asks osi_linux for sleep's fds.
"""

import re
from typing import Any

import pytest
from console_sink import Console

from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.osi_linux import OsiFile, OsiLinux
from qppsuite.plugins.osi_linux.paths import PATH_MAX
from qppsuite.plugins.syscalls.context import SyscallContext
from qppsuite.session import RunOptions, run

pytestmark = pytest.mark.boot

MARKER = "/tmp/qpp-deep-marker"
LONG_NAME = "n" * 200
GUEST_CMD = f"""
cd /tmp
p=d; i=1; while [ $i -lt 600 ]; do p=$p/d; i=$((i+1)); done
mkdir -p $p && echo deep > $p/f
mkdir long && cd long
i=0; while [ $i -lt 25 ]; do mkdir {LONG_NAME} && cd -P {LONG_NAME}; i=$((i+1)); done
echo long > f
sleep 30 3< f 4< /tmp/$p/f 5< /etc/passwd &
pid=$!
n=0; while [ "$(cat /proc/$pid/comm)" != sleep ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done
echo "deep=$(readlink /proc/$pid/fd/4)"
readlink /proc/$pid/fd/3 > /dev/null || echo "long=unreadable"
kill -STOP $pid
cat {MARKER} 2> /dev/null
kill -KILL $pid
"""


class FdProbe(Plugin):
    """At the marker openat, osi_linux's fds of the stopped sleep."""

    name = "fd_probe"
    requires = ("osi_linux", "syscalls")

    def load(self) -> None:
        self.files: dict[int, OsiFile] | None = None
        self.qpp.register("syscalls", "on_sys_openat", self._openat, owner=self.name)

    def _openat(self, ctx: SyscallContext) -> None:
        args = {a.name: a.value for a in ctx.decoded()}
        if args.get("filename") != MARKER or self.files is not None:
            return
        osi: OsiLinux = self.qpp.get("osi_linux")  # type: ignore[assignment]
        sleep = next(p for p in osi.get_processes() if p.name == "sleep")
        self.files = osi.get_fds(sleep)


def test_a_path_beyond_path_max_is_marked_truncated_and_shorter_ones_are_whole(default_image: ImageBundle) -> None:
    console = Console()
    probes: list[FdProbe] = []

    def loaded(qpp: Any) -> None:
        probes.append(qpp.get("fd_probe"))

    result = run(
        RunOptions(
            cmd=GUEST_CMD,
            plugins=["osi_linux", "syscalls", FdProbe],  # type: ignore[list-item]
            strict=True,
            max_insns=3_000_000_000,
            warm=True,
        ),
        console,
        image=default_image,
        on_loaded=loaded,
    )
    assert result.ok, result.reason.message
    files = probes[0].files
    assert files is not None, console.text[-2000:]
    guest_deep = re.search(r"deep=(\S+)", console.text)
    assert guest_deep is not None and "long=unreadable" in console.text, console.text[-2000:]

    deep = files[4]
    assert deep == OsiFile(guest_deep.group(1)) and deep.path.count("/d") == 600

    long = files[3]
    assert long.truncated and not long.partial
    assert long.path.startswith(".../") and long.path.endswith(f"{LONG_NAME}/f")
    assert PATH_MAX - 256 < len(long.path) < PATH_MAX
    assert set(long.path[4:-2].split("/")) == {LONG_NAME}

    assert files[5] == OsiFile("/etc/passwd")
