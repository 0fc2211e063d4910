//! The vsock device and its transport driven as a guest driver would, over
//! plain guest memory and real Unix sockets in a temporary run directory
//! (no KVM): host- and guest-initiated connections, data both ways, credit,
//! resets, bad packets and bad `CONNECT` lines, and the transport reset a
//! restored device owes.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_mmio::*;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::muxer::{parse_connect, CONN_BUF, MAX_PAYLOAD};
use super::packet::{Header, Op, HEADER, SHUTDOWN_RECEIVE, SHUTDOWN_SEND, TYPE_STREAM};
use super::*;
use crate::virtio::test_regs::wr;
use crate::virtio::MmioTransport;

const QSIZE: u16 = 16;
const CID: u64 = 3;
/// Every buffer: a header and 4 KiB, as Linux posts them.
const BUF_LEN: u32 = HEADER as u32 + 4096;

fn ring(q: usize, part: u64) -> u64 {
    0x1000 + q as u64 * 0x3000 + part * 0x1000
}

fn buf(q: usize, slot: u16) -> u64 {
    0x10_0000 + q as u64 * 0x10_0000 + u64::from(slot) * 0x2000
}

/// A guest driver of one vsock device.
struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    backend: Arc<VsockBackend>,
    avail: [u16; 3],
    used: [u16; 3],
    _dir: tempfile::TempDir,
    run_dir: std::path::PathBuf,
}

