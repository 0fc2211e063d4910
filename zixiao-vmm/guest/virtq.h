/*
 * What the C test guests with virtio drivers (blk.c, balloon.c) share:
 * MMIO register access, a number parser for the command line, the split
 * virtqueue's ring layouts (QSZ entries), feature negotiation and the
 * setup of one queue's rings on a virtio-mmio device. Included after zx.h.
 */

#define QSZ 8
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline u32 rd(u64 a) { return *(volatile u32 *)a; }
static inline void wr(u64 a, u32 v) { *(volatile u32 *)a = v; }

static u64 parse_num(const char **sp, int base) {
    const char *s = *sp;
    u64 v = 0;
    for (;;) {
        char c = *s;
        int d = c >= '0' && c <= '9' ? c - '0'
              : base == 16 && c >= 'a' && c <= 'f' ? c - 'a' + 10
              : base == 16 && c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) break;
        v = v * base + (u64)d;
        s++;
    }
    *sp = s;
    return v;
}

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QSZ]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QSZ]; u16 avail_event; };

/* Resets the device at `base`, acknowledges it and negotiates
 * VIRTIO_F_VERSION_1 plus the bits of `wanted` (0-31) it offers. Returns
 * the bits 0-31 it offered; -1 without VERSION_1, -2 when FEATURES_OK did
 * not stick. */
static long vq_negotiate(u64 base, u32 wanted) {
    wr(base + 0x70, 0);     /* reset */
    wr(base + 0x70, 1);     /* ACKNOWLEDGE */
    wr(base + 0x70, 1 | 2); /* DRIVER */
    wr(base + 0x14, 0);
    u32 f0 = rd(base + 0x10);
    wr(base + 0x14, 1);
    if (!(rd(base + 0x10) & 1)) return -1; /* no VIRTIO_F_VERSION_1 */
    wr(base + 0x24, 0);
    wr(base + 0x20, f0 & wanted);
    wr(base + 0x24, 1);
    wr(base + 0x20, 1);
    wr(base + 0x70, 1 | 2 | 8); /* FEATURES_OK */
    if (!(rd(base + 0x70) & 8)) return -2;
    return f0;
}

/* Sets queue `index` of the device at `base` to QSZ entries at these rings
 * (below 4 GiB) and marks it ready. */
static void vq_rings(u64 base, u32 index, const void *desc, const void *avail, const void *used) {
    wr(base + 0x30, index);
    wr(base + 0x38, QSZ);
    wr(base + 0x80, (u32)(u64)desc);
    wr(base + 0x84, 0);
    wr(base + 0x90, (u32)(u64)avail);
    wr(base + 0x94, 0);
    wr(base + 0xa0, (u32)(u64)used);
    wr(base + 0xa4, 0);
    wr(base + 0x44, 1);
}
