"""The strace-like text of a decoded call: ``openat(AT_FDCWD, "/tmp/x", O_RDONLY) = 3``.

Strings are C-quoted as strace quotes them (``values.quote``), structs use strace's field
names and its abbreviations (``{st_mode=S_IFREG|0644, st_size=30, ...}``), and the few
calls strace prints in their own way (clone's named arguments, poll's revents after the
result, fcntl's flag results) are special-cased here by name.
"""

from collections.abc import Callable, Sequence

from qppsuite.plugins.syscalls import structs
from qppsuite.plugins.syscalls.arm_linux_abi import AT_FDCWD, FLAGSETS
from qppsuite.plugins.syscalls.decode import DecodedArg, DecodedReturn
from qppsuite.plugins.syscalls.values import JSONValue, quote_value

_SYMBOLIC_KEYS = frozenset({"family", "events", "revents", "d_type"})
DIRFD_NAMES = frozenset({"dfd", "olddfd", "newdfd", "from_dfd", "to_dfd"})
"""The directory fd arguments, where -100 is ``AT_FDCWD`` (strace prints it so there only)."""
_PAGE_SHIFT = 12


def _format_error(value: dict[str, JSONValue]) -> str:
    text = str(value["error"])
    return f"{text.removeprefix('bad address ')} <bad>"


def _format_nested(value: JSONValue, key: str = "") -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value if key in _SYMBOLIC_KEYS else str(quote_value(value))
    if isinstance(value, list):
        return "[" + ", ".join(_format_nested(v) for v in value) + "]"
    if "error" in value:
        return _format_error(value)
    text = quote_value(value)
    if text is not None:
        return text
    return "{" + ", ".join(f"{k}={_format_nested(v, k)}" for k, v in value.items()) + "}"


def _hex(value: int) -> str:
    return f"{value:#x}" if value else "0"


def _sockaddr(value: dict[str, JSONValue]) -> str:
    """strace's sockaddr: ``{sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("10.0.2.2")}``."""
    family = value.get("family")
    parts = [f"sa_family={family}"]
    if family == "AF_INET" and "addr" in value:
        parts += [f"sin_port=htons({value['port']})", f'sin_addr=inet_addr("{value["addr"]}")']
    elif family == "AF_INET6" and "addr" in value:
        parts += [
            f"sin6_port=htons({value['port']})",
            f"sin6_flowinfo=htonl({value['flowinfo']})",
            f'inet_pton(AF_INET6, "{value["addr"]}", &sin6_addr)',
        ]
        if "scope_id" in value:
            parts.append(f"sin6_scope_id={value['scope_id']}")
    elif family == "AF_UNIX" and "path" in value:
        path = quote_value(value["path"]) or ""
        parts.append(f"sun_path=@{path[0]}{path[2:]}" if value.get("abstract") else f"sun_path={path}")
    elif "data" in value:
        parts.append(f"sa_data={quote_value(value['data'])}")
    return "{" + ", ".join(parts) + "}"


def _iovecs(value: list[JSONValue], truncated: bool) -> str:
    parts = []
    for item in value:
        if isinstance(item, dict) and "error" not in item:
            parts.append(f"{{iov_base={_format_nested(item.get('base'))}, iov_len={item.get('len')}}}")
        else:
            parts.append(_format_nested(item))
    return "[" + ", ".join(parts) + ("..." if truncated else "") + "]"


