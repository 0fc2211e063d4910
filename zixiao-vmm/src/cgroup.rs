//! The cgroup of a jailed VMM: `zixiao-vmm/vmm-<pid>` under the root of the
//! memory and pids hierarchies (cgroup v1, one hierarchy per controller) or
//! of the unified hierarchy (cgroup v2), capping the VMM's memory and tasks.
//! `launch()` creates it and sets its limits right after the VMM's exec,
//! while the VMM starts, and the VMM moves itself in once told (a VMM
//! started by hand creates its own too, while still root); whoever reaps
//! the VMM removes it, and a launcher process's first jailed launch
//! removes the groups of VMMs that are gone.

use std::path::{Path, PathBuf};

use crate::api::Boot;
use crate::jail::JailConfig;
use crate::{snapshot, VmmError};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent group of every VMM's group.
pub(crate) const PARENT: &str = "zixiao-vmm";

/// The limits of one VMM's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) memory_bytes: u64,
    pub(crate) pids: u64,
}

impl Limits {
    /// The limits of the VMM jailed as `jail` that boots `boot`: the
    /// guest's memory plus the jail's overhead; a task per vCPU, one for
    /// the devices' I/O thread (network cards' and vsock's) if there is any
    /// such device, plus the fixed ones.
    /// (KVM's own per-VM worker thread counts too: without room for it the
    /// first KVM_RUN fails with EAGAIN.)
    pub(crate) fn of(boot: &Boot, jail: &JailConfig) -> Limits {
        let (memory_bytes, vcpus, device_threads) = match boot {
            Boot::Fresh(config) | Boot::Incoming(config) => (
                config.memory_bytes(),
                config.vcpus,
                usize::from(!config.nets.is_empty() || config.vsock.is_some()),
            ),
            Boot::Restore { snapshot_dir } => {
                // Sized from memory.bin's size, which the restore checks
                // against the state and the memory limit once parsed; room
                // for the devices' I/O thread whether or not the snapshot
                // has a device that needs it (a task the VMM may not use,
                // rather than a read of the unvalidated state).
                let memory = std::fs::metadata(snapshot_dir.join(snapshot::MEMORY_FILE))
                    .map(|m| m.len())
                    .unwrap_or(0)
                    .min(crate::MAX_MEMORY_MIB << 20);
                (memory, crate::MAX_VCPUS, 1)
            }
        };
        Limits {
            memory_bytes: memory_bytes + (jail.memory_overhead_mib << 20),
            pids: u64::from(vcpus) + device_threads as u64 + u64::from(jail.extra_pids),
        }
    }
}

/// Which cgroup layout this host has.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Layout {
    /// cgroup v2: one hierarchy at /sys/fs/cgroup.
    Unified(PathBuf),
    /// cgroup v1: the memory and pids hierarchies.
    Legacy { memory: PathBuf, pids: PathBuf },
}

/// The host's layout, probed once per process (a launcher asks at every
/// launch) once it was found.
fn layout() -> Result<Layout, VmmError> {
    static FOUND: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();
    if let Some(found) = FOUND.get() {
        return Ok(found.clone());
    }
    let found = probe()?;
    Ok(FOUND.get_or_init(|| found).clone())
}

fn probe() -> Result<Layout, VmmError> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return Ok(Layout::Unified(root.to_path_buf()));
    }
    let (memory, pids) = (root.join("memory"), root.join("pids"));
    if memory.join("cgroup.procs").exists() && pids.join("cgroup.procs").exists() {
        return Ok(Layout::Legacy { memory, pids });
    }
    Err(VmmError::Unavailable {
        message: format!(
            "jail: no cgroup v2 at {CGROUP_ROOT} and no cgroup v1 memory and pids hierarchies under it"
        ),
    })
}

fn name(pid: u32) -> String {
    format!("vmm-{pid}")
}

fn write(path: &Path, value: &str) -> Result<(), VmmError> {
    std::fs::write(path, value).map_err(|e| VmmError::Unavailable {
        message: format!("jail: writing {value:?} to {}: {e}", path.display()),
    })
}

fn mkdir(path: &Path) -> Result<(), VmmError> {
    std::fs::create_dir_all(path).map_err(|e| VmmError::Unavailable {
        message: format!("jail: creating cgroup {}: {e}", path.display()),
    })
}

