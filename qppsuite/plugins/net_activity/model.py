"""What net_activity records: endpoints, sockets and network events, as plain values.

An :class:`Endpoint` is built from a socket address exactly as the ``syscalls`` plugin decoded it
(``qppsuite.plugins.syscalls.decode.decode_sockaddr``): a dict with ``family`` (strace's ``AF_*``
name, or the number as text for a family strace does not name) and ``addr``/``port`` (AF_INET,
AF_INET6), ``path`` (AF_UNIX; an abstract name starts with ``@``) or ``data`` (any other family);
an address the decoder could not read is ``{"error": ...}``, one it did not decode (a length under
2, no length) is the pointer as an int, NULL is None.  Guest data decides all of these, so
nothing here assumes a shape: what does not fit is no endpoint.

Protocol names follow strace's ``socket`` decoder (strace src/net.c, ``SYS_FUNC(socket)``):
``IPPROTO_*`` for AF_INET and AF_INET6 (xlat/inet_protocols.in), ``NETLINK_*`` for AF_NETLINK
(xlat/netlink_protocols.in), the number otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qppsuite.plugins.syscalls.values import JSONValue, column_text

INET_PROTOCOLS: dict[int, str] = {
    0: "IPPROTO_IP",
    1: "IPPROTO_ICMP",
    2: "IPPROTO_IGMP",
    4: "IPPROTO_IPIP",
    6: "IPPROTO_TCP",
    8: "IPPROTO_EGP",
    12: "IPPROTO_PUP",
    17: "IPPROTO_UDP",
    22: "IPPROTO_IDP",
    29: "IPPROTO_TP",
    33: "IPPROTO_DCCP",
    41: "IPPROTO_IPV6",
    43: "IPPROTO_ROUTING",
    44: "IPPROTO_FRAGMENT",
    46: "IPPROTO_RSVP",
    47: "IPPROTO_GRE",
    50: "IPPROTO_ESP",
    51: "IPPROTO_AH",
    58: "IPPROTO_ICMPV6",
    59: "IPPROTO_NONE",
    60: "IPPROTO_DSTOPTS",
    92: "IPPROTO_MTP",
    94: "IPPROTO_BEETPH",
    98: "IPPROTO_ENCAP",
    103: "IPPROTO_PIM",
    108: "IPPROTO_COMP",
    115: "IPPROTO_L2TP",
    132: "IPPROTO_SCTP",
    135: "IPPROTO_MH",
    136: "IPPROTO_UDPLITE",
    137: "IPPROTO_MPLS",
    143: "IPPROTO_ETHERNET",
    255: "IPPROTO_RAW",
    262: "IPPROTO_MPTCP",
}
"""include/uapi/linux/in.h (and in6.h for the IPv6 extension headers), as strace's xlat/inet_protocols.in names them."""

NETLINK_PROTOCOLS: dict[int, str] = {
    0: "NETLINK_ROUTE",
    1: "NETLINK_UNUSED",
    2: "NETLINK_USERSOCK",
    3: "NETLINK_FIREWALL",
    4: "NETLINK_SOCK_DIAG",
    5: "NETLINK_NFLOG",
    6: "NETLINK_XFRM",
    7: "NETLINK_SELINUX",
    8: "NETLINK_ISCSI",
    9: "NETLINK_AUDIT",
    10: "NETLINK_FIB_LOOKUP",
    11: "NETLINK_CONNECTOR",
    12: "NETLINK_NETFILTER",
    13: "NETLINK_IP6_FW",
    14: "NETLINK_DNRTMSG",
    15: "NETLINK_KOBJECT_UEVENT",
    16: "NETLINK_GENERIC",
    18: "NETLINK_SCSITRANSPORT",
    19: "NETLINK_ECRYPTFS",
    20: "NETLINK_RDMA",
    21: "NETLINK_CRYPTO",
    22: "NETLINK_SMC",
}
"""include/uapi/linux/netlink.h, as strace's xlat/netlink_protocols.in names them."""


def protocol_name(domain: str | None, protocol: int) -> str:
    """socket()'s third argument as strace prints it for ``domain`` (an ``AF_*`` name)."""
    if domain in ("AF_INET", "AF_INET6"):
        return INET_PROTOCOLS.get(protocol, str(protocol))
    if domain == "AF_NETLINK":
        return NETLINK_PROTOCOLS.get(protocol, str(protocol))
    return str(protocol)


def split_socket_type(value: JSONValue) -> tuple[str | None, str | None]:
    """socket()'s decoded ``type`` (``SOCK_STREAM|SOCK_CLOEXEC``) as (type, flags): ``SOCK_STREAM``,
    ``SOCK_CLOEXEC``; flags None when there are none.  The type field comes first in the decoder's text
    (``arm_linux_abi`` FlagSet ``socket_type``, the field names of include/linux/net.h ``enum sock_type``)."""
    if not isinstance(value, str) or not value:
        return None, None
    kind, _, flags = value.partition("|")
    return kind, flags or None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One socket address: ``family`` (``AF_INET``...), ``address`` (an IPv4 or IPv6 address as text, an
    AF_UNIX path, ``@name`` for an abstract one, and for a path that is not UTF-8 the JSON text
    ``{"hex": "..."}`` as ``syscalls.values.column_text`` stores paths; None for an unnamed AF_UNIX socket
    or a family without addresses here) and ``port`` (AF_INET, AF_INET6; else None)."""

    family: str | None
    address: str | None = None
    port: int | None = None


def endpoint(value: JSONValue) -> Endpoint | None:
    """The :class:`Endpoint` of a decoded socket address, or None when it holds none (see the module doc)."""
    if not isinstance(value, dict) or "error" in value:
        return None
    family = value.get("family")
    if family is not None and not isinstance(family, str):
        return None
    port = value.get("port")
    addr = value.get("addr")
    if isinstance(addr, str):
        return Endpoint(family, addr, port if isinstance(port, int) else None)
    path = value.get("path")
    if isinstance(path, str | dict):
        return Endpoint(family, column_text(path))
    return Endpoint(family)


@dataclass(eq=False, slots=True)
class Socket:
    """One open socket (a kernel ``struct socket``), shared by every fd and process that holds it.

    ``inode`` is its inode number (``socket:[N]`` in ``/proc/PID/fd``, ``os.fstat(fd).st_ino`` in the
    guest), read through osi_linux; None when it could not be read.  ``created_by`` is the call that made
    it (``socket``, ``socketpair``, ``accept``, ``accept4``) or ``found`` for one already open when
    net_activity first looked at its process (made before the plugin started, or received over a unix
    socket): its domain, type and protocol are then unknown (None).  ``local`` and ``remote`` are what
    the calls showed last: bind and getsockname name the local end, connect, accept and getpeername the
    remote one.  ``backlog`` is listen's, once it listened; ``listener`` the listening socket an accepted one
    came from; ``pair`` the other end of a socketpair.  ``bytes_sent``/``bytes_received`` total the results
    of the ``sends``/``receives`` that succeeded.  ``row`` is the socket's row in ``net_sockets`` (updated in place).
    """

    inode: int | None
    created_by: str
    domain: str | None = None
    type: str | None = None
    protocol: str | None = None
    local: Endpoint | None = None
    remote: Endpoint | None = None
    backlog: int | None = None
    listener: Socket | None = None
    pair: Socket | None = None
    bytes_sent: int = 0
    bytes_received: int = 0
    sends: int = 0
    receives: int = 0
    row: dict[str, Any] = field(default_factory=dict)