impl Driver {
    fn new(restored: bool) -> Driver {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().to_path_buf();
        let config = VsockConfig::new(GuestCid::try_from(CID as u32).unwrap());
        let socket = HostSocket::bind(&run_dir, &config).unwrap();
        let backend = Arc::new(VsockBackend::new(socket, restored).unwrap());
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut t =
            MmioTransport::new(Box::new(Vsock::new(CID, backend.clone())), mem.clone(), irq)
                .unwrap();
        let mut id = [0u8; 4];
        t.read(u64::from(VIRTIO_MMIO_DEVICE_ID), &mut id);
        assert_eq!(u32::from_le_bytes(id), 19);
        let mut cid = [0u8; 8];
        t.read(0x100, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), CID, "the config space is the CID");
        wr(&mut t, VIRTIO_MMIO_STATUS, 3);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
        wr(&mut t, VIRTIO_MMIO_STATUS, 11);
        for q in 0..3u32 {
            wr(&mut t, VIRTIO_MMIO_QUEUE_SEL, q);
            wr(&mut t, VIRTIO_MMIO_QUEUE_NUM, u32::from(QSIZE));
            wr(
                &mut t,
                VIRTIO_MMIO_QUEUE_DESC_LOW,
                ring(q as usize, 0) as u32,
            );
            wr(
                &mut t,
                VIRTIO_MMIO_QUEUE_AVAIL_LOW,
                ring(q as usize, 1) as u32,
            );
            wr(
                &mut t,
                VIRTIO_MMIO_QUEUE_USED_LOW,
                ring(q as usize, 2) as u32,
            );
            wr(&mut t, VIRTIO_MMIO_QUEUE_READY, 1);
        }
        wr(&mut t, VIRTIO_MMIO_STATUS, 15);
        Driver {
            t,
            mem,
            backend,
            avail: [0; 3],
            used: [0; 3],
            _dir: dir,
            run_dir,
        }
    }

    fn uds(&self) -> std::path::PathBuf {
        self.run_dir.join(VsockConfig::DEFAULT_SOCKET)
    }

    /// Makes the buffer of the next slot of queue `q` available with
    /// `len` bytes (device-writable for RX and the event queue).
    fn post(&mut self, q: usize, len: u32) -> u64 {
        let n = self.avail[q];
        let slot = n % QSIZE;
        let addr = buf(q, slot);
        let at = GuestAddress(ring(q, 0) + u64::from(slot) * 16);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        let write = if q == TX { 0u16 } else { 2 };
        self.mem.write_obj(write, at.unchecked_add(12)).unwrap();
        self.mem
            .write_obj(slot, GuestAddress(ring(q, 1) + 4 + u64::from(slot) * 2))
            .unwrap();
        self.avail[q] = n.wrapping_add(1);
        self.mem
            .write_obj(self.avail[q], GuestAddress(ring(q, 1) + 2))
            .unwrap();
        addr
    }

    /// Posts `n` receive buffers and notifies.
    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            self.post(RX, BUF_LEN);
        }
        wr(&mut self.t, VIRTIO_MMIO_QUEUE_NOTIFY, RX as u32);
    }

    /// Sends one packet on the TX queue and notifies; a zero `len` in
    /// `header` becomes the payload's.
    fn send(&mut self, mut header: Header, payload: &[u8]) {
        if header.len == 0 {
            header.len = payload.len() as u32;
        }
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(payload);
        let addr = self.post(TX, bytes.len() as u32);
        self.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
        wr(&mut self.t, VIRTIO_MMIO_QUEUE_NOTIFY, TX as u32);
        assert!(
            self.backend.kick.read().unwrap() >= 1,
            "a notify kicks the thread"
        );
    }

    /// One round of the device's thread.
    fn pump(&mut self) {
        lock(&self.backend.muxer).rx_kicked();
        lock(&self.backend.muxer).service_host(Instant::now());
        self.t.backend_ready(TX);
        self.t.backend_ready(RX);
        self.t.backend_ready(EVT);
    }

    /// The packets the device completed on RX since the last call.
    fn received(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        let idx: u16 = self.mem.read_obj(GuestAddress(ring(RX, 2) + 2)).unwrap();
        while self.used[RX] != idx {
            let slot = u64::from(self.used[RX] % QSIZE);
            let id: u32 = self
                .mem
                .read_obj(GuestAddress(ring(RX, 2) + 4 + slot * 8))
                .unwrap();
            let len: u32 = self
                .mem
                .read_obj(GuestAddress(ring(RX, 2) + 8 + slot * 8))
                .unwrap();
            self.used[RX] = self.used[RX].wrapping_add(1);
            let mut raw = [0u8; HEADER];
            let addr = buf(RX, id as u16);
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let header = Header::decode(&raw);
            assert_eq!(len as usize, HEADER + header.len as usize, "used length");
            let mut payload = vec![0u8; header.len as usize];
            self.mem
                .read_slice(&mut payload, GuestAddress(addr + HEADER as u64))
                .unwrap();
            out.push((header, payload));
        }
        out
    }
}

/// A guest packet on connection (guest port `gport`, host port `hport`)
/// with a guest buffer of `buf_alloc` and `fwd_cnt` forwarded.
fn guest(op: Op, gport: u32, hport: u32, buf_alloc: u32, fwd_cnt: u32) -> Header {
    Header {
        src_cid: CID,
        dst_cid: HOST_CID,
        src_port: gport,
        dst_port: hport,
        buf_alloc,
        fwd_cnt,
        ..Header::stream(op)
    }
}

/// Whether the device closed `stream` (end of stream, or a reset when it
/// left bytes unread), waiting up to 5 s.
fn closed(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

fn ops(packets: &[(Header, Vec<u8>)]) -> Vec<Option<Op>> {
    packets.iter().map(|(h, _)| h.op()).collect()
}

/// Reads from a blocking host stream until `n` bytes came.
fn read_n(stream: &mut UnixStream, n: usize) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut out = vec![0u8; n];
    stream.read_exact(&mut out).unwrap();
    out
}

