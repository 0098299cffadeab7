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
 * It calls no Unicorn symbol directly: qppsuite.core.icount passes uc_emu_stop and uc_ctl in the
 * struct, so this file builds without Unicorn's headers or library.  The Python side mirrors the
 * struct with ctypes and checks its size against qpp_icount_size().
 *
 * It is also a (methodless) Python extension module, so that pip builds and installs it.
 */
#include <Python.h>
#include <stdint.h>

#define QPP_ICOUNT_SLOTS 65536 /* a power of two */

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
    uint32_t budget_stop;  /* why this run ended before a block: 1 the budget or limit, 2 stop_pending */
    uint32_t generation;   /* cached counts of another generation are looked up again */
    uint64_t lookups;      /* counts asked of the translator (cache misses) */
    int (*stop)(void *uc);
    int (*ctl)(void *uc, int control, ...);
    int32_t request_cache; /* UC_CTL_READ_WRITE(UC_CTL_TB_REQUEST_CACHE, 2) */
    uint32_t stop_pending; /* 1: end the run before the next block (a stop asked from a device) */
    struct qpp_icount_slot cache[QPP_ICOUNT_SLOTS];
};

size_t qpp_icount_size(void) { return sizeof(struct qpp_icount); }

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
}

static struct PyModuleDef qpp_icount_module = {PyModuleDef_HEAD_INIT, "_icount", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__icount(void) { return PyModule_Create(&qpp_icount_module); }
