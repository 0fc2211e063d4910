//! The snapshot format, version 2: a directory with
//! - `state.json`: `{"magic": "zixiao-vmm-snapshot", "version": 2, "config": .., "memory_bytes": .., "machine": ..}`
//!   (VM config, irqchip, PIT, clock, serial, every vCPU's state and, new in
//!   version 2, `config.disks` and `machine.virtio`: each virtio device's
//!   transport and queues, via serde);
//! - `memory.bin`: guest memory, raw, as a sparse file (all-zero pages are holes).
//!
//! Restoring maps `memory.bin` copy-on-write (MAP_PRIVATE), so a restore costs
//! only the pages the guest touches; `memory.bin` must therefore not be
//! rewritten or truncated while a VM restored from it runs (unlinking is fine).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use kvm_bindings::{KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE};

use crate::config::{DiskConfig, NetConfig};
use crate::machine::MachineState;
use crate::{VmConfig, VmmError};

/// Identifies a Zixiao VMM snapshot.
pub const SNAPSHOT_MAGIC: &str = "zixiao-vmm-snapshot";
/// The format version this build writes. Version 2 added virtio devices.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The oldest format version this build restores: version 1 snapshots have
/// no disks and no device states, which is what their absence decodes to.
pub const SNAPSHOT_MIN_VERSION: u32 = 1;
pub(crate) const STATE_FILE: &str = "state.json";
pub(crate) const MEMORY_FILE: &str = "memory.bin";
/// Where the client has the VMM write the state before renaming it.
pub(crate) const STATE_TMP_FILE: &str = ".state.json.tmp";
/// The largest state.json a restore reads: 32 vCPUs of state need ~2 MiB.
pub const MAX_STATE_BYTES: u64 = 16 << 20;
/// The 8250's receive FIFO.
const SERIAL_FIFO: usize = 64;
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

impl SnapshotFile {
    /// The state of a VM of `config` whose machine is `machine`, as a
    /// snapshot of this format version would hold it (a migration's final
    /// state is checked as a snapshot's is).
    pub(crate) fn new(config: VmConfig, machine: MachineState) -> SnapshotFile {
        SnapshotFile {
            magic: SNAPSHOT_MAGIC.to_string(),
            version: SNAPSHOT_VERSION,
            memory_bytes: config.memory_bytes(),
            config,
            machine,
        }
    }
}

/// Where a snapshot goes: the files the client created in `dir`.
pub(crate) struct Target<'a> {
    /// Names the snapshot in errors.
    pub dir: &'a Path,
    /// The state file (renamed to state.json by the client afterwards).
    pub state: File,
    /// memory.bin.
    pub memory: File,
}

/// Writes `machine` state into `state_file` and guest `memory` into
/// `memory_file`, both created (empty) by the client in the snapshot
/// directory and handed over the API socket; the client renames the state
/// file into place once this returns Ok. `populated` (one flag per 4 KiB
/// page), when known, lets it skip pages that were never populated: they
/// read as zero and would only be faulted in.
pub(crate) fn write(
    target: Target<'_>,
    config: &VmConfig,
    machine: MachineState,
    memory: &GuestMemoryMmap,
    memory_bytes: u64,
    populated: Option<&[bool]>,
) -> Result<(), VmmError> {
    let Target {
        dir,
        state: mut state_file,
        memory: file,
    } = target;
    let io = |what: &str, e: std::io::Error| {
        VmmError::internal(format!("snapshot {what} in {}", dir.display()), e)
    };
    file.set_len(0).map_err(|e| io(MEMORY_FILE, e))?;
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
    state_file.set_len(0).map_err(|e| io(STATE_FILE, e))?;
    state_file.write_all(&json).map_err(|e| io(STATE_FILE, e))?;
    state_file.sync_all().map_err(|e| io(STATE_FILE, e))
}

/// A snapshot's files, opened (as root, before the VMM drops it) but not
/// yet read: state.json is read when it is parsed, after the VMM is in its
/// cgroup (its bytes are charged there).
pub(crate) struct SnapshotFiles {
    /// state.json, checked to be at most [`MAX_STATE_BYTES`] long.
    state: File,
    /// memory.bin, or why it could not be opened (reported after the
    /// state's magic and version: a directory that is no snapshot says so).
    memory: Result<File, VmmError>,
}

