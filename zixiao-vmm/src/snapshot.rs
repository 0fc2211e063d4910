//! The snapshot format, version 1: a directory with
//! - `state.json`: `{"magic": "zixiao-vmm-snapshot", "version": 1, "config": .., "memory_bytes": .., "machine": ..}`
//!   (VM config, irqchip, PIT, clock, serial and every vCPU's state, via serde);
//! - `memory.bin`: guest memory, raw, as a sparse file (all-zero pages are holes).
//!
//! Restoring maps `memory.bin` copy-on-write (MAP_PRIVATE), so a restore costs
//! only the pages the guest touches; `memory.bin` must therefore not be
//! rewritten or truncated while a VM restored from it runs (unlinking is fine).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::machine::MachineState;
use crate::{VmConfig, VmmError};

/// Identifies a Zixiao VMM snapshot.
pub const SNAPSHOT_MAGIC: &str = "zixiao-vmm-snapshot";
/// The format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
const STATE_FILE: &str = "state.json";
const MEMORY_FILE: &str = "memory.bin";
const PAGE: usize = 4096;
const CHUNK: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    magic: String,
    version: u32,
    pub config: VmConfig,
    memory_bytes: u64,
    pub machine: MachineState,
}

/// Writes `machine` state and `memory` into `dir` (created if missing).
/// `populated` (one flag per 4 KiB page), when known, lets it skip pages that
/// were never populated: they read as zero and would only be faulted in.
pub(crate) fn write(
    dir: &Path,
    config: &VmConfig,
    machine: MachineState,
    memory: &GuestMemoryMmap,
    memory_bytes: u64,
    populated: Option<&[bool]>,
) -> Result<(), VmmError> {
    let io = |what: &str, e: std::io::Error| {
        VmmError::internal(format!("snapshot {what} in {}", dir.display()), e)
    };
    std::fs::create_dir_all(dir).map_err(|e| io("directory", e))?;
    let mem_path = dir.join(MEMORY_FILE);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&mem_path)
        .map_err(|e| io(MEMORY_FILE, e))?;
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < memory_bytes {
        let len = CHUNK.min((memory_bytes - offset) as usize);
        let first_page = (offset / PAGE as u64) as usize;
        let wanted =
            |i: usize| populated.is_none_or(|p| p.get(first_page + i).copied().unwrap_or(true));
        if (0..len / PAGE).any(wanted) {
            for (i, page) in buf[..len].chunks_mut(PAGE).enumerate() {
                if !wanted(i) {
                    continue;
                }
                let at = offset + (i * PAGE) as u64;
                memory
                    .read_slice(page, GuestAddress(at))
                    .map_err(|e| VmmError::internal("reading guest memory", e))?;
                if page.iter().any(|&b| b != 0) {
                    file.write_all_at(page, at)
                        .map_err(|e| io(MEMORY_FILE, e))?;
                }
            }
        }
        offset += len as u64;
    }
    file.set_len(memory_bytes).map_err(|e| io(MEMORY_FILE, e))?;
    file.sync_all().map_err(|e| io(MEMORY_FILE, e))?;
    let state = SnapshotFile {
        magic: SNAPSHOT_MAGIC.to_string(),
        version: SNAPSHOT_VERSION,
        config: config.clone(),
        memory_bytes,
        machine,
    };
    let json =
        serde_json::to_vec(&state).map_err(|e| VmmError::internal("encoding snapshot", e))?;
    // Written last and renamed into place: a state.json means a complete snapshot.
    let tmp = dir.join(".state.json.tmp");
    let mut f = File::create(&tmp).map_err(|e| io(STATE_FILE, e))?;
    f.write_all(&json).map_err(|e| io(STATE_FILE, e))?;
    f.sync_all().map_err(|e| io(STATE_FILE, e))?;
    std::fs::rename(&tmp, dir.join(STATE_FILE)).map_err(|e| io(STATE_FILE, e))
}

/// Reads and checks a snapshot's state; maps its memory copy-on-write.
pub(crate) fn read(dir: &Path) -> Result<(SnapshotFile, GuestMemoryMmap), VmmError> {
    let bad =
        |reason: String| VmmError::invalid("snapshot_dir", format!("{}: {reason}", dir.display()));
    let state_path = dir.join(STATE_FILE);
    let raw = std::fs::read(&state_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => VmmError::NotFound {
            message: format!("snapshot {} (no {STATE_FILE})", dir.display()),
        },
        _ => bad(format!("cannot read {STATE_FILE}: {e}")),
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| bad(format!("{STATE_FILE} is not JSON: {e}")))?;
    if value.get("magic").and_then(|m| m.as_str()) != Some(SNAPSHOT_MAGIC) {
        return Err(bad("not a zixiao-vmm snapshot (wrong magic)".into()));
    }
    let version = value.get("version").and_then(|v| v.as_u64());
    if version != Some(u64::from(SNAPSHOT_VERSION)) {
        return Err(bad(format!(
            "snapshot format version {version:?}, this VMM reads version {SNAPSHOT_VERSION}"
        )));
    }
    let state: SnapshotFile =
        serde_json::from_value(value).map_err(|e| bad(format!("corrupt {STATE_FILE}: {e}")))?;
    let mem_file =
        File::open(dir.join(MEMORY_FILE)).map_err(|e| bad(format!("{MEMORY_FILE}: {e}")))?;
    let len = mem_file
        .metadata()
        .map_err(|e| bad(format!("{MEMORY_FILE}: {e}")))?
        .len();
    if len != state.memory_bytes || len == 0 {
        return Err(bad(format!(
            "{MEMORY_FILE} has {len} bytes, the state says {}",
            state.memory_bytes
        )));
    }
    let size = usize::try_from(len).map_err(|_| bad("memory too large".into()))?;
    let region = MmapRegionBuilder::new(size)
        .with_file_offset(FileOffset::new(mem_file, 0))
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
        .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
        .build()
        .map_err(|e| VmmError::ResourceExhausted {
            message: format!("cannot map snapshot memory: {e}"),
        })?;
    let region = GuestRegionMmap::new(region, GuestAddress(0))
        .ok_or_else(|| VmmError::internal("snapshot memory", "region out of range"))?;
    let memory = GuestMemoryMmap::from_regions(vec![region])
        .map_err(|e| VmmError::internal("snapshot memory", e))?;
    Ok((state, memory))
}
