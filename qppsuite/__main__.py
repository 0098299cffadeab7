"""``python -m qppsuite`` is the ``qppsuite`` command."""

from qppsuite.cli import main

main()
