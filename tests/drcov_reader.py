"""A small drcov reader for the tests, written from the format's description (DynamoRIO's drcov, version 2).

It reads what Lighthouse's parser reads, as strictly: the two header lines, the module table's header,
columns and lines (split at ", ", the path last), the ``BB Table`` line and exactly that many 8-byte
binary entries, and nothing after them.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

ENTRY = struct.Struct("<IHH")


@dataclass(frozen=True)
class Module:
    id: int
    base: int
    end: int
    entry: int
    checksum: int
    timestamp: int
    path: str


@dataclass(frozen=True)
class Drcov:
    header: list[str]
    columns: list[str]
    modules: list[Module]
    blocks: list[tuple[int, int, int]]  # (start offset, size, module id)

    def module_named(self, name: str) -> Module:
        (module,) = [m for m in self.modules if m.path.rsplit("/", 1)[-1] == name]
        return module

    def blocks_of(self, module: Module) -> list[tuple[int, int]]:
        return [(start, size) for start, size, mod_id in self.blocks if mod_id == module.id]


def read_drcov(data: bytes) -> Drcov:
    pos = 0

    def line() -> str:
        nonlocal pos
        end = data.index(b"\n", pos)
        text = data[pos:end].decode("utf-8")
        pos = end + 1
        return text

    header = [line(), line()]
    assert header == ["DRCOV VERSION: 2", "DRCOV FLAVOR: drcov"], header
    table = line()
    name, value = table.split(": ")
    version, count = value.split(", ")
    assert (name, version) == ("Module Table", "version 2"), table
    columns = line().split(": ")[1].split(", ")
    modules = []
    for index in range(int(count.split(" ")[1])):
        fields = line().strip().split(", ")
        assert len(fields) == len(columns), fields
        module = Module(int(fields[0]), *(int(f, 16) for f in fields[1:6]), fields[6])
        assert module.id == index
        modules.append(module)
    bb_name, bb_value = line().split(": ")
    bb_count, unit = bb_value.split(" ")
    assert (bb_name, unit) == ("BB Table", "bbs")
    assert len(data) - pos == ENTRY.size * int(bb_count), "the table holds exactly its entries"
    blocks = [ENTRY.unpack_from(data, pos + ENTRY.size * i) for i in range(int(bb_count))]
    assert all(0 <= mod_id < len(modules) for _, _, mod_id in blocks)
    return Drcov(header, columns, modules, blocks)


def read_drcov_file(path: Path) -> Drcov:
    return read_drcov(path.read_bytes())
