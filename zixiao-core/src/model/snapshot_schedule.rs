//! Snapshot schedules: how often an instance is snapshotted in the
//! background and how many of those snapshots are kept
//! ([`SnapshotSchedule`], part of its spec, so templates carry it too), the
//! names scheduled snapshots get ([`scheduled_name`]: `auto-YYYYMMDD-HHMMSS`,
//! a form hand-made snapshots may not take, so pruning never touches one),
//! and which of them a prune deletes ([`to_prune`]). The reconciler that
//! runs schedules is `controller::snapshot_schedules`.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{InstanceSpec, InstanceType, MicrovmBackend};
use crate::Error;

/// The shortest interval a schedule may have: a snapshot of a VM's memory
/// takes seconds and its disk space, so more often would mostly snapshot.
pub const MIN_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);
/// The longest interval a schedule may have (a year).
pub const MAX_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(366 * 86_400);
/// The most scheduled snapshots a schedule may keep.
pub const MAX_SNAPSHOT_KEEP: u32 = 1000;
/// What every scheduled snapshot's name starts with.
pub const SCHEDULED_PREFIX: &str = "auto-";
/// The time part of a scheduled snapshot's name, in UTC.
const SCHEDULED_TIME_FORMAT: &str = "%Y%m%d-%H%M%S";

/// A duration as people write it: a whole number with the unit `s`, `m`,
/// `h` or `d` (`90s`, `30m`, `12h`, `7d`). `field` names it in errors.
/// Errors: `InvalidArgument`.
///
/// ```
/// use std::time::Duration;
/// use zixiao_core::model::parse_duration;
/// assert_eq!(parse_duration("every", "2h").unwrap(), Duration::from_secs(7200));
/// assert!(parse_duration("every", "2 hours").is_err());
/// ```
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, Error> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        Error::invalid(
            field,
            format!("`{text}` is not a duration such as 90s, 30m, 12h or 7d"),
        )
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(Error::invalid(
                field,
                format!("`{text}`: the unit is s, m, h or d"),
            ))
        }
    };
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| Error::invalid(field, format!("`{text}` is too long")))
}

/// How often a schedule snapshots: whole seconds from
/// [`MIN_SNAPSHOT_INTERVAL`] to [`MAX_SNAPSHOT_INTERVAL`]. Written and
/// read as text (`1h`, `90m`); built only by [`TryFrom<Duration>`] or
/// [`FromStr`], so a held one is always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotInterval(Duration);

impl SnapshotInterval {
    /// The field its errors name, as `instance update` and the API call it.
    pub const FIELD: &'static str = "snapshot_every";

    /// The interval.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl TryFrom<Duration> for SnapshotInterval {
    type Error = Error;

    /// Errors: `InvalidArgument` naming `snapshot_every` and the bounds.
    fn try_from(every: Duration) -> Result<Self, Error> {
        if every < MIN_SNAPSHOT_INTERVAL {
            return Err(Error::invalid(
                Self::FIELD,
                format!(
                    "{} is shorter than the minimum of {}",
                    Text(every),
                    Text(MIN_SNAPSHOT_INTERVAL)
                ),
            ));
        }
        if every > MAX_SNAPSHOT_INTERVAL {
            return Err(Error::invalid(
                Self::FIELD,
                format!(
                    "{} is longer than the maximum of {}",
                    Text(every),
                    Text(MAX_SNAPSHOT_INTERVAL)
                ),
            ));
        }
        if every.subsec_nanos() != 0 {
            return Err(Error::invalid(Self::FIELD, "must be whole seconds"));
        }
        Ok(SnapshotInterval(every))
    }
}

impl FromStr for SnapshotInterval {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        parse_duration(Self::FIELD, text)?.try_into()
    }
}

impl TryFrom<String> for SnapshotInterval {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        text.parse()
    }
}

impl From<SnapshotInterval> for String {
    fn from(every: SnapshotInterval) -> String {
        every.to_string()
    }
}

impl fmt::Display for SnapshotInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Text(self.0).fmt(f)
    }
}

/// A whole-second duration in the largest unit that divides it (`90m`, `2h`).
struct Text(Duration);

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.0.as_secs();
        match [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|(unit, _)| seconds > 0 && seconds % unit == 0)
        {
            Some((unit, name)) => write!(f, "{}{name}", seconds / unit),
            None => write!(f, "{seconds}s"),
        }
    }
}

/// How many scheduled snapshots a schedule keeps: 1 to [`MAX_SNAPSHOT_KEEP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct SnapshotKeep(NonZeroU32);

impl SnapshotKeep {
    /// The field its errors name.
    pub const FIELD: &'static str = "snapshot_keep";

    /// The count.
    pub fn get(self) -> u32 {
        self.0.get()
    }
}

impl TryFrom<u32> for SnapshotKeep {
    type Error = Error;

    /// Errors: `InvalidArgument` naming `snapshot_keep`.
    fn try_from(keep: u32) -> Result<Self, Error> {
        if keep > MAX_SNAPSHOT_KEEP {
            return Err(Error::invalid(
                Self::FIELD,
                format!("{keep} is more than the {MAX_SNAPSHOT_KEEP} a schedule may keep"),
            ));
        }
        NonZeroU32::new(keep).map(SnapshotKeep).ok_or_else(|| {
            Error::invalid(
                Self::FIELD,
                "must be at least 1 (to take no snapshots, clear the schedule)",
            )
        })
    }
}

