"""The ARMv7 short-descriptor walker against hand-built page tables."""

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qppsuite.core import mmu
from qppsuite.core.guest.memory import GuestMemory
from qppsuite.core.memory import GuestMemoryError, PhysicalMemory, VirtualMemory
from qppsuite.core.mmu import (
    ACCESS_FETCH,
    ACCESS_READ,
    ACCESS_WRITE,
    PROT_R,
    PROT_W,
    PROT_X,
    MmuFault,
    TranslationRegs,
    walk,
)

BASE = 0x40000000
L1 = BASE + 0x4000  # 16 KiB aligned
L1_ALT = BASE + 0x8000
L2 = BASE + 0xC000


class Tables:
    def __init__(self) -> None:
        self.ram = bytearray(0x100000)
        self.phys = PhysicalMemory(self.ram, BASE)

    def put(self, paddr: int, value: int) -> None:
        struct.pack_into("<I", self.ram, paddr - BASE, value)

    def section(
        self,
        vaddr: int,
        paddr: int,
        *,
        ap: int = 0b011,
        domain: int = 0,
        xn: bool = False,
        pxn: bool = False,
        table: int = L1,
    ) -> None:
        desc = (paddr & 0xFFF00000) | 0b10 | ((ap & 3) << 10) | ((ap >> 2) << 15) | (domain << 5)
        desc |= 0x10 if xn else 0
        desc |= 1 if pxn else 0
        self.put(table + (vaddr >> 20) * 4, desc)

    def supersection(self, vaddr: int, paddr: int, *, ap: int = 0b011) -> None:
        desc = (paddr & 0xFF000000) | (1 << 18) | 0b10 | ((ap & 3) << 10) | ((ap >> 2) << 15)
        for i in range(16):  # a supersection is repeated in 16 consecutive entries
            self.put(L1 + (((vaddr >> 20) & ~0xF) + i) * 4, desc)

    def page_table(self, vaddr: int, *, domain: int = 0, l2: int = L2) -> None:
        self.put(L1 + (vaddr >> 20) * 4, (l2 & 0xFFFFFC00) | (domain << 5) | 0b01)

    def small(self, vaddr: int, paddr: int, *, ap: int = 0b011, xn: bool = False, l2: int = L2) -> None:
        desc = (paddr & 0xFFFFF000) | 0b10 | ((ap & 3) << 4) | ((ap >> 2) << 9) | (1 if xn else 0)
        self.put(l2 + ((vaddr >> 12) & 0xFF) * 4, desc)

    def large(self, vaddr: int, paddr: int, *, ap: int = 0b011, xn: bool = False) -> None:
        desc = (paddr & 0xFFFF0000) | 0b01 | ((ap & 3) << 4) | ((ap >> 2) << 9) | (0x8000 if xn else 0)
        for i in range(16):
            self.put(L2 + ((((vaddr >> 12) & 0xF0) + i) * 4), desc)


def regs(
    *, dacr: int = 0x55555555, ttbcr: int = 0, ttbr0: int = L1, ttbr1: int = L1_ALT, sctlr: int = mmu.SCTLR_M
) -> TranslationRegs:
    return TranslationRegs(sctlr, ttbcr, ttbr0, ttbr1, dacr)


def go(t: Tables, r: TranslationRegs, vaddr: int, access: int = ACCESS_READ, privileged: bool = True):
    return walk(t.phys.read_u32, r, vaddr, access, privileged)


def test_mmu_off_is_identity_with_all_permissions() -> None:
    t = Tables()
    assert go(t, regs(sctlr=0), 0x12345678, ACCESS_WRITE, False) == (0x12345678, PROT_R | PROT_W | PROT_X)


def test_section_translation_and_offset() -> None:
    t = Tables()
    t.section(0xC0000000, 0x40000000)
    assert go(t, regs(), 0xC0012345) == (0x40012345, PROT_R | PROT_W | PROT_X)


