//! virtio-vsock on /dev/kvm with the freestanding C guest (guest/blk.c),
//! which listens on vsock port 1234 and echoes every connection's bytes
//! (advertising a 16 KiB buffer, so the host side must wait for credit):
//! a host process connects through the VMM's socket with `CONNECT 1234`,
//! the guest connects to host port 5000 (the Unix socket `<socket>_5000`;
//! its connection to 5001, which has none, is refused), 256 KiB go each way and come back byte for byte; a `CONNECT` to a port
//! nobody listens on is closed and the VMM goes on; a snapshot restores
//! into a VMM whose guest is told its connections are gone and takes new
//! ones, and so does a live migration's target (one with another CID is
//! refused); a run directory too deep for the socket is refused naming it.
//!
//! The Linux side (the Debian kernel's `vmw_vsock_virtio_transport` with
//! socat in a guest) needs hardware KVM, which this machine's
//! software-nested KVM is not (see tests/linux.rs); the C guest drives the
//! same device through the same transport.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use zixiao_core::ErrorKind;
use zixiao_vmm::{
    launch, Boot, GuestCid, JailConfig, MigrationParams, VmConfig, VmState, VmmClient, VsockConfig,
    VsockSocketName,
};

const T: Duration = Duration::from_secs(60);
/// What the guest listens on.
const GUEST_PORT: u32 = 1234;
/// Where `zx.vsock.connect=` makes the guest connect.
const HOST_PORT: u32 = 5000;
const KIB: usize = 1024;

fn vsock() -> VsockConfig {
    VsockConfig {
        guest_cid: GuestCid::try_from(3).unwrap(),
        socket: VsockSocketName::try_from("v.sock").unwrap(),
    }
}

fn config(kernel: &Path, cmdline: &str) -> VmConfig {
    VmConfig {
        vsock: Some(vsock()),
        ..guest_config(kernel, cmdline)
    }
}

/// `len` bytes of a seeded pseudo-random stream.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` on `stream` while reading as many bytes back (the
/// guest echoes); returns what came back.
async fn echo(stream: UnixStream, data: Vec<u8>) -> Vec<u8> {
    tokio::task::spawn_blocking(move || {
        stream.set_read_timeout(Some(T)).unwrap();
        stream.set_write_timeout(Some(T)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let len = data.len();
        let sender = std::thread::spawn(move || writer.write_all(&data));
        let mut back = vec![0u8; len];
        let mut reader = &stream;
        reader.read_exact(&mut back).expect("the echo, in full");
        sender.join().unwrap().unwrap();
        back
    })
    .await
    .unwrap()
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {at}");
    }
}

/// A host connection to guest `port` through the VMM's socket in
/// `run_dir`: `CONNECT`, then the `OK <host port>` line. `None` when the
/// VMM closed the stream instead (nobody listens on `port`).
async fn connect_to_guest(run_dir: &Path, port: u32) -> Option<UnixStream> {
    let path = vsock().uds_path(run_dir);
    tokio::task::spawn_blocking(move || {
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.set_read_timeout(Some(T)).unwrap();
        stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stream.read(&mut byte).expect("no timeout") == 1 {
            if byte[0] == b'\n' {
                let text = String::from_utf8(line).unwrap();
                let host_port: u32 = text
                    .strip_prefix("OK ")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("not an OK line: {text:?}"));
                assert!(host_port >= 1 << 30, "an ephemeral host port");
                return Some(stream);
            }
            line.push(byte[0]);
        }
        assert!(line.is_empty(), "closed mid-line: {line:?}");
        None
    })
    .await
    .unwrap()
}

/// A Unix socket the jailed VMM (its own unprivileged user) can connect
/// to, at `path`.
fn listener_for_the_vmm(path: &Path) -> UnixListener {
    let listener = UnixListener::bind(path).unwrap();
    let jail = JailConfig::default();
    std::os::unix::fs::chown(path, Some(jail.uid), Some(jail.gid)).unwrap();
    listener.set_nonblocking(true).unwrap();
    listener
}

