//! Domain statistics through `virDomainListGetStats`, behind a safe owner.
//!
//! The `virt` crate hands out `DomainStatsRecord` as a bare pointer that
//! nothing frees; here the list libvirt allocates is owned by
//! [`StatsRecordList`], copied into plain Rust values, and released with
//! `virDomainStatsRecordListFree` when the owner drops.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::ptr;

use virt::domain::Domain;
use virt::error::Error as VirtError;
use virt::sys;
use zixiao_core::InstanceStats;

/// One typed parameter's value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StatValue {
    /// Any integer type, widened (negative values are clamped to 0 in
    /// [`StatValue::as_u64`]).
    Int(i128),
    /// A double.
    Double(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Text(String),
}

impl StatValue {
    /// The value as an unsigned integer, if it is a number.
    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            StatValue::Int(i) => Some(u64::try_from(*i).unwrap_or(0)),
            StatValue::Double(d) if *d >= 0.0 => Some(*d as u64),
            _ => None,
        }
    }
}

/// The list `virDomainListGetStats` allocated, freed on drop.
struct StatsRecordList {
    records: *mut sys::virDomainStatsRecordPtr,
}

impl Drop for StatsRecordList {
    fn drop(&mut self) {
        if !self.records.is_null() {
            // SAFETY: `records` came from a successful virDomainListGetStats,
            // is NULL-terminated, and is freed exactly once, here.
            unsafe { sys::virDomainStatsRecordListFree(self.records) };
        }
    }
}

impl StatsRecordList {
    /// The parameters of every record, copied out.
    fn params(&self) -> Vec<BTreeMap<String, StatValue>> {
        let mut out = Vec::new();
        let mut index = 0;
        loop {
            // SAFETY: the list is NULL-terminated and owned by `self`, so
            // every slot up to and including the terminator is readable.
            let record = unsafe { *self.records.add(index) };
            if record.is_null() {
                return out;
            }
            // SAFETY: a non-NULL slot points to a record libvirt filled in,
            // alive as long as `self`.
            let record = unsafe { &*record };
            let count = usize::try_from(record.nparams).unwrap_or(0);
            let params = if record.params.is_null() || count == 0 {
                &[][..]
            } else {
                // SAFETY: libvirt allocated `nparams` parameters at `params`.
                unsafe { std::slice::from_raw_parts(record.params, count) }
            };
            out.push(params.iter().filter_map(read_param).collect());
            index += 1;
        }
    }
}

