//! [`LogLimit`]: how much of each instance's log a node keeps. Its own
//! module because it is part of [`crate::DriverConfig`] whatever runtimes
//! are compiled in, while the log files themselves (`log_file`) exist only
//! with one.

use std::time::Duration;

/// How much of an instance's log a node keeps on disk, and how often it
/// looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimit {
    /// The most bytes of one log kept (at least 64 KiB). Once a log holds
    /// more, its oldest part is discarded, down to about half of this.
    pub max_bytes: u64,
    /// How often the logs are measured: between two looks a log may grow
    /// past `max_bytes` by what its instance writes meanwhile.
    pub check_every: Duration,
}

impl LogLimit {
    /// The least `max_bytes` honoured: smaller limits are raised to it.
    pub const MIN_BYTES: u64 = 64 * 1024;
}

impl Default for LogLimit {
    /// 16 MiB a log, measured every 10 s.
    fn default() -> Self {
        LogLimit {
            max_bytes: 16 << 20,
            check_every: Duration::from_secs(10),
        }
    }
}
