"""A console sink for guest tests: collects what the guest prints."""


class Console:
    def __init__(self) -> None:
        self.data = bytearray()

    def __call__(self, data: bytes) -> None:
        self.data += data

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")
