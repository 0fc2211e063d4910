//! vCPU set-up and state: CPUID from `KVM_GET_SUPPORTED_CPUID` with the usual
//! fix-ups, boot MSRs, local APIC LINT pins, and the full per-vCPU state a
//! snapshot saves and a restore puts back.

use kvm_bindings::{
    kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd};
use serde::{Deserialize, Serialize};

use crate::boot;
use crate::VmmError;

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmmError {
    move |err| VmmError::internal(what, err)
}

/// The host's supported CPUID, to be specialised per vCPU.
pub(crate) fn supported_cpuid(kvm: &Kvm) -> Result<CpuId, VmmError> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))
}

/// CPUID of vCPU `id` of `count`: APIC ids, logical count, hypervisor bit, no PMU.
pub(crate) fn vcpu_cpuid(base: &CpuId, id: u8, count: u8) -> Result<CpuId, VmmError> {
    let mut entries = base.as_slice().to_vec();
    for entry in entries.iter_mut() {
        match entry.function {
            1 => {
                // EBX[31:24] initial APIC id, EBX[23:16] logical processors.
                entry.ebx =
                    (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                entry.ecx |= 1 << 31; // hypervisor present
                if count > 1 {
                    entry.edx |= 1 << 28; // HTT: more than one logical processor
                }
            }
            0xb | 0x1f => entry.edx = u32::from(id), // x2APIC id
            0xa => {
                // No virtual PMU.
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            _ => {}
        }
    }
    CpuId::from_entries(&entries)
        .map_err(|e| VmmError::internal("building CPUID", format!("{e:?}")))
}

/// Puts a fresh vCPU into the 64-bit boot state (the boot vCPU also gets the
/// entry registers; the others wait for INIT/SIPI like on real hardware).
pub(crate) fn setup_vcpu(
    vcpu: &VcpuFd,
    cpuid: &CpuId,
    boot_entry: Option<u64>,
) -> Result<(), VmmError> {
    vcpu.set_cpuid2(cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
    let entries: Vec<kvm_msr_entry> = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, 1),          // fast strings
        (MSR_MTRR_DEF_TYPE, (1 << 11) | 6), // MTRRs on, write-back
    ]
    .iter()
    .map(|&(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect();
    let msrs =
        Msrs::from_entries(&entries).map_err(|e| VmmError::internal("MSRs", format!("{e:?}")))?;
    vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
    set_lint(vcpu)?;
    if let Some(entry) = boot_entry {
        vcpu.set_regs(&boot::boot_regs(entry))
            .map_err(kvm_err("KVM_SET_REGS"))?;
        let sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
        vcpu.set_sregs(&boot::long_mode_sregs(sregs))
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        vcpu.set_fpu(&boot::boot_fpu())
            .map_err(kvm_err("KVM_SET_FPU"))?;
    }
    Ok(())
}

/// LINT0 = ExtINT (the PIC), LINT1 = NMI, as a BIOS would leave them.
fn set_lint(vcpu: &VcpuFd) -> Result<(), VmmError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    for (offset, mode) in [(0x350usize, 7u32), (0x360, 4)] {
        let value = lapic_reg(&lapic, offset);
        set_lapic_reg(&mut lapic, offset, (value & !0x700) | (mode << 8));
    }
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = |i: usize| lapic.regs[offset + i] as u8;
    u32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        lapic.regs[offset + i] = *byte as std::os::raw::c_char;
    }
}

/// MSRs KVM lets us save: the host's index list, minus those that fail to read.
pub(crate) fn saveable_msrs(kvm: &Kvm, vcpu: &VcpuFd) -> Result<Vec<u32>, VmmError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(kvm_err("KVM_GET_MSR_INDEX_LIST"))?;
    let mut indices: Vec<u32> = list.as_slice().to_vec();
    // KVM_GET_MSRS stops at the first MSR it cannot read: drop it and retry.
    loop {
        let (read, total) = read_msrs(vcpu, &indices).map(|(e, n)| (e.len(), n))?;
        if read == total {
            return Ok(indices);
        }
        indices.remove(read);
    }
}

