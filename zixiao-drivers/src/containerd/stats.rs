//! Decoding containerd's task metrics (the cgroup v1 or v2 statistics the
//! runc shim reports as a protobuf `Any`) into [`InstanceStats`]. Only the
//! fields Zixiao reports are declared; prost skips the rest.

use prost::Message;
use zixiao_core::InstanceStats;

/// `io.containerd.cgroups.v1.Metrics`, the fields we read.
#[derive(Clone, PartialEq, Message)]
struct V1Metrics {
    #[prost(message, optional, tag = "2")]
    pids: Option<PidsStat>,
    #[prost(message, optional, tag = "3")]
    cpu: Option<V1Cpu>,
    #[prost(message, optional, tag = "4")]
    memory: Option<V1Memory>,
    #[prost(message, optional, tag = "5")]
    blkio: Option<V1Blkio>,
    #[prost(message, optional, tag = "9")]
    memory_oom_control: Option<V1OomControl>,
}

#[derive(Clone, PartialEq, Message)]
struct PidsStat {
    #[prost(uint64, tag = "1")]
    current: u64,
    #[prost(uint64, tag = "2")]
    limit: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1Cpu {
    #[prost(message, optional, tag = "1")]
    usage: Option<V1CpuUsage>,
}

#[derive(Clone, PartialEq, Message)]
struct V1CpuUsage {
    /// Nanoseconds.
    #[prost(uint64, tag = "1")]
    total: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1Memory {
    #[prost(message, optional, tag = "33")]
    usage: Option<V1MemoryEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct V1MemoryEntry {
    #[prost(uint64, tag = "1")]
    limit: u64,
    #[prost(uint64, tag = "2")]
    usage: u64,
    #[prost(uint64, tag = "4")]
    failcnt: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1Blkio {
    #[prost(message, repeated, tag = "1")]
    io_service_bytes_recursive: Vec<V1BlkioEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct V1BlkioEntry {
    #[prost(string, tag = "1")]
    op: String,
    #[prost(uint64, tag = "5")]
    value: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V1OomControl {
    #[prost(uint64, tag = "3")]
    oom_kill: u64,
}

/// `io.containerd.cgroups.v2.Metrics`, the fields we read.
#[derive(Clone, PartialEq, Message)]
struct V2Metrics {
    #[prost(message, optional, tag = "1")]
    pids: Option<PidsStat>,
    #[prost(message, optional, tag = "2")]
    cpu: Option<V2Cpu>,
    #[prost(message, optional, tag = "4")]
    memory: Option<V2Memory>,
    #[prost(message, optional, tag = "6")]
    io: Option<V2Io>,
    #[prost(message, optional, tag = "8")]
    memory_events: Option<V2MemoryEvents>,
}

#[derive(Clone, PartialEq, Message)]
struct V2Cpu {
    #[prost(uint64, tag = "1")]
    usage_usec: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V2Memory {
    #[prost(uint64, tag = "32")]
    usage: u64,
    #[prost(uint64, tag = "33")]
    usage_limit: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V2Io {
    #[prost(message, repeated, tag = "1")]
    usage: Vec<V2IoEntry>,
}

#[derive(Clone, PartialEq, Message)]
struct V2IoEntry {
    #[prost(uint64, tag = "3")]
    rbytes: u64,
    #[prost(uint64, tag = "4")]
    wbytes: u64,
}

#[derive(Clone, PartialEq, Message)]
struct V2MemoryEvents {
    #[prost(uint64, tag = "5")]
    oom_kill: u64,
}

/// What the driver reads from one metrics sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// The shape every driver reports.
    pub(crate) stats: InstanceStats,
    /// Processes the OOM killer ended in this cgroup.
    pub(crate) oom_kills: u64,
}

/// A memory limit the kernel reports for "none" (v1 reports the largest
/// page-aligned i64).
fn real_limit(limit: u64) -> Option<u64> {
    (limit != 0 && limit < (1 << 62)).then_some(limit)
}

/// Decodes a metrics `Any` by its type, or `None` for an unknown type.
pub(crate) fn decode(any: &prost_types::Any) -> Option<Sample> {
    if any.type_url.ends_with("io.containerd.cgroups.v1.Metrics") {
        let m = V1Metrics::decode(any.value.as_slice()).ok()?;
        let memory = m.memory.and_then(|mem| mem.usage).unwrap_or_default();
        let blkio = m.blkio.unwrap_or_default();
        let sum = |op: &str| {
            blkio
                .io_service_bytes_recursive
                .iter()
                .filter(|e| e.op.eq_ignore_ascii_case(op))
                .map(|e| e.value)
                .sum::<u64>()
        };
        let oom_kills = m.memory_oom_control.map(|o| o.oom_kill).unwrap_or(0);
        Some(Sample {
            stats: InstanceStats {
                cpu_time_ns: m.cpu.and_then(|c| c.usage).map(|u| u.total).unwrap_or(0),
                memory_bytes: memory.usage,
                memory_limit_bytes: real_limit(memory.limit),
                pids: m.pids.map(|p| p.current),
                disk_read_bytes: Some(sum("read")),
                disk_write_bytes: Some(sum("write")),
                net_rx_bytes: None,
                net_tx_bytes: None,
            },
            oom_kills,
        })
    } else if any.type_url.ends_with("io.containerd.cgroups.v2.Metrics") {
        let m = V2Metrics::decode(any.value.as_slice()).ok()?;
        let memory = m.memory.unwrap_or_default();
        let io = m.io.unwrap_or_default();
        Some(Sample {
            stats: InstanceStats {
                cpu_time_ns: m
                    .cpu
                    .map(|c| c.usage_usec.saturating_mul(1000))
                    .unwrap_or(0),
                memory_bytes: memory.usage,
                memory_limit_bytes: real_limit(memory.usage_limit),
                pids: m.pids.map(|p| p.current),
                disk_read_bytes: Some(io.usage.iter().map(|e| e.rbytes).sum()),
                disk_write_bytes: Some(io.usage.iter().map(|e| e.wbytes).sum()),
                net_rx_bytes: None,
                net_tx_bytes: None,
            },
            oom_kills: m.memory_events.map(|e| e.oom_kill).unwrap_or(0),
        })
    } else {
        None
    }
}

/// The bytes received and sent by every interface but loopback in a
/// `/proc/PID/net/dev` table; `None` when there is none (a container
/// without a network) or the table does not parse.
pub(crate) fn network_totals(dev: &str) -> Option<(u64, u64)> {
    let mut totals = None;
    // Two header lines, then `name: rx_bytes packets errs drop fifo frame
    // compressed multicast tx_bytes ...`.
    for line in dev.lines().skip(2) {
        let (name, counters) = line.split_once(':')?;
        if name.trim() == "lo" {
            continue;
        }
        let counters: Vec<u64> = counters
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let (rx, tx) = (*counters.first()?, *counters.get(8)?);
        let (all_rx, all_tx) = totals.unwrap_or((0u64, 0u64));
        totals = Some((all_rx.saturating_add(rx), all_tx.saturating_add(tx)));
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_totals_add_every_interface_but_loopback() {
        let dev = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    9000      10    0    0    0     0          0         0     9000      10    0    0    0     0       0          0
  eth0:    1500      12    0    0    0     0          0         0      700       8    0    0    0     0       0          0
  eth1:     500       2    0    0    0     0          0         0      300       1    0    0    0     0       0          0
";
        assert_eq!(network_totals(dev), Some((2000, 1000)));
        let only_loopback = dev.lines().take(3).collect::<Vec<_>>().join("\n");
        assert_eq!(network_totals(&only_loopback), None);
        assert_eq!(network_totals("a\nb\n  eth0: 1 2 x\n"), None);
        assert_eq!(network_totals("a\nb\n  eth0: 1 2 3\n"), None);
        assert_eq!(network_totals(""), None);
    }

    #[test]
    fn decodes_cgroup_v1_metrics() {
        let m = V1Metrics {
            pids: Some(PidsStat {
                current: 3,
                limit: 64,
            }),
            cpu: Some(V1Cpu {
                usage: Some(V1CpuUsage { total: 1_500 }),
            }),
            memory: Some(V1Memory {
                usage: Some(V1MemoryEntry {
                    limit: 16 << 20,
                    usage: 4 << 20,
                    failcnt: 0,
                }),
            }),
            blkio: Some(V1Blkio {
                io_service_bytes_recursive: vec![
                    V1BlkioEntry {
                        op: "Read".into(),
                        value: 10,
                    },
                    V1BlkioEntry {
                        op: "Write".into(),
                        value: 20,
                    },
                ],
            }),
            memory_oom_control: Some(V1OomControl { oom_kill: 1 }),
        };
        let any = prost_types::Any {
            type_url: "io.containerd.cgroups.v1.Metrics".into(),
            value: m.encode_to_vec(),
        };
        let sample = decode(&any).expect("v1");
        assert_eq!(sample.stats.cpu_time_ns, 1_500);
        assert_eq!(sample.stats.memory_bytes, 4 << 20);
        assert_eq!(sample.stats.memory_limit_bytes, Some(16 << 20));
        assert_eq!(sample.stats.pids, Some(3));
        assert_eq!(sample.stats.disk_read_bytes, Some(10));
        assert_eq!(sample.stats.disk_write_bytes, Some(20));
        assert_eq!(sample.oom_kills, 1);
    }

    #[test]
    fn decodes_cgroup_v2_metrics_and_ignores_others() {
        let m = V2Metrics {
            pids: Some(PidsStat {
                current: 2,
                limit: 0,
            }),
            cpu: Some(V2Cpu { usage_usec: 7 }),
            memory: Some(V2Memory {
                usage: 100,
                usage_limit: u64::MAX,
            }),
            io: None,
            memory_events: None,
        };
        let any = prost_types::Any {
            type_url: "types.containerd.io/io.containerd.cgroups.v2.Metrics".into(),
            value: m.encode_to_vec(),
        };
        let sample = decode(&any).expect("v2");
        assert_eq!(sample.stats.cpu_time_ns, 7_000);
        assert_eq!(sample.stats.memory_limit_bytes, None);
        assert!(decode(&prost_types::Any {
            type_url: "other".into(),
            value: vec![]
        })
        .is_none());
    }
}
