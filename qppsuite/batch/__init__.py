"""``qppsuite batch``: many independent runs, each its own process and database, on this machine or a Ray cluster.

:mod:`.jobs` reads the jobs (the file format), :mod:`.outdir` is the output directory the runner and the merge
share, :mod:`.execute` runs one job, :mod:`.runner` dispatches them (thread pool or Ray), :mod:`.shipping`
sends images to Ray workers by hash, :mod:`.progress` shows the batch.  docs/batch.md is the user's guide.
"""