async fn accept(listener: &UnixListener) -> UnixStream {
    let stream = zixiao_testing::wait::wait_until("the guest's connection", T, || async {
        listener.accept().ok().map(|(s, _)| s)
    })
    .await;
    stream.set_nonblocking(false).unwrap();
    stream
}

/// After a restore or a migration into `vmm` (run directory `dir`): its
/// guest hears that its connections are gone, and a new connection echoes
/// `len` bytes. Returns the console log.
async fn resets_then_echoes(vmm: &VmmClient, dir: &Path, len: usize, what: &str) -> String {
    let log = wait_console(&vmm.console_log(), "ZX: vsock transport reset", T).await;
    let stream = connect_to_guest(dir, GUEST_PORT)
        .await
        .unwrap_or_else(|| panic!("a new connection {what}"));
    let data = pattern(len, len as u64);
    assert_same(&echo(stream, data.clone()).await, &data, what);
    log
}

fn run_dir(tmp: &Path, name: &str) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

#[tokio::test]
async fn connections_both_ways_carry_256_kib_each_way_under_flow_control() {
    let Some(kernel) = virtio_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_dir(tmp.path(), "vm");
    let to_host = listener_for_the_vmm(&vsock().port_path(&dir, HOST_PORT));
    // 5001 has no socket: that connection is refused.
    let cmdline = format!("console=ttyS0 zx.vsock.connect={HOST_PORT},5001");
    let vmm = launch(&vmm_binary(), &dir, Boot::Fresh(config(&kernel, &cmdline)))
        .await
        .unwrap();
    let _reaper = Reaper(vmm.pid());
    vmm.start().await.unwrap();
    wait_console(&vmm.console_log(), "ZX: vsock cid=3", T).await;
    // The device runs on the devices' one I/O thread, filtered.
    let io: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", vmm.pid()))
        .unwrap()
        .flatten()
        .map(|t| std::fs::read_to_string(t.path().join("status")).unwrap_or_default())
        .filter(|status| status.starts_with("Name:\tdevices-io\n"))
        .collect();
    assert_eq!(io.len(), 1, "one devices-io thread");
    assert!(io[0].contains("\nSeccomp:\t2\n"), "{}", io[0]);

    // Guest to host: the guest's connection arrives on <socket>_5000;
    // the one to 5001, where nobody listens, is refused.
    wait_console(&vmm.console_log(), "ZX: vsock connected port=5000", T).await;
    wait_console(&vmm.console_log(), "ZX: vsock refused port=5001", T).await;
    let stream = accept(&to_host).await;
    let data = pattern(256 * KIB, 1);
    assert_same(&echo(stream, data.clone()).await, &data, "guest-initiated");

    // Host to guest, through the VMM's socket.
    let stream = connect_to_guest(&dir, GUEST_PORT)
        .await
        .expect("the guest listens on 1234");
    let data = pattern(256 * KIB, 2);
    assert_same(&echo(stream, data.clone()).await, &data, "host-initiated");
    // The guest saw both connections end, every byte echoed.
    let log = vmm.console_log();
    zixiao_testing::wait::wait_until("both connections closed in the guest", T, || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.matches("bytes=262144\n").count() == 2).then_some(())
    })
    .await;

    // Nobody listens on 4321: the guest refuses, the host stream is
    // closed, and the VMM and the guest go on.
    assert!(connect_to_guest(&dir, 4321).await.is_none());
    wait_console(&vmm.console_log(), "ZX: vsock refuse port=4321", T).await;
    assert_eq!(vmm.info().await.unwrap().state, VmState::Running);
    let stream = connect_to_guest(&dir, GUEST_PORT).await.unwrap();
    let data = pattern(4 * KIB, 3);
    assert_same(&echo(stream, data.clone()).await, &data, "after a refusal");

    vmm.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(
        !vsock().uds_path(&dir).exists(),
        "the VMM removes its socket when it stops"
    );
}

