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


class GuestStopped(GuestError):
    """The guest stopped before the command's end, of ``kind`` (the run's stop kind: panic, hang, max_insns,
    timeout, ...): the line is ``KIND: MESSAGE (stopped after SUMMARY)``, which :func:`guest_stopped` reads back.
    ``qppsuite batch`` tells a job's stop from it when the run left no ``runs`` row (a kernel that panics while
    booting, before any plugin was loaded)."""

    def __init__(self, kind: str, message: str, summary: str) -> None:
        super().__init__(f"{kind}: {message} (stopped after {summary})")
        self.kind = kind


#: How :class:`GuestStopped` ends its line.
_STOPPED_AFTER = " (stopped after "


def guest_stopped(line: str) -> tuple[str, str] | None:
    """``(kind, message)`` of a :class:`GuestStopped` line as the CLI prints it (``error: KIND: MESSAGE (stopped
    after …)``), or None if ``line`` is no such line."""
    text = line.strip().removeprefix("error: ")
    kind, sep, rest = text.partition(": ")
    message, after, _summary = rest.rpartition(_STOPPED_AFTER)
    if not sep or not after or not kind.isidentifier() or not kind.islower():
        return None
    return kind, message


class Interrupted(QppsuiteError):
    """The run was stopped by a signal (SIGINT, SIGTERM); the exit code is the shell's 128 + its number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum
