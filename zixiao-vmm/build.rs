//! Builds the test guest (guest/guest.S) into a tiny 64-bit ELF kernel with the
//! system `gcc` and `ld`, into OUT_DIR, and exposes its path to the crate as
//! `ZIXIAO_VMM_TEST_GUEST` (empty when the toolchain is missing: the tests that
//! need it then skip and say why).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=guest/guest.S");
    println!("cargo:rerun-if-changed=guest/guest.ld");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("guest.o");
    let elf = out.join("zixiao-test-guest.elf");
    let built = run(Command::new("gcc")
        .args(["-c", "-nostdlib", "-fno-pic", "-o"])
        .arg(&object)
        .arg("guest/guest.S"))
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
        println!("cargo:rustc-env=ZIXIAO_VMM_TEST_GUEST={}", elf.display());
    } else {
        println!("cargo:warning=gcc/ld unavailable: the zixiao-vmm test guest was not built");
        println!("cargo:rustc-env=ZIXIAO_VMM_TEST_GUEST=");
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
