/*
 * The instruction counter of qppsuite's engine: a Unicorn block hook in native code.
 *
 * Unicorn counts instructions only with a hook before every instruction (uc_emu_start's count), a
 * helper call each.  This hook runs once per translated block instead and adds the block's
 * instruction count, which the engine's translator knows (tb->icount, read through
 * UC_CTL_TB_REQUEST_CACHE the first time a block is seen and cached by start address and length).
 * It also ends the run at a block boundary once the budget is spent: before a block that would go
 * past the budget, unless it is the run's first block, and never past the limit (docs/engine.md,
 * "Time").
 *
 * While an interrupt is pending and the CPU masks it, the hook can also end the run before the first
 * block that starts with CPSR.I clear (stop_unmasked), so the machine takes the interrupt there, as a CPU
 * does at the instruction after the unmasking (ARM ARM B1.8, asynchronous exception masking).  An
 * instruction that writes CPSR.I ends its block in the translator, so that block boundary is exactly the
 * unmasking's.
 *
 * The same hook dispatches entry hooks: a block starting at a watched address calls the Python
 * function in ``entry``.  The engine calls this hook at every block anyway, so a watched address
 * costs one probe of an open-addressing table here, instead of one more Unicorn block hook that the
 * engine would scan at every block of the whole system (and translated code to drop when it comes
 * and goes).
 *
 * It calls no Unicorn symbol directly: qppsuite.core.icount passes uc_emu_stop, uc_ctl and uc_reg_read in
 * the struct, so this file builds without Unicorn's headers or library.  The Python side mirrors the
 * struct with ctypes and checks its size against qpp_icount_size().
 *
 * It is also a (methodless) Python extension module, so that pip builds and installs it.
 */
#include <Python.h>
#include <stdint.h>

#define QPP_ICOUNT_SLOTS 65536 /* a power of two */
#define QPP_UC_ARM_REG_CPSR 3  /* unicorn/arm.h */
#define QPP_CPSR_I 0x80u       /* IRQ mask bit (ARM ARM B1.3.3) */

struct qpp_icount_slot {
    uint64_t pc;
    uint32_t size;
    uint16_t icount;
    uint16_t generation;
};

/* Unicorn's uc_tb (unicorn.h): a translated block as UC_CTL_TB_REQUEST_CACHE reports it. */
struct qpp_uc_tb {
    uint64_t pc;
    uint16_t icount;
    uint16_t size;
};

struct qpp_icount {
    uint64_t executed;     /* instructions of the blocks entered in this run */
    uint64_t budget;       /* no block is entered past it, except the run's first */
    uint64_t limit;        /* no block is entered past it at all */
    uint64_t last_pc;      /* the block entered last */
    uint32_t last_size;    /* its length in bytes; 0 once its instructions are accounted for */
    uint32_t last_icount;  /* its instructions */
    uint32_t budget_stop;  /* why this run ended before a block: 1 the budget or limit, 2 stop_pending,
                              3 CPSR.I clear with stop_unmasked set */
    uint32_t generation;   /* cached counts of another generation are looked up again */
    uint64_t lookups;      /* counts asked of the translator (cache misses) */
    int (*stop)(void *uc);
    int (*ctl)(void *uc, int control, ...);
    int (*reg_read)(void *uc, int regid, void *value);
    int32_t request_cache; /* UC_CTL_READ_WRITE(UC_CTL_TB_REQUEST_CACHE, 2) */
    uint32_t stop_pending; /* 1: end the run before the next block (a stop asked from a device) */
    void (*entry)(uint64_t address, uint32_t size); /* called for a block at a watched address */
    uint32_t *watch;       /* open addressing: address | 1 per watched address, 0 empty, 2 removed */
    uint32_t watch_mask;   /* slots - 1 (a power of two) */
    uint32_t watched;      /* watched addresses in the table */
    uint32_t removed;      /* slots marked removed */
    uint32_t stop_unmasked; /* 1: end the run before a block (but the first) that starts with CPSR.I clear */
    struct qpp_icount_slot cache[QPP_ICOUNT_SLOTS];
};

size_t qpp_icount_size(void) { return sizeof(struct qpp_icount); }

#define QPP_WATCH_EMPTY 0u
#define QPP_WATCH_REMOVED 2u /* even, so never a key (address | 1) */

static uint32_t qpp_watch_slot(uint32_t address, uint32_t mask)
{
    return ((address >> 1) * 2654435761u) & mask; /* Knuth's multiplicative hash */
}

