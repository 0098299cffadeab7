"""qppsuite: whole-system dynamic analysis of ARM Linux on Unicorn."""

__version__ = "0.1.0"
