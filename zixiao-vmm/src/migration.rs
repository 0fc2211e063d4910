//! Live migration, pre-copy: the wire format, the sending side (a running
//! VM's API thread) and the receiving side (a VMM launched with
//! [`Boot::Incoming`](crate::Boot::Incoming)).
//!
//! A migration is a snapshot sent over a stream socket, with guest memory
//! copied while the guest runs:
//! 1. the source turns on KVM dirty-page logging (`KVM_MEM_LOG_DIRTY_PAGES`
//!    on every memory slot) and sends the config, then every populated,
//!    non-zero page (round 1);
//! 2. each later round sends the pages KVM logged as dirty since the round
//!    before (`KVM_GET_DIRTY_LOG`), until what is left could be sent within
//!    the downtime target at the throughput measured so far, or until
//!    `max_rounds`. Not converged and not forced: the source sends an
//!    abort, turns logging off, and the VM keeps running as if nothing
//!    happened; the error says why (rounds, MiB dirtied in the last round,
//!    the throughput, the target);
//! 3. stop-and-copy: the vCPUs (and the devices' I/O thread) park, the last
//!    dirty pages and the snapshot's `MachineState` (vCPUs, irqchip, PIT,
//!    clock, serial, virtio transports) go out, and the source waits for
//!    the target's ack (restored, ready to run). On the ack the source
//!    commits: it sends `COMMIT` and ends for good (exit reason
//!    `migrated`), and only on `COMMIT` does the target resume. Anything
//!    else before the commit (the target dies, the stream breaks, the
//!    target refuses) resumes the source, and a target that gets no commit
//!    exits without ever running the guest: never two running copies. (A
//!    source that dies between the ack and the commit leaves none.)
//!
//! Pages the VMM itself writes into guest memory (virtio used rings and
//! the buffers of completed requests, written by device emulation and not
//! by a vCPU) do not show in KVM's dirty log. Rather than track every
//! device write, the final round of a VM that has virtio devices resends
//! every populated page (every page, for a VM restored from a snapshot,
//! whose memory is a file mapping): correct for any device, at the price of
//! a longer downtime for such VMs (the convergence estimate counts it). VMs
//! without devices (the test guest) pay nothing.
//!
//! Wire format (integers little-endian): the 8-byte [`MIGRATION_MAGIC`] and
//! a `u32` [`MIGRATION_VERSION`], then frames of `kind: u8, len: u32,
//! payload[len]`:
//! - `HELLO` (source, first): JSON `{config, memory_bytes, running}`; the target
//!   refuses a config whose memory, vCPUs, disks or network cards differ
//!   from its own;
//! - `PAGES` (source): `gpa: u64` then whole 4 KiB pages, at most 1 MiB;
//! - `STATE` (source, last): JSON `MachineState`, as in a snapshot;
//! - `ABORT` (either side): a UTF-8 reason, at most 4 KiB;
//! - `ACK` (target): empty, the machine is restored and ready to run (or
//!   to stay paused, if it was paused at the source);
//! - `COMMIT` (source, after the ack): empty, the source has ended: the
//!   target may run the guest.
//!
//! The target checks every length against the bound of its kind before it
//! allocates or reads the payload, and every page range against guest
//! memory; a malformed, hostile or truncated stream is an
//! `InvalidArgument` naming what was wrong, never a panic.
//!
//! The stream is any connected stream socket the client hands over:
//! [`VmmClient::migrate`](crate::VmmClient::migrate) connects to the
//! target's `migrate.sock` (Unix); a TCP socket made elsewhere can be
//! passed with `migrate_over` (tested through a TCP connection that the
//! test bridges to the target's Unix socket). A receiving VMM listens on
//! its Unix socket only (a node agent can bridge TCP to it).

