"""The activity-over-time figure as an image (PNG, SVG or PDF, by the file's suffix), with matplotlib.

matplotlib renders offline with its Agg backend and no browser; Plotly's own image export (kaleido 1.x)
drives a Chrome it must find or download, so the image is matplotlib's, drawn from the same
:class:`~qppsuite.report.data.Activity` as the report's interactive figure.
"""

from __future__ import annotations

from pathlib import Path

from qppsuite.errors import QppsuiteError
from qppsuite.plugins.syscalls.classes import KINDS
from qppsuite.report.data import Activity, Timebase
from qppsuite.report.html import KIND_COLOURS

FORMATS = (".png", ".svg", ".pdf")


def check_path(path: Path) -> None:
    """Raise :class:`QppsuiteError` unless ``path``'s suffix is one of :data:`FORMATS` (before any work is done)."""
    if path.suffix.lower() not in FORMATS:
        raise QppsuiteError(f"cannot write a figure to {path}: give a file ending in {', '.join(FORMATS)}")


def save_activity(activity: Activity, axis: Timebase, path: Path, title: str) -> None:
    """Write the stacked calls-per-bin figure to ``path`` (its suffix picks the format).

    Raises :class:`QppsuiteError` for another suffix or a file that cannot be written.
    """
    check_path(path)
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
