#!/usr/bin/env python3
"""Capture the guest memory the syscall decoder reads, for unit tests that replay real bytes.

As a plugin (``--plugins osi_linux,syscalls,tools/capture_syscall_reads.py -p
capture_syscall_reads:out=reads.json``) it decodes the chosen calls with a reader that
records every guest read the decoder makes, once at the call and once at the return (the
two views differ: the kernel writes in between).  As a script it joins a capture with the
strace lines the guest printed in the same run::

    python3 tools/capture_syscall_reads.py join reads.json console.txt tests/data/syscalls/strace_reads.json

keeping, for each call name, a few calls whose tid and order match a strace line.  The
output is what tests/test_syscall_decode.py replays: the decoder sees exactly the bytes it
saw in the guest, and its text must equal strace's line.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

from qppsuite.core.memory import GuestMemoryError
from qppsuite.core.qpp import Arg, Plugin
from qppsuite.plugins.syscalls.context import SyscallContext
from qppsuite.plugins.syscalls.decode import GuestReader, decode_args, decode_return

NAMES = (
    "readv writev sendmsg recvmsg poll getdents64 statx stat64 fstat64 lstat64 rt_sigaction rt_sigprocmask "
    "rt_sigpending wait4 uname prlimit64 ugetrlimit epoll_ctl epoll_wait timerfd_settime timerfd_gettime64 "
    "_llseek prctl fcntl64 ioctl futex futex_time64 setsockopt getsockopt clone mmap2 write openat getsockname "
    "getpeername getrandom"
)


class _Recorder:
    """A GuestReader that remembers every successful read (address -> hex bytes)."""

    def __init__(self, inner: GuestReader) -> None:
        self.inner = inner
        self.reads: list[tuple[int, str]] = []

    def read(self, vaddr: int, size: int) -> bytes:
        data = self.inner.read(vaddr, size)
        self.reads.append((vaddr, data.hex()))
        return data

    def read_cstring(self, vaddr: int, limit: int) -> bytes:
        data = self.inner.read_cstring(vaddr, limit)
        self.reads.append((vaddr, (data + b"\0").hex() if len(data) < limit else data.hex()))
        return data


class CaptureSyscallReads(Plugin):
    """Records the decoder's guest reads for the calls named in ``names``."""

    name = "capture_syscall_reads"
    requires = ("osi_linux", "syscalls")
    args: ClassVar[Any] = {
        "out": Arg(Path, None, help="JSON file to write"),
        "names": Arg(str, NAMES, help="space-separated call names"),
    }

    def load(self) -> None:
        self.names = set(self.args.names.split())
        self.get_current_thread = self.qpp.import_function("osi_linux", "get_current_thread")
        self.calls: dict[int, dict[str, Any]] = {}
        self.qpp.register("syscalls", "on_syscall", self._call, owner=self.name)
        self.qpp.register("syscalls", "on_syscall_return", self._return, owner=self.name)

    def _call(self, ctx: SyscallContext) -> None:
        if ctx.name not in self.names or ctx.spec is None:
            return
        thread = self.get_current_thread()
        recorder = _Recorder(ctx.memory)
        decode_args(ctx.spec, ctx.raw_args, recorder)
        self.calls[ctx.seq] = {
            "tid": thread.tid if thread is not None else None,
            "name": ctx.name,
            "raw_args": list(ctx.raw_args),
            "entry_reads": recorder.reads,
        }

    def _return(self, ctx: SyscallContext, retval: int) -> None:
        call = self.calls.get(ctx.seq)
        if call is None or ctx.child or "retval" in call or ctx.spec is None:
            return
        recorder = _Recorder(ctx.memory)
        try:
            decode_return(ctx.spec, retval, ctx.raw_args, recorder)
        except GuestMemoryError:
            return
        call["retval"] = retval & 0xFFFFFFFF
        call["return_reads"] = recorder.reads

    def unload(self) -> None:
        out = self.args.out
        if out is not None:
            Path(out).write_text(json.dumps([c for _, c in sorted(self.calls.items())]), encoding="utf-8")


def strace_lines(console: str) -> list[tuple[int, str, str]]:
    """(tid, name, line) of each line strace printed between STRACE-BEGIN and STRACE-END, with
    ``<unfinished ...>`` calls joined to their resumption, the padding before `` = `` removed and
    errno descriptions dropped (qppsuite prints the name only)."""
    body = console.replace("\r", "")
    block = body[body.index("STRACE-BEGIN") : body.index("STRACE-END")].splitlines()[1:]
    out = []
    pending: dict[int, str] = {}
    for line in block:
        m = re.match(r"^(\d+)\s+(.*)$", line)
        if m is None or m[2].startswith(("---", "+++")):
            continue
        tid, rest = int(m[1]), m[2]
        if rest.endswith(" <unfinished ...>"):
            pending[tid] = rest.removesuffix(" <unfinished ...>")
            continue
        resumed = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", rest)
        if resumed:
            rest = pending.pop(tid, resumed[1] + "(") + resumed[2]
        rest = re.sub(r"\)\s+= ", ") = ", rest)
        rest = re.sub(r"( = -1 E\w+) \(.*\)$", r"\1", rest)
        out.append((tid, rest.split("(", 1)[0], rest))
    return out


def join(capture: Path, console: Path, out: Path, per_name: int = 2) -> None:
    """Keep up to ``per_name`` successful and ``per_name`` failed calls of each name."""
    calls = json.loads(capture.read_text(encoding="utf-8"))
    lines = strace_lines(console.read_text(encoding="utf-8", errors="replace"))
    by_key: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        if "retval" in call:
            by_key[(call["tid"], call["name"])].append(call)
    # strace's traced pid started as a fork of strace: skip our calls made before its execve
    # by matching from the end of each (tid, name) sequence.
    wanted = [(tid, name, text) for tid, name, text in lines if name in NAMES.split()]
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for tid, name, _ in wanted:
        counts[(tid, name)] += 1
    kept: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen: dict[tuple[int, str], int] = defaultdict(int)
    for tid, name, text in wanted:
        key = (tid, name)
        ours = by_key[key]
        index = len(ours) - counts[key] + seen[key]
        seen[key] += 1
        if ", TCGETS, {" in text:  # strace decodes struct termios; we keep its address
            continue
        failed = " = -1 " in text
        same_kind = [k for k in kept[name] if (" = -1 " in k["strace"]) == failed]
        if index < 0 or len(same_kind) >= per_name or any(k["strace"] == text for k in kept[name]):
            continue
        kept[name].append({**ours[index], "strace": text})
    rows = [c for name in sorted(kept) for c in kept[name]]
    out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} calls of {len(kept)} kinds to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "join":
        sys.exit(__doc__)
    join(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
