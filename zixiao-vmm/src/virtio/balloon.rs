//! The virtio-balloon device model (device id 5, virtio 1.x section 5.5):
//! the host sets a target (`num_pages`, 4 KiB pages) in the configuration
//! space and raises the configuration-change interrupt; the guest driver
//! hands pages over on the inflate queue (each is given back to the host
//! with `madvise(MADV_DONTNEED)` on its guest mapping, so the VMM's RSS
//! drops), takes pages back on the deflate queue (nothing to do: a page
//! faults back in, zero-filled, when the guest touches it) and reports what
//! it holds in `actual`. `VIRTIO_BALLOON_F_DEFLATE_ON_OOM` is offered when
//! configured; the statistics queue and free-page hinting are not.
//!
//! Requests run on the vCPU that notified the queue, like block's. Every
//! PFN is checked: a PFN outside guest memory, or one a request names twice,
//! is skipped and counted (`bad_pfns`), never acted on.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ids::VIRTIO_ID_BALLOON;
use virtio_queue::{DescriptorChain, Queue, Reader};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::VirtioDevice;
use crate::VmmError;

/// The virtio device id of a balloon.
pub(crate) const DEVICE_ID: u32 = VIRTIO_ID_BALLOON;
/// Descriptors in each queue.
pub(crate) const QUEUE_SIZE: u16 = 256;
/// The inflate queue (guest to host: pages the guest gives up).
const INFLATE: usize = 0;
/// The deflate queue (pages the guest takes back).
const DEFLATE: usize = 1;
/// VIRTIO_BALLOON_F_DEFLATE_ON_OOM: the guest may deflate when it runs out
/// of memory (not in virtio-bindings 0.2).
const F_DEFLATE_ON_OOM: u64 = 1 << 2;
/// The balloon's page size, whatever the guest's (VIRTIO_BALLOON_PFN_SHIFT).
pub(crate) const PAGE: u64 = 4096;

/// A microVM's balloon, in its [`crate::VmConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonConfig {
    /// The target at boot, in MiB the guest should give back (at most the
    /// guest's memory; 0, the default, leaves all of it to the guest).
    #[serde(default)]
    pub amount_mib: u64,
    /// Offer `VIRTIO_BALLOON_F_DEFLATE_ON_OOM`: a guest running out of
    /// memory takes pages back from the balloon rather than failing.
    #[serde(default)]
    pub deflate_on_oom: bool,
}

/// A balloon's state, in `stats()` (see [`crate::VmmStats::balloon`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonStats {
    /// The host's target: 4 KiB pages the guest should hold in the balloon.
    pub target_pages: u32,
    /// What the guest reports it holds (`actual`), in 4 KiB pages.
    pub actual_pages: u32,
    /// Pages given back to the host (inflated and released) since this VMM
    /// process started.
    pub given_back_pages: u64,
    /// Pages the guest took back (deflated) since this VMM process started.
    pub taken_back_pages: u64,
    /// PFNs skipped since this VMM process started: outside guest memory,
    /// or named twice in one request.
    pub bad_pfns: u64,
}

impl BalloonStats {
    /// The target in MiB.
    pub fn target_mib(&self) -> u64 {
        (u64::from(self.target_pages) * PAGE) >> 20
    }

    /// What the guest holds, in MiB.
    pub fn actual_mib(&self) -> u64 {
        (u64::from(self.actual_pages) * PAGE) >> 20
    }
}

/// The balloon's configuration space in a snapshot or migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BalloonState {
    num_pages: u32,
    actual: u32,
}

impl BalloonState {
    /// Checks a decoded state against guest memory of `memory_bytes`: the
    /// error is `(field, reason)`.
    pub(crate) fn validate(&self, memory_bytes: u64) -> Result<(), (String, String)> {
        let pages = memory_bytes / PAGE;
        if u64::from(self.num_pages) > pages {
            return Err((
                "num_pages".into(),
                format!("{} pages, more than the guest's {pages}", self.num_pages),
            ));
        }
        Ok(())
    }
}

