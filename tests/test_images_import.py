"""``qppsuite image import``: a user's own root filesystem, in every format users have it, becomes an image that
boots with the three plugins (issue 12).

The formats are made here by the host's own tools (GNU tar, GNU cpio, mksquashfs, mkfs.ext4 -d), never by
qppsuite, so the readers are checked against the reference writers of each format: every format must give
back exactly what the directory holds (names, types, permission bits with setuid, owners, link targets,
contents).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cli_entry import run_main
from host_tools import host_tool
from ps_oracle import PS_COMMAND, assert_processes_match_ps

from qppsuite.errors import BuildError
from qppsuite.images.bundle import ImageBundle, cache_dir
from qppsuite.images.filesystems import read_rootfs
from qppsuite.images.importer import default_init, import_image
from qppsuite.images.initramfs import InitramfsTree, gunzip_members, read_cpio_newc
from qppsuite.profiles.profile import KernelProfile, to_isf

RCS = b"""#!/bin/sh
echo "rcS of the imported firmware: pid $$ parent $PPID"
echo from-rcS > /tmp/rcs-ran
"""


def _entries(tree: InitramfsTree) -> dict[str, tuple[int, bytes, int, int]]:
    """path -> (mode, data, uid, gid), without what mkfs.ext4 adds of its own."""
    return {e.path: (e.mode, e.data, e.uid, e.gid) for e in tree.entries() if not e.path.startswith("lost+found")}


def _make_tree(root: Path, busybox: bytes | None = None) -> Path:
    """A small firmware-like root: a shell, an rc script, a setuid file, an owned file, links, a FIFO."""
    (root / "bin").mkdir(parents=True)
    (root / "etc/init.d").mkdir(parents=True)
    (root / "usr/share").mkdir(parents=True)
    if busybox is not None:
        (root / "bin/busybox").write_bytes(busybox)
        (root / "bin/busybox").chmod(0o755)
        (root / "bin/sh").symlink_to("busybox")
    (root / "etc/init.d/rcS").write_bytes(RCS)
    (root / "etc/init.d/rcS").chmod(0o755)
    (root / "usr/share/setuid").write_bytes(b"\x7fELF not really")
    (root / "usr/share/setuid").chmod(0o4755)
    (root / "etc/owned").write_bytes(b"owned by 1234:99\n")
    os.chown(root / "etc/owned", 1234, 99)
    (root / "etc/hard").hardlink_to(root / "etc/owned")
    (root / "etc/abs-link").symlink_to("/etc/owned")
    (root / "empty-dir").mkdir(mode=0o700)
    os.mkfifo(root / "etc/fifo")
    return root


def _pack(kind: str, tree: Path, out: Path) -> Path:
    """``tree`` packed as ``kind`` by the host's reference tool for that format."""
    if kind == "cpio":
        cpio = host_tool("cpio", "cpio")
        names = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
        archive = out / "rootfs.cpio"
        with archive.open("wb") as handle:
            subprocess.run([cpio, "-o", "-H", "newc", "--quiet"], cwd=tree, input=names, stdout=handle, check=True)
        return archive
    if kind.startswith("squashfs"):  # squashfs (xz), squashfs-zstd, squashfs-lz4 (read by unsquashfs)
        mksquashfs = host_tool("mksquashfs", "squashfs-tools")
        image = out / f"rootfs.{kind}"
        compression = kind.partition("-")[2] or "xz"
        subprocess.run([mksquashfs, str(tree), str(image), "-comp", compression, "-quiet", "-no-progress"], check=True)
        return image
    if kind == "ext4":
        image = out / "rootfs.ext4"
        mkfs = shutil.which("mkfs.ext4") or "/usr/sbin/mkfs.ext4"
        files = sum(f.stat().st_size for f in tree.rglob("*") if f.is_file() and not f.is_symlink())
        subprocess.run([mkfs, "-q", "-d", str(tree), str(image), f"{files * 11 // 10 // (1 << 20) + 32}M"], check=True)
        return image
    archive = out / f"rootfs.{kind}"
    compress = {"tar.gz": "-z", "tar.xz": "-J", "tar.zst": "--zstd", "tar": "-a"}[kind]
    if kind == "tar.zst":
        host_tool("zstd", "zstd")
    subprocess.run(["tar", compress, "-cf", str(archive), "-C", str(tree), "."], check=True)
    return archive