def _msghdr(value: dict[str, JSONValue], truncated: bool, entry: JSONValue = None) -> str:
    """strace's msghdr; with the ``entry`` value (recvmsg), a changed namelen shows ``a => b``."""
    name = value["msg_name"]
    iov = value["msg_iov"]
    iov_text = _iovecs(iov, truncated) if isinstance(iov, list) else _format_nested(iov)
    namelen = str(value["msg_namelen"])
    if isinstance(entry, dict) and "msg_namelen" in entry and entry["msg_namelen"] != value["msg_namelen"]:
        namelen = f"{entry['msg_namelen']} => {namelen}"
    shown_name = _sockaddr(name) if isinstance(name, dict) and "family" in name else _format_nested(name)
    text = (
        f"{{msg_name={_hex(name) if isinstance(name, int) else shown_name}, "
        f"msg_namelen={namelen}, msg_iov={iov_text}, msg_iovlen={value['msg_iovlen']}, "
    )
    control = value["msg_control"]
    if isinstance(control, int) and value["msg_controllen"]:
        text += f"msg_control={_hex(control)}, "
    return text + f"msg_controllen={value['msg_controllen']}, msg_flags={value['msg_flags']}}}"


def _pollfds(value: list[JSONValue], truncated: bool, field: str = "events") -> str:
    parts = []
    for item in value:
        if isinstance(item, dict):
            parts.append(f"{{fd={item['fd']}, {field}={item[field]}}}")
    return "[" + ", ".join(parts) + ("..." if truncated else "") + "]"


def _struct_text(arg: DecodedArg) -> str | None:
    """A decoded struct (or array of them) in strace's form, if its printer is known."""
    printer = arg.printer
    value = arg.value
    if printer == "sigset":
        return structs.render_sigset(value)
    if printer == "loff_t" or printer == "int_ptr":
        return f"[{value}]"
    if printer == "pollfd" and isinstance(value, list):
        return _pollfds(value, arg.truncated)
    if printer == "linux_dirent64" and isinstance(value, dict):
        return f"{_hex(arg.raw)} /* {value['count']} entries */"
    if printer == "user_msghdr" and isinstance(value, dict):
        return _msghdr(value, arg.truncated)
    if printer == "sockaddr" and isinstance(value, dict) and "family" in value:
        return _sockaddr(value)
    codec = structs.CODECS.get(printer or "")
    render: Callable[[dict[str, JSONValue]], str] | None = codec.render if codec is not None else None
    if render is None:
        return None
    if isinstance(value, dict):
        return render(value)
    if isinstance(value, list):
        items = [render(v) if isinstance(v, dict) else _format_nested(v) for v in value]
        return "[" + ", ".join(items) + ("..." if arg.truncated else "") + "]"
    return None


def format_arg(arg: DecodedArg) -> str:
    """One argument as strace would print it."""
    value = arg.value
    if isinstance(value, dict) and "error" in value:
        return f"{arg.raw:#x} <bad>"
    if value is None:
        return "NULL"
    t = arg.type
    if arg.printer == "hex" and isinstance(value, int):
        return _hex(value)
    if arg.printer == "pgoff" and isinstance(value, int):
        return _hex(value << _PAGE_SHIFT)
    if arg.printer is not None:
        text = _struct_text(arg)
        if text is not None:
            return text
    if t == "fd" and isinstance(value, int):
        return "AT_FDCWD" if value == AT_FDCWD and arg.name in DIRFD_NAMES else str(value)
    if t == "mode" and isinstance(value, int):
        return "0" + format(value, "o") if value else "000"
    if t in ("ptr", "buf", "iov", "struct") and isinstance(value, int):
        return f"{value:#x}"
    if t in ("cstring", "path", "buf"):
        text = quote_value(value, arg.truncated, force_hex=arg.printer == "hex_string")
        if text is not None:
            return text
    if t == "iov" and isinstance(value, list):
        return _iovecs(value, arg.truncated)
    if t == "argv" and isinstance(value, list) and arg.name == "envp":  # strace abbreviates the environment
        return f"{arg.raw:#x} /* {len(value)}{'+' if arg.truncated else ''} vars */"
    if t == "argv" and isinstance(value, list):
        items = [_format_nested(v) for v in value]
        if arg.truncated:
            items.append("...")
        return "[" + ", ".join(items) + "]"
    if isinstance(value, str):
        return value
    return _format_nested(value)


