//! Seccomp allow-lists per kind of VMM thread, built with rust-vmm's
//! `seccompiler` (the argument checks; the system call numbers are laid
//! out as a binary search here, see [`compact`], since an install's cost
//! grows with the instructions each number walks). Each thread installs
//! its own filter before it handles
//! anything the guest or a client controls; a syscall outside its list
//! kills the whole VMM (`SECCOMP_RET_KILL_PROCESS`, SIGSYS), which the
//! launcher records in `exit.json`.
//!
//! The lists were derived by tracing the VMM (`strace -f`) through every API
//! operation (boot, console attach and input, pause, resume, snapshot,
//! restore, stats, shutdown, guest reset, live migration out; receiving a
//! migration happens before any filter is on, like a restore's parsing).
//! Every thread is spawned before
//! the filters go on, so no list allows `clone`, `execve`, `open` of new
//! devices by ioctl, or executable memory; only the devices' I/O thread of a
//! VM with a vsock device may make
//! a socket (`AF_UNIX` only) and `connect` it, for guest connections to
//! the host.

use std::collections::BTreeMap;

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_dirty_log, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_userspace_memory_region, kvm_vcpu_events,
    kvm_xcrs, kvm_xsave, KVMIO,
};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr, ioctl_iowr_nr};

use crate::VmmError;

ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_iowr_nr!(KVM_GET_MSRS, KVMIO, 0x88, kvm_msrs);
ioctl_ior_nr!(KVM_GET_LAPIC, KVMIO, 0x8e, kvm_lapic_state);
ioctl_ior_nr!(KVM_GET_MP_STATE, KVMIO, 0x98, kvm_mp_state);
ioctl_ior_nr!(KVM_GET_VCPU_EVENTS, KVMIO, 0x9f, kvm_vcpu_events);
ioctl_ior_nr!(KVM_GET_DEBUGREGS, KVMIO, 0xa1, kvm_debugregs);
ioctl_ior_nr!(KVM_GET_XSAVE, KVMIO, 0xa4, kvm_xsave);
ioctl_ior_nr!(KVM_GET_XCRS, KVMIO, 0xa6, kvm_xcrs);
ioctl_iowr_nr!(KVM_GET_IRQCHIP, KVMIO, 0x62, kvm_irqchip);
ioctl_ior_nr!(KVM_GET_CLOCK, KVMIO, 0x7c, kvm_clock_data);
ioctl_ior_nr!(KVM_GET_PIT2, KVMIO, 0x9f, kvm_pit_state2);
ioctl_iow_nr!(
    KVM_SET_USER_MEMORY_REGION,
    KVMIO,
    0x46,
    kvm_userspace_memory_region
);
ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);

/// The kinds of thread in a VMM, each with its own allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadKind {
    /// The main thread: API requests, snapshots (vCPU state reads), pause
    /// kicks, stats, and the orderly shutdown.
    Api,
    /// One per vCPU: KVM_RUN and the port I/O it exits for (serial output).
    Vcpu,
    /// Accepts console readers and feeds their input to the UART.
    Console,
    /// Waits for the guest to stop, then stops the vCPUs and writes exit.json.
    Lifecycle,
    /// The devices' I/O thread of a VM with network cards and no vsock
    /// device: polls the TAPs and kick eventfds, reads frames into the
    /// guest's receive buffers and raises the interrupts.
    NetRx,
    /// The devices' I/O thread of a VM with a vsock device (and the
    /// network cards', whose calls are a subset): also polls its host
    /// socket, its connections and its kick eventfd, accepts host streams,
    /// connects guest connections to `AF_UNIX` sockets, and moves packets
    /// through its queues.
    Vsock,
}