use std::io::{BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::machine::{Machine, MachineState};
use crate::{VmConfig, VmmError};

/// The first bytes of a migration stream.
pub const MIGRATION_MAGIC: [u8; 8] = *b"ZXVMMIG\0";
/// The protocol version this build speaks (and the only one it reads).
/// Version 2 added the source's `COMMIT` after the target's ack.
pub const MIGRATION_VERSION: u32 = 2;

const PAGE: u64 = 4096;
/// Pages per `PAGES` frame at most.
const FRAME_PAGES: u64 = 256;
const MAX_HELLO: u32 = 1 << 20;
const MAX_PAGES: u32 = 8 + (FRAME_PAGES * PAGE) as u32;
const MAX_ABORT: u32 = 4096;
/// A peer that sends nothing (or takes nothing) for this long is gone.
const STREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest `max_rounds` a caller may ask for.
pub const MAX_MIGRATION_ROUNDS: u32 = 1000;
/// The largest downtime target a caller may ask for.
pub const MAX_DOWNTIME_MS: u32 = 60_000;

mod kind {
    pub(super) const HELLO: u8 = 1;
    pub(super) const PAGES: u8 = 2;
    pub(super) const STATE: u8 = 3;
    pub(super) const ABORT: u8 = 4;
    pub(super) const ACK: u8 = 5;
    pub(super) const COMMIT: u8 = 6;
}

/// How a live migration may go: at most `max_rounds` copy rounds while the
/// guest runs, and a downtime target for the final stop-and-copy. Built by
/// [`MigrationParams::new`], and checked again when the VMM decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawParams")]
pub struct MigrationParams {
    max_rounds: u32,
    downtime_ms: u32,
    force: bool,
}

#[derive(Deserialize)]
struct RawParams {
    max_rounds: u32,
    downtime_ms: u32,
    #[serde(default)]
    force: bool,
}

impl TryFrom<RawParams> for MigrationParams {
    type Error = VmmError;

    fn try_from(raw: RawParams) -> Result<Self, VmmError> {
        let params = MigrationParams::new(raw.max_rounds, raw.downtime_ms)?;
        Ok(if raw.force { params.forced() } else { params })
    }
}

impl MigrationParams {
    /// At most `max_rounds` (1 to [`MAX_MIGRATION_ROUNDS`]) copy rounds,
    /// stopping the guest only when the rest fits in `downtime_ms` (1 to
    /// [`MAX_DOWNTIME_MS`]). Errors: `InvalidArgument` naming the field.
    ///
    /// ```
    /// let p = zixiao_vmm::MigrationParams::new(10, 50).unwrap();
    /// assert_eq!((p.max_rounds(), p.downtime_ms(), p.force()), (10, 50, false));
    /// assert!(zixiao_vmm::MigrationParams::new(0, 50).is_err());
    /// ```
    pub fn new(max_rounds: u32, downtime_ms: u32) -> Result<MigrationParams, VmmError> {
        if !(1..=MAX_MIGRATION_ROUNDS).contains(&max_rounds) {
            return Err(VmmError::invalid(
                "max_rounds",
                format!("{max_rounds}, must be 1 to {MAX_MIGRATION_ROUNDS}"),
            ));
        }
        if !(1..=MAX_DOWNTIME_MS).contains(&downtime_ms) {
            return Err(VmmError::invalid(
                "downtime_ms",
                format!("{downtime_ms}, must be 1 to {MAX_DOWNTIME_MS}"),
            ));
        }
        Ok(MigrationParams {
            max_rounds,
            downtime_ms,
            force: false,
        })
    }

    /// The same, but when the rounds run out without converging the guest
    /// is stopped anyway (a downtime longer than the target) instead of
    /// the migration failing.
    pub fn forced(self) -> MigrationParams {
        MigrationParams {
            force: true,
            ..self
        }
    }

    /// Copy rounds at most.
    pub fn max_rounds(&self) -> u32 {
        self.max_rounds
    }

    /// The downtime target in milliseconds.
    pub fn downtime_ms(&self) -> u32 {
        self.downtime_ms
    }

    /// Whether a migration that does not converge stops the guest anyway.
    pub fn force(&self) -> bool {
        self.force
    }
}

impl std::fmt::Display for MigrationParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max_rounds {} downtime {} ms{}",
            self.max_rounds,
            self.downtime_ms,
            if self.force { " forced" } else { "" }
        )
    }
}

/// What a completed migration did, as the source measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// Copy rounds while the guest ran (round 1 is the full copy).
    pub rounds: u32,
    /// Whether the rest fitted the downtime target (false only when forced).
    pub converged: bool,
    /// From the request to the target's ack.
    pub total_ms: u64,
    /// From pausing the vCPUs to the target's ack: the guest ran nowhere.
    pub downtime_ms: u64,
    /// Guest memory bytes sent, every round together.
    pub memory_bytes_sent: u64,
    /// Bytes of round 1 (every populated, non-zero page).
    pub first_round_bytes: u64,
    /// Bytes of the final stop-and-copy round's pages.
    pub final_bytes: u64,
    /// Throughput of the copy rounds, MiB/s.
    pub throughput_mib_s: f64,
}

