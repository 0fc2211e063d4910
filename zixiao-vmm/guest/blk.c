/*
 * Zixiao's virtio test guest: a freestanding C kernel (gcc -ffreestanding
 * -nostdlib), entered like guest.S through the Linux 64-bit boot protocol
 * (long mode, identity paging, %rsi = boot_params). It finds the
 * virtio-mmio devices the VMM announces on the command line
 * (`virtio_mmio.device=4K@0xADDR:IRQ`, as a Linux guest would), drives each
 * virtio-block device through a split virtqueue of 8 entries, polling the
 * used ring (the device still raises its interrupt: the guest prints the
 * InterruptStatus it saw and acknowledges it), and prints on COM1:
 *
 *   ZX: virtio<N> at 0x<addr> irq=<irq> version=<v> id=<device id>
 *   ZX: blk<N> capacity=<sectors> ro=<0|1> flush=<0|1>
 *   ZX: blk<N> id=<GET_ID string>
 *   ZX: blk<N> read sector 0 crc=<crc32 of the sector> isr=<interrupt status>
 *   ZX: blk<N> write ok | write refused (ro) | write failed status=<s>
 *       (sector 1 := pattern: byte j = j * 13 + 7 + N)
 *   ZX: blk<N> flush ok | flush failed status=<s>
 *   ZX: blk<N> read sector 1 crc=<crc32>
 *   ZX: blk<N> read past end status=<s>     (1 = VIRTIO_BLK_S_IOERR)
 *   ZX: ready
 *
 * For a virtio-net card (device id 1) it negotiates VERSION_1 + MAC +
 * STATUS, posts 8 receive buffers, and prints
 *
 *   ZX: net mac=<aa:bb:cc:dd:ee:ff> link=<status bit 0>
 *   ZX: net tx hello                 (sent: broadcast, EtherType 0x88b5,
 *                                     payload "zixiao-net hello", padded to 60 bytes)
 *   ZX: net rx len=<frame bytes> crc=<crc32 of the frame>   (waits for a
 *                                     frame of EtherType 0x88b6; others are ignored)
 *   ZX: net echo                     (sent back: to the frame's source, from
 *                                     its MAC, EtherType 0x88b5, same payload)
 *
 * then, after `ZX: ready`, with `zx.net=loop` forever: sends
 * "zixiao-net seq=<n>" frames (`ZX: net tx seq=<n>`) and answers every
 * frame it receives as above; with `zx.net=echo` forever: only answers.
 *
 * With `zx.blk=loop`, on disk 0 forever: write sector 2 ("iter=<n>"
 * and zeros), read it back, compare, print `ZX: blk0 iter=<n> ok|mismatch`;
 * with `zx.bench=1`, read throughput runs on disk 0 (`ZX: bench <name>
 * start` ... `ZX: bench <name> done n=.. bytes=.. errors=..`: sequential
 * 4 KiB, sequential 1 MiB, random 4 KiB); then `ZX: bye` and an i8042 reset. Guest code runs emulated on
 * software-nested KVM (~1 us per instruction): loops are kept short.
 *
 * For a virtio-vsock device (id 19) it prints `ZX: vsock cid=<cid>` and,
 * after `ZX: ready`, serves vsock forever (instead of the modes above): it
 * listens on port 1234 and echoes every byte a connection brings back on
 * it, advertising a 16 KiB buffer (so the host must wait for credit) and
 * sending no more than the host's credit allows. With
 * `zx.vsock.connect=<port>[,<port>...]` it first connects to each host
 * port (from ports 5000, 5001, ...) and echoes on those connections too.
 * It prints
 *
 *   ZX: vsock accept port=<peer port>     (a host connection to 1234)
 *   ZX: vsock refuse port=<port>          (a request to any other port: RST)
 *   ZX: vsock connected port=<port> | ZX: vsock refused port=<port>
 *   ZX: vsock closed port=<peer port> bytes=<bytes echoed>
 *   ZX: vsock transport reset             (the event a restored device sends)
 */

#include "zx.h"
#include "virtq.h"

#define MAX_DEVICES 8
#define SECTOR 512

static void put_hex(u64 v, int digits) {
    for (int i = digits - 1; i >= 0; i--) putc("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}

static u32 crc32(const u8 *p, u32 n) {
    u32 c = 0xffffffff;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320 & (0 - (c & 1)));
    }
    return ~c;
}

