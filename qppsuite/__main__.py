"""``python -m qppsuite`` and the ``qppsuite`` command.

SIGINT, SIGTERM, SIGHUP and SIGQUIT are handled from the first instant: importing the CLI
takes about half a second, and a Ctrl-C there would otherwise print the
traceback of whichever import it landed in.  Until the run installs its own
handlers (``session.stop_on_signals``), a signal ends the process with one line
and the shell's exit status 128 + its number; nothing has been written yet.
"""

import signal
import sys


def _stop_early(signum: int, _frame: object) -> None:
    sys.stderr.write(f"error: interrupted by {signal.Signals(signum).name}\n")
    sys.exit(128 + signum)


def entry() -> None:
    """The command: signals handled first, then the CLI imported and run."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, _stop_early)
    from qppsuite.cli import main  # after the handlers, on purpose

    main()


if __name__ == "__main__":
    entry()
