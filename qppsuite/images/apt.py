"""A private apt for one foreign architecture and one Debian suite, living entirely under the cache directory.

The host's configured sources are reused (so whatever mirror the host trusts
is what images come from): each entry of the host's own release is read from
apt at run time (``apt-get indextargets``) and rewritten for the suite asked
for (``bookworm-updates`` becomes ``trixie-updates``), into a sources list
under the cache.  Lists, the package cache and the dpkg status are private:
the host's dpkg architectures and package state are never touched, and the
status file stays *empty*, so dependency resolution answers
"what would a bare system need" - exactly the closure to put in an initramfs.

apt is driven through its command-line tools rather than python-apt, which is
not installable from PyPI.  Its messages are kept verbatim so a failure can be
reported as apt's own words.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from qppsuite.errors import BuildError

# Lists younger than this are reused: rebuilds stay fast and work offline.
LISTS_MAX_AGE_S = 6 * 3600
UPDATE_STAMP = "qppsuite-updated"

SUITE_NAME = re.compile(r"^[a-z][a-z0-9]*$")
"""A Debian suite as ``--suite`` takes it: a codename or ``stable``-style name, without a ``-updates`` pocket."""

INST_LINE = re.compile(r"^Inst (?P<name>[^\s:]+)(?::\S+)? (?:\[\S+\] )?\((?P<version>\S+) .*\[(?P<arch>[^\]]+)\]\)")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class AptPackage:
    """One exact package version as apt's index describes it."""

    name: str
    version: str
    architecture: str
    size: int
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"

    @property
    def deb_filename(self) -> str:
        """The file name ``apt-get download`` gives it (an epoch's ':' is quoted)."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.architecture}.deb"


@dataclass(frozen=True)
class Source:
    """One ``deb`` entry of a sources list: the archive's URI, a suite and its components."""

    uri: str
    suite: str
    components: tuple[str, ...]

    @property
    def line(self) -> str:
        """The entry as a one-line ``sources.list`` line."""
        return f"deb {self.uri} {self.suite} {' '.join(self.components)}"


def host_sources() -> list[Source]:
    """The host's configured ``deb`` entries as apt itself parses them (one-line and deb822 files alike).

    ``apt-get indextargets`` lists every index target of every configured
    entry, whether or not its lists were ever downloaded; entries are merged
    per (URI, suite) with their components in order.
    """
    if shutil.which("apt-get") is None:
        raise BuildError("apt-get not found: building images needs Debian's apt on the host")
    result = subprocess.run(
        ["apt-get", "indextargets", "--format", "$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)"],
        env=dict(os.environ, LC_ALL="C"),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"apt cannot list the host's sources: {_apt_errors(result.stderr + result.stdout)}")
    merged: dict[tuple[str, str], list[str]] = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) != 4 or fields[0] != "deb":
            continue
        components = merged.setdefault((fields[1], fields[2]), [])
        if fields[3] not in components:
            components.append(fields[3])
    return [Source(uri, suite, tuple(components)) for (uri, suite), components in merged.items()]


def sources_for_suite(host: Sequence[Source], suite: str) -> list[Source]:
    """The host's entries of its own release, rewritten for ``suite``; the pocket after the first '-' is kept.

    The host's release is the suite most of its entries share before any
    ``-pocket`` (``bookworm`` for ``bookworm``, ``bookworm-updates`` and
    ``bookworm-security``); entries of other releases (a third party's
    repository) are left out, since no other suite can be derived from them.
    Raises BuildError naming what was found when the host has no such entry.
    """
    if not SUITE_NAME.match(suite):
        raise BuildError(f"invalid suite {suite!r}: a Debian codename such as bookworm or trixie")
    bases = [source.suite.partition("-")[0] for source in host]
    if not bases:
        raise BuildError("the host's apt has no deb sources configured: no archive to build images from")
    release = max(sorted(set(bases)), key=bases.count)
    return [
        Source(source.uri, suite + source.suite[len(release) :], source.components)
        for source, base in zip(host, bases, strict=True)
        if base == release
    ]


