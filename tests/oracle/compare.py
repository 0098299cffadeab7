"""Matching what strace printed inside the guest against the syscalls database, call by call.

Each thread's calls are aligned in order (strace prints a thread's calls in the order it made
them, and the database's ``seq`` is call order), on the call's name, with difflib's longest
matching blocks; an aligned pair then agrees when the pid and the result agree, and each string
strace printed is looked for among the stored argument and output values.

strace prints the guest's real tids (it runs inside the guest), so they are the database's tids
as they are; the pid of each tid comes from the fork calls strace printed.  Names need no map:
strace and the syscall table both take ARM's names from the kernel's arch/arm/tools/syscall.tbl
(``_llseek``, ``mmap2``, ``fstatat64``, ``clock_nanosleep_time64``...), so a differing name shows
as a call with no row.  strace's own calls are not in its output, so none are excluded.
"""

from __future__ import annotations

import difflib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from oracle.strace_log import StraceCall, thread_groups

RESTARTS = frozenset({"ERESTARTSYS", "ERESTARTNOINTR", "ERESTARTNOHAND", "ERESTART_RESTARTBLOCK"})
"""Kernel-internal results strace sees at syscall exit (include/linux/errno.h): the call is re-issued
after the signal handler (recorded ``restarted``), user mode gets EINTR (arch/arm/kernel/signal.c
do_signal), or the signal was fatal (recorded ``killed``)."""
NO_RETURN_ENDINGS = frozenset({"exit", "exec", "killed"})
"""Endings that mean what strace's ``= ?`` (or a call left ``<unfinished ...>``) means: no return to user mode."""


@dataclass
class Tally:
    """Agreement figures for one workload, with every mismatch kept for the report."""

    calls: int = 0
    calls_equal: int = 0
    strings: int = 0
    strings_equal: int = 0
    unprinted: int = 0
    """Rows of a traced thread, between its first and last aligned calls, that strace did not print."""
    mismatches: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def call_ratio(self) -> float:
        return self.calls_equal / self.calls if self.calls else 0.0

    @property
    def string_ratio(self) -> float:
        return self.strings_equal / self.strings if self.strings else 1.0

    def add(self, other: Tally) -> None:
        self.calls += other.calls
        self.calls_equal += other.calls_equal
        self.strings += other.strings
        self.strings_equal += other.strings_equal
        self.unprinted += other.unprinted
        for kind, examples in other.mismatches.items():
            self.mismatches[kind].extend(examples)

    def report(self, examples: int = 3) -> str:
        lines = []
        for kind, found in sorted(self.mismatches.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"{len(found):5d}  {kind}")
            lines.extend(f"         {e}" for e in found[:examples])
        return "\n".join(lines)


def _stored_bytes(value: Any) -> Iterator[bytes | None]:
    """Every string the database holds in a decoded value; None for an unreadable one."""
    if isinstance(value, str):
        yield value.encode()
    elif isinstance(value, list):
        for item in value:
            yield from _stored_bytes(item)
    elif isinstance(value, dict):
        if set(value) == {"hex"}:
            yield bytes.fromhex(value["hex"])
        elif set(value) == {"error"}:
            yield None
        else:
            for item in value.values():
                yield from _stored_bytes(item)


def _result_agrees(call: StraceCall, row: dict[str, Any]) -> bool:
    if call.errno in RESTARTS:
        return row["ending"] in ("restarted", "killed") or row["errno"] == "EINTR"
    if call.retval is None:
        return not row["returned"] and row["ending"] in NO_RETURN_ENDINGS
    # Not ``returned``: a successful execve returns 0 to the new image, and sigreturn's result is the
    # restored r0, which may be an error (-EINTR of the interrupted call), neither to the caller.
    if call.errno is not None:
        return row["errno"] == call.errno
    return row["retval"] is not None and row["errno"] is None and (row["retval"] ^ call.retval) & 0xFFFFFFFF == 0


def _string_agrees(wanted: bytes, cut: bool, stored: Iterable[bytes | None], truncated: bool) -> bool:
    for have in stored:
        if have is None:
            continue
        if have == wanted:
            return True
        shorter, longer = sorted((have, wanted), key=len)
        if longer.startswith(shorter) and (cut if shorter is wanted else truncated):
            return True
    return False


def _describe_row(row: dict[str, Any] | None) -> str:
    if row is None:
        return "no row"
    return f"{row['text']} [returned={row['returned']} ending={row['ending']}]"


def compare(strace: list[StraceCall], rows: list[dict[str, Any]]) -> Tally:
    """How many of strace's calls and strings the database holds, thread by thread.

    ``rows`` are the database's syscall rows (any order, any threads); a fork child's own
    return (``child`` = 1) is not a call of the child, so it is not aligned.
    """
    ours: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r["seq"]):
        if not row["child"]:
            ours[row["tid"]].append(row)
    theirs: dict[int, list[StraceCall]] = defaultdict(list)
    for call in strace:
        theirs[call.tid].append(call)
    groups = thread_groups(strace)
    tally = Tally()
    for tid, calls in theirs.items():
        mine = ours.get(tid, [])
        matcher = difflib.SequenceMatcher(None, [c.name for c in calls], [r["name"] for r in mine], autojunk=False)
        paired: dict[int, dict[str, Any]] = {}
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                paired[block.a + k] = mine[block.b + k]
        aligned = [i for block in matcher.get_matching_blocks() for i in range(block.b, block.b + block.size)]
        if aligned:
            used = set(aligned)
            for j in range(aligned[0], aligned[-1]):
                if j not in used:
                    tally.unprinted += 1
                    tally.mismatches[f"{mine[j]['name']}: a row strace did not print (not in the figures)"].append(
                        f"{tid} {_describe_row(mine[j])}"
                    )
        for i, call in enumerate(calls):
            tally.calls += 1
            row = paired.get(i)
            if row is None:
                tally.mismatches[f"{call.name}: no row for this call"].append(f"{tid} {call.text}")
                continue
            if row["pid"] != groups[tid]:
                tally.mismatches[f"{call.name}: pid differs"].append(
                    f"{call.text}  <->  pid {row['pid']}, strace's {groups[tid]}: {_describe_row(row)}"
                )
            elif _result_agrees(call, row):
                tally.calls_equal += 1
            else:
                tally.mismatches[f"{call.name}: result differs"].append(f"{call.text}  <->  {_describe_row(row)}")
            stored = [
                *_stored_bytes(json.loads(row["args"] or "{}")),
                *_stored_bytes(json.loads(row["outputs"] or "{}")),
            ]
            for wanted, cut in call.strings:
                tally.strings += 1
                if _string_agrees(wanted, cut, stored, bool(row["truncated"])):
                    tally.strings_equal += 1
                else:
                    tally.mismatches[f"{call.name}: string {'unreadable' if None in stored else 'differs'}"].append(
                        f"{wanted[:60]!r}  <->  {_describe_row(row)}"
                    )
    return tally


def summary_line(label: str, tally: Tally) -> str:
    return (
        f"{label}: calls {tally.calls_equal}/{tally.calls} = {100 * tally.call_ratio:.2f} %, "
        f"strings {tally.strings_equal}/{tally.strings} = {100 * tally.string_ratio:.2f} %, "
        f"rows strace did not print {tally.unprinted}"
    )