/// A host-initiated connection to guest port `port`, accepted by the
/// guest with `buf_alloc`; returns the host stream and the host port.
fn host_connection(d: &mut Driver, port: u32, buf_alloc: u32) -> (UnixStream, u32) {
    let mut host = UnixStream::connect(d.uds()).unwrap();
    host.write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    d.post_rx(4);
    d.pump();
    let got = d.received();
    assert_eq!(ops(&got), vec![Some(Op::Request)]);
    let req = got[0].0;
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port, req.kind),
        (HOST_CID, CID, port, TYPE_STREAM)
    );
    assert_eq!(req.buf_alloc, CONN_BUF);
    d.send(guest(Op::Response, port, req.src_port, buf_alloc, 0), &[]);
    d.pump();
    let ok = format!("OK {}\n", req.src_port);
    assert_eq!(read_n(&mut host, ok.len()), ok.as_bytes());
    (host, req.src_port)
}

#[test]
fn a_host_connect_reaches_the_guest_and_bytes_go_both_ways() {
    let mut d = Driver::new(false);
    let (mut host, hport) = host_connection(&mut d, 1234, 1 << 20);
    host.write_all(b"ping from the host").unwrap();
    d.pump();
    let got = d.received();
    assert_eq!(ops(&got), vec![Some(Op::Rw)]);
    assert_eq!(got[0].1, b"ping from the host");
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (hport, 1234));
    d.send(
        guest(Op::Rw, 1234, hport, 1 << 20, 18),
        b"pong from the guest",
    );
    d.pump();
    assert_eq!(read_n(&mut host, 19), b"pong from the guest");
    assert!(d.t.irq().read().unwrap() >= 1, "completions interrupt");

    // The host closes: the guest hears it will get nothing more and can
    // still send; its full shutdown is confirmed with a reset.
    drop(host);
    d.post_rx(2);
    d.pump();
    let got = d.received();
    assert_eq!(ops(&got), vec![Some(Op::Shutdown)]);
    assert_eq!(got[0].0.flags, SHUTDOWN_SEND);
    let mut shut = guest(Op::Shutdown, 1234, hport, 1 << 20, 18);
    shut.flags = SHUTDOWN_SEND | SHUTDOWN_RECEIVE;
    d.send(shut, &[]);
    d.pump();
    assert_eq!(ops(&d.received()), vec![Some(Op::Rst)]);
    assert_eq!(d.backend.connections(), 0);
}

#[test]
fn a_guest_connect_goes_to_the_socket_of_its_port_or_is_reset() {
    let mut d = Driver::new(false);
    let listener = UnixListener::bind(d.run_dir.join("vsock.sock_5000")).unwrap();
    d.post_rx(4);
    d.send(guest(Op::Request, 49152, 5000, 1 << 20, 0), &[]);
    d.pump();
    let got = d.received();
    assert_eq!(ops(&got), vec![Some(Op::Response)]);
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (5000, 49152));
    let (mut host, _) = listener.accept().unwrap();
    d.send(guest(Op::Rw, 49152, 5000, 1 << 20, 0), b"hello host");
    d.pump();
    assert_eq!(read_n(&mut host, 10), b"hello host");
    host.write_all(b"hello guest").unwrap();
    d.pump();
    let got = d.received();
    assert_eq!(got[0].1, b"hello guest");

    // Nobody listens on port 5001: refused.
    d.send(guest(Op::Request, 49153, 5001, 1 << 20, 0), &[]);
    d.pump();
    let got = d.received();
    assert_eq!(ops(&got), vec![Some(Op::Rst)]);
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (5001, 49153));
    // The guest resets its connection: the host sees the stream end.
    d.send(guest(Op::Rst, 49152, 5000, 1 << 20, 0), &[]);
    d.pump();
    assert!(closed(&mut host));
}

