//! An "outside" for networking tests: a network namespace pinned on a file
//! (`unshare --net=FILE`), joined to the calling thread's namespace — the
//! node's, a namespace the test made — by a veth pair with one address at
//! each end. Traffic from it arrives at the node on an interface, as from
//! another machine of the underlay, so it goes through the node's
//! `prerouting` hooks (published ports' DNAT).
//!
//! Everything is made with `ip`, `unshare`, `nsenter`, `umount` (and
//! `busybox nc` for [`Underlay::fetch`]), spawned
//! from the calling thread (so in its namespace); the host's own network is
//! never touched. Only TEST-NET-1 addresses (192.0.2.0/24) are used.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The node's end of the underlay link.
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The outside's end.
pub const OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// See the module documentation. Dropping it unpins the namespace (its
/// end of the veth pair, and so the pair, goes with it).
#[derive(Debug)]
pub struct Underlay {
    path: PathBuf,
}

impl Underlay {
    /// Pins a new namespace at `path` (a new file) and links it to the
    /// calling thread's namespace with a veth pair named `link` (the node's
    /// end, [`NODE_ADDRESS`]/24) and `<link>x` (the outside's end,
    /// [`OUTSIDE_ADDRESS`]/24, with a default route through the node).
    ///
    /// # Panics
    /// When a command fails (the tests run as root, with iproute2 and
    /// util-linux installed).
    pub fn new(path: &Path, link: &str) -> Underlay {
        std::fs::write(path, b"").expect("the underlay namespace's file");
        let underlay = Underlay {
            path: path.to_path_buf(),
        };
        let pin = format!("--net={}", path.display());
        run(Command::new("unshare").args([pin.as_str(), "true"]));
        let outside = format!("{link}x");
        let node = format!("{NODE_ADDRESS}/24");
        let far = format!("{OUTSIDE_ADDRESS}/24");
        let netns = path.display().to_string();
        ip(&[
            "link", "add", link, "type", "veth", "peer", "name", &outside,
        ]);
        ip(&["link", "set", &outside, "netns", &netns]);
        ip(&["addr", "add", &node, "dev", link]);
        ip(&["link", "set", link, "up"]);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &far, "dev", &outside],
            vec!["link", "set", &outside, "up"],
            vec!["route", "add", "default", "via", "192.0.2.1"],
        ] {
            run(underlay.command("ip").args(args));
        }
        underlay
    }

    /// The pinned namespace (for `zixiao_net::netns::run_in`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What a TCP connection from the outside to `to` reads until the
    /// server closes it (`busybox nc`, 3 s to connect); `None` when it
    /// cannot connect or reads nothing.
    pub fn fetch(&self, to: std::net::SocketAddr) -> Option<String> {
        let out = self
            .command("busybox")
            .args(["nc", "-w", "3"])
            .arg(to.ip().to_string())
            .arg(to.port().to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("busybox nc");
        let answer = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && !answer.is_empty()).then_some(answer)
    }

    /// `program` to run inside the outside namespace (through `nsenter`).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path.display()))
            .arg(program);
        command
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

fn run(command: &mut Command) {
    let out = command.output().expect("spawn");
    assert!(out.status.success(), "{command:?}: {out:?}");
}
