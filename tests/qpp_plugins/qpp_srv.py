"""Port of the QPP series' ``tests/plugin_qpp/qpp_srv.c``: the serving half of the pair.

It exports ``add`` and ``sub`` and creates ``my_on_exit``, which it runs from
its own ``unload()`` with a verdict box that a correct client fills in, then
prints PASS or FAIL exactly like the C original.
"""

from qppsuite.core.qpp import CallbackSpec, Plugin, export


class QppSrv(Plugin):
    name = "qpp_srv"
    description = "Exports add/sub and runs my_on_exit when it unloads"
    callbacks = (
        CallbackSpec("my_on_exit", "qpp_srv unloads; a client sets passed['qpp_client']", passed=dict[str, bool]),
    )

    def load(self) -> None:
        self.verdict = "not unloaded"

    @export
    def add(self, x: int) -> int:
        """The C test's qpp_srv_do_add: one more than x."""
        return x + 1

    @export
    def sub(self, x: int) -> int:
        """The C test's qpp_srv_do_sub: one less than x."""
        return x - 1

    def unload(self) -> None:
        print("qpp_srv: exit triggered, running all registered QPP callbacks")
        passed = {"qpp_client": False}
        self.callback("my_on_exit")(passed=passed)
        self.verdict = "PASS" if passed["qpp_client"] else "FAIL"
        print(self.verdict)


plugin = QppSrv
