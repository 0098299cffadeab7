"""The minbase image variant (issue 12, item 3): Debian's own userland as ``debootstrap --variant=minbase``
installs it, dash as /bin/sh, and no busybox applet on the image's paths.

The unit tests check the package selection and the maintainer scripts' work on small inputs; the boot
tests build the real image (bookworm, plus python3 and procps) and ask the guest itself.
"""

from __future__ import annotations

import gzip
import json
import re
import stat
import subprocess
from pathlib import Path

import pytest
from console_sink import Console
from host_tools import host_tool
from oracle.guest import logged_run

from qppsuite.cli.run_cmd import image_ram_mib
from qppsuite.errors import ImageError
from qppsuite.images.apt import PrivateApt, host_sources, sources_for_suite
from qppsuite.images.builder import DEFAULT_RAM_MIB, build_image, default_image_name, default_ram_mib
from qppsuite.images.bundle import ImageBundle, cache_dir, open_image
from qppsuite.images.initramfs import InitramfsTree, read_cpio_newc
from qppsuite.images.minbase import (
    Alternative,
    InstalledPackage,
    alternatives_in_script,
    dpkg_status,
    emulate_maintainer_scripts,
    make_alternatives,
    minbase_names,
    packages_of_priority,
    select_packages,
)
from qppsuite.session import RunOptions, run

PACKAGES_TEXT = """\
Package: base-files
Version: 12.4+deb12u15
Architecture: armhf
Essential: yes
Priority: required
Description: Debian base system miscellaneous files
 This package contains the basic filesystem hierarchy of a Debian system.
 .
 Priority: optional (a continuation line, not a field)

Package: bash
Priority: required
Version: 5.2.15-2+b13
Pre-Depends: libc6 (>= 2.36), libtinfo6 (>= 6)

Package: procps
Version: 2:4.0.2-3
Priority: important

Package: strace
Version: 6.1-0.1
Priority: optional

Package: nopriority
Version: 1

Package: bash
Priority: required
Version: 5.2.15-2
"""


def test_packages_of_priority_reads_the_priority_field_of_each_paragraph() -> None:
    assert packages_of_priority(PACKAGES_TEXT) == ["base-files", "bash"]
    assert packages_of_priority(PACKAGES_TEXT.splitlines(), "important") == ["procps"]
    assert packages_of_priority(PACKAGES_TEXT, "extra") == []
    assert packages_of_priority("") == []


def test_minbase_names_follow_debootstraps_work_out_debs() -> None:
    required = ["base-files", "bash", "dash"]
    # bookworm: "required usr-is-merged"; minbase's base is apt; the user's packages last, each once
    assert minbase_names(required, "bookworm", ["python3", "bash"]) == [
        "base-files", "bash", "dash", "apt", "usr-is-merged", "python3",
    ]  # fmt: skip
    assert minbase_names(required, "trixie") == ["base-files", "bash", "dash", "apt"]


def test_default_name_of_a_minbase_image_differs_from_the_busybox_ones() -> None:
    assert default_image_name([], "bookworm", "minbase") == "debian-armhf-minbase"
    assert default_image_name(["python3"], "trixie", "minbase") == "debian-armhf-minbase-trixie+python3"
    assert default_image_name(["python3"], "trixie") == "debian-armhf-trixie+python3"


MAWK_POSTINST = """#!/bin/sh
set -e
if [ "$1" = configure ]; then
        update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\
            --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \\
            --slave /usr/bin/nawk nawk /usr/bin/mawk
fi
update-alternatives --install "$DPKG_ROOT/usr/bin/x" x /usr/bin/y 1
update-alternatives --install /usr/bin/pager pager /bin/more 50 || true
"""


def test_alternatives_are_read_from_literal_update_alternatives_calls() -> None:
    assert alternatives_in_script(MAWK_POSTINST) == [
        Alternative("/usr/bin/awk", "awk", "/usr/bin/mawk", 5),
        Alternative("/usr/share/man/man1/awk.1.gz", "awk.1.gz", "/usr/share/man/man1/mawk.1.gz", 5),
        Alternative("/usr/bin/nawk", "nawk", "/usr/bin/mawk", 5),
        Alternative("/usr/bin/pager", "pager", "/bin/more", 50),
    ]
    assert alternatives_in_script("update-alternatives --remove awk /usr/bin/mawk\n") == []


