//! A running KVM machine: the VM fd with its memory, in-kernel irqchip and
//! PIT, its devices (COM1, virtio-mmio disks, network cards, vsock), one host
//! thread per vCPU, one I/O thread for the network cards' receive sides
//! and the vsock device, and the
//! controls the VMM process needs:
//! start, pause (every vCPU parked outside KVM_RUN), resume, stop, and the
//! state capture and restore that snapshots are made of.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region,
    CpuId, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::Serial;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::config::{DiskConfig, NetConfig};
use crate::cpu::{self, VcpuState};
use crate::devices::{ConsoleSink, Devices, IrqTrigger, PortAction, SerialSnapshot};
use crate::layout::{COM1_IRQ, KVM_TSS_ADDR};
use crate::migration::PageSet;
use crate::seccomp::{ThreadKind, Threads};
use crate::virtio::balloon::{BalloonShared, BalloonState, BalloonStats};
use crate::virtio::vsock::HostSocket;
use crate::virtio::{self, DeviceIo, DeviceSet, TransportState};
use crate::{boot, VmConfig, VmmError};

/// How the guest stopped, reported by a vCPU thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GuestEvent {
    /// i8042 reset (Linux `reboot=k`, or the test guest's power-off).
    Reset,
    /// ACPI S5: the guest powered off.
    PowerOff,
    /// ACPI reset register: the guest rebooted.
    Reboot,
    /// Triple fault / KVM_EXIT_SHUTDOWN.
    Shutdown,
    /// KVM could not run the vCPU.
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Pause,
    Stop,
}

struct Ctl {
    want: Want,
    /// vCPU threads currently outside KVM_RUN and waiting (or finished).
    parked: usize,
}

/// Start/pause/stop handshake between the VMM and its vCPU threads.
struct Control {
    ctl: Mutex<Ctl>,
    cond: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Control {
    /// Parks while paused; false once told to stop.
    fn wait_runnable(&self) -> bool {
        let mut ctl = lock(&self.ctl);
        if ctl.want == Want::Run {
            return true;
        }
        ctl.parked += 1;
        self.cond.notify_all();
        while ctl.want == Want::Pause {
            ctl = self.cond.wait(ctl).unwrap_or_else(|p| p.into_inner());
        }
        if ctl.want == Want::Stop {
            return false;
        }
        ctl.parked -= 1;
        true
    }

    /// A vCPU thread ends for good; it counts as parked from now on.
    fn finished(&self) {
        lock(&self.ctl).parked += 1;
        self.cond.notify_all();
    }
}

/// Exit counts by reason.
#[derive(Default)]
struct ExitCounters {
    io_in: AtomicU64,
    io_out: AtomicU64,
    mmio: AtomicU64,
    hlt: AtomicU64,
    shutdown: AtomicU64,
    intr: AtomicU64,
    other: AtomicU64,
}

/// VM-wide KVM state of a snapshot.
#[derive(Serialize, Deserialize)]
pub(crate) struct MachineState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
    pub serial: SerialSnapshot,
    pub vcpus: Vec<VcpuState>,
    /// virtio device N's transport and queues (absent before format 2).
    #[serde(default)]
    pub virtio: Vec<TransportState>,
    /// The balloon's configuration space, if the VM has one (absent in
    /// snapshots of VMs without one, and of VMMs that had no balloon).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balloon: Option<BalloonState>,
}

/// A VM with its memory, in-kernel irqchip and PIT, and nothing of the
/// guest's files or state yet: what a fresh boot makes before the jail's
/// pivot, still root (see `server.rs`).
pub(crate) struct BareVm {
    // Field order is drop order: the VM goes before the memory it maps.
    vm: VmFd,
    kvm: Kvm,
    memory: GuestMemoryMmap,
}

