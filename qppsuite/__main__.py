"""``python -m qppsuite`` and the ``qppsuite`` command.

SIGINT, SIGTERM, SIGHUP and SIGQUIT are handled from the first instant: importing the CLI
takes about half a second, and a Ctrl-C there would otherwise print the
traceback of whichever import it landed in.  Until the run installs its own
handlers (``session.stop_on_signals``), a signal ends the process with one line
and the shell's exit status 128 + its number; nothing has been written yet.

While the CLI is imported the process ends at once (``os._exit``): an exception
raised there can land in one of importlib's weakref callbacks, where Python
prints "Exception ignored" and carries on, and the signal would be lost.
Afterwards the signal raises ``SystemExit``, so ``finally`` blocks run.
"""

import os
import signal
import sys


def _line(signum: int) -> None:
    sys.stderr.write(f"error: interrupted by {signal.Signals(signum).name}\n")
    sys.stderr.flush()


def _stop_importing(signum: int, _frame: object) -> None:
    _line(signum)
    os._exit(128 + signum)


def _stop_early(signum: int, _frame: object) -> None:
    _line(signum)
    sys.exit(128 + signum)


def entry() -> None:
    """The command: signals handled first, then the CLI imported and run."""
    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    for signum in stopping:
        signal.signal(signum, _stop_importing)
    from qppsuite.cli import main  # after the handlers, on purpose

    for signum in stopping:
        signal.signal(signum, _stop_early)
    main()


if __name__ == "__main__":
    entry()
