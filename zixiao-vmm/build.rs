//! Builds the test guests into tiny 64-bit ELF kernels with the system `gcc`
//! and `ld`, into OUT_DIR: guest/guest.S as `ZIXIAO_VMM_TEST_GUEST` and the
//! freestanding C virtio guest guest/blk.c (block, net and vsock) as
//! `ZIXIAO_VMM_VIRTIO_GUEST` and the C ACPI guest guest/acpi.c (tables,
//! power-off, reboot) as `ZIXIAO_VMM_ACPI_GUEST` and the C balloon guest
//! guest/balloon.c as `ZIXIAO_VMM_BALLOON_GUEST` (the C guests include
//! guest/zx.h, the virtio ones guest/virtq.h)
//! (each empty when the toolchain is missing: the tests that need it then
//! skip and say why).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=guest/guest.S");
    println!("cargo:rerun-if-changed=guest/blk.c");
    println!("cargo:rerun-if-changed=guest/acpi.c");
    println!("cargo:rerun-if-changed=guest/balloon.c");
    println!("cargo:rerun-if-changed=guest/zx.h");
    println!("cargo:rerun-if-changed=guest/virtq.h");
    println!("cargo:rerun-if-changed=guest/guest.ld");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    build_guest(
        &out,
        "guest.S",
        &[],
        "zixiao-test-guest",
        "ZIXIAO_VMM_TEST_GUEST",
    );
    build_guest(
        &out,
        "blk.c",
        C_FLAGS,
        "zixiao-virtio-guest",
        "ZIXIAO_VMM_VIRTIO_GUEST",
    );
    build_guest(
        &out,
        "acpi.c",
        C_FLAGS,
        "zixiao-acpi-guest",
        "ZIXIAO_VMM_ACPI_GUEST",
    );
    build_guest(
        &out,
        "balloon.c",
        C_FLAGS,
        "zixiao-balloon-guest",
        "ZIXIAO_VMM_BALLOON_GUEST",
    );
}

/// The C guests: freestanding, no SSE (the boot path does not enable it),
/// no red zone, no stack protector or unwind tables (there is no runtime).
const C_FLAGS: &[&str] = &[
    "-O2",
    "-ffreestanding",
    "-fno-pie",
    "-mgeneral-regs-only",
    "-mno-red-zone",
    "-fno-stack-protector",
    "-fno-asynchronous-unwind-tables",
    "-fno-tree-loop-distribute-patterns",
];

/// Compiles `guest/SOURCE` (with extra `flags`) and links it by guest.ld
/// into OUT_DIR/NAME.elf, exported to the crate as `ENV`.
fn build_guest(out: &std::path::Path, source: &str, flags: &[&str], name: &str, env: &str) {
    let object = out.join(format!("{name}.o"));
    let elf = out.join(format!("{name}.elf"));
    let built = run(Command::new("gcc")
        .args(["-c", "-nostdlib", "-fno-pic"])
        .args(flags)
        .arg("-o")
        .arg(&object)
        .arg(format!("guest/{source}")))
        && run(Command::new("ld")
            .args([
                "-static",
                "-nostdlib",
                "--build-id=none",
                "-z",
                "noexecstack",
                "--no-warn-rwx-segments",
                "-T",
            ])
            .arg("guest/guest.ld")
            .arg("-o")
            .arg(&elf)
            .arg(&object));
    if built {
        println!("cargo:rustc-env={env}={}", elf.display());
    } else {
        println!("cargo:warning=gcc/ld unavailable: the zixiao-vmm guest {source} was not built");
        println!("cargo:rustc-env={env}=");
    }
}

fn run(command: &mut Command) -> bool {
    match command.status() {
        Ok(status) if status.success() => true,
        Ok(status) => {
            println!("cargo:warning={command:?} failed: {status}");
            false
        }
        Err(err) => {
            println!("cargo:warning={command:?} could not run: {err}");
            false
        }
    }
}