def test_supersection() -> None:
    t = Tables()
    t.supersection(0xD0000000, 0x41000000)
    assert go(t, regs(), 0xD0ABCDEF)[0] == 0x41ABCDEF  # type: ignore[index]
    assert go(t, regs(), 0xD0F00123)[0] == 0x41F00123  # type: ignore[index]


def test_small_and_large_pages() -> None:
    t = Tables()
    t.page_table(0x00100000)
    t.small(0x00101000, 0x40055000)
    assert go(t, regs(), 0x00101ABC)[0] == 0x40055ABC  # type: ignore[index]
    t.large(0x00120000, 0x40070000)
    assert go(t, regs(), 0x0012F00D)[0] == 0x4007F00D  # type: ignore[index]


@pytest.mark.parametrize(
    ("setup", "vaddr", "status"),
    [
        (lambda t: None, 0x00300000, mmu.FS_TRANSLATION_SECTION),
        (lambda t: t.page_table(0x00300000), 0x00300000, mmu.FS_TRANSLATION_PAGE),
    ],
)
def test_translation_faults(setup, vaddr: int, status: int) -> None:
    t = Tables()
    setup(t)
    fault = go(t, regs(), vaddr, ACCESS_WRITE)
    assert isinstance(fault, MmuFault)
    assert fault.status == status
    assert fault.is_write


def test_fsr_encodings_match_the_architecture() -> None:
    # Translation fault (page), domain 3, on a write: FS=0b00111, domain in [7:4], WnR = bit 11.
    assert MmuFault(0, mmu.FS_TRANSLATION_PAGE, 3, ACCESS_WRITE).dfsr == 0x837
    # Permission fault (section) on a read, domain 0.
    assert MmuFault(0, mmu.FS_PERMISSION_SECTION, 0, ACCESS_READ).dfsr == 0x00D
    # FS[4] lands in bit 10 (no short-descriptor code uses it yet, but the split must hold).
    assert MmuFault(0, 0b10110, 0, ACCESS_READ).dfsr == 0x406
    assert MmuFault(0, mmu.FS_TRANSLATION_SECTION, 5, ACCESS_FETCH).ifsr == 0x005


def test_domain_no_access_faults_and_manager_bypasses_permissions() -> None:
    t = Tables()
    t.section(0x00400000, 0x40400000, ap=0b000, domain=2)
    t.page_table(0x00500000, domain=2)
    t.small(0x00500000, 0x40500000, ap=0b000)
    no_access = 0x55555555 & ~(0b11 << 4)
    fault = go(t, regs(dacr=no_access), 0x00400000)
    assert isinstance(fault, MmuFault) and fault.status == mmu.FS_DOMAIN_SECTION and fault.domain == 2
    fault = go(t, regs(dacr=no_access), 0x00500000)
    assert isinstance(fault, MmuFault) and fault.status == mmu.FS_DOMAIN_PAGE
    manager = 0x55555555 | (0b11 << 4)
    assert go(t, regs(dacr=manager), 0x00400000, ACCESS_WRITE, False) == (0x40400000, PROT_R | PROT_W | PROT_X)


@pytest.mark.parametrize(
    ("ap", "priv", "user"),
    [
        (0b000, 0, 0),
        (0b001, PROT_R | PROT_W, 0),
        (0b010, PROT_R | PROT_W, PROT_R),
        (0b011, PROT_R | PROT_W, PROT_R | PROT_W),
        (0b101, PROT_R, 0),
        (0b111, PROT_R, PROT_R),
    ],
)
def test_access_permissions(ap: int, priv: int, user: int) -> None:
    t = Tables()
    t.page_table(0x00600000)
    t.small(0x00600000, 0x40600000, ap=ap, xn=True)
    for privileged, allowed in ((True, priv), (False, user)):
        for access, need in ((ACCESS_READ, PROT_R), (ACCESS_WRITE, PROT_W)):
            result = go(t, regs(), 0x00600000, access, privileged)
            if allowed & need:
                assert result == (0x40600000, allowed)
            else:
                assert isinstance(result, MmuFault) and result.status == mmu.FS_PERMISSION_PAGE


