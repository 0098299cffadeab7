"""What QPP costs on the hot path, measured against plain Python calls in the same run.

The core runs ``core:on_svc`` on every system call and plugins call each other's
exports constantly, so two numbers matter:

* an imported function must cost what a plain method call costs (target < 2x);
* each function registered on a callback may add well under 1 us of dispatch;
* API v2 calls callbacks with keywords (so a callback can gain an argument without breaking
  plugins): that must cost at most 1.5x the positional dispatch of API v1, which is reproduced
  here as :class:`PositionalCallback` (the loop of ``Callback.__call__`` at commit 24b44f4) so
  that both are timed side by side in one run.

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

from qppsuite.core.qpp import QPP, CallbackSpec, Plugin, export

REPEATS = 15


class Server(Plugin):
    name = "bench_srv"
    callbacks = (CallbackSpec("on_event", "an event", event=object, count=int),)

    @export
    def add(self, x: int) -> int:
        return x + 1


def handler(event: Any) -> None:
    """What a registered function costs by itself: the baseline for the dispatch overhead."""


class PositionalCallback:
    """API v1's dispatch, for comparison: positional arguments, no per-function selection of arguments."""

    def __init__(self, functions: list[Callable[..., None]]) -> None:
        self._entries = tuple((fn, "owner") for fn in functions)

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        first = None
        for fn, _owner in self._entries:
            try:
                fn(*args, **kwargs)
            except (Exception, SystemExit) as exc:
                if first is None:
                    first = exc
        if first is not None:
            raise first


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
    for count, takes in ((0, "all"), (1, "all"), (3, "all"), (1, "some")):
        owner = QPP()
        plugin = owner.load(Server)
        for i in range(count):
            if takes == "all":
                owner.register("bench_srv", "on_event", lambda event, count, i=i: handler(event), owner=f"fn{i}")
            else:
                owner.register("bench_srv", "on_event", lambda event, i=i: handler(event), owner=f"fn{i}")
        callbacks[count, takes] = plugin.callback("on_event")
    cb0, cb1, cb3, cb1_some = callbacks[0, "all"], callbacks[1, "all"], callbacks[3, "all"], callbacks[1, "some"]
    positional1 = PositionalCallback([lambda event, count: handler(event)])
    positional3 = PositionalCallback([lambda event, count, i=i: handler(event) for i in range(3)])
    # The registered lambdas call handler(), so the baseline for N functions is N lambda+handler calls.
    registered_fn = callbacks[1, "all"].registered[0][0]

    def guarded_empty() -> None:
        if cb0:
            cb0(event=None, count=1)

    results = {
        "plain function call": best_ns(lambda: plain_add(1), number),
        "plain method call (srv.add)": best_ns(lambda: direct(1), number),
        "imported function call": best_ns(lambda: imported(1), number),
        "registered fn called directly": best_ns(lambda: registered_fn(event=None, count=1), number),
        "callback, 0 registered, guarded (if cb)": best_ns(guarded_empty, number),
        "v1 positional, 1 registered": best_ns(lambda: positional1(None, 1), number),
        "callback, 1 registered": best_ns(lambda: cb1(event=None, count=1), number),
        "callback, 1 registered taking 1 of 2": best_ns(lambda: cb1_some(event=None, count=1), number),
        "v1 positional, 3 registered": best_ns(lambda: positional3(None, 1), number),
        "callback, 3 registered": best_ns(lambda: cb3(event=None, count=1), number),
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
    keyword_1 = results["callback, 1 registered"] / results["v1 positional, 1 registered"]
    keyword_3 = results["callback, 3 registered"] / results["v1 positional, 3 registered"]
    some_1 = results["callback, 1 registered taking 1 of 2"] / results["v1 positional, 1 registered"]
    print(f"keyword / v1 positional dispatch:          {keyword_1:.2f}x with 1, {keyword_3:.2f}x with 3, "
          f"{some_1:.2f}x with 1 taking 1 of 2 (target <= 1.5x)")
    ok = import_ratio < 2 and overhead_1 < 1000 and overhead_3 < 1000 and max(keyword_1, keyword_3) <= 1.5
    print("targets met" if ok else "TARGETS MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
