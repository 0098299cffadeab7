"""The activity-over-time figure as an image (PNG, SVG or PDF, by the file's suffix), with matplotlib.

matplotlib renders offline with its Agg backend and no browser; Plotly's own image export (kaleido 1.x)
drives a Chrome it must find or download, so the image is matplotlib's, drawn from the same
:class:`~qppsuite.report.data.Activity` as the report's interactive figure.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from qppsuite.errors import QppsuiteError
from qppsuite.plugins.syscalls.classes import KINDS
from qppsuite.report.data import Activity, Timebase
from qppsuite.report.html import KIND_COLOURS

FORMATS = (".png", ".svg", ".pdf")


def check_path(path: Path) -> None:
    """Raise :class:`QppsuiteError` unless ``path`` names a file whose suffix is one of :data:`FORMATS` (before any
    work is done)."""
    if not path.name:  # "" (pathlib makes it "."), "/"
        raise QppsuiteError(f"--plot: the figure's file name is empty; give a file ending in {', '.join(FORMATS)}")
    if path.suffix.lower() not in FORMATS:
        raise QppsuiteError(f"cannot write a figure to {path}: give a file ending in {', '.join(FORMATS)}")


def save_activity(activity: Activity, axis: Timebase, path: Path, title: str) -> None:
    """Write the stacked calls-per-bin figure to ``path`` (its suffix picks the format).

    Raises :class:`QppsuiteError` for another suffix, a file that cannot be written, or no calls to draw (a run
    that logged none, or whose file syscalls_logger did not write).
    """
    check_path(path)
    if not any(any(counts) for counts in activity.counts.values()):
        raise QppsuiteError(f"no figure written to {path}: the run has no logged system calls to draw")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    width = activity.bin_width
    lefts = activity.edges[:-1]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=120)
    bottom = [0] * len(lefts)
    for kind in KINDS:
        counts = activity.counts[kind]
        ax.bar(lefts, counts, width=width, bottom=bottom, align="edge", color=KIND_COLOURS[kind], label=kind)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    if not axis.virtual:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value / 1e6:,.0f}M"))
    else:  # milliseconds with thousands separators (no 1e6 offset), with the decimals the ticks need
        places = _decimals(list(ax.get_xticks()))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.{places}f}"))
    ax.set_xlabel(axis.title)
    ax.set_ylabel(f"calls per {axis.span(width)}")
    ax.set_title(title)
    ax.legend(ncols=len(KINDS), fontsize="small", loc="upper left", bbox_to_anchor=(0, -0.22), frameon=False)
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as exc:
        raise QppsuiteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _decimals(ticks: list[float], most: int = 6) -> int:
    """The fewest decimal places (up to ``most``) that show every tick's value exactly: 0 for 0, 500, 1,000;
    1 for 2.5, 5, 7.5."""
    step = min((abs(b - a) for a, b in itertools.pairwise(ticks) if b != a), default=1.0)
    return next((p for p in range(most + 1) if all(abs(t - round(t, p)) < step * 1e-6 for t in ticks)), most)