impl BareVm {
    /// KVM_CREATE_VM on `kvm` with `memory` as slot 0 (registered before
    /// the irqchip and PIT exist: registered after them, it made a boot
    /// ~5 ms slower here), then its TSS, irqchip and PIT.
    pub(crate) fn create(kvm: Kvm, memory: GuestMemoryMmap) -> Result<BareVm, VmmError> {
        let vm = kvm.create_vm().map_err(|e| VmmError::ResourceExhausted {
            message: format!("KVM_CREATE_VM failed: {e}"),
        })?;
        register_memory(&vm, &memory, 0)?;
        vm.set_tss_address(KVM_TSS_ADDR)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_err("KVM_CREATE_PIT2"))?;
        Ok(BareVm { vm, kvm, memory })
    }
}

/// One microVM inside this process.
pub(crate) struct Machine {
    // Field order is drop order: vCPUs and the VM go before the memory they map.
    vcpus: Vec<Arc<Mutex<VcpuFd>>>,
    threads: Vec<JoinHandle<()>>,
    vm: VmFd,
    kvm: Kvm,
    memory: GuestMemoryMmap,
    devices: Arc<Devices>,
    cpuids: Vec<CpuId>,
    msr_indices: Vec<u32>,
    control: Arc<Control>,
    counters: Arc<ExitCounters>,
    tids: Arc<Mutex<Vec<Option<u32>>>>,
    /// Guest memory is anonymous (fresh boot), not a copy-on-write snapshot map.
    anonymous_memory: bool,
    /// /proc/self/pagemap, opened before the VMM dropped root (after the
    /// drop the kernel no longer lets it open its own page map).
    pagemap: Option<std::fs::File>,
    /// What the devices' I/O thread serves: the network cards' receive
    /// sides and the vsock device.
    io: Arc<DeviceIo>,
    /// The balloon's target and counters; the device is the last virtio device.
    balloon: Option<Arc<BalloonShared>>,
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only interrupts KVM_RUN (EINTR); the vCPU loop then checks its controls.
}

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmmError {
    move |err| VmmError::internal(what, err)
}

impl Machine {
    /// Completes `vm`, loads `config` from `files` for a fresh
    /// boot. The config must have been validated. vCPUs are not running.
    pub(crate) fn create(
        vm: BareVm,
        config: &VmConfig,
        files: boot::BootFiles,
        taps: Vec<File>,
        vsock: Option<HostSocket>,
        sink: ConsoleSink,
    ) -> Result<Machine, VmmError> {
        config.validate_limits()?;
        let serial = Serial::new(IrqTrigger(new_evt()?), sink);
        let virtio = virtio::devices(
            &vm.memory,
            &config.disks,
            files.disks,
            &config.nets,
            taps,
            vsock,
            config.balloon.as_ref().map(|b| (b, None)),
            None,
        )?;
        crate::timeline::mark("devices");
        let boot_files = boot::BootFiles {
            kernel: files.kernel,
            initrd: files.initrd,
            disks: Vec::new(),
        };
        let mut machine = Machine::new_vm(vm, config.vcpus, serial, virtio)?;
        let info = boot::load(&machine.memory, config, boot_files)?;
        crate::timeline::mark("loaded");
        for (i, vcpu) in machine.vcpus.iter().enumerate() {
            let vcpu = lock(vcpu);
            cpu::setup_vcpu(&vcpu, &machine.cpuids[i], (i == 0).then_some(info.entry))?;
        }
        crate::timeline::mark("vcpu-setup");
        machine.msr_indices = cpu::saveable_msrs(&machine.kvm, &lock(&machine.vcpus[0]))?;
        crate::timeline::mark("msrs");
        Ok(machine)
    }

