"""The run's facts, as every plugin of the run sees them (``Plugin.context``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType


@dataclass(frozen=True)
class RunContext:
    """What was run: the image, its kernel and profile, where the run started from, and its options.

    The host (``qppsuite run``, ``record``, ``replay``, or a test) makes one for each run and hands it to
    :class:`~qppsuite.core.qpp.QPP`; a plugin reads it as ``self.context`` from ``load()`` on.  Every field
    may be None for a machine built by hand (a test, a script), so a plugin says what it needs when a field
    it requires is missing.
    """

    #: The image's name (``debian-armhf``), or None.
    image: str | None = None
    #: The image's directory in the cache.
    image_path: Path | None = None
    #: The kernel's release (``6.1.0-...-armmp``), from the image's manifest.
    kernel_release: str | None = None
    #: The kernel's OSI profile (JSON) that came with the image, or None when it has none.
    profile: Path | None = None
    #: The snapshot the run was restored from (``ready-<hash>`` or a saved name); None when it booted.
    snapshot: str | None = None
    #: The plugins the run was asked for (``--plugins``, as given), after the host's ``core``; requirements they
    #: pull in are not listed (``QPP.loaded`` has the load order once all are loaded).
    plugins: tuple[str, ...] = ()
    #: The run's options by name as the user gave them (``cmd``, ``max_insns``, ``timeout``, ``ram_mib``...).
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    #: The run's name as the host gave it (``qppsuite run --label``; a batch gives its job's label), or None.
    label: str | None = None
