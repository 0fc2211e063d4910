/*
 * Zixiao's test guest: a tiny 64-bit kernel entered through the Linux 64-bit
 * boot protocol (long mode, identity paging, %rsi = boot_params "zero page").
 *
 * It prints to COM1 (0x3f8):
 *   ZX: cmdline=<the command line from boot_params.hdr.cmd_line_ptr>
 *   ZX: initrd=<ramdisk_size> sum=<32-bit sum of the initrd bytes, hex>
 *   ZX: ready                      (the marker benchmarks wait for)
 * and then, by `zx.mode=` on the command line:
 *   poweroff (default)  "ZX: bye", then an i8042 reset (out 0xfe -> 0x64)
 *   loop                "ZX: count=<n>" every LOOP_DELAY iterations, forever
 *   halt                "ZX: halted", then cli; hlt forever
 *   echo                copies every byte received on COM1 back to COM1
 *   dirty               "ZX: count=<n>" once per tick, the counter kept in
 *                       memory (so only a copy of guest memory, not of the
 *                       registers, carries it on); each tick also writes
 *                       `zx.pages=<p>` pages (default 0) of a 16 MiB area
 *                       at 4 MiB, round robin, and waits `zx.delay=<d>`
 *                       loop iterations (default LOOP_DELAY) between ticks:
 *                       the live-migration tests and benchmark set the
 *                       dirty rate with these
 * With `zx.quiet` as the first word of the command line it prints only the
 * marker before its mode (no command line, no initrd line): the guest work
 * of a boot is then the same whatever the VMM appends to the command line
 * (a `virtio_mmio.device=` entry per device), as for the reference guest
 * the issue measured Firecracker with. The check compares the line's first
 * 8 bytes, so it costs the same for every command line.
 * With `zx.smp=1` the boot CPU first starts the CPU with APIC id 1 (INIT +
 * SIPI through the local APIC, a real-mode trampoline copied to 0x6000 that
 * enters long mode on the VMM's page tables), which prints "ZX: cpu1 up".
 *
 * Kernel-mode guest code is emulated on software-nested KVM (~1 us per
 * instruction), so everything here is kept to a few instructions per step.
 */
#define COM1 0x3f8
#define LOOP_DELAY 20000
#define ECHO_DELAY 2000

        .code64
        .section .text
        .globl _start
_start:
        cli
        lea     stack_top(%rip), %rsp
        mov     %rsi, %r15                  /* boot_params */

        mov     0x228(%r15), %edi           /* hdr.cmd_line_ptr */
        mov     %rdi, %r14
        test    %rdi, %rdi
        jz      1f
        movabs  $0x74656975712e787a, %rax   /* "zx.quiet", little-endian */
        cmp     (%rdi), %rax
        je      quiet
1:      lea     s_cmdline(%rip), %rdi
        call    puts
        mov     0x228(%r15), %edi           /* hdr.cmd_line_ptr */
        mov     %rdi, %r14
        test    %rdi, %rdi
        jz      1f
        call    puts
1:      call    newline

        mov     0x218(%r15), %esi           /* hdr.ramdisk_image */
        mov     0x21c(%r15), %ecx           /* hdr.ramdisk_size */
        mov     %rcx, %r13
        xor     %ebx, %ebx
        test    %ecx, %ecx
        jz      3f
2:      movzbl  (%rsi), %eax
        add     %eax, %ebx
        inc     %rsi
        dec     %ecx
        jnz     2b
3:      lea     s_initrd(%rip), %rdi
        call    puts
        mov     %r13, %rdi
        call    put_dec
        lea     s_sum(%rip), %rdi
        call    puts
        mov     %ebx, %edi
        call    put_hex32
        call    newline
quiet:  lea     s_ready(%rip), %rdi
        call    puts

        mov     %r14, %rdi
        lea     s_smp(%rip), %rsi
        call    find_opt
        cmp     $'1', %al
        jne     1f
        call    start_ap
1:      mov     %r14, %rdi
        lea     s_key(%rip), %rsi
        call    find_opt
        cmp     $'l', %al
        je      mode_loop
        cmp     $'h', %al
        je      mode_halt
        cmp     $'e', %al
        je      mode_echo
        cmp     $'d', %al
        je      mode_dirty