    /// Creates the VM on `kvm` from a snapshot's `state` (validated by
    /// `snapshot::parse`) over already mapped `memory`; `disks` are the
    /// snapshot config's disks, open, and `nets` its network cards, each
    /// attached to its TAP; `balloon` its balloon.
    #[allow(clippy::too_many_arguments)] // one per kind of device
    pub(crate) fn restore(
        kvm: Kvm,
        state: &MachineState,
        memory: GuestMemoryMmap,
        disks: (&[DiskConfig], Vec<File>),
        nets: (&[NetConfig], Vec<File>),
        vsock: Option<HostSocket>,
        balloon: Option<&crate::BalloonConfig>,
        sink: ConsoleSink,
    ) -> Result<Machine, VmmError> {
        let vcpus = u8::try_from(state.vcpus.len())
            .ok()
            .filter(|n| (1..=crate::MAX_VCPUS).contains(n))
            .ok_or_else(|| {
                VmmError::invalid("machine.vcpus", "not between 1 and the vCPU limit")
            })?;
        let bare = BareVm::create(kvm, memory)?;
        let serial = Serial::from_state(
            &SerialState::from(&state.serial),
            IrqTrigger(new_evt()?),
            NoEvents,
            sink,
        )
        .map_err(|e| VmmError::internal("restoring the serial port", format!("{e:?}")))?;
        let virtio = virtio::devices(
            &bare.memory,
            disks.0,
            disks.1,
            nets.0,
            nets.1,
            vsock,
            balloon.map(|b| (b, state.balloon.as_ref())),
            Some(&state.virtio),
        )?;
        let mut machine = Machine::new_vm(bare, vcpus, serial, virtio)?;
        let vm = &machine.vm;
        vm.set_pit2(&state.pit).map_err(kvm_err("KVM_SET_PIT2"))?;
        let mut clock = state.clock;
        clock.flags = 0; // only the value can be set
        vm.set_clock(&clock).map_err(kvm_err("KVM_SET_CLOCK"))?;
        for chip in [&state.pic_master, &state.pic_slave, &state.ioapic] {
            vm.set_irqchip(chip).map_err(kvm_err("KVM_SET_IRQCHIP"))?;
        }
        for (vcpu, saved) in machine.vcpus.iter().zip(&state.vcpus) {
            saved.restore(&lock(vcpu))?;
        }
        machine.anonymous_memory = false;
        machine.msr_indices = state.vcpus[0].msrs.iter().map(|m| m.index).collect();
        machine.cpuids = state
            .vcpus
            .iter()
            .map(|v| CpuId::from_entries(&v.cpuid))
            .collect::<Result<_, _>>()
            .map_err(|e| VmmError::internal("snapshot CPUID", format!("{e:?}")))?;
        Ok(machine)
    }

