//! The liveness clock of a cluster: how long a node lives without a
//! heartbeat, how often its agent sends one, when its watchdog fences it,
//! and how long a server's own lease lives. The defaults give failover in
//! about three seconds: a node expires 3 s after the last heartbeat its
//! server answered, heartbeats every 0.5 s, a fence at 2 s (a full second
//! before the node can expire), a server lease of 3 s that a server must
//! have renewed within the last 0.75 s to answer heartbeats, a leader lease
//! of 2 s, a failure-detector sweep every 0.25 s.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zixiao_core::{Error, Result};

/// Liveness settings shared by servers, agents and watchdogs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// How long a node lives without a heartbeat answered, in
    /// milliseconds: its server then deletes its liveness key.
    pub lease_ttl_ms: u64,
    /// How often an agent renews its lease, in milliseconds.
    pub heartbeat_ms: u64,
    /// How long after its last renewal was sent a node stops its own
    /// instances, in milliseconds. Must be shorter than the lease TTL, so
    /// a node has fenced itself before anything can replace its instances.
    pub fence_after_ms: u64,
    /// How long the leading server's lease lives, in milliseconds.
    pub leader_ttl_ms: u64,
    /// How often the leader looks for nodes whose lease expired, in milliseconds.
    pub sweep_ms: u64,
    /// How often the leader converges every instance, in milliseconds.
    pub reconcile_ms: u64,
    /// How long a server's own lease (which its nodes' liveness keys are
    /// on) lives without a renewal, in milliseconds. A server answers
    /// heartbeats only while its last renewal is younger than this minus
    /// the fencing deadline and a margin of a quarter second, so its keys
    /// vanishing with its lease always comes after its nodes fenced.
    pub server_lease_ttl_ms: u64,
    /// How often a server samples the resource usage of running instances
    /// for their recent history (`instance stats --history`, the
    /// dashboard's charts), in milliseconds (`ZIXIAO_STATS_SAMPLE_MS` for
    /// a server).
    pub stats_sample_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_ttl_ms: 3000,
            heartbeat_ms: 500,
            fence_after_ms: 2000,
            leader_ttl_ms: 2000,
            sweep_ms: 250,
            reconcile_ms: 2000,
            server_lease_ttl_ms: 3000,
            stats_sample_ms: 10_000,
        }
    }
}

impl Timing {
    /// Checks that the settings keep the fencing promise. Errors:
    /// `InvalidArgument` naming the setting.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("lease_ttl_ms", self.lease_ttl_ms),
            ("heartbeat_ms", self.heartbeat_ms),
            ("fence_after_ms", self.fence_after_ms),
            ("leader_ttl_ms", self.leader_ttl_ms),
            ("sweep_ms", self.sweep_ms),
            ("reconcile_ms", self.reconcile_ms),
            ("server_lease_ttl_ms", self.server_lease_ttl_ms),
            ("stats_sample_ms", self.stats_sample_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::invalid(format!("timing.{name}"), "must be above 0"));
            }
        }
        if self.fence_after_ms >= self.lease_ttl_ms {
            return Err(Error::invalid(
                "timing.fence_after_ms",
                format!(
                    "must be shorter than timing.lease_ttl_ms ({} ms), so a node fences itself \
                     before its lease expires",
                    self.lease_ttl_ms
                ),
            ));
        }
        if self.fence_after_ms + ACK_MARGIN_MS + MIN_ACK_WINDOW_MS > self.server_lease_ttl_ms {
            return Err(Error::invalid(
                "timing.server_lease_ttl_ms",
                format!(
                    "must be at least timing.fence_after_ms ({} ms) plus {} ms, so a server's \
                     nodes fence themselves before its lease can expire",
                    self.fence_after_ms,
                    ACK_MARGIN_MS + MIN_ACK_WINDOW_MS
                ),
            ));
        }
        if self.heartbeat_ms * 2 > self.fence_after_ms {
            return Err(Error::invalid(
                "timing.heartbeat_ms",
                format!(
                    "must be at most half of timing.fence_after_ms ({} ms), or one late \
                     heartbeat fences the node",
                    self.fence_after_ms
                ),
            ));
        }
        Ok(())
    }

    /// The node lease TTL.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_millis(self.lease_ttl_ms)
    }

    /// The heartbeat period.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// The fencing deadline after the last renewal sent.
    pub fn fence_after(&self) -> Duration {
        Duration::from_millis(self.fence_after_ms)
    }

    /// The leader lease TTL.
    pub fn leader_ttl(&self) -> Duration {
        Duration::from_millis(self.leader_ttl_ms)
    }

    /// The failure-detector period.
    pub fn sweep(&self) -> Duration {
        Duration::from_millis(self.sweep_ms)
    }

    /// The full reconcile period.
    pub fn reconcile(&self) -> Duration {
        Duration::from_millis(self.reconcile_ms)
    }

    /// The server lease TTL.
    pub fn server_lease_ttl(&self) -> Duration {
        Duration::from_millis(self.server_lease_ttl_ms)
    }

    /// How young a server's last lease renewal must be for it to answer
    /// heartbeats: the server lease TTL minus the fencing deadline minus a
    /// margin. Its last answer then precedes its lease's expiry by more
    /// than the fencing deadline.
    pub fn ack_window(&self) -> Duration {
        Duration::from_millis(
            self.server_lease_ttl_ms
                .saturating_sub(self.fence_after_ms + ACK_MARGIN_MS)
                .max(MIN_ACK_WINDOW_MS),
        )
    }

    /// How often a server renews its own lease: three times per ack window.
    pub fn server_renewal(&self) -> Duration {
        self.ack_window() / 3
    }
}

/// The margin between a server's last answer and its nodes' fencing
/// deadline running out before its lease can expire.
const ACK_MARGIN_MS: u64 = 250;

/// The shortest ack window: a server needs time to renew.
const MIN_ACK_WINDOW_MS: u64 = 300;

/// Milliseconds on the machine's monotonic clock (`CLOCK_MONOTONIC`): the
/// same for every process on the machine and never set back, so an agent
/// and its watchdog compare times through a file.
pub fn monotonic_ms() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    if rc != 0 {
        return 0;
    }
    (now.tv_sec as u64) * 1000 + (now.tv_nsec as u64) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_fence_before_the_lease_expires() {
        Timing::default().validate().expect("valid defaults");
        let bad = Timing {
            fence_after_ms: 3000,
            ..Timing::default()
        };
        let error = bad.validate().expect_err("fence at the TTL");
        assert!(
            error.to_string().contains("timing.fence_after_ms"),
            "{error}"
        );
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ms();
        std::thread::sleep(Duration::from_millis(5));
        assert!(monotonic_ms() >= a + 5);
    }
}