mode_poweroff:
        lea     s_bye(%rip), %rdi
        call    puts
        mov     $0xfe, %al
        out     %al, $0x64                  /* i8042 pulse reset line */
1:      hlt
        jmp     1b

mode_halt:
        lea     s_halt(%rip), %rdi
        call    puts
1:      cli
        hlt
        jmp     1b

mode_loop:
        xor     %r12d, %r12d
1:      mov     $LOOP_DELAY, %ecx
2:      dec     %ecx
        jnz     2b
        inc     %r12
        lea     s_count(%rip), %rdi
        call    puts
        mov     %r12, %rdi
        call    put_dec
        call    newline
        jmp     1b

mode_echo:
        lea     s_echo(%rip), %rdi
        call    puts
1:      mov     $(COM1 + 5), %dx            /* LSR */
        in      %dx, %al
        test    $1, %al                     /* data ready */
        jz      2f
        mov     $COM1, %dx
        in      %dx, %al
        out     %al, %dx
        jmp     1b
2:      mov     $ECHO_DELAY, %ecx
3:      dec     %ecx
        jnz     3b
        jmp     1b

#define DIRTY_BASE 0x400000
#define DIRTY_END 0x1400000
mode_dirty:
        mov     %r14, %rdi
        lea     s_pages(%rip), %rsi
        call    opt_dec
        mov     %rax, %r13                  /* pages per tick */
        mov     %r14, %rdi
        lea     s_delay(%rip), %rsi
        call    opt_dec
        test    %rax, %rax
        jnz     1f
        mov     $LOOP_DELAY, %eax
1:      mov     %rax, %r12                  /* delay per tick */
        mov     $DIRTY_BASE, %rbx           /* next page to dirty */
2:      mov     %r12, %rcx
3:      dec     %rcx
        jnz     3b
        incq    counter(%rip)
        mov     counter(%rip), %rax
        mov     %r13, %rcx
        test    %rcx, %rcx
        jz      5f
4:      mov     %rax, (%rbx)
        add     $4096, %rbx
        cmp     $DIRTY_END, %rbx
        jb      6f
        mov     $DIRTY_BASE, %rbx
6:      dec     %rcx
        jnz     4b
5:      lea     s_count(%rip), %rdi
        call    puts
        mov     counter(%rip), %rdi
        call    put_dec
        call    newline
        jmp     2b

/* opt_dec(%rdi = command line or 0, %rsi = key) -> %rax = the decimal
 * value after key, 0 when absent */
opt_dec:
        call    find_opt
        xor     %eax, %eax
        test    %rdi, %rdi
        jz      2f
        cmpb    $0, (%rdi)
        jz      2f
1:      movzbl  (%r8), %ecx
        sub     $'0', %ecx
        cmp     $9, %ecx
        ja      2f
        imul    $10, %rax, %rax
        add     %rcx, %rax
        inc     %r8
        jmp     1b
2:      ret

/* puts(%rdi = NUL-terminated string) */
puts:
        mov     $COM1, %dx
1:      movb    (%rdi), %al
        test    %al, %al
        jz      2f
        out     %al, %dx
        inc     %rdi
        jmp     1b
2:      ret

newline:
        mov     $COM1, %dx
        mov     $'\n', %al
        out     %al, %dx
        ret

/* put_dec(%rdi = unsigned value) */
put_dec:
        mov     %rdi, %rax
        lea     numbuf_end(%rip), %rsi
        movb    $0, (%rsi)
        mov     $10, %rcx
1:      xor     %edx, %edx
        div     %rcx
        add     $'0', %dl
        dec     %rsi
        mov     %dl, (%rsi)
        test    %rax, %rax
        jnz     1b
        mov     %rsi, %rdi
        jmp     puts

/* put_hex32(%edi = value): exactly 8 lowercase hex digits */
put_hex32:
        mov     %edi, %eax
        lea     numbuf_end(%rip), %rsi
        movb    $0, (%rsi)
        lea     hexdigits(%rip), %r8
        mov     $8, %ecx
1:      mov     %eax, %edx
        and     $0xf, %edx
        movb    (%r8,%rdx), %dl
        dec     %rsi
        mov     %dl, (%rsi)
        shr     $4, %eax
        dec     %ecx
        jnz     1b
        mov     %rsi, %rdi
        jmp     puts