/* One queue's rings (page-aligned parts) and request buffers per device. */
struct vq {
    struct desc desc[QSZ] __attribute__((aligned(4096)));
    struct avail avail __attribute__((aligned(4096)));
    struct used used __attribute__((aligned(4096)));
    struct { u32 type; u32 reserved; u64 sector; } hdr;
    u8 status;
    u8 data[SECTOR] __attribute__((aligned(16)));
    u16 last_used;
};
static struct vq queues[MAX_DEVICES];

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8

static u32 last_isr;

/* Submits one request (header, optional data at `buf`, status) and waits
 * for it; returns the status byte. */
static int request_at(u64 base, struct vq *q, u32 type, u64 sector, u64 buf, u32 len,
                      int device_writes) {
    q->hdr.type = type;
    q->hdr.reserved = 0;
    q->hdr.sector = sector;
    q->status = 0xff;
    q->desc[0] = (struct desc){(u64)&q->hdr, 16, VRING_DESC_F_NEXT, 1};
    u16 last = 1;
    if (len) {
        q->desc[1] = (struct desc){buf, len,
                                   (u16)(VRING_DESC_F_NEXT | (device_writes ? VRING_DESC_F_WRITE : 0)), 2};
        last = 2;
    }
    q->desc[last] = (struct desc){(u64)&q->status, 1, VRING_DESC_F_WRITE, 0};
    q->avail.ring[q->avail.idx % QSZ] = 0;
    barrier();
    q->avail.idx++;
    barrier();
    wr(base + 0x50, 0); /* QueueNotify */
    for (u32 spin = 0; *(volatile u16 *)&q->used.idx == q->last_used; spin++)
        if (spin > 100000) return -1;
    q->last_used++;
    last_isr = rd(base + 0x60);
    wr(base + 0x64, last_isr); /* InterruptACK */
    return *(volatile u8 *)&q->status;
}

/* A request on the queue's own one-sector buffer. */
static int request(u64 base, struct vq *q, u32 type, u64 sector, u32 len, int device_writes) {
    return request_at(base, q, type, sector, (u64)q->data, len, device_writes);
}

static int setup(u64 base, struct vq *q, u32 *features) {
    long f0 = vq_negotiate(base, (1u << 5) | (1u << 9)); /* RO, FLUSH */
    if (f0 < 0) return (int)f0;
    wr(base + 0x30, 0);
    if (rd(base + 0x34) < QSZ) return -3;
    vq_rings(base, 0, q->desc, &q->avail, &q->used);
    wr(base + 0x70, 1 | 2 | 8 | 4); /* DRIVER_OK */
    *features = (u32)f0;
    return 0;
}

static void prefix(int n) { puts("ZX: blk"); put_dec((u64)n); putc(' '); }

static void exercise(int n, u64 base, struct vq *q) {
    u32 features;
    int err = setup(base, q, &features);
    if (err) { prefix(n); puts("setup failed "); put_dec((u64)-err); putc('\n'); return; }
    u64 capacity = (u64)rd(base + 0x100) | ((u64)rd(base + 0x104) << 32);
    int ro = (features >> 5) & 1;
    prefix(n); puts("capacity="); put_dec(capacity); puts(" ro="); put_dec((u64)ro);
    puts(" flush="); put_dec((features >> 9) & 1); putc('\n');

    for (int i = 0; i < 21; i++) q->data[i] = 0;
    int s = request(base, q, T_GET_ID, 0, 20, 1);
    prefix(n); puts("id="); puts((const char *)q->data); puts(s ? " failed" : ""); putc('\n');

    s = request(base, q, T_IN, 0, SECTOR, 1);
    prefix(n); puts("read sector 0 crc="); put_hex(crc32(q->data, SECTOR), 8);
    puts(" status="); put_dec((u64)s); puts(" isr="); put_dec(last_isr); putc('\n');

    for (u32 j = 0; j < SECTOR; j++) q->data[j] = (u8)(j * 13 + 7 + (u32)n);
    s = request(base, q, T_OUT, 1, SECTOR, 0);
    prefix(n);
    if (s == 0) puts("write ok\n");
    else if (s == 1 && ro) puts("write refused (ro)\n");
    else { puts("write failed status="); put_dec((u64)s); putc('\n'); }

    s = request(base, q, T_FLUSH, 0, 0, 0);
    prefix(n);
    if (s == 0) puts("flush ok\n");
    else { puts("flush failed status="); put_dec((u64)s); putc('\n'); }

    s = request(base, q, T_IN, 1, SECTOR, 1);
    prefix(n); puts("read sector 1 crc="); put_hex(crc32(q->data, SECTOR), 8);
    puts(" status="); put_dec((u64)s); putc('\n');

    s = request(base, q, T_IN, capacity, SECTOR, 1);
    prefix(n); puts("read past end status="); put_dec((u64)s); putc('\n');
}

