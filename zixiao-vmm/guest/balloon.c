/*
 * Zixiao's virtio-balloon test guest: a freestanding C kernel built and
 * entered like blk.c. It finds the balloon (device id 5) among the
 * virtio-mmio devices on the command line, negotiates VERSION_1 (and
 * DEFLATE_ON_OOM if offered), sets up the inflate and deflate queues,
 * then touches `zx.touch=<MiB>` (default 32) of memory from 16 MiB up, one
 * write per 4 KiB page, so the host really backs it. It prints
 *
 *   ZX: balloon features=<offered bits, hex> target=<num_pages>
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

#define QSZ 8
#define REGION 0x1000000ul /* 16 MiB */
#define PAGE 4096ul
#define BATCH 1024 /* PFNs per request: 4 KiB */

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline u32 rd(u64 a) { return *(volatile u32 *)a; }
static inline void wr(u64 a, u32 v) { *(volatile u32 *)a = v; }

static u64 parse_num(const char **sp) {
    const char *s = *sp;
    u64 v = 0;
    int hex = s[0] == '0' && s[1] == 'x';
    if (hex) s += 2;
    for (;;) {
        char c = *s;
        int d = c >= '0' && c <= '9' ? c - '0'
              : hex && c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) break;
        v = v * (hex ? 16 : 10) + (u64)d;
        s++;
    }
    *sp = s;
    return v;
}

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QSZ]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QSZ]; u16 avail_event; };

struct vq {
    struct desc desc[QSZ] __attribute__((aligned(4096)));
    struct avail avail __attribute__((aligned(4096)));
    struct used used __attribute__((aligned(4096)));
    u16 last_used;
};
static struct vq queues[2];
static u32 pfns[BATCH] __attribute__((aligned(4096)));
static u64 base;

static void queue(u32 index, struct vq *q) {
    wr(base + 0x30, index);
    wr(base + 0x38, QSZ);
    wr(base + 0x80, (u32)(u64)q->desc);
    wr(base + 0x84, 0);
    wr(base + 0x90, (u32)(u64)&q->avail);
    wr(base + 0x94, 0);
    wr(base + 0xa0, (u32)(u64)&q->used);
    wr(base + 0xa4, 0);
    wr(base + 0x44, 1);
}

static int setup(void) {
    wr(base + 0x70, 0);
    wr(base + 0x70, 1);
    wr(base + 0x70, 1 | 2);
    wr(base + 0x14, 0);
    u32 f0 = rd(base + 0x10);
    wr(base + 0x14, 1);
    if (!(rd(base + 0x10) & 1)) return -1;
    wr(base + 0x24, 0);
    wr(base + 0x20, f0 & (1u << 2)); /* DEFLATE_ON_OOM */
    wr(base + 0x24, 1);
    wr(base + 0x20, 1);
    wr(base + 0x70, 1 | 2 | 8);
    if (!(rd(base + 0x70) & 8)) return -2;
    queue(0, &queues[0]);
    queue(1, &queues[1]);
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
        const char *at = find(p, "@");
        if (!at) break;
        u64 addr = parse_num(&at);
        p = at;
        if (rd(addr) == 0x74726976 && rd(addr + 8) == 5) base = addr;
    }
    if (!base) { puts("ZX: balloon missing\n"); outb(0x64, 0xfe); return; }
    int err = setup();
    if (err) { puts("ZX: balloon setup failed\n"); outb(0x64, 0xfe); return; }
    const char *touch = find(cmdline, "zx.touch=");
    u64 mib = touch ? parse_num(&touch) : 32;
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
