//! CPU amounts in millicores, and the allocation ratios that let a node
//! promise more CPU or memory than it has.
//!
//! A container that idles most of the time should not hold a whole core:
//! placement counts CPU in thousandths of a core ([`Cpus`]), written the
//! way people already write it (`0.25`, `250m`, `2`). A VM's vCPUs are
//! still whole; its spec says so at validation. A node offers its cores
//! times its CPU [`AllocationRatio`] (as Nova's `cpu_allocation_ratio`):
//! CPU is compressible, so promising more than is there slows instances
//! down under contention instead of failing them. Memory is not, and its
//! ratio defaults to 1.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Thousandths of a unit per unit: a millicore per core, and the fixed
/// point of an [`AllocationRatio`].
const MILLI: u32 = 1000;

/// An amount of CPU, in thousandths of a core.
///
/// Parsed from cores (`2`, `0.5`, `.25`) or millicores (`250m`); shown in
/// cores (`0.25`). In JSON and YAML it is a number of cores (a whole one
/// is written as an integer, so records stored before fractions existed
/// read back unchanged), or a string in either form.
///
/// ```
/// use zixiao_core::Cpus;
/// let quarter: Cpus = "250m".parse().unwrap();
/// assert_eq!(quarter, "0.25".parse().unwrap());
/// assert_eq!(quarter.millis(), 250);
/// assert_eq!(quarter.to_string(), "0.25");
/// assert_eq!(Cpus::cores(2).to_string(), "2");
/// assert!("0.0001".parse::<Cpus>().is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(u32);

impl Cpus {
    /// No CPU at all.
    pub const ZERO: Cpus = Cpus(0);

    /// `n` whole cores (saturating at the largest amount).
    pub const fn cores(n: u32) -> Cpus {
        Cpus(n.saturating_mul(MILLI))
    }

    /// `millis` thousandths of a core.
    pub const fn from_millis(millis: u32) -> Cpus {
        Cpus(millis)
    }

    /// The amount in thousandths of a core.
    pub const fn millis(self) -> u32 {
        self.0
    }

    /// Whether it is a whole number of cores (what a VM's vCPUs must be).
    pub const fn is_whole(self) -> bool {
        self.0 % MILLI == 0
    }

    /// Whole cores, rounded up: the vCPUs a VM gets, or the cores a
    /// fraction needs at least.
    pub const fn whole_cores(self) -> u32 {
        self.0.div_ceil(MILLI)
    }

    /// The amount in cores, for display and arithmetic by people.
    pub fn as_cores(self) -> f64 {
        f64::from(self.0) / f64::from(MILLI)
    }

    /// `self - other`, never below zero.
    pub const fn saturating_sub(self, other: Cpus) -> Cpus {
        Cpus(self.0.saturating_sub(other.0))
    }

    /// `self + other`, saturating at the maximum.
    pub const fn saturating_add(self, other: Cpus) -> Cpus {
        Cpus(self.0.saturating_add(other.0))
    }

    /// `self - other`, or `None` when it would go below zero.
    pub const fn checked_sub(self, other: Cpus) -> Option<Cpus> {
        match self.0.checked_sub(other.0) {
            Some(m) => Some(Cpus(m)),
            None => None,
        }
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_thousandths(self.0, f)
    }
}

/// Writes `value / 1000` with as few decimals as it needs.
fn fmt_thousandths(value: u32, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let (whole, frac) = (value / MILLI, value % MILLI);
    if frac == 0 {
        return write!(f, "{whole}");
    }
    let digits = format!("{frac:03}");
    write!(f, "{whole}.{}", digits.trim_end_matches('0'))
}

/// Why a CPU amount or a ratio could not be read: the text says it in
/// words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAmount(String);

impl FromStr for Cpus {
    type Err = InvalidAmount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if let Some(millis) = t.strip_suffix('m') {
            return millis.parse::<u32>().map(Cpus).map_err(|_| {
                InvalidAmount(format!(
                    "`{s}` is not a whole number of millicores (such as 250m)"
                ))
            });
        }
        parse_thousandths(t)
            .map(Cpus)
            .ok_or_else(|| InvalidAmount(format!(
                "`{s}` is not a CPU amount: write cores (2, 0.5) or millicores (250m), at most 3 decimals"
            )))
    }
}

