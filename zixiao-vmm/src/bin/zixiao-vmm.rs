//! `zixiao-vmm --run-dir DIR --boot JSON [--confinement JSON]
//! [--jail-fd N]`: the per-microVM VMM process. It is normally
//! started by `zixiao_vmm::launch()`, which reads the JSON lines this prints
//! on stdout and, for a jailed VMM, makes its cgroup and its jail and says
//! so on descriptor N.

use std::path::PathBuf;

use zixiao_vmm::jail::LauncherJail;
use zixiao_vmm::{Boot, Confinement, VmmError};

fn main() {
    zixiao_vmm::timeline::mark("main");
    zixiao_vmm::server::end_on_panic();
    one_malloc_arena();
    let mut run_dir: Option<PathBuf> = None;
    let mut boot: Option<String> = None;
    let mut confinement: Option<String> = None;
    let mut launcher_jail: Option<LauncherJail> = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--run-dir") => run_dir = args.next().map(PathBuf::from),
            Some("--boot") => boot = args.next().and_then(|b| b.into_string().ok()),
            Some("--confinement") => confinement = args.next().and_then(|b| b.into_string().ok()),
            Some(LauncherJail::ARG) if launcher_jail.is_none() => {
                let fd = args.next().and_then(|fd| fd.into_string().ok());
                launcher_jail = Some(
                    LauncherJail::try_from(fd.as_deref().unwrap_or_default())
                        .unwrap_or_else(|e| fail(e)),
                );
            }
            Some("--help") | Some("-h") => {
                println!(
                    "usage: zixiao-vmm --run-dir DIR --boot JSON [--confinement JSON] \
                     [--jail-fd N] (normally run by zixiao_vmm::launch)"
                );
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
    // Without the flag: the production default, jailed and filtered.
    let confinement: Confinement = confinement
        .map(|c| {
            serde_json::from_str(&c).map_err(|e| VmmError::invalid("--confinement", e.to_string()))
        })
        .transpose()
        .unwrap_or_else(|e| fail(e))
        .unwrap_or_default();
    // SAFETY: setsid(2) takes no pointers; it detaches this process from the
    // launcher's session so the VMM outlives it (fails harmlessly if already a
    // session leader).
    unsafe { libc::setsid() };
    let mut pid = std::process::id();
    if confinement.jail.is_some() && pid == 1 {
        // Started in its own PID namespace by `launch()`, which knows its
        // pid on the host: that is what the cgroup and pid file name.
        pid = zixiao_vmm::jail::host_pid().unwrap_or(pid);
    } else if confinement.jail.is_some() {
        // Started by hand: the VMM proper is pid 1 of a new PID namespace,
        // a sibling of this process under its parent; this process only
        // makes it.
        match zixiao_vmm::jail::clone_into_pid_namespace() {
            Ok(true) => {
                pid = zixiao_vmm::jail::host_pid().unwrap_or(pid);
                announce(pid);
            }
            Ok(false) => std::process::exit(0),
            Err(err) => fail(err),
        }
    }
    let code = zixiao_vmm::server::run(
        &run_dir,
        boot,
        &confinement,
        pid,
        launcher_jail,
        std::io::stdout(),
    );
    std::process::exit(code);
}

/// Every thread allocates from the main malloc arena. glibc gives each
/// thread that allocates its own arena by default: five more here (vCPU,
/// network receive, vsock, lifecycle, console), each a 64 MiB reservation
/// of which 12-20 KiB got touched for a few KiB of small, short-lived
/// allocations (thread names, seccomp programs). In one arena the main heap
/// grows by ~36 KiB instead, ~40 KiB less peak RSS in all. These threads allocate little and rarely (the vCPU loop not at
/// all), so sharing one arena's lock costs nothing measurable. Must run
/// before the first thread starts. (Other C libraries have no such knob.)
fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt(3) takes two integers; M_ARENA_MAX is a glibc
    // parameter, and a refusal (0) only leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1)
    };
}

/// The first line of a VMM in its own PID namespace: its pid on the host,
/// so the launcher (its parent) can reap it whatever happens next.
fn announce(pid: u32) {
    println!("{}", zixiao_vmm::server::spawned_line(pid));
}

fn fail(err: VmmError) -> ! {
    println!("{}", zixiao_vmm::server::failed_line(&err));
    eprintln!("zixiao-vmm: {err}");
    std::process::exit(2);
}