#[test]
fn the_device_sends_no_more_than_the_guest_has_room_for() {
    let mut d = Driver::new(false);
    let (mut host, hport) = host_connection(&mut d, 7, 6000);
    let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
    host.write_all(&data).unwrap();
    d.post_rx(8);
    d.pump();
    let got = d.received();
    let bytes: usize = got.iter().map(|(_, p)| p.len()).sum();
    assert_eq!(bytes, 6000, "exactly the guest's credit");
    assert!(got.iter().all(|(_, p)| p.len() <= 4096), "one buffer each");
    assert_eq!(ops(&got).last(), Some(&Some(Op::CreditRequest)));
    // Nothing more until the guest has room again.
    d.pump();
    assert!(d.received().is_empty());
    d.send(guest(Op::CreditUpdate, 7, hport, 6000, 6000), &[]);
    d.pump();
    let more: Vec<u8> = d.received().into_iter().flat_map(|(_, p)| p).collect();
    let sent: Vec<u8> = got.into_iter().flat_map(|(_, p)| p).chain(more).collect();
    assert_eq!(&sent[..], &data[..sent.len()]);
    assert_eq!(sent.len(), 12_000);
}

#[test]
fn a_guest_past_its_credit_or_the_packet_limit_is_reset_and_nothing_breaks() {
    let mut d = Driver::new(false);
    let (_host, hport) = host_connection(&mut d, 9, 1 << 20);
    // The host does not read: once its socket buffer is full, the device
    // buffers CONN_BUF bytes at most, and a guest sending more than that
    // credit is reset.
    let chunk = vec![0x5au8; MAX_PAYLOAD];
    d.post_rx(12); // room for the credit updates on the way, and the reset
    for _ in 0..64 {
        d.send(guest(Op::Rw, 9, hport, 1 << 20, 0), &chunk);
        d.pump();
        if d.backend.connections() == 0 {
            break;
        }
    }
    assert_eq!(d.backend.connections(), 0);
    let got = ops(&d.received());
    assert_eq!(got.last(), Some(&Some(Op::Rst)), "{got:?}");

    // A header claiming more than its buffer holds, or than a packet may
    // carry, and garbage: reset or dropped, no panic.
    let mut liar = guest(Op::Rw, 10, 11, 0, 0);
    liar.len = u32::MAX;
    d.send(liar, b"short");
    let mut wrong = guest(Op::Request, 12, 13, 0, 0);
    wrong.src_cid = 99;
    d.send(wrong, &[]);
    let mut unknown = guest(Op::Rw, 14, 15, 0, 0);
    unknown.op = 0x77;
    d.send(unknown, &[]);
    d.post(TX, 3); // shorter than a header
    wr(&mut d.t, VIRTIO_MMIO_QUEUE_NOTIFY, TX as u32);
    d.post_rx(4);
    d.pump();
    assert_eq!(
        ops(&d.received()),
        vec![Some(Op::Rst), Some(Op::Rst), Some(Op::Rst)]
    );
}

#[test]
fn bad_connect_lines_close_the_host_stream() {
    let mut d = Driver::new(false);
    for line in [
        "CONNECT\n",
        "CONNECT -1\n",
        "HELLO 5\n",
        "CONNECT 99999999999\n",
    ] {
        let mut host = UnixStream::connect(d.uds()).unwrap();
        host.write_all(line.as_bytes()).unwrap();
        d.pump();
        assert!(closed(&mut host), "{line:?}");
    }
    let mut host = UnixStream::connect(d.uds()).unwrap();
    host.write_all(&[b'7'; 100]).unwrap();
    d.pump();
    assert!(closed(&mut host), "an endless line");
    assert_eq!(parse_connect(b"CONNECT 52"), Some(52));
    assert_eq!(parse_connect(b"CONNECT 52\r"), Some(52));
    assert_eq!(parse_connect(b"CONNECT +52"), None);
    assert!(d.received().is_empty());
}