/// Creates the group of the VMM with host pid `pid`, sets `limits` and moves
/// the calling process, which must be single-threaded, into it (before it
/// allocates guest memory): what a VMM started by hand does itself.
pub(crate) fn join(pid: u32, limits: Limits) -> Result<(), VmmError> {
    create(pid, limits)?;
    enter(pid)
}

/// Creates the group of the VMM with host pid `pid` (one per hierarchy)
/// and sets `limits`. Nothing is moved into it yet: see [`attach`]. On an
/// error the caller removes what was made with [`remove`].
pub(crate) fn create(pid: u32, limits: Limits) -> Result<(), VmmError> {
    match layout()? {
        Layout::Unified(root) => {
            let parent = root.join(PARENT);
            // Controllers reach a group only through its parent's subtree_control.
            write(&root.join("cgroup.subtree_control"), "+memory +pids")?;
            mkdir(&parent)?;
            write(&parent.join("cgroup.subtree_control"), "+memory +pids")?;
            let group = parent.join(name(pid));
            mkdir(&group)?;
            write(&group.join("memory.max"), &limits.memory_bytes.to_string())?;
            write(&group.join("memory.swap.max"), "0").ok();
            write(&group.join("pids.max"), &limits.pids.to_string())
        }
        Layout::Legacy { memory, pids } => {
            let mem_group = memory.join(PARENT).join(name(pid));
            mkdir(&mem_group)?;
            write(
                &mem_group.join("memory.limit_in_bytes"),
                &limits.memory_bytes.to_string(),
            )?;
            let pids_group = pids.join(PARENT).join(name(pid));
            mkdir(&pids_group)?;
            write(&pids_group.join("pids.max"), &limits.pids.to_string())
        }
    }
}

/// Moves the calling process, which must be single-threaded (a VMM before
/// it starts any thread), into the group of the VMM with host pid `pid`,
/// made by [`create`]. The process moves itself: on cgroup v1, moving
/// another process's thread takes the kernel's global threadgroup lock
/// (an RCU grace period, ~4-8 ms here, measured from the launcher), moving
/// one's own does not.
pub(crate) fn enter(pid: u32) -> Result<(), VmmError> {
    // "0" is the writing process, whatever its PID namespace.
    match layout()? {
        Layout::Unified(root) => {
            write(&root.join(PARENT).join(name(pid)).join("cgroup.procs"), "0")
        }
        Layout::Legacy { memory, pids } => {
            // Single-threaded, moving its one thread (`tasks`) moves the
            // process. `cgroup.procs` would take the global lock too.
            for hierarchy in [memory, pids] {
                write(&hierarchy.join(PARENT).join(name(pid)).join("tasks"), "0")?;
            }
            Ok(())
        }
    }
}

/// The directories of the group of VMM `pid` (one per hierarchy).
fn groups(pid: u32) -> Vec<PathBuf> {
    match layout() {
        Ok(Layout::Unified(root)) => vec![root.join(PARENT).join(name(pid))],
        Ok(Layout::Legacy { memory, pids }) => vec![
            memory.join(PARENT).join(name(pid)),
            pids.join(PARENT).join(name(pid)),
        ],
        Err(_) => Vec::new(),
    }
}

/// Removes the group of VMM `pid` once it has exited. Idempotent; a group
/// that still has a process stays.
pub(crate) fn remove(pid: u32) {
    for group in groups(pid) {
        let _ = std::fs::remove_dir(group);
    }
}

/// Removes the groups of VMMs that no longer run (their launcher was gone
/// when they exited). `/proc` must be the host's (the launcher's).
pub(crate) fn sweep() {
    let parents = match layout() {
        Ok(Layout::Unified(root)) => vec![root.join(PARENT)],
        Ok(Layout::Legacy { memory, pids }) => vec![memory.join(PARENT), pids.join(PARENT)],
        Err(_) => return,
    };
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let pid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmm-"))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }
}

/// The group files of VMM `pid` that hold its limits, for tests and `stats`.
#[doc(hidden)]
pub fn limit_files(pid: u32) -> Vec<PathBuf> {
    match layout() {
        Ok(Layout::Unified(root)) => {
            let g = root.join(PARENT).join(name(pid));
            vec![g.join("memory.max"), g.join("pids.max")]
        }
        Ok(Layout::Legacy { memory, pids }) => vec![
            memory
                .join(PARENT)
                .join(name(pid))
                .join("memory.limit_in_bytes"),
            pids.join(PARENT).join(name(pid)).join("pids.max"),
        ],
        Err(_) => Vec::new(),
    }
}
