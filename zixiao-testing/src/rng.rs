//! Seeded randomness for tests that draw what they do (kill points, orders):
//! the seed comes from an environment variable when it is set, else from
//! the clock, and is printed either way, so a failure is replayed by
//! setting the variable to the printed seed.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A small, fast generator (SplitMix64): the same seed gives the same
/// numbers on every machine. Not for anything but tests.
///
/// ```
/// use zixiao_testing::rng::SeededRng;
/// let mut a = SeededRng::new(42);
/// let mut b = SeededRng::new(42);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let d = a.duration(std::time::Duration::from_millis(10)..std::time::Duration::from_millis(20));
/// assert!(d >= std::time::Duration::from_millis(10) && d < std::time::Duration::from_millis(20));
/// ```
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng { state: seed }
    }

    /// A generator seeded from `var` when it is set (a decimal number),
    /// else from the clock; prints `what` and the seed on stderr, with how
    /// to replay it. Panics when `var` is set but not a number.
    pub fn from_env(var: &str, what: &str) -> (Self, u64) {
        let seed = match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => value
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{var}={value} is not a seed (a u64): {e}")),
            _ => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        };
        eprintln!("{what}: seed {seed} (replay with {var}={seed})");
        (SeededRng::new(seed), seed)
    }

    /// The generator for one part of a test (a runtime, a worker), derived
    /// from this one's seed and `label` so parts running in parallel draw
    /// their own sequences, each the same on every run of the seed.
    pub fn derive(seed: u64, label: &str) -> Self {
        let mut hash = seed ^ 0x9e37_79b9_7f4a_7c15;
        for byte in label.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = SeededRng::new(hash);
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `range` (which must not be empty).
    pub fn below(&mut self, range: Range<u64>) -> u64 {
        assert!(range.start < range.end, "empty range {range:?}");
        range.start + self.next_u64() % (range.end - range.start)
    }

    /// A duration in `range`, to the microsecond.
    pub fn duration(&mut self, range: Range<Duration>) -> Duration {
        let from = range.start.as_micros() as u64;
        let to = (range.end.as_micros() as u64).max(from + 1);
        Duration::from_micros(self.below(from..to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_sequence_and_labels_split_it() {
        let mut a = SeededRng::new(7);
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let mut b = SeededRng::new(7);
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut x = SeededRng::derive(7, "containerd");
        let mut y = SeededRng::derive(7, "qemu");
        assert_ne!(x.next_u64(), y.next_u64());
        let mut z = SeededRng::new(1);
        for _ in 0..1000 {
            assert!((5..9).contains(&z.below(5..9)));
        }
    }
}