/// A rule on arguments that are all C `int`s (ioctl and fcntl commands,
/// `prot`, pids, signals, socket domains): the kernel reads only their low
/// 32 bits, so only those are compared (half the instructions of a 64-bit
/// comparison, as Firecracker's filters do).
fn rule(conditions: Vec<(u8, SeccompCmpOp, u64)>) -> Result<SeccompRule, VmmError> {
    let conditions = conditions
        .into_iter()
        .map(|(arg, op, value)| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| VmmError::internal("building a seccomp rule", e))?;
    SeccompRule::new(conditions).map_err(|e| VmmError::internal("building a seccomp rule", e))
}

/// `ioctl(fd, request, ...)` for each request in `requests` only.
fn ioctls(requests: &[u64]) -> Result<Vec<SeccompRule>, VmmError> {
    requests
        .iter()
        .map(|&r| rule(vec![(1, SeccompCmpOp::Eq, r)]))
        .collect()
}

/// Syscalls every thread makes: memory (never executable), locks, its own
/// signals and exit, time.
fn common(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), VmmError> {
    let no_exec = || rule(vec![(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)]);
    rules.insert(libc::SYS_mmap, vec![no_exec()?]);
    rules.insert(libc::SYS_mprotect, vec![no_exec()?]);
    // madvise only to drop pages: the allocator's trims (glibc's
    // MADV_DONTNEED, musl's MADV_FREE) and, on the vCPU threads, the
    // balloon giving inflated guest pages back (MADV_DONTNEED). Nothing
    // that keeps pages across fork, merges them or remaps them.
    rules.insert(
        libc::SYS_madvise,
        vec![
            rule(vec![(2, SeccompCmpOp::Eq, libc::MADV_DONTNEED as u64)])?,
            rule(vec![(2, SeccompCmpOp::Eq, libc::MADV_FREE as u64)])?,
        ],
    );
    for nr in [
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_getrandom,
        libc::SYS_write,
        libc::SYS_close,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ] {
        rules.insert(nr, vec![]);
    }
    // Debug builds check that a descriptor is open before closing it.
    rules.insert(libc::SYS_fcntl, fcntls(&[libc::F_GETFD])?);
    // Only the vCPU kick and abort() (a panic) may be signalled, and only to
    // this process's own threads.
    // SAFETY: getpid(2) takes no arguments and cannot fail.
    let me = unsafe { libc::getpid() } as u64;
    let kick = vmm_sys_util::signal::SIGRTMIN() as u64;
    rules.insert(
        libc::SYS_tgkill,
        vec![
            rule(vec![(0, SeccompCmpOp::Eq, me), (2, SeccompCmpOp::Eq, kick)])?,
            rule(vec![
                (0, SeccompCmpOp::Eq, me),
                (2, SeccompCmpOp::Eq, libc::SIGABRT as u64),
            ])?,
        ],
    );
    Ok(())
}

/// Writing `exit.json` and removing the sockets (Api and Lifecycle), and
/// snapshot files handed over by the client (Api).
fn files(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) {
    for nr in [
        libc::SYS_openat,
        libc::SYS_read,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_lseek,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_ftruncate,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_rename,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
    ] {
        rules.insert(nr, vec![]);
    }
}

/// `fcntl(fd, cmd, ...)` for each command in `cmds` only.
fn fcntls(cmds: &[libc::c_int]) -> Result<Vec<SeccompRule>, VmmError> {
    cmds.iter()
        .map(|&c| rule(vec![(1, SeccompCmpOp::Eq, c as u64)]))
        .collect()
}

/// Accepting console readers (Api and Console).
fn console_sockets(rules: &mut BTreeMap<i64, Vec<SeccompRule>>) -> Result<(), VmmError> {
    for nr in [
        libc::SYS_accept4,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_read,
        libc::SYS_recvfrom,
        libc::SYS_setsockopt,
    ] {
        rules.insert(nr, vec![]);
    }
    // A reader's output side is a dup of its socket (try_clone).
    rules.insert(
        libc::SYS_fcntl,
        fcntls(&[libc::F_GETFD, libc::F_DUPFD_CLOEXEC])?,
    );
    // set_nonblocking is FIONBIO.
    rules.insert(libc::SYS_ioctl, ioctls(&[libc::FIONBIO])?);
    Ok(())
}

