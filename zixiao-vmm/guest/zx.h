/*
 * What Zixiao's freestanding C test guests share: the fixed-width types,
 * the entry point (`_start`: a stack, then `zx_main(boot_params)`, then
 * halt), the memory functions gcc may call, port I/O and COM1 output, and
 * a substring search for the command line. Included once per guest.
 */

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define COM1 0x3f8

void zx_main(u8 *boot_params);

__asm__(".section .text\n"
        ".globl _start\n"
        "_start:\n"
        "  cli\n"
        "  lea stack_top(%rip), %rsp\n"
        "  mov %rsi, %rdi\n"
        "  call zx_main\n"
        "1: hlt\n"
        "  jmp 1b\n");

u8 zx_stack[8192] __attribute__((aligned(16), used));
__asm__(".globl stack_top\n.set stack_top, zx_stack + 8192\n");

/* gcc may call these for struct copies and array initialisers. */
void *memset(void *d, int c, u64 n) {
    u8 *p = d;
    while (n--) *p++ = (u8)c;
    return d;
}
void *memcpy(void *d, const void *s, u64 n) {
    u8 *p = d;
    const u8 *q = s;
    while (n--) *p++ = *q++;
    return d;
}

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static void putc(char c) { outb(COM1, (u8)c); }
static void puts(const char *s) { while (*s) putc(*s++); }
static void put_dec(u64 v) {
    char buf[24];
    int i = 0;
    do { buf[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i) putc(buf[--i]);
}

/* The first occurrence of `key` in `s` at or after `s`, or 0. */
static const char *find(const char *s, const char *key) {
    for (; *s; s++) {
        const char *a = s, *b = key;
        while (*b && *a == *b) { a++; b++; }
        if (!*b) return a;
    }
    return 0;
}
