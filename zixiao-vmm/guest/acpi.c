/*
 * Zixiao's ACPI test guest: a freestanding C kernel (gcc -ffreestanding
 * -nostdlib), entered like guest.S through the Linux 64-bit boot protocol.
 * It finds the ACPI tables as Linux does (the RSDP on a 16-byte boundary
 * in 0xe0000..0x100000, then the XSDT), checks every checksum, reads what
 * Linux reads to power off and reboot, and prints on COM1:
 *
 *   ZX: acpi rsdp at 0x<addr> rev=<revision> ok|bad-checksum
 *   ZX: acpi table <SIG> at 0x<addr> len=<length> ok|bad-checksum
 *       (every table of the XSDT, then the DSDT)
 *   ZX: acpi madt cpus=<enabled local APICs> ioapics=<count>
 *   ZX: acpi fadt hw_reduced=<0|1> reset_reg_sup=<0|1>
 *   ZX: acpi s5=<SLP_TYP of \_S5_> sleep_control=<space>:0x<addr> sleep_status=<space>:0x<addr> reset=<space>:0x<addr> value=<v>
 *   ZX: ready
 *
 * then, with `zx.acpi=reboot`, writes the reset value to the reset
 * register (`ZX: reboot`); with `zx.acpi=vector`, calls the code at the
 * reset vector 0xffff0, where Linux jumps when its other reboot methods did
 * nothing (`ZX: reset vector`); with `zx.acpi=console`, prints `ZX: waiting`
 * and polls COM1 for a byte: `p` powers off, `r` reboots (so a test can
 * snapshot and restore the guest first); otherwise (`zx.acpi=poweroff`,
 * the default) writes SLP_TYP(S5) | SLP_EN to the sleep control register
 * (`ZX: poweroff`). It then prints `ZX: still running` and halts: the VMM
 * should have ended it.
 * A missing or broken table prints `ZX: acpi missing <what>` and halts.
 */

#include "zx.h"

static void put_hex(u64 v) {
    int i = 15;
    while (i > 0 && !((v >> (i * 4)) & 0xf)) i--;
    for (; i >= 0; i--) putc("0123456789abcdef"[(v >> (i * 4)) & 0xf]);
}

static u32 u32_at(const u8 *p) { return p[0] | p[1] << 8 | p[2] << 16 | (u32)p[3] << 24; }
static u64 u64_at(const u8 *p) { return u32_at(p) | (u64)u32_at(p + 4) << 32; }
static int same(const u8 *a, const char *b, int n) {
    for (int i = 0; i < n; i++) if (a[i] != (u8)b[i]) return 0;
    return 1;
}
static int sums_to_zero(const u8 *p, u32 n) {
    u8 s = 0;
    while (n--) s += *p++;
    return s == 0;
}

static void stop(const char *what) {
    puts("ZX: acpi missing "); puts(what); putc('\n');
    for (;;) __asm__ volatile("hlt");
}

/* Prints and checks the table at `addr`; returns it. */
static const u8 *table(u64 addr) {
    const u8 *t = (const u8 *)addr;
    u32 len = u32_at(t + 4);
    puts("ZX: acpi table ");
    for (int i = 0; i < 4; i++) putc((char)t[i]);
    puts(" at 0x"); put_hex(addr); puts(" len="); put_dec(len);
    puts(len >= 36 && sums_to_zero(t, len) ? " ok\n" : " bad-checksum\n");
    return t;
}

/* A generic address structure: space, then the address. */
static void put_gas(const char *name, const u8 *gas) {
    putc(' '); puts(name); putc('='); put_dec(gas[0]); puts(":0x"); put_hex(u64_at(gas + 4));
}

