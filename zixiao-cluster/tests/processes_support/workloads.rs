//! What the multi-process tests run: a long-running busybox container and
//! a QEMU microVM booting the test kernel to its console marker, the
//! cordoning and holding that steer an instance to one node mid-create,
//! and reading an instance's log through a server as a user would.

use std::time::Duration;

use zixiao_core::{Client, CreateInstance, InstanceSpec, MicrovmBackend, RestartPolicy};
use zixiao_testing::wait::wait_until_ok;

use super::harness::{Harness, RealRuntimes};

/// What the test microVM's /init prints on its console once it booted.
pub(crate) const BOOT_MARKER: &str = "ZIXIAO-BOOT-OK";

/// A busybox container that says hello and runs on (the fake runtime
/// ignores the command), restarted by its policy, as a service is.
pub(crate) fn container(name: &str) -> CreateInstance {
    let mut spec = InstanceSpec::container("busybox").with_command([
        "sh",
        "-c",
        "echo hello; exec sleep 3600",
    ]);
    spec.restart = RestartPolicy::Always;
    CreateInstance::new(name, spec)
}

/// A QEMU microVM booting the test kernel and initramfs, restarted by its policy.
pub(crate) fn microvm(name: &str, _real: &RealRuntimes) -> CreateInstance {
    // The agents imported them into their stores (see `roles::import_image`).
    let mut spec = InstanceSpec::microvm(super::roles::TEST_KERNEL);
    spec.initrd = Some(super::roles::TEST_INITRD.into());
    spec.cmdline = Some("console=ttyS0 quiet".to_owned());
    spec.backend = MicrovmBackend::Qemu;
    spec.memory_mib = 256;
    spec.restart = RestartPolicy::Always;
    CreateInstance::new(name, spec)
}

/// Waits until instance `id`'s log, read through the server, contains
/// `text` (a microVM under software emulation takes seconds to boot).
pub(crate) async fn wait_for_log(compute: &Client, id: &str, text: &str) {
    wait_until_ok(
        &format!("{text:?} in the log of {id}"),
        Duration::from_secs(120),
        || async {
            let chunk = compute
                .read_log(id, 0, 1 << 20)
                .await
                .map_err(|e| format!("reading the log: {e}"))?;
            let log = String::from_utf8_lossy(&chunk.data).into_owned();
            if log.contains(text) {
                Ok(())
            } else {
                Err(format!("the log so far: {log:?}"))
            }
        },
    )
    .await;
}

/// Cordons every node but `i` (`on`), or uncordons them: what is created
/// meanwhile lands on node `i`.
pub(crate) async fn only_on(h: &Harness, i: usize, on: bool) {
    let cluster = h.cluster();
    for (_, node) in h.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
        if on {
            cluster.cordon_node(&node.name).await.expect("cordon");
        } else {
            cluster.uncordon_node(&node.name).await.expect("uncordon");
        }
    }
}

/// Steers the next instances to node `i` and holds their creates there
/// (`on`), or undoes both, so a test can kill a process mid-create.
pub(crate) async fn steer_to(h: &Harness, i: usize, on: bool) {
    only_on(h, i, on).await;
    h.nodes[i].hold().set(on).expect("hold creates");
}

/// Waits until node `i`'s runtime is creating instance `id` (held).
pub(crate) async fn creating(h: &Harness, i: usize, id: &str) {
    let hold = h.nodes[i].hold();
    zixiao_testing::wait::wait_until(
        "the create to begin on the node",
        Duration::from_secs(60),
        || async { hold.is_holding(id).then_some(()) },
    )
    .await;
}
