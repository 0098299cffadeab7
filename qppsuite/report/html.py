"""The run report as one self-contained HTML file: Plotly figures with plotly.js inlined, no network.

Plotly (the ``plotly`` package, MIT, maintained by Plotly Inc.) writes interactive figures whose data
is JSON inside a ``<script>``: its encoder escapes ``<``, ``>`` and ``/`` there (``plotly.io._json``),
so no guest string can close the script.  Plotly draws its text (tick labels, hover boxes) through
its own small HTML subset (``<b>``, ``<a href>``...) and decodes entities, so every guest string given
to a figure has its ``<``, ``>`` and ``&`` escaped first (:func:`label`); every guest string in the page
itself is HTML-escaped too (:func:`text`).  Both make control characters visible first (``\\x1b``), as
the CLI shows them.
"""

from __future__ import annotations

import html
from typing import Any

from qppsuite.cli.terminal import visible
from qppsuite.plugins.syscalls.classes import KINDS
from qppsuite.report.data import Activity, Process, RunReport, Timebase

#: One colour per kind (Okabe-Ito's colour-blind-safe palette: its blue, vermillion, bluish green, reddish
#: purple, orange and black; its sky blue was too close to the blue, its yellow too faint on white), and the
#: failures' mark.
KIND_COLOURS = {
    "file": "#0072B2",
    "process": "#D55E00",
    "memory": "#009E73",
    "network": "#CC79A7",
    "signal": "#E69F00",
    "time": "#000000",
    "other": "#999999",
}
FAILED_COLOUR = "#D00000"
#: Characters of a call's line shown in its hover box.
HOVER_CHARS = 160
ROW_PX = 22
#: A timeline of more rows than this also has its time axis at the top.
TOP_AXIS_ROWS = 30
#: d3-format of the time axes' ticks (:func:`_ticks`).
TIME_TICKS = ",.6~r"
#: A table cell holding a run of more characters than this without a space may break it anywhere (:func:`_wrap`).
LONG_WORD = 24
#: With more processes than this, each process's section starts folded (a link to it unfolds it).
OPEN_SECTIONS = 12
LEGEND_TOP = {"y": 1.0, "yanchor": "top", "yref": "container"}

TIMELINE_ID = "timeline"
ACTIVITY_ID = "activity"


def text(value: object) -> str:
    """A guest or database string for HTML (or Plotly's text): control characters shown, then escaped."""
    return html.escape(visible(str(value)), quote=True)


def label(value: object) -> str:
    """A guest string for Plotly's text (tick labels, hover boxes): control characters shown, ``<``, ``>`` and
    ``&`` escaped.  Plotly decodes those entities and numeric ones but shows ``&quot;`` as it is, and a quote
    is nothing to its tag parser, so quotes stay."""
    return html.escape(visible(str(value)), quote=False)


def row_label(process: Process) -> str:
    """A timeline row's label: ``name [pid]``."""
    return f"{process.name} [{process.pid}]"


KERNEL_THREAD = "kernel thread: makes no system calls the logger sees"
"""What the tree and a kernel thread's section say instead of its calls (see
:func:`~qppsuite.report.data.is_kernel_thread`)."""


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 call``, ``2 calls``."""
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def calls_text(p: Process, logged: str) -> str:
    """A process's calls for the tree and its section: ``3 calls (1 failed)``, or why there is no count."""
    if p.kernel_thread:
        return KERNEL_THREAD
    if p.logged:
        return f"{plural(p.syscalls, 'call')} ({p.failed:,} failed)"
    if logged == "none":
        return "calls not recorded"
    return "calls not logged (not the command's: only=command)"


def _ticks(axis: Timebase) -> dict[str, str]:
    """The time axis's tick labels: milliseconds with thousands separators (``20,000``), not Plotly's SI
    prefixes (``20k``, ``0.2M``, which read as other units), rounded to 6 significant digits with trailing zeros
    trimmed (d3-format ``,.6~r``: a tick at 999.9997 reads ``1,000``, one at 2.5 reads ``2.5``); instruction
    counts keep Plotly's own (``1.5G``)."""
    return {"tickformat": TIME_TICKS} if axis.virtual else {}


