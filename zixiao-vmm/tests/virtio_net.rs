//! virtio-net on /dev/kvm with the freestanding C guest (guest/blk.c): the
//! test makes a network namespace with a TAP in it, starts the VMM there,
//! and answers the guest through an AF_PACKET socket bound to the TAP: the
//! guest's frame arrives whole, a frame the host sends is reported by the
//! guest with the right length and CRC and comes back. A snapshot taken
//! while the guest sends restores into a new VMM whose guest goes on
//! sending and answering; a missing TAP is a clear error; a TAP deleted
//! under a running guest stops the card, not the VMM.

mod common;

use std::fs::File;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use zixiao_core::ErrorKind;
use zixiao_testing::packet::PacketSocket;
use zixiao_vmm::{
    launch_in_netns, Boot, Confinement, MacAddr, NetConfig, TapName, VmConfig, VmState, VmmClient,
};

const T: Duration = Duration::from_secs(60);
const GUEST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
/// What the guest sends (and echoes with).
const GUEST_TYPE: u16 = 0x88b5;
/// What the test sends; the guest answers only these.
const HOST_TYPE: u16 = 0x88b6;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace made for one test, with a TAP `tap0` in it (up,
/// IPv6 off so the kernel sends it nothing on its own). Removed on drop.
struct TapNs {
    name: String,
}

impl TapNs {
    fn new(tag: &str) -> TapNs {
        let name = format!("zxvnet-{tag}-{}", std::process::id());
        // A namespace left by a killed run of this test.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let ns = TapNs { name };
        ip(&[
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ip(&[
            "-n", &ns.name, "tuntap", "add", "dev", "tap0", "mode", "tap",
        ]);
        ip(&["-n", &ns.name, "link", "set", "tap0", "up"]);
        ns
    }

    fn file(&self) -> File {
        File::open(format!("/run/netns/{}", self.name)).unwrap()
    }

    /// An AF_PACKET socket on `tap0` that receives the frames of
    /// EtherType 0x88b5 the guest sends (and sends the host's).
    fn packet_socket(&self) -> PacketSocket {
        PacketSocket::open_in(&self.file(), "tap0", GUEST_TYPE).expect("a packet socket on tap0")
    }

    fn delete_tap(&self) {
        ip(&["-n", &self.name, "link", "del", "tap0"]);
    }
}

impl Drop for TapNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The next frame from the guest whose payload starts with `prefix`.
fn recv_starting(socket: &PacketSocket, prefix: &[u8]) -> Vec<u8> {
    socket.recv_starting(prefix, T).unwrap_or_else(|| {
        panic!(
            "no frame starting {:?} from the guest within {T:?}",
            String::from_utf8_lossy(prefix)
        )
    })
}

/// A frame from the host to the guest carrying `payload`.
fn host_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = GUEST_MAC.to_vec();
    f.extend_from_slice(&HOST_MAC);
    f.extend_from_slice(&HOST_TYPE.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn config(kernel: &Path, cmdline: &str) -> VmConfig {
    VmConfig {
        nets: vec![NetConfig {
            tap: TapName::try_from("tap0").unwrap(),
            mac: MacAddr::try_from("02:00:00:00:00:01").unwrap(),
        }],
        ..guest_config(kernel, cmdline)
    }
}

async fn launch(ns: &TapNs, run_dir: &Path, boot: Boot) -> Result<VmmClient, zixiao_vmm::VmmError> {
    launch_as(ns, run_dir, boot, &Confinement::default()).await
}

/// [`launch`] confined as `confinement`.
async fn launch_as(
    ns: &TapNs,
    run_dir: &Path,
    boot: Boot,
    confinement: &Confinement,
) -> Result<VmmClient, zixiao_vmm::VmmError> {
    launch_in_netns(&vmm_binary(), run_dir, boot, confinement, &ns.file()).await
}

/// Sends a frame carrying `payload` and checks that the guest reports it
/// (length and CRC) and sends it back from its own MAC. Returns the time
/// from sending to the echo's arrival.
async fn exchange(vmm: &VmmClient, socket: &PacketSocket, payload: &[u8]) -> Duration {
    let frame = host_frame(payload);
    let sent = Instant::now();
    socket.send(&frame).expect("send");
    let echo = recv_starting(socket, payload);
    let round_trip = sent.elapsed();
    assert_eq!(&echo[..6], &HOST_MAC, "to the sender");
    assert_eq!(&echo[6..12], &GUEST_MAC, "from the guest's MAC");
    assert_eq!(&echo[12..14], &GUEST_TYPE.to_be_bytes());
    assert_eq!(&echo[14..14 + payload.len()], payload);
    wait_console(
        &vmm.console_log(),
        &format!("ZX: net rx len={} crc={:08x}\n", frame.len(), crc32(&frame)),
        T,
    )
    .await;
    round_trip
}

#[tokio::test]
async fn frames_go_both_ways_between_the_guest_and_the_tap() {
    let Some(kernel) = virtio_guest() else { return };
    let ns = TapNs::new("both");
    let socket = ns.packet_socket();
    let tmp = tempfile::tempdir().unwrap();
    let vmm = launch(
        &ns,
        &tmp.path().join("vm"),
        Boot::Fresh(config(&kernel, "console=ttyS0")),
    )
    .await
    .unwrap();
    let _reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();

    // Guest to host: its broadcast frame, whole, from its configured MAC.
    let hello = recv_starting(&socket, b"zixiao-net hello");
    assert_eq!(hello.len(), 60, "padded to the Ethernet minimum");
    assert_eq!(&hello[..6], &[0xff; 6]);
    assert_eq!(&hello[6..12], &GUEST_MAC);
    assert_eq!(&hello[12..14], &GUEST_TYPE.to_be_bytes());
    let log = wait_console(&vmm.console_log(), "ZX: net tx hello\n", T).await;
    assert!(
        log.contains("ZX: cmdline=console=ttyS0 virtio_mmio.device=4K@0xd0000000:5\n"),
        "{log}"
    );
    assert!(
        log.contains("ZX: virtio0 at 0xd0000000 irq=5 version=2 id=1\n"),
        "{log}"
    );
    assert!(
        log.contains("ZX: net mac=02:00:00:00:00:01 link=1\n"),
        "{log}"
    );

    // Host to guest and back.
    let payload: Vec<u8> = b"ping from the host "
        .iter()
        .copied()
        .chain((0..77).map(|i| i as u8))
        .collect();
    let rtt = exchange(&vmm, &socket, &payload).await;
    eprintln!("first round trip host -> guest -> host: {rtt:?}");
    wait_console(&vmm.console_log(), "ZX: bye", T).await;
    zixiao_testing::wait::wait_until("the guest's reset", T, || async {
        let info = vmm.info().await.ok()?;
        matches!(info.state, VmState::Exited { .. }).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_unconfined_vmm_launched_in_the_taps_namespace_sends_there() {
    // The test's own namespace has no such TAP: only the right namespace
    // lets it attach the card.
    let Some(kernel) = virtio_guest() else { return };
    let ns = TapNs::new("unconf");
    let socket = ns.packet_socket();
    let tmp = tempfile::tempdir().unwrap();
    let fresh = Boot::Fresh(config(&kernel, "console=ttyS0"));
    let vmm = launch_as(&ns, &tmp.path().join("vm"), fresh, &Confinement::none())
        .await
        .unwrap();
    let _reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    let hello = recv_starting(&socket, b"zixiao-net hello");
    assert_eq!(&hello[6..12], &GUEST_MAC);
    // The launcher's own threads stayed in the test's namespace.
    let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let vmm_ns = std::fs::read_link(format!("/proc/{}/ns/net", vmm.pid())).unwrap();
    assert_ne!(here, vmm_ns);
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// The last `ZX: net tx seq=N` of the console.
fn last_seq(vmm: &VmmClient) -> Option<u64> {
    std::fs::read_to_string(vmm.console_log())
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("ZX: net tx seq=")?.parse().ok())
}

async fn wait_seq_above(vmm: &VmmClient, above: u64) -> u64 {
    zixiao_testing::wait::wait_until(&format!("a frame after seq={above}"), T, || async {
        last_seq(vmm).filter(|&n| n > above)
    })
    .await
}

#[tokio::test]
async fn snapshot_with_an_active_card_restores_and_the_guest_goes_on_with_its_frames() {
    let Some(kernel) = virtio_guest() else { return };
    let ns = TapNs::new("snap");
    let socket = ns.packet_socket();
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let first = launch(
        &ns,
        &tmp.path().join("a"),
        Boot::Fresh(config(&kernel, "zx.net=loop")),
    )
    .await
    .unwrap();
    let _reaper_first = Reaper(first.pid());
    first.start().await.unwrap();
    recv_starting(&socket, b"zixiao-net hello");
    exchange(&first, &socket, b"before the snapshot").await;
    wait_seq_above(&first, 2).await;
    first.snapshot(&snap).await.unwrap();
    let at_snapshot = last_seq(&first).unwrap();
    first.shutdown(Duration::from_secs(5)).await.unwrap();
    let state = std::fs::read_to_string(snap.join("state.json")).unwrap();
    assert!(state.contains("\"nets\":[{\"tap\":\"tap0\",\"mac\":\"02:00:00:00:00:01\"}]"));
    assert!(state.contains("\"virtio\":[{\"device_type\":1"));

    // The restore attaches to the TAP again by name; the guest goes on
    // with the next sequence numbers (it does not boot again), and still
    // answers.
    let second = launch(
        &ns,
        &tmp.path().join("b"),
        Boot::Restore {
            snapshot_dir: snap.clone(),
        },
    )
    .await
    .unwrap();
    let _reaper_second = Reaper(second.pid());
    second.resume().await.unwrap();
    let next = format!("zixiao-net seq={}", at_snapshot + 2);
    recv_starting(&socket, next.as_bytes());
    exchange(&second, &socket, b"after the restore").await;
    let log = std::fs::read_to_string(second.console_log()).unwrap();
    assert!(!log.contains("ZX: net mac="), "booted again: {log}");
    second.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_missing_a_foreign_or_a_busy_tap_is_refused_naming_the_field() {
    let Some(kernel) = virtio_guest() else { return };
    let ns = TapNs::new("missing");
    let tmp = tempfile::tempdir().unwrap();
    let on = |tap: &str| {
        let mut config = config(&kernel, "console=ttyS0");
        config.nets[0].tap = TapName::try_from(tap).unwrap();
        Boot::Fresh(config)
    };
    let err = launch(&ns, &tmp.path().join("vm"), on("zxnothere0"))
        .await
        .expect_err("launched on a TAP that does not exist");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("nets[0].tap"), "{err}");
    assert!(err.to_string().contains("zxnothere0"), "{err}");
    assert!(!tmp.path().join("vm").exists(), "nothing left behind");

    // An interface that is not a TAP (the namespace's loopback).
    let err = launch(&ns, &tmp.path().join("vm"), on("lo"))
        .await
        .expect_err("launched on the loopback");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains("nets[0].tap") && err.to_string().contains("not a"),
        "{err}"
    );

    // A TAP another VMM holds.
    let first = launch(&ns, &tmp.path().join("first"), on("tap0"))
        .await
        .unwrap();
    let _reaper = Reaper(first.pid());
    let err = launch(&ns, &tmp.path().join("vm"), on("tap0"))
        .await
        .expect_err("two VMMs on one TAP");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("already attached"), "{err}");
    assert!(!tmp.path().join("vm").exists(), "nothing left behind");
    first.shutdown(Duration::from_secs(5)).await.unwrap();

    // A config file with a bad name or MAC does not even parse.
    for bad in [
        r#"{"tap":"tap0/x","mac":"02:00:00:00:00:01"}"#,
        r#"{"tap":"tap0","mac":"ff:ff:ff:ff:ff:ff"}"#,
    ] {
        assert!(serde_json::from_str::<NetConfig>(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_tap_deleted_under_a_running_guest_stops_the_card_not_the_vmm() {
    let Some(kernel) = virtio_guest() else { return };
    let ns = TapNs::new("gone");
    let socket = ns.packet_socket();
    let tmp = tempfile::tempdir().unwrap();
    let vmm = launch(
        &ns,
        &tmp.path().join("vm"),
        Boot::Fresh(config(&kernel, "zx.net=loop")),
    )
    .await
    .unwrap();
    let _reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    recv_starting(&socket, b"zixiao-net hello");
    exchange(&vmm, &socket, b"before").await;
    let before = wait_seq_above(&vmm, 1).await;
    ns.delete_tap();
    // The guest goes on (its frames go nowhere), the VMM answers, and its
    // log says once what happened.
    wait_seq_above(&vmm, before + 5).await;
    assert_eq!(vmm.info().await.unwrap().state, VmState::Running);
    let log = std::fs::read_to_string(tmp.path().join("vm/vmm.log")).unwrap();
    assert_eq!(
        log.matches("nets[0].tap: TAP tap0 failed").count(),
        1,
        "{log}"
    );
    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
}