#[derive(Serialize, Deserialize)]
struct Hello {
    config: VmConfig,
    memory_bytes: u64,
    /// The guest was running (not paused) when the migration began: the
    /// target resumes it, or leaves it paused as it was.
    running: bool,
}

/// What a target received: the final machine state, and whether the guest
/// was running at the source.
pub(crate) struct Received {
    pub machine: MachineState,
    pub running: bool,
}

fn stream_err(what: &str, err: std::io::Error) -> VmmError {
    VmmError::Unavailable {
        message: format!("migration stream, {what}: {err}"),
    }
}

/// One frame out: kind, length, payload parts.
fn write_frame(out: &mut impl Write, kind: u8, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(std::io::Error::other)?;
    out.write_all(&[kind])?;
    out.write_all(&len.to_le_bytes())?;
    for part in parts {
        out.write_all(part)?;
    }
    Ok(())
}

/// One frame in: its kind and length, the length checked against the bound
/// of the kind before anything is allocated. `None` at a clean end of stream.
fn read_frame_header(input: &mut impl Read) -> Result<Option<(u8, u32)>, VmmError> {
    let mut head = [0u8; 5];
    match input.read(&mut head[..1]) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(e) => return Err(stream_err("reading a frame", e)),
    }
    input
        .read_exact(&mut head[1..])
        .map_err(|e| truncated("a frame header", e))?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let (name, max) = match head[0] {
        kind::HELLO => ("hello", MAX_HELLO),
        kind::PAGES => ("pages", MAX_PAGES),
        kind::STATE => ("state", crate::MAX_STATE_BYTES as u32),
        kind::ABORT => ("abort", MAX_ABORT),
        kind::ACK => ("ack", 0),
        kind::COMMIT => ("commit", 0),
        other => {
            return Err(VmmError::invalid(
                "migration stream",
                format!("unknown frame kind {other}"),
            ))
        }
    };
    if len > max {
        return Err(VmmError::invalid(
            "migration stream",
            format!("{name} frame of {len} bytes, at most {max} allowed"),
        ));
    }
    Ok(Some((head[0], len)))
}

fn truncated(what: &str, e: std::io::Error) -> VmmError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        VmmError::invalid(
            "migration stream",
            format!("truncated: it ended inside {what}"),
        )
    } else {
        stream_err(&format!("reading {what}"), e)
    }
}

fn read_payload(input: &mut impl Read, len: u32, what: &str) -> Result<Vec<u8>, VmmError> {
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf).map_err(|e| truncated(what, e))?;
    Ok(buf)
}

/// A set of guest pages, one bit each.
#[derive(Clone)]
pub(crate) struct PageSet {
    bits: Vec<u64>,
    pages: u64,
}

impl PageSet {
    pub(crate) fn empty(pages: u64) -> PageSet {
        PageSet {
            bits: vec![0; pages.div_ceil(64) as usize],
            pages,
        }
    }

    pub(crate) fn full(pages: u64) -> PageSet {
        let mut set = PageSet::empty(pages);
        (0..pages).for_each(|p| set.insert(p));
        set
    }

    pub(crate) fn insert(&mut self, page: u64) {
        if page < self.pages {
            self.bits[(page / 64) as usize] |= 1 << (page % 64);
        }
    }

    fn contains(&self, page: u64) -> bool {
        page < self.pages && self.bits[(page / 64) as usize] & (1 << (page % 64)) != 0
    }

    /// Adds every page of `other`.
    pub(crate) fn union(&mut self, other: &PageSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    fn count(&self) -> u64 {
        self.bits.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    /// Runs of consecutive pages, at most `FRAME_PAGES` long: `(first, count)`.
    fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let mut page = 0;
        std::iter::from_fn(move || {
            while page < self.pages && !self.contains(page) {
                // Skip empty words whole.
                if page % 64 == 0 && self.bits[(page / 64) as usize] == 0 {
                    page += 64;
                } else {
                    page += 1;
                }
            }
            if page >= self.pages {
                return None;
            }
            let first = page;
            while page < self.pages && self.contains(page) && page - first < FRAME_PAGES {
                page += 1;
            }
            Some((first, page - first))
        })
    }
}

/// The source's side of the stream: counts what it sent, and how long
/// sending took (the throughput the convergence estimate uses).
struct Sender<'a> {
    out: BufWriter<&'a UnixStream>,
    stream: &'a UnixStream,
    buf: Vec<u8>,
    bytes: u64,
    busy: Duration,
}

