"""The ``minbase`` image variant: a real Debian userland, as ``debootstrap --variant=minbase`` installs it.

**What is installed** (debootstrap 1.0.128+nmu2+deb12u2's ``scripts/debian-common``, ``work_out_debs``, which the
``bookworm``, ``trixie`` and ``sid`` scripts all include): every package whose ``Priority`` is ``required``
in the suite's index (``get_debs Priority: required``), plus ``apt`` (minbase's whole ``base``), plus, for
bookworm only, ``usr-is-merged`` (debootstrap merges /usr itself, so the ``usrmerge`` migration package is
excluded with ``EXCLUDE_DEPENDENCY``).  debootstrap then closes that set over ``Depends`` and
``Pre-Depends`` (``resolve_deps``, first alternative, no ``Recommends``); here the private apt's simulated
install does the same (:meth:`qppsuite.images.apt.PrivateApt.resolve`), together with the user's
``--packages``.  One difference: apt takes each package's candidate, so a point release's
``-updates`` version wins where debootstrap would take the suite's own.

**How it is laid out**: each package's data.tar is unpacked, in name order, into a tree with Debian's
merged-/usr layout (debootstrap's ``merge_usr``, the default for every suite after stretch): ``/bin``,
``/sbin`` and ``/lib`` are links into ``/usr``.  Nothing from busybox is on the image's own paths; qppsuite's
init, agent and toolkit live in ``/.qppsuite`` exactly as in an imported image
(:func:`qppsuite.images.importer.add_qppsuite_files`), and the boot line's ``rdinit=`` names that init.

**What the maintainer scripts would have done** (they cannot run: the host is not ARM and the build has no
chroot) is done by :func:`emulate_maintainer_scripts`, each step named after the script it stands for; see
:data:`LEFT_OUT` for what is deliberately not done.
"""

from __future__ import annotations

import re
import shlex
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822, Packages
from debian.debfile import DebError, DebFile

from qppsuite.errors import BuildError
from qppsuite.images.apt import PrivateApt
from qppsuite.images.builder import DEFAULT_BOOTARGS, KernelParts, open_data_tar
from qppsuite.images.guest import guest_script
from qppsuite.images.importer import INIT_PATH, WORKLOAD_PATH, add_qppsuite_files, busybox_binary
from qppsuite.images.initramfs import CpioEntry, InitramfsTree

VARIANT = "minbase"
#: minbase's ``base`` in debootstrap's ``work_out_debs``.
MINBASE_BASE = ("apt",)
#: ``required="$required usr-is-merged"`` for bookworm in ``work_out_debs``.
MERGED_USR_MARKER = {"bookworm": "usr-is-merged"}
#: The boot line of a minbase image: qppsuite's init is ``/.qppsuite/init``, as in an imported image.
BOOTARGS = f"{DEFAULT_BOOTARGS} rdinit=/{INIT_PATH}"
#: The hostname qppsuite's init sets (qppsuite/images/guest/init.sh), written to /etc/hostname too.
HOSTNAME = "qppsuite"
#: debootstrap's ``second_stage_install`` links /etc/localtime to UTC unless it exists; tzdata's postinst
#: then writes ``/etc/timezone`` with the name it finds behind the link.
TIMEZONE = "Etc/UTC"

#: The /etc/fstab debootstrap's ``first_stage_install`` writes.
FSTAB = b"# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"

#: What debootstrap and the maintainer scripts of a minbase system do that this module does not, and why.
LEFT_OUT = {
    "ldconfig (libc-bin postinst, debootstrap)": "no /etc/ld.so.cache: ld.so falls back to its trusted "
    "directories, /lib/arm-linux-gnueabihf and /usr/lib/arm-linux-gnueabihf, where every minbase library is",
    "dpkg-divert /bin/sh (dash postinst)": "dash ships the /bin/sh -> dash link itself; the diversion only "
    "records in /var/lib/dpkg/diversions that dash owns it",
    "pam-auth-update (libpam-runtime postinst)": "no /etc/pam.d/common-*: only login, su and passwd read "
    "them, and nothing logs in to a qppsuite guest",
    "py3compile (python3 postinsts)": "no __pycache__: Python compiles a module when it first imports it, "
    "into the guest's tmpfs",
    "update-alternatives state": "the links are made, not /var/lib/dpkg/alternatives/*",
    "dpkg's file lists": "the status file is written (dpkg-query works), not /var/lib/dpkg/info/*.list "
    "(dpkg -L and dpkg -S do not)",
    "/etc/apt/sources.list (debootstrap's setup_apt_sources)": "it would name the build host's mirror, "
    "which the guest cannot reach: the guest has no network",
    "/etc/resolv.conf (debootstrap's setup_etc copies the host's)": "the guest has no network",
}

