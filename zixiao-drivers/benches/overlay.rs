//! Round-trip time and TCP throughput between two containers on one
//! network, on the same node and on two nodes through the VXLAN overlay,
//! measured in one run on the two-namespace nodes of the overlay tests
//! (`tests/containerd/overlay_nodes.rs`): container `a` on node 1, `same`
//! on node 1, `far` on node 2.
//!
//! ```text
//! eval "$(scripts/services/containerd.sh start)"
//! cargo bench -p zixiao-drivers --features containerd --bench overlay
//! ```
//!
//! RTT is busybox `ping -c 20 -i 0.2` from each client's namespace; throughput is
//! 256 MiB written over one TCP connection by this process from a socket
//! made in the client's namespace to one made in `a`'s. Both "nodes" share
//! one kernel and the underlay is a veth pair, so the cross-node figures
//! show what the VXLAN encapsulation and the extra bridge hop cost, not a
//! physical network. Without `ZIXIAO_TEST_CONTAINERD_SOCKET` (and
//! `ZIXIAO_TEST_NETNS_DIR`) it prints why and exits.

#[path = "../tests/containerd/overlay_nodes.rs"]
#[allow(dead_code)]
mod overlay_nodes;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zixiao_core::driver::Images;
use zixiao_core::model::CreateNetwork;
use zixiao_core::{Controller, CreateInstance, Instance, InstanceSpec, InstanceStatus};
use zixiao_drivers::containerd::{ContainerdDriver, ContainerdOptions};

use overlay_nodes::{in_zone, nodes, two_nodes};

const MIB: usize = 256;
const PORT: u16 = 7100;

fn main() {
    let (Ok(socket), Ok(busybox), Ok(base)) = (
        std::env::var("ZIXIAO_TEST_CONTAINERD_SOCKET"),
        std::env::var("ZIXIAO_TEST_BUSYBOX_OCI"),
        std::env::var("ZIXIAO_TEST_NETNS_DIR"),
    ) else {
        println!(
            "overlay bench skipped: set ZIXIAO_TEST_CONTAINERD_SOCKET, ZIXIAO_TEST_BUSYBOX_OCI \
             and ZIXIAO_TEST_NETNS_DIR (source /tmp/services.env)"
        );
        return;
    };
    std::fs::create_dir_all(&base).expect("netns base");
    let netns = tempfile::tempdir_in(&base).expect("netns dir");
    let netns_dir = netns.path().to_path_buf();
    let state = tempfile::tempdir().expect("state dir");
    let state_dir = state.path().to_path_buf();
    let outcome = zixiao_net::netns::run_isolated(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(measure(socket, busybox, netns_dir, state_dir))
    });
    for entry in std::fs::read_dir(netns.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = zixiao_net::netns::remove(&entry.path());
    }
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("unshare(CLONE_NEWNET): the bench runs as root: {e}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn measure(socket: String, busybox: String, netns_dir: PathBuf, state_dir: PathBuf) {
    // One containerd namespace for every run: its busybox is imported once.
    let options =
        ContainerdOptions::new(&socket, &state_dir).with_namespace("zixiao-bench-overlay");
    let driver = ContainerdDriver::connect(options.clone())
        .await
        .expect("connect to containerd");
    driver
        .import(Path::new(&busybox), None, &|_| {})
        .await
        .expect("import busybox");
    let (host1, host2) = nodes(&netns_dir);
    let c = two_nodes(&state_dir, &options, host1.clone(), host2.clone()).await;
    c.create_network(CreateNetwork::new("bench", ["10.77.0.0/24"]))
        .await
        .expect("create network");
    let a = running(&c, "a", "z1").await;
    let same = running(&c, "same", "z1").await;
    let far = running(&c, "far", "z2").await;
    let a_ip = a.attachments[0].addresses[0].address;
    let a_ns = host1
        .netns_path(&a.id, &a.attachments)
        .expect("a's namespace");
    let same_ns = host1
        .netns_path(&same.id, &same.attachments)
        .expect("same's namespace");
    let far_ns = host2
        .inner
        .netns_path(&far.id, &far.attachments)
        .expect("far's namespace");

    println!("overlay bench: a on node 1 at {a_ip}; 20 pings each, {MIB} MiB over TCP each");
    for (what, ns) in [("same node", &same_ns), ("across nodes (VXLAN)", &far_ns)] {
        println!("{what:<22} rtt {}", rtt(ns, a_ip));
        let (mib_s, elapsed) = throughput(&a_ns, ns, a_ip);
        println!(
            "{what:<22} tcp {mib_s:>8.1} MiB/s ({MIB} MiB in {:.2} s)",
            elapsed.as_secs_f64()
        );
    }

    for name in ["a", "same", "far"] {
        c.delete_instance(name).await.expect("delete");
        let _ = c.converge(name).await;
    }
    let _ = c.delete_network("bench").await;
}

async fn running(c: &Controller, name: &str, zone: &str) -> Instance {
    let spec = {
        let mut spec = InstanceSpec::container("busybox").with_command(["sleep", "600"]);
        spec.networks = vec!["bench".to_owned()];
        spec
    };
    let created = c
        .create_instance(in_zone(CreateInstance::new(name, spec), zone))
        .await
        .expect("create");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = c
            .converge(&created.id)
            .await
            .expect("converge")
            .expect("exists");
        if i.status == InstanceStatus::Running {
            return i;
        }
        assert!(Instant::now() < deadline, "{name} is not running: {i:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ping`'s summary line from namespace `ns` to `to`.
fn rtt(ns: &Path, to: IpAddr) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args([
            "busybox",
            "ping",
            "-q",
            "-c",
            "20",
            "-i",
            "0.2",
            &to.to_string(),
        ])
        .output()
        .expect("nsenter busybox ping");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("min/avg/max"))
        .unwrap_or("(no reply)")
        .trim()
        .to_owned()
}

/// MiB/s of one TCP connection from a socket made in `from` to a listener
/// made in `server` at `to`.
fn throughput(server: &Path, from: &Path, to: IpAddr) -> (f64, Duration) {
    let address = SocketAddr::new(to, PORT);
    let listener = zixiao_net::netns::run_in(server, || TcpListener::bind(address))
        .expect("listen in a's namespace");
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        loop {
            match stream.read(&mut buf).expect("read") {
                0 => return total,
                n => total += n,
            }
        }
    });
    let mut stream = zixiao_net::netns::run_in(from, || TcpStream::connect(address))
        .expect("connect from the client's namespace");
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    for _ in 0..MIB {
        stream.write_all(&chunk).expect("write");
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let received = reader.join().expect("reader");
    let elapsed = started.elapsed();
    assert_eq!(received, MIB << 20, "every byte arrived");
    (MIB as f64 / elapsed.as_secs_f64(), elapsed)
}