fn read_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<(Vec<kvm_msr_entry>, usize), VmmError> {
    let entries: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs =
        Msrs::from_entries(&entries).map_err(|e| VmmError::internal("MSRs", format!("{e:?}")))?;
    let n = vcpu.get_msrs(&mut msrs).map_err(kvm_err("KVM_GET_MSRS"))?;
    Ok((msrs.as_slice()[..n].to_vec(), entries.len()))
}

/// Everything KVM holds about one vCPU.
#[derive(Serialize, Deserialize)]
pub(crate) struct VcpuState {
    pub cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debugregs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub vcpu_events: kvm_vcpu_events,
}

/// MSRs one vCPU state may carry (`KVM_MAX_MSR_ENTRIES`).
const MAX_MSRS: usize = 256;
/// XCRs in `kvm_xcrs` (`KVM_MAX_XCRS`).
const MAX_XCRS: u32 = 16;
/// The highest `KVM_MP_STATE_*` (`KVM_MP_STATE_SUSPENDED`).
const MAX_MP_STATE: u32 = 9;
/// XSAVE state components this VMM's 4 KiB legacy `kvm_xsave` can hold:
/// x87, SSE, AVX, MPX (2), AVX-512 (3), PKRU (bits 0-7, 9). AMX tiles (17, 18) need
/// KVM_GET_XSAVE2's larger area; anything else is not a user state.
const XSAVE_LEGACY_FEATURES: u64 = 0x2ff;
/// Offset of the XSAVE header's XSTATE_BV and XCOMP_BV in the area.
const XSTATE_BV: usize = 512;
const XCOMP_BV: usize = 520;

/// Checks one vCPU's saved state before any of it reaches KVM: counts
/// against KVM's limits (`msr_count`: every vCPU saves the same MSRs) and
/// the XCR0 and XSAVE area against the XSAVE features of the vCPU's own
/// CPUID. Returns the field and the reason.
pub(crate) fn validate_state(
    state: &VcpuState,
    msr_count: usize,
) -> Result<(), (&'static str, String)> {
    if state.cpuid.is_empty() || state.cpuid.len() > KVM_MAX_CPUID_ENTRIES {
        return Err((
            "cpuid",
            format!(
                "{} entries, KVM takes 1 to {KVM_MAX_CPUID_ENTRIES}",
                state.cpuid.len()
            ),
        ));
    }
    if state.msrs.len() > MAX_MSRS {
        return Err((
            "msrs",
            format!("{} entries, KVM takes at most {MAX_MSRS}", state.msrs.len()),
        ));
    }
    if state.msrs.len() != msr_count {
        return Err((
            "msrs",
            format!(
                "{} entries, vCPU 0 has {msr_count} (every vCPU saves the same MSRs)",
                state.msrs.len()
            ),
        ));
    }
    if state.mp_state.mp_state > MAX_MP_STATE {
        return Err((
            "mp_state",
            format!("{} is not a KVM_MP_STATE", state.mp_state.mp_state),
        ));
    }
    // What this vCPU's CPUID lets the guest enable (leaf 0xD, sub-leaf 0),
    // never more than the 4 KiB area holds; x87 and SSE are always there.
    let cpuid_features = state
        .cpuid
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .map_or(0, |e| u64::from(e.eax) | (u64::from(e.edx) << 32));
    let allowed = (cpuid_features | 0b11) & XSAVE_LEGACY_FEATURES;
    let nr_xcrs = state.xcrs.nr_xcrs;
    if nr_xcrs > MAX_XCRS {
        return Err((
            "xcrs",
            format!("{nr_xcrs} XCRs, KVM has at most {MAX_XCRS}"),
        ));
    }
    let xcr0 = state.xcrs.xcrs[..nr_xcrs as usize]
        .iter()
        .find(|x| x.xcr == 0)
        .map_or(1, |x| x.value);
    if xcr0 & 1 == 0 || xcr0 & !allowed != 0 {
        return Err((
            "xcrs",
            format!(
                "XCR0 {xcr0:#x} enables state outside {allowed:#x} (the CPUID's XSAVE \
                 features that a 4 KiB area holds)"
            ),
        ));
    }
    let word = |at: usize| {
        let lo = u64::from(state.xsave.region[at / 4]);
        let hi = u64::from(state.xsave.region[at / 4 + 1]);
        lo | (hi << 32)
    };
    let (xstate_bv, xcomp_bv) = (word(XSTATE_BV), word(XCOMP_BV));
    if xstate_bv & !allowed != 0 {
        return Err((
            "xsave",
            format!(
                "XSTATE_BV {xstate_bv:#x} has components outside {allowed:#x} (the CPUID's \
                 XSAVE features that a 4 KiB area holds): an area from another machine?"
            ),
        ));
    }
    if xcomp_bv != 0 {
        return Err((
            "xsave",
            format!(
                "XCOMP_BV {xcomp_bv:#x}: KVM's area is in the standard, not the compacted, format"
            ),
        ));
    }
    Ok(())
}