def test_execute_never_and_pxn() -> None:
    t = Tables()
    t.section(0x00700000, 0x40700000, xn=True)
    t.section(0x00800000, 0x40800000, pxn=True)
    fault = go(t, regs(), 0x00700000, ACCESS_FETCH, False)
    assert isinstance(fault, MmuFault) and fault.status == mmu.FS_PERMISSION_SECTION
    fault = go(t, regs(), 0x00800000, ACCESS_FETCH, True)
    assert isinstance(fault, MmuFault) and fault.status == mmu.FS_PERMISSION_SECTION
    assert go(t, regs(), 0x00800000, ACCESS_FETCH, False) == (0x40800000, PROT_R | PROT_W | PROT_X)


def test_access_flag_with_afe() -> None:
    t = Tables()
    t.section(0x00900000, 0x40900000, ap=0b010)  # AP[0] = 0: access flag clear
    fault = go(t, regs(sctlr=mmu.SCTLR_M | mmu.SCTLR_AFE), 0x00900000)
    assert isinstance(fault, MmuFault) and fault.status == mmu.FS_ACCESS_FLAG_SECTION


def test_ttbcr_n_splits_between_ttbr0_and_ttbr1() -> None:
    t = Tables()
    t.section(0x00100000, 0x40100000, table=L1)  # user half through TTBR0
    t.section(0xC0000000, 0x40200000, table=L1_ALT)  # kernel half through TTBR1
    r = regs(ttbcr=2)  # N=2: TTBR0 covers the low 1 GiB
    assert go(t, r, 0x00100004)[0] == 0x40100004  # type: ignore[index]
    assert go(t, r, 0xC0000008)[0] == 0x40200008  # type: ignore[index]
    fault = go(t, regs(ttbcr=2 | mmu.TTBCR_PD1), 0xC0000008)
    assert isinstance(fault, MmuFault) and fault.status == mmu.FS_TRANSLATION_SECTION


def test_tables_outside_ram_are_external_aborts_on_walk() -> None:
    t = Tables()
    fault = go(t, regs(ttbr0=0x10000000), 0x1000)
    assert isinstance(fault, MmuFault) and fault.status == mmu.FS_EXTERNAL_WALK_L1
    t.page_table(0x00A00000, l2=0x20000000)
    fault = go(t, regs(), 0x00A00000)
    assert isinstance(fault, MmuFault) and fault.status == mmu.FS_EXTERNAL_WALK_L2


@given(
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([ACCESS_READ, ACCESS_WRITE, ACCESS_FETCH]),
    st.booleans(),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 7),
)
def test_walk_never_raises_on_garbage_tables(vaddr: int, access: int, priv: bool, dacr: int, n: int) -> None:
    t = Tables()
    for i in range(0, len(t.ram), 4):
        struct.pack_into("<I", t.ram, i, (i * 2654435761) & 0xFFFFFFFF)
    result = go(t, regs(dacr=dacr, ttbcr=n), vaddr, access, priv)
    assert isinstance(result, (tuple, MmuFault))


@pytest.mark.parametrize("size", [-1, -4, -(1 << 20)])
def test_a_negative_physical_read_size_is_an_error_not_the_rest_of_ram(size: int) -> None:
    """A negative size once sliced RAM from ``paddr`` to ``size`` bytes before its end (~all of it)."""
    phys = PhysicalMemory(bytearray(0x10000), BASE)
    assert not phys.contains(BASE + 8, size)
    with pytest.raises(GuestMemoryError, match="negative size"):
        phys.read(BASE + 8, size)
    regs = TranslationRegs(0, 0, 0, 0, 0)
    memory = GuestMemory(phys, VirtualMemory(phys, lambda: regs), lambda: regs)
    assert memory.try_read_phys(BASE, size) is None
    with pytest.raises(GuestMemoryError, match="negative size"):
        memory.read_phys(BASE, size)