def _apt_errors(text: str) -> str:
    """apt's own error lines, joined into one line (warnings only if there is no error)."""
    lines = [line.strip() for line in text.splitlines()]
    errors = [line for line in lines if line.startswith("E:")]
    chosen = errors or [line for line in lines if line.startswith("W:")] or [line for line in lines if line]
    return "; ".join(chosen[:3]) if chosen else "no message"


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class PrivateApt:
    """apt-get/apt-cache with private state under ``root`` and one architecture.

    ``sources`` are the entries apt reads (None: the host's own sources list
    and parts, as configured).  Each suite keeps its own state (lists and
    status) under ``root/suites/SUITE``, so two suites' packages never mix in
    one resolution; downloaded .debs are shared, their names being exact
    versions.  ``update`` runs at most once per instance (one instance per
    build); a failed ``update`` is remembered, because its message explains a
    later "package not found" better than the lookup's message alone.
    """

    def __init__(
        self,
        root: Path,
        architecture: str = "armhf",
        progress: Progress | None = None,
        *,
        suite: str | None = None,
        sources: Sequence[Source] | None = None,
    ) -> None:
        self.root = root
        self.architecture = architecture
        self.suite = suite
        self.state_dir = root / "state" if suite is None else root / "suites" / suite
        self.cache_dir = root / "cache"
        self.archives_dir = self.cache_dir / "archives"
        self.status_file = self.state_dir / "status"
        self.sources_file: Path | None = None
        self.updated = False
        self.update_problem: str | None = None
        self._progress = progress or (lambda _message: None)
        for directory in (self.state_dir / "lists" / "partial", self.archives_dir / "partial"):
            directory.mkdir(parents=True, exist_ok=True)
        self.status_file.touch()
        if sources is not None:
            self.sources_file = self.state_dir / "sources.list"
            text = "".join(f"{source.line}\n" for source in sources)
            if not self.sources_file.exists() or self.sources_file.read_text() != text:
                self.sources_file.write_text(text)
                (self.state_dir / UPDATE_STAMP).unlink(missing_ok=True)  # other sources: the lists are stale
            (self.state_dir / "sources.list.d").mkdir(exist_ok=True)

    def options(self) -> list[str]:
        options = {
            "Dir::State": self.state_dir,
            "Dir::State::status": self.status_file,
            "Dir::Cache": self.cache_dir,
            # Some hosts disable apt's binary caches (Docker images do); with a
            # private cache dir they are safe to keep and save seconds per query.
            "Dir::Cache::pkgcache": "pkgcache.bin",
            "Dir::Cache::srcpkgcache": "srcpkgcache.bin",
            "APT::Architecture": self.architecture,
            "APT::Architectures::": self.architecture,
            "APT::Get::Assume-Yes": "true",
        }
        if self.sources_file is not None:
            options["Dir::Etc::sourcelist"] = self.sources_file
            options["Dir::Etc::sourceparts"] = self.state_dir / "sources.list.d"
        if os.geteuid() == 0:
            # The _apt sandbox user cannot write into a cache under root's home.
            options["APT::Sandbox::User"] = "root"
        return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]

    def _run(self, tool: str, args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found: building images needs Debian's apt on the host")
        env = dict(os.environ, LC_ALL="C", DEBIAN_FRONTEND="noninteractive")
        return subprocess.run(
            [tool, "-q", *self.options(), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the private apt's lock: concurrent builds share lists and downloads."""
        with (self.root / "lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._progress("waiting for another build using the same apt cache")
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def lists_age(self) -> float | None:
        """Seconds since the last ``update`` that produced package lists, or None if never."""
        stamp = self.state_dir / UPDATE_STAMP
        has_lists = any(self.state_dir.joinpath("lists").glob("*_Packages*"))
        if not stamp.exists() or not has_lists:
            return None
        return time.time() - stamp.stat().st_mtime

    def refresh(self, *, force: bool = False) -> None:
        """Run ``apt-get update`` unless the lists are fresh (or it already ran for this build).

        A non-zero exit is not fatal: one failed index (a suite mid-sync) still
        leaves the others usable, so the verdict is left to whether the wanted
        packages resolve.
        """
        if self.updated:
            return
        age = self.lists_age()
        if not force and age is not None and age < LISTS_MAX_AGE_S:
            return
        self._progress("updating the private apt package lists")
        result = self._run("apt-get", ["update"])
        self.updated = True
        if result.returncode != 0:
            self.update_problem = _apt_errors(result.stdout + "\n" + result.stderr)
        if any(self.state_dir.joinpath("lists").glob("*_Packages*")):
            (self.state_dir / UPDATE_STAMP).touch()
        elif result.returncode != 0:
            suite = f" for {self.suite}" if self.suite else ""
            raise BuildError(f"apt-get update found no package lists{suite}: {self.update_problem}")

    def _failure(self, what: str, message: str) -> BuildError:
        if self.update_problem:
            message += f" (apt-get update also reported: {self.update_problem})"
        return BuildError(f"apt cannot {what}: {message}")

    def package_names(self, prefix: str) -> list[str]:
        result = self._run("apt-cache", ["pkgnames", prefix])
        return sorted(set(result.stdout.split()))

    def show(self, specs: Sequence[str]) -> list[AptPackage]:
        """Index records for ``name`` or ``name=version`` specs, in the order asked."""
        if not specs:
            return []
        result = self._run("apt-cache", ["show", "--no-all-versions", *specs])
        if result.returncode != 0:
            raise self._failure(f"find {', '.join(specs)}", _apt_errors(result.stderr + result.stdout))
        found: dict[str, AptPackage] = {}
        for para in Deb822.iter_paragraphs(result.stdout):
            if "Package" not in para or "SHA256" not in para:
                continue
            package = AptPackage(
                name=para["Package"],
                version=para["Version"],
                architecture=para["Architecture"],
                size=int(para["Size"]),
                sha256=para["SHA256"],
            )
            found.setdefault(package.name, package)
        missing = [spec for spec in specs if spec.split("=")[0] not in found]
        if missing:
            raise self._failure(f"find {', '.join(missing)}", "no index record")
        return [found[spec.split("=")[0]] for spec in specs]

    def available(self) -> str:
        """The index record of every package's candidate version, as ``apt-cache dumpavail`` prints them
        (deb822 paragraphs: ``Package``, ``Priority``, ``Depends``... as the suite's Packages files give them)."""
        result = self._run("apt-cache", ["dumpavail"])
        if result.returncode != 0:
            raise self._failure("list the available packages", _apt_errors(result.stderr + result.stdout))
        return result.stdout

    def has_package(self, name: str) -> bool:
        """Whether ``name`` has an installable candidate (not merely a name apt has heard of)."""
        result = self._run("apt-cache", ["show", "--no-all-versions", name])
        return result.returncode == 0 and "SHA256:" in result.stdout

    def resolve(self, names: Sequence[str]) -> list[AptPackage]:
        """``names`` and the dependency closure a bare system needs, without recommends.

        A simulated ``install`` against the empty private status yields the
        exact versions; their index records give sizes and hashes.
        """
        result = self._run("apt-get", ["-s", "install", "--no-install-recommends", *names])
        if result.returncode != 0:
            message = _apt_errors(result.stderr + result.stdout)
            culprits = [name for name in names if name in message] or list(names)
            raise self._failure(f"install {', '.join(culprits)}", message)
        specs = []
        for line in result.stdout.splitlines():
            match = INST_LINE.match(line)
            if match:
                specs.append(f"{match['name']}={match['version']}")
        return sorted(self.show(specs), key=lambda p: p.name)

    def cached_path(self, package: AptPackage) -> Path:
        return self.archives_dir / package.deb_filename

    def missing_bytes(self, packages: Sequence[AptPackage]) -> int:
        """How much downloading ``packages`` would fetch (cached files of the right size excluded)."""
        total = 0
        for package in packages:
            path = self.cached_path(package)
            if not (path.exists() and path.stat().st_size == package.size):
                total += package.size
        return total

    def download(self, package: AptPackage) -> Path:
        """The package's .deb in the private archive, downloaded only if absent or damaged.

        apt itself skips a file that is present with the right hash; the hash
        is checked again here so a damaged cache is never used silently.
        """
        path = self.cached_path(package)
        if path.exists() and path.stat().st_size == package.size and file_sha256(path) == package.sha256:
            return path
        path.unlink(missing_ok=True)
        mib = package.size / 2**20
        self._progress(f"downloading {package.name} {package.version} ({mib:.1f} MiB)")
        result = self._run("apt-get", ["download", package.spec], cwd=self.archives_dir)
        if result.returncode != 0 or not path.exists():
            raise self._failure(f"download {package.spec}", _apt_errors(result.stderr + result.stdout))
        if file_sha256(path) != package.sha256:
            path.unlink()
            raise BuildError(f"downloaded {package.deb_filename} does not match its index sha256")
        return path
