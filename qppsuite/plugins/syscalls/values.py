"""How guest bytes are stored (JSON) and how strace shows them (C-quoted).

Storage is lossless and readable by SQL: bytes that are valid UTF-8 become a plain JSON
string (``json_extract(args, '$.buf')`` gives the text itself, a count of 6 is 6
characters), and any other bytes become ``{"hex": "<lowercase hex of every byte>"}``.

Display follows strace's ``string_quote`` (strace src/util.c, default options, no ``-x``):
``"`` and ``\\`` are backslash-escaped, ``\\f \\n \\r \\t \\v`` use their C escapes, other
printable ASCII (0x20-0x7e) is itself, and every other byte is octal with as few digits as
possible, or three when the next character is an octal digit (``"\\1\\377"``,
``"\\0011"``).  A value cut at a limit is followed by ``...``.
"""

import json
from typing import TypeAlias

JSONValue: TypeAlias = "int | str | bool | list[JSONValue] | dict[str, JSONValue] | None"


def signed32(value: int) -> int:
    """A 32-bit register's value read as two's complement (the C ``int``/``long`` of ARM EABI)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def text_or_hex(data: bytes) -> JSONValue:
    """``data`` as a JSON string if it is valid UTF-8, else ``{"hex": "..."}`` (lossless)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": data.hex()}


#: How a TEXT column's value that is the JSON text of ``{"hex": ...}`` starts (``json.dumps``' spacing).
HEX_COLUMN_PREFIX = '{"hex": '


def column_text(value: JSONValue) -> str | None:
    """A decoded value for a TEXT column: a string as it is (a path, an argument), anything else
    (``{"hex": ...}``, ``{"error": ...}``, a list) as its JSON text; None stays None.

    A string that itself starts like ``{"hex": ...}``'s JSON text is stored as that object of its bytes, so
    the readers, which take such text for bytes, cannot be given other bytes than the guest's: a file a
    program names ``{"hex": "2f6574632f736861646f77"}`` is not shown as ``/etc/shadow``.
    """
    if isinstance(value, str) and value.startswith(HEX_COLUMN_PREFIX):
        value = {"hex": value.encode("utf-8", "surrogateescape").hex()}
    return value if value is None or isinstance(value, str) else json.dumps(value)


def stored_bytes(value: JSONValue) -> bytes | None:
    """The bytes a ``text_or_hex`` value holds, or None if ``value`` is not one."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("hex"), str):
        try:
            return bytes.fromhex(str(value["hex"]))
        except ValueError:
            return None
    return None


_C_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v"}


def _quote_byte(c: int, following: int | None) -> str:
    escape = _C_ESCAPES.get(c)
    if escape is not None:
        return escape
    if 0x20 <= c < 0x7F:
        return chr(c)
    if following is not None and 0x30 <= following <= 0x37:
        return f"\\{c:03o}"
    return f"\\{c:o}"


_SIMPLE: tuple[str, ...] = tuple(_C_ESCAPES.get(c, chr(c) if 0x20 <= c < 0x7F else f"\\{c:o}") for c in range(256))


def quote(data: bytes, truncated: bool = False) -> str:
    """``data`` between double quotes exactly as strace prints it, ``...`` after if cut."""
    parts = []
    last = len(data) - 1
    for i, c in enumerate(data):
        if c < 0x20 or c >= 0x7F:
            parts.append(_quote_byte(c, data[i + 1] if i < last else None))
        else:
            parts.append(_SIMPLE[c])
    return '"' + "".join(parts) + '"' + ("..." if truncated else "")


def quote_hex(data: bytes, truncated: bool = False) -> str:
    """Every byte as ``\\xHH``: strace's QUOTE_FORCE_HEX, used for getrandom's buffer."""
    return '"' + "".join(f"\\x{b:02x}" for b in data) + '"' + ("..." if truncated else "")


def quote_value(value: JSONValue, truncated: bool = False, force_hex: bool = False) -> str | None:
    """A stored text/hex value quoted as strace would, or None if ``value`` holds no bytes."""
    data = stored_bytes(value)
    if data is None:
        return None
    return quote_hex(data, truncated) if force_hex else quote(data, truncated)
