"""build_kernel_profile and ``qppsuite profile`` end to end, on a miniature host-built "kernel".

The real Debian vmlinux is covered by test_profile_vmlinux.py; this one runs
everywhere gcc does, in well under a second, and pins the whole path: .symtab,
the banner read from section data, aranges hints, required types, the CLI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.errors import BuildError
from qppsuite.profiles.dwarf import REQUIRED_TYPES, build_kernel_profile
from qppsuite.profiles.profile import KernelProfile, to_isf

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to compile the fake kernel")

FAKE_KERNEL_C = r"""
#include <stddef.h>
#include <stdio.h>

typedef int pid_t;
struct list_head { struct list_head *next, *prev; };
struct qstr { union { struct { unsigned int hash; unsigned int len; }; unsigned long long hash_len; };
              const unsigned char *name; };
struct dentry { struct dentry *d_parent; struct qstr d_name; };
struct path { void *mnt; struct dentry *dentry; };
struct inode { unsigned long i_ino; };
struct file { struct path f_path; struct inode *f_inode; };
struct fdtable { unsigned int max_fds; struct file **fd; };
struct files_struct { struct fdtable *fdt; struct fdtable fdtab; };
struct vm_area_struct { unsigned long vm_start, vm_end; struct file *vm_file; };
struct mm_struct { struct { unsigned long mmap_base; void *pgd; }; unsigned long cpu_bitmap[]; };
struct thread_info { unsigned long flags; int cpu; };
struct cred { unsigned int uid; };
struct upid { int nr; void *ns; };
struct pid { unsigned int level; struct upid numbers[]; };
struct signal_struct { struct list_head thread_head; };
struct task_struct {
    struct thread_info thread_info; unsigned int __state; struct list_head tasks;
    struct mm_struct *mm; pid_t pid; pid_t tgid; struct task_struct *real_parent;
    const struct cred *cred; char comm[16]; struct files_struct *files; struct signal_struct *signal;
};

struct task_struct init_task;
const char linux_banner[] = "Linux version 9.9.9-fake (builder@example) (gcc) #1 SMP\n";
struct dentry d0; struct file f0; struct files_struct fs0; struct vm_area_struct v0; struct mm_struct m0;
struct cred c0; struct pid p0; struct signal_struct s0;

int copy_process(void) { return init_task.pid; }

int main(void) {
    printf("{\"tasks\": %zu, \"pid\": %zu, \"comm\": %zu, \"mm\": %zu, \"pgd\": %zu, \"size\": %zu}\n",
           offsetof(struct task_struct, tasks), offsetof(struct task_struct, pid),
           offsetof(struct task_struct, comm), offsetof(struct task_struct, mm),
           offsetof(struct mm_struct, pgd), sizeof(struct task_struct));
    return copy_process();
}
"""


@pytest.fixture(scope="module")
def fake_kernel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], dict[str, int]]:
    """The fake vmlinux, what the compiler says about its layouts, and its symbols per nm."""
    work = tmp_path_factory.mktemp("fake-kernel")
    source = work / "kernel.c"
    source.write_text(FAKE_KERNEL_C)
    exe = work / "vmlinux-fake"
    subprocess.run(["gcc", "-g", "-O0", "-o", str(exe), str(source)], check=True)
    truth = json.loads(subprocess.run([str(exe)], capture_output=True, text=True).stdout)
    nm = subprocess.run(["nm", str(exe)], check=True, capture_output=True, text=True).stdout
    symbols = {parts[2]: int(parts[0], 16) for parts in map(str.split, nm.splitlines()) if len(parts) == 3}
    return exe, truth, symbols


def test_fake_kernel_profile(fake_kernel: tuple[Path, dict[str, int], dict[str, int]]) -> None:
    exe, truth, nm = fake_kernel
    profile = build_kernel_profile(exe)
    assert profile["format"] == "qppsuite-profile/1"
    assert profile["banner"] == "Linux version 9.9.9-fake (builder@example) (gcc) #1 SMP"
    assert profile["release"] == "9.9.9-fake"
    assert (profile["arch"], profile["pointer_size"], profile["endian"]) == ("x86_64", 8, "little")
    assert profile["symbols"]["init_task"] == nm["init_task"]
    assert profile["symbols"]["copy_process"] == nm["copy_process"]
    assert "init_mm" not in profile["symbols"]  # absent from this kernel, so absent from its profile
    task = profile["types"]["task_struct"]
    assert task["size"] == truth["size"]
    for member in ("tasks", "pid", "comm", "mm"):
        assert task["members"][member]["offset"] == truth[member], member
    assert profile["types"]["mm_struct"]["members"]["pgd"]["offset"] == truth["pgd"]
    assert set(REQUIRED_TYPES) <= set(profile["types"])
    assert profile["constants"] == {"TASK_COMM_LEN": 16}


def test_missing_required_type_is_a_build_error(tmp_path: Path) -> None:
    source = tmp_path / "k.c"
    source.write_text(
        'struct task_struct { int pid; } init_task;\n'
        'const char linux_banner[] = "Linux version 1.0-tiny #1\\n";\n'
        "int copy_process(void) { return init_task.pid; }\nint main(void) { return copy_process(); }\n"
    )
    subprocess.run(["gcc", "-g", "-o", str(tmp_path / "k"), str(source)], check=True)
    with pytest.raises(BuildError, match=r"k: no DWARF definition of list_head, mm_struct, .* in the CUs of "
                                         r"copy_process"):
        build_kernel_profile(tmp_path / "k")


def test_not_a_kernel_is_a_build_error(tmp_path: Path) -> None:
    source = tmp_path / "hello.c"
    source.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-g", "-o", str(tmp_path / "hello"), str(source)], check=True)
    with pytest.raises(BuildError, match=r"hello is not a Linux vmlinux: \.symtab lacks init_task, linux_banner"):
        build_kernel_profile(tmp_path / "hello")


def test_cli_build_and_show(fake_kernel: tuple[Path, dict[str, int], dict[str, int]], tmp_path: Path) -> None:
    exe, truth, _ = fake_kernel
    runner = CliRunner()
    out = tmp_path / "profile.json"
    result = runner.invoke(app, ["profile", "build", str(exe), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "9.9.9-fake:" in result.output
    profile = KernelProfile.load(out)
    assert profile.offset("task_struct", "comm") == truth["comm"]

    isf_out = tmp_path / "profile.isf.json"
    result = runner.invoke(app, ["profile", "build", str(exe), "-o", str(isf_out), "--format", "isf"])
    assert result.exit_code == 0, result.output
    isf = json.loads(isf_out.read_text())
    assert isf == to_isf(json.loads(out.read_text()))
    assert KernelProfile.load(isf_out).offset("task_struct", "comm") == truth["comm"]

    result = runner.invoke(app, ["profile", "show", str(out), "task_struct", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["members"]["pid"] == {"offset": truth["pid"], "size": 4, "type": "pid_t"}
    result = runner.invoke(app, ["profile", "show", str(isf_out), "--json"])
    assert json.loads(result.output)["source"] == "isf"


def test_cli_errors_are_one_red_line(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from qppsuite.cli import main; main()"]
    missing = subprocess.run([*command, "profile", "build", str(tmp_path / "nothing"), "-o", "x.json"],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [f"error: ELF file {tmp_path / 'nothing'} does not exist"]
    empty = tmp_path / "p.json"
    empty.write_text("{}")
    unknown = subprocess.run([*command, "profile", "show", str(empty)], capture_output=True, text=True)
    assert unknown.returncode == 1
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert "neither a qppsuite-profile/1 profile nor a Volatility 3 ISF" in unknown.stderr