/// Checks a snapshot's (or migration's) balloon `state` against its
/// config's `balloon`, for guest memory of `memory_bytes`: present exactly
/// when the config has a balloon (a snapshot of a balloon without it, from
/// no VMM that wrote one, is refused). Errors name `machine.balloon`.
pub(crate) fn validate_state(
    balloon: Option<&BalloonConfig>,
    state: Option<&BalloonState>,
    memory_bytes: u64,
) -> Result<(), VmmError> {
    match (balloon, state) {
        (None, None) => Ok(()),
        (Some(_), Some(state)) => state.validate(memory_bytes).map_err(|(field, reason)| {
            VmmError::invalid(format!("machine.balloon.{field}"), reason)
        }),
        (Some(_), None) => Err(VmmError::invalid(
            "machine.balloon",
            "missing, but the config has a balloon",
        )),
        (None, Some(_)) => Err(VmmError::invalid(
            "machine.balloon",
            "present, but the config has no balloon",
        )),
    }
}

/// The feature bits a balloon of `config` offers.
pub(crate) fn features(config: &BalloonConfig) -> u64 {
    let mut features = 1 << VIRTIO_F_VERSION_1;
    if config.deflate_on_oom {
        features |= F_DEFLATE_ON_OOM;
    }
    features
}

/// A target in MiB as pages, for guest memory of `memory_bytes`; errors
/// name `field` (at most the guest's memory).
pub(crate) fn target_pages(field: &str, mib: u64, memory_bytes: u64) -> Result<u32, VmmError> {
    let memory_mib = memory_bytes >> 20;
    if mib > memory_mib {
        return Err(VmmError::invalid(
            field,
            format!("{mib} MiB is more than the guest's {memory_mib} MiB of memory"),
        ));
    }
    // At most 3 GiB of guest memory: 786432 pages fit in u32.
    u32::try_from((mib << 20) / PAGE)
        .map_err(|_| VmmError::invalid(field, format!("{mib} MiB is too large")))
}

/// What the host side (API thread) and the device (vCPU threads) share.
#[derive(Debug, Default)]
pub(crate) struct BalloonShared {
    target: AtomicU32,
    actual: AtomicU32,
    given_back: AtomicU64,
    taken_back: AtomicU64,
    bad_pfns: AtomicU64,
}

impl BalloonShared {
    /// Sets the target in pages (validated by [`target_pages`]); the caller
    /// raises the configuration-change interrupt.
    pub(crate) fn set_target(&self, pages: u32) {
        self.target.store(pages, Ordering::Release);
    }

    /// The figures `stats()` reports.
    pub(crate) fn stats(&self) -> BalloonStats {
        BalloonStats {
            target_pages: self.target.load(Ordering::Acquire),
            actual_pages: self.actual.load(Ordering::Acquire),
            given_back_pages: self.given_back.load(Ordering::Relaxed),
            taken_back_pages: self.taken_back.load(Ordering::Relaxed),
            bad_pfns: self.bad_pfns.load(Ordering::Relaxed),
        }
    }

    /// The configuration space a snapshot keeps.
    pub(crate) fn save(&self) -> BalloonState {
        BalloonState {
            num_pages: self.target.load(Ordering::Acquire),
            actual: self.actual.load(Ordering::Acquire),
        }
    }
}

/// A virtio-balloon device.
pub(crate) struct Balloon {
    features: u64,
    shared: Arc<BalloonShared>,
    /// Scratch for one request's PFNs (kept to spare an allocation each).
    pfns: Vec<u32>,
}