/// The filter of a `kind` thread.
pub(crate) fn filter(kind: ThreadKind) -> Result<BpfProgram, VmmError> {
    compact(rules(kind)?)
}

/// The allow-list of a `kind` thread: system call number to the argument
/// checks of which one must pass (none: any arguments).
fn rules(kind: ThreadKind) -> Result<BTreeMap<i64, Vec<SeccompRule>>, VmmError> {
    let mut rules = BTreeMap::new();
    common(&mut rules)?;
    match kind {
        ThreadKind::Vcpu => {
            rules.insert(libc::SYS_ioctl, ioctls(&[KVM_RUN()])?);
            // Serial output to console readers (send with MSG_NOSIGNAL).
            rules.insert(libc::SYS_sendto, vec![]);
            // virtio-block requests, run on the notifying vCPU: reads,
            // writes and flushes of the already open disk files. A
            // virtio-net transmit is a `write` to the TAP (common list).
            rules.insert(libc::SYS_pread64, vec![]);
            rules.insert(libc::SYS_pwrite64, vec![]);
            rules.insert(libc::SYS_fdatasync, vec![]);
        }
        ThreadKind::Console => console_sockets(&mut rules)?,
        ThreadKind::NetRx => {
            // poll on the TAP and the kick eventfd, read from both (the
            // irqfd write is in the common list).
            for nr in [libc::SYS_poll, libc::SYS_ppoll, libc::SYS_read] {
                rules.insert(nr, vec![]);
            }
        }
        ThreadKind::Vsock => {
            for nr in [
                libc::SYS_poll,
                libc::SYS_ppoll,
                libc::SYS_read,
                libc::SYS_recvfrom,
                libc::SYS_sendto,
                libc::SYS_accept4,
                libc::SYS_connect,
                libc::SYS_shutdown,
            ] {
                rules.insert(nr, vec![]);
            }
            // A guest connection to the host is a new Unix socket, and
            // nothing else: with only AF_UNIX sockets to connect, it
            // reaches only sockets the jail shows (its run directory).
            rules.insert(
                libc::SYS_socket,
                vec![rule(vec![(0, SeccompCmpOp::Eq, libc::AF_UNIX as u64)])?],
            );
            // set_nonblocking is FIONBIO.
            rules.insert(libc::SYS_ioctl, ioctls(&[libc::FIONBIO])?);
        }
        ThreadKind::Lifecycle => files(&mut rules),
        ThreadKind::Api => {
            files(&mut rules);
            console_sockets(&mut rules)?;
            rules.insert(libc::SYS_recvmsg, vec![]);
            rules.insert(libc::SYS_sendto, vec![]);
            rules.insert(
                libc::SYS_ioctl,
                ioctls(&[
                    libc::FIONBIO,
                    KVM_GET_REGS(),
                    KVM_GET_SREGS(),
                    KVM_GET_MSRS(),
                    KVM_GET_LAPIC(),
                    KVM_GET_MP_STATE(),
                    KVM_GET_VCPU_EVENTS(),
                    KVM_GET_DEBUGREGS(),
                    KVM_GET_XSAVE(),
                    KVM_GET_XCRS(),
                    KVM_GET_IRQCHIP(),
                    KVM_GET_CLOCK(),
                    KVM_GET_PIT2(),
                    // Live migration (the API thread sends it): dirty-page
                    // logging is turned on and off by registering guest
                    // memory again with other flags (the same slots and
                    // host mapping; a different mapping is not something
                    // this thread ever asks for), and the log is read
                    // once per copy round.
                    KVM_SET_USER_MEMORY_REGION(),
                    KVM_GET_DIRTY_LOG(),
                ])?,
            );
        }
    }
    Ok(rules)
}