Progress = Callable[[str], None]


def packages_of_priority(index: str | Iterable[str], priority: str = "required") -> list[str]:
    """The names (sorted, once each) of the packages whose ``Priority`` is ``priority`` in a Packages index.

    ``index`` is a Packages file's text (or its lines), as in the archive's ``dists/SUITE/COMPONENT/
    binary-ARCH/Packages`` or as ``apt-cache dumpavail`` prints it.  debootstrap's ``get_debs Priority:
    required`` reads the same field of the same files.
    """
    lines = index.splitlines() if isinstance(index, str) else index
    names: set[str] = set()
    for paragraph in Packages.iter_paragraphs(lines, fields=["Package", "Priority"], use_apt_pkg=False):
        if paragraph.get("Priority", "").strip() == priority and "Package" in paragraph:
            names.add(paragraph["Package"].strip())
    return sorted(names)


def minbase_names(required: Sequence[str], suite: str, extra: Sequence[str] = ()) -> list[str]:
    """What minbase asks to install in ``suite``: the ``required`` packages, apt, bookworm's
    ``usr-is-merged``, then the user's ``extra`` packages, each once."""
    names: list[str] = []
    marker = MERGED_USR_MARKER.get(suite)
    for name in [*required, *MINBASE_BASE, *([marker] if marker else []), *extra]:
        if name not in names:
            names.append(name)
    return names


def select_packages(apt: PrivateApt, extra: Sequence[str]) -> list[str]:
    """The minbase package names of the private apt's suite plus ``extra`` (see :func:`minbase_names`)."""
    required = packages_of_priority(apt.available())
    if not required:
        raise BuildError(f"apt lists no package of Priority: required in {apt.suite or 'its suite'}")
    return minbase_names(required, apt.suite or "", extra)


@dataclass(frozen=True)
class Alternative:
    """One link group member of ``update-alternatives --install LINK NAME PATH PRIORITY``."""

    link: str
    name: str
    path: str
    priority: int


_INSTALL = re.compile(r"update-alternatives\s+--install\s+(?P<args>[^;&|\n]*)")


def alternatives_in_script(script: str) -> list[Alternative]:
    """Every ``update-alternatives --install`` of a maintainer script, its ``--slave`` links included.

    Only literal calls count: one whose words hold a shell expansion (``$``) or that does not parse is
    skipped, since the script's run-time values are unknown.
    """
    joined = re.sub(r"\\\n", " ", script)
    found: list[Alternative] = []
    for match in _INSTALL.finditer(joined):
        try:
            words = shlex.split(match["args"], comments=True)
        except ValueError:
            continue
        if len(words) < 4 or any("$" in word for word in words) or not words[3].lstrip("-").isdigit():
            continue
        link, name, path, priority = words[0], words[1], words[2], int(words[3])
        found.append(Alternative(link, name, path, priority))
        rest = words[4:]
        while len(rest) >= 4 and rest[0] == "--slave":
            found.append(Alternative(rest[1], rest[2], rest[3], priority))
            rest = rest[4:]
    return found


@dataclass(frozen=True)
class InstalledPackage:
    """A package as unpacked: its control paragraph and maintainer scripts' text."""

    control: Deb822
    postinst: str


def read_control(deb: Path) -> InstalledPackage:
    """The control paragraph and postinst of a .deb (its control.tar)."""
    try:
        control = DebFile(str(deb)).control
        paragraph = control.debcontrol()
        postinst = (
            control.get_content("postinst", encoding="utf-8", errors="replace") if control.has_file("postinst") else ""
        )
    except (DebError, OSError, EOFError, ValueError) as err:
        raise BuildError(f"{deb.name} is not a readable Debian package: {err}") from None
    return InstalledPackage(paragraph, str(postinst))