/// Reads a decimal with at most three decimals (`4`, `1.5`, `.25`) as
/// thousandths. No sign, no exponent: what a person types.
fn parse_thousandths(t: &str) -> Option<u32> {
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    if (whole.is_empty() && frac.is_empty())
        || frac.len() > 3
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u32 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let frac: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse().ok()?
    };
    whole.checked_mul(MILLI)?.checked_add(frac)
}

/// Reads a JSON/YAML number of whole units or thousandths, refusing what
/// is finer than a thousandth or negative.
fn thousandths_of(value: f64) -> Option<u32> {
    let scaled = value * f64::from(MILLI);
    let rounded = scaled.round();
    ((scaled - rounded).abs() < 1e-6 && rounded >= 0.0 && rounded <= f64::from(u32::MAX))
        .then_some(rounded as u32)
}

/// Reads thousandths written as a number of units (`2`, `0.25`) or as
/// text `T::from_str` reads (`"250m"`), so JSON, YAML and the bindings'
/// dicts take what people write.
struct Thousandths<T>(std::marker::PhantomData<T>);

impl<T> serde::de::Visitor<'_> for Thousandths<T>
where
    T: FromStr<Err = InvalidAmount> + From<ValidThousandths>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number with at most 3 decimals, or text such as \"250m\"")
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<T, E> {
        u32::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(MILLI))
            .map(|m| T::from(ValidThousandths(m)))
            .ok_or_else(|| E::custom(format!("{n} is too large")))
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<T, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!("{n} is negative"))),
        }
    }

    fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<T, E> {
        thousandths_of(x)
            .map(|m| T::from(ValidThousandths(m)))
            .ok_or_else(|| E::custom(format!("{x} is negative, too large or finer than 0.001")))
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        s.parse().map_err(E::custom)
    }
}

/// Thousandths a [`Thousandths`] visitor read from a number, before the
/// type's own bounds are checked.
struct ValidThousandths(u32);

impl From<ValidThousandths> for Cpus {
    fn from(t: ValidThousandths) -> Self {
        Cpus(t.0)
    }
}

/// Serializes thousandths as a number of units: an integer when whole.
fn serialize_thousandths<S: Serializer>(value: u32, serializer: S) -> Result<S::Ok, S::Error> {
    if value % MILLI == 0 {
        serializer.serialize_u32(value / MILLI)
    } else {
        serializer.serialize_f64(f64::from(value) / f64::from(MILLI))
    }
}

impl Serialize for Cpus {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_thousandths(self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Thousandths(std::marker::PhantomData))
    }
}

/// How much of a resource a node promises per unit it has: 4 means four
/// times its cores may be reserved. Thousandths, between
/// [`AllocationRatio::MIN`] and [`AllocationRatio::MAX`].
///
/// ```
/// use zixiao_core::AllocationRatio;
/// let r: AllocationRatio = "1.5".parse().unwrap();
/// assert_eq!(r.to_string(), "1.5");
/// assert!("0".parse::<AllocationRatio>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllocationRatio(u32);

impl AllocationRatio {
    /// The smallest ratio: a tenth of what the node has.
    pub const MIN: AllocationRatio = AllocationRatio(100);
    /// The largest ratio.
    pub const MAX: AllocationRatio = AllocationRatio(64 * MILLI);
    /// No overcommit.
    pub const ONE: AllocationRatio = AllocationRatio(MILLI);

    /// The ratio in thousandths, if it is within [`Self::MIN`]..=[`Self::MAX`].
    pub fn from_millis(millis: u32) -> Result<AllocationRatio, InvalidAmount> {
        if (Self::MIN.0..=Self::MAX.0).contains(&millis) {
            Ok(AllocationRatio(millis))
        } else {
            Err(InvalidAmount(format!(
                "{} is outside {}..={}",
                AllocationRatio(millis),
                Self::MIN,
                Self::MAX
            )))
        }
    }

    /// The ratio in thousandths.
    pub const fn millis(self) -> u32 {
        self.0
    }

    /// `amount` times the ratio, rounded down.
    pub fn scale(self, amount: u64) -> u64 {
        let scaled = u128::from(amount) * u128::from(self.0) / u128::from(MILLI);
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for AllocationRatio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_thousandths(self.0, f)
    }
}

impl FromStr for AllocationRatio {
    type Err = InvalidAmount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let millis = parse_thousandths(s.trim()).ok_or_else(|| {
            InvalidAmount(format!(
                "`{s}` is not a ratio: a positive decimal such as 4 or 1.5, at most 3 decimals"
            ))
        })?;
        Self::from_millis(millis)
    }
}