def timeline_figure(report: RunReport) -> Any:
    """One row per process (tree order, top to bottom) over the report's axis (virtual time, or instructions
    in older files): its lifetime as a line, its calls as marks coloured by kind, failed calls ringed in red."""
    import plotly.graph_objects as go

    shown = report.timeline_rows
    procs = [report.processes[n] for n in shown]
    row_of = {n: row for row, n in enumerate(shown)}  # a process's index -> its row on the timeline
    calls = report.calls
    fig = go.Figure()
    life_x: list[float | None] = []
    life_y: list[int | None] = []
    for row, p in enumerate(procs):
        if p.first_at is not None and p.last_at is not None:
            life_x += [p.first_at, p.last_at, None]
            life_y += [row, row, None]
    fig.add_trace(
        go.Scatter(
            x=life_x,
            y=life_y,
            mode="lines",
            line={"color": "#cccccc", "width": 6},
            name="lifetime",
            hoverinfo="skip",
        )
    )
    point = report.timebase.point
    hover = [
        f"{label(row_label(report.processes[r]))}<br>#{s} at {point(i, ns)}<br>{label(t[:HOVER_CHARS])}"
        for s, i, ns, r, t in zip(calls.seq, calls.insn, calls.ns, calls.row, calls.text, strict=True)
    ]
    y = [row_of.get(r) for r in calls.row]  # every call's process is shown: its calls were logged
    for kind in KINDS:
        picked = [n for n, k in enumerate(calls.kind) if k == kind]
        fig.add_trace(
            go.Scatter(
                x=[calls.at[n] for n in picked],
                y=[y[n] for n in picked],
                mode="markers",
                marker={"symbol": "line-ns-open", "size": 12, "color": KIND_COLOURS[kind], "line": {"width": 2}},
                name=f"{kind} ({len(picked)})",
                hovertext=[hover[n] for n in picked],
                hoverinfo="text",
            )
        )
    failed = [n for n, f in enumerate(calls.failed) if f]
    fig.add_trace(
        go.Scatter(
            x=[calls.at[n] for n in failed],
            y=[y[n] for n in failed],
            mode="markers",
            marker={"symbol": "circle-open", "size": 11, "color": FAILED_COLOUR, "line": {"width": 2}},
            name=f"failed ({len(failed)})",
            hovertext=[hover[n] for n in failed],
            hoverinfo="text",
        )
    )
    tall = len(procs) > TOP_AXIS_ROWS
    if tall:  # the time axis at the top too, on an empty trace of its own that follows the bottom one's range
        fig.add_trace(
            go.Scatter(x=[], y=[], xaxis="x2", mode="lines", name="top axis", showlegend=False, hoverinfo="skip")
        )
    fig.update_layout(
        height=max(320, ROW_PX * len(procs) + (200 if tall else 140)),
        margin={"l": 10, "r": 10, "t": 80 if tall else 30, "b": 40},
        xaxis={"title": report.timebase.title, "rangeslider": {"visible": False}, **_ticks(report.timebase)},
        # The rows' own range, reversed (the first process on top): autorange pads 5% of the height above and
        # below, 300 px of blank for 300 processes.
        yaxis={
            "tickmode": "array",
            "tickvals": list(range(len(procs))),
            "ticktext": [label(row_label(p)) for p in procs],
            "range": [len(procs) - 0.5, -0.5],
            "zeroline": False,
            "automargin": True,
            "fixedrange": False,
        },
        # Above the plot; over a top axis, at the top of the figure (its margin leaves the axis room below).
        legend={"orientation": "h", "x": 0, **(LEGEND_TOP if tall else {"y": 1.02, "yanchor": "bottom"})},
        dragmode="zoom",
        hovermode="closest",
        template="none",
    )
    if tall:
        fig.update_layout(
            xaxis2={"matches": "x", "overlaying": "x", "side": "top", "showgrid": False, **_ticks(report.timebase)}
        )
    return fig


