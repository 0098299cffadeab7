"""The one native part of qppsuite: the engine's instruction counter (``qppsuite/core/_icount.c``).

Everything else is in pyproject.toml; setuptools reads both.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("qppsuite.core._icount", ["qppsuite/core/_icount.c"], extra_compile_args=["-O2"])])
