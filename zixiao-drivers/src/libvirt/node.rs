//! Node introspection for the node agent (seed 003): what the hypervisor
//! host offers (CPU model and count, memory, NUMA cells), the libvirt and
//! hypervisor versions, and the domain types it runs; and the choice of the
//! domain type from them.

use std::collections::BTreeMap;
use std::path::Path;

use zixiao_core::DriverError;

use super::connection::Connection;
use super::error;
use super::xml::{self, DomainType};

/// One NUMA cell of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaCell {
    /// Its id.
    pub id: u32,
    /// Its memory in MiB.
    pub memory_mib: u64,
    /// Its CPUs.
    pub cpus: u32,
}

/// What a hypervisor host offers, as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// The host's name.
    pub hostname: String,
    /// The CPU model (`x86_64`, or the model name in the capabilities).
    pub cpu_model: String,
    /// Active CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// NUMA cells (one on a uniform host).
    pub numa_cells: Vec<NumaCell>,
    /// libvirt's version (`9.0.0`).
    pub libvirt_version: String,
    /// The hypervisor driver (`QEMU`, `CH`, `TEST`).
    pub hypervisor: String,
    /// The hypervisor's version (`7.2.0`).
    pub hypervisor_version: String,
    /// The domain types the host offers (`kvm`, `qemu`).
    pub domain_types: Vec<String>,
}

impl HostInfo {
    /// The facts as node labels (`libvirt.zixiao.dev/version: 9.0.0`), for
    /// the node agent to record on its node.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let prefix = "libvirt.zixiao.dev";
        [
            ("version", self.libvirt_version.clone()),
            ("hypervisor", self.hypervisor.to_lowercase()),
            ("hypervisor-version", self.hypervisor_version.clone()),
            ("cpu-model", self.cpu_model.clone()),
            ("numa-cells", self.numa_cells.len().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{prefix}/{k}"), v))
        .collect()
    }
}

/// libvirt encodes versions as major * 1,000,000 + minor * 1,000 + release.
fn version_string(version: u32) -> String {
    format!(
        "{}.{}.{}",
        version / 1_000_000,
        (version / 1_000) % 1_000,
        version % 1_000
    )
}

/// Reads the host's facts. Errors: `Unavailable`, `Internal`.
pub(crate) async fn host_info(conn: &Connection) -> Result<HostInfo, DriverError> {
    conn.run("read host capabilities", |conn| {
        let failed = |what: &str| {
            let what = what.to_owned();
            move |e| error::failed(format!("read the host's {what}"), e)
        };
        let node = conn.node_info().map_err(failed("node info"))?;
        let caps = conn.capabilities().map_err(failed("capabilities"))?;
        let hostname = conn.hostname().unwrap_or_default();
        let libvirt_version = conn.lib_version().map_err(failed("libvirt version"))?;
        let hypervisor = conn.driver_type().unwrap_or_default();
        let hypervisor_version = conn.hyp_version().unwrap_or(0);
        let cpu_model = xml::texts(&caps, "model")
            .into_iter()
            .next()
            .unwrap_or_else(|| node.model.clone());
        let mut domain_types = xml::attributes(&caps, "domain", "type");
        domain_types.sort();
        domain_types.dedup();
        Ok(HostInfo {
            hostname,
            cpu_model,
            cpus: node.cpus,
            memory_mib: node.memory / 1024,
            numa_cells: numa_cells(&caps),
            libvirt_version: version_string(libvirt_version),
            hypervisor,
            hypervisor_version: version_string(hypervisor_version),
            domain_types,
        })
    })
    .await
}

/// The NUMA cells of a capabilities document: each `<cell id=...>` with
/// its `<memory unit='KiB'>` and `<cpus num=...>`.
fn numa_cells(caps: &str) -> Vec<NumaCell> {
    let ids = xml::attributes(caps, "cell", "id");
    let cpus = xml::attributes(caps, "cpus", "num");
    // Only the cells' memory: the first `memory` elements after `<cells>`.
    let topology = caps
        .find("<cells")
        .map(|start| &caps[start..])
        .unwrap_or("");
    let memory = xml::texts(topology, "memory");
    ids.iter()
        .enumerate()
        .map(|(i, id)| NumaCell {
            id: id.parse().unwrap_or(0),
            memory_mib: memory
                .get(i)
                .and_then(|m| m.parse::<u64>().ok())
                .unwrap_or(0)
                / 1024,
            cpus: cpus.get(i).and_then(|c| c.parse().ok()).unwrap_or(0),
        })
        .collect()
}

/// Whether this machine's KVM is hardware-assisted: the CPU has VMX or SVM
/// and KVM is not the software-nested `kvm_pvm`, under which a stock Linux
/// guest does not boot.
pub(crate) fn kvm_is_hardware_backed() -> bool {
    if !Path::new("/dev/kvm").exists() || Path::new("/sys/module/kvm_pvm").exists() {
        return false;
    }
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|cpuinfo| {
        cpuinfo
            .lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
    })
}

