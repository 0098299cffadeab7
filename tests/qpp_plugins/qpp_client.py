"""Port of the QPP series' ``tests/plugin_qpp/qpp_client.c``: the client half of the pair.

It requires ``qpp_srv``, imports its two exports at load time, and registers
on ``qpp_srv:my_on_exit``; when that runs it calls both exports and marks the
verdict box passed only if they answer as the C test expects.
"""

from qppsuite.core.qpp import Plugin


class QppClient(Plugin):
    name = "qpp_client"
    description = "Registers on qpp_srv:my_on_exit and calls qpp_srv's add and sub"
    requires = ("qpp_srv",)

    def load(self) -> None:
        self.add = self.qpp.import_function("qpp_srv", "add")
        self.sub = self.qpp.import_function("qpp_srv", "sub")
        self.qpp.register("qpp_srv", "my_on_exit", self.my_on_exit, owner=self.name)
        self.calls: list[str] = []

    def my_on_exit(self, passed: dict[str, bool]) -> None:
        added, subtracted = self.add(1), self.sub(1)
        print(f"qpp_client: qpp_srv add(1) = {added}, sub(1) = {subtracted}")
        self.calls.append("my_on_exit")
        passed["qpp_client"] = (added, subtracted) == (2, 0)


plugin = QppClient