/// seccompiler's program for `rules`, as it lays it out.
fn seccompiler_program(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, VmmError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| VmmError::internal("building the seccomp filter", e))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| {
        VmmError::internal("compiling the seccomp filter", e)
    })
}

/// `AUDIT_ARCH_X86_64`: the only ABI a filter lets through.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
/// Classic BPF opcodes (linux/bpf_common.h): `BPF_LD | BPF_W | BPF_ABS`
/// (both 0 but the last), `BPF_JMP | BPF_JEQ | BPF_K`,
/// `BPF_JMP | BPF_JGE | BPF_K`, `BPF_RET | BPF_K`.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Where a system call listed in a filter goes once its number matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    /// Allowed whatever its arguments.
    Allowed,
    /// To seccompiler's program, which checks its arguments.
    Checked,
}

/// An instruction of [`compact`]'s search tree, its jumps not yet
/// resolved to offsets.
#[derive(Debug, Clone, Copy)]
enum Node {
    /// The number is `nr`: go where a `Listed` goes, else on.
    Is(u32, Listed),
    /// The number is at least `nr`: skip this many instructions (the
    /// subtree of the numbers below it), else on.
    AtLeast(u32, usize),
    /// Not listed: kill.
    Kill,
}

/// How many numbers a leaf of the tree compares one by one.
const LEAF: usize = 3;

/// Appends to `tree` a binary search over `listed` (sorted by number): at
/// most [`LEAF`] comparisons at a leaf, then `Kill`. One vector for the
/// whole tree: each VMM thread compiles its filter while the others start.
fn search_tree(listed: &[(u32, Listed)], tree: &mut Vec<Node>) {
    if listed.len() <= LEAF {
        tree.extend(listed.iter().map(|&(nr, to)| Node::Is(nr, to)));
        tree.push(Node::Kill);
        return;
    }
    let (below, rest) = listed.split_at(listed.len() / 2);
    let at = tree.len();
    tree.push(Node::AtLeast(rest[0].0, 0));
    search_tree(below, tree);
    // The numbers from `rest[0]` up skip the subtree just appended.
    tree[at] = Node::AtLeast(rest[0].0, tree.len() - at - 1);
    search_tree(rest, tree);
}