impl TryFrom<f64> for AllocationRatio {
    type Error = InvalidAmount;

    /// A ratio from a number, as the bindings pass one (`1.5`).
    fn try_from(x: f64) -> Result<Self, Self::Error> {
        let millis = thousandths_of(x).ok_or_else(|| {
            InvalidAmount(format!(
                "{x} is not a ratio: a positive decimal with at most 3 decimals"
            ))
        })?;
        Self::from_millis(millis)
    }
}

impl Serialize for AllocationRatio {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_thousandths(self.0, serializer)
    }
}

/// A ratio read from a number: its bounds are checked after.
struct UncheckedRatio(u32);

impl From<ValidThousandths> for UncheckedRatio {
    fn from(t: ValidThousandths) -> Self {
        UncheckedRatio(t.0)
    }
}

impl FromStr for UncheckedRatio {
    type Err = InvalidAmount;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<AllocationRatio>().map(|r| UncheckedRatio(r.0))
    }
}

impl<'de> Deserialize<'de> for AllocationRatio {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let UncheckedRatio(millis) =
            deserializer.deserialize_any(Thousandths(std::marker::PhantomData))?;
        AllocationRatio::from_millis(millis).map_err(serde::de::Error::custom)
    }
}

/// How far a node's CPU and memory may be promised beyond what it has.
///
/// Set in the agent's configuration (or the embedded default's) and by
/// `zixiao node update`; placement, admission and `node get` all count
/// against [`super::Node::allocatable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationRatios {
    /// CPU: reserved cores may be this many times the node's cores.
    pub cpu: AllocationRatio,
    /// Memory: reserved MiB may be this many times the node's memory.
    pub memory: AllocationRatio,
}

impl Default for AllocationRatios {
    /// CPU 4 (Nova's initial `cpu_allocation_ratio`: idle vCPUs and
    /// containers are the common case), memory 1 (an overcommitted page
    /// is an OOM kill, not a slowdown).
    fn default() -> Self {
        AllocationRatios {
            cpu: AllocationRatio(4 * MILLI),
            memory: AllocationRatio::ONE,
        }
    }
}

impl AllocationRatios {
    /// No overcommit: exactly what the node has may be reserved.
    pub const EXACT: AllocationRatios = AllocationRatios {
        cpu: AllocationRatio::ONE,
        memory: AllocationRatio::ONE,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cores_and_millicores() {
        for (text, millis) in [
            ("2", 2000),
            ("0.5", 500),
            (".25", 250),
            ("1.125", 1125),
            ("250m", 250),
            ("0", 0),
        ] {
            assert_eq!(text.parse::<Cpus>().unwrap().millis(), millis, "{text}");
        }
        for bad in [
            "", ".", "-1", "1e3", "0.0005", "abc", "1.5m", "m", "5000000",
        ] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_keeps_whole_cores_as_integers_and_reads_old_records() {
        assert_eq!(serde_json::to_string(&Cpus::cores(1)).unwrap(), "1");
        assert_eq!(
            serde_json::to_string(&Cpus::from_millis(250)).unwrap(),
            "0.25"
        );
        for (json, millis) in [
            ("1", 1000),
            ("0.1", 100),
            ("\"250m\"", 250),
            ("\"1.5\"", 1500),
        ] {
            let cpus: Cpus = serde_json::from_str(json).unwrap();
            assert_eq!(cpus.millis(), millis, "{json}");
        }
        for bad in ["-1", "0.0001", "\"x\"", "1e12"] {
            assert!(serde_json::from_str::<Cpus>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for millis in [0, 1, 10, 100, 250, 1000, 1500, 12_345] {
            let cpus = Cpus::from_millis(millis);
            assert_eq!(cpus.to_string().parse::<Cpus>().unwrap(), cpus);
        }
    }

    #[test]
    fn ratios_are_bounded_and_scale() {
        let r: AllocationRatio = "4".parse().unwrap();
        assert_eq!(r.scale(2000), 8000);
        assert_eq!("1.5".parse::<AllocationRatio>().unwrap().scale(1000), 1500);
        for bad in ["0", "0.05", "65", "-1", "x"] {
            assert!(bad.parse::<AllocationRatio>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&AllocationRatios::default()).unwrap();
        assert_eq!(json, r#"{"cpu":4,"memory":1}"#);
        assert!(serde_json::from_str::<AllocationRatios>(r#"{"cpu":0,"memory":1}"#).is_err());
    }
}