#[test]
fn a_connect_the_guest_does_not_answer_is_closed_after_the_timeout() {
    let mut d = Driver::new(false);
    let mut host = UnixStream::connect(d.uds()).unwrap();
    host.write_all(b"CONNECT 42\n").unwrap();
    d.post_rx(1);
    d.pump();
    assert_eq!(ops(&d.received()), vec![Some(Op::Request)]);
    // A host stream that never says CONNECT, too.
    let mut silent = UnixStream::connect(d.uds()).unwrap();
    d.pump();
    // The guest answers neither; the clock (injected) passes the deadline.
    let later = Instant::now() + super::muxer::CONNECT_TIMEOUT + Duration::from_millis(1);
    lock(&d.backend.muxer).service_host(later);
    assert!(closed(&mut host));
    assert!(closed(&mut silent));
    assert_eq!(d.backend.connections(), 0);
    // The guest is told to forget its half once it has a buffer.
    d.post_rx(1);
    d.pump();
    let got = d.received();
    assert_eq!(ops(&got), vec![Some(Op::Rst)]);
    assert_eq!(got[0].0.dst_port, 42);
}

#[test]
fn a_restored_device_tells_the_guest_its_connections_are_gone() {
    let mut d = Driver::new(true);
    d.pump();
    d.post(EVT, 8);
    d.pump();
    let idx: u16 = d.mem.read_obj(GuestAddress(ring(EVT, 2) + 2)).unwrap();
    assert_eq!(idx, 1);
    let len: u32 = d.mem.read_obj(GuestAddress(ring(EVT, 2) + 8)).unwrap();
    let id: u32 = d.mem.read_obj(GuestAddress(buf(EVT, 0))).unwrap();
    assert_eq!((len, id), (4, 0), "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET");
    // Once only; a fresh device owes none.
    d.post(EVT, 8);
    d.pump();
    let idx: u16 = d.mem.read_obj(GuestAddress(ring(EVT, 2) + 2)).unwrap();
    assert_eq!(idx, 1);
    // And new connections work.
    let (mut host, _) = host_connection(&mut d, 1, 4096);
    host.write_all(b"x").unwrap();
    d.pump();
    assert_eq!(d.received()[0].1, b"x");
}

#[test]
fn the_config_rejects_reserved_cids_and_names_outside_the_run_dir() {
    for cid in [0, 1, 2, u32::MAX] {
        assert!(GuestCid::try_from(cid).is_err(), "{cid}");
    }
    for name in [
        "", "/tmp/x", "a/b", "..", ".hidden", "api.sock", "jail", "sp ace",
    ] {
        assert!(VsockSocketName::try_from(name).is_err(), "{name:?}");
    }
    let long = "x".repeat(65);
    assert!(VsockSocketName::try_from(long.as_str()).is_err());
    let json = r#"{"guest_cid": 2, "socket": "v.sock"}"#;
    let err = serde_json::from_str::<VsockConfig>(json).unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
    // A run directory too deep for `<socket>_<port>` to be a socket path.
    let deep = std::path::PathBuf::from(format!("/tmp/{}", "d".repeat(100)));
    let config = VsockConfig::new(GuestCid::try_from(3).unwrap());
    let err = HostSocket::bind(&deep, &config).err().unwrap();
    assert!(err.to_string().contains("vsock.socket"), "{err}");
}

#[test]
fn the_pumping_thread_stops_when_told() {
    // The thread polls with no deadline and returns once `runnable` says
    // stop; the kick wakes it.
    let d = Driver::new(false);
    let backend = d.backend.clone();
    let transport = Arc::new(Mutex::new(d.t));
    let go = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let io = crate::virtio::DeviceIo {
        nets: Vec::new(),
        vsock: Some((backend.clone(), 0)),
    };
    let (t, g) = (transport.clone(), go.clone());
    let thread = std::thread::spawn(move || {
        io.run(
            || g.load(std::sync::atomic::Ordering::SeqCst),
            std::slice::from_ref(&*t),
        )
    });
    go.store(false, std::sync::atomic::Ordering::SeqCst);
    backend.kick.write(1).unwrap();
    thread.join().unwrap();
}

