//! The host side of a vsock device: the connections between the guest and
//! host Unix sockets, and the packets that move their bytes.
//!
//! Firecracker's protocol: a host process connects to the device's socket
//! and writes `CONNECT <port>\n`; the device asks the guest (`REQUEST` to
//! that port from a fresh host port) and, once the guest accepts
//! (`RESPONSE`), answers `OK <host port>\n` on the stream, which from then
//! on carries the connection's bytes. A guest `REQUEST` to host port P
//! connects to the Unix socket `<socket>_P`.
//!
//! **Flow control** is the spec's credit scheme (virtio 1.2, 5.10.6.3):
//! every packet the device sends carries its `buf_alloc` (what it buffers
//! per connection, [`CONN_BUF`]) and `fwd_cnt` (guest bytes written to the
//! host stream so far); the guest may have at most `buf_alloc` bytes in
//! flight, and a guest that sends more is reset. The device sends the
//! guest at most the guest's own free credit, reads a host stream only
//! then (so a slow guest applies back-pressure to the host process), and
//! sends a `CREDIT_UPDATE` once a quarter of its buffer has drained, so a
//! guest waiting for credit always hears of it.
//!
//! **Bounds.** Nothing is sized by a guest value: a packet's payload is at
//! most [`MAX_PAYLOAD`] (longer ones are dropped and the connection reset),
//! each connection buffers at most [`CONN_BUF`] bytes for the host, there
//! are at most [`MAX_CONNECTIONS`] connections and [`MAX_PENDING`] host
//! streams that have not yet said `CONNECT`, and resets for unknown
//! connections wait in a queue of [`MAX_RESETS`] (more are dropped: the
//! guest times out instead).

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;

use super::packet::{Header, Op, HEADER, SHUTDOWN_RECEIVE, SHUTDOWN_SEND, TYPE_STREAM};
use super::HOST_CID;

/// What the device buffers per connection for the host stream, and so
/// the `buf_alloc` it advertises.
pub(crate) const CONN_BUF: u32 = 256 * 1024;
/// The largest payload of one packet either way (Linux's
/// `VIRTIO_VSOCK_MAX_PKT_BUF_SIZE`).
pub(crate) const MAX_PAYLOAD: usize = 64 * 1024;
/// Open connections at most; a request beyond is reset.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// Host streams accepted that have not yet sent their `CONNECT` line.
pub(crate) const MAX_PENDING: usize = 16;
/// Resets for unknown connections waiting for a receive buffer.
pub(crate) const MAX_RESETS: usize = 64;
/// The longest `CONNECT <port>\n` line (with a 10-digit port).
const CONNECT_LINE_MAX: usize = 32;
/// How long a host stream may take to send `CONNECT`, and the guest to
/// answer the request it becomes (Firecracker's 2 seconds).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The first host port given to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Control packets a connection owes the guest.
#[derive(Debug, Clone, Copy, Default)]
struct Owed {
    request: bool,
    response: bool,
    credit_update: bool,
    credit_request: bool,
    /// `SHUTDOWN` with these flags.
    shutdown: u32,
    /// `RST`, after which the connection is gone.
    rst: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Host-initiated: the guest has not answered the request yet.
    Requesting {
        deadline: Instant,
    },
    Established,
}

/// One connection, keyed by (host port, guest port).
struct Conn {
    stream: UnixStream,
    state: State,
    owed: Owed,
    /// The guest's credit, from its last packet.
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// Payload bytes sent to the guest.
    rx_cnt: Wrapping<u32>,
    /// Guest bytes written to the host stream.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as the guest last heard it.
    fwd_cnt_told: Wrapping<u32>,
    /// Guest bytes the host stream did not take yet (at most `CONN_BUF`).
    to_host: VecDeque<u8>,
    /// The guest sends nothing more: shut the stream's write side once
    /// `to_host` is empty.
    guest_done_sending: bool,
    write_shut: bool,
    /// The host stream ended; the guest was told (`SHUTDOWN` SEND).
    host_eof: bool,
}

impl Conn {
    fn new(stream: UnixStream, state: State) -> Conn {
        Conn {
            stream,
            state,
            owed: Owed::default(),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            fwd_cnt_told: Wrapping(0),
            to_host: VecDeque::new(),
            guest_done_sending: false,
            write_shut: false,
            host_eof: false,
        }
    }