/* zx.bench=1: read throughput of disk 0 as the guest sees it. Each run
 * prints a start and a done line; the host times the gap. The data is
 * never touched by the guest (its code is emulated: only the device's
 * work and the exits are measured). */
static u8 bench_buf[1 << 20] __attribute__((aligned(4096)));

static void bench_run(u64 base, struct vq *q, const char *name, u32 len, u32 count, u64 sectors,
                      int random) {
    u32 per = len / SECTOR;
    u64 slots = sectors / per, seed = 12345, errors = 0;
    puts("ZX: bench "); puts(name); puts(" start\n");
    for (u32 i = 0; i < count; i++) {
        u64 slot = i % slots;
        if (random) {
            seed = seed * 6364136223846793005ul + 1442695040888963407ul;
            slot = (seed >> 33) % slots;
        }
        if (request_at(base, q, T_IN, slot * per, (u64)bench_buf, len, 1) != 0) errors++;
    }
    puts("ZX: bench "); puts(name); puts(" done n="); put_dec(count);
    puts(" bytes="); put_dec((u64)count * len); puts(" errors="); put_dec(errors); putc('\n');
}

static void bench(u64 base, struct vq *q) {
    u64 sectors = (u64)rd(base + 0x100) | ((u64)rd(base + 0x104) << 32);
    bench_run(base, q, "seq4k", 4096, 2048, sectors, 0);
    bench_run(base, q, "seq1m", 1 << 20, 64, sectors, 0);
    bench_run(base, q, "rand4k", 4096, 2048, sectors, 1);
}

/* ---- virtio-net ---- */

#define NET_BUF 2048
#define NET_HDR 12
static struct vq net_rx, net_tx;
static u8 rx_bufs[QSZ][NET_BUF] __attribute__((aligned(16)));
static u8 tx_buf[NET_BUF] __attribute__((aligned(16)));
static u8 frame[NET_BUF];
static u8 mac[6];
static u64 net_base;

static void net_queue(u64 base, u32 index, struct vq *q) {
    vq_rings(base, index, q->desc, &q->avail, &q->used);
}

static int net_setup(u64 base) {
    long f0 = vq_negotiate(base, (1u << 5) | (1u << 16)); /* MAC, STATUS */
    if (f0 < 0) return (int)f0;
    if (!(f0 & (1u << 5))) return -1; /* no MAC */
    net_queue(base, 0, &net_rx);
    net_queue(base, 1, &net_tx);
    wr(base + 0x70, 1 | 2 | 8 | 4);
    for (u16 i = 0; i < QSZ; i++) {
        net_rx.desc[i] = (struct desc){(u64)rx_bufs[i], NET_BUF, VRING_DESC_F_WRITE, 0};
        net_rx.avail.ring[i] = i;
    }
    barrier();
    net_rx.avail.idx = QSZ;
    barrier();
    wr(base + 0x50, 0);
    for (int i = 0; i < 6; i++) mac[i] = *(volatile u8 *)(base + 0x100 + i);
    u32 status = *(volatile u16 *)(base + 0x106);
    puts("ZX: net mac=");
    for (int i = 0; i < 6; i++) { if (i) putc(':'); put_hex(mac[i], 2); }
    puts(" link="); put_dec(status & 1); putc('\n');
    net_base = base;
    return 0;
}