impl Balloon {
    /// A balloon of `config` for guest memory of `memory_bytes`, fresh (the
    /// config's target) or as `state` (validated) left it. Returns the
    /// device and what the host side keeps of it.
    pub(crate) fn new(
        config: &BalloonConfig,
        memory_bytes: u64,
        state: Option<&BalloonState>,
    ) -> Result<(Balloon, Arc<BalloonShared>), VmmError> {
        let shared = Arc::new(BalloonShared::default());
        match state {
            Some(state) => {
                shared.target.store(state.num_pages, Ordering::Release);
                shared.actual.store(state.actual, Ordering::Release);
            }
            None => shared.set_target(target_pages(
                "balloon.amount_mib",
                config.amount_mib,
                memory_bytes,
            )?),
        }
        let device = Balloon {
            features: features(config),
            shared: shared.clone(),
            pfns: Vec::new(),
        };
        Ok((device, shared))
    }

    /// Reads the PFNs of one request into `self.pfns`, sorted and each
    /// once; returns how many of those it named were skipped (repeats, and
    /// any beyond guest memory's page count).
    fn read_pfns(
        &mut self,
        chain: DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> u64 {
        self.pfns.clear();
        let Ok(mut reader) = Reader::<()>::new(mem, chain) else {
            return 0; // descriptors outside guest memory: nothing to read
        };
        let named = reader.available_bytes() / 4;
        // A request naming more PFNs than guest memory has pages repeats
        // some: no more than that many are read (the bound on the scratch).
        let pages = mem.iter().map(|r| r.len()).sum::<u64>() / PAGE;
        let take = named.min(usize::try_from(pages).unwrap_or(usize::MAX));
        for _ in 0..take {
            match reader.read_obj::<u32>() {
                Ok(pfn) => self.pfns.push(u32::from_le(pfn)),
                Err(_) => break,
            }
        }
        self.pfns.sort_unstable();
        self.pfns.dedup();
        // Repeats, and what could not be read or was beyond the bound.
        (named - self.pfns.len()) as u64
    }

    /// Gives the pages of `self.pfns` back to the host: each contiguous run
    /// of valid pages is one `madvise(MADV_DONTNEED)` on its host mapping.
    /// Returns (pages released, PFNs skipped).
    fn release(&self, mem: &GuestMemoryMmap) -> (u64, u64) {
        let (mut released, mut bad) = (0u64, 0u64);
        // The run being collected: host start address and length in pages.
        let mut run: Option<(usize, usize)> = None;
        let flush = |run: Option<(usize, usize)>, released: &mut u64, bad: &mut u64| {
            let Some((start, pages)) = run else {
                return;
            };
            // SAFETY: `start..start + pages * PAGE` lies inside one guest
            // memory region's live mapping (checked page by page below);
            // MADV_DONTNEED on a private mapping only drops its pages, which
            // read back as zero (anonymous memory) or as the snapshot file's
            // content: the guest gave them up and may not expect either.
            let rc = unsafe {
                libc::madvise(
                    start as *mut libc::c_void,
                    pages * PAGE as usize,
                    libc::MADV_DONTNEED,
                )
            };
            if rc == 0 {
                *released += pages as u64;
            } else {
                *bad += pages as u64;
            }
        };
        for &pfn in &self.pfns {
            let Some(host) = page_host_address(mem, pfn) else {
                bad += 1;
                continue;
            };
            run = match run {
                Some((start, pages)) if start + pages * PAGE as usize == host => {
                    Some((start, pages + 1))
                }
                other => {
                    flush(other, &mut released, &mut bad);
                    Some((host, 1))
                }
            };
        }
        flush(run, &mut released, &mut bad);
        (released, bad)
    }
}

/// The host address of the 4 KiB guest page `pfn`, if the whole page lies
/// in one region of guest memory.
fn page_host_address(mem: &GuestMemoryMmap, pfn: u32) -> Option<usize> {
    let addr = GuestAddress(u64::from(pfn) * PAGE);
    let region = mem.find_region(addr)?;
    let offset = addr.checked_offset_from(region.start_addr())?;
    if offset.checked_add(PAGE)? > region.len() {
        return None;
    }
    mem.get_host_address(addr).ok().map(|p| p as usize)
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_balloon_config: le32 num_pages, le32 actual.
        let mut config = [0u8; 8];
        config[..4].copy_from_slice(&self.shared.target.load(Ordering::Acquire).to_le_bytes());
        config[4..].copy_from_slice(&self.shared.actual.load(Ordering::Acquire).to_le_bytes());
        super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `actual` (bytes 4..8) is the driver's to write.
        let mut actual = self.shared.actual.load(Ordering::Acquire).to_le_bytes();
        for (i, &byte) in data.iter().enumerate() {
            let at = offset.checked_add(i as u64).and_then(|a| a.checked_sub(4));
            if let Some(slot) = at
                .and_then(|a| usize::try_from(a).ok())
                .and_then(|a| actual.get_mut(a))
            {
                *slot = byte;
            }
        }
        self.shared
            .actual
            .store(u32::from_le_bytes(actual), Ordering::Release);
    }

    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        if index != INFLATE && index != DEFLATE {
            return false;
        }
        super::complete_available(queue, mem, |chain| {
            let mut bad = self.read_pfns(chain, mem);
            if index == INFLATE {
                let (released, skipped) = self.release(mem);
                self.shared
                    .given_back
                    .fetch_add(released, Ordering::Relaxed);
                bad += skipped;
            } else {
                let valid = self
                    .pfns
                    .iter()
                    .filter(|&&pfn| page_host_address(mem, pfn).is_some())
                    .count() as u64;
                self.shared.taken_back.fetch_add(valid, Ordering::Relaxed);
                bad += self.pfns.len() as u64 - valid;
            }
            self.shared.bad_pfns.fetch_add(bad, Ordering::Relaxed);
            0 // the device writes nothing into a balloon request
        })
    }
}