    /// How many more bytes the guest can take now.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the host stream should be read (there is somewhere to put
    /// what it says).
    fn wants_host_read(&self) -> bool {
        self.state == State::Established
            && !self.host_eof
            && !self.owed.rst
            && self.peer_credit() > 0
    }

    /// Writes what the host stream takes of `to_host`; false when the
    /// stream failed (the connection must be reset).
    fn flush_to_host(&mut self) -> bool {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return false,
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == IoKind::WouldBlock => break,
                Err(e) if e.kind() == IoKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.to_host.is_empty() && self.guest_done_sending && !self.write_shut {
            self.write_shut = true;
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        // Tell a guest that may be waiting for credit that it has some.
        if (self.fwd_cnt - self.fwd_cnt_told).0 >= CONN_BUF / 4 {
            self.owed.credit_update = true;
        }
        true
    }

    /// Whether a control packet is owed.
    fn owes(&self) -> bool {
        let o = &self.owed;
        o.rst || o.request || o.response || o.shutdown != 0 || o.credit_update || o.credit_request
    }

    /// The first control packet owed, and clears it.
    fn take_owed(&mut self) -> Option<(Op, u32)> {
        let o = &mut self.owed;
        let next = if o.rst {
            (Op::Rst, 0)
        } else if std::mem::take(&mut o.request) {
            (Op::Request, 0)
        } else if std::mem::take(&mut o.response) {
            (Op::Response, 0)
        } else if o.shutdown != 0 {
            (Op::Shutdown, std::mem::take(&mut o.shutdown))
        } else if std::mem::take(&mut o.credit_update) {
            (Op::CreditUpdate, 0)
        } else if std::mem::take(&mut o.credit_request) {
            (Op::CreditRequest, 0)
        } else {
            return None;
        };
        Some(next)
    }
}

/// A host stream that has not yet said which guest port it wants.
struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// The connections of one vsock device.
pub(crate) struct Muxer {
    guest_cid: u64,
    /// The device's socket; guest connections go to `<uds_path>_<port>`.
    uds_path: PathBuf,
    listener: UnixListener,
    pending: Vec<Pending>,
    /// By (host port, guest port), in a fixed order (fair round robin).
    conns: BTreeMap<(u32, u32), Conn>,
    /// Resets owed for connections that do not exist: (host port, guest port).
    resets: VecDeque<(u32, u32)>,
    next_local_port: u32,
    /// A `TRANSPORT_RESET` event is owed (set on restore).
    reset_event: bool,
    /// The guest had no receive buffer for a packet that was ready: wait
    /// for its notify rather than poll what cannot be delivered.
    rx_starved: bool,
    /// One packet's payload, either way (grown to at most `MAX_PAYLOAD`).
    scratch: Vec<u8>,
}

impl Muxer {
    /// The connections of a device with `guest_cid` whose host socket is
    /// `listener`, bound at `uds_path` (non-blocking). `restored`: the
    /// guest's connections from before a snapshot are gone; it is told so
    /// with a transport reset event.
    pub(crate) fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        listener: UnixListener,
        restored: bool,
    ) -> Muxer {
        Muxer {
            guest_cid,
            uds_path,
            listener,
            pending: Vec::new(),
            conns: BTreeMap::new(),
            resets: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
            reset_event: restored,
            rx_starved: false,
            scratch: Vec::new(),
        }
    }

    /// The guest posted receive buffers.
    pub(crate) fn rx_kicked(&mut self) {
        self.rx_starved = false;
    }

