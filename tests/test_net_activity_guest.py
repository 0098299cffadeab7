"""net_activity against the guest's own view: python3 over loopback, and the guest's strace.

One run of the oracle image per kernel (5.10, 6.1, 6.12): ``tests/oracle/net.py`` (TCP, UDP, IPv6 UDP,
a unix socketpair and a unix path socket, a fork and an execve holding a socket, then calls with hostile
socket addresses) runs under ``strace -f -e trace=network`` and prints, for each socket, its inode
(``os.fstat``), ports and byte counts as it saw them.  The rows of ``net_sockets`` and ``net_events``
must say the same, and the calls strace printed must be the events.  The default workload's busybox nc
exchange checks the plugin alone (without the logger), from the snapshot the workload starts at.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from console_sink import Console
from oracle.guest import logged_run, query
from oracle.strace_log import parse

from qppsuite.channel import GuestFile
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.net_activity.tracker import SOCKET_CALLS
from qppsuite.session import RunOptions, run

SCRIPT = Path(__file__).parent / "oracle" / "net.py"
CMD = "strace -f -e trace=network -o /tmp/s.txt python3 /tmp/net.py; echo STRACE-BEGIN; cat /tmp/s.txt; echo STRACE-END"


@pytest.fixture(scope="module")
def net(suite_oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run per kernel (5.10, 6.1, 6.12): the script goes in through the channel (bullseye's busybox has
    no base64), with the logger and net_activity writing one database."""
    db = tmp_path_factory.mktemp("net") / "net.db"
    script = GuestFile(SCRIPT, "/tmp/net.py", 0o644)
    text = logged_run(suite_oracle_image, CMD, db, ["net_activity"], files=[script]).console  # type: ignore[list-item]
    said: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if line.startswith("NET "):
            fact = json.loads(line[4:])
            said[fact.pop("kind")] = fact
    assert "done" in said, text[-3000:]
    pid = said["pid"]["pid"]
    sockets = query(
        db,
        "SELECT s.* FROM net_sockets s JOIN processes p ON p.id = s.process_id WHERE p.pid = ? ORDER BY s.id",
        pid,
    )
    events = query(
        db,
        "SELECT e.*, c.name AS logged_name FROM net_events e LEFT JOIN syscalls c "
        "ON c.seq = e.seq AND c.run_id = e.run_id WHERE e.pid = ? ORDER BY e.seq",
        pid,
    )
    strace = parse(text[text.index("STRACE-BEGIN") : text.index("STRACE-END")].split("\n", 1)[1])
    return {
        "said": said,
        "pid": pid,
        "sockets": {s["inode"]: s for s in sockets},
        "rows": sockets,
        "events": events,
        "strace": strace,
        "db": db,
    }


def _events(net: dict[str, Any], sock: dict[str, Any], call: str | None = None) -> list[dict[str, Any]]:
    return [e for e in net["events"] if e["socket_id"] == sock["id"] and (call is None or e["call"] == call)]


@pytest.mark.boot
def test_tcp_ports_peers_and_bytes_are_what_python_saw(net: dict[str, Any]) -> None:
    tcp, sockets = net["said"]["tcp"], net["sockets"]
    listener, client, server = sockets[tcp["listener"]], sockets[tcp["client"]], sockets[tcp["server"]]
    assert (listener["domain"], listener["type"], listener["protocol"]) == ("AF_INET", "SOCK_STREAM", "IPPROTO_IP")
    (bound,) = _events(net, listener, "bind")
    assert (bound["local_address"], bound["local_port"]) == ("127.0.0.1", 0)  # the kernel picks the port...
    (named,) = _events(net, listener, "getsockname")  # ...which getsockname shows, and the socket keeps
    assert (named["local_address"], named["local_port"]) == ("127.0.0.1", tcp["port"])
    assert (listener["local_address"], listener["local_port"], listener["backlog"]) == ("127.0.0.1", tcp["port"], 2)
    assert (client["remote_address"], client["remote_port"]) == ("127.0.0.1", tcp["port"])
    assert client["local_port"] == tcp["client_port"]  # from its getsockname
    assert (server["created_by"], server["listener_id"]) in {("accept", listener["id"]), ("accept4", listener["id"])}
    assert [server["remote_address"], server["remote_port"]] == tcp["peer"]
    assert (client["bytes_sent"], client["bytes_received"]) == (tcp["up"], tcp["down"]) == (3000, 2000)
    assert (server["bytes_sent"], server["bytes_received"]) == (tcp["down"], tcp["up"])
    sent = [e["bytes"] for e in _events(net, client) if e["call"].startswith("send") and e["bytes"]]
    assert sum(sent) == 3000