impl Sender<'_> {
    fn frame(&mut self, kind: u8, parts: &[&[u8]]) -> Result<(), VmmError> {
        write_frame(&mut self.out, kind, parts).map_err(|e| self.broken(e))
    }

    /// A write failed: the target is gone, or it refused and said why in
    /// an `ABORT` frame, which is read if it is there.
    fn broken(&self, err: std::io::Error) -> VmmError {
        let mut input = self.stream;
        let _ = input.set_read_timeout(Some(Duration::from_millis(200)));
        if let Ok(Some((kind::ABORT, len))) = read_frame_header(&mut input) {
            if let Ok(reason) = read_payload(&mut input, len, "the abort reason") {
                return VmmError::FailedPrecondition {
                    message: format!(
                        "the migration target refused: {}",
                        String::from_utf8_lossy(&reason)
                    ),
                };
            }
        }
        stream_err("sending to the target", err)
    }

    /// Sends the pages of `set` (all-zero ones skipped when `skip_zero`).
    fn pages(
        &mut self,
        memory: &GuestMemoryMmap,
        set: &PageSet,
        skip_zero: bool,
    ) -> Result<u64, VmmError> {
        let started = Instant::now();
        let mut sent = 0;
        for (first, count) in set.runs() {
            let len = (count * PAGE) as usize;
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(len, 0);
            memory
                .read_slice(&mut buf[..len], GuestAddress(first * PAGE))
                .map_err(|e| VmmError::internal("reading guest memory", e))?;
            let mut at = 0;
            while at < count {
                let zero = |p: u64| {
                    let page = &buf[(p * PAGE) as usize..((p + 1) * PAGE) as usize];
                    skip_zero && page.iter().all(|&b| b == 0)
                };
                if zero(at) {
                    at += 1;
                    continue;
                }
                let mut end = at + 1;
                while end < count && !zero(end) {
                    end += 1;
                }
                let gpa = (first + at) * PAGE;
                let data = &buf[(at * PAGE) as usize..(end * PAGE) as usize];
                let result = write_frame(&mut self.out, kind::PAGES, &[&gpa.to_le_bytes(), data]);
                if let Err(e) = result {
                    self.buf = buf;
                    return Err(self.broken(e));
                }
                sent += data.len() as u64;
                at = end;
            }
            self.buf = buf;
        }
        self.out.flush().map_err(|e| self.broken(e))?;
        self.bytes += sent;
        self.busy += started.elapsed();
        Ok(sent)
    }

    /// Bytes per second so far (a floor of 1 MiB/s before anything was timed).
    fn rate(&self) -> f64 {
        let secs = self.busy.as_secs_f64();
        if secs <= 0.0 || self.bytes == 0 {
            return (1u64 << 20) as f64;
        }
        self.bytes as f64 / secs
    }
}

const MIB: f64 = (1u64 << 20) as f64;

/// Migrates `machine` (running if `running`) over `stream` to a receiving
/// VMM. On success the machine is paused for good and the caller ends the
/// VMM; on any error the machine runs again as before (if it was running)
/// with dirty logging off. Errors: `FailedPrecondition` (did not converge,
/// or the target refused, with its reason), `Unavailable` (the stream
/// broke or the target went silent), `Internal` (a KVM call failed).
pub(crate) fn send(
    machine: &Machine,
    config: &VmConfig,
    stream: &UnixStream,
    params: MigrationParams,
    running: bool,
) -> Result<MigrationReport, VmmError> {
    let started = Instant::now();
    // The client's descriptor may be non-blocking (an async runtime's);
    // this thread waits on it, bounded by the timeouts.
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(STREAM_TIMEOUT)))
        .and_then(|()| stream.set_read_timeout(Some(STREAM_TIMEOUT)))
        .map_err(|e| stream_err("setting timeouts", e))?;
    machine.set_dirty_logging(true)?;
    let result = copy(machine, config, stream, params, running, started);
    if result.is_err() {
        // The guest goes on here: logging off (it costs a fault per first
        // write to a page), then the vCPUs, if the final phase parked them.
        let _ = machine.set_dirty_logging(false);
        if running {
            machine.resume();
        }
    }
    result
}

