"""ARMv7 short-descriptor translation (ARM ARM B3.5), for reading guest memory from the host.

The engine translates the guest's own accesses with its MMU; this walk is how
plugins read guest virtual memory in any address space (any TTBR0) without
disturbing it: sections, supersections, large and small pages, AP/APX,
XN/PXN and domains.  It reads descriptors straight out of the RAM buffer and
returns plain tuples; fault status values are the architecture's, so a reader
can check them against the manual and Linux's ``fsr_info`` table.  A boot test
(tests/test_engine_mmu.py) holds it to the engine's MMU, address by address.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

# Access kinds, as unicorn's TLB-fill hook reports them (UC_MEM_READ/WRITE/FETCH).
ACCESS_READ = 16
ACCESS_WRITE = 17
ACCESS_FETCH = 18

PROT_R = 1
PROT_W = 2
PROT_X = 4

# SCTLR bits (B4.1.130)
SCTLR_M = 1 << 0
SCTLR_V = 1 << 13
SCTLR_EE = 1 << 25
SCTLR_AFE = 1 << 29
SCTLR_TE = 1 << 30

# TTBCR bits (B4.1.153)
TTBCR_N_MASK = 0x7
TTBCR_PD0 = 1 << 4
TTBCR_PD1 = 1 << 5
TTBCR_EAE = 1 << 31

# Fault status codes, short-descriptor format (B3.13.3, table B3-23).
FS_ALIGNMENT = 0b00001
FS_DEBUG = 0b00010
FS_ACCESS_FLAG_SECTION = 0b00011
FS_TRANSLATION_SECTION = 0b00101
FS_ACCESS_FLAG_PAGE = 0b00110
FS_TRANSLATION_PAGE = 0b00111
FS_EXTERNAL = 0b01000
FS_DOMAIN_SECTION = 0b01001
FS_DOMAIN_PAGE = 0b01011
FS_EXTERNAL_WALK_L1 = 0b01100
FS_PERMISSION_SECTION = 0b01101
FS_EXTERNAL_WALK_L2 = 0b01110
FS_PERMISSION_PAGE = 0b01111

FSR_WNR = 1 << 11

FAULT_NAMES = {
    FS_ALIGNMENT: "alignment",
    FS_DEBUG: "debug event",
    FS_ACCESS_FLAG_SECTION: "access flag (section)",
    FS_TRANSLATION_SECTION: "translation (section)",
    FS_ACCESS_FLAG_PAGE: "access flag (page)",
    FS_TRANSLATION_PAGE: "translation (page)",
    FS_EXTERNAL: "external abort",
    FS_DOMAIN_SECTION: "domain (section)",
    FS_DOMAIN_PAGE: "domain (page)",
    FS_EXTERNAL_WALK_L1: "external abort on walk (level 1)",
    FS_PERMISSION_SECTION: "permission (section)",
    FS_EXTERNAL_WALK_L2: "external abort on walk (level 2)",
    FS_PERMISSION_PAGE: "permission (page)",
}

# AP[2:0] -> (privileged perms, unprivileged perms), with SCTLR.AFE = 0 (B3.7.1, table B3-8).
_AP_PERMS: tuple[tuple[int, int], ...] = (
    (0, 0),  # 000 no access
    (PROT_R | PROT_W, 0),  # 001 PL1 RW
    (PROT_R | PROT_W, PROT_R),  # 010 PL1 RW, PL0 RO
    (PROT_R | PROT_W, PROT_R | PROT_W),  # 011 full access
    (0, 0),  # 100 reserved
    (PROT_R, 0),  # 101 PL1 RO
    (PROT_R, PROT_R),  # 110 RO (deprecated encoding)
    (PROT_R, PROT_R),  # 111 RO
)

DACR_NO_ACCESS = 0b00
DACR_CLIENT = 0b01
DACR_MANAGER = 0b11


class TranslationRegs(NamedTuple):
    """The CP15 state a walk depends on, read once per walk."""

    sctlr: int
    ttbcr: int
    ttbr0: int
    ttbr1: int
    dacr: int


@dataclass(frozen=True, slots=True)
class MmuFault:
    """A translation that failed, with the FSR the guest must see."""

    vaddr: int
    status: int  # FS[4:0]
    domain: int
    access: int

    @property
    def is_write(self) -> bool:
        return self.access == ACCESS_WRITE

    @property
    def dfsr(self) -> int:
        """DFSR value: FS split across bits [10] and [3:0], domain, WnR."""
        fsr = (self.status & 0xF) | ((self.status & 0x10) << 6) | (self.domain << 4)
        return fsr | FSR_WNR if self.is_write else fsr

    @property
    def ifsr(self) -> int:
        return (self.status & 0xF) | ((self.status & 0x10) << 6)

    @property
    def name(self) -> str:
        return FAULT_NAMES.get(self.status, f"fault {self.status:#x}")


def walk(
    read_u32: Callable[[int], int | None],
    regs: TranslationRegs,
    vaddr: int,
    access: int,
    privileged: bool,
) -> tuple[int, int] | MmuFault:
    """Translate ``vaddr`` for ``access`` at the given privilege.

    Returns ``(physical address, permitted PROT_* at this privilege)`` or an
    :class:`MmuFault`.  The permissions are those of the whole page, so one TLB
    fill serves later accesses of other kinds that the page allows.
    """

    sctlr = regs.sctlr
    if not sctlr & SCTLR_M:
        return vaddr, PROT_R | PROT_W | PROT_X
    ttbcr = regs.ttbcr
    if ttbcr & TTBCR_EAE:
        raise NotImplementedError("long-descriptor (LPAE) translation tables are not supported")
    n = ttbcr & TTBCR_N_MASK
    if n == 0 or not (vaddr >> (32 - n)):
        if ttbcr & TTBCR_PD0:
            return MmuFault(vaddr, FS_TRANSLATION_SECTION, 0, access)
        base = regs.ttbr0 & ~((1 << (14 - n)) - 1) & 0xFFFFFFFF
        index = (vaddr & (0xFFFFFFFF >> n)) >> 20
    else:
        if ttbcr & TTBCR_PD1:
            return MmuFault(vaddr, FS_TRANSLATION_SECTION, 0, access)
        base = regs.ttbr1 & 0xFFFFC000
        index = vaddr >> 20
    l1 = read_u32(base | (index << 2))
    if l1 is None:
        return MmuFault(vaddr, FS_EXTERNAL_WALK_L1, 0, access)
    kind = l1 & 3
    if kind == 0:
        return MmuFault(vaddr, FS_TRANSLATION_SECTION, 0, access)
    if kind == 1:  # page table
        domain = (l1 >> 5) & 0xF
        pxn = l1 & 4
        l2 = read_u32((l1 & 0xFFFFFC00) | ((vaddr >> 10) & 0x3FC))
        if l2 is None:
            return MmuFault(vaddr, FS_EXTERNAL_WALK_L2, domain, access)
        if not l2 & 3:
            return MmuFault(vaddr, FS_TRANSLATION_PAGE, domain, access)
        if l2 & 2:  # small page
            paddr = (l2 & 0xFFFFF000) | (vaddr & 0xFFF)
            xn = l2 & 1
        else:  # large page
            paddr = (l2 & 0xFFFF0000) | (vaddr & 0xFFFF)
            xn = l2 & 0x8000
        ap = ((l2 >> 7) & 4) | ((l2 >> 4) & 3)
        section = False
    else:  # section or supersection; bit 0 is PXN when the descriptor is 0b11
        pxn = l1 & 1
        if l1 & (1 << 18):
            domain = 0
            paddr = (l1 & 0xFF000000) | (vaddr & 0x00FFFFFF)
        else:
            domain = (l1 >> 5) & 0xF
            paddr = (l1 & 0xFFF00000) | (vaddr & 0x000FFFFF)
        xn = l1 & 0x10
        ap = ((l1 >> 13) & 4) | ((l1 >> 10) & 3)
        section = True

    dtype = (regs.dacr >> (2 * domain)) & 3
    if dtype == DACR_MANAGER:
        return paddr, PROT_R | PROT_W | PROT_X
    if dtype != DACR_CLIENT:
        return MmuFault(vaddr, FS_DOMAIN_SECTION if section else FS_DOMAIN_PAGE, domain, access)
    if sctlr & SCTLR_AFE and not ap & 1:
        return MmuFault(vaddr, FS_ACCESS_FLAG_SECTION if section else FS_ACCESS_FLAG_PAGE, domain, access)
    priv_perms, user_perms = _AP_PERMS[ap]
    perms = priv_perms if privileged else user_perms
    if perms and not xn and not (privileged and pxn):
        perms |= PROT_X
    needed = PROT_W if access == ACCESS_WRITE else PROT_X if access == ACCESS_FETCH else PROT_R
    if not perms & needed:
        return MmuFault(vaddr, FS_PERMISSION_SECTION if section else FS_PERMISSION_PAGE, domain, access)
    return paddr, perms
