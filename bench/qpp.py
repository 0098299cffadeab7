"""What QPP costs on the hot path, measured against plain Python calls in the same run.

The core runs ``core:on_svc`` on every system call and plugins call each other's
exports constantly, so two numbers matter:

* an imported function must cost what a plain method call costs (target < 2x);
* each function registered on a callback may add well under 1 us of dispatch.

Every figure is the best of several timeit repeats, so a busy neighbour on the
shared machine inflates nothing.  Usage: ``python bench/qpp.py [--number N]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import timeit
from collections.abc import Callable
from typing import Any

from qppsuite.core.qpp import QPP, Plugin, export

REPEATS = 7


class Server(Plugin):
    name = "bench_srv"
    callbacks = ("on_event",)

    @export
    def add(self, x: int) -> int:
        return x + 1


def handler(event: Any) -> None:
    """What a registered function costs by itself: the baseline for the dispatch overhead."""


def best_ns(stmt: Callable[[], object], number: int) -> float:
    """Nanoseconds per call of ``stmt``'s body (the lambda's own call cost is subtracted)."""
    empty = min(timeit.repeat(lambda: None, number=number, repeat=REPEATS))
    total = min(timeit.repeat(stmt, number=number, repeat=REPEATS))
    return max(total - empty, 0.0) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=500_000, help="calls per timing repeat")
    number = parser.parse_args().number

    qpp = QPP()
    srv = qpp.load(Server)
    assert isinstance(srv, Server)
    imported = qpp.import_function("bench_srv", "add")
    direct = srv.add

    def plain_add(x: int) -> int:
        return x + 1

    callbacks = {}
    for count in (0, 1, 3):
        owner = QPP()
        plugin = owner.load(Server)
        for i in range(count):
            owner.register("bench_srv", "on_event", lambda event, i=i: handler(event), owner=f"fn{i}")
        callbacks[count] = plugin.callback("on_event")
    cb0, cb1, cb3 = callbacks[0], callbacks[1], callbacks[3]
    # The registered lambdas call handler(), so the baseline for N functions is N lambda+handler calls.
    registered_fn = callbacks[1].registered[0][0]

    def guarded_empty() -> None:
        if cb0:
            cb0(None)

    results = {
        "plain function call": best_ns(lambda: plain_add(1), number),
        "plain method call (srv.add)": best_ns(lambda: direct(1), number),
        "imported function call": best_ns(lambda: imported(1), number),
        "registered fn called directly": best_ns(lambda: registered_fn(None), number),
        "callback, 0 registered, guarded (if cb)": best_ns(guarded_empty, number),
        "callback, 1 registered": best_ns(lambda: cb1(None), number),
        "callback, 3 registered": best_ns(lambda: cb3(None), number),
    }
    plain_fn = results["plain function call"]
    plain_method = results["plain method call (srv.add)"]
    one_fn = results["registered fn called directly"]
    import_ratio = results["imported function call"] / plain_method
    overhead_1 = results["callback, 1 registered"] - one_fn
    overhead_3 = (results["callback, 3 registered"] - 3 * one_fn) / 3

    print(f"python {platform.python_version()} on {platform.machine()}, {number} calls x best of {REPEATS}")
    for label, ns in results.items():
        print(f"  {label:<42} {ns:8.1f} ns   {ns / plain_fn:5.2f}x plain function call")
    print(f"imported function / plain method call:     {import_ratio:.2f}x   (target < 2x)")
    print(f"dispatch overhead per registered function: {overhead_1:.0f} ns with 1, {overhead_3:.0f} ns with 3")
    print("                                           (target < 1000 ns)")
    ok = import_ratio < 2 and overhead_1 < 1000 and overhead_3 < 1000
    print("targets met" if ok else "TARGETS MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
