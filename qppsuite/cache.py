"""Where qppsuite keeps what it downloads, builds and learns: one cache directory for every part.

``--cache-dir`` > ``$QPPSUITE_CACHE`` > the XDG cache directory (platformdirs' ``user_cache_dir``).
"""

import os
from pathlib import Path

import platformdirs

CACHE_ENV = "QPPSUITE_CACHE"


def cache_dir(override: Path | None = None) -> Path:
    """Where downloads and images live: ``--cache-dir`` > ``$QPPSUITE_CACHE`` > the XDG cache dir."""
    if override is not None:
        return Path(override).expanduser().absolute()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().absolute()
    return Path(platformdirs.user_cache_dir("qppsuite", appauthor=False))