    /// The descriptors to poll and what for, and the longest wait before
    /// a deadline passes. `fds[0]` is the listener.
    pub(crate) fn poll_set(&self, now: Instant) -> (Vec<(i32, i16)>, Option<Duration>) {
        use std::os::fd::AsRawFd;
        let mut fds = vec![(self.listener.as_raw_fd(), libc::POLLIN)];
        let mut deadline: Option<Instant> = None;
        let mut until = |d: Instant| deadline = Some(deadline.map_or(d, |x| x.min(d)));
        for p in &self.pending {
            fds.push((p.stream.as_raw_fd(), libc::POLLIN));
            until(p.deadline);
        }
        for conn in self.conns.values() {
            if conn.owed.rst {
                // Waits only for a receive buffer (the kick) to send its
                // reset; its stream may have hung up, which poll would
                // report again and again.
                continue;
            }
            let mut events = 0;
            if conn.wants_host_read() && !self.rx_starved {
                events |= libc::POLLIN;
            }
            if !conn.to_host.is_empty() {
                events |= libc::POLLOUT;
            }
            // A descriptor with nothing to wait for is left out: poll
            // would report its hang-up at once, again and again.
            if events != 0 {
                fds.push((conn.stream.as_raw_fd(), events));
            }
            if let State::Requesting { deadline } = conn.state {
                until(deadline);
            }
        }
        (fds, deadline.map(|d| d.saturating_duration_since(now)))
    }