fn read_param(param: &sys::virTypedParameter) -> Option<(String, StatValue)> {
    // The field is a NUL-terminated name of at most 80 bytes.
    let field: Vec<u8> = param
        .field
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    let name = String::from_utf8_lossy(&field).into_owned();
    let kind = u32::try_from(param.type_).ok()?;
    // In each arm, `type_` says which member of the union libvirt set.
    let value = match kind {
        sys::VIR_TYPED_PARAM_INT => {
            // SAFETY: an INT parameter sets `i`.
            StatValue::Int(unsafe { param.value.i }.into())
        }
        sys::VIR_TYPED_PARAM_UINT => {
            // SAFETY: a UINT parameter sets `ui`.
            StatValue::Int(unsafe { param.value.ui }.into())
        }
        sys::VIR_TYPED_PARAM_LLONG => {
            // SAFETY: an LLONG parameter sets `l`.
            StatValue::Int(unsafe { param.value.l }.into())
        }
        sys::VIR_TYPED_PARAM_ULLONG => {
            // SAFETY: a ULLONG parameter sets `ul`.
            StatValue::Int(unsafe { param.value.ul }.into())
        }
        sys::VIR_TYPED_PARAM_DOUBLE => {
            // SAFETY: a DOUBLE parameter sets `d`.
            StatValue::Double(unsafe { param.value.d })
        }
        sys::VIR_TYPED_PARAM_BOOLEAN => {
            // SAFETY: a BOOLEAN parameter sets `b`.
            StatValue::Bool(unsafe { param.value.b } != 0)
        }
        sys::VIR_TYPED_PARAM_STRING => {
            // SAFETY: a string parameter holds a NUL-terminated string (or
            // NULL) owned by the record.
            let s = unsafe { param.value.s };
            if s.is_null() {
                return None;
            }
            // SAFETY: non-NULL and NUL-terminated, alive with the record.
            StatValue::Text(unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
        }
        _ => return None,
    };
    Some((name, value))
}

/// The statistics groups the driver reads.
const GROUPS: u32 = sys::VIR_DOMAIN_STATS_STATE
    | sys::VIR_DOMAIN_STATS_CPU_TOTAL
    | sys::VIR_DOMAIN_STATS_BALLOON
    | sys::VIR_DOMAIN_STATS_VCPU
    | sys::VIR_DOMAIN_STATS_INTERFACE
    | sys::VIR_DOMAIN_STATS_BLOCK;

/// Every statistic libvirt reports of `domain`, by name (`cpu.time`,
/// `balloon.current`, `block.0.rd.bytes`, ...).
pub(crate) fn domain_stats(domain: &Domain) -> Result<BTreeMap<String, StatValue>, VirtError> {
    // SAFETY: `as_ptr` borrows the domain's pointer; `domain` outlives the
    // call, and the array is the NULL-terminated list the API expects.
    let mut domains = [unsafe { domain.as_ptr() }, ptr::null_mut()];
    let mut records: *mut sys::virDomainStatsRecordPtr = ptr::null_mut();
    // SAFETY: `domains` is a valid NULL-terminated array and `records` a
    // valid out-pointer; on success libvirt stores a list we then own.
    let rc = unsafe { sys::virDomainListGetStats(domains.as_mut_ptr(), GROUPS, &mut records, 0) };
    if rc < 0 {
        return Err(VirtError::last_error());
    }
    let list = StatsRecordList { records };
    Ok(list.params().into_iter().next().unwrap_or_default())
}

/// The shape every driver reports, from libvirt's statistics: cpu time,
/// the guest's memory (host RSS when known, else the balloon size) and its
/// maximum, vCPUs, and block and network byte counters summed over devices.
pub(crate) fn to_instance_stats(stats: &BTreeMap<String, StatValue>) -> InstanceStats {
    let get = |name: &str| stats.get(name).and_then(StatValue::as_u64);
    let sum = |prefix: &str, count: &str, suffix: &str| {
        get(count).map(|n| {
            (0..n)
                .filter_map(|i| get(&format!("{prefix}.{i}.{suffix}")))
                .sum::<u64>()
        })
    };
    let kib = |v: u64| v.saturating_mul(1024);
    InstanceStats {
        cpu_time_ns: get("cpu.time").unwrap_or(0),
        memory_bytes: get("balloon.rss")
            .or_else(|| get("balloon.current"))
            .map(kib)
            .unwrap_or(0),
        memory_limit_bytes: get("balloon.maximum").map(kib),
        pids: get("vcpu.current"),
        disk_read_bytes: sum("block", "block.count", "rd.bytes"),
        disk_write_bytes: sum("block", "block.count", "wr.bytes"),
        net_rx_bytes: sum("net", "net.count", "rx.bytes"),
        net_tx_bytes: sum("net", "net.count", "tx.bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_and_memory_is_in_bytes() {
        let stats: BTreeMap<String, StatValue> = [
            ("cpu.time", 5),
            ("balloon.current", 1024),
            ("balloon.maximum", 2048),
            ("vcpu.current", 2),
            ("block.count", 2),
            ("block.0.rd.bytes", 10),
            ("block.1.rd.bytes", 5),
            ("block.0.wr.bytes", 1),
            ("net.count", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), StatValue::Int(v)))
        .collect();
        let s = to_instance_stats(&stats);
        assert_eq!(s.cpu_time_ns, 5);
        assert_eq!(s.memory_bytes, 1024 * 1024);
        assert_eq!(s.memory_limit_bytes, Some(2048 * 1024));
        assert_eq!(s.pids, Some(2));
        assert_eq!(s.disk_read_bytes, Some(15));
        assert_eq!(s.disk_write_bytes, Some(1));
        assert_eq!(s.net_rx_bytes, Some(0));
    }

    #[test]
    fn stats_of_a_test_driver_domain_are_read_and_freed() {
        let conn = virt::connect::Connect::open(Some("test:///default")).expect("test driver");
        let domain = conn.lookup_domain_by_name("test").expect("the test domain");
        let stats = domain_stats(&domain).expect("stats");
        assert!(stats.contains_key("state.state"), "{stats:?}");
        drop(domain);
        drop(conn);
    }
}
