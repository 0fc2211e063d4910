/*
 * Zixiao's virtio-balloon test guest: a freestanding C kernel built and
 * entered like blk.c. It finds the balloon (device id 5) among the
 * virtio-mmio devices on the command line, negotiates VERSION_1 (and
 * DEFLATE_ON_OOM if offered), sets up the inflate and deflate queues,
 * then touches `zx.touch=<MiB>` (default 32) of memory from 16 MiB up, one
 * write per 4 KiB page, so the host really backs it. It prints
 *
 *   ZX: balloon features=<offered bits 0-31, decimal> target=<num_pages>
 *   ZX: balloon touched=<MiB>
 *   ZX: ready
 *
 * and then polls InterruptStatus (interrupts stay off): on a
 * configuration change (bit 1, acknowledged) it compares `num_pages` with
 * what it holds, inflates by handing over pages of the touched region
 * (lowest first; never more than the region) or deflates (highest first,
 * writing each page again, so it is the guest's once more), writes
 * `actual` and prints
 *
 *   ZX: balloon actual=<pages>
 *
 * It does the same once after `ZX: ready` if the target at boot is not 0.
 * A restored guest goes on polling where it was.
 */

#include "zx.h"
#include "virtq.h"

#define REGION 0x1000000ul /* 16 MiB */
#define PAGE 4096ul
#define BATCH 1024 /* PFNs per request: 4 KiB */

struct vq {
    struct desc desc[QSZ] __attribute__((aligned(4096)));
    struct avail avail __attribute__((aligned(4096)));
    struct used used __attribute__((aligned(4096)));
    u16 last_used;
};
static struct vq queues[2];
static u32 pfns[BATCH] __attribute__((aligned(4096)));
static u64 base;

static int setup(void) {
    long f0 = vq_negotiate(base, 1u << 2); /* DEFLATE_ON_OOM */
    if (f0 < 0) return (int)f0;
    for (u32 i = 0; i < 2; i++) vq_rings(base, i, queues[i].desc, &queues[i].avail, &queues[i].used);
    wr(base + 0x70, 1 | 2 | 8 | 4);
    puts("ZX: balloon features=");
    put_dec(f0);
    puts(" target=");
    put_dec(rd(base + 0x100));
    putc('\n');
    return 0;
}

/* Hands `n` PFNs in `pfns` over on queue `index` and waits for the device. */
static void send(u32 index, u32 n) {
    struct vq *q = &queues[index];
    q->desc[0] = (struct desc){(u64)pfns, n * 4, 0, 0};
    q->avail.ring[q->avail.idx % QSZ] = 0;
    barrier();
    q->avail.idx++;
    barrier();
    wr(base + 0x50, index);
    while (*(volatile u16 *)&q->used.idx == q->last_used) {}
    q->last_used++;
}

static u32 held, region_pages;

static void adjust(void) {
    u32 target = rd(base + 0x100);
    if (target > region_pages) target = region_pages;
    while (held < target) {
        u32 n = target - held < BATCH ? target - held : BATCH;
        for (u32 i = 0; i < n; i++) pfns[i] = (u32)(REGION / PAGE) + held + i;
        send(0, n);
        held += n;
    }
    while (held > target) {
        u32 n = held - target < BATCH ? held - target : BATCH;
        for (u32 i = 0; i < n; i++) pfns[i] = (u32)(REGION / PAGE) + held - 1 - i;
        send(1, n);
        for (u32 i = 0; i < n; i++) *(volatile u64 *)((u64)pfns[i] * PAGE) = pfns[i];
        held -= n;
    }
    wr(base + 0x104, held);
    puts("ZX: balloon actual=");
    put_dec(held);
    putc('\n');
}

void zx_main(u8 *boot_params) {
    const char *cmdline = (const char *)(u64) * (u32 *)(boot_params + 0x228);
    if (!cmdline) cmdline = "";
    for (const char *p = cmdline; (p = find(p, "virtio_mmio.device="));) {
        const char *at = find(p, "@0x");
        if (!at) break;
        u64 addr = parse_num(&at, 16);
        p = at;
        if (rd(addr) == 0x74726976 && rd(addr + 8) == 5) base = addr;
    }
    if (!base) { puts("ZX: balloon missing\n"); outb(0x64, 0xfe); return; }
    int err = setup();
    if (err) { puts("ZX: balloon setup failed\n"); outb(0x64, 0xfe); return; }
    const char *touch = find(cmdline, "zx.touch=");
    u64 mib = touch ? parse_num(&touch, 10) : 32;
    region_pages = (u32)(mib << 20) / PAGE;
    for (u64 page = 0; page < region_pages; page++)
        *(volatile u64 *)(REGION + page * PAGE) = page;
    puts("ZX: balloon touched=");
    put_dec(mib);
    putc('\n');
    puts("ZX: ready\n");
    if (rd(base + 0x100)) adjust();
    for (;;) {
        u32 isr = rd(base + 0x60);
        if (isr) wr(base + 0x64, isr);
        if (isr & 2) adjust();
        for (volatile u32 delay = 0; delay < 200; delay++) {}
    }
}