/// Compiles `rules` into a program with the same verdict as seccompiler's
/// for every system call, laid out for the cost of installing it. On each
/// install the kernel runs the program once per system call number (~460)
/// with the arguments unknown, to cache which numbers are always allowed:
/// that walk, not the conversion or the JIT, is most of an install, and
/// every VMM thread installs a filter on the boot path. seccompiler
/// compares the number against each listed call in turn (five
/// instructions each), so every number walks the whole list. Here a
/// binary search over the listed numbers decides in a handful of
/// instructions: allowed whatever the arguments (one shared `allow`),
/// killed, or on to seccompiler's program for the calls whose arguments
/// are checked (appended whole, with its own architecture check).
fn compact(rules: BTreeMap<i64, Vec<SeccompRule>>) -> Result<BpfProgram, VmmError> {
    let listed: Vec<(u32, Listed)> = rules
        .iter()
        .map(|(&nr, rules)| {
            let to = if rules.is_empty() {
                Listed::Allowed
            } else {
                Listed::Checked
            };
            u32::try_from(nr)
                .map(|nr| (nr, to))
                .map_err(|e| VmmError::internal("a syscall number", e))
        })
        .collect::<Result<_, _>>()?;
    let checked: BTreeMap<_, _> = rules
        .into_iter()
        .filter(|(_, rules)| !rules.is_empty())
        .collect();
    let mut tree = Vec::with_capacity(2 * listed.len());
    search_tree(&listed, &mut tree);
    let kill = u32::from(SeccompAction::KillProcess);
    let allow = u32::from(SeccompAction::Allow);
    let mut program = vec![
        insn(BPF_LD_W_ABS, 0, 0, DATA_ARCH),
        insn(BPF_JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        insn(BPF_RET_K, 0, 0, kill),
        insn(BPF_LD_W_ABS, 0, 0, DATA_NR),
    ];
    // After the tree: `allow`, then seccompiler's program. Jump offsets
    // are 8 bits, counted from the next instruction.
    let offset = |from: usize, to: usize| {
        u8::try_from(to - from - 1).map_err(|_| {
            VmmError::internal(
                "compiling the seccomp filter",
                format!("{} system calls: a jump is too long", listed.len()),
            )
        })
    };
    let (allow_at, checked_at) = (tree.len(), tree.len() + 1);
    for (at, node) in tree.iter().enumerate() {
        program.push(match *node {
            Node::Is(nr, Listed::Allowed) => insn(BPF_JMP_JEQ_K, offset(at, allow_at)?, 0, nr),
            Node::Is(nr, Listed::Checked) => insn(BPF_JMP_JEQ_K, offset(at, checked_at)?, 0, nr),
            Node::AtLeast(nr, skip) => insn(BPF_JMP_JGE_K, offset(at, at + 1 + skip)?, 0, nr),
            Node::Kill => insn(BPF_RET_K, 0, 0, kill),
        });
    }
    program.push(insn(BPF_RET_K, 0, 0, allow));
    program.extend(seccompiler_program(checked)?);
    Ok(program)
}

/// Installs the filter of `kind` on the calling thread (and sets
/// no_new_privs, which seccomp needs without CAP_SYS_ADMIN).
pub(crate) fn install(kind: ThreadKind) -> Result<(), VmmError> {
    let program = match PREPARED[kind as usize].get() {
        Some(program) => program.clone(),
        None => filter(kind)?,
    };
    if crate::timeline::enabled() {
        crate::timeline::mark(format!("{}:compiled", current_name()));
    }
    seccompiler::apply_filter(&program)
        .map_err(|e| VmmError::internal(format!("installing the {kind:?} seccomp filter"), e))
}

/// Filters compiled ahead of their install ([`prepare`]), by kind.
static PREPARED: [std::sync::OnceLock<BpfProgram>; KIND_COUNT] =
    [const { std::sync::OnceLock::new() }; KIND_COUNT];
const KIND_COUNT: usize = 6;

/// Compiles `kind`'s filter now, for a later [`install`] on another
/// thread: a parked thread, idle once filtered until its body comes, does
/// it for the main thread, whose install after the ready line then has no
/// compile to wait for. A failure is left for that install to meet.
pub(crate) fn prepare(kind: ThreadKind) {
    if let Ok(program) = filter(kind) {
        let _ = PREPARED[kind as usize].set(program);
    }
}

/// The calling thread's name, for the timeline.
fn current_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// A thread spawned by [`spawn`], until it has its filter.
#[must_use = "wait() before the VMM reads a request: the thread may still run unfiltered"]
pub(crate) struct Installing {
    name: String,
    installed: std::sync::mpsc::Receiver<Result<(), VmmError>>,
}

impl Installing {
    /// Returns once the thread has installed its filter (its body runs only
    /// after that), or the error that kept it from doing so.
    pub(crate) fn wait(self) -> Result<(), VmmError> {
        self.installed.recv().unwrap_or_else(|_| {
            Err(VmmError::internal(
                format!("thread {}", self.name),
                "ended before installing its seccomp filter",
            ))
        })
    }
}

/// A thread started before its work exists: it installs its filter at
/// once, then waits for its body ([`Parked::run`]). Parked right after
/// the jail's privilege drop, a fresh boot's threads start and install
/// their filters on the other CPU while the VMM creates the bare VM and
/// builds the machine, instead of all at once just before it reports
/// ready (each install is ~0.06-0.1 ms of kernel work here, each thread
/// start as much again).
pub(crate) struct Parked {
    name: String,
    kind: Option<ThreadKind>,
    handle: std::thread::JoinHandle<()>,
    body: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
    installing: Installing,
}

impl Parked {
    /// Starts thread `name`, which installs `kind`'s filter (none: no
    /// filter) and then waits for its body; dropped without one, it exits.
    pub(crate) fn start(name: String, kind: Option<ThreadKind>) -> Result<Parked, VmmError> {
        let (installed, installing) = std::sync::mpsc::channel();
        let (body, bodies) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        if crate::timeline::enabled() {
            crate::timeline::mark(format!("{name}:spawn"));
        }
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if crate::timeline::enabled() {
                    crate::timeline::mark(format!("{}:run", current_name()));
                }
                let result = kind.map_or(Ok(()), install);
                if crate::timeline::enabled() {
                    crate::timeline::mark(format!("{}:filter", current_name()));
                }
                let ok = result.is_ok();
                let _ = installed.send(result);
                // The jobs and the body run only once the filter is on.
                while let (true, Ok(job)) = (ok, bodies.recv()) {
                    job();
                }
            })
            .map_err(|e| VmmError::ResourceExhausted {
                message: format!("cannot spawn thread {name}: {e}"),
            })?;
        Ok(Parked {
            installing: Installing {
                name: name.clone(),
                installed: installing,
            },
            name,
            kind,
            handle,
            body,
        })
    }

    /// Hands the thread a job to run, once its filter is on, before its
    /// body.
    pub(crate) fn prepare(&self, job: impl FnOnce() + Send + 'static) {
        let _ = self.body.send(Box::new(job));
    }

    /// Hands the thread `body`, which it runs once its filter is on.
    /// Returns without waiting for the install: the caller must wait on
    /// the [`Installing`] before anything a client or the guest controls
    /// runs.
    pub(crate) fn run(
        self,
        body: impl FnOnce() + Send + 'static,
    ) -> (std::thread::JoinHandle<()>, Installing) {
        // A thread whose install failed has stopped listening: its
        // `Installing` reports why.
        let _ = self.body.send(Box::new(body));
        (self.handle, self.installing)
    }
}