#[cfg(test)]
mod tests {
    //! The device behind its transport, driven as a guest driver would over
    //! real anonymous guest memory (no KVM): inflating releases the pages
    //! (they read back as zero), bad and repeated PFNs are skipped and
    //! counted, `actual` is the driver's to write, the target raises the
    //! configuration-change interrupt.

    use super::*;
    use crate::virtio::test_regs::{rd, wr};
    use crate::virtio::MmioTransport;
    use virtio_bindings::virtio_mmio::*;
    use vm_memory::Bytes;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const PFNS: u64 = 0x4000;
    const QSIZE: u16 = 8;
    const MEM: usize = 4 << 20;

    struct Rig {
        t: MmioTransport,
        mem: GuestMemoryMmap,
        shared: Arc<BalloonShared>,
        submitted: [u16; 2],
    }

    fn rig(config: &BalloonConfig) -> Rig {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
        let (device, shared) = Balloon::new(config, MEM as u64, None).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(Box::new(device), mem.clone(), irq).unwrap();
        assert_eq!(rd(&t, 8), 5, "device id");
        wr(&mut t, VIRTIO_MMIO_STATUS, 3);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, 11);
        for q in 0..2u32 {
            let base = u64::from(q) * 0x10000;
            wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, q);
            wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, u32::from(QSIZE));
            wr(&mut t, VIRTIO_MMIO_QUEUE_DESC_LOW, (DESC + base) as u32);
            wr(&mut t, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (AVAIL + base) as u32);
            wr(&mut t, VIRTIO_MMIO_QUEUE_USED_LOW, (USED + base) as u32);
            wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        }
        wr(&mut t, VIRTIO_MMIO_STATUS, 15);
        Rig {
            t,
            mem,
            shared,
            submitted: [0; 2],
        }
    }

    impl Rig {
        /// One request on queue `q` naming `pfns`; returns whether it completed.
        fn request(&mut self, q: usize, pfns: &[u32]) -> bool {
            let base = q as u64 * 0x10000;
            for (i, pfn) in pfns.iter().enumerate() {
                self.mem
                    .write_obj(*pfn, GuestAddress(PFNS + base + i as u64 * 4))
                    .unwrap();
            }
            let desc = GuestAddress(DESC + base);
            self.mem.write_obj(PFNS + base, desc).unwrap();
            self.mem
                .write_obj((pfns.len() * 4) as u32, desc.unchecked_add(8))
                .unwrap();
            self.mem.write_obj(0u16, desc.unchecked_add(12)).unwrap();
            let slot = u64::from(self.submitted[q] % QSIZE);
            self.mem
                .write_obj(0u16, GuestAddress(AVAIL + base + 4 + slot * 2))
                .unwrap();
            self.submitted[q] = self.submitted[q].wrapping_add(1);
            self.mem
                .write_obj(self.submitted[q], GuestAddress(AVAIL + base + 2))
                .unwrap();
            wr(&mut self.t, VIRTIO_MMIO_QUEUE_NOTIFY, q as u32);
            let used: u16 = self.mem.read_obj(GuestAddress(USED + base + 2)).unwrap();
            used == self.submitted[q]
        }
    }

    #[test]
    fn inflating_releases_valid_pages_and_counts_bad_ones() {
        let mut r = rig(&BalloonConfig::default());
        let page = |pfn: u64| GuestAddress(pfn * PAGE);
        for pfn in 100..104 {
            r.mem.write_obj(0xdead_beefu32, page(pfn)).unwrap();
        }
        let outside = (MEM as u64 / PAGE) as u32;
        assert!(r.request(INFLATE, &[100, 101, 103, 101, outside, u32::MAX]));
        let stats = r.shared.stats();
        assert_eq!(stats.given_back_pages, 3);
        assert_eq!(stats.bad_pfns, 3, "a repeat and two outside guest memory");
        for pfn in [100, 101, 103] {
            assert_eq!(r.mem.read_obj::<u32>(page(pfn)).unwrap(), 0, "released");
        }
        assert_eq!(r.mem.read_obj::<u32>(page(102)).unwrap(), 0xdead_beef);
        assert!(r.request(DEFLATE, &[100, 101, outside]));
        let stats = r.shared.stats();
        assert_eq!((stats.taken_back_pages, stats.bad_pfns), (2, 4));
        assert_eq!(rd(&r.t, u64::from(VIRTIO_MMIO_INTERRUPT_STATUS)), 1);
    }

    #[test]
    fn actual_is_written_by_the_driver_and_the_target_interrupts() {
        let mut r = rig(&BalloonConfig {
            amount_mib: 1,
            deflate_on_oom: true,
        });
        wr(&mut r.t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
        assert_ne!(rd(&r.t, u64::from(VIRTIO_MMIO_DEVICE_FEATURES)) & 4, 0);
        assert_eq!(rd(&r.t, 0x100), 256, "1 MiB target at boot");
        r.t.write(0x104, &77u32.to_le_bytes());
        r.t.write(0x100, &1u32.to_le_bytes()); // num_pages is the host's
        assert_eq!((rd(&r.t, 0x100), rd(&r.t, 0x104)), (256, 77));
        let generation = rd(&r.t, u64::from(VIRTIO_MMIO_CONFIG_GENERATION));
        r.shared.set_target(512);
        r.t.config_changed();
        assert_eq!(rd(&r.t, 0x100), 512);
        assert_eq!(rd(&r.t, u64::from(VIRTIO_MMIO_INTERRUPT_STATUS)), 2);
        assert_ne!(
            rd(&r.t, u64::from(VIRTIO_MMIO_CONFIG_GENERATION)),
            generation
        );
        assert!(r.t.irq().read().unwrap() >= 1);
        assert_eq!(
            r.shared.save(),
            BalloonState {
                num_pages: 512,
                actual: 77
            }
        );
    }

    #[test]
    fn targets_and_states_beyond_guest_memory_are_refused() {
        let err = target_pages("target_mib", 5, MEM as u64).unwrap_err();
        assert!(err.to_string().contains("target_mib"), "{err}");
        assert_eq!(target_pages("target_mib", 4, MEM as u64).unwrap(), 1024);
        let state = BalloonState {
            num_pages: 1025,
            actual: 0,
        };
        assert_eq!(state.validate(MEM as u64).unwrap_err().0, "num_pages");
    }
}