    fn new_vm(
        bare: BareVm,
        vcpu_count: u8,
        serial: crate::devices::ComPort,
        (virtio, nets, vsock, balloon): DeviceSet,
    ) -> Result<Machine, VmmError> {
        let max = bare.kvm.get_max_vcpus();
        if usize::from(vcpu_count) > max {
            return Err(VmmError::invalid(
                "vcpus",
                format!("{vcpu_count} asked, KVM on this host allows at most {max}"),
            ));
        }
        let BareVm { vm, kvm, memory } = bare;
        vm.register_irqfd(&serial.interrupt_evt().0, COM1_IRQ)
            .map_err(kvm_err("KVM_IRQFD"))?;
        for (index, device) in virtio.iter().enumerate() {
            vm.register_irqfd(device.irq(), crate::layout::virtio_irq(index))
                .map_err(kvm_err("KVM_IRQFD"))?;
        }
        crate::timeline::mark("irqfds");
        let base_cpuid = cpu::supported_cpuid(&kvm)?;
        crate::timeline::mark("cpuid");
        let mut vcpus = Vec::new();
        let mut cpuids = Vec::new();
        for id in 0..vcpu_count {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(|e| VmmError::ResourceExhausted {
                    message: format!("vcpus: cannot create vCPU {id}: {e}"),
                })?;
            vcpus.push(Arc::new(Mutex::new(fd)));
            cpuids.push(cpu::vcpu_cpuid(&base_cpuid, id, vcpu_count)?);
        }
        crate::timeline::mark("vcpus-created");
        register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| VmmError::internal("registering the vCPU kick signal", e))?;
        // The disks, the network cards, vsock, then the balloon.
        let before_balloon = virtio.len() - usize::from(balloon.is_some());
        let first_net = before_balloon - usize::from(vsock.is_some()) - nets.len();
        let io = DeviceIo {
            nets: nets
                .into_iter()
                .enumerate()
                .map(|(n, card)| (card, first_net + n))
                .collect(),
            vsock: vsock.map(|backend| (backend, before_balloon - 1)),
        };
        Ok(Machine {
            vcpus,
            threads: Vec::new(),
            vm,
            kvm,
            memory,
            devices: Arc::new(Devices {
                serial: Mutex::new(serial),
                virtio: virtio.into_iter().map(Mutex::new).collect(),
            }),
            cpuids,
            msr_indices: Vec::new(),
            control: Arc::new(Control {
                ctl: Mutex::new(Ctl {
                    want: Want::Pause,
                    parked: 0,
                }),
                cond: Condvar::new(),
            }),
            counters: Arc::new(ExitCounters::default()),
            tids: Arc::new(Mutex::new(vec![None; usize::from(vcpu_count)])),
            anonymous_memory: true,
            pagemap: None,
            io: Arc::new(io),
            balloon,
        })
    }

    /// Guest memory, for snapshots.
    pub(crate) fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// For anonymous guest memory: which 4 KiB pages were ever populated
    /// (present or swapped, from /proc/self/pagemap). The others read as
    /// zero, so a snapshot need not touch them (touching costs a page fault
    /// each). `None` when unknown (memory mapped from a snapshot file).
    pub(crate) fn populated_pages(&self) -> Option<Vec<bool>> {
        if !self.anonymous_memory {
            return None;
        }
        let host = self
            .memory
            .get_host_address(vm_memory::GuestAddress(0))
            .ok()? as usize;
        let pages = usize::try_from(self.memory_bytes()).ok()? / 4096;
        let file = self.pagemap.as_ref()?;
        let mut raw = vec![0u8; pages * 8];
        std::os::unix::fs::FileExt::read_exact_at(file, &mut raw, (host / 4096 * 8) as u64).ok()?;
        Some(
            raw.chunks_exact(8)
                .map(|e| {
                    let entry = u64::from_le_bytes(e.try_into().unwrap_or_default());
                    entry & (0b11 << 62) != 0 // present | swapped
                })
                .collect(),
        )
    }

    /// Lets snapshots skip never-populated pages: `pagemap` is this
    /// process's /proc/self/pagemap.
    pub(crate) fn use_pagemap(&mut self, pagemap: Option<std::fs::File>) {
        self.pagemap = pagemap;
    }

    /// The port devices (console input goes through here).
    pub(crate) fn devices(&self) -> &Arc<Devices> {
        &self.devices
    }

    /// Runs the vCPU threads (and the devices' thread) on `threads`,
    /// running (or parked if `paused`). Returns without waiting for them to
    /// start: each thread installs its filter before it runs anything, and the caller must wait on every [`Installing`] before
    /// the guest may run (start `paused` and resume after) or the VMM
    /// reads a request, so its other start-up work overlaps their start.
    ///
    /// [`Installing`]: crate::seccomp::Installing
    pub(crate) fn start(
        &mut self,
        paused: bool,
        events: Sender<GuestEvent>,
        threads: &mut Threads,
    ) -> Result<Vec<crate::seccomp::Installing>, VmmError> {
        if !self.threads.is_empty() {
            return Err(VmmError::precondition("the vCPUs are already started"));
        }
        lock(&self.control.ctl).want = if paused { Want::Pause } else { Want::Run };
        let mut installs = Vec::new();
        for (id, vcpu) in self.vcpus.iter().enumerate() {
            let ctx = VcpuThread {
                id,
                vcpu: vcpu.clone(),
                devices: self.devices.clone(),
                control: self.control.clone(),
                counters: self.counters.clone(),
                tids: self.tids.clone(),
                events: events.clone(),
            };
            let (handle, installing) =
                threads.run(vcpu_thread(id), ThreadKind::Vcpu, move || ctx.run())?;
            self.threads.push(handle);
            installs.push(installing);
        }
        // One thread for the devices' I/O (network cards' receive sides,
        // vsock), parked by the same controls as the vCPUs (a paused VM
        // receives nothing).
        if !self.io.is_empty() {
            let kind = devices_io_kind(self.io.vsock.is_some());
            let (io, devices, control) =
                (self.io.clone(), self.devices.clone(), self.control.clone());
            let (handle, installing) = threads.run(DEVICES_IO.into(), kind, move || {
                io.run(|| control.wait_runnable(), &devices.virtio)
            })?;
            self.threads.push(handle);
            installs.push(installing);
        }
        Ok(installs)
    }

    /// Parks every vCPU outside KVM_RUN (and the devices' I/O thread
    /// outside its delivery).
    pub(crate) fn pause(&self) -> Result<(), VmmError> {
        lock(&self.control.ctl).want = Want::Pause;
        self.wait_parked()
    }

    fn wait_parked(&self) -> Result<(), VmmError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Re-kick every round: a signal that lands just before a vCPU enters
            // KVM_RUN is not seen by KVM.
            for t in &self.threads {
                let _ = t.kill(kick_signal());
            }
            let ctl = lock(&self.control.ctl);
            if ctl.parked >= self.threads.len() {
                return Ok(());
            }
            let (_ctl, _) = self
                .control
                .cond
                .wait_timeout(ctl, Duration::from_millis(2))
                .unwrap_or_else(|p| p.into_inner());
            if Instant::now() > deadline {
                return Err(VmmError::internal(
                    "pausing",
                    "the vCPUs did not stop within 10 s",
                ));
            }
        }
    }

    /// Lets the parked vCPUs run again.
    pub(crate) fn resume(&self) {
        lock(&self.control.ctl).want = Want::Run;
        self.control.cond.notify_all();
    }

    /// Stops and joins every vCPU thread.
    pub(crate) fn stop(&mut self) {
        lock(&self.control.ctl).want = Want::Stop;
        self.control.cond.notify_all();
        let _ = self.wait_parked();
        lock(&self.control.ctl).want = Want::Stop;
        self.control.cond.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Captures VM and vCPU state. The vCPUs must be paused.
    pub(crate) fn save_state(&self) -> Result<MachineState, VmmError> {
        let chip = |id| -> Result<kvm_irqchip, VmmError> {
            let mut c = kvm_irqchip {
                chip_id: id,
                ..Default::default()
            };
            self.vm
                .get_irqchip(&mut c)
                .map_err(kvm_err("KVM_GET_IRQCHIP"))?;
            Ok(c)
        };
        let vcpus = self
            .vcpus
            .iter()
            .zip(&self.cpuids)
            .map(|(v, cpuid)| VcpuState::save(&lock(v), cpuid, &self.msr_indices))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MachineState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.vm.get_pit2().map_err(kvm_err("KVM_GET_PIT2"))?,
            clock: self.vm.get_clock().map_err(kvm_err("KVM_GET_CLOCK"))?,
            serial: lock(&self.devices.serial).state().into(),
            vcpus,
            virtio: self.devices.virtio.iter().map(|d| lock(d).save()).collect(),
            balloon: self.balloon.as_ref().map(|b| b.save()),
        })
    }

    /// Sets the balloon's target to `pages` (validated against guest
    /// memory) and tells the guest's driver by the configuration-change
    /// interrupt. `FailedPrecondition` when the VM has no balloon.
    pub(crate) fn set_balloon_target(&self, pages: u32) -> Result<(), VmmError> {
        let (Some(balloon), Some(device)) = (&self.balloon, self.devices.virtio.last()) else {
            return Err(VmmError::precondition(
                "the VM has no balloon (boot it with VmConfig::balloon)",
            ));
        };
        let mut transport = lock(device);
        balloon.set_target(pages);
        transport.config_changed();
        Ok(())
    }

    /// The balloon's target, what the guest holds and the counters, if the
    /// VM has a balloon.
    pub(crate) fn balloon_stats(&self) -> Option<BalloonStats> {
        self.balloon.as_ref().map(|b| b.stats())
    }

    /// Turns KVM's dirty-page logging on every memory slot on or off (a
    /// live migration copies what the guest wrote since the last round).
    /// Turning it on starts a fresh log.
    pub(crate) fn set_dirty_logging(&self, on: bool) -> Result<(), VmmError> {
        let flags = if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 };
        register_memory(&self.vm, &self.memory, flags)
    }

    /// The pages the vCPUs wrote since logging was turned on or since the
    /// last call (KVM_GET_DIRTY_LOG clears the log it returns).
    pub(crate) fn dirty_pages(&self) -> Result<PageSet, VmmError> {
        let mut set = PageSet::empty(self.memory_bytes() / 4096);
        for (slot, region) in self.memory.iter().enumerate() {
            let bitmap = self
                .vm
                .get_dirty_log(slot as u32, region.len() as usize)
                .map_err(kvm_err("KVM_GET_DIRTY_LOG"))?;
            let base = region.start_addr().raw_value() / 4096;
            for (word_index, &word) in bitmap.iter().enumerate() {
                let mut word = word;
                while word != 0 {
                    let bit = u64::from(word.trailing_zeros());
                    set.insert(base + word_index as u64 * 64 + bit);
                    word &= word - 1;
                }
            }
        }
        Ok(set)
    }

    /// Whether the VM has virtio devices (which write guest memory behind
    /// KVM's dirty log).
    pub(crate) fn has_virtio(&self) -> bool {
        !self.devices.virtio.is_empty()
    }

    /// Guest memory is anonymous (a migrated-in VM's), so snapshots and
    /// migrations may skip its never-populated pages.
    pub(crate) fn set_anonymous_memory(&mut self) {
        self.anonymous_memory = true;
    }

    /// Exit counts by reason.
    pub(crate) fn exit_counts(&self) -> BTreeMap<String, u64> {
        let c = &self.counters;
        [
            ("io_in", &c.io_in),
            ("io_out", &c.io_out),
            ("mmio", &c.mmio),
            ("hlt", &c.hlt),
            ("shutdown", &c.shutdown),
            ("intr", &c.intr),
            ("other", &c.other),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
        .collect()
    }

    /// CPU time of each vCPU thread, from its CPU-time clock (a jailed VMM
    /// has no `/proc`).
    pub(crate) fn vcpu_times_ns(&self) -> Vec<u64> {
        lock(&self.tids)
            .iter()
            .map(|tid| tid.and_then(thread_cpu_time_ns).unwrap_or(0))
            .collect()
    }

    /// Guest memory size in bytes.
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.memory.iter().map(|r| r.len()).sum()
    }
}

