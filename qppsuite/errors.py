"""The one exception family a user sees.

Every failure a user can cause (bad image, unknown plugin, unwritable database,
apt failure...) is raised as a :class:`QppsuiteError` subclass whose message is a
single line naming what was asked for and, where it helps, what exists.  The CLI
prints that line in red and exits non-zero; only ``--debug`` shows a traceback.
"""


class QppsuiteError(Exception):
    """A user-facing error: ``str(err)`` is one line, ``hint`` an optional second."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ImageError(QppsuiteError):
    """A missing, corrupt or inconsistent image bundle, kernel or initramfs."""


class BuildError(QppsuiteError):
    """Building an image or a profile failed (apt, disk space, package contents)."""


class PluginError(QppsuiteError):
    """A QPP misuse: duplicate name, unknown plugin/export/callback, bad argument, cycle."""


class GuestError(QppsuiteError):
    """The guest ended the run abnormally: panic, hang, or the instruction budget ran out."""

    exit_code = 2


class Interrupted(QppsuiteError):
    """The run was stopped by a signal (SIGINT, SIGTERM); the exit code is the shell's 128 + its number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