/// Opens the snapshot in `dir`: state.json (refused from its size when
/// larger than [`MAX_STATE_BYTES`]) and memory.bin.
pub(crate) fn open(dir: &Path) -> Result<SnapshotFiles, VmmError> {
    let bad =
        |reason: String| VmmError::invalid("snapshot_dir", format!("{}: {reason}", dir.display()));
    let state_path = dir.join(STATE_FILE);
    let state = File::open(&state_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => VmmError::NotFound {
            message: format!("snapshot {} (no {STATE_FILE})", dir.display()),
        },
        _ => bad(format!("cannot read {STATE_FILE}: {e}")),
    })?;
    let len = state
        .metadata()
        .map_err(|e| bad(format!("{STATE_FILE}: {e}")))?
        .len();
    if len > MAX_STATE_BYTES {
        return Err(too_long(format!("{len} bytes")));
    }
    let memory = File::open(dir.join(MEMORY_FILE)).map_err(|e| bad(format!("{MEMORY_FILE}: {e}")));
    Ok(SnapshotFiles { state, memory })
}

fn too_long(size: String) -> VmmError {
    VmmError::invalid(
        "state.json",
        format!("{size}, more than the {MAX_STATE_BYTES} bytes a snapshot state may have"),
    )
}

/// The bytes of the open state.json: at most [`MAX_STATE_BYTES`], whatever
/// it grew to since it was opened.
fn read_state(dir: &Path, file: &File) -> Result<Vec<u8>, VmmError> {
    let mut state = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut state)
        .map_err(|e| {
            VmmError::invalid(
                "snapshot_dir",
                format!("{}: cannot read {STATE_FILE}: {e}", dir.display()),
            )
        })?;
    if state.len() as u64 > MAX_STATE_BYTES {
        return Err(too_long("grown since it was opened".into()));
    }
    Ok(state)
}

/// The disks a snapshot's `state.json` names, read before the jail is
/// built so they can be mounted into it. Nothing here is trusted: the
/// restore validates the whole state later, and the disks are opened only
/// after the VMM dropped its privileges. Unreadable or malformed state
/// gives no disks (the restore then reports what is wrong).
pub(crate) fn disks_in(dir: &Path) -> Vec<DiskConfig> {
    config_list_in(dir, "/config/disks")
}

/// The list at JSON `pointer` of `dir`'s state, read without validation
/// (see [`disks_in`]): empty when unreadable or malformed, and never
/// longer than the devices a microVM can have.
fn config_list_in<T: serde::de::DeserializeOwned>(dir: &Path, pointer: &str) -> Vec<T> {
    let Ok(file) = File::open(dir.join(STATE_FILE)) else {
        return Vec::new();
    };
    let mut state = Vec::new();
    if file.take(MAX_STATE_BYTES).read_to_end(&mut state).is_err() {
        return Vec::new();
    }
    serde_json::from_slice::<serde_json::Value>(&state)
        .ok()
        .and_then(|mut v| v.pointer_mut(pointer).map(serde_json::Value::take))
        .and_then(|list| serde_json::from_value::<Vec<T>>(list).ok())
        .unwrap_or_default()
        .into_iter()
        .take(crate::layout::MAX_DISKS)
        .collect()
}

/// The network cards a snapshot's `state.json` names, read before the jail
/// is built so their TAPs can be attached while the VMM may still do so.
/// Untrusted like [`disks_in`]; the restore checks later that the validated
/// state names the same TAPs. Unreadable state gives no cards.
pub(crate) fn nets_in(dir: &Path) -> Vec<NetConfig> {
    config_list_in(dir, "/config/nets")
}

/// Reads and checks a snapshot's state; maps its memory copy-on-write.
#[cfg(test)]
pub(crate) fn read(dir: &Path) -> Result<(SnapshotFile, GuestMemoryMmap), VmmError> {
    parse(dir, open(dir)?)
}