def test_alternatives_link_through_etc_alternatives_to_the_best_target_present() -> None:
    tree = InitramfsTree(merged_usr=True)
    tree.add_file("usr/bin/mawk", b"\x7fELF", 0o755)
    tree.add_file("usr/bin/gawk", b"\x7fELF", 0o755)
    tree.add_file("bin/more", b"\x7fELF", 0o755)
    made = make_alternatives(
        tree,
        [
            *alternatives_in_script(MAWK_POSTINST),
            Alternative("/usr/bin/awk", "awk", "/usr/bin/gawk", 10),
            Alternative("/usr/bin/awk", "awk", "/usr/bin/missing", 99),  # not unpacked: not a candidate
        ],
    )
    assert [a.name for a in made] == ["awk", "nawk", "pager"]  # the man page was not unpacked
    links = {e.path: e.data.decode() for e in tree.entries() if stat.S_ISLNK(e.mode)}
    assert links["usr/bin/awk"] == "/etc/alternatives/awk" and links["etc/alternatives/awk"] == "/usr/bin/gawk"
    assert links["usr/bin/nawk"] == "/etc/alternatives/nawk" and links["etc/alternatives/nawk"] == "/usr/bin/mawk"
    assert links["etc/alternatives/pager"] == "/bin/more"
    assert "etc/alternatives/awk.1.gz" not in links


def _package(name: str, postinst: str = "") -> InstalledPackage:
    from debian.deb822 import Deb822

    return InstalledPackage(Deb822({"Package": name, "Version": "1.0", "Description": "x\n long\n ."}), postinst)


def test_maintainer_scripts_first_install_work_is_emulated() -> None:
    tree = InitramfsTree(merged_usr=True)
    tree.add_file("usr/share/base-passwd/passwd.master", b"root:*:0:0:root:/root:/bin/bash\n")
    tree.add_file("usr/share/base-passwd/group.master", b"root:*:0:\nshadow:*:42:\nutmp:*:43:\n")
    tree.add_file("usr/share/base-files/profile", b"# profile\n")
    tree.add_file("usr/share/base-files/dot.bashrc", b"# bashrc\n")
    tree.add_file("usr/share/libc-bin/nsswitch.conf", b"passwd: files\n")
    tree.add_file("usr/share/debianutils/shells", b"# /etc/shells: valid login shells\n/bin/sh\n")
    tree.add_file("usr/share/debianutils/shells.d/dash", b"/bin/dash\n")
    tree.add_file("usr/share/debianutils/shells.d/bash", b"/bin/bash\n/bin/rbash\n")
    tree.add_file("etc/dpkg/origins/debian", b"Vendor: Debian\n")
    names = ["base-passwd", "passwd", "base-files", "libc-bin", "debianutils", "tzdata", "dpkg"]
    emulate_maintainer_scripts(tree, [_package(name) for name in names])

    def text(path: str) -> str:
        entry = tree.get(path)
        assert entry is not None, path
        return entry.data.decode()

    assert text("etc/passwd") == "root:*:0:0:root:/root:/bin/bash\n"
    assert text("etc/group").startswith("root:*:0:\n")
    shadow = tree.get("etc/shadow")
    assert shadow is not None and shadow.gid == 42 and shadow.mode & 0o777 == 0o640
    assert text("etc/shadow") == "root:*::0:99999:7:::\n"
    assert text("etc/gshadow") == "root:*::\nshadow:*::\nutmp:*::\n"
    assert text("etc/profile") == "# profile\n" and text("root/.bashrc") == "# bashrc\n"
    assert text("etc/nsswitch.conf") == "passwd: files\n"
    assert text("etc/shells").splitlines() == [
        "# /etc/shells: valid login shells",
        "/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash", "/bin/rbash", "/usr/bin/rbash",
        "/bin/dash", "/usr/bin/dash",
    ]  # fmt: skip
    assert text("etc/timezone") == "Etc/UTC\n" and text("etc/hostname") == "qppsuite\n"
    assert text("etc/fstab") == "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"
    links = {e.path: e.data.decode() for e in tree.entries() if stat.S_ISLNK(e.mode)}
    assert links["etc/localtime"] == "/usr/share/zoneinfo/Etc/UTC"
    assert links["var/run"] == "/run" and links["var/lock"] == "/run/lock"
    assert links["etc/dpkg/origins/default"] == "debian"
    wtmp = tree.get("var/log/wtmp")
    assert wtmp is not None and wtmp.gid == 43 and wtmp.mode & 0o777 == 0o664
    status = text("var/lib/dpkg/status")
    assert status.count("Status: install ok installed\n") == len(names)
    assert status.startswith("Package: base-files\nStatus: install ok installed\nVersion: 1.0\n")


def test_maintainer_script_work_leaves_what_packages_or_the_user_put_there() -> None:
    tree = InitramfsTree(merged_usr=True)
    tree.add_file("usr/share/base-passwd/passwd.master", b"root:*:0:0:root:/root:/bin/bash\n")
    tree.add_file("etc/passwd", b"mine\n")
    tree.add_symlink("etc/localtime", "/usr/share/zoneinfo/Europe/Paris")
    emulate_maintainer_scripts(tree, [_package("base-passwd"), _package("tzdata")])
    passwd, localtime = tree.get("etc/passwd"), tree.get("etc/localtime")
    assert passwd is not None and passwd.data == b"mine\n"
    assert localtime is not None and localtime.data == b"/usr/share/zoneinfo/Europe/Paris"
    assert "var/lib/dpkg/status" not in tree  # no dpkg, no status


