"""Guest memory as plugins see it: physical and virtual reads and writes.

Plugins read untrusted guest pointers all the time, so every failure is a
:class:`GuestMemoryError` they can catch; nothing here may take down the run.
"""


class GuestMemoryError(Exception):
    """An access to a guest address that is not mapped, not RAM, or not permitted."""

    def __init__(self, address: int, reason: str = "unmapped") -> None:
        super().__init__(f"guest address {address:#x}: {reason}")
        self.address = address
        self.reason = reason