def test_a_directory_is_read_as_it_is_on_the_host(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "root")
    kind, tree = read_rootfs(root)
    assert kind == "directory"
    entries = _entries(tree)
    assert entries["usr/share/setuid"][0] == stat.S_IFREG | 0o4755
    assert entries["etc/owned"][2:] == (1234, 99)
    assert entries["etc/hard"][1] == b"owned by 1234:99\n"
    assert entries["etc/abs-link"] == (stat.S_IFLNK | 0o777, b"/etc/owned", 0, 0)
    assert entries["empty-dir"][0] == stat.S_IFDIR | 0o700
    assert "etc/fifo" not in entries  # devtmpfs and the guest make their own special files
    assert default_init(tree) == "/etc/init.d/rcS"


@pytest.mark.boot  # installs GNU cpio, squashfs-tools and zstd through apt when they are missing
@pytest.mark.parametrize(
    "kind", ["tar", "tar.gz", "tar.xz", "tar.zst", "cpio", "squashfs", "squashfs-zstd", "squashfs-lz4", "ext4"]
)
def test_every_format_reads_back_what_the_directory_holds(kind: str, tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "root")
    (root / os.fsdecode(b"caf\xe9")).write_bytes(b"a name that is not UTF-8")
    (root / "etc/fifo").unlink()  # mksquashfs and cpio keep FIFOs; the readers drop them (tested above)
    _kind, expected = read_rootfs(root)
    packed = _pack(kind, root, tmp_path)
    found_kind, tree = read_rootfs(packed)
    assert found_kind == {"ext4": "ext2/3/4", "cpio": "cpio"}.get(kind, "squashfs" if "squashfs" in kind else "tar")
    assert _entries(tree) == _entries(expected)


def test_names_that_are_not_utf8_are_kept_byte_for_byte(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / os.fsdecode(b"caf\xe9")).write_bytes(b"latin-1 name")
    _kind, tree = read_rootfs(root)
    archive = read_cpio_newc(gunzip_members(tree.archive()))
    assert [e.data for e in archive if os.fsencode(e.path) == b"caf\xe9"] == [b"latin-1 name"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"no archive at all\n" * 300, "not a format qppsuite reads"),
        (b"hsqs" + b"\xff" * 200, "damaged squashfs image"),
        (b"\x00" * 1080 + b"\x53\xef" + b"\x00" * 2000, "debugfs cannot read it"),
    ],
    ids=["garbage", "squashfs", "ext"],
)
def test_a_damaged_or_unknown_file_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "rootfs.bin"
    bad.write_bytes(content)
    with pytest.raises(BuildError, match=message) as raised:
        read_rootfs(bad)
    assert "\n" not in str(raised.value)


def test_a_truncated_archive_and_a_member_leaving_the_root_are_refused(tmp_path: Path) -> None:
    root = _make_tree(tmp_path / "root")
    packed = _pack("tar.gz", root, tmp_path)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(BuildError, match=r"damaged|not a format"):
        read_rootfs(cut)
    evil = tmp_path / "evil"
    (evil / "a").mkdir(parents=True)
    (evil / "a/x").write_bytes(b"x")
    traversal = tmp_path / "evil.tar"
    subprocess.run(["tar", "-cf", str(traversal), "-C", str(evil / "a"), "--transform", "s|^|../../|", "x"], check=True)
    with pytest.raises(BuildError, match="must name something below /"):
        read_rootfs(traversal)


def test_missing_and_empty_roots_and_conflicting_options_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        read_rootfs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BuildError, match="holds no files"):
        read_rootfs(tmp_path / "empty")
    code, err = run_main(["image", "import", "x", "--rootfs", str(tmp_path), "--vmlinux", "a", "--profile", "b"])
    assert code != 0 and "not both" in err and "Traceback" not in err
    code, err = run_main(["image", "import", "x", "--rootfs", str(tmp_path), "--profile", "b"])
    assert code != 0 and "describe --kernel's kernel" in err
    code, err = run_main(["image", "import", "x/y", "--rootfs", str(tmp_path), "--cache-dir", str(tmp_path)])
    assert code != 0 and "invalid image name" in err and len(err.strip().splitlines()) <= 2


