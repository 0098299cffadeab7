"""The run report: ``qppsuite report DB`` (one self-contained HTML page) and ``qppsuite stats DB --plot``.

:mod:`qppsuite.report.data` reads a run database into plain data; :mod:`qppsuite.report.html` renders it
with Plotly; :mod:`qppsuite.report.plot` draws the activity figure as an image with matplotlib.
"""