def format_return(result: DecodedReturn) -> str:
    """``3``, ``-1 ENOENT`` (the way libc would report it), or an address in hex."""
    if result.errno is not None:
        return f"-1 {result.errno}"
    return f"{result.value:#x}" if result.address else str(result.value)


def _clone_args(args: Sequence[DecodedArg]) -> str:
    """clone as strace prints it on ARM: named arguments, each only when its flag asks."""
    by_name = {a.name: a for a in args}
    flags = by_name["clone_flags"].raw
    parts = [f"child_stack={format_arg(by_name['newsp'])}", f"flags={format_arg(by_name['clone_flags'])}"]
    if flags & 0x101000:  # CLONE_PARENT_SETTID | CLONE_PIDFD
        parts.append(f"parent_tid={format_arg(by_name['parent_tidptr'])}")
    if flags & 0x80000:  # CLONE_SETTLS
        parts.append(f"tls={format_arg(by_name['tls'])}")
    if flags & 0x1200000:  # CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID
        parts.append(f"child_tidptr={format_arg(by_name['child_tidptr'])}")
    return ", ".join(parts)


def _return_text(name: str, args: Sequence[DecodedArg], result: DecodedReturn) -> str:
    text = format_return(result)
    if result.errno is not None:
        return text
    if name in ("_newselect", "pselect6", "pselect6_time64") and result.value == 0:
        return text + " (Timeout)"
    if name == "umask":  # the previous mask, in octal like the argument (C's %#03o)
        return ("0" + format(result.value, "o") if result.value else "0").rjust(3, "0")
    if name in ("poll", "ppoll", "ppoll_time64"):
        if result.value == 0:
            return text + " (Timeout)"
        revents = next((o for o in result.outputs if o.name == "revents"), None)
        if revents is not None and isinstance(revents.value, list):
            return f"{text} ({_pollfds(revents.value, revents.truncated, 'revents')})"
    if name in ("fcntl", "fcntl64") and len(args) > 1:
        command = args[1].value
        if command == "F_GETFD" and result.value:
            return f"{result.value:#x} (flags {FLAGSETS['fd_cloexec'].format(result.value)})"
        if command == "F_GETFL":
            return f"{_hex(result.value)} (flags {FLAGSETS['open_flags'].format(result.value)})"
    return text


def format_call(name: str, decoded: Sequence[DecodedArg], result: DecodedReturn | None = None) -> str:
    """A strace-like line: ``openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0644)``.

    With ``result``, output arguments are shown as the kernel filled them and `` = value``
    is appended.
    """
    args: Sequence[DecodedArg] = decoded
    changed: dict[str, str] = {}
    if result is not None:
        if result.outputs:  # most results have none: the arguments are shown as they were
            outputs = {out.name: out for out in result.outputs}
            for before in args:  # value-result ints (socklen_t *): strace's [entry => exit]
                after = outputs.get(before.name)
                if after is not None and before.printer == after.printer == "int_ptr" and before.value != after.value:
                    changed[before.name] = f"[{before.value} => {after.value}]"
            args = [outputs.get(a.name, a) for a in args]
        if name == "recvmsg" and len(args) > 1 and args[1].printer == "user_msghdr" and isinstance(args[1].value, dict):
            inner = _msghdr(args[1].value, args[1].truncated, decoded[1].value)
            rest = ", ".join(format_arg(a) for a in args[2:])
            return f"{name}({format_arg(args[0])}, {inner}, {rest}) = {_return_text(name, decoded, result)}"
    if name == "clone" and {"clone_flags", "newsp", "parent_tidptr", "tls", "child_tidptr"} <= {a.name for a in args}:
        inner = _clone_args(args)
    elif changed:
        inner = ", ".join(changed.get(a.name) or format_arg(a) for a in args)
    else:
        inner = ", ".join(map(format_arg, args))
    line = f"{name}({inner})"
    if result is not None:
        line += f" = {_return_text(name, decoded, result)}"
    return line
