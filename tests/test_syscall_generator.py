"""tools/gen_syscall_table.py: prototype parsing, EABI register layout, typing rules, constants.

The full regeneration check needs an unpacked linux-source-6.1 tree; point
QPPSUITE_LINUX_SRC at one to run it (see the generator's docstring for how to get it).
"""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_syscall_table", REPO / "tools" / "gen_syscall_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_syscall_table"] = module
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def test_split_params_named_and_unnamed() -> None:
    params = gen.split_params("unsigned int fd, const char __user * buf, size_t count")
    assert [(p.ctype, p.name) for p in params] == [
        ("unsigned int", "fd"),
        ("const char __user *", "buf"),
        ("size_t", "count"),
    ]
    unnamed = gen.split_params("int, struct sockaddr __user *, int __user *, unsigned, unsigned long")
    assert [(p.ctype, p.name) for p in unnamed] == [
        ("int", None),
        ("struct sockaddr __user *", None),
        ("int __user *", None),
        ("unsigned int", None),
        ("unsigned long", None),
    ]
    assert gen.split_params("void") == []
    assert gen.split_params("unsigned nr_reqs")[0].ctype == "unsigned int"


def test_preprocessor_follows_arm_conditions() -> None:
    text = "\n".join(
        [
            "#ifdef CONFIG_CLONE_BACKWARDS",
            "backwards",
            "#else",
            "forwards",
            "#endif",
            "#if BITS_PER_LONG == 32",
            "thirty-two",
            "#endif",
            "#ifndef GUARD",
            "#define GUARD",
            "guarded",
            "#endif",
            "#ifdef GUARD",
            "seen-guard",
            "#endif",
        ]
    )
    assert list(gen.active_lines(text, "t.h")) == ["backwards", "thirty-two", "guarded", "seen-guard"]


def test_preprocessor_refuses_undecided_conditions() -> None:
    with pytest.raises(gen.GenError, match="CONFIG_SOMETHING_NEW"):
        list(gen.active_lines("#ifdef CONFIG_SOMETHING_NEW\nx\n#endif\n", "t.h"))
    assert list(gen.active_lines("#if SOMETHING > 3\nx\n#endif\n", "t.h", strict=False)) == ["x"]


def test_header_prototypes_choose_the_active_variant() -> None:
    text = "\n".join(
        [
            "#ifdef CONFIG_CLONE_BACKWARDS",
            "asmlinkage long sys_clone(unsigned long, unsigned long, int __user *, unsigned long,",
            "\t       int __user *);",
            "#else",
            "asmlinkage long sys_clone(unsigned long, unsigned long, int __user *, int __user *, unsigned long);",
            "#endif",
        ]
    )
    protos = gen.header_prototypes(text, "t.h")
    assert [p.ctype for p in protos["sys_clone"]][3] == "unsigned long"


def test_eabi_layout_aligns_64_bit_values_and_joins_split_halves() -> None:
    params = gen.split_params("unsigned int fd, char __user *buf, size_t count, loff_t pos")
    types = ["fd", "buf[out,len=count]", "size", "u64"]
    assert gen.layout("pread64", params, types) == [
        "fd:fd@r0",
        "buf:buf[out,len=count]@r1",
        "count:size@r2",
        "pos:u64@r4:r5",
    ]
    split = gen.split_params("unsigned int fd, unsigned long offset_high, unsigned long offset_low")
    assert gen.layout("_llseek", split, ["fd", "ulong", "ulong"]) == ["fd:fd@r0", "offset:u64@r2:r1"]
    too_many = gen.split_params("int a, loff_t b, loff_t c, loff_t d")
    with pytest.raises(gen.GenError, match="registers"):
        gen.layout("x", too_many, ["int", "u64", "u64", "u64"])


def test_classification_rules() -> None:
    used: set[tuple[str, str]] = set()
    params = gen.split_params(
        "int dfd, const char __user *filename, const char __user *const __user *argv, "
        "void __user *data, size_t size, struct stat64 __user *statbuf, umode_t mode, clockid_t clk"
    )
    types = [gen.classify("made_up", i, params, used) for i in range(len(params))]
    assert types == ["fd", "path", "argv", "buf[out,len=size]", "size", "struct[stat64,out]", "mode", "flags[clockid]"]
    with pytest.raises(gen.GenError, match="no rule"):
        gen.classify("made_up", 0, gen.split_params("float x"), used)


def test_constant_expressions() -> None:
    macros = {"A": "00200000", "B": "(A | 0x10)", "C": "(1U << 3)"}
    assert gen.evaluate("B", macros) == 0o200000 | 0x10
    assert gen.evaluate("C", macros) == 8
    with pytest.raises(gen.GenError):
        gen.evaluate("sizeof(int)", macros)


LINUX_SRC = os.environ.get("QPPSUITE_LINUX_SRC")


@pytest.mark.skipif(not LINUX_SRC, reason="set QPPSUITE_LINUX_SRC to an unpacked linux-source-6.1 tree")
def test_checked_in_table_is_what_the_generator_makes() -> None:
    root = Path(LINUX_SRC or "")
    assert gen.verify_constants(root) == []
    rows, skipped = gen.build_rows(root)
    assert gen.header(root, rows, skipped) == gen.OUT_TSV.read_text(encoding="utf-8")
    assert (root / gen.TBL).read_bytes() == gen.TBL_COPY.read_bytes()