impl From<SnapshotKeep> for u32 {
    fn from(keep: SnapshotKeep) -> u32 {
        keep.get()
    }
}

/// Snapshot the instance every `every` and keep the newest `keep` of
/// those snapshots (hand-made ones are never deleted). In a spec file:
/// `snapshot_schedule: {every: 1h, keep: 24}`.
///
/// ```
/// use zixiao_core::model::SnapshotSchedule;
/// let s: SnapshotSchedule = serde_yaml::from_str("{every: 1h, keep: 24}").unwrap();
/// assert_eq!((s.every.to_string(), s.keep.get()), ("1h".to_owned(), 24));
/// assert!(serde_yaml::from_str::<SnapshotSchedule>("{every: 10s, keep: 2}").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSchedule {
    /// How often.
    pub every: SnapshotInterval,
    /// How many scheduled snapshots stay.
    pub keep: SnapshotKeep,
}

impl SnapshotSchedule {
    /// The schedule of `every` and `keep`, as the flags or an API call give
    /// them. Errors: `InvalidArgument` naming `snapshot_every` or `snapshot_keep`.
    pub fn new(every: Duration, keep: u32) -> Result<Self, Error> {
        Ok(SnapshotSchedule {
            every: every.try_into()?,
            keep: keep.try_into()?,
        })
    }

    /// Whether a snapshot is due at `now`, the last one having been taken
    /// at `last` (none yet: at once).
    pub fn due(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        let Some(last) = last else { return true };
        // A clock set back leaves `now` before `last`: not due until it passes.
        (now - last)
            .to_std()
            .is_ok_and(|since| since >= self.every.duration())
    }
}

impl InstanceSpec {
    /// Whether instances of this spec can be snapshotted at all, as far as
    /// the spec tells (a node's runtime may still lack the capability).
    /// Errors: `Unsupported`, saying why.
    pub fn check_snapshots(&self) -> Result<(), Error> {
        match (self.instance_type, self.backend) {
            (InstanceType::Container, _) => Err(Error::Unsupported(
                "containers cannot be snapshotted (containerd keeps no snapshot of a \
                 container's state): snapshots and snapshot schedules need a vm or a microvm"
                    .to_owned(),
            )),
            (InstanceType::Microvm, MicrovmBackend::Qemu) => Err(Error::Unsupported(
                "the qemu microvm backend takes no snapshots: snapshots and snapshot \
                 schedules need the vmm backend"
                    .to_owned(),
            )),
            _ => Ok(()),
        }
    }
}

/// The last snapshot a schedule took, kept on the instance so a restarted
/// controller knows when the next is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledSnapshot {
    /// Its name ([`scheduled_name`]).
    pub name: String,
    /// When it was taken.
    pub at: DateTime<Utc>,
}

/// The name of a scheduled snapshot taken at `at`: `auto-YYYYMMDD-HHMMSS` (UTC).
pub fn scheduled_name(at: DateTime<Utc>) -> String {
    format!("{SCHEDULED_PREFIX}{}", at.format(SCHEDULED_TIME_FORMAT))
}