/* Sends the Ethernet frame in `frame` (len bytes, at least 60 sent). */
static void net_send(u32 len) {
    if (len < 60) { for (u32 i = len; i < 60; i++) frame[i] = 0; len = 60; }
    for (u32 i = 0; i < NET_HDR; i++) tx_buf[i] = 0;
    for (u32 i = 0; i < len; i++) tx_buf[NET_HDR + i] = frame[i];
    net_tx.desc[0] = (struct desc){(u64)tx_buf, NET_HDR + len, 0, 0};
    net_tx.avail.ring[net_tx.avail.idx % QSZ] = 0;
    barrier();
    net_tx.avail.idx++;
    barrier();
    wr(net_base + 0x50, 1);
    for (u32 spin = 0; *(volatile u16 *)&net_tx.used.idx == net_tx.last_used; spin++)
        if (spin > 100000) break;
    net_tx.last_used = *(volatile u16 *)&net_tx.used.idx;
    wr(net_base + 0x64, rd(net_base + 0x60));
}

/* A frame from `src` payload text, EtherType 0x88b5, to `dst`. */
static u32 net_frame(const u8 *dst, const char *text) {
    for (int i = 0; i < 6; i++) { frame[i] = dst[i]; frame[6 + i] = mac[i]; }
    frame[12] = 0x88; frame[13] = 0xb5;
    u32 len = 14;
    while (*text) frame[len++] = (u8)*text++;
    return len;
}

/* Takes one received frame into `frame` if there is one (waiting for it
 * when `wait`); returns its length, or 0. The buffer is posted again. */
static u32 net_recv(int wait) {
    while (*(volatile u16 *)&net_rx.used.idx == net_rx.last_used)
        if (!wait) return 0;
    barrier();
    struct used_elem e = net_rx.used.ring[net_rx.last_used % QSZ];
    net_rx.last_used++;
    u32 len = e.len > NET_HDR ? e.len - NET_HDR : 0;
    if (len > NET_BUF - NET_HDR) len = 0;
    u16 id = (u16)(e.id % QSZ);
    for (u32 i = 0; i < len; i++) frame[i] = rx_bufs[id][NET_HDR + i];
    net_rx.avail.ring[net_rx.avail.idx % QSZ] = id;
    barrier();
    net_rx.avail.idx++;
    barrier();
    wr(net_base + 0x50, 0);
    wr(net_base + 0x64, rd(net_base + 0x60));
    return len;
}

/* Prints the frame in `frame` and sends it back to its source, if it is a
 * test frame (EtherType 0x88b6: the host's own traffic on the TAP, such
 * as IPv6 neighbour discovery, is ignored). Returns whether it was one. */
static int net_answer(u32 len) {
    if (len < 14 || frame[12] != 0x88 || frame[13] != 0xb6) return 0;
    puts("ZX: net rx len="); put_dec(len); puts(" crc="); put_hex(crc32(frame, len), 8); putc('\n');
    for (int i = 0; i < 6; i++) { frame[i] = frame[6 + i]; frame[6 + i] = mac[i]; }
    frame[12] = 0x88; frame[13] = 0xb5;
    net_send(len);
    puts("ZX: net echo\n");
    return 1;
}

static const u8 broadcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static void net_exercise(u64 base) {
    int err = net_setup(base);
    if (err) { puts("ZX: net setup failed "); put_dec((u64)-err); putc('\n'); return; }
    net_send(net_frame(broadcast, "zixiao-net hello"));
    puts("ZX: net tx hello\n");
    while (!net_answer(net_recv(1))) {}
}

static void net_loop(int send) {
    for (u64 seq = 1;; seq++) {
        if (send) {
            char text[40] = "zixiao-net seq=";
            int len = 15;
            char digits[24];
            int d = 0;
            u64 v = seq;
            do { digits[d++] = (char)('0' + v % 10); v /= 10; } while (v);
            while (d) text[len++] = digits[--d];
            text[len] = 0;
            net_send(net_frame(broadcast, text));
            puts("ZX: net tx seq="); put_dec(seq); putc('\n');
        }
        for (u32 spin = 0; spin < (send ? 20000u : 1u); spin++) {
            u32 len = net_recv(0);
            if (len) (void)net_answer(len);
        }
    }
}

/* ---- virtio-vsock ---- */

#define VS_HDR 44
#define VS_BUF 4096
#define VS_LISTEN 1234
#define VS_LOCAL 5000
#define VS_CONNS 4
#define VS_RING 16384 /* the guest's buf_alloc per connection */
enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST };

