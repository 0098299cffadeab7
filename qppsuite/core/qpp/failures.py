"""A plugin's exception in a callback or a lifecycle method: reported with its name, never fatal unless strict."""

from __future__ import annotations

import logging
import os
import re
import traceback
from dataclasses import dataclass

from qppsuite.errors import PluginError

logger = logging.getLogger("qppsuite.qpp")

_TRACEBACK_FRAMES = 8
#: QPP's own frames and the machine facade's hook wrappers: noise in a plugin author's traceback.
_HOST_DIRS = {
    os.path.dirname(os.path.abspath(__file__)),
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "guest"),
}
#: C0 and C1 controls but newline: an exception's text may carry a guest's or a plugin's escape sequences.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class PluginFailure:
    """An exception a plugin raised in a callback function or a lifecycle method."""

    plugin: str
    where: str
    error: BaseException

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' raised in {self.where}: {type(self.error).__name__}: {self.error}"

    def traceback(self) -> str:
        """The plugin's own frames only (QPP's dispatch frames are noise to a plugin author)."""
        frames = [
            f
            for f in traceback.extract_tb(self.error.__traceback__)
            if os.path.dirname(os.path.abspath(f.filename)) not in _HOST_DIRS
        ]
        lines = traceback.StackSummary.from_list(frames[-_TRACEBACK_FRAMES:]).format()
        lines += traceback.format_exception_only(type(self.error), self.error)
        return "".join(lines).rstrip("\n")


class PluginCallbackError(PluginError):
    """Strict mode: a plugin raised in a callback or a lifecycle method, so the run must stop."""

    def __init__(self, failure: PluginFailure) -> None:
        super().__init__(str(failure), hint="run without --strict to report plugin errors and carry on")
        self.failure = failure


def log_failure(failure: PluginFailure) -> None:
    """Default reporter: one log record with the plugin's name and a short traceback, control characters
    escaped (``\\x1b``) so that no text in it acts on the terminal."""
    logger.error("%s", _CONTROL.sub(_escape, f"{failure}\n{failure.traceback()}"))


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"
