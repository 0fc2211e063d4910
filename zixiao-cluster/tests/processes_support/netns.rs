//! The network of the fault tests, all inside namespaces the test creates
//! and pins under a temporary directory (nothing on the host's own
//! network): a control namespace and a node namespace joined by a veth
//! pair on test-owned addresses. A partition is the node side's link going
//! down, inside the node namespace. Dropping it unpins both namespaces;
//! they vanish with the last process inside them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The control side's address (servers listen on it).
pub(crate) const CONTROL_IP: &str = "10.250.0.1";
/// The node side's address (the partitioned node's agent listens on it).
pub(crate) const NODE_IP: &str = "10.250.0.2";
const CONTROL_LINK: &str = "zxc0";
const NODE_LINK: &str = "zxp0";

/// The two namespaces and their link.
pub(crate) struct Namespaces {
    /// Where the control namespace is pinned.
    pub(crate) control: PathBuf,
    /// Where the node namespace is pinned.
    pub(crate) node: PathBuf,
    _dir: tempfile::TempDir,
}

fn ip(ns: &Path, args: &str) {
    let status = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .arg("ip")
        .args(args.split(' '))
        .status()
        .expect("run nsenter ip");
    assert!(status.success(), "ip {args} in {}: {status}", ns.display());
}

impl Namespaces {
    /// Creates both namespaces with `lo` up and the veth pair configured.
    pub(crate) fn create() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = Namespaces {
            control: dir.path().join("control"),
            node: dir.path().join("node"),
            _dir: dir,
        };
        zixiao_net::netns::create(&me.control).expect("the control namespace");
        zixiao_net::netns::create(&me.node).expect("the node namespace");
        ip(&me.control, "link set lo up");
        ip(&me.node, "link set lo up");
        ip(
            &me.control,
            &format!(
                "link add {CONTROL_LINK} type veth peer name {NODE_LINK} netns {}",
                me.node.display()
            ),
        );
        ip(
            &me.control,
            &format!("addr add {CONTROL_IP}/30 dev {CONTROL_LINK}"),
        );
        ip(&me.node, &format!("addr add {NODE_IP}/30 dev {NODE_LINK}"));
        ip(&me.control, &format!("link set {CONTROL_LINK} up"));
        ip(&me.node, &format!("link set {NODE_LINK} up"));
        me
    }

    /// Cuts the node namespace off the control namespace.
    pub(crate) fn partition(&self) {
        ip(&self.node, &format!("link set {NODE_LINK} down"));
    }

    /// Joins them again.
    pub(crate) fn heal(&self) {
        ip(&self.node, &format!("link set {NODE_LINK} up"));
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in [&self.node, &self.control] {
            if let Err(e) = zixiao_net::netns::remove(ns) {
                eprintln!("cannot remove the namespace at {}: {e}", ns.display());
            }
        }
    }
}
