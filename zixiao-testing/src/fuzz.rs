//! Fuzzing on stable Rust with proptest: the damage done to valid input
//! (bytes overwritten, the input cut short) and the case budget, shared by
//! the fuzz properties of each decoder (the protocol's messages, image
//! archives). CI runs the default budget; `PROPTEST_CASES=N` runs longer.

use proptest::prelude::*;
use proptest::sample::Index;

/// Proptest's case budget: `PROPTEST_CASES` when set (a longer fuzzing
/// run), else `default` (what CI spends).
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Byte overwrites and a cut, to apply to a valid encoding.
#[derive(Debug, Clone)]
pub struct Damage {
    writes: Vec<(Index, u8)>,
    cut: Option<Index>,
}

impl Damage {
    /// `bytes` damaged: each write lands at its position scaled to the
    /// length, then the cut (if any) drops the tail. Empty input stays empty.
    pub fn apply(&self, mut bytes: Vec<u8>) -> Vec<u8> {
        if bytes.is_empty() {
            return bytes;
        }
        for (at, byte) in &self.writes {
            let at = at.index(bytes.len());
            bytes[at] = *byte;
        }
        if let Some(cut) = &self.cut {
            bytes.truncate(cut.index(bytes.len()));
        }
        bytes
    }
}

/// Up to `max_writes` overwritten bytes and, sometimes, a cut.
pub fn damage(max_writes: usize) -> impl Strategy<Value = Damage> {
    (
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..=max_writes),
        prop::option::of(any::<Index>()),
    )
        .prop_map(|(writes, cut)| Damage { writes, cut })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest! {
        #[test]
        fn damage_never_grows_the_input_and_no_damage_changes_nothing(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            hit in damage(4),
        ) {
            let damaged = hit.apply(bytes.clone());
            prop_assert!(damaged.len() <= bytes.len());
            let none = Damage { writes: Vec::new(), cut: None };
            prop_assert_eq!(none.apply(bytes.clone()), bytes);
        }
    }
}