    /// The host side's work that needs no guest buffer: accept streams,
    /// read their `CONNECT` lines, write buffered guest bytes, drop what
    /// timed out.
    pub(crate) fn service_host(&mut self, now: Instant) {
        self.accept(now);
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            let read = if now >= p.deadline {
                LineRead::Done(None)
            } else {
                read_line(p)
            };
            match read {
                LineRead::More => i += 1,
                LineRead::Done(port) => {
                    let p = self.pending.swap_remove(i);
                    if let Some(port) = port {
                        self.host_connect(p.stream, port, now);
                    }
                }
            }
        }
        // A host stream that failed, or a request the guest did not
        // answer in time: the stream is closed now (the guest may not be
        // taking packets at all) and the guest owed a reset.
        let failed: Vec<(u32, u32)> = self
            .conns
            .iter_mut()
            .filter_map(|(&key, conn)| {
                let timed_out =
                    matches!(conn.state, State::Requesting { deadline } if now >= deadline);
                (!conn.flush_to_host() || timed_out).then_some(key)
            })
            .collect();
        for key in failed {
            self.conns.remove(&key);
            if self.resets.len() < MAX_RESETS {
                self.resets.push_back(key);
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        // Bounded per round, so a flood of connects cannot hold the device.
        for _ in 0..MAX_PENDING {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == IoKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.pending.len() >= MAX_PENDING || stream.set_nonblocking(true).is_err() {
                continue; // dropped: the host sees the stream closed
            }
            self.pending.push(Pending {
                stream,
                line: Vec::new(),
                deadline: now + CONNECT_TIMEOUT,
            });
        }
    }

    /// A host stream asked for guest `port`: a new connection from a free
    /// host port, its request owed to the guest.
    fn host_connect(&mut self, stream: UnixStream, port: u32, now: Instant) {
        if self.conns.len() >= MAX_CONNECTIONS {
            return;
        }
        let local = loop {
            let candidate = self.next_local_port;
            self.next_local_port = candidate.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.contains_key(&(candidate, port)) {
                break candidate;
            }
        };
        let mut conn = Conn::new(
            stream,
            State::Requesting {
                deadline: now + CONNECT_TIMEOUT,
            },
        );
        conn.owed.request = true;
        self.conns.insert((local, port), conn);
    }

    /// Processes every packet the guest made available on the TX queue.
    /// Returns whether any buffer was completed.
    pub(crate) fn process_tx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut completed = false;
        // At most a queue's worth per call (the queue lock is held).
        for _ in 0..queue.size() {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                break;
            };
            let head = chain.head_index();
            let packet = self.read_packet(Reader::<()>::new(mem, chain).ok());
            if queue.add_used(mem, head, 0).is_err() {
                break;
            }
            completed = true;
            // An unreadable packet is dropped.
            if let Some((header, len)) = packet {
                self.guest_packet(header, len);
            }
        }
        completed
    }

    /// Reads a packet into the header and `scratch[..len]`; `None` when
    /// the chain is outside guest memory, too short, or claims more than
    /// it holds or than [`MAX_PAYLOAD`] (then its connection is reset).
    fn read_packet(&mut self, reader: Option<Reader<'_, ()>>) -> Option<(Header, usize)> {
        let mut reader = reader?;
        let mut raw = [0u8; HEADER];
        reader.read_exact(&mut raw).ok()?;
        let header = Header::decode(&raw);
        let len = header.len as usize;
        if len > MAX_PAYLOAD || len > reader.available_bytes() {
            self.reset_unknown(&header);
            self.conns.remove(&(header.dst_port, header.src_port));
            return None;
        }
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        reader.read_exact(&mut self.scratch[..len]).ok()?;
        Some((header, len))
    }

    /// Owes a reset for the connection `header` came on, unless it is one.
    fn reset_unknown(&mut self, header: &Header) {
        if header.op() != Some(Op::Rst) && self.resets.len() < MAX_RESETS {
            self.resets.push_back((header.dst_port, header.src_port));
        }
    }

    /// One packet from the guest, its payload in `scratch[..len]`.
    fn guest_packet(&mut self, header: Header, len: usize) {
        if header.kind != TYPE_STREAM
            || header.src_cid != self.guest_cid
            || header.dst_cid != HOST_CID
        {
            self.reset_unknown(&header);
            return;
        }
        let key = (header.dst_port, header.src_port);
        let Some(conn) = self.conns.get_mut(&key) else {
            if header.op() == Some(Op::Request) {
                self.guest_connect(key, &header);
            } else {
                self.reset_unknown(&header);
            }
            return;
        };
        conn.peer_buf_alloc = header.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(header.fwd_cnt);
        match (header.op(), conn.state) {
            (Some(Op::Response), State::Requesting { .. }) => {
                conn.state = State::Established;
                let ok = format!("OK {}\n", key.0);
                // A dozen bytes into an empty socket buffer: a stream that
                // cannot take them is gone.
                if conn.stream.write_all(ok.as_bytes()).is_err() {
                    conn.owed.rst = true;
                }
            }
            (Some(Op::Rw), State::Established) if !conn.guest_done_sending => {
                if conn.to_host.len() + len > CONN_BUF as usize {
                    // More than the credit it was given.
                    conn.owed.rst = true;
                    return;
                }
                conn.to_host.extend(&self.scratch[..len]);
                if !conn.flush_to_host() {
                    conn.owed.rst = true;
                }
            }
            (Some(Op::CreditUpdate), _) => {}
            (Some(Op::CreditRequest), _) => conn.owed.credit_update = true,
            (Some(Op::Shutdown), State::Established) => {
                if header.flags & SHUTDOWN_SEND != 0 {
                    conn.guest_done_sending = true;
                }
                if header.flags & (SHUTDOWN_SEND | SHUTDOWN_RECEIVE)
                    == SHUTDOWN_SEND | SHUTDOWN_RECEIVE
                {
                    // Fully shut: what the host can take now is written,
                    // and the guest's close is confirmed with a reset.
                    let _ = conn.flush_to_host();
                    conn.owed.rst = true;
                } else if !conn.flush_to_host() {
                    conn.owed.rst = true;
                }
            }
            (Some(Op::Rst), _) => {
                // Refused or closed by the guest: the host sees its stream end.
                self.conns.remove(&key);
            }
            // A duplicate request, a response out of turn, data on a
            // connection not (or no longer) open for it, an unknown op.
            _ => conn.owed.rst = true,
        }
    }

    /// The guest connects to host port `key.0`: connect to the socket for
    /// it, and owe the guest the answer.
    fn guest_connect(&mut self, key: (u32, u32), header: &Header) {
        if self.conns.len() >= MAX_CONNECTIONS {
            self.reset_unknown(header);
            return;
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.0));
        let Ok(stream) = connect_nonblocking(Path::new(&path)) else {
            self.reset_unknown(header);
            return;
        };
        let mut conn = Conn::new(stream, State::Established);
        conn.peer_buf_alloc = header.buf_alloc;
        conn.peer_fwd_cnt = Wrapping(header.fwd_cnt);
        conn.owed.response = true;
        self.conns.insert(key, conn);
    }

    /// Fills the guest's receive buffers with what is owed and what the
    /// host streams have, within each connection's credit. Returns whether
    /// any buffer was completed.
    pub(crate) fn fill_rx(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        let mut completed = false;
        let mut budget = queue.size();
        // Control packets first, then data one packet per connection per
        // round, until the buffers, the data or the budget run out.
        loop {
            let mut progress = false;
            while let Some(&(local, peer)) = self.resets.front() {
                let header = self.header(Op::Rst, local, peer);
                match self.deliver(queue, mem, &header) {
                    Delivery::Done => {
                        self.resets.pop_front();
                        completed = true;
                        budget = budget.saturating_sub(1);
                    }
                    Delivery::Starved => return completed,
                }
            }
            let keys: Vec<(u32, u32)> = self.conns.keys().copied().collect();
            for key in keys {
                if budget == 0 {
                    return completed;
                }
                match self.conn_packet(queue, mem, key) {
                    Some(Delivery::Done) => {
                        completed = true;
                        progress = true;
                        budget -= 1;
                    }
                    Some(Delivery::Starved) => return completed,
                    None => {}
                }
            }
            if !progress || budget == 0 {
                return completed;
            }
        }
    }

    /// The next packet of connection `key`, if it has one: a control
    /// packet owed, else data from the host stream within the guest's
    /// credit.
    fn conn_packet(
        &mut self,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
        key: (u32, u32),
    ) -> Option<Delivery> {
        let conn = self.conns.get_mut(&key)?;
        if let Some((op, flags)) = conn.take_owed() {
            let mut header = self.header(op, key.0, key.1);
            header.flags = flags;
            let delivery = self.deliver(queue, mem, &header);
            let conn = self.conns.get_mut(&key)?;
            match delivery {
                Delivery::Done if op == Op::Rst => {
                    self.conns.remove(&key);
                }
                Delivery::Done => conn.fwd_cnt_told = conn.fwd_cnt,
                // Owed again when a buffer comes.
                Delivery::Starved => restore_owed(&mut conn.owed, op, flags),
            }
            return Some(delivery);
        }
        if !conn.wants_host_read() {
            return None;
        }
        // The buffer first: what is read from the stream must have a place
        // to go, and no more is read than that place holds.
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            self.rx_starved = true;
            return Some(Delivery::Starved);
        };
        let head = chain.head_index();
        let writer = Writer::<()>::new(mem, chain).ok();
        let room = writer
            .as_ref()
            .map_or(0, |w| w.available_bytes().saturating_sub(HEADER));
        let (Some(mut writer), true) = (writer, room > 0) else {
            // Too small or outside guest memory: it goes back empty.
            return Some(match queue.add_used(mem, head, 0) {
                Ok(()) => Delivery::Done,
                Err(_) => Delivery::Starved,
            });
        };
        let want = room.min(conn.peer_credit() as usize).min(MAX_PAYLOAD);
        if self.scratch.len() < want {
            self.scratch.resize(want, 0);
        }
        let n = match conn.stream.read(&mut self.scratch[..want]) {
            Ok(0) => {
                // The host will send nothing more; the guest may still.
                conn.host_eof = true;
                conn.owed.shutdown = SHUTDOWN_SEND;
                0
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::Interrupted) => 0,
            Err(_) => {
                conn.owed.rst = true;
                0
            }
        };
        if n == 0 {
            // Nothing to send after all: the buffer stays the guest's, for
            // the shutdown or reset now owed if the stream ended.
            queue.set_next_avail(queue.next_avail().wrapping_sub(1));
            let owes = self.conns.get(&key).is_some_and(|c| c.owes());
            return if owes {
                self.conn_packet(queue, mem, key)
            } else {
                None
            };
        }
        let header = Header {
            len: n as u32,
            ..self.header(Op::Rw, key.0, key.1)
        };
        let ok = writer.write_all(&header.encode()).is_ok()
            && writer.write_all(&self.scratch[..n]).is_ok();
        let len = if ok { HEADER + n } else { 0 };
        if queue.add_used(mem, head, len as u32).is_err() {
            return Some(Delivery::Starved);
        }
        let conn = self.conns.get_mut(&key)?;
        if ok {
            conn.rx_cnt += Wrapping(n as u32);
            conn.fwd_cnt_told = conn.fwd_cnt;
            if conn.peer_credit() == 0 {
                conn.owed.credit_request = true;
            }
        } else {
            // The stream's bytes could not be delivered: the connection
            // cannot go on without them.
            conn.owed.rst = true;
        }
        Some(Delivery::Done)
    }

    /// Puts a payload-less packet in one receive buffer.
    fn deliver(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap, header: &Header) -> Delivery {
        loop {
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                self.rx_starved = true;
                return Delivery::Starved;
            };
            let head = chain.head_index();
            let ok = Writer::<()>::new(mem, chain)
                .ok()
                .filter(|w| w.available_bytes() >= HEADER)
                .is_some_and(|mut w| w.write_all(&header.encode()).is_ok());
            let len = if ok { HEADER as u32 } else { 0 };
            if queue.add_used(mem, head, len).is_err() {
                return Delivery::Starved;
            }
            if ok {
                return Delivery::Done;
            }
            // A bad buffer came back empty; try the next one.
        }
    }

    /// A header from the host side of connection (`local`, `peer`), with
    /// this device's credit for it.
    fn header(&self, op: Op, local: u32, peer: u32) -> Header {
        let conn = self.conns.get(&(local, peer));
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: local,
            dst_port: peer,
            buf_alloc: CONN_BUF,
            fwd_cnt: conn.map_or(0, |c| c.fwd_cnt.0),
            ..Header::stream(op)
        }
    }

    /// Writes the owed transport-reset event, if any, into an event
    /// buffer. Returns whether a buffer was completed.
    pub(crate) fn deliver_event(&mut self, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
        if !self.reset_event {
            return false;
        }
        let Some(chain) = queue.pop_descriptor_chain(mem) else {
            return false;
        };
        let head = chain.head_index();
        // `struct virtio_vsock_event { le32 id; }`, id 0 = TRANSPORT_RESET.
        let written = Writer::<()>::new(mem, chain)
            .ok()
            .filter(|w| w.available_bytes() >= 4)
            .is_some_and(|mut w| w.write_all(&0u32.to_le_bytes()).is_ok());
        self.reset_event = !written;
        queue
            .add_used(mem, head, if written { 4 } else { 0 })
            .is_ok()
    }

    /// Open connections.
    #[cfg(test)]
    pub(crate) fn connections(&self) -> usize {
        self.conns.len()
    }
}