#[tokio::test]
async fn a_restored_guest_is_told_its_connections_are_gone_and_takes_new_ones() {
    let Some(kernel) = virtio_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("snap");
    let first_dir = run_dir(tmp.path(), "a");
    let first = launch(
        &vmm_binary(),
        &first_dir,
        Boot::Fresh(config(&kernel, "console=ttyS0")),
    )
    .await
    .unwrap();
    let _reaper_first = Reaper(first.pid());
    first.start().await.unwrap();
    wait_console(&first.console_log(), "ZX: ready", T).await;
    // A connection open across the snapshot.
    let open = connect_to_guest(&first_dir, GUEST_PORT).await.unwrap();
    let data = pattern(64 * KIB, 4);
    let open_clone = open.try_clone().unwrap();
    assert_same(&echo(open_clone, data.clone()).await, &data, "before");
    first.snapshot(&snap).await.unwrap();
    first.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(open);
    let state = std::fs::read_to_string(snap.join("state.json")).unwrap();
    assert!(
        state.contains(r#""vsock":{"guest_cid":3,"socket":"v.sock"}"#),
        "{state}"
    );

    let second_dir = run_dir(tmp.path(), "b");
    let second = restore(&second_dir, &snap).await;
    let _reaper_second = Reaper(second.pid());
    second.resume().await.unwrap();
    let log = resets_then_echoes(&second, &second_dir, 128 * KIB, "after the restore").await;
    assert!(!log.contains("ZX: vsock cid="), "booted again: {log}");
    second.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_socket_path_too_long_for_a_unix_socket_is_refused_naming_it() {
    let Some(kernel) = virtio_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Room for api.sock, none for v.sock_<port>.
    let room = 107 - tmp.path().as_os_str().len() - "/api.sock".len();
    let dir = tmp.path().join("d".repeat(room - 1));
    let err = launch(&vmm_binary(), &dir, Boot::Fresh(config(&kernel, "")))
        .await
        .expect_err("launched with a socket path too long");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.to_string().contains("vsock.socket"), "{err}");
    assert!(!dir.exists(), "nothing left behind: {err}");
}

#[tokio::test]
async fn a_migrated_guest_takes_new_connections_on_the_targets_socket() {
    let Some(kernel) = virtio_guest() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let config = config(&kernel, "console=ttyS0");
    let source_dir = run_dir(tmp.path(), "source");
    let source = launch(&vmm_binary(), &source_dir, Boot::Fresh(config.clone()))
        .await
        .unwrap();
    let _reaper_source = Reaper(source.pid());
    source.start().await.unwrap();
    wait_console(&source.console_log(), "ZX: ready", T).await;
    let open = connect_to_guest(&source_dir, GUEST_PORT).await.unwrap();

    // A target whose guest would have another address is refused.
    let mut other = config.clone();
    other.vsock = Some(VsockConfig {
        guest_cid: GuestCid::try_from(4).unwrap(),
        ..vsock()
    });
    let wrong = launch(
        &vmm_binary(),
        &tmp.path().join("wrong"),
        Boot::Incoming(other),
    )
    .await
    .unwrap();
    let _reaper_wrong = Reaper(wrong.pid());
    let params = MigrationParams::new(30, 500).unwrap();
    let err = source
        .migrate(&wrong.migration_socket(), params)
        .await
        .expect_err("migrated to a target with another CID");
    assert!(err.to_string().contains("vsock.guest_cid"), "{err}");
    assert_eq!(source.info().await.unwrap().state, VmState::Running);

    let target_dir = run_dir(tmp.path(), "target");
    let target = launch(&vmm_binary(), &target_dir, Boot::Incoming(config))
        .await
        .unwrap();
    let _reaper_target = Reaper(target.pid());
    source
        .migrate(&target.migration_socket(), params)
        .await
        .unwrap();
    drop(open);
    resets_then_echoes(&target, &target_dir, 64 * KIB, "after the migration").await;
    target.shutdown(Duration::from_secs(5)).await.unwrap();
}