/* find_opt(%rdi = command line or 0, %rsi = key) -> %al = first byte after key, or 0 */
find_opt:
        mov     %rsi, %r9
        test    %rdi, %rdi
        jz      9f
1:      movb    (%rdi), %al
        test    %al, %al
        jz      9f
        mov     %r9, %rsi
        mov     %rdi, %r8
2:      movb    (%rsi), %cl
        test    %cl, %cl
        jz      8f
        cmpb    %cl, (%r8)
        jne     3f
        inc     %rsi
        inc     %r8
        jmp     2b
3:      inc     %rdi
        jmp     1b
8:      movb    (%r8), %al
        ret
9:      xor     %eax, %eax
        ret

/* start_ap: wakes APIC id 1 and waits (bounded) until it reports in. */
#define LAPIC 0xfee00000
#define TRAMPOLINE 0x6000
start_ap:
        lea     ap_tramp(%rip), %rsi
        mov     $TRAMPOLINE, %rdi
        mov     $(ap_tramp_end - ap_tramp), %ecx
        rep movsb
        mov     $LAPIC, %r9d
        movl    $0x1ff, 0xf0(%r9)           /* SVR: APIC enabled */
        movl    $0x01000000, 0x310(%r9)     /* ICR high: APIC id 1 */
        movl    $0x00004500, 0x300(%r9)     /* INIT */
        movl    $0x01000000, 0x310(%r9)
        movl    $(0x4600 | (TRAMPOLINE >> 12)), 0x300(%r9) /* SIPI */
        mov     $200000, %ecx
1:      cmpl    $0, ap_flag(%rip)
        jne     2f
        dec     %ecx
        jnz     1b
        lea     s_ap_timeout(%rip), %rdi
        jmp     puts
2:      ret

/* The AP runs this in real mode at TRAMPOLINE (CS = TRAMPOLINE >> 4, IP = 0). */
        .code16
ap_tramp:
        cli
        mov     %cs, %ax
        mov     %ax, %ds
        lgdtl   (ap_gdt_desc - ap_tramp)
        mov     $0x20, %eax                 /* CR4.PAE */
        mov     %eax, %cr4
        mov     $0x9000, %eax               /* the VMM's PML4 */
        mov     %eax, %cr3
        mov     $0xc0000080, %ecx           /* EFER.LME */
        rdmsr
        or      $0x100, %eax
        wrmsr
        mov     $0x80000001, %eax           /* CR0.PG | CR0.PE */
        mov     %eax, %cr0
        .byte   0x66, 0xea                  /* ljmpl $0x8, $ap_main */
        .long   ap_main
        .word   0x8
ap_gdt_desc:
        .word   31
        .long   0x500                       /* the VMM's GDT */
ap_tramp_end:
        .code64

ap_main:
        mov     $0x10, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        lea     ap_stack_top(%rip), %rsp
        lea     s_ap(%rip), %rdi
        call    puts
        movl    $1, ap_flag(%rip)
1:      cli
        hlt
        jmp     1b

        .section .rodata
s_smp:      .asciz "zx.smp="
s_ap:       .asciz "ZX: cpu1 up\n"
s_ap_timeout: .asciz "ZX: cpu1 timeout\n"
s_cmdline:  .asciz "ZX: cmdline="
s_initrd:   .asciz "ZX: initrd="
s_sum:      .asciz " sum="
s_ready:    .asciz "ZX: ready\n"
s_bye:      .asciz "ZX: bye\n"
s_halt:     .asciz "ZX: halted\n"
s_echo:     .asciz "ZX: echo\n"
s_count:    .asciz "ZX: count="
s_key:      .asciz "zx.mode="
s_pages:    .asciz "zx.pages="
s_delay:    .asciz "zx.delay="
hexdigits:  .ascii "0123456789abcdef"

        .section .bss
        .balign 16
numbuf:     .skip 32
numbuf_end: .skip 16
stack:      .skip 4096
stack_top:
ap_stack:   .skip 1024
ap_stack_top:
ap_flag:    .skip 4
        .balign 8
counter:    .skip 8
