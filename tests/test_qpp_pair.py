"""The QPP series' own test pair, ported: qpp_srv serves add/sub and my_on_exit, qpp_client uses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from qppsuite.core.qpp import QPP, parse_plugin_list
from qppsuite.errors import PluginError

PAIR = Path(__file__).parent / "qpp_plugins"
SRV, CLIENT = str(PAIR / "qpp_srv.py"), str(PAIR / "qpp_client.py")


def test_client_registers_on_srv_callback_and_uses_both_exports(capsys: pytest.CaptureFixture[str]) -> None:
    with QPP() as qpp:
        qpp.load_all(parse_plugin_list([f"{CLIENT},{SRV}"]))
        assert qpp.loaded == ["qpp_srv", "qpp_client"]
        srv, client = qpp.get("qpp_srv"), qpp.get("qpp_client")
        assert client.add == srv.add and client.sub == srv.sub  # imports are srv's bound methods
        qpp.start_all()
        qpp.stop_all("test over")
        assert client.calls == []  # my_on_exit runs at srv's unload, not before
    assert client.calls == ["my_on_exit"]
    assert srv.verdict == "PASS"
    assert capsys.readouterr().out.splitlines() == [
        "qpp_srv: exit triggered, running all registered QPP callbacks",
        "qpp_client: qpp_srv add(1) = 2, sub(1) = 0",
        "PASS",
    ]


def test_srv_alone_reports_fail_because_no_client_answered(capsys: pytest.CaptureFixture[str]) -> None:
    with QPP() as qpp:
        srv = qpp.load(SRV)
    assert srv.verdict == "FAIL"
    assert capsys.readouterr().out.endswith("FAIL\n")


def test_client_without_srv_is_refused_at_load_time() -> None:
    qpp = QPP()
    with pytest.raises(PluginError, match=r"plugin 'qpp_client' requires 'qpp_srv', which is not available"):
        qpp.load(CLIENT)
    assert qpp.loaded == []


def test_pair_survives_an_aborted_run_and_still_passes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyboardInterrupt), QPP() as qpp:
        qpp.load_all([SRV, CLIENT])
        qpp.start_all()
        raise KeyboardInterrupt
    assert qpp.get("qpp_srv").verdict == "PASS"
    assert "PASS" in capsys.readouterr().out