/// The VMM's threads: the ones parked ahead of their work, and whether
/// threads are filtered at all ([`Confinement::seccomp`]).
///
/// [`Confinement::seccomp`]: crate::Confinement::seccomp
pub(crate) struct Threads {
    filtered: bool,
    parked: Vec<Parked>,
}

impl Threads {
    pub(crate) fn new(filtered: bool) -> Threads {
        Threads {
            filtered,
            parked: Vec::new(),
        }
    }

    /// Starts a thread `name` of `kind` now, for a later [`Threads::run`]
    /// of the same name and kind.
    pub(crate) fn park(&mut self, name: String, kind: ThreadKind) -> Result<(), VmmError> {
        let parked = Parked::start(name, self.filtered.then_some(kind))?;
        self.parked.push(parked);
        Ok(())
    }

    /// Hands the thread parked as `name`, if there is one, a job to run
    /// while it waits for its body.
    pub(crate) fn prepare_on(&self, name: &str, job: impl FnOnce() + Send + 'static) {
        if let Some(parked) = self.parked.iter().find(|p| p.name == name) {
            parked.prepare(job);
        }
    }

    /// Runs `body` on thread `name` once it has `kind`'s filter: on the
    /// thread parked for it, else on a new one. Returns without waiting
    /// for the install, so that several threads install theirs at the same
    /// time; the caller waits on every [`Installing`] before the guest
    /// runs or the VMM reads its first request, so nothing a client or the
    /// guest controls runs while any thread is unfiltered.
    pub(crate) fn run(
        &mut self,
        name: String,
        kind: ThreadKind,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(std::thread::JoinHandle<()>, Installing), VmmError> {
        let kind = self.filtered.then_some(kind);
        let parked = match self
            .parked
            .iter()
            .position(|p| p.name == name && p.kind == kind)
        {
            Some(at) => self.parked.swap_remove(at),
            None => Parked::start(name, kind)?,
        };
        Ok(parked.run(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_kind_has_a_filter() {
        assert_eq!(KINDS.len(), KIND_COUNT);
        for kind in KINDS {
            assert!(!filter(kind).unwrap().is_empty(), "{kind:?}");
        }
    }

    const KINDS: [ThreadKind; 6] = [
        ThreadKind::Api,
        ThreadKind::Vcpu,
        ThreadKind::Console,
        ThreadKind::Lifecycle,
        ThreadKind::NetRx,
        ThreadKind::Vsock,
    ];

    /// Runs a classic BPF program (the instructions seccompiler and
    /// [`compact`] emit) on `data` as the kernel would.
    fn run(program: &[sock_filter], data: &[u32; 16]) -> u32 {
        let (verdict, _) = walk(program, |k| Some(data[k as usize / 4]));
        verdict.unwrap_or_else(|| panic!("no verdict"))
    }

    /// Walks `program` as the kernel would, loading words with `load`, up
    /// to a verdict or to a load `load` refuses: the verdict, if any, and
    /// the instructions walked.
    fn walk(program: &[sock_filter], load: impl Fn(u32) -> Option<u32>) -> (Option<u32>, usize) {
        let (mut pc, mut a, mut steps) = (0usize, 0u32, 0);
        loop {
            let i = &program[pc];
            pc += 1;
            steps += 1;
            let jump = |taken: bool| usize::from(if taken { i.jt } else { i.jf });
            match i.code {
                0x20 => match load(i.k) {
                    Some(word) => a = word,
                    None => return (None, steps),
                },
                0x54 => a &= i.k,
                0x05 => pc += i.k as usize,
                0x15 => pc += jump(a == i.k),
                0x25 => pc += jump(a > i.k),
                0x35 => pc += jump(a >= i.k),
                0x45 => pc += jump(a & i.k != 0),
                0x06 => return (Some(i.k), steps),
                other => panic!("opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    /// `struct seccomp_data` as 32-bit words: nr, arch, ip, six arguments.
    fn data(arch: u32, nr: u32, args: [u64; 6]) -> [u32; 16] {
        let mut d = [0u32; 16];
        d[0] = nr;
        d[1] = arch;
        for (i, arg) in args.iter().enumerate() {
            d[4 + 2 * i] = *arg as u32;
            d[5 + 2 * i] = (*arg >> 32) as u32;
        }
        d
    }

    /// The instructions the kernel's install walks for system call `nr`
    /// to learn whether it is always allowed (`seccomp_is_const_allow`):
    /// up to a verdict or the first load of an argument.
    fn install_walk(program: &[sock_filter], nr: u32) -> usize {
        let (_, steps) = walk(program, |k| match k {
            DATA_NR => Some(nr),
            DATA_ARCH => Some(AUDIT_ARCH_X86_64),
            _ => None,
        });
        steps
    }

    #[test]
    fn an_install_walks_few_instructions_per_system_call() {
        for kind in KINDS {
            let compact = filter(kind).unwrap();
            let reference = seccompiler_program(rules(kind).unwrap()).unwrap();
            let walked = |program: &[sock_filter]| -> usize {
                (0..=470).map(|nr| install_walk(program, nr)).sum()
            };
            let (ours, theirs) = (walked(&compact), walked(&reference));
            let longest = (0..=470).map(|nr| install_walk(&compact, nr)).max();
            // 4 to load and check the ABI, ~6 to search ~50 calls, a leaf
            // of 3; a checked call then walks seccompiler's program to its
            // first argument check (up to ~30).
            assert!(longest <= Some(48), "{kind:?}: {longest:?}");
            // The API filter: 5,237 against 51,739; the vCPUs' (the
            // shortest list): 4,752 against 28,405.
            assert!(
                ours * 5 < theirs,
                "{kind:?}: {ours} instructions walked against seccompiler's {theirs}"
            );
        }
    }

    #[test]
    fn the_compact_program_gives_seccompilers_verdict_for_every_call() {
        // SAFETY: getpid(2) takes no arguments and cannot fail.
        let me = u64::from(unsafe { libc::getpid() } as u32);
        let values = [
            0,
            1,
            me,
            me + 1,
            libc::PROT_EXEC as u64,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            libc::SIGABRT as u64,
            vmm_sys_util::signal::SIGRTMIN() as u64,
            libc::F_GETFD as u64,
            libc::F_DUPFD_CLOEXEC as u64,
            libc::F_SETFL as u64,
            libc::FIONBIO,
            libc::AF_UNIX as u64,
            libc::AF_INET as u64,
            KVM_RUN(),
            KVM_RUN() | 1 << 32,
            KVM_GET_REGS(),
            KVM_SET_USER_MEMORY_REGION(),
            KVM_GET_DIRTY_LOG() + 1,
        ];
        for kind in KINDS {
            let compact = filter(kind).unwrap();
            let reference = seccompiler_program(rules(kind).unwrap()).unwrap();
            assert!(
                compact.len() < reference.len(),
                "{kind:?}: {} against {} instructions",
                compact.len(),
                reference.len()
            );
            let mut allowed = 0;
            for arch in [AUDIT_ARCH_X86_64, 0x4000_0003] {
                for nr in (0..=470).chain((0..=470).map(|n| n | 0x4000_0000)) {
                    for (i, &value) in values.iter().enumerate() {
                        // The value in each argument, with a second one
                        // beside it (tgkill's pid and signal).
                        for arg in 0..6 {
                            let mut args = [0u64; 6];
                            args[arg] = value;
                            args[(arg + 2) % 6] = values[(i + 7) % values.len()];
                            let d = data(arch, nr, args);
                            let verdict = run(&compact, &d);
                            assert_eq!(
                                verdict,
                                run(&reference, &d),
                                "{kind:?}: arch {arch:#x} nr {nr} args {args:?}"
                            );
                            allowed += usize::from(verdict == u32::from(SeccompAction::Allow));
                        }
                    }
                }
            }
            assert!(allowed > 0, "{kind:?} allows nothing");
        }
        // tgkill to this process with the kick signal: allowed; to another: not.
        let vcpu = filter(ThreadKind::Vcpu).unwrap();
        let kick = vmm_sys_util::signal::SIGRTMIN() as u64;
        let tgkill = |pid| {
            let d = data(
                AUDIT_ARCH_X86_64,
                libc::SYS_tgkill as u32,
                [pid, 7, kick, 0, 0, 0],
            );
            run(&vcpu, &d)
        };
        assert_eq!(tgkill(me), u32::from(SeccompAction::Allow));
        assert_eq!(tgkill(me + 1), u32::from(SeccompAction::KillProcess));
        // The balloon's release on a vCPU: MADV_DONTNEED only.
        let madvise = |advice: i32| {
            let d = data(
                AUDIT_ARCH_X86_64,
                libc::SYS_madvise as u32,
                [0x7000_0000, 4096, advice as u64, 0, 0, 0],
            );
            run(&vcpu, &d)
        };
        assert_eq!(
            madvise(libc::MADV_DONTNEED),
            u32::from(SeccompAction::Allow)
        );
        for advice in [libc::MADV_REMOVE, libc::MADV_DOFORK, libc::MADV_MERGEABLE] {
            assert_eq!(
                madvise(advice),
                u32::from(SeccompAction::KillProcess),
                "{advice}"
            );
        }
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        assert_eq!(KVM_RUN(), 0xae80);
        assert_eq!(KVM_GET_REGS(), 0x8090_ae81);
    }
}