def build_minbase_initramfs(
    debs: Sequence[Path], busybox_deb: Path, kernel: KernelParts, progress: Progress
) -> InitramfsTree:
    """The guest root of a minbase image: every package in ``debs`` unpacked, merged /usr, the maintainer
    scripts' work (:func:`emulate_maintainer_scripts`), the kernel's module, and qppsuite's files with the
    toolkit's busybox taken from ``busybox_deb`` (which is not unpacked, unless it is also in ``debs``)."""
    tree = InitramfsTree(merged_usr=True)
    installed: list[InstalledPackage] = []
    for deb in debs:
        progress(f"unpacking {deb.name}")
        with open_data_tar(deb) as tar:
            tree.add_tar(tar, deb.name)
        installed.append(read_control(deb))
    emulate_maintainer_scripts(tree, installed)
    for path, data in kernel.modules.items():
        tree.add_file(path, data)
    add_qppsuite_files(tree, busybox_binary(busybox_deb), None)
    # The default workload is qppsuite's, run with the image's own /bin/sh (dash).
    tree.add_file(WORKLOAD_PATH, guest_script("workload.sh"))
    return tree


def emulate_maintainer_scripts(tree: InitramfsTree, installed: Sequence[InstalledPackage]) -> None:
    """Do what debootstrap and the packages' postinsts do on first install, for the files the guest reads.

    Each step is guarded by the package whose script does it, so a suite without that package is left
    alone; what is not done is listed in :data:`LEFT_OUT`.
    """
    names = {str(p.control.get("Package")) for p in installed}
    if "base-passwd" in names:  # postinst: cp passwd.master /etc/passwd, group.master /etc/group
        _copy_default(tree, "usr/share/base-passwd/passwd.master", "etc/passwd")
        _copy_default(tree, "usr/share/base-passwd/group.master", "etc/group")
    if "passwd" in names:  # postinst: shadowconfig on (pwconv, grpconv)
        _shadow_files(tree)
    if "base-files" in names:
        _base_files(tree)
    if "libc-bin" in names:  # postinst: install_from_default nsswitch.conf
        _copy_default(tree, "usr/share/libc-bin/nsswitch.conf", "etc/nsswitch.conf")
    if "debianutils" in names:  # postinst: cp shells /etc/shells; update-shells
        _shells(tree)
    if "tzdata" in names:  # debootstrap: ln -sf /usr/share/zoneinfo/UTC; tzdata postinst: /etc/timezone
        if "etc/localtime" not in tree:
            tree.add_symlink("etc/localtime", f"/usr/share/zoneinfo/{TIMEZONE}")
        tree.add_file("etc/timezone", f"{TIMEZONE}\n".encode())
    if "etc/hostname" not in tree:  # debootstrap's setup_etc copies the host's; the guest's is qppsuite
        tree.add_file("etc/hostname", f"{HOSTNAME}\n".encode())
    if "etc/fstab" not in tree:  # debootstrap's first_stage_install
        tree.add_file("etc/fstab", FSTAB)
    make_alternatives(tree, [alt for package in installed for alt in alternatives_in_script(package.postinst)])
    if "dpkg" in names:
        tree.add_file("var/lib/dpkg/status", dpkg_status([p.control for p in installed]))


def _copy_default(tree: InitramfsTree, source: str, dest: str) -> None:
    """``install_from_default``: ``cp -p SOURCE DEST`` unless DEST exists."""
    entry = tree.get(source)
    if entry is not None and dest not in tree and stat.S_ISREG(entry.mode):
        tree.add_file(dest, entry.data, entry.mode & 0o7777)