/// When the scheduled snapshot `name` was taken, or `None` if `name` is
/// not of the form [`scheduled_name`] gives.
pub fn scheduled_at(name: &str) -> Option<DateTime<Utc>> {
    let time = name.strip_prefix(SCHEDULED_PREFIX)?;
    // The format's fields are fixed-width digits; chrono alone would also
    // take `auto-2026101-...` or signs.
    if time.len() != 15 || !time.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return None;
    }
    NaiveDateTime::parse_from_str(time, SCHEDULED_TIME_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// Refuses `name` for a hand-made snapshot when it has the form of a
/// scheduled one: only scheduled snapshots are pruned, and telling them
/// apart by name must not delete one a user made. Errors: `InvalidArgument`.
pub fn check_hand_made_name(name: &str) -> Result<(), Error> {
    if scheduled_at(name).is_some() {
        return Err(Error::invalid(
            "snapshot name",
            format!(
                "`{name}` has the form of a scheduled snapshot's name \
                 ({SCHEDULED_PREFIX}YYYYMMDD-HHMMSS), which schedules prune; choose another"
            ),
        ));
    }
    Ok(())
}

/// Of the snapshot names `names`, the scheduled ones a schedule keeping
/// `keep` deletes: the oldest beyond the newest `keep`, oldest first.
/// Other names are never chosen.
///
/// ```
/// use zixiao_core::model::{to_prune, SnapshotKeep};
/// let names = ["auto-20260101-000300", "mine", "auto-20260101-000100", "auto-20260101-000200"];
/// let keep = SnapshotKeep::try_from(2).unwrap();
/// assert_eq!(to_prune(names, keep), vec!["auto-20260101-000100".to_owned()]);
/// ```
pub fn to_prune<'a>(names: impl IntoIterator<Item = &'a str>, keep: SnapshotKeep) -> Vec<String> {
    let mut scheduled: Vec<(DateTime<Utc>, &str)> = names
        .into_iter()
        .filter_map(|name| scheduled_at(name).map(|at| (at, name)))
        .collect();
    scheduled.sort();
    let beyond = scheduled.len().saturating_sub(keep.get() as usize);
    scheduled[..beyond]
        .iter()
        .map(|(_, name)| (*name).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, h, m, s)
            .single()
            .expect("a valid time")
    }

    fn field(error: Error) -> String {
        match error {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("not InvalidArgument: {other:?}"),
        }
    }

    #[test]
    fn intervals_parse_within_bounds_and_print_back() {
        for (text, seconds, shown) in [
            ("1m", 60, "1m"),
            ("90m", 5400, "90m"),
            ("120m", 7200, "2h"),
            ("3600s", 3600, "1h"),
            ("7d", 7 * 86_400, "7d"),
            ("61s", 61, "61s"),
        ] {
            let every: SnapshotInterval = text.parse().expect(text);
            assert_eq!(every.duration(), Duration::from_secs(seconds), "{text}");
            assert_eq!(every.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn intervals_out_of_bounds_or_malformed_name_snapshot_every() {
        for text in [
            "59s",
            "0m",
            "367d",
            "1h30m",
            "",
            "h",
            "-1m",
            "1w",
            "99999999999999999d",
        ] {
            let err = text.parse::<SnapshotInterval>().unwrap_err();
            assert_eq!(field(err), "snapshot_every", "{text}");
        }
        let err = "30s".parse::<SnapshotInterval>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid snapshot_every: 30s is shorter than the minimum of 1m"
        );
        let err = SnapshotInterval::try_from(Duration::from_millis(60_500)).unwrap_err();
        assert_eq!(field(err), "snapshot_every");
    }

    #[test]
    fn keep_is_one_to_the_maximum() {
        assert_eq!(SnapshotKeep::try_from(1).expect("1").get(), 1);
        assert_eq!(
            field(SnapshotKeep::try_from(0).unwrap_err()),
            "snapshot_keep"
        );
        assert_eq!(
            field(SnapshotKeep::try_from(MAX_SNAPSHOT_KEEP + 1).unwrap_err()),
            "snapshot_keep"
        );
    }

    #[test]
    fn stored_schedules_are_checked_again_when_read() {
        let s: SnapshotSchedule = serde_json::from_str(r#"{"every":"2h","keep":3}"#).expect("ok");
        assert_eq!(
            serde_json::to_string(&s).expect("json"),
            r#"{"every":"2h","keep":3}"#
        );
        for bad in [
            r#"{"every":"1s","keep":3}"#,
            r#"{"every":"1h","keep":0}"#,
            r#"{"every":3600,"keep":3}"#,
            r#"{"every":"1h","keep":3,"at":"x"}"#,
        ] {
            assert!(
                serde_json::from_str::<SnapshotSchedule>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_snapshot_is_due_once_the_interval_has_passed() {
        let s = SnapshotSchedule::new(Duration::from_secs(3600), 2).expect("valid");
        assert!(s.due(None, at(0, 0, 0)));
        assert!(!s.due(Some(at(1, 0, 0)), at(1, 59, 59)));
        assert!(s.due(Some(at(1, 0, 0)), at(2, 0, 0)));
        // A clock set back: not due.
        assert!(!s.due(Some(at(3, 0, 0)), at(1, 0, 0)));
    }

    #[test]
    fn scheduled_names_round_trip_and_nothing_else_parses() {
        let t = at(13, 4, 5);
        assert_eq!(scheduled_name(t), "auto-20260102-130405");
        assert_eq!(scheduled_at(&scheduled_name(t)), Some(t));
        for other in [
            "auto",
            "auto-",
            "auto-20260102",
            "auto-20260102-1304051",
            "auto-2026010-2130405",
            "auto-20261302-130405",
            "auto-20260102-250000",
            "manual-20260102-130405",
            "Auto-20260102-130405",
        ] {
            assert_eq!(scheduled_at(other), None, "{other}");
        }
        assert!(check_hand_made_name("auto-nightly").is_ok());
        assert_eq!(
            field(check_hand_made_name("auto-20260102-130405").unwrap_err()),
            "snapshot name"
        );
    }

    #[test]
    fn pruning_deletes_only_the_oldest_scheduled_beyond_keep() {
        let keep = |n| SnapshotKeep::try_from(n).expect("valid");
        let names = [
            "auto-20260102-030000",
            "before-upgrade",
            "auto-20260102-010000",
            "auto-nightly",
            "auto-20260102-020000",
            "auto-20260102-040000",
        ];
        assert_eq!(
            to_prune(names, keep(2)),
            vec!["auto-20260102-010000", "auto-20260102-020000"]
        );
        assert_eq!(to_prune(names, keep(1)).len(), 3);
        assert!(to_prune(names, keep(4)).is_empty());
        assert!(to_prune(names, keep(10)).is_empty());
        assert!(to_prune(["before-upgrade", "auto-nightly"], keep(1)).is_empty());
    }
}