@pytest.mark.boot
def test_udp_datagrams_name_their_sender_and_receiver(net: dict[str, Any]) -> None:
    udp, sockets = net["said"]["udp"], net["sockets"]
    a, b = sockets[udp["a"]], sockets[udp["b"]]
    assert (a["type"], a["protocol"], a["local_port"]) == ("SOCK_DGRAM", "IPPROTO_IP", udp["a_port"])
    assert (a["bytes_received"], a["bytes_sent"], b["bytes_sent"], b["bytes_received"]) == (700, 300, 700, 300)
    (to_a,) = [e for e in _events(net, b) if e["call"] in ("sendto", "sendmsg")]
    assert (to_a["remote_address"], to_a["remote_port"], to_a["bytes"]) == ("127.0.0.1", udp["a_port"], 700)
    (from_b,) = [e for e in _events(net, a) if e["call"] in ("recvfrom", "recvmsg")]
    assert (from_b["remote_address"], from_b["remote_port"], from_b["bytes"]) == ("127.0.0.1", udp["b_port"], 700)


@pytest.mark.boot
def test_ipv6_loopback(net: dict[str, Any]) -> None:
    udp6 = net["said"]["udp6"]
    if "error" in udp6:
        pytest.skip(f"the guest has no IPv6 loopback: {udp6['error']}")
    sock = net["sockets"][udp6["sock"]]
    assert (sock["domain"], sock["local_address"], sock["local_port"]) == ("AF_INET6", "::1", udp6["port"])
    assert (sock["bytes_sent"], sock["bytes_received"]) == (66, udp6["bytes"])
    (sent,) = [e for e in _events(net, sock) if e["call"] in ("sendto", "sendmsg")]
    assert (sent["remote_family"], sent["remote_address"], sent["remote_port"]) == ("AF_INET6", "::1", udp6["port"])


@pytest.mark.boot
def test_unix_sockets_pair_and_path(net: dict[str, Any]) -> None:
    pair, unix, sockets = net["said"]["pair"], net["said"]["unix"], net["sockets"]
    a, b = sockets[pair["a"]], sockets[pair["b"]]
    assert (a["domain"], a["created_by"], a["pair_id"], b["pair_id"]) == ("AF_UNIX", "socketpair", b["id"], a["id"])
    assert (a["bytes_sent"], b["bytes_received"]) == (1234, pair["bytes"])
    listener, client, server = sockets[unix["listener"]], sockets[unix["client"]], sockets[unix["server"]]
    assert (listener["local_family"], listener["local_address"]) == ("AF_UNIX", unix["path"])
    assert (client["remote_family"], client["remote_address"]) == ("AF_UNIX", unix["path"])
    assert server["listener_id"] == listener["id"]
    assert [e["bytes"] for e in _events(net, client, "sendmsg")] == [unix["sent"]]
    assert [e["bytes"] for e in _events(net, server, "recvmsg")] == [unix["received"]]


@pytest.mark.boot
def test_hostile_addresses_are_recorded_with_the_guests_errnos(net: dict[str, Any]) -> None:
    hostile = net["said"]["hostile"]
    junk = net["sockets"][hostile["sock"]]
    calls = [e for e in _events(net, junk) if e["call"] in ("connect", "bind", "sendto")]
    assert [[e["call"], e["retval"] if e["errno"] is None else -1, e["errno"]] for e in calls] == hostile["calls"]
    assert calls[0]["remote_family"] not in (None, "AF_INET")  # family 0x4141, as the decoder names it
    assert calls[3]["local_address"] is None  # an unreadable address is no endpoint


@pytest.mark.boot
def test_every_network_call_strace_printed_is_an_event(net: dict[str, Any]) -> None:
    theirs = [(c.name, c.retval, c.errno) for c in net["strace"] if c.name in SOCKET_CALLS and c.tid == net["pid"]]
    calls = {e["seq"]: e for e in net["events"] if e["call"] in SOCKET_CALLS and e["tid"] == net["pid"]}
    ours = [(e["call"], -1 if e["errno"] else e["retval"], e["errno"]) for e in calls.values()]  # socketpair: 2 events
    assert ours == theirs
    assert all(e["logged_name"] == e["call"] for e in net["events"])  # each event is the logger's row of its call


@pytest.mark.boot
def test_every_socket_python_closed_has_a_close_event(net: dict[str, Any]) -> None:
    closed = {e["socket_id"] for e in net["events"] if e["call"] == "close" and e["errno"] is None}
    made_here = [s for s in net["rows"] if s["created_by"] != "found"]
    assert made_here and all(s["id"] in closed for s in made_here)