def _group_ids(tree: InitramfsTree) -> dict[str, int]:
    entry = tree.get("etc/group")
    ids: dict[str, int] = {}
    for line in (entry.data.decode() if entry else "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            ids[fields[0]] = int(fields[2])
    return ids


def _shadow_files(tree: InitramfsTree) -> None:
    """pwconv and grpconv's output for base-passwd's accounts: every password locked (``*``, as in
    passwd.master's ``x``-less accounts after pwconv), no ageing data but pwconv's defaults (0:99999:7);
    root:shadow 0640 as shadowconfig leaves them.  The last-change day is left empty, not the build's day,
    so the image stays reproducible."""
    shadow_gid = _group_ids(tree).get("shadow", 0)
    for source, dest, line in (
        ("etc/passwd", "etc/shadow", "{0}:*::0:99999:7:::"),
        ("etc/group", "etc/gshadow", "{0}:*::{3}"),
    ):
        entry = tree.get(source)
        if entry is None or dest in tree:
            continue
        rows = [row.split(":") for row in entry.data.decode().splitlines() if row.count(":") >= 3]
        text = "".join(line.format(*row) + "\n" for row in rows)
        tree.add(CpioEntry(dest, stat.S_IFREG | 0o640, text.encode(), gid=shadow_gid))


def _base_files(tree: InitramfsTree) -> None:
    """base-files' postinst on first configure: the default dotfiles, /etc/profile and motd, the
    directories it makes, /var/run and /var/lock as links into /run, dpkg's default origin, and the
    login records (root:utmp 664/660)."""
    for source, dest in (
        ("dot.profile", "root/.profile"),
        ("dot.bashrc", "root/.bashrc"),
        ("profile", "etc/profile"),
        ("motd", "etc/motd"),
    ):
        _copy_default(tree, f"usr/share/base-files/{source}", dest)
    if "etc/dpkg/origins/default" not in tree and "etc/dpkg/origins/debian" in tree:
        tree.add_symlink("etc/dpkg/origins/default", "debian")
    groups = _group_ids(tree)
    for directory, perm, group in (
        ("mnt", 0o755, "root"),
        ("srv", 0o755, "root"),
        ("opt", 0o755, "root"),
        ("etc/opt", 0o755, "root"),
        ("var/opt", 0o755, "root"),
        ("media", 0o755, "root"),
        ("var/mail", 0o2775, "mail"),
        ("run/lock", 0o1777, "root"),
    ):
        if directory not in tree:
            tree.add(CpioEntry(directory, stat.S_IFDIR | perm, gid=groups.get(group, 0)))
    for link, target in (("var/spool/mail", "../mail"), ("var/run", "/run"), ("var/lock", "/run/lock")):
        existing = tree.get(link)
        if existing is None or existing.is_dir:
            tree.add_symlink(link, target)
    tree.add_symlink("usr/local/man", "share/man")
    for log, perm in (("var/log/wtmp", 0o664), ("var/log/btmp", 0o660), ("var/log/lastlog", 0o664)):
        if log not in tree:
            tree.add(CpioEntry(log, stat.S_IFREG | perm, gid=groups.get("utmp", 0)))


def _shells(tree: InitramfsTree) -> None:
    """update-shells: /etc/shells is debianutils' template, then each shell of the template and of
    ``/usr/share/debianutils/shells.d/*`` (in C order), each followed by its real path when a merged /usr
    makes that another name (``/bin/sh`` then ``/usr/bin/sh``)."""
    template = tree.get("usr/share/debianutils/shells")
    if template is None or "etc/shells" in tree:
        return
    sources = [template.data.decode()]
    prefix = "usr/share/debianutils/shells.d/"
    sources += [entry.data.decode() for entry in sorted(tree.entries(), key=lambda e: e.path)
                if entry.path.startswith(prefix) and stat.S_ISREG(entry.mode)]  # fmt: skip
    lines = [line for line in sources[0].splitlines() if line.startswith("#")]
    for text in sources:
        for raw in text.splitlines():
            shell = raw.split("#", 1)[0].strip()
            if not shell:
                continue
            real = f"/usr{shell}" if tree.merged_usr and shell.split("/")[1:2] in (["bin"], ["sbin"]) else shell
            for name in (shell, real):
                if name not in lines:
                    lines.append(name)
    tree.add_file("etc/shells", "".join(f"{line}\n" for line in lines).encode())


def make_alternatives(tree: InitramfsTree, alternatives: Iterable[Alternative]) -> list[Alternative]:
    """update-alternatives in automatic mode: per name, the highest priority whose target is in the tree
    wins; ``LINK -> /etc/alternatives/NAME -> PATH``.  A group whose target was not unpacked (a man page,
    which the image leaves out) is skipped.  Returns the alternatives made."""
    best: dict[str, Alternative] = {}
    for alt in alternatives:
        if alt.path.lstrip("/") not in tree:
            continue
        if alt.name not in best or alt.priority > best[alt.name].priority:
            best[alt.name] = alt
    made = sorted(best.values(), key=lambda a: a.name)
    for alt in made:
        tree.add_symlink(f"etc/alternatives/{alt.name}", alt.path)
        link = tree.get(alt.link)
        if link is None or stat.S_ISLNK(link.mode):
            tree.add_symlink(alt.link, f"/etc/alternatives/{alt.name}")
    return made


def dpkg_status(controls: Iterable[Deb822]) -> bytes:
    """/var/lib/dpkg/status for packages unpacked and configured: each control paragraph with
    ``Status: install ok installed`` after its ``Package`` field (dpkg's own order), sorted by name."""
    paragraphs = []
    for control in sorted(controls, key=lambda c: str(c.get("Package"))):
        entry = Deb822()
        for key, value in control.items():
            entry[key] = value
            if key == "Package":
                entry["Status"] = "install ok installed"
        paragraphs.append(entry.dump())
    return "\n".join(paragraphs).encode()