/// Decodes and validates a snapshot completely (see [`validate`]), then maps
/// its memory copy-on-write. Nothing is allocated or mapped for a size the
/// snapshot claims before that claim has been checked.
pub(crate) fn parse(
    dir: &Path,
    files: SnapshotFiles,
) -> Result<(SnapshotFile, GuestMemoryMmap), VmmError> {
    let bad =
        |reason: String| VmmError::invalid("snapshot_dir", format!("{}: {reason}", dir.display()));
    let state = read_state(dir, &files.state)?;
    let value: serde_json::Value = serde_json::from_slice(&state)
        .map_err(|e| bad(format!("{STATE_FILE} is not JSON: {e}")))?;
    if value.get("magic").and_then(|m| m.as_str()) != Some(SNAPSHOT_MAGIC) {
        return Err(bad("not a zixiao-vmm snapshot (wrong magic)".into()));
    }
    let version = value.get("version").and_then(|v| v.as_u64());
    if !version.is_some_and(|v| {
        (u64::from(SNAPSHOT_MIN_VERSION)..=u64::from(SNAPSHOT_VERSION)).contains(&v)
    }) {
        let found = version.map_or_else(|| "missing".to_string(), |v| v.to_string());
        return Err(bad(format!(
            "snapshot format version {found}, this VMM reads versions \
             {SNAPSHOT_MIN_VERSION} to {SNAPSHOT_VERSION}"
        )));
    }
    if version == Some(1)
        && (value.pointer("/config/disks").is_some() || value.pointer("/machine/virtio").is_some())
    {
        return Err(bad(
            "a version 1 snapshot cannot have disks or virtio devices".to_string(),
        ));
    }
    let state: SnapshotFile =
        serde_json::from_value(value).map_err(|e| bad(format!("corrupt {STATE_FILE}: {e}")))?;
    validate(&state)?;
    let mem_file = files.memory?;
    let len = mem_file
        .metadata()
        .map_err(|e| bad(format!("{MEMORY_FILE}: {e}")))?
        .len();
    if len != state.memory_bytes {
        return Err(VmmError::invalid(
            "memory.bin",
            format!(
                "{len} bytes, the state says {} (memory_bytes)",
                state.memory_bytes
            ),
        ));
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

/// Every count, size and value of a decoded snapshot that the restore
/// relies on, checked before anything is created from it. Errors are
/// `InvalidArgument` naming the field (`machine.vcpus[1].xsave`, ...).
pub(crate) fn validate(state: &SnapshotFile) -> Result<(), VmmError> {
    state.config.validate_limits().map_err(|e| match e {
        VmmError::InvalidArgument { field, reason } => {
            VmmError::invalid(format!("config.{field}"), reason)
        }
        other => other,
    })?;
    let memory = state.memory_bytes;
    if memory != state.config.memory_bytes() {
        return Err(VmmError::invalid(
            "memory_bytes",
            format!(
                "{memory}, but config.memory_mib is {} MiB",
                state.config.memory_mib
            ),
        ));
    }
    let vcpus = &state.machine.vcpus;
    if vcpus.is_empty() {
        return Err(VmmError::invalid(
            "machine.vcpus",
            "empty: a VM has at least one vCPU",
        ));
    }
    if vcpus.len() != usize::from(state.config.vcpus) {
        return Err(VmmError::invalid(
            "machine.vcpus",
            format!(
                "{} vCPU states, but config.vcpus is {}",
                vcpus.len(),
                state.config.vcpus
            ),
        ));
    }
    let m = &state.machine;
    for (field, chip, want) in [
        (
            "machine.pic_master.chip_id",
            &m.pic_master,
            KVM_IRQCHIP_PIC_MASTER,
        ),
        (
            "machine.pic_slave.chip_id",
            &m.pic_slave,
            KVM_IRQCHIP_PIC_SLAVE,
        ),
        ("machine.ioapic.chip_id", &m.ioapic, KVM_IRQCHIP_IOAPIC),
    ] {
        if chip.chip_id != want {
            return Err(VmmError::invalid(
                field,
                format!("{}, expected {want}", chip.chip_id),
            ));
        }
    }
    if state.machine.serial.in_buffer_len() > SERIAL_FIFO {
        return Err(VmmError::invalid(
            "machine.serial.in_buffer",
            format!(
                "{} bytes, more than the UART's {SERIAL_FIFO}-byte FIFO",
                state.machine.serial.in_buffer_len()
            ),
        ));
    }
    crate::virtio::validate_states(
        &state.config.disks,
        &state.config.nets,
        state.config.vsock.is_some(),
        state.config.balloon.as_ref(),
        &state.machine.virtio,
    )?;
    crate::virtio::balloon::validate_state(
        state.config.balloon.as_ref(),
        state.machine.balloon.as_ref(),
        state.config.memory_bytes(),
    )?;
    let msr_count = vcpus[0].msrs.len();
    for (i, vcpu) in vcpus.iter().enumerate() {
        crate::cpu::validate_state(vcpu, msr_count).map_err(|(field, reason)| {
            VmmError::invalid(format!("machine.vcpus[{i}].{field}"), reason)
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::VcpuState;
    use proptest::prelude::*;
    use vm_superio::serial::SerialState;

    /// A structurally valid snapshot of a 16 MiB, `vcpus`-vCPU guest, as KVM
    /// would have it (enough of it for the reader; no KVM needed).
    fn sample(vcpus: u8) -> SnapshotFile {
        let mut config = VmConfig::new("/vmlinux");
        config.vcpus = vcpus;
        config.memory_mib = 16;
        let vcpu = || {
            let mut v = VcpuState {
                cpuid: vec![kvm_bindings::kvm_cpuid_entry2 {
                    function: 0xd,
                    eax: 0x7,
                    ..Default::default()
                }],
                mp_state: Default::default(),
                regs: Default::default(),
                sregs: Default::default(),
                xsave: Default::default(),
                xcrs: Default::default(),
                debugregs: Default::default(),
                lapic: Default::default(),
                msrs: Vec::new(),
                vcpu_events: Default::default(),
            };
            v.xcrs.nr_xcrs = 1;
            v.xcrs.xcrs[0].value = 0x7;
            v.xsave.region[XSTATE_BV_WORD] = 0x3;
            v
        };
        let chip = |chip_id| kvm_bindings::kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        SnapshotFile {
            magic: SNAPSHOT_MAGIC.into(),
            version: SNAPSHOT_VERSION,
            config,
            memory_bytes: 16 << 20,
            machine: MachineState {
                pic_master: chip(KVM_IRQCHIP_PIC_MASTER),
                pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE),
                ioapic: chip(KVM_IRQCHIP_IOAPIC),
                pit: Default::default(),
                clock: Default::default(),
                serial: SerialState::default().into(),
                vcpus: (0..vcpus).map(|_| vcpu()).collect(),
                virtio: Vec::new(),
                balloon: None,
            },
        }
    }

    /// A block device's transport state as a driver left it (queue of 8
    /// at page-aligned addresses, driver running).
    fn block_state(queue_size: u16) -> crate::virtio::TransportState {
        serde_json::from_value(serde_json::json!({
            "device_type": 2, "status": 15, "driver_features": 1u64 << 32,
            "queue_select": 0, "device_features_select": 1, "driver_features_select": 1,
            "interrupt_status": 1, "config_generation": 0,
            "queues": [{"max_size": 256, "size": queue_size, "ready": true,
                        "desc_table": 0x10000, "avail_ring": 0x11000, "used_ring": 0x12000,
                        "next_avail": 3, "next_used": 3, "event_idx": false}]
        }))
        .unwrap()
    }

    /// Stores `value` as a snapshot's state and reads it back.
    fn read_json(value: &serde_json::Value) -> Result<SnapshotFile, VmmError> {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &serde_json::to_vec(value).unwrap(), 16 << 20);
        read(dir.path()).map(|(state, _)| state)
    }

    fn refused(value: &serde_json::Value) -> VmmError {
        read_json(value).err().expect("refused")
    }

    #[test]
    fn a_version_1_snapshot_without_devices_still_restores() {
        let mut v = serde_json::to_value(sample(1)).unwrap();
        v["version"] = 1.into();
        v["config"].as_object_mut().unwrap().remove("disks");
        v["machine"].as_object_mut().unwrap().remove("virtio");
        let state = read_json(&v).unwrap();
        assert!(state.config.disks.is_empty());
        assert!(state.machine.virtio.is_empty());
        // A version 1 file cannot carry what only version 2 has.
        v["machine"]["virtio"] = serde_json::json!([]);
        assert!(refused(&v).to_string().contains("version 1"));
    }

    #[test]
    fn a_newer_or_missing_version_is_refused_saying_which() {
        let mut v = serde_json::to_value(sample(1)).unwrap();
        v["version"] = (SNAPSHOT_VERSION + 1).into();
        let err = refused(&v);
        assert_eq!(err.kind(), zixiao_core::ErrorKind::InvalidArgument);
        let text = err.to_string();
        assert!(
            text.contains("version 3") && text.contains("1 to 2"),
            "{text}"
        );
        v.as_object_mut().unwrap().remove("version");
        assert!(refused(&v).to_string().contains("version missing"));
    }

    #[test]
    fn device_states_must_match_the_disks() {
        let mut s = sample(1);
        s.config.disks = vec![crate::DiskConfig::new("/disk.img")];
        assert_eq!(rejected(&s), "machine.virtio");
        s.machine.virtio = vec![block_state(8)];
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &serde_json::to_vec(&s).unwrap(), 16 << 20);
        assert_eq!(
            read(dir.path()).unwrap().0.machine.virtio,
            vec![block_state(8)]
        );
        s.machine.virtio = vec![block_state(3)];
        assert_eq!(rejected(&s), "machine.virtio[0].queues[0]");
        // A writable disk does not offer VIRTIO_BLK_F_RO (bit 5): a state
        // claiming the driver acknowledged it is refused.
        let bad = serde_json::from_value({
            let mut v = serde_json::to_value(block_state(8)).unwrap();
            v["driver_features"] = ((1u64 << 32) | (1 << 5)).into();
            v
        })
        .unwrap();
        s.machine.virtio = vec![bad];
        assert_eq!(rejected(&s), "machine.virtio[0].driver_features");
    }

    /// XSTATE_BV's low word in `kvm_xsave::region`.
    const XSTATE_BV_WORD: usize = 512 / 4;

    fn store(dir: &Path, state: &[u8], memory_len: u64) {
        std::fs::write(dir.join(STATE_FILE), state).unwrap();
        File::create(dir.join(MEMORY_FILE))
            .unwrap()
            .set_len(memory_len)
            .unwrap();
    }

    fn field_of(err: VmmError) -> String {
        match err {
            VmmError::InvalidArgument { field, .. } => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn rejected(state: &SnapshotFile) -> String {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &serde_json::to_vec(state).unwrap(), 16 << 20);
        field_of(read(dir.path()).err().expect("rejected"))
    }

    #[test]
    fn a_valid_snapshot_is_read() {
        let dir = tempfile::tempdir().unwrap();
        store(
            dir.path(),
            &serde_json::to_vec(&sample(2)).unwrap(),
            16 << 20,
        );
        let (state, memory) = read(dir.path()).unwrap();
        assert_eq!(state.machine.vcpus.len(), 2);
        assert_eq!(
            vm_memory::GuestMemoryBackend::iter(&memory)
                .map(vm_memory::GuestMemoryRegion::len)
                .sum::<u64>(),
            16 << 20
        );
    }

    #[test]
    fn every_bad_count_size_and_area_names_its_field() {
        let mut s = sample(1);
        s.machine.vcpus.clear();
        assert_eq!(rejected(&s), "machine.vcpus");

        let mut s = sample(2);
        s.config.vcpus = 1;
        assert_eq!(rejected(&s), "machine.vcpus");

        let mut s = sample(1);
        s.config.vcpus = 200;
        assert_eq!(rejected(&s), "config.vcpus");

        let mut s = sample(1);
        s.memory_bytes = 1 << 60;
        assert_eq!(rejected(&s), "memory_bytes");

        let mut s = sample(1);
        s.config.memory_mib = 1 << 40;
        assert_eq!(rejected(&s), "config.memory_mib");

        let mut s = sample(1);
        s.machine.vcpus[0].cpuid = vec![Default::default(); 1000];
        assert_eq!(rejected(&s), "machine.vcpus[0].cpuid");

        let mut s = sample(2);
        s.machine.vcpus[1].msrs = vec![Default::default(); 3];
        assert_eq!(rejected(&s), "machine.vcpus[1].msrs");

        // An AMX tile area (XSTATE_BV bit 18) from another machine.
        let mut s = sample(1);
        s.machine.vcpus[0].xsave.region[XSTATE_BV_WORD] = 1 << 18 | 0x3;
        assert_eq!(rejected(&s), "machine.vcpus[0].xsave");

        let mut s = sample(1);
        s.machine.vcpus[0].xsave.region[XSTATE_BV_WORD + 3] = 0x8000_0000; // XCOMP_BV compacted
        assert_eq!(rejected(&s), "machine.vcpus[0].xsave");

        let mut s = sample(1);
        s.machine.vcpus[0].xcrs.nr_xcrs = 1000;
        assert_eq!(rejected(&s), "machine.vcpus[0].xcrs");

        let mut s = sample(1);
        s.machine.vcpus[0].mp_state.mp_state = 77;
        assert_eq!(rejected(&s), "machine.vcpus[0].mp_state");

        let mut s = sample(1);
        s.machine.ioapic.chip_id = 0;
        assert_eq!(rejected(&s), "machine.ioapic.chip_id");

        let mut s = sample(1);
        s.machine.serial = SerialState {
            in_buffer: vec![0; 100_000],
            ..SerialState::default()
        }
        .into();
        assert_eq!(rejected(&s), "machine.serial.in_buffer");
    }

    #[test]
    fn memory_that_does_not_match_the_state_is_not_mapped() {
        let dir = tempfile::tempdir().unwrap();
        store(
            dir.path(),
            &serde_json::to_vec(&sample(1)).unwrap(),
            1 << 40, // sparse: claims a terabyte
        );
        assert_eq!(field_of(read(dir.path()).err().unwrap()), "memory.bin");
    }

    #[test]
    fn an_oversized_state_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), b"{}", 16 << 20);
        File::options()
            .write(true)
            .open(dir.path().join(STATE_FILE))
            .unwrap()
            .set_len(MAX_STATE_BYTES + 1) // sparse
            .unwrap();
        assert_eq!(field_of(read(dir.path()).err().unwrap()), "state.json");
    }

    /// What a reader may answer for a damaged snapshot: a clear rejection,
    /// never a panic or another kind of error.
    fn acceptable(result: Result<(SnapshotFile, GuestMemoryMmap), VmmError>) -> bool {
        match result {
            Ok((state, _)) => validate(&state).is_ok(),
            Err(VmmError::InvalidArgument { .. }) => true,
            Err(_) => false,
        }
    }

    proptest! {
        // A fixed budget and seed: the same cases on every run.
        #![proptest_config(ProptestConfig {
            cases: zixiao_testing::fuzz::cases(256),
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7a69_7869),
            ..ProptestConfig::default()
        })]

        #[test]
        fn damaged_state_files_are_rejected_cleanly(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = serde_json::to_vec(&sample(2)).unwrap();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if truncate {
                bytes.truncate(cut.index(bytes.len()));
            }
            let dir = tempfile::tempdir().unwrap();
            store(dir.path(), &bytes, 16 << 20);
            prop_assert!(acceptable(read(dir.path())));
        }

        #[test]
        #[allow(clippy::too_many_arguments)]
        fn absurd_counts_and_sizes_are_rejected_cleanly(
            vcpus in any::<u8>(),
            states in 0usize..5,
            memory_mib in any::<u64>(),
            memory_bytes in any::<u64>(),
            cpuid_entries in 0usize..200,
            msrs in 0usize..300,
            xstate_bv in any::<u32>(),
            xcr0 in any::<u64>(),
            nr_xcrs in any::<u32>(),
        ) {
            let mut s = sample(1);
            s.config.vcpus = vcpus;
            s.config.memory_mib = memory_mib;
            s.memory_bytes = memory_bytes;
            let template = s.machine.vcpus[0].cpuid[0];
            let mut vcpu = s.machine.vcpus.pop().unwrap();
            vcpu.cpuid = vec![template; cpuid_entries];
            vcpu.msrs = vec![Default::default(); msrs];
            vcpu.xsave.region[XSTATE_BV_WORD] = xstate_bv;
            vcpu.xcrs.xcrs[0].value = xcr0;
            vcpu.xcrs.nr_xcrs = nr_xcrs;
            s.machine.vcpus = (0..states).map(|_| {
                let mut v = sample(1).machine.vcpus.pop().unwrap();
                v.cpuid.clone_from(&vcpu.cpuid);
                v.msrs.clone_from(&vcpu.msrs);
                v.xsave.region = vcpu.xsave.region;
                v.xcrs = vcpu.xcrs;
                v
            }).collect();
            let dir = tempfile::tempdir().unwrap();
            // memory.bin as the state claims, when that is small enough to make.
            let len = if memory_bytes <= 64 << 20 { memory_bytes } else { 16 << 20 };
            store(dir.path(), &serde_json::to_vec(&s).unwrap(), len);
            prop_assert!(acceptable(read(dir.path())));
        }
    }
}
