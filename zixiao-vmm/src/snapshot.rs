//! The snapshot format, version 1: a directory with
//! - `state.json`: `{"magic": "zixiao-vmm-snapshot", "version": 1, "config": .., "memory_bytes": .., "machine": ..}`
//!   (VM config, irqchip, PIT, clock, serial and every vCPU's state, via serde);
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

use crate::machine::MachineState;
use crate::{VmConfig, VmmError};

/// Identifies a Zixiao VMM snapshot.
pub const SNAPSHOT_MAGIC: &str = "zixiao-vmm-snapshot";
/// The format version this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
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
/// yet trusted: `state` is the raw state.json.
pub(crate) struct SnapshotFiles {
    state: Vec<u8>,
    /// memory.bin, or why it could not be opened (reported after the
    /// state's magic and version: a directory that is no snapshot says so).
    memory: Result<File, VmmError>,
}

/// Opens the snapshot in `dir`: reads state.json (at most
/// [`MAX_STATE_BYTES`]) and opens memory.bin.
pub(crate) fn open(dir: &Path) -> Result<SnapshotFiles, VmmError> {
    let bad =
        |reason: String| VmmError::invalid("snapshot_dir", format!("{}: {reason}", dir.display()));
    let state_path = dir.join(STATE_FILE);
    let state_file = File::open(&state_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => VmmError::NotFound {
            message: format!("snapshot {} (no {STATE_FILE})", dir.display()),
        },
        _ => bad(format!("cannot read {STATE_FILE}: {e}")),
    })?;
    let len = state_file
        .metadata()
        .map_err(|e| bad(format!("{STATE_FILE}: {e}")))?
        .len();
    if len > MAX_STATE_BYTES {
        return Err(VmmError::invalid(
            "state.json",
            format!("{len} bytes, more than the {MAX_STATE_BYTES} a snapshot state may have"),
        ));
    }
    let mut state = Vec::with_capacity(len as usize);
    (&state_file)
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut state)
        .map_err(|e| bad(format!("cannot read {STATE_FILE}: {e}")))?;
    if state.len() as u64 > MAX_STATE_BYTES {
        return Err(VmmError::invalid(
            "state.json",
            format!("more than the {MAX_STATE_BYTES} bytes a snapshot state may have"),
        ));
    }
    let memory = File::open(dir.join(MEMORY_FILE)).map_err(|e| bad(format!("{MEMORY_FILE}: {e}")));
    Ok(SnapshotFiles { state, memory })
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
    let value: serde_json::Value = serde_json::from_slice(&files.state)
        .map_err(|e| bad(format!("{STATE_FILE} is not JSON: {e}")))?;
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
            },
        }
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
            cases: 256,
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