def test_dpkg_status_keeps_multiline_fields() -> None:
    from debian.deb822 import Deb822

    status = dpkg_status([Deb822({"Package": "b", "Version": "2"}), _package("a").control]).decode()
    paragraphs = list(Deb822.iter_paragraphs(status))
    assert [p["Package"] for p in paragraphs] == ["a", "b"]
    assert paragraphs[0]["Description"] == "x\n long\n ." and paragraphs[1]["Status"] == "install ok installed"


def test_default_ram_covers_the_rootfs_and_never_goes_below_the_default() -> None:
    assert default_ram_mib(20 << 20, 8 << 20) == DEFAULT_RAM_MIB
    big = default_ram_mib(119 << 20, 43 << 20)
    # half the RAM the kernel keeps holds the files and 16 MiB for /tmp
    assert big % 16 == 0 and (big - 43 - 40) / 2 >= 119 + 16 and big <= 400


def test_run_takes_the_images_recorded_ram_unless_told(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for name, initrd in (("big", {"file": "initrd.cpio.gz", "ram_mib": 368}), ("small", {"file": "initrd.cpio.gz"})):
        bundle = images / name
        bundle.mkdir(parents=True)
        (bundle / "initrd.cpio.gz").write_bytes(b"x")
        (bundle / "vmlinuz").write_bytes(b"x")
        manifest = {
            "format": 1,
            "name": name,
            "kernel": {"file": "vmlinuz"},
            "initrd": initrd,
            "files": {"vmlinuz": {"sha256": "0" * 64, "size": 1}, "initrd.cpio.gz": {"sha256": "0" * 64, "size": 1}},
        }
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    try:
        open_image("big", cache=tmp_path, verify=False)
    except ImageError as err:
        pytest.skip(f"the hand-made manifest does not load: {err}")
    assert image_ram_mib("big", tmp_path) == 368
    assert image_ram_mib("small", tmp_path) == 256
    assert image_ram_mib("missing", tmp_path) == 256


# --- the real image ---------------------------------------------------------------------------------------

MINBASE_PACKAGES = ("python3", "procps")


def _minbase_image(suite: str) -> ImageBundle:
    name = default_image_name(list(MINBASE_PACKAGES), suite, "minbase")
    try:
        bundle = open_image(name, cache=cache_dir())
        if bundle.manifest.get("variant") == "minbase" and "ram_mib" in bundle.manifest["initrd"]:
            return bundle
    except ImageError:
        pass
    return build_image(name, packages=MINBASE_PACKAGES, suite=suite, variant="minbase", cache=cache_dir())


@pytest.fixture(scope="module", params=["bookworm", "trixie"])
def minbase_image(request: pytest.FixtureRequest) -> ImageBundle:
    return _minbase_image(request.param)


def _run(image: ImageBundle, cmd: str | None, **extra: object) -> str:
    console = Console()
    ram = image.manifest["initrd"]["ram_mib"]
    result = run(RunOptions(cmd=cmd, ram_mib=ram, warm=True, timeout_seconds=900, **extra), console, image=image)  # type: ignore[arg-type]
    assert result.ok, (result.reason, console.text[-3000:])
    return console.text.replace("\r", "")


@pytest.mark.boot
def test_the_tree_is_debians_with_busybox_only_in_the_toolkit(minbase_image: ImageBundle) -> None:
    manifest = minbase_image.manifest
    assert manifest["variant"] == "minbase" and manifest["bootargs"].endswith(" rdinit=/.qppsuite/init")
    assert manifest["initrd"]["ram_mib"] > 256
    assert minbase_image.initrd_path is not None
    entries = {e.path: e for e in read_cpio_newc(gzip.decompress(minbase_image.initrd_path.read_bytes()))}
    assert entries["bin"].data == b"usr/bin" and entries["usr/bin/sh"].data == b"dash"
    on_paths = [
        path
        for path, entry in entries.items()
        if not path.startswith(".qppsuite/") and (b"busybox" in entry.data if stat.S_ISLNK(entry.mode) else False)
    ]
    assert on_paths == []
    assert ".qppsuite/bin/busybox" in entries and entries[".qppsuite/bin/ls"].data == b"/.qppsuite/bin/busybox"
    names = {p["name"] for p in manifest["packages"]}
    assert {"dash", "bash", "coreutils", "apt", "libc6", "python3", "procps", "busybox-static"} <= names
    assert "usrmerge" not in names
    assert not any(path.startswith(("bin/busybox", "usr/bin/busybox")) for path in entries)
    assert entries["etc/passwd"].data == entries["usr/share/base-passwd/passwd.master"].data


USERLAND = r"""
echo "SH $(readlink -f /bin/sh)"
type ls
ls --version | head -n 1
bash -c 'a=(one two three); a+=(four); echo "BASH ${#a[@]} ${a[3]} ${BASH_VERSINFO[0]}"'
python3 -c 'import json, sqlite3; print("PY", json.dumps({"sqlite": SQL}))'
sleep 5 & p=$!
sleep 0.3
awk '{print "MAP", $6}' /proc/$p/maps | grep -E 'ld-linux-armhf|libc\.so\.6' | sort -u
kill $p
dpkg-query -W -f='PKG ${Package} ${Status}\n' dash coreutils bash
echo "AWK $(readlink /usr/bin/awk) $(readlink -f /usr/bin/awk)"
[ -e /etc/ld.so.cache ] || echo "NO-LDSOCACHE"
""".replace("SQL", 'sqlite3.connect(":memory:").execute("select 6*7").fetchone()[0]')


@pytest.mark.boot
def test_the_guest_runs_debians_own_programs(minbase_image: ImageBundle) -> None:
    text = _run(minbase_image, USERLAND)
    lines = text.splitlines()
    assert "SH /usr/bin/dash" in lines
    assert "ls is /usr/bin/ls" in lines
    assert any(re.fullmatch(r"ls \(GNU coreutils\) \d+\.\d+", line) for line in lines), text[-2000:]
    assert any(re.fullmatch(r"BASH 4 four \d", line) for line in lines)
    assert 'PY {"sqlite": 42}' in lines
    maps = sorted(line.split("/")[-1] for line in lines if line.startswith("MAP /"))
    assert maps == ["ld-linux-armhf.so.3", "libc.so.6"], text[-2000:]
    for package in ("bash", "coreutils", "dash"):
        assert f"PKG {package} install ok installed" in lines
    assert "AWK /etc/alternatives/awk /usr/bin/mawk" in lines
    assert "NO-LDSOCACHE" in lines  # dynamically linked programs ran without ldconfig's cache
    assert "QPPSUITE-EXIT 0" in lines


@pytest.mark.boot
def test_the_default_workload_passes(minbase_image: ImageBundle) -> None:
    text = _run(minbase_image, None)
    assert "=== qppsuite: done ===" in text and "QPPSUITE-EXIT 0" in text.splitlines()
    assert re.search(r"^/usr/lib/arm-linux-gnueabihf/libc\.so\.6$", text, re.M) is None  # maps has full lines
    assert re.search(r" /usr/bin/sleep$", text, re.M), "the workload's sleep is coreutils'"


PS = "sleep 3 & sleep 3 & bash -c 'sleep 3; true' & sleep 0.5; ps -e -o pid=,ppid=,comm=; wait"


@pytest.mark.boot
def test_the_three_plugins_see_the_processes_ps_lists(minbase_image: ImageBundle, tmp_path: Path) -> None:
    logged = logged_run(minbase_image, PS, tmp_path / "minbase.db")
    listed = {}
    for line in logged.console.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].isdigit() and fields[1].isdigit():
            listed[int(fields[0])] = (int(fields[1]), fields[2])
    stored = {row["pid"]: (row["ppid"], row["name"]) for row in logged.rows("processes")}
    (ps_pid,) = [pid for pid, (_ppid, comm) in listed.items() if comm == "ps"]
    shell = listed[ps_pid][0]
    # the command's shell (dash, "sh") and everything it started: two sleeps, bash and its sleep, ps
    mine = {shell: listed[shell]}
    for pid, value in sorted(listed.items()):
        if value[0] in mine:
            mine[pid] = value
    assert sorted(comm for _ppid, comm in mine.values()) == ["bash", "ps", "sh", "sleep", "sleep", "sleep"], listed
    for pid, value in mine.items():
        assert stored.get(pid) == value, (pid, value, stored.get(pid))


@pytest.mark.boot
@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_the_package_set_is_the_one_debootstrap_minbase_installs(suite: str, tmp_path: Path) -> None:
    """Debian's debootstrap, asked for the list only (``--print-debs``: it downloads the suite's index and
    resolves, installing nothing), names the very packages the builder selects and resolves."""
    debootstrap = host_tool("debootstrap", "debootstrap")
    sources = sources_for_suite(host_sources(), suite)
    mirror = next(source.uri for source in sources if source.suite == suite)
    printed = subprocess.run(
        [debootstrap, "--print-debs", "--variant=minbase", "--arch=armhf", suite, str(tmp_path / "root"), mirror],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    apt = PrivateApt(cache_dir() / "apt", "armhf", suite=suite, sources=sources)
    with apt.locked():
        apt.refresh()
        ours = {package.name for package in apt.resolve(select_packages(apt, []))}
    assert ours == set(printed.stdout.split())
