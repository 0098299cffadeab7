"""Shell scripts that run inside the guest: ``init.sh`` (PID 1), ``workload.sh``, and ``agent.sh`` (the
channel's guest end, which the run delivers as the command: :mod:`qppsuite.channel`).

They are package data, read with :mod:`importlib.resources`, so the builder
copies exactly what is reviewed and tested here into every image.
"""

from importlib import resources


def guest_script(name: str) -> bytes:
    """The bytes of one of this package's scripts."""
    return resources.files(__name__).joinpath(name).read_bytes()
