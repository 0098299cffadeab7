"""``qppsuite profile``: build a kernel OSI profile from DWARF, and look inside one.

``build`` accepts the vmlinux itself or the ``linux-image-*-dbg`` .deb it comes
in (then the vmlinux is streamed out into a temporary directory and dropped
afterwards), so a user never needs dpkg or a hand-written kernelinfo.conf.
"""

import json
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from qppsuite.cli import app
from qppsuite.cli.terminal import SafeConsole
from qppsuite.profiles.dbg import extract_vmlinux
from qppsuite.profiles.dwarf import build_kernel_profile
from qppsuite.profiles.profile import KernelProfile, save_profile, to_isf

console = SafeConsole()
profile_app = typer.Typer(
    help="Kernel OSI profiles: struct offsets and symbols derived from the kernel's debug info.",
    no_args_is_help=True,
)
app.add_typer(profile_app, name="profile")


class ProfileFormat(StrEnum):
    qppsuite = "qppsuite"
    isf = "isf"


@profile_app.command("build")
def build(
    source: Annotated[Path, typer.Argument(help="A vmlinux with DWARF, or a linux-image-*-dbg .deb.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the profile JSON.")],
    fmt: Annotated[
        ProfileFormat, typer.Option("--format", help="qppsuite profile, or a Volatility 3 ISF.")
    ] = ProfileFormat.qppsuite,
) -> None:
    """Derive a profile (symbols, struct layouts, constants) from a kernel's DWARF."""
    started = time.monotonic()
    with console.status("reading the kernel's debug info"):
        if source.suffix == ".deb":
            with tempfile.TemporaryDirectory(prefix="qppsuite-vmlinux-") as tmp:
                vmlinux = extract_vmlinux(source, Path(tmp))
                extracted = time.monotonic()
                console.print(f"extracted {vmlinux.name} in {extracted - started:.1f} s", highlight=False)
                profile = build_kernel_profile(vmlinux)
        else:
            extracted = started
            profile = build_kernel_profile(source)
    built = time.monotonic()
    save_profile(to_isf(profile) if fmt is ProfileFormat.isf else profile, output)
    console.print(
        f"{profile['release']}: {len(profile['types'])} types, {len(profile['symbols'])} symbols, "
        f"{len(profile['constants'])} constants -> {output} (built in {built - extracted:.1f} s)",
        highlight=False,
    )


@profile_app.command("show")
def show(
    profile_path: Annotated[Path, typer.Argument(metavar="PROFILE", help="A profile or ISF JSON.")],
    type_name: Annotated[str | None, typer.Argument(metavar="TYPE", help="Show one struct's layout.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Summarise a profile, or print one type's layout."""
    profile = KernelProfile.load(profile_path)
    if type_name is None:
        _summary(profile, as_json)
        return
    members = sorted(
        (profile.member(type_name, name) for name in profile.members(type_name)),
        key=lambda m: (m.offset, m.bit_offset or 0),
    )
    if as_json:
        console.print_json(json.dumps({
            "type": type_name, "size": profile.size(type_name),
            "members": {m.name: {k: v for k, v in vars(m).items() if k != "name" and v is not None}
                        for m in members},
        }))
        return
    table = Table(title=f"{type_name} ({profile.size(type_name)} bytes)")
    for column in ("offset", "size", "member", "type"):
        table.add_column(column, justify="right" if column in ("offset", "size") else "left")
    for m in members:
        where = f"{m.offset}" if m.bit_offset is None else f"{m.offset}:{m.bit_offset}+{m.bit_size}b"
        table.add_row(where, str(m.size), m.name, m.type)
    console.print(table)


def _summary(profile: KernelProfile, as_json: bool) -> None:
    symbols = {name: profile.symbol(name) for name in ("init_task", "linux_banner") if profile.has_symbol(name)}
    facts = {
        "source": profile.source_format,
        "release": profile.release,
        "arch": profile.arch,
        "banner": profile.banner,
        "types": len(profile.type_names()),
    }
    if as_json:
        console.print_json(json.dumps({**facts, "constants": profile.constants, "symbols": symbols}))
        return
    table = Table(show_header=False)
    table.add_column()
    table.add_column()
    for key, fact in facts.items():
        table.add_row(key, str(fact))
    for name, value in profile.constants.items():
        table.add_row(name, f"{value} ({value:#x})")
    for name, value in symbols.items():
        table.add_row(name, f"{value:#x}")
    console.print(table)
