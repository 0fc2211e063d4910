//! What a node finds out about its own machine for placement: the CPU's
//! vendor and model, the instruction-set extensions workloads ask for, the
//! NUMA cells, and whether KVM is there and how. Its agent reports them
//! as labels and traits at every registration; they are facts, read-only
//! to operators (see `zixiao_core::model::NodeMetadata`), and placement
//! matches them like any other (`--trait cpu.avx2`, a selector on
//! `zixiao.io/kvm=hardware`).
//!
//! Read from `/proc/cpuinfo` and `/sys/devices/system/node`; KVM's kind is
//! what [`discover`](crate::discover) already found when it probed for the
//! microVM driver, so nothing probes `/dev/kvm` twice. Nothing here fails:
//! a fact that cannot be read is left out.

use std::collections::{BTreeMap, BTreeSet};

/// The label of the CPU's vendor (`GenuineIntel`, `AuthenticAMD`).
pub const CPU_VENDOR_LABEL: &str = "zixiao.io/cpu-vendor";
/// The label of the CPU's model name.
pub const CPU_MODEL_LABEL: &str = "zixiao.io/cpu-model";
/// The label of how many NUMA cells the machine has.
pub const NUMA_CELLS_LABEL: &str = "zixiao.io/numa-cells";
/// The label of KVM's kind here: `hardware`, `software-nested` or `absent`.
pub const KVM_LABEL: &str = "zixiao.io/kvm";
/// The trait of a machine that can run KVM guests at all.
pub const KVM_TRAIT: &str = "kvm";

/// The CPU flags reported as `cpu.<flag>` traits: the extensions that
/// decide whether a workload's binaries run (SIMD, crypto) or whether a
/// guest can nest. Every flag of a modern CPU would be a hundred traits of
/// noise.
const REPORTED_FLAGS: &[&str] = &[
    "aes",
    "avx",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "bmi2",
    "f16c",
    "fma",
    "pclmulqdq",
    "sha_ni",
    "sse4_2",
    "svm",
    "vmx",
];

/// What [`introspect`] found: the agent's labels and traits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Introspection {
    /// Facts with a value (`zixiao.io/cpu-model`, ...).
    pub labels: BTreeMap<String, String>,
    /// Facts that hold or not (`cpu.avx2`, `kvm`).
    pub traits: BTreeSet<String>,
}

/// Reads this machine's facts; `kvm` is KVM's kind as discovery found it
/// (`hardware`, `software-nested`, `absent`), `None` in a build that does
/// not probe it.
pub(crate) fn introspect(kvm: Option<&'static str>) -> Introspection {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut found = from_cpuinfo(&cpuinfo);
    if let Some(cells) = numa_cells() {
        found
            .labels
            .insert(NUMA_CELLS_LABEL.to_owned(), cells.to_string());
    }
    if let Some(kvm) = kvm {
        if kvm != "absent" {
            found.traits.insert(KVM_TRAIT.to_owned());
        }
        found.labels.insert(KVM_LABEL.to_owned(), kvm.to_owned());
    }
    found
}

/// The CPU facts of a `/proc/cpuinfo` text (its first processor's: every
/// processor of a machine has the same model and flags).
pub fn from_cpuinfo(cpuinfo: &str) -> Introspection {
    let mut found = Introspection::default();
    let first = cpuinfo.split("\n\n").next().unwrap_or_default();
    for line in first.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "vendor_id" if !value.is_empty() => {
                found
                    .labels
                    .insert(CPU_VENDOR_LABEL.to_owned(), printable(value));
            }
            "model name" if !value.is_empty() => {
                found
                    .labels
                    .insert(CPU_MODEL_LABEL.to_owned(), printable(value));
            }
            "flags" => {
                let flags: BTreeSet<&str> = value.split_whitespace().collect();
                for flag in REPORTED_FLAGS.iter().filter(|f| flags.contains(**f)) {
                    found.traits.insert(format!("cpu.{flag}"));
                }
            }
            _ => {}
        }
    }
    found
}

/// A label value from the kernel's text: printable, at most 253 characters.
fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(253).collect()
}

/// How many NUMA cells (`/sys/devices/system/node/nodeN`) there are.
fn numa_cells() -> Option<usize> {
    let cells = std::fs::read_dir("/sys/devices/system/node")
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry.file_name().to_str().is_some_and(|name| {
                name.strip_prefix("node")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .count();
    (cells > 0).then_some(cells)
}

/// KVM's kind as a label value.
#[cfg(feature = "microvm")]
pub(crate) fn kvm_kind(support: &zixiao_vmm::KvmSupport) -> &'static str {
    match support {
        zixiao_vmm::KvmSupport::Hardware => "hardware",
        zixiao_vmm::KvmSupport::SoftwareNested => "software-nested",
        zixiao_vmm::KvmSupport::Absent(_) => "absent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\n\
        vendor_id\t: AuthenticAMD\n\
        model name\t: AMD EPYC 7B13 64-Core Processor\n\
        flags\t\t: fpu vme sse4_2 avx avx2 aes svm hypervisor\n\
        \n\
        processor\t: 1\n\
        vendor_id\t: Other\n\
        flags\t\t: fpu avx512f\n";

    #[test]
    fn the_first_processor_gives_vendor_model_and_the_reported_flags() {
        let found = from_cpuinfo(CPUINFO);
        assert_eq!(found.labels[CPU_VENDOR_LABEL], "AuthenticAMD");
        assert_eq!(
            found.labels[CPU_MODEL_LABEL],
            "AMD EPYC 7B13 64-Core Processor"
        );
        let traits: Vec<&str> = found.traits.iter().map(String::as_str).collect();
        assert_eq!(
            traits,
            ["cpu.aes", "cpu.avx", "cpu.avx2", "cpu.sse4_2", "cpu.svm"]
        );
    }

    #[test]
    fn what_cannot_be_read_is_left_out() {
        assert_eq!(from_cpuinfo(""), Introspection::default());
        let odd = from_cpuinfo("vendor_id:\nmodel name: a\u{7}b\nflags\n");
        assert_eq!(odd.labels.get(CPU_VENDOR_LABEL), None);
        assert_eq!(odd.labels[CPU_MODEL_LABEL], "ab");
        assert!(odd.traits.is_empty());
    }
}