enum Delivery {
    Done,
    Starved,
}

fn restore_owed(owed: &mut Owed, op: Op, flags: u32) {
    match op {
        Op::Rst => owed.rst = true,
        Op::Request => owed.request = true,
        Op::Response => owed.response = true,
        Op::Shutdown => owed.shutdown = flags,
        Op::CreditUpdate => owed.credit_update = true,
        Op::CreditRequest => owed.credit_request = true,
        Op::Rw => {}
    }
}

/// A non-blocking Unix stream connected to `path`. Made non-blocking
/// before it connects, so a listener whose backlog is full refuses
/// (`EAGAIN`) rather than making the device, and the guest, wait for it.
fn connect_nonblocking(path: &Path) -> std::io::Result<UnixStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is a plain C struct; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (to, &from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = from as libc::c_char;
    }
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: `addr` is a sockaddr_un holding the NUL-terminated path in
    // its first `len` bytes, and `fd` is open (owned by `stream`).
    let connected = unsafe {
        libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if connected != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stream)
}

enum LineRead {
    More,
    /// The line was read: the port it names, or `None` (malformed, or the
    /// stream ended or failed).
    Done(Option<u32>),
}

/// Reads what a pending stream has of its `CONNECT <port>\n` line,
/// byte-bounded: nothing past the newline is consumed (it is the
/// connection's first data).
fn read_line(p: &mut Pending) -> LineRead {
    let mut byte = [0u8; 1];
    loop {
        match p.stream.read(&mut byte) {
            Ok(0) => return LineRead::Done(None),
            Ok(_) if byte[0] == b'\n' => return LineRead::Done(parse_connect(&p.line)),
            Ok(_) if p.line.len() >= CONNECT_LINE_MAX => return LineRead::Done(None),
            Ok(_) => p.line.push(byte[0]),
            Err(e) if e.kind() == IoKind::WouldBlock => return LineRead::More,
            Err(e) if e.kind() == IoKind::Interrupted => {}
            Err(_) => return LineRead::Done(None),
        }
    }
}

/// `CONNECT <port>` (decimal u32) as Firecracker reads it.
pub(crate) fn parse_connect(line: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(line).ok()?;
    let port = text.strip_prefix("CONNECT ")?.trim_end_matches('\r');
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}