/* The slot holding ``address`` (-1 if none). */
static int64_t qpp_watch_find(const struct qpp_icount *q, uint32_t address)
{
    uint32_t key = address | 1u, i = qpp_watch_slot(address, q->watch_mask);
    for (;;) {
        uint32_t k = q->watch[i];
        if (k == key)
            return i;
        if (k == QPP_WATCH_EMPTY)
            return -1;
        i = (i + 1) & q->watch_mask;
    }
}

/* Watch ``address`` (bit 0 ignored): 1 if it was not watched yet, 0 if it was.  The caller keeps the table under
 * half full (qpp_icount_rehash), so a probe always ends at an empty slot. */
int qpp_icount_watch(struct qpp_icount *q, uint32_t address)
{
    address &= ~1u;
    if (qpp_watch_find(q, address) >= 0)
        return 0;
    uint32_t i = qpp_watch_slot(address, q->watch_mask);
    while (q->watch[i] != QPP_WATCH_EMPTY && q->watch[i] != QPP_WATCH_REMOVED)
        i = (i + 1) & q->watch_mask;
    if (q->watch[i] == QPP_WATCH_REMOVED)
        q->removed--;
    q->watch[i] = address | 1u;
    q->watched++;
    return 1;
}

/* Stop watching ``address``: 1 if it was watched, 0 if not. */
int qpp_icount_unwatch(struct qpp_icount *q, uint32_t address)
{
    int64_t i = qpp_watch_find(q, address & ~1u);
    if (i < 0)
        return 0;
    q->watch[i] = QPP_WATCH_REMOVED;
    q->watched--;
    q->removed++;
    return 1;
}

/* Move every watched address into ``table`` (``mask + 1`` zeroed slots) and use it from now on. */
void qpp_icount_rehash(struct qpp_icount *q, uint32_t *table, uint32_t mask)
{
    uint32_t *old = q->watch, old_mask = q->watch_mask;
    q->watch = table;
    q->watch_mask = mask;
    q->watched = q->removed = 0;
    for (uint32_t i = 0; old != NULL && i <= old_mask; i++)
        if (old[i] & 1u)
            qpp_icount_watch(q, old[i]);
}

/* uc_cb_hookcode_t: void (*)(uc_engine *uc, uint64_t address, uint32_t size, void *user_data) */
void qpp_icount_block(void *uc, uint64_t address, uint32_t size, void *user)
{
    struct qpp_icount *q = user;
    if (q->stop_pending) {
        q->stop_pending = 0;
        q->budget_stop = 2;
        q->stop(uc);
        return;
    }
    if (q->stop_unmasked && q->executed != 0) {
        uint64_t cpsr = 0;
        if (q->reg_read(uc, QPP_UC_ARM_REG_CPSR, &cpsr) == 0 && !(cpsr & QPP_CPSR_I)) {
            q->budget_stop = 3;
            q->stop(uc);
            return;
        }
    }
    struct qpp_icount_slot *slot = &q->cache[(address >> 1) & (QPP_ICOUNT_SLOTS - 1)];
    uint32_t icount;

    if (slot->pc == address && slot->size == size && slot->generation == (uint16_t)q->generation) {
        icount = slot->icount;
    } else {
        struct qpp_uc_tb tb;
        q->lookups++;
        /* The block about to run is the one the CPU's current state finds at this address. */
        if (q->ctl(uc, q->request_cache, address, &tb) == 0 && tb.pc == address && tb.size == size) {
            icount = tb.icount;
        } else {
            icount = size >= 4 ? size / 4 : 1; /* not reached in practice: the ARM-state count */
        }
        slot->pc = address;
        slot->size = size;
        slot->icount = (uint16_t)icount;
        slot->generation = (uint16_t)q->generation;
    }
    if ((q->executed != 0 && q->executed + icount > q->budget) || q->executed + icount > q->limit) {
        q->budget_stop = 1;
        q->stop(uc);
        return;
    }
    q->executed += icount;
    q->last_pc = address;
    q->last_size = size;
    q->last_icount = icount;
    if (q->watched != 0 && qpp_watch_find(q, (uint32_t)address) >= 0)
        q->entry(address, size);
}

static struct PyModuleDef qpp_icount_module = {PyModuleDef_HEAD_INIT, "_icount", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__icount(void) { return PyModule_Create(&qpp_icount_module); }
