"""A plugin's exception in a callback or a lifecycle method: reported with its name, never fatal unless strict."""

from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass

from qppsuite.errors import PluginError

logger = logging.getLogger("qppsuite.qpp")

_TRACEBACK_FRAMES = 8
_HOST_DIR = os.path.dirname(os.path.abspath(__file__))


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
            if os.path.dirname(os.path.abspath(f.filename)) != _HOST_DIR
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
    """Default reporter: one log record with the plugin's name and a short traceback."""
    logger.error("%s\n%s", failure, failure.traceback())