void zx_main(u8 *boot_params) {
    const char *cmdline = (const char *)(u64) * (u32 *)(boot_params + 0x228);
    if (!cmdline) cmdline = "";
    const u8 *rsdp = 0;
    for (u64 a = 0xe0000; a < 0x100000; a += 16)
        if (same((const u8 *)a, "RSD PTR ", 8)) { rsdp = (const u8 *)a; break; }
    if (!rsdp) stop("rsdp");
    puts("ZX: acpi rsdp at 0x"); put_hex((u64)rsdp); puts(" rev="); put_dec(rsdp[15]);
    puts(sums_to_zero(rsdp, 20) && sums_to_zero(rsdp, 36) ? " ok\n" : " bad-checksum\n");
    if (rsdp[15] < 2) stop("xsdt");
    const u8 *xsdt = table(u64_at(rsdp + 24));
    const u8 *fadt = 0, *madt = 0;
    for (u32 at = 36; at + 8 <= u32_at(xsdt + 4); at += 8) {
        const u8 *t = table(u64_at(xsdt + at));
        if (same(t, "FACP", 4)) fadt = t;
        if (same(t, "APIC", 4)) madt = t;
    }
    if (!fadt) stop("fadt");
    if (!madt) stop("madt");
    const u8 *dsdt = table(u64_at(fadt + 140) ? u64_at(fadt + 140) : u32_at(fadt + 40));

    u32 cpus = 0, ioapics = 0;
    for (u32 at = 44; at + 2 <= u32_at(madt + 4) && madt[at + 1]; at += madt[at + 1]) {
        if (madt[at] == 0 && (u32_at(madt + at + 4) & 1)) cpus++;
        if (madt[at] == 1) ioapics++;
    }
    puts("ZX: acpi madt cpus="); put_dec(cpus); puts(" ioapics="); put_dec(ioapics); putc('\n');

    u32 flags = u32_at(fadt + 112);
    puts("ZX: acpi fadt hw_reduced="); put_dec(flags >> 20 & 1);
    puts(" reset_reg_sup="); put_dec(flags >> 10 & 1); putc('\n');

    /* \_S5_: NameOp "_S5_" PackageOp PkgLength NumElements, then the
     * first element (BytePrefix n, or ZeroOp / OneOp). */
    int s5 = -1;
    u32 dsdt_len = u32_at(dsdt + 4);
    for (u32 at = 37; at + 9 <= dsdt_len; at++) {
        if (dsdt[at - 1] != 0x08 || !same(dsdt + at, "_S5_", 4) || dsdt[at + 4] != 0x12) continue;
        const u8 *e = dsdt + at + 7;
        s5 = e[0] == 0x0a ? e[1] : e[0] == 0x01 ? 1 : e[0] == 0x00 ? 0 : -1;
        break;
    }
    if (s5 < 0) stop("_S5_");
    puts("ZX: acpi s5="); put_dec((u64)s5);
    put_gas("sleep_control", fadt + 244);
    put_gas("sleep_status", fadt + 256);
    put_gas("reset", fadt + 116);
    puts(" value="); put_dec(fadt[128]); putc('\n');
    puts("ZX: ready\n");

    const char *mode = find(cmdline, "zx.acpi=");
    char action = mode && (*mode == 'r' || *mode == 'v') ? *mode : 'p';
    if (mode && *mode == 'c') {
        puts("ZX: waiting\n");
        for (action = 0; action != 'p' && action != 'r';) {
            /* Line status bit 0: a byte waits; poll gently (each is an exit). */
            for (volatile u32 delay = 0; delay < 2000; delay++) {}
            if (inb(COM1 + 5) & 1) action = (char)inb(COM1);
        }
    }
    if (action == 'v') {
        puts("ZX: reset vector\n");
        ((void (*)(void))0xffff0)();
    } else if (action == 'r') {
        puts("ZX: reboot\n");
        outb((u16)u64_at(fadt + 116 + 4), fadt[128]);
    } else {
        puts("ZX: poweroff\n");
        outb((u16)u64_at(fadt + 244 + 4), (u8)(s5 << 2 | 1 << 5));
    }
    puts("ZX: still running\n");
}