def _busybox(image: ImageBundle) -> bytes:
    assert image.initrd_path is not None
    entries = read_cpio_newc(gunzip_members(image.initrd_path.read_bytes()))
    return next(e.data for e in entries if e.path in ("bin/busybox", "usr/bin/busybox"))


def _run(image: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qppsuite", "run", image, *args],
        capture_output=True, text=True, timeout=600, cwd=cwd, check=False,
    )  # fmt: skip


@pytest.mark.boot
@pytest.mark.parametrize("kind", ["tar.gz", "cpio", "squashfs", "ext4"])
def test_an_imported_root_runs_its_init_and_the_three_plugins_see_what_ps_sees(
    kind: str, default_image: ImageBundle, tmp_path: Path
) -> None:
    root = _make_tree(tmp_path / "root", _busybox(default_image))
    (root / "etc/fifo").unlink()
    packed = _pack(kind, root, tmp_path)
    name = f"test-import-{kind.replace('.', '-')}"
    bundle = import_image(name, packed, cache=cache_dir())
    assert bundle.manifest["init"] == "/etc/init.d/rcS" and bundle.profile_path is not None
    assert "rdinit=/.qppsuite/init" in bundle.bootargs

    plain = _run(name, "--cold", cwd=tmp_path)  # its own init, as PID 1's child, from power-on
    assert plain.returncode == 0, plain.stderr
    assert "rcS of the imported firmware: pid" in plain.stdout
    assert "QPPSUITE-EXIT 0" in plain.stdout

    db = tmp_path / "calls.db"
    cmd = f"cat /tmp/rcs-ran 2>&1; ls -ln /etc/owned; {PS_COMMAND}"
    done = _run(
        name, "--cmd", f"sh /etc/init.d/rcS >/dev/null; {cmd}",
        "--plugins", "osi_linux,syscalls,syscalls_logger", "-p", f"syscalls_logger:db={db}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.replace("\r", "").splitlines()
    assert "from-rcS" in lines
    assert any(line.split()[2:4] == ["1234", "99"] for line in lines if line.endswith("/etc/owned"))
    assert_processes_match_ps(done.stdout, db)


@pytest.mark.boot
def test_a_users_kernel_with_an_isf_profile_and_without_one(default_image: ImageBundle, tmp_path: Path) -> None:
    """The default image's kernel brought as the user's own: with a Volatility ISF osi_linux reads it; without a
    profile the import warns nothing and osi_linux refuses in one line saying how to get one; a profile of another
    kernel is refused at import."""
    root = _make_tree(tmp_path / "root", _busybox(default_image))
    (root / "etc/fifo").unlink()
    assert default_image.profile_path is not None
    isf = tmp_path / "kernel.isf.json"
    isf.write_text(json.dumps(to_isf(KernelProfile.load(default_image.profile_path).as_dict())))
    bundle = import_image(
        "test-import-isf", root, kernel=default_image.kernel_path, profile=isf, init="echo own-init", cache=cache_dir()
    )
    assert bundle.manifest["kernel"]["release"] == default_image.manifest["kernel"]["release"]
    db = tmp_path / "isf.db"
    done = _run("test-import-isf", "--plugins", "osi_linux,syscalls,syscalls_logger", "-p", f"syscalls_logger:db={db}",
                cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "own-init" in done.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM processes WHERE name = 'echo' OR name = 'sh'").fetchone()[0] >= 1

    import_image("test-import-noprofile", root, kernel=default_image.kernel_path, cache=cache_dir())
    refused = _run("test-import-noprofile", "--plugins", "osi_linux", cwd=tmp_path)
    assert refused.returncode != 0
    assert "osi_linux needs a kernel profile" in refused.stderr and "dwarf2json" in refused.stderr
    assert "Traceback" not in refused.stderr

    other = tmp_path / "other.json"
    data = KernelProfile.load(default_image.profile_path).as_dict()
    other.write_text(json.dumps({**data, "banner": "Linux version 9.9.9-other (x) #1"}))
    code, err = run_main(
        ["image", "import", "bad", "--rootfs", str(root), "--kernel", str(default_image.kernel_path),
         "--profile", str(other), "--cache-dir", str(tmp_path / "cache")]
    )  # fmt: skip
    assert code != 0 and "describes another kernel" in err and "9.9.9-other" in err and "Traceback" not in err


@pytest.mark.boot
@pytest.mark.parametrize("kind", ["tar.gz", "ext4"])
def test_a_root_larger_than_the_ram_goes_on_the_disk(kind: str, default_image: ImageBundle, tmp_path: Path) -> None:
    """300 MB of files cannot be unpacked into the tmpfs of a 256 MiB guest; on the disk they need no RAM.  The
    guest's writes stay in the emulator (the next run starts from the same disk) and the bundle's disk file
    never changes."""
    root = _make_tree(tmp_path / "root", _busybox(default_image))
    (root / "etc/fifo").unlink()
    big = os.urandom(1 << 20) * 300  # the same MiB 300 times: cheap to make, and ext4 stores every block
    (root / "usr/share/big").write_bytes(big)
    packed = _pack(kind, root, tmp_path)
    name = f"test-import-disk-{kind.replace('.', '-')}"
    bundle = import_image(name, packed, disk=True, cache=cache_dir())
    assert bundle.disk_path is not None and bundle.manifest["init"] == "/etc/init.d/rcS"
    assert bundle.initrd_path is not None and bundle.initrd_path.stat().st_size < 8 << 20
    before = hashlib.sha256(bundle.disk_path.read_bytes()).hexdigest()

    cmd = (
        "awk '$2 == \"/\" {print \"root:\", $1, $3}' /proc/mounts; ls -ln /etc/owned /usr/share/setuid; "
        "ls -l /usr/share/big | awk '{print \"big:\", $5}'; tail -c 1048576 /usr/share/big | md5sum; "
        "cat /root/was-here 2>/dev/null || echo fresh; echo was-here > /root/was-here"
    )
    for _ in range(2):
        done = _run(name, "--ram", "256", "--cmd", cmd, "--plugins", "osi_linux,syscalls", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.replace("\r", "").splitlines()
        assert "root: /dev/vda ext4" in lines, lines[-12:]
        assert any(line.split()[2:4] == ["1234", "99"] for line in lines if line.endswith("/etc/owned"))
        assert any(line.startswith("-rwsr-xr-x") for line in lines if line.endswith("/usr/share/setuid"))
        assert f"big: {len(big)}" in lines
        assert f"{hashlib.md5(big[-(1 << 20):]).hexdigest()}  -" in lines
        assert "fresh" in lines and "exit status 0 ──" in done.stderr  # the last run's writes are gone
    assert hashlib.sha256(bundle.disk_path.read_bytes()).hexdigest() == before


def test_what_a_fresh_user_broke_is_one_line_or_fixed(tmp_path: Path) -> None:
    """helper-25's break test: a sparse file past any RAM, a FIFO, an mtree-looking text file, a directory's
    setgid and sticky bits through ext, an all-hole sparse tar member, a long image name."""
    root = tmp_path / "sparse"
    root.mkdir()
    with (root / "big.img").open("wb") as handle:
        handle.truncate(3 << 30)  # 3 GiB of hole: refused before it is read
    with pytest.raises(BuildError, match="more than a guest's RAM holds: import it with --disk"):
        read_rootfs(root)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BuildError, match="no regular file or directory"):
        read_rootfs(tmp_path / "fifo")
    text = tmp_path / "shadow"
    text.write_text("root:*:20228:0:99999:7:::\ndaemon:*:20228:0:99999:7:::\n")
    with pytest.raises(BuildError, match="not a format qppsuite reads"):
        read_rootfs(text)
    tree = tmp_path / "bits"
    (tree / "sgid").mkdir(parents=True)
    (tree / "sgid").chmod(0o2775)
    (tree / "sticky").mkdir()
    (tree / "sticky").chmod(0o1777)
    hole = tree / "hole.img"
    with hole.open("wb") as handle:
        handle.truncate(10 << 20)
    _kind, from_ext = read_rootfs(_pack("ext4", tree, tmp_path))
    entries = _entries(from_ext)
    assert stat.S_IMODE(entries["sgid"][0]) == 0o2775 and stat.S_IMODE(entries["sticky"][0]) == 0o1777
    sparse = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-cf", str(sparse), "-C", str(tree), "hole.img"], check=True)
    _kind, from_tar = read_rootfs(sparse)
    assert _entries(from_tar)["hole.img"][1] == bytes(10 << 20)
    code, err = run_main(["image", "import", "n" * 300, "--rootfs", str(tree), "--cache-dir", str(tmp_path / "c")])
    assert code != 0 and "invalid image name" in err and "Traceback" not in err