@pytest.mark.boot
def test_a_fork_child_and_its_exec_write_on_the_inherited_socket(net: dict[str, Any]) -> None:
    fork = net["said"]["fork"]
    (sock,) = [s for s in net["rows"] if s["inode"] == fork["sock"]]
    child = query(net["db"], "SELECT * FROM net_events WHERE pid = ? ORDER BY seq", fork["child"])
    names = {
        r["id"]: json.loads(r["names"])
        for r in query(net["db"], "SELECT * FROM processes WHERE pid = ?", fork["child"])
    }
    assert [(e["call"], e["fd"], e["socket_id"], e["bytes"]) for e in child if e["bytes"]] == [
        ("send", fork["fd"], sock["id"], 10),  # python, on the fd it inherited
        ("write", 1, sock["id"], 5),  # sh, on the copy that survived the exec, which its >&5 dup2'ed onto 1
    ]
    assert list(names.values()) == [["python3", "sh"]]
    assert (sock["bytes_sent"], fork["received"]) == (15, 15)
    # The parent's close of its own copy is its event; the child's close-on-exec copy left no fd behind.
    assert [e["pid"] for e in net["events"] if e["socket_id"] == sock["id"] and e["call"] == "close"] == [net["pid"]]


@pytest.mark.boot
def test_alone_on_the_default_workload_busybox_nc_over_loopback(default_image: ImageBundle, tmp_path: Path) -> None:
    """Without the logger: the run database is net_activity's own, with runs and processes next to its tables."""
    db, console = tmp_path / "alone.db", Console()
    result = run(
        RunOptions(plugins=["net_activity"], plugin_args={"net_activity": {"db": str(db)}}, strict=True, warm=True),
        console,
        image=default_image,
    )
    assert result.ok, (result.reason, console.text[-2000:])
    ping, pong = b"ping from the client\n", b"pong from the server\n"  # qppsuite/images/guest/workload.sh
    text = console.text.replace("\r", "")
    assert ping.decode() in text and pong.decode() in text
    (run_row,) = query(db, "SELECT * FROM runs")
    assert run_row["syscall_count"] is None and "net_activity" in json.loads(run_row["plugins"])
    sockets = query(db, "SELECT s.*, p.pid, p.name FROM net_sockets s JOIN processes p ON p.id = s.process_id")
    (listener,) = [s for s in sockets if s["backlog"] is not None]
    (accepted,) = [s for s in sockets if s["created_by"] == "accept"]
    (client,) = [s for s in sockets if s["remote_port"] == 5555]
    assert {s["name"] for s in sockets} == {"nc"} and accepted["pid"] == listener["pid"] != client["pid"]
    # busybox nc listens on the IPv6 wildcard, which also takes the client's 127.0.0.1 (workload.sh).
    assert (listener["domain"], listener["local_address"], listener["local_port"]) == ("AF_INET6", "::", 5555)
    assert (client["domain"], client["type"], client["remote_address"]) == ("AF_INET", "SOCK_STREAM", "127.0.0.1")
    assert accepted["listener_id"] == listener["id"]
    assert (client["bytes_sent"], client["bytes_received"]) == (len(ping), len(pong))
    assert (accepted["bytes_sent"], accepted["bytes_received"]) == (len(pong), len(ping))
    reads = query(db, "SELECT call, bytes FROM net_events WHERE socket_id = ? AND call = 'read'", client["id"])
    assert [r["bytes"] for r in reads] == [len(pong), 0]  # the reply, then the server's end of stream


@pytest.mark.boot
def test_a_socket_passed_over_a_unix_socket_is_the_one_its_maker_made(net: dict[str, Any]) -> None:
    passed = net["said"]["passed"]
    (sock,) = query(
        net["db"],
        "SELECT s.*, p.pid FROM net_sockets s JOIN processes p ON p.id = s.process_id WHERE s.inode = ?",
        passed["sock"],
    )
    assert (sock["pid"], sock["created_by"], sock["domain"], sock["type"]) == (
        passed["child"],
        "socket",
        "AF_INET",
        "SOCK_DGRAM",
    )
    # The parent received it with SCM_RIGHTS (recvmsg with control data), then sent on it.
    (sent,) = [e for e in net["events"] if e["socket_id"] == sock["id"] and e["call"] in ("sendto", "sendmsg")]
    assert (
        (sent["pid"], sent["fd"], sent["bytes"])
        == (net["pid"], passed["fd"], passed["bytes"])
        == (
            net["pid"],
            passed["fd"],
            77,
        )
    )
    assert sock["bytes_sent"] == 77