#[test]
fn a_snapshot_state_must_match_the_configs_vsock_device() {
    let d = Driver::new(false);
    let state = d.t.save();
    assert!(
        crate::virtio::validate_states(&[], &[], true, None, std::slice::from_ref(&state)).is_ok()
    );
    // A state for a device the config does not have, and the other way.
    let err = crate::virtio::validate_states(&[], &[], false, None, std::slice::from_ref(&state))
        .unwrap_err();
    assert!(err.to_string().contains("machine.virtio"), "{err}");
    let err = crate::virtio::validate_states(&[], &[], true, None, &[]).unwrap_err();
    assert!(err.to_string().contains("1 vsock devices"), "{err}");
    // Old configs (no `vsock`) still read, without one.
    let old: crate::VmConfig = serde_json::from_str(
        r#"{"kernel":"/k","initrd":null,"cmdline":"","vcpus":1,"memory_mib":32}"#,
    )
    .unwrap();
    assert_eq!(old.vsock, None);
    let json = serde_json::to_string(&old).unwrap();
    assert!(!json.contains("vsock"), "{json}");
}

/// One arbitrary guest packet: op (known ones likely), ports, CIDs,
/// claimed length, credit and payload size.
fn arbitrary_packet() -> impl proptest::strategy::Strategy<Value = (Header, usize)> {
    use proptest::prelude::*;
    (
        prop_oneof![(1u16..=7), any::<u16>()],
        prop_oneof![Just(1234u32), Just(5000), any::<u32>()],
        prop_oneof![Just(1u32 << 30), Just(5000), any::<u32>()],
        prop_oneof![Just(CID), Just(HOST_CID), any::<u64>()],
        prop_oneof![Just(HOST_CID), Just(CID), any::<u64>()],
        prop_oneof![Just(None), any::<u32>().prop_map(Some)],
        any::<u32>(),
        any::<u32>(),
        prop_oneof![Just(TYPE_STREAM), any::<u16>()],
        0usize..300,
    )
        .prop_map(
            |(op, src_port, dst_port, src_cid, dst_cid, len, buf_alloc, fwd_cnt, kind, size)| {
                let header = Header {
                    src_cid,
                    dst_cid,
                    src_port,
                    dst_port,
                    len: len.unwrap_or(size as u32),
                    kind,
                    op,
                    flags: fwd_cnt & 3,
                    buf_alloc,
                    fwd_cnt,
                };
                (header, size)
            },
        )
}

proptest::proptest! {
    // A fixed budget and seed: the same cases on every run.
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 64,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x7673_6f63),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Whatever packets a guest sends (with a host connection open and a
    /// host socket for port 5000), the device answers without panicking,
    /// keeps its bounds, and still serves a new host connection after.
    #[test]
    fn arbitrary_guest_packets_never_panic(
        packets in proptest::collection::vec(arbitrary_packet(), 1..12),
    ) {
        let mut d = Driver::new(false);
        let _listener = UnixListener::bind(d.run_dir.join("vsock.sock_5000")).unwrap();
        let (_host, _) = host_connection(&mut d, 1234, 1 << 20);
        for (header, size) in packets {
            d.send(header, &vec![0xa5; size]);
            // Never more buffers outstanding than the queue holds.
            if d.avail[RX].wrapping_sub(d.used[RX]) < QSIZE / 2 {
                d.post_rx(1);
            }
            d.pump();
            let _ = d.received();
            proptest::prop_assert!(d.backend.connections() <= super::muxer::MAX_CONNECTIONS);
        }
        d.pump();
        let _ = d.received();
        let (mut host, _) = host_connection(&mut d, 77, 4096);
        host.write_all(b"still here").unwrap();
        d.pump();
        let got = d.received();
        proptest::prop_assert!(got.iter().any(|(h, p)| h.op() == Some(Op::Rw) && p == b"still here"));
    }
}