def activity_figure(activity: Activity, axis: Timebase) -> Any:
    """Calls per bin of the report's axis for the whole run, stacked by kind."""
    import plotly.graph_objects as go

    width = activity.bin_width
    fig = go.Figure()
    for kind in KINDS:
        fig.add_trace(
            go.Bar(
                x=[edge + width / 2 for edge in activity.edges[:-1]],
                y=activity.counts[kind],
                width=width,
                name=kind,
                marker={"color": KIND_COLOURS[kind], "line": {"width": 0}},
                hovertemplate=f"{kind}: %{{y}} calls<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        legend_traceorder="normal",
        bargap=0,
        height=320,
        margin={"l": 10, "r": 10, "t": 30, "b": 40},
        xaxis={"title": axis.title, **_ticks(axis)},
        yaxis={"title": f"calls per {axis.span(width)}", "automargin": True},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        template="none",
    )
    return fig


def _summary(report: RunReport) -> str:
    s = report.summary
    when = "at the run's end" if s["virtual_at_end"] else "at the last logged event"
    virtual = (
        f"{s['virtual_ns'] / 1e9:.3f} s ({when})"
        if s["virtual_ns"] is not None
        else "not recorded (no call or event of the run has a virtual time)"
    )
    wall = (
        f"{s['wall_seconds']:.2f} s (the logged part: a boot made to save the ready snapshot is not in it)"
        if s["wall_seconds"] is not None
        else "unknown (the run never ended)"
    )
    stop = text(s["stop_reason"] or "never ended") + (f": {text(s['stop_message'])}" if s["stop_message"] else "")
    rows = [
        ("image", text(s["image"])),
        ("kernel", text(s["kernel"])),
        ("plugins", text(", ".join(map(str, s["plugins"])))),
        (
            "started",
            text(s["started_at"]) + (f", from snapshot {text(s['started_from'])}" if s["started_from"] else ", booted"),
        ),
        ("stop reason", stop),
        ("instructions", f"{s['insn_count']:,}" if s["insn_count"] is not None else "unknown"),
        ("virtual time", virtual),
        ("wall time", wall),
        ("processes", f"{s['processes']:,}"),
        ("system calls", f"{s['syscalls']:,}"),
        ("failed calls", f"{s['failed']:,} ({s['failure_rate']:.1%})"),
    ]
    if s["label"] is not None:
        rows.insert(0, ("label", text(s["label"])))
    if s["batch_status"] is not None:
        reason = f": {text(s['batch_reason'])}" if s["batch_reason"] else ""
        rows.insert(1 if s["label"] is not None else 0, ("batch job", text(s["batch_status"]) + reason))
    if s["kernel_threads"]:
        rows[-3] = ("processes", f"{s['processes']:,}, {plural(s['kernel_threads'], 'kernel thread')} among them")
    if report.logged == "none":
        rows[-2:] = [("system calls", "not recorded (syscalls_logger did not write this file)")]
    elif report.logged == "command":
        rows[-3] = (
            "processes",
            f"{rows[-3][1]}, {plural(s['logged_processes'], 'process', 'processes')} of the command "
            "(only=command: only their calls were logged)",
        )
    body = "".join(f"<tr><th>{k}</th><td{_wrap(html.unescape(v))}>{v}</td></tr>" for k, v in rows)
    return f'<table class="summary" id="summary">{body}</table>'


def _names(p: Process, axis: Timebase) -> str:
    """Every name the process had, in order, each exec'd one with its time on the axis (from proc_events)."""
    execs = list(p.renames)
    shown: list[str] = []
    for n, name in enumerate(p.names or [p.name]):
        label = text(name)
        if n and execs and execs[0][1] == name:
            at = execs.pop(0)[0]
            label += (
                f" <small>(exec at {at:,.3f} ms)</small>"
                if axis.virtual
                else f" <small>(exec at {at:,.0f} insns)</small>"
            )
        shown.append(label)
    return " → ".join(shown)


def _tree(report: RunReport) -> str:
    """The process tree; the trees of kernel threads (kthreadd's, or each of its children's when the run did not
    see kthreadd) after the others, in a folded group of their own."""
    trees: list[list[Process]] = []
    for p in report.processes:
        if p.depth == 0:
            trees.append([])
        trees[-1].append(p)
    kernel = [p for tree in trees if tree[0].kernel_thread for p in tree]
    out = [
        '<div class="tree" id="tree">',
        _nested([p for tree in trees if not tree[0].kernel_thread for p in tree], report),
    ]
    if kernel:
        count = sum(p.kernel_thread for p in kernel)
        out.append(
            f'<details id="kernel-threads"><summary>{plural(count, "kernel thread")} (kthreadd, pid 2, and the '
            f"threads it made: they run in the kernel and make no system calls the logger sees)</summary>"
            f"{_nested(kernel, report)}</details>"
        )
    out.append("</div>")
    return "".join(out)


def _nested(processes: list[Process], report: RunReport) -> str:
    """Nested lists in tree order (depth-first: each list opens and closes around its children)."""
    out: list[str] = []
    depth = -1
    for p in processes:
        if p.depth > depth:
            out.append("<ul>" * (p.depth - depth))
        else:
            out.append("</li>" + "</ul></li>" * (depth - p.depth))
        depth = p.depth
        out.append(
            f'<li><a href="#proc-{p.id}">{text(p.name)}</a> pid {p.pid}: {_names(p, report.timebase)}; '
            f"{calls_text(p, report.logged)}; {text(p.ended)}"
        )
    if depth >= 0:
        out.append("</li>" + "</ul></li>" * depth + "</ul>")
    return "".join(out)


def _wrap(value: object) -> str:
    """The class of a table cell holding ``value``: ``long`` (it may break anywhere) when a run of it without
    spaces is longer than :data:`LONG_WORD`, else none, so a number or a call's name never breaks mid-word.

    A table sizes its columns by their cells' narrowest width: with every cell breakable anywhere
    (``word-break:break-all``, or ``overflow-wrap:anywhere``) that is one character, and a long path squeezed
    the columns beside it to ``renam|e`` and ``4,837.83|9``; with no cell breakable, the path widened the
    table past the page."""
    return ' class="long"' if any(len(word) > LONG_WORD for word in visible(str(value)).split()) else ""


def _table(head: tuple[str, ...], rows: list[tuple[object, ...]], empty: str) -> str:
    if not rows:
        return f"<p class='none'>{empty}</p>"
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td{_wrap(v)}>{text(v)}</td>" if v is not None else "<td></td>" for v in r) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _process(p: Process, parent: Process | None, report: RunReport, counted: bool, folded: bool) -> str:
    """One process's section; ``counted``: its files come from file_activity (counts), else from call arguments;
    ``folded``: it starts closed (a link to it opens it)."""
    axis = report.timebase
    parent_link = f'<a href="#proc-{parent.id}">{text(parent.name)} [{parent.pid}]</a>' if parent else "none in the run"
    if counted:
        head: tuple[str, ...] = ("path", "opens", "reads", "bytes read", "writes", "bytes written", "errors")
        rows: list[tuple[object, ...]] = [
            (f.path, f.opens, f.reads, f.bytes_read, f.writes, f.bytes_written, f.errors) for f in p.files
        ]
    else:
        head = ("path", "calls naming it", "failed")
        rows = [(f.path, f.calls, f.errors) for f in p.files]
    files = _table(head, rows, "none recorded")
    if p.endpoints:
        keys = tuple(p.endpoints[0])
        endpoints = _table(keys, [tuple(e[k] for k in keys) for e in p.endpoints], "none recorded")
    else:
        endpoints = "<p class='none'>none recorded</p>"
    ops = ""
    if "renames and deletions" in report.sources:
        when = "time (ms)" if axis.virtual else "instructions"
        shown: list[tuple[object, ...]] = [
            (f"{t:,.3f}" if axis.virtual else f"{t:,.0f}", *rest) for t, *rest in p.file_ops
        ]
        head = (when, "op", "path", "new path", "flags", "result")
        ops = f"<h4>Renames and deletions</h4>{_table(head, shown, 'none recorded')}"
    no_calls = "no calls logged" if p.logged and not p.kernel_thread else calls_text(p, report.logged)
    return (
        f'<details class="process" id="proc-{p.id}"{"" if folded else " open"}>'
        f"<summary><h3>{text(p.name)} [{p.pid}]</h3> {calls_text(p, report.logged)}; {text(p.ended)}</summary>"
        f"<p>parent: {parent_link}; names: {_names(p, axis)}</p>"
        f"<h4>Top system calls</h4>{_table(('call', 'calls', 'failed'), list(p.top_calls), no_calls)}"
        f"<h4>Files touched</h4>{files}{ops}"
        f"<h4>Network endpoints</h4>{endpoints}"
        f"<h4>Errors</h4>{_table(('call', 'errno', 'calls'), list(p.errors), 'none')}"
        "</details>"
    )


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.5em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:2px 8px;text-align:left}
table.summary th{background:#f5f5f5} .tree ul{list-style:none;padding-left:1.4em;border-left:1px dotted #bbb}
.tree>ul{padding-left:0;border:none} .none{color:#777} .warning{background:#fff3cd;padding:.5em}
details.process{border-top:1px solid #eee;margin-top:.6em} details.process>summary{cursor:pointer}
details.process>summary>h3{display:inline;margin-right:.6em}
td{font-family:ui-monospace,monospace;white-space:pre-wrap} td.long{overflow-wrap:anywhere}
"""


#: Opens the folded section a link (or the page's address) points to: not every browser does.
UNFOLD = (
    "function unfold(){var t=location.hash&&document.getElementById(location.hash.slice(1));"
    "if(t&&t.tagName==='DETAILS'&&!t.open){t.open=true;t.scrollIntoView();}}"
    "window.addEventListener('hashchange',unfold);unfold();"
)


def render(report: RunReport) -> str:
    """The whole page: summary, process tree, timeline, activity, one section per process."""
    import plotly.io as pio

    config = {"displaylogo": False, "responsive": True}  # no scrollZoom: the wheel scrolls the page
    timeline = pio.to_html(
        timeline_figure(report), full_html=False, include_plotlyjs=True, div_id=TIMELINE_ID, config=config
    )
    if report.calls.seq:
        activity = pio.to_html(
            activity_figure(report.activity, report.timebase),
            full_html=False,
            include_plotlyjs=False,
            div_id=ACTIVITY_ID,
            config=config,
        )
    else:
        why = "syscalls_logger did not write this file" if report.logged == "none" else "the run logged none"
        activity = f"<p class='none' id='{ACTIVITY_ID}'>No system calls to draw: {why}.</p>"
    s = report.summary
    warning = f'<p class="warning">{text(report.warning)}</p>' if report.warning else ""
    sources = "; ".join(f"{k}: {text(v)}" for k, v in report.sources.items())
    by_id = {p.id: p for p in report.processes}
    counted = report.sources["files"] == "file_activity"
    folded = len(report.processes) > OPEN_SECTIONS
    sections = "".join(_process(p, by_id.get(p.parent_id or 0), report, counted, folded) for p in report.processes)
    kernel = sum(p.kernel_thread for p in report.processes)
    left_out = len(report.processes) - len(report.timeline_rows) - kernel
    timeline_note = "One row per process; drag to zoom, double-click to reset."
    if left_out:
        timeline_note += (
            f" {plural(left_out, 'process', 'processes')} whose calls were not logged (not the command's: "
            "only=command) are left out; the tree lists them."
        )
    if kernel:
        timeline_note += (
            f" {plural(kernel, 'kernel thread')} (no system calls the logger sees) "
            f"{'is' if kernel == 1 else 'are'} left out; the tree lists them."
        )
    if folded:
        sections = f"<p class='none'>Each process's section is folded: click its name to open it.</p>{sections}"
    title = f"qppsuite run {s['run']}" + (f" [{s['label']}]" if s["label"] is not None else "") + f": {s['image']}"
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{text(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{text(title)}</h1>{warning}<h2>Summary</h2>{_summary(report)}"
        f"<p class='none'>Sources: {sources}. Call kinds are strace's trace classes.</p>"
        f"<h2>Process tree</h2>{_tree(report)}"
        f"<h2>Timeline</h2><p class='none' id='timeline-note'>{timeline_note}</p>"
        f"{timeline}<h2>System-call activity</h2>{activity}"
        f"<h2>Processes</h2>{sections}<script>{UNFOLD}</script></body></html>\n"
    )