/// CPU time used by thread `tid` of this process (as `gettid` names it),
/// from its CPU-time clock: the scheduler's runtime, as the first field of
/// `/proc/self/task/TID/schedstat` shows it.
fn thread_cpu_time_ns(tid: u32) -> Option<u64> {
    // The kernel's MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED): the tid
    // inverted above three bits, per-thread (4) and scheduler time (2).
    let clock = ((!tid) << 3) as libc::clockid_t | 6;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes to the live local; a clock of a thread
    // that is gone or not this process's is refused (EINVAL).
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Registers every region of `memory` with `vm` as slot N (the N-th
/// region), with `flags` (0, or `KVM_MEM_LOG_DIRTY_PAGES`). Registering a
/// slot again with other flags changes only the flags.
fn register_memory(vm: &VmFd, memory: &GuestMemoryMmap, flags: u32) -> Result<(), VmmError> {
    for (slot, region) in memory.iter().enumerate() {
        let host = memory
            .get_host_address(region.start_addr())
            .map_err(|e| VmmError::internal("guest memory", e))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host..host+len` is a live mapping owned by `memory`, which
        // the Machine keeps until after the VM fd (field order) is closed.
        unsafe { vm.set_user_memory_region(desc) }.map_err(|e| VmmError::ResourceExhausted {
            message: format!("KVM_SET_USER_MEMORY_REGION failed: {e}"),
        })?;
    }
    Ok(())
}

fn new_evt() -> Result<EventFd, VmmError> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| VmmError::internal("eventfd", e))
}

struct VcpuThread {
    id: usize,
    vcpu: Arc<Mutex<VcpuFd>>,
    devices: Arc<Devices>,
    control: Arc<Control>,
    counters: Arc<ExitCounters>,
    tids: Arc<Mutex<Vec<Option<u32>>>>,
    events: Sender<GuestEvent>,
}

impl VcpuThread {
    fn run(self) {
        // SAFETY: gettid(2) takes no arguments and cannot fail.
        let tid = u32::try_from(unsafe { libc::gettid() }).ok();
        lock(&self.tids)[self.id] = tid;
        let c = &self.counters;
        // vCPU 0's first KVM_RUN and first exit come after the ready line:
        // they go into a second `timeline:` line of their own.
        let mut first = self.id == 0 && crate::timeline::enabled();
        while self.control.wait_runnable() {
            let mut vcpu = lock(&self.vcpu);
            if first {
                crate::timeline::mark("vcpu0:kvm-run");
            }
            let run = vcpu.run();
            if first {
                first = false;
                crate::timeline::mark("vcpu0:first-exit");
                if let Some(line) = crate::timeline::line() {
                    eprintln!("{line}");
                }
            }
            let event = match run {
                Ok(VcpuExit::IoOut(port, data)) => {
                    c.io_out.fetch_add(1, Ordering::Relaxed);
                    match self.devices.io_out(port, data) {
                        PortAction::Reset => Some(GuestEvent::Reset),
                        PortAction::PowerOff => Some(GuestEvent::PowerOff),
                        PortAction::Reboot => Some(GuestEvent::Reboot),
                        PortAction::None => None,
                    }
                }
                Ok(VcpuExit::IoIn(port, data)) => {
                    c.io_in.fetch_add(1, Ordering::Relaxed);
                    self.devices.io_in(port, data);
                    None
                }
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    c.mmio.fetch_add(1, Ordering::Relaxed);
                    self.devices.mmio_read(addr, data);
                    None
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    c.mmio.fetch_add(1, Ordering::Relaxed);
                    self.devices.mmio_write(addr, data);
                    None
                }
                Ok(VcpuExit::Hlt) => {
                    // With the in-kernel LAPIC KVM handles HLT itself; a HLT exit
                    // means the vCPU can never be woken.
                    c.hlt.fetch_add(1, Ordering::Relaxed);
                    Some(GuestEvent::Shutdown)
                }
                Ok(VcpuExit::Shutdown) => {
                    c.shutdown.fetch_add(1, Ordering::Relaxed);
                    Some(GuestEvent::Shutdown)
                }
                Ok(VcpuExit::Intr) => {
                    c.intr.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Ok(other) => {
                    c.other.fetch_add(1, Ordering::Relaxed);
                    Some(GuestEvent::Failed(format!(
                        "vCPU {} exit {other:?}",
                        self.id
                    )))
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    c.intr.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(e) => Some(GuestEvent::Failed(format!("vCPU {} KVM_RUN: {e}", self.id))),
            };
            drop(vcpu);
            if let Some(event) = event {
                let _ = self.events.send(event);
                self.control.finished();
                return;
            }
        }
        // wait_runnable() already counted this thread as parked.
    }
}

/// The name of vCPU `id`'s thread.
fn vcpu_thread(id: usize) -> String {
    format!("vcpu{id}")
}

/// The name of the devices' I/O thread.
const DEVICES_IO: &str = "devices-io";

/// The filter of the devices' I/O thread: the vsock thread's when there is
/// a vsock device (sockets to accept and connect), else the network
/// cards' (poll and read only).
fn devices_io_kind(vsock: bool) -> ThreadKind {
    if vsock {
        ThreadKind::Vsock
    } else {
        ThreadKind::NetRx
    }
}

/// The threads [`Machine::start`] runs for a machine of `config`, by name
/// and kind, to park ahead of it.
pub(crate) fn threads_of(config: &VmConfig) -> impl Iterator<Item = (String, ThreadKind)> {
    let io = (!config.nets.is_empty() || config.vsock.is_some()).then(|| {
        (
            DEVICES_IO.to_string(),
            devices_io_kind(config.vsock.is_some()),
        )
    });
    (0..usize::from(config.vcpus))
        .map(|id| (vcpu_thread(id), ThreadKind::Vcpu))
        .chain(io)
}