/// The domain type to define domains with: the forced one if the host
/// offers it; else `kvm` when offered and (on a local URI) hardware-backed,
/// then `qemu`, then `test`. Errors: `Unsupported` naming what the host offers.
pub(crate) fn choose_domain_type(
    uri: &str,
    offered: &[String],
    forced: Option<DomainType>,
    local_kvm_is_hardware: bool,
) -> Result<DomainType, DriverError> {
    let offers = |t: DomainType| offered.iter().any(|o| o == t.as_str());
    let listing = if offered.is_empty() {
        "none".to_owned()
    } else {
        offered.join(", ")
    };
    if let Some(forced) = forced {
        return if offers(forced) {
            Ok(forced)
        } else {
            Err(DriverError::Unsupported(format!(
                "libvirt at {uri} does not offer domain type {forced} (it offers {listing})"
            )))
        };
    }
    // A local URI has no host part: `qemu:///system`. For a remote one
    // (`qemu+tcp://host/system`), this machine's KVM says nothing.
    let local = uri
        .split_once("://")
        .is_some_and(|(_, rest)| rest.starts_with('/'));
    let kvm_usable = !local || local_kvm_is_hardware;
    if offers(DomainType::Kvm) && (kvm_usable || !offers(DomainType::Qemu)) {
        Ok(DomainType::Kvm)
    } else if offers(DomainType::Qemu) {
        Ok(DomainType::Qemu)
    } else if offers(DomainType::Test) {
        Ok(DomainType::Test)
    } else {
        Err(DriverError::Unsupported(format!(
            "libvirt at {uri} offers no domain type the vm driver runs (it offers {listing})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(types: &[&str]) -> Vec<String> {
        types.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn software_nested_kvm_falls_back_to_qemu() {
        let both = offered(&["kvm", "qemu"]);
        let t = choose_domain_type("qemu:///system", &both, None, false);
        assert_eq!(t.ok(), Some(DomainType::Qemu));
        let t = choose_domain_type("qemu:///system", &both, None, true);
        assert_eq!(t.ok(), Some(DomainType::Kvm));
    }

    #[test]
    fn a_remote_host_is_trusted_and_cloud_hypervisor_is_kvm() {
        let both = offered(&["kvm", "qemu"]);
        let t = choose_domain_type("qemu+tcp://h/system", &both, None, false);
        assert_eq!(t.ok(), Some(DomainType::Kvm));
        let t = choose_domain_type("ch:///system", &offered(&["kvm"]), None, false);
        assert_eq!(t.ok(), Some(DomainType::Kvm));
    }

    #[test]
    fn a_forced_type_must_be_offered() {
        let qemu = offered(&["qemu"]);
        let err = choose_domain_type("qemu:///system", &qemu, Some(DomainType::Kvm), true)
            .expect_err("kvm is not offered");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::Unsupported);
        assert!(err.to_string().contains("offers qemu"), "{err}");
        let t = choose_domain_type("qemu:///system", &qemu, Some(DomainType::Qemu), false);
        assert_eq!(t.ok(), Some(DomainType::Qemu));
    }

    #[test]
    fn versions_are_dotted() {
        assert_eq!(version_string(9_000_000), "9.0.0");
        assert_eq!(version_string(7_002_001), "7.2.1");
    }
}
