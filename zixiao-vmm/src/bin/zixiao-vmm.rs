//! `zixiao-vmm --run-dir DIR --boot JSON`: the per-microVM VMM process. It is
//! normally started by `zixiao_vmm::launch()`, which reads the one ready line
//! this prints on stdout.

use std::path::PathBuf;

use zixiao_vmm::{Boot, VmmError};

fn main() {
    let mut run_dir: Option<PathBuf> = None;
    let mut boot: Option<String> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--run-dir") => run_dir = args.next().map(PathBuf::from),
            Some("--boot") => boot = args.next().and_then(|b| b.into_string().ok()),
            Some("--help") | Some("-h") => {
                println!("usage: zixiao-vmm --run-dir DIR --boot JSON (normally run by zixiao_vmm::launch)");
                return;
            }
            _ => fail(VmmError::invalid(
                "arguments",
                format!("unknown argument {arg:?}"),
            )),
        }
    }
    let run_dir = run_dir.unwrap_or_else(|| fail(VmmError::invalid("--run-dir", "missing")));
    let boot: Boot = boot
        .ok_or_else(|| VmmError::invalid("--boot", "missing"))
        .and_then(|b| {
            serde_json::from_str(&b).map_err(|e| VmmError::invalid("--boot", e.to_string()))
        })
        .unwrap_or_else(|e| fail(e));
    // SAFETY: setsid(2) takes no pointers; it detaches this process from the
    // launcher's session so the VMM outlives it (fails harmlessly if already a
    // session leader).
    unsafe { libc::setsid() };
    let code = zixiao_vmm::server::run(&run_dir, boot, std::io::stdout());
    std::process::exit(code);
}

fn fail(err: VmmError) -> ! {
    let line = serde_json::to_string(&Err::<u32, _>(err.clone())).unwrap_or_default();
    println!("{line}");
    eprintln!("zixiao-vmm: {err}");
    std::process::exit(2);
}
