//! Breaking ties between equally scored nodes: an injectable [`TieBreak`]
//! rule, by default a seeded hash, so placement is deterministic yet equal
//! nodes share the load instead of the first one always winning.

use std::fmt;

use zixiao_core::{Instance, Node};

/// Orders nodes with equal scores: the lowest rank wins. Must be a pure
/// function of its arguments, so the same input gives the same placement.
pub trait TieBreak: Send + Sync + fmt::Debug {
    /// The rank of `node` for `instance`. Called only for nodes whose total
    /// score equals the best so far.
    fn rank(&self, instance: &Instance, node: &Node) -> u64;
}

/// Ranks by a hash of a seed, the instance's id and the node's id: stable
/// across runs and platforms (unlike the standard library's hasher), and
/// different seeds give different but equally deterministic choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeededTieBreak {
    /// The seed.
    pub seed: u64,
}

impl SeededTieBreak {
    /// A rule with `seed`.
    pub fn new(seed: u64) -> Self {
        SeededTieBreak { seed }
    }
}

impl TieBreak for SeededTieBreak {
    fn rank(&self, instance: &Instance, node: &Node) -> u64 {
        let h = fnv1a(fnv1a(self.seed ^ FNV_OFFSET, instance.id.as_bytes()), b"\0");
        mix(fnv1a(h, node.id.as_bytes()))
    }
}

/// Ranks by node position: the first node (in id order) wins. Useful in
/// tests that want the most predictable choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirstNode;

impl TieBreak for FirstNode {
    fn rank(&self, _: &Instance, _: &Node) -> u64 {
        0
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// SplitMix64's finaliser: FNV alone leaves nearby ids with nearby hashes.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