impl VcpuState {
    /// Reads the state of a vCPU that is not running.
    pub(crate) fn save(
        vcpu: &VcpuFd,
        cpuid: &CpuId,
        msr_indices: &[u32],
    ) -> Result<Self, VmmError> {
        let (msrs, total) = read_msrs(vcpu, msr_indices)?;
        if msrs.len() != total {
            return Err(VmmError::internal(
                "KVM_GET_MSRS",
                format!("read {} of {total} MSRs", msrs.len()),
            ));
        }
        Ok(VcpuState {
            cpuid: cpuid.as_slice().to_vec(),
            mp_state: vcpu.get_mp_state().map_err(kvm_err("KVM_GET_MP_STATE"))?,
            regs: vcpu.get_regs().map_err(kvm_err("KVM_GET_REGS"))?,
            sregs: vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?,
            xsave: vcpu.get_xsave().map_err(kvm_err("KVM_GET_XSAVE"))?,
            xcrs: vcpu.get_xcrs().map_err(kvm_err("KVM_GET_XCRS"))?,
            debugregs: vcpu
                .get_debug_regs()
                .map_err(kvm_err("KVM_GET_DEBUGREGS"))?,
            lapic: vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?,
            msrs,
            vcpu_events: vcpu
                .get_vcpu_events()
                .map_err(kvm_err("KVM_GET_VCPU_EVENTS"))?,
        })
    }

    /// Puts the state into a freshly created vCPU (order as KVM needs it:
    /// CPUID first, events last).
    pub(crate) fn restore(&self, vcpu: &VcpuFd) -> Result<(), VmmError> {
        let cpuid = CpuId::from_entries(&self.cpuid)
            .map_err(|e| VmmError::internal("snapshot CPUID", format!("{e:?}")))?;
        vcpu.set_cpuid2(&cpuid).map_err(kvm_err("KVM_SET_CPUID2"))?;
        vcpu.set_mp_state(self.mp_state)
            .map_err(kvm_err("KVM_SET_MP_STATE"))?;
        vcpu.set_regs(&self.regs).map_err(kvm_err("KVM_SET_REGS"))?;
        vcpu.set_sregs(&self.sregs)
            .map_err(kvm_err("KVM_SET_SREGS"))?;
        // SAFETY: `xsave` came from KVM_GET_XSAVE (the legacy 4 KiB layout) on a
        // vCPU with the same CPUID, which is exactly the buffer size the
        // KVM_SET_XSAVE ioctl reads; no AMX state is enabled in that CPUID.
        unsafe { vcpu.set_xsave(&self.xsave) }.map_err(kvm_err("KVM_SET_XSAVE"))?;
        vcpu.set_xcrs(&self.xcrs).map_err(kvm_err("KVM_SET_XCRS"))?;
        vcpu.set_debug_regs(&self.debugregs)
            .map_err(kvm_err("KVM_SET_DEBUGREGS"))?;
        vcpu.set_lapic(&self.lapic)
            .map_err(kvm_err("KVM_SET_LAPIC"))?;
        let msrs = Msrs::from_entries(&self.msrs)
            .map_err(|e| VmmError::internal("snapshot MSRs", format!("{e:?}")))?;
        let written = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
        if written != self.msrs.len() {
            return Err(VmmError::internal(
                "KVM_SET_MSRS",
                format!("wrote {written} of {} MSRs", self.msrs.len()),
            ));
        }
        vcpu.set_vcpu_events(&self.vcpu_events)
            .map_err(kvm_err("KVM_SET_VCPU_EVENTS"))
    }
}
