"""Reading what strace printed inside the guest (``strace -f -o FILE``): one record per call.

strace's own output format (strace(1), "DESCRIPTION" and "-f"): each line starts with the
thread's id; a call interrupted by another thread's line is split into ``name(args <unfinished ...>``
and ``<... name resumed>rest``; signal deliveries start with ``---`` and exits with ``+++``.
The result follows the last `` = ``: a number, an address in hex, ``?`` when the call did not
return, ``-1 ENAME (description)`` for an error, or an ``ERESTART*`` name for a call the kernel
restarts or turns into EINTR.  umask's result is octal (``= 022``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_RESULT = re.compile(r"\)\s+= (\?|-?\d+|0x[0-9a-f]+)(?: (E[A-Z0-9_]+|<unavailable>))?(?: \(.*\))?(?: <.*>)?$")
_THREAD_FLAG = re.compile(r"\bCLONE_THREAD\b")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"(\.\.\.)?')
_ESCAPES = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "a": 7, "b": 8, "\\": 92, '"': 34, "'": 39, "?": 63}
OCTAL_RESULTS = frozenset({"umask"})
"""Calls whose result strace prints in octal."""


@dataclass(frozen=True)
class StraceCall:
    """One call as strace printed it: ``retval`` None when it printed ``?``."""

    tid: int
    name: str
    text: str
    retval: int | None
    errno: str | None
    strings: tuple[tuple[bytes, bool], ...]  # every quoted string, unescaped, and whether strace cut it ("...")


def unescape(text: str) -> bytes:
    """strace's C escaping (``\\n``, ``\\NNN`` octal, ``\\xNN``) back to the bytes the guest had."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode()
            i += 1
            continue
        nxt = text[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "x":
            digits = re.match(r"[0-9a-fA-F]{1,2}", text[i + 2 :])
            assert digits is not None, text
            out.append(int(digits[0], 16))
            i += 2 + len(digits[0])
        else:
            digits = re.match(r"[0-7]{1,3}", text[i + 1 :])
            assert digits is not None, text
            out.append(int(digits[0], 8))
            i += 1 + len(digits[0])
    return bytes(out)


def _result(name: str, text: str) -> tuple[int | None, str | None]:
    m = _RESULT.search(text)
    if m is None:
        raise ValueError(f"no result in strace line: {text}")
    value, errno = m[1], m[2]
    if value == "?":
        return None, errno if errno and errno.startswith("E") else None
    if value.startswith("0x"):
        return int(value, 16), None
    number = int(value, 8) if name in OCTAL_RESULTS and value != "0" else int(value)
    if errno is not None and errno.startswith("E") and number == -1:
        return -1, errno
    return number, None


def parse(text: str) -> list[StraceCall]:
    """Every call in strace's output, in the order strace finished printing them.

    Signal and exit lines are skipped; an ``<unfinished ...>`` call is joined with its
    resumption and placed where it resumed.
    """
    calls = []
    pending: dict[int, str] = {}
    for line in text.replace("\r", "").splitlines():
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"strace line without a thread id: {line!r}")
        tid, rest = int(m[1]), m[2]
        if rest.startswith(("---", "+++")):
            continue
        if rest.endswith(" <unfinished ...>"):
            pending[tid] = rest.removesuffix(" <unfinished ...>")
            continue
        resumed = _RESUMED.match(rest)
        if resumed:
            rest = pending.pop(tid, resumed[1] + "(") + resumed[2]
        name = rest.split("(", 1)[0]
        retval, errno = _result(name, rest)
        args = rest[: _RESULT.search(rest).start()]  # type: ignore[union-attr]
        strings = tuple((unescape(s[1]), bool(s[2])) for s in _STRING.finditer(args))
        calls.append(StraceCall(tid, name, rest, retval, errno, strings))
    # A thread killed while blocked leaves its call unfinished: strace printed no result.
    for tid, rest in pending.items():
        name = rest.split("(", 1)[0]
        strings = tuple((unescape(s[1]), bool(s[2])) for s in _STRING.finditer(rest))
        calls.append(StraceCall(tid, name, rest, None, None, strings))
    return calls


FORKS = frozenset({"clone", "clone3", "fork", "vfork"})
"""Calls whose positive result is a new task's tid (kernel/fork.c)."""


def thread_groups(calls: list[StraceCall]) -> dict[int, int]:
    """Each tid strace saw -> its process id (thread group id), from the fork calls strace printed.

    A child made with ``CLONE_THREAD`` joins its creator's thread group; any other child leads a
    new one (kernel/fork.c copy_process).  A tid no printed fork made (the traced command itself)
    leads its own.
    """
    parent: dict[int, tuple[int, bool]] = {}
    for call in calls:
        if call.name in FORKS and call.errno is None and call.retval is not None and call.retval > 0:
            parent[call.retval] = (call.tid, bool(_THREAD_FLAG.search(call.text)))

    def group(tid: int) -> int:
        creator, thread = parent.get(tid, (tid, False))
        return group(creator) if thread else tid

    return {call.tid: group(call.tid) for call in calls}