fn copy(
    machine: &Machine,
    config: &VmConfig,
    stream: &UnixStream,
    params: MigrationParams,
    running: bool,
    started: Instant,
) -> Result<MigrationReport, VmmError> {
    let memory = machine.memory();
    let memory_bytes = machine.memory_bytes();
    let pages = memory_bytes / PAGE;
    let mut tx = Sender {
        out: BufWriter::with_capacity(1 << 20, stream),
        stream,
        buf: Vec::new(),
        bytes: 0,
        busy: Duration::ZERO,
    };
    let mut header = MIGRATION_MAGIC.to_vec();
    header.extend_from_slice(&MIGRATION_VERSION.to_le_bytes());
    tx.out.write_all(&header).map_err(|e| tx.broken(e))?;
    let hello = serde_json::to_vec(&Hello {
        config: config.clone(),
        memory_bytes,
        running,
    })
    .map_err(|e| VmmError::internal("encoding the migration hello", e))?;
    tx.frame(kind::HELLO, &[&hello])?;
    // Pages the vCPUs never wrote do not show in the dirty log but are
    // part of the final state when devices write them (see the module doc).
    let populated = || match machine.populated_pages() {
        Some(flags) => {
            let mut set = PageSet::empty(pages);
            for (page, _) in flags.iter().enumerate().filter(|(_, &p)| p) {
                set.insert(page as u64);
            }
            set
        }
        None => PageSet::full(pages),
    };
    let first_round_bytes = tx.pages(memory, &populated(), true)?;
    let mut rounds = 1;
    // For the convergence estimate: what the final round of a VM with
    // devices resends besides the dirty pages.
    let device_pages = machine.has_virtio().then(populated);
    let downtime = params.downtime_ms() as f64 / 1000.0;
    let (mut dirty, converged) = loop {
        let dirty = machine.dirty_pages()?;
        // What the final round would send now (the rounds themselves send
        // only the dirty pages).
        let mut rest = dirty.clone();
        if let Some(extra) = &device_pages {
            rest.union(extra);
        }
        let left = (rest.count() * PAGE) as f64;
        if left / tx.rate() <= downtime {
            break (dirty, true);
        }
        if rounds >= params.max_rounds() {
            if params.force() {
                break (dirty, false);
            }
            let why = format!(
                "did not converge: {rounds} rounds, last round dirtied {:.1} MiB at {:.0} MiB/s, \
                 downtime target {} ms (the rest needs ~{:.0} ms)",
                left / MIB,
                tx.rate() / MIB,
                params.downtime_ms(),
                left / tx.rate() * 1000.0
            );
            let _ = tx.frame(kind::ABORT, &[why.as_bytes()]);
            let _ = tx.out.flush();
            return Err(VmmError::FailedPrecondition { message: why });
        }
        tx.pages(memory, &dirty, false)?;
        rounds += 1;
    };
    // Stop and copy.
    let paused = Instant::now();
    if running {
        machine.pause()?;
    }
    dirty.union(&machine.dirty_pages()?);
    if machine.has_virtio() {
        // Now that the devices are quiet too: pages they populated during
        // the rounds are in this set, not in the one the estimate used.
        dirty.union(&populated());
    }
    let before = tx.bytes;
    tx.pages(memory, &dirty, false)?;
    let final_bytes = tx.bytes - before;
    let state = serde_json::to_vec(&machine.save_state()?)
        .map_err(|e| VmmError::internal("encoding the machine state", e))?;
    tx.frame(kind::STATE, &[&state])?;
    tx.out.flush().map_err(|e| tx.broken(e))?;
    let mut input = stream;
    match read_frame_header(&mut input) {
        // The target is ready and waits for this: from here the guest runs
        // there and never here. A commit that cannot be written leaves the
        // target waiting in vain (it exits), so the source resumes.
        Ok(Some((kind::ACK, _))) => {
            let mut out = stream;
            write_frame(&mut out, kind::COMMIT, &[])
                .and_then(|()| out.flush())
                .map_err(|e| stream_err("sending the commit", e))?;
        }
        Ok(Some((kind::ABORT, len))) => {
            let reason = read_payload(&mut input, len, "the abort reason")?;
            return Err(VmmError::FailedPrecondition {
                message: format!(
                    "the migration target refused: {}",
                    String::from_utf8_lossy(&reason)
                ),
            });
        }
        Ok(Some((other, _))) => {
            return Err(VmmError::Unavailable {
                message: format!("migration target answered frame kind {other}, not an ack"),
            })
        }
        Ok(None) => {
            return Err(VmmError::Unavailable {
                message: "migration target closed the stream before its ack".into(),
            })
        }
        Err(e) => return Err(e),
    }
    Ok(MigrationReport {
        rounds,
        converged,
        total_ms: started.elapsed().as_millis() as u64,
        downtime_ms: paused.elapsed().as_millis() as u64,
        memory_bytes_sent: tx.bytes,
        first_round_bytes,
        final_bytes,
        throughput_mib_s: tx.rate() / MIB,
    })
}