struct vs_hdr {
    u64 src_cid, dst_cid;
    u32 src_port, dst_port, len;
    u16 type, op;
    u32 flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

struct vs_conn {
    int used, connecting, closing;
    u32 local, peer;
    u32 peer_buf_alloc, peer_fwd_cnt, tx_cnt, fwd_cnt;
    u32 head, len; /* bytes to echo, in ring */
    u64 total;
    u8 ring[VS_RING];
};

static struct vq vs_rx, vs_tx, vs_evt;
static u8 vs_rx_bufs[QSZ][VS_HDR + VS_BUF] __attribute__((aligned(16)));
static u8 vs_tx_buf[VS_HDR + VS_BUF] __attribute__((aligned(16)));
static u32 vs_evt_bufs[QSZ];
static struct vs_conn vs_conns[VS_CONNS];
static u64 vs_base, vs_cid;

/* Copies n bytes 8 at a time (x86 takes unaligned words): guest code is
 * emulated, so fewer instructions is what makes it fast. */
typedef u64 __attribute__((aligned(1), may_alias)) u64u;
static void vs_copy(u8 *d, const u8 *s, u32 n) {
    for (; n >= 8; n -= 8, d += 8, s += 8) *(u64u *)d = *(const u64u *)s;
    while (n--) *d++ = *s++;
}

static void vs_setup(u64 base) {
    long f0 = vq_negotiate(base, 0);
    if (f0 == -1) { puts("ZX: vsock setup failed\n"); return; }
    if (f0 < 0) { puts("ZX: vsock features refused\n"); return; }
    net_queue(base, 0, &vs_rx);
    net_queue(base, 1, &vs_tx);
    net_queue(base, 2, &vs_evt);
    wr(base + 0x70, 1 | 2 | 8 | 4);
    for (u16 i = 0; i < QSZ; i++) {
        vs_rx.desc[i] = (struct desc){(u64)vs_rx_bufs[i], VS_HDR + VS_BUF, VRING_DESC_F_WRITE, 0};
        vs_rx.avail.ring[i] = i;
        vs_evt.desc[i] = (struct desc){(u64)&vs_evt_bufs[i], 4, VRING_DESC_F_WRITE, 0};
        vs_evt.avail.ring[i] = i;
    }
    barrier();
    vs_rx.avail.idx = QSZ;
    vs_evt.avail.idx = QSZ;
    barrier();
    wr(base + 0x50, 0);
    wr(base + 0x50, 2);
    vs_cid = (u64)rd(base + 0x100) | ((u64)rd(base + 0x104) << 32);
    vs_base = base;
    puts("ZX: vsock cid="); put_dec(vs_cid); putc('\n');
}

/* Sends a packet whose payload (len bytes) is already in vs_tx_buf after
 * the header, and waits until the device took it. */
static void vs_send(u16 op, u32 local, u32 peer, u32 flags, const struct vs_conn *c, u32 len) {
    struct vs_hdr *h = (struct vs_hdr *)vs_tx_buf;
    h->src_cid = vs_cid;
    h->dst_cid = 2;
    h->src_port = local;
    h->dst_port = peer;
    h->len = len;
    h->type = 1;
    h->op = op;
    h->flags = flags;
    h->buf_alloc = VS_RING;
    h->fwd_cnt = c ? c->fwd_cnt : 0;
    vs_tx.desc[0] = (struct desc){(u64)vs_tx_buf, VS_HDR + len, 0, 0};
    vs_tx.avail.ring[vs_tx.avail.idx % QSZ] = 0;
    barrier();
    vs_tx.avail.idx++;
    barrier();
    wr(vs_base + 0x50, 1);
    while (*(volatile u16 *)&vs_tx.used.idx == vs_tx.last_used) {}
    vs_tx.last_used++;
}

static struct vs_conn *vs_find(u32 local, u32 peer) {
    for (int i = 0; i < VS_CONNS; i++)
        if (vs_conns[i].used && vs_conns[i].local == local && vs_conns[i].peer == peer)
            return &vs_conns[i];
    return 0;
}

static struct vs_conn *vs_new(u32 local, u32 peer) {
    for (int i = 0; i < VS_CONNS; i++) {
        struct vs_conn *c = &vs_conns[i];
        if (c->used) continue;
        c->used = 1;
        c->connecting = c->closing = 0;
        c->local = local;
        c->peer = peer;
        c->peer_buf_alloc = c->peer_fwd_cnt = c->tx_cnt = c->fwd_cnt = 0;
        c->head = c->len = 0;
        c->total = 0;
        return c;
    }
    return 0;
}

static void vs_port_line(const char *what, u32 port) {
    puts("ZX: vsock "); puts(what); puts(" port="); put_dec(port); putc('\n');
}

static void vs_close(struct vs_conn *c, int send_rst) {
    if (send_rst) vs_send(OP_RST, c->local, c->peer, 0, c, 0);
    puts("ZX: vsock closed port="); put_dec(c->peer); puts(" bytes="); put_dec(c->total); putc('\n');
    c->used = 0;
}

static void vs_packet(const u8 *buf, u32 used_len) {
    const struct vs_hdr *h = (const struct vs_hdr *)buf;
    if (used_len < VS_HDR || h->type != 1 || h->dst_cid != vs_cid) return;
    u32 len = h->len <= VS_BUF && VS_HDR + h->len <= used_len ? h->len : 0;
    struct vs_conn *c = vs_find(h->dst_port, h->src_port);
    if (c) {
        c->peer_buf_alloc = h->buf_alloc;
        c->peer_fwd_cnt = h->fwd_cnt;
    }
    switch (h->op) {
    case OP_REQUEST:
        if (!c && h->dst_port == VS_LISTEN && (c = vs_new(h->dst_port, h->src_port))) {
            c->peer_buf_alloc = h->buf_alloc;
            c->peer_fwd_cnt = h->fwd_cnt;
            vs_send(OP_RESPONSE, c->local, c->peer, 0, c, 0);
            vs_port_line("accept", c->peer);
        } else {
            vs_send(OP_RST, h->dst_port, h->src_port, 0, 0, 0);
            vs_port_line("refuse", h->dst_port);
        }
        break;
    case OP_RESPONSE:
        if (c && c->connecting) { c->connecting = 0; vs_port_line("connected", c->peer); }
        break;
    case OP_RW:
        if (!c || c->connecting) break;
        if (len > VS_RING - c->len) { vs_close(c, 1); break; }
        {
            u32 at = (c->head + c->len) % VS_RING;
            u32 first = len < VS_RING - at ? len : VS_RING - at;
            vs_copy(c->ring + at, buf + VS_HDR, first);
            vs_copy(c->ring, buf + VS_HDR + first, len - first);
        }
        c->len += len;
        c->total += len;
        break;
    case OP_CREDIT_REQUEST:
        if (c) vs_send(OP_CREDIT_UPDATE, c->local, c->peer, 0, c, 0);
        break;
    case OP_SHUTDOWN:
        if (c) c->closing = 1;
        break;
    case OP_RST:
        if (c) {
            if (c->connecting) vs_port_line("refused", c->peer);
            c->connecting = 0;
            vs_close(c, 0);
        }
        break;
    default:
        break;
    }
}

/* Echoes what connection `c` has, within the host's credit. */
static void vs_echo(struct vs_conn *c) {
    while (c->len) {
        u32 credit = c->peer_buf_alloc - (c->tx_cnt - c->peer_fwd_cnt);
        if (credit > c->peer_buf_alloc) credit = 0; /* wrapped: none */
        u32 n = c->len < VS_BUF ? c->len : VS_BUF;
        if (n > credit) n = credit;
        if (!n) return;
        u32 first = n < VS_RING - c->head ? n : VS_RING - c->head;
        vs_copy(vs_tx_buf + VS_HDR, c->ring + c->head, first);
        vs_copy(vs_tx_buf + VS_HDR + first, c->ring, n - first);
        c->head = (c->head + n) % VS_RING;
        c->len -= n;
        c->tx_cnt += n;
        c->fwd_cnt += n;
        vs_send(OP_RW, c->local, c->peer, 0, c, n);
    }
    if (c->closing) vs_close(c, 1);
}

static void vs_loop(const char *cmdline) {
    const char *connect = find(cmdline, "zx.vsock.connect=");
    for (u32 i = 0; connect && i < VS_CONNS; i++) {
        u32 port = (u32)parse_num(&connect, 10);
        struct vs_conn *c = vs_new(VS_LOCAL + i, port);
        c->connecting = 1;
        vs_send(OP_REQUEST, VS_LOCAL + i, port, 0, c, 0);
        if (*connect++ != ',') break;
    }
    for (;;) {
        while (*(volatile u16 *)&vs_rx.used.idx != vs_rx.last_used) {
            barrier();
            struct used_elem e = vs_rx.used.ring[vs_rx.last_used % QSZ];
            vs_rx.last_used++;
            u16 id = (u16)(e.id % QSZ);
            vs_packet(vs_rx_bufs[id], e.len);
            vs_rx.avail.ring[vs_rx.avail.idx % QSZ] = id;
            barrier();
            vs_rx.avail.idx++;
            barrier();
            wr(vs_base + 0x50, 0);
        }
        while (*(volatile u16 *)&vs_evt.used.idx != vs_evt.last_used) {
            barrier();
            struct used_elem e = vs_evt.used.ring[vs_evt.last_used % QSZ];
            vs_evt.last_used++;
            if (vs_evt_bufs[e.id % QSZ] == 0) {
                puts("ZX: vsock transport reset\n");
                for (int i = 0; i < VS_CONNS; i++) vs_conns[i].used = 0;
            }
            vs_evt.avail.ring[vs_evt.avail.idx % QSZ] = (u16)(e.id % QSZ);
            barrier();
            vs_evt.avail.idx++;
            barrier();
            wr(vs_base + 0x50, 2);
        }
        for (int i = 0; i < VS_CONNS; i++)
            if (vs_conns[i].used && !vs_conns[i].connecting) vs_echo(&vs_conns[i]);
        /* Polled, interrupts off: InterruptStatus is never acknowledged,
         * which spares an exit per round. */
    }
}

static void io_loop(u64 base, struct vq *q) {
    for (u64 iter = 1;; iter++) {
        char text[32] = "iter=";
        int len = 5;
        char digits[24];
        int d = 0;
        u64 v = iter;
        do { digits[d++] = (char)('0' + v % 10); v /= 10; } while (v);
        while (d) text[len++] = digits[--d];
        for (u32 j = 0; j < SECTOR; j++) q->data[j] = j < (u32)len ? (u8)text[j] : 0;
        int w = request(base, q, T_OUT, 2, SECTOR, 0);
        for (u32 j = 0; j < SECTOR; j++) q->data[j] = 0xee;
        int r = request(base, q, T_IN, 2, SECTOR, 1);
        int same = w == 0 && r == 0;
        for (u32 j = 0; j < SECTOR && same; j++)
            same = q->data[j] == (j < (u32)len ? (u8)text[j] : 0);
        puts("ZX: blk0 iter="); put_dec(iter); puts(same ? " ok\n" : " mismatch\n");
        for (volatile u32 delay = 0; delay < 20000; delay++) {}
    }
}

void zx_main(u8 *boot_params) {
    const char *cmdline = (const char *)(u64) * (u32 *)(boot_params + 0x228);
    if (!cmdline) cmdline = "";
    puts("ZX: cmdline="); puts(cmdline); putc('\n');
    u64 bases[MAX_DEVICES];
    int count = 0;
    for (const char *p = cmdline; count < MAX_DEVICES && (p = find(p, "virtio_mmio.device="));) {
        const char *at = find(p, "@0x");
        if (!at) break;
        u64 base = parse_num(&at, 16);
        u64 irq = 0;
        if (*at == ':') { at++; irq = parse_num(&at, 10); }
        p = at;
        puts("ZX: virtio"); put_dec((u64)count); puts(" at 0x"); put_hex(base, 8);
        puts(" irq="); put_dec(irq);
        if (rd(base) != 0x74726976) { puts(" bad magic\n"); continue; }
        puts(" version="); put_dec(rd(base + 4)); puts(" id="); put_dec(rd(base + 8)); putc('\n');
        if (rd(base + 8) == 1) { net_exercise(base); continue; }
        if (rd(base + 8) == 19) { vs_setup(base); continue; }
        if (rd(base + 8) != 2) continue;
        bases[count] = base;
        exercise(count, base, &queues[count]);
        count++;
    }
    puts("ZX: ready\n");
    if (vs_base) vs_loop(cmdline);
    const char *mode = find(cmdline, "zx.blk=");
    if (mode && *mode == 'l' && count > 0) io_loop(bases[0], &queues[0]);
    const char *net = find(cmdline, "zx.net=");
    if (net && net_base) net_loop(*net == 'l');
    if (find(cmdline, "zx.bench=1") && count > 0) bench(bases[0], &queues[0]);
    puts("ZX: bye\n");
    outb(0x64, 0xfe);
}