/// Receives a migration into `memory` (fresh, zeroed, of `config`'s size)
/// from `stream`: checks the header and the source's config against
/// `config`, writes every page range into `memory`, and returns the final
/// machine state, validated as a snapshot's is. The caller restores the
/// machine, then calls [`ack`]. On error it tells the source why
/// (best effort) before returning.
pub(crate) fn receive(
    stream: &UnixStream,
    config: &VmConfig,
    memory: &GuestMemoryMmap,
) -> Result<Received, VmmError> {
    let result = stream
        .set_read_timeout(Some(STREAM_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(STREAM_TIMEOUT)))
        .map_err(|e| stream_err("setting timeouts", e))
        .and_then(|()| receive_frames(&mut { stream }, config, memory));
    if let Err(err) = &result {
        refuse(stream, err);
    }
    result
}

/// Tells the source why this target gives up (best effort: it may be gone).
pub(crate) fn refuse(stream: &UnixStream, err: &VmmError) {
    let mut out = stream;
    let mut reason = err.to_string();
    reason.truncate(MAX_ABORT as usize);
    while std::str::from_utf8(reason.as_bytes()).is_err() {
        reason.pop();
    }
    let _ = write_frame(&mut out, kind::ABORT, &[reason.as_bytes()]);
}

fn receive_frames(
    input: &mut impl Read,
    config: &VmConfig,
    memory: &GuestMemoryMmap,
) -> Result<Received, VmmError> {
    let bad = |reason: String| VmmError::invalid("migration stream", reason);
    let mut header = [0u8; 12];
    input
        .read_exact(&mut header)
        .map_err(|e| truncated("the header", e))?;
    if header[..8] != MIGRATION_MAGIC {
        return Err(bad("not a zixiao-vmm migration (wrong magic)".into()));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != MIGRATION_VERSION {
        return Err(bad(format!(
            "protocol version {version}, this VMM reads version {MIGRATION_VERSION}"
        )));
    }
    let memory_bytes = config.memory_bytes();
    let mut hello: Option<Hello> = None;
    let mut buf = Vec::new();
    loop {
        let Some((kind, len)) = read_frame_header(input)? else {
            return Err(bad(
                "truncated: it ended before the final machine state".into()
            ));
        };
        match kind {
            kind::HELLO if hello.is_none() => {
                let raw = read_payload(input, len, "the hello frame")?;
                let sent: Hello = serde_json::from_slice(&raw)
                    .map_err(|e| bad(format!("hello frame is not valid: {e}")))?;
                check_config(&sent, config)?;
                hello = Some(sent);
            }
            _ if hello.is_none() => return Err(bad(format!("frame kind {kind} before the hello"))),
            kind::PAGES => {
                let count = u64::from(len).saturating_sub(8);
                if len < 8 + PAGE as u32 || count % PAGE != 0 {
                    return Err(bad(format!(
                        "pages frame of {len} bytes: not an address and whole pages"
                    )));
                }
                let mut gpa = [0u8; 8];
                input
                    .read_exact(&mut gpa)
                    .map_err(|e| truncated("a pages frame", e))?;
                let gpa = u64::from_le_bytes(gpa);
                if gpa % PAGE != 0 || gpa.checked_add(count).is_none_or(|end| end > memory_bytes) {
                    return Err(bad(format!(
                        "pages frame at {gpa:#x}+{count:#x}: not page-aligned inside the \
                         {memory_bytes}-byte guest memory"
                    )));
                }
                buf.resize(count as usize, 0);
                input
                    .read_exact(&mut buf)
                    .map_err(|e| truncated("a pages frame", e))?;
                memory
                    .write_slice(&buf, GuestAddress(gpa))
                    .map_err(|e| VmmError::internal("writing guest memory", e))?;
            }
            kind::STATE => {
                let raw = read_payload(input, len, "the state frame")?;
                let machine: MachineState = serde_json::from_slice(&raw)
                    .map_err(|e| bad(format!("state frame is not valid: {e}")))?;
                let file = crate::snapshot::SnapshotFile::new(config.clone(), machine);
                crate::snapshot::validate(&file)?;
                return Ok(Received {
                    machine: file.machine,
                    running: hello.is_some_and(|h| h.running),
                });
            }
            kind::ABORT => {
                let reason = read_payload(input, len, "the abort reason")?;
                return Err(VmmError::FailedPrecondition {
                    message: format!(
                        "the source aborted the migration: {}",
                        String::from_utf8_lossy(&reason)
                    ),
                });
            }
            other => return Err(bad(format!("unexpected frame kind {other}"))),
        }
    }
}

/// The source's VM must be the one this target was launched for: same
/// memory size, vCPUs, disks (count and read-only) and network cards.
fn check_config(hello: &Hello, mine: &VmConfig) -> Result<(), VmmError> {
    let theirs = &hello.config;
    let mismatch = |field: &str, a: String, b: String| {
        Err(VmmError::invalid(
            format!("migration config.{field}"),
            format!("the source has {a}, this target was launched with {b}"),
        ))
    };
    if hello.memory_bytes != mine.memory_bytes() || theirs.memory_mib != mine.memory_mib {
        return mismatch(
            "memory_mib",
            format!("{} bytes", hello.memory_bytes),
            format!("{} bytes", mine.memory_bytes()),
        );
    }
    if theirs.vcpus != mine.vcpus {
        return mismatch("vcpus", theirs.vcpus.to_string(), mine.vcpus.to_string());
    }
    let ro = |c: &VmConfig| c.disks.iter().map(|d| d.read_only).collect::<Vec<_>>();
    if ro(theirs) != ro(mine) {
        return mismatch(
            "disks",
            format!("{} disks", theirs.disks.len()),
            format!("{} disks (or other read-only flags)", mine.disks.len()),
        );
    }
    if theirs.nets.len() != mine.nets.len() {
        return mismatch(
            "nets",
            theirs.nets.len().to_string(),
            mine.nets.len().to_string(),
        );
    }
    // The balloon's features were negotiated with the guest's driver.
    if theirs.balloon != mine.balloon {
        return mismatch(
            "balloon",
            format!("{:?}", theirs.balloon),
            format!("{:?}", mine.balloon),
        );
    }
    // The CID is the guest's address: it keeps it (its sockets are reset).
    let cid = |c: &VmConfig| c.vsock.as_ref().map(|v| v.guest_cid.get());
    if cid(theirs) != cid(mine) {
        return mismatch(
            "vsock.guest_cid",
            format!("{:?}", cid(theirs)),
            format!("{:?}", cid(mine)),
        );
    }
    Ok(())
}

/// Tells the source the machine is restored, then waits for its commit:
/// only then has the source ended, and may this VMM run the guest.
/// Errors: `Unavailable` when the stream breaks or times out before the
/// commit, `InvalidArgument` for any other frame: the guest must not run.
pub(crate) fn ack(stream: &UnixStream) -> Result<(), VmmError> {
    let mut out = stream;
    write_frame(&mut out, kind::ACK, &[])
        .and_then(|()| out.flush())
        .map_err(|e| stream_err("sending the ack", e))?;
    let mut input = stream;
    match read_frame_header(&mut input)? {
        Some((kind::COMMIT, _)) => Ok(()),
        Some((other, _)) => Err(VmmError::invalid(
            "migration stream",
            format!("frame kind {other} where the source's commit belongs"),
        )),
        None => Err(VmmError::Unavailable {
            message: "the migration source closed the stream before committing".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn config() -> VmConfig {
        let mut c = VmConfig::new("/vmlinux");
        c.memory_mib = 1;
        c
    }

    fn stream(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = MIGRATION_MAGIC.to_vec();
        out.extend_from_slice(&MIGRATION_VERSION.to_le_bytes());
        for (kind, payload) in frames {
            write_frame(&mut out, *kind, &[payload]).unwrap();
        }
        out
    }

    fn hello(memory_mib: u64) -> (u8, Vec<u8>) {
        let mut config = config();
        config.memory_mib = memory_mib;
        let memory_bytes = config.memory_bytes();
        (
            kind::HELLO,
            serde_json::to_vec(&Hello {
                config,
                memory_bytes,
                running: true,
            })
            .unwrap(),
        )
    }

    fn refused(result: Result<Received, VmmError>) -> VmmError {
        match result {
            Err(e) => e,
            Ok(_) => panic!("the stream was accepted"),
        }
    }

    fn receive_bytes(bytes: &[u8]) -> VmmError {
        refused(receive_frames(&mut &bytes[..], &config(), &memory()))
    }

    #[test]
    fn params_are_bounded() {
        assert!(MigrationParams::new(0, 10).is_err());
        assert!(MigrationParams::new(MAX_MIGRATION_ROUNDS + 1, 10).is_err());
        assert!(MigrationParams::new(3, 0).is_err());
        let err: Result<MigrationParams, _> =
            serde_json::from_str(r#"{"max_rounds": 0, "downtime_ms": 5}"#);
        assert!(err.unwrap_err().to_string().contains("max_rounds"));
    }

    #[test]
    fn a_stream_that_is_no_migration_is_refused() {
        let err = receive_bytes(b"GET / HTTP/1.1\r\n\r\n");
        assert!(err.to_string().contains("wrong magic"), "{err}");
        let err = receive_bytes(b"ZXV");
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn oversized_and_out_of_range_frames_are_refused_before_reading_them() {
        let mut raw = stream(&[hello(1)]);
        raw.push(kind::PAGES);
        raw.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = receive_bytes(&raw);
        assert!(err.to_string().contains("at most"), "{err}");
        let mut page = (1u64 << 20).to_le_bytes().to_vec();
        page.extend_from_slice(&[1u8; 4096]);
        let err = receive_bytes(&stream(&[hello(1), (kind::PAGES, page)]));
        assert!(err.to_string().contains("inside the"), "{err}");
    }

    #[test]
    fn a_config_mismatch_names_the_field() {
        let err = receive_bytes(&stream(&[hello(2)]));
        assert!(err.to_string().contains("config.memory_mib"), "{err}");
    }

    #[test]
    fn pages_land_and_a_truncated_stream_says_so() {
        let mem = memory();
        let mut page = 8192u64.to_le_bytes().to_vec();
        page.extend_from_slice(&[7u8; 4096]);
        let raw = stream(&[hello(1), (kind::PAGES, page)]);
        let err = refused(receive_frames(&mut &raw[..], &config(), &mem));
        assert!(err.to_string().contains("before the final"), "{err}");
        assert_eq!(mem.read_obj::<u8>(GuestAddress(8192)).unwrap(), 7);
        let err = receive_bytes(&raw[..raw.len() - 10]);
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn page_runs_split_at_gaps_and_frame_size() {
        let mut set = PageSet::empty(1000);
        for p in (3..5).chain(10..600) {
            set.insert(p);
        }
        let runs: Vec<_> = set.runs().collect();
        assert_eq!(runs, vec![(3, 2), (10, 256), (266, 256), (522, 78)]);
        assert_eq!(set.count(), 592);
    }

    /// The target runs the guest only on the source's commit: an ack that
    /// gets no answer, or another frame, leaves it not running.
    #[test]
    fn a_target_runs_the_guest_only_once_the_source_committed() {
        let answer = |frame: Option<u8>| {
            let (target, source) = UnixStream::pair().unwrap();
            let mut out = &source;
            if let Some(kind) = frame {
                write_frame(&mut out, kind, &[]).unwrap();
            }
            // The source says no more, but still hears the ack.
            source.shutdown(std::net::Shutdown::Write).unwrap();
            let acked = ack(&target);
            let mut heard = [0u8; 5];
            (&source).read_exact(&mut heard).unwrap();
            assert_eq!(heard[0], kind::ACK);
            acked
        };
        assert!(answer(Some(kind::COMMIT)).is_ok());
        let lost = answer(None).expect_err("no commit");
        assert!(matches!(lost, VmmError::Unavailable { .. }), "{lost}");
        let other = answer(Some(kind::ACK)).expect_err("not a commit");
        assert!(other.to_string().contains("commit"), "{other}");
    }
}
