//! Templates: named instance specs kept in numbered versions. A
//! [`Template`] is one store object holding every version it still has; a
//! version never changes once stored (an update adds the next one) and its
//! number is never given out again, so "created from `web@2`" always means
//! the same spec. Each instance records the version it came from
//! ([`TemplateOrigin`]) and how many use a version is counted from those
//! records ([`TemplateInfo::count`]): there is no counter to drift from
//! them. [`FromTemplate`] asks for an instance from a version, with
//! [`SpecOverride`]s.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::validate::validate_labels;
use super::{
    Cpus, CreateInstance, Instance, InstanceSpec, InvalidAmount, RestartPolicy, TemplateName,
};
use crate::store::{Revision, StoredObject};
use crate::Error;

/// Key prefix of template objects.
pub const TEMPLATES_PREFIX: &str = "/zixiao/templates/";

/// What a template version holds: the `labels` and `spec` of an instance's
/// spec file (the file's `name`, if any, is the instance's, not the
/// template's).
///
/// ```
/// use zixiao_core::model::TemplateSpec;
/// let spec: TemplateSpec = serde_yaml::from_str(
///     "spec:\n  type: container\n  image: busybox\n  cpus: 1\n  memory_mib: 64\n",
/// ).unwrap();
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Labels every instance of the version gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What every instance of the version runs.
    pub spec: InstanceSpec,
}

impl TemplateSpec {
    /// Checks labels and spec as an instance create would, naming the
    /// first invalid field (`spec.cpus`).
    pub fn validate(&self) -> Result<(), Error> {
        validate_labels("labels", &self.labels)?;
        self.spec.validate()
    }
}

/// One stored version of a template. Never changed once stored, except for
/// the mark a delete sets while it checks that no instance uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersion {
    /// Its number: 1 for the first, one more than any before for the next.
    pub version: u32,
    /// Labels every instance of it gets.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What every instance of it runs.
    pub spec: InstanceSpec,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// Set while a delete checks that no instance uses it: no instance is
    /// created from it meanwhile (creates check the template's revision).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// A template as stored: its versions, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TemplateRecord")]
pub struct Template {
    /// Its name.
    pub name: TemplateName,
    /// The versions it still has, in version order; never empty.
    pub versions: Vec<TemplateVersion>,
    /// The number the next version gets (numbers are never reused, even
    /// after the latest version is deleted).
    pub next_version: u32,
    /// Store revision; updates are compare-and-swap on it.
    #[serde(skip)]
    pub revision: Revision,
}

/// A template as it reads from the store, before [`Template`]'s checks.
#[derive(Deserialize)]
struct TemplateRecord {
    name: TemplateName,
    versions: Vec<TemplateVersion>,
    next_version: u32,
}

impl TryFrom<TemplateRecord> for Template {
    type Error = String;

    /// Re-checks what every template keeps true: versions, ascending from
    /// 1, all below `next_version`.
    fn try_from(record: TemplateRecord) -> Result<Self, String> {
        let mut last = 0;
        for v in &record.versions {
            if v.version <= last || v.version >= record.next_version {
                return Err(format!(
                    "template `{}`: version {} is out of order (versions must ascend from 1, \
                     below next_version {})",
                    record.name, v.version, record.next_version
                ));
            }
            last = v.version;
        }
        if record.versions.is_empty() {
            return Err(format!("template `{}` has no versions", record.name));
        }
        Ok(Template {
            name: record.name,
            versions: record.versions,
            next_version: record.next_version,
            revision: 0,
        })
    }
}

impl StoredObject for Template {
    const PREFIX: &'static str = TEMPLATES_PREFIX;
    const KIND: &'static str = "template";

    fn id(&self) -> &str {
        self.name.as_str()
    }
    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }
    fn revision(&self) -> Revision {
        self.revision
    }
}

impl Template {
    /// A new template `name` whose version 1 is `spec` (validated by the
    /// caller).
    pub fn new(name: TemplateName, spec: TemplateSpec, now: DateTime<Utc>) -> Self {
        let mut template = Template {
            name,
            versions: Vec::new(),
            next_version: 1,
            revision: 0,
        };
        template.add_version(spec, now);
        template
    }

    /// Adds `spec` (validated by the caller) as the next version; returns
    /// its number.
    pub fn add_version(&mut self, spec: TemplateSpec, now: DateTime<Utc>) -> u32 {
        let version = self.next_version;
        self.versions.push(TemplateVersion {
            version,
            labels: spec.labels,
            spec: spec.spec,
            created_at: now,
            deleting: false,
        });
        self.next_version += 1;
        version
    }

    /// Version `version`, if the template has it.
    pub fn version(&self, version: u32) -> Option<&TemplateVersion> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The version an instance create means: `version`, or the latest.
    /// Errors: `NotFound` (no such version), `FailedPrecondition` (it is
    /// being deleted).
    pub fn resolve(&self, version: Option<u32>) -> Result<&TemplateVersion, Error> {
        let found = match version {
            Some(wanted) => self.version(wanted),
            None => self.versions.iter().rev().find(|v| !v.deleting),
        };
        let found = found.ok_or_else(|| match version {
            Some(wanted) => Error::not_found(format!("template `{}` version {wanted}", self.name)),
            None => Error::FailedPrecondition(format!(
                "every version of template `{}` is being deleted",
                self.name
            )),
        })?;
        if found.deleting {
            return Err(Error::FailedPrecondition(format!(
                "template `{}` version {} is being deleted",
                self.name, found.version
            )));
        }
        Ok(found)
    }
}

/// The template version an instance was created from, as its record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TemplateOrigin {
    /// The template's name.
    pub name: TemplateName,
    /// The version.
    pub version: u32,
}

impl fmt::Display for TemplateOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Which template version to create from: `NAME` (the latest) or `NAME@V`.
///
/// ```
/// use zixiao_core::model::TemplateRef;
/// let at = TemplateRef::try_from("web@2").unwrap();
/// assert_eq!((at.name.as_str(), at.version), ("web", Some(2)));
/// assert_eq!(TemplateRef::try_from("web").unwrap().version, None);
/// let err = TemplateRef::try_from("web@two").unwrap_err();
/// assert_eq!(err.to_string(), "invalid template: `web@two`: the version after `@` must be a number from 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// The template's name.
    pub name: TemplateName,
    /// The version; `None`: the latest.
    pub version: Option<u32>,
}

impl TryFrom<&str> for TemplateRef {
    type Error = Error;

    fn try_from(text: &str) -> Result<Self, Error> {
        let (name, version) = match text.split_once('@') {
            Some((name, version)) => {
                let version = version
                    .parse::<u32>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| {
                        Error::invalid(
                            "template",
                            format!("`{text}`: the version after `@` must be a number from 1"),
                        )
                    })?;
                (name, Some(version))
            }
            None => (text, None),
        };
        let name = TemplateName::try_from(name).map_err(|e| e.at("template"))?;
        Ok(TemplateRef { name, version })
    }
}

impl fmt::Display for TemplateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(version) => write!(f, "{}@{version}", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// One `field=value` change to a template's spec for one instance.
///
/// ```
/// use zixiao_core::model::SpecOverride;
/// let set = SpecOverride::try_from("labels.tier=web").unwrap();
/// assert_eq!(set.to_string(), "labels.tier=web");
/// let err = SpecOverride::try_from("colour=red").unwrap_err();
/// assert!(err.to_string().starts_with("invalid set: unknown field `colour`"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecOverride {
    /// `cpus=N`.
    Cpus(Cpus),
    /// `memory_mib=N`.
    MemoryMib(u64),
    /// `disk_gib=N`.
    DiskGib(u64),
    /// `image=REF`.
    Image(String),
    /// `cmdline=TEXT`.
    Cmdline(String),
    /// `restart=POLICY`.
    Restart(RestartPolicy),
    /// `labels.KEY=VALUE`.
    Label(String, String),
    /// `env.NAME=VALUE`.
    Env(String, String),
}

/// The fields [`SpecOverride`] knows, for its error message.
const OVERRIDABLE: &str =
    "cpus, memory_mib, disk_gib, image, cmdline, restart, labels.KEY, env.NAME";

impl TryFrom<&str> for SpecOverride {
    type Error = Error;

    /// Errors: `InvalidArgument` on `set`, naming the unknown field or the
    /// value that does not fit it.
    fn try_from(text: &str) -> Result<Self, Error> {
        let (field, value) = text
            .split_once('=')
            .ok_or_else(|| Error::invalid("set", format!("`{text}` is not FIELD=VALUE")))?;
        let number = |what: &str| {
            Error::invalid(
                "set",
                format!("`{text}`: {field} takes a whole number of {what}"),
            )
        };
        Ok(match field {
            "cpus" => SpecOverride::Cpus(
                value
                    .parse()
                    .map_err(|e: InvalidAmount| Error::invalid("set", format!("`{text}`: {e}")))?,
            ),
            "memory_mib" => SpecOverride::MemoryMib(value.parse().map_err(|_| number("MiB"))?),
            "disk_gib" => SpecOverride::DiskGib(value.parse().map_err(|_| number("GiB"))?),
            "image" => SpecOverride::Image(value.to_owned()),
            "cmdline" => SpecOverride::Cmdline(value.to_owned()),
            "restart" => SpecOverride::Restart(
                RestartPolicy::from_str(value).map_err(|e| Error::invalid("set", e.to_string()))?,
            ),
            _ => match field.split_once('.') {
                Some(("labels", key)) if !key.is_empty() => {
                    SpecOverride::Label(key.to_owned(), value.to_owned())
                }
                Some(("env", key)) if !key.is_empty() => {
                    SpecOverride::Env(key.to_owned(), value.to_owned())
                }
                _ => {
                    return Err(Error::invalid(
                        "set",
                        format!("unknown field `{field}`: expected one of {OVERRIDABLE}"),
                    ))
                }
            },
        })
    }
}

impl fmt::Display for SpecOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecOverride::Cpus(n) => write!(f, "cpus={n}"),
            SpecOverride::MemoryMib(n) => write!(f, "memory_mib={n}"),
            SpecOverride::DiskGib(n) => write!(f, "disk_gib={n}"),
            SpecOverride::Image(image) => write!(f, "image={image}"),
            SpecOverride::Cmdline(cmdline) => write!(f, "cmdline={cmdline}"),
            SpecOverride::Restart(policy) => {
                let policy = match policy {
                    RestartPolicy::Never => "never",
                    RestartPolicy::OnFailure => "on-failure",
                    RestartPolicy::Always => "always",
                };
                write!(f, "restart={policy}")
            }
            SpecOverride::Label(key, value) => write!(f, "labels.{key}={value}"),
            SpecOverride::Env(key, value) => write!(f, "env.{key}={value}"),
        }
    }
}

impl SpecOverride {
    /// Makes the change to `request`.
    fn apply(&self, request: &mut CreateInstance) {
        let spec = &mut request.spec;
        match self.clone() {
            SpecOverride::Cpus(n) => spec.cpus = n,
            SpecOverride::MemoryMib(n) => spec.memory_mib = n,
            SpecOverride::DiskGib(n) => spec.disk_gib = n,
            SpecOverride::Image(image) => spec.image = Some(image),
            SpecOverride::Cmdline(cmdline) => spec.cmdline = Some(cmdline),
            SpecOverride::Restart(policy) => spec.restart = policy,
            SpecOverride::Label(key, value) => {
                request.labels.insert(key, value);
            }
            SpecOverride::Env(key, value) => {
                spec.env.insert(key, value);
            }
        }
    }
}

/// A create of instance `name` from a template version, with changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromTemplate {
    /// The new instance's name.
    pub name: String,
    /// Which version.
    pub template: TemplateRef,
    /// Changes to the version's labels and spec, applied in order.
    pub set: Vec<SpecOverride>,
}

impl FromTemplate {
    /// Parses a create of instance `name` from `template` (`NAME` or
    /// `NAME@V`) with `set` (each `field=value`), as frontends take them.
    /// Errors: `InvalidArgument` on `template` or `set`.
    pub fn parse(
        name: impl Into<String>,
        template: &str,
        set: &[impl AsRef<str>],
    ) -> Result<Self, Error> {
        Ok(FromTemplate {
            name: name.into(),
            template: TemplateRef::try_from(template)?,
            set: set
                .iter()
                .map(|s| SpecOverride::try_from(s.as_ref()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// The instance create `version` and the overrides make, validated.
    /// Errors: `InvalidArgument` naming the field (`name`, `spec.cpus`).
    pub fn request(&self, version: &TemplateVersion) -> Result<CreateInstance, Error> {
        let mut request = CreateInstance {
            name: self.name.clone(),
            labels: version.labels.clone(),
            spec: version.spec.clone(),
        };
        for change in &self.set {
            change.apply(&mut request);
        }
        request.validate()?;
        Ok(request)
    }
}

/// A template as a read shows it: each version with the instances that
/// use it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateInfo {
    /// Its name.
    pub name: TemplateName,
    /// Its versions (or the one asked for), oldest first.
    pub versions: Vec<TemplateVersionInfo>,
}

/// One version of a template and its users.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateVersionInfo {
    /// The version.
    #[serde(flatten)]
    pub version: TemplateVersion,
    /// How many instances use it.
    pub in_use: usize,
    /// Their names, in name order.
    pub instances: Vec<String>,
}

impl TemplateInfo {
    /// `template` with each version's users among `instances` (every
    /// instance in the store): the one place usage is counted.
    pub fn count(template: Template, instances: &[Instance]) -> Self {
        let versions = template
            .versions
            .into_iter()
            .map(|version| {
                let mut users: Vec<String> = instances
                    .iter()
                    .filter(|i| {
                        i.template.as_ref().is_some_and(|o| {
                            o.name == template.name && o.version == version.version
                        })
                    })
                    .map(|i| i.name.clone())
                    .collect();
                users.sort();
                TemplateVersionInfo {
                    version,
                    in_use: users.len(),
                    instances: users,
                }
            })
            .collect();
        TemplateInfo {
            name: template.name,
            versions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InstanceSpec;

    fn spec(cpus: u32) -> TemplateSpec {
        TemplateSpec {
            labels: BTreeMap::from([("tier".to_owned(), "web".to_owned())]),
            spec: InstanceSpec::container("busybox").with_size(cpus, 64),
        }
    }

    fn name() -> TemplateName {
        TemplateName::try_from("web").unwrap()
    }

    #[test]
    fn versions_count_up_and_numbers_are_never_reused() {
        let now = Utc::now();
        let mut t = Template::new(name(), spec(1), now);
        assert_eq!(t.add_version(spec(2), now), 2);
        t.versions.retain(|v| v.version != 2);
        assert_eq!(t.add_version(spec(3), now), 3);
        assert_eq!(t.resolve(None).unwrap().spec.cpus, crate::Cpus::cores(3));
        assert_eq!(t.resolve(Some(1)).unwrap().spec.cpus, crate::Cpus::cores(1));
        let gone = t.resolve(Some(2)).unwrap_err();
        assert_eq!(gone.to_string(), "template `web` version 2 not found");
    }

    #[test]
    fn a_version_being_deleted_is_not_created_from() {
        let mut t = Template::new(name(), spec(1), Utc::now());
        t.add_version(spec(2), Utc::now());
        t.versions[1].deleting = true;
        assert_eq!(t.resolve(None).unwrap().version, 1, "latest skips it");
        let err = t.resolve(Some(2)).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::FailedPrecondition);
    }

    #[test]
    fn a_stored_template_is_rechecked_when_read() {
        let t = Template::new(name(), spec(1), Utc::now());
        let mut json = serde_json::to_value(&t).unwrap();
        let back: Template = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, t);
        json["next_version"] = 1.into();
        assert!(serde_json::from_value::<Template>(json.clone()).is_err());
        json["next_version"] = 2.into();
        json["name"] = "Bad Name".into();
        assert!(serde_json::from_value::<Template>(json).is_err());
    }

    #[test]
    fn overrides_change_the_spec_and_are_checked_by_the_create() {
        let t = Template::new(name(), spec(1), Utc::now());
        let from = FromTemplate {
            name: "a".to_owned(),
            template: TemplateRef::try_from("web").unwrap(),
            set: ["cpus=2", "memory_mib=256", "labels.k=v", "env.A=b"]
                .into_iter()
                .map(|s| SpecOverride::try_from(s).unwrap())
                .collect(),
        };
        let request = from.request(t.resolve(None).unwrap()).unwrap();
        assert_eq!(
            (request.spec.cpus, request.spec.memory_mib),
            (crate::Cpus::cores(2), 256)
        );
        assert_eq!(request.labels["k"], "v");
        assert_eq!(request.labels["tier"], "web", "the template's labels stay");
        assert_eq!(request.spec.env["A"], "b");
        let zero = FromTemplate {
            set: vec![SpecOverride::try_from("cpus=0").unwrap()],
            ..from
        };
        let err = zero.request(t.resolve(None).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid spec.cpus: must be more than 0 (a container may ask for as little as 1m)"
        );
    }

    #[test]
    fn bad_overrides_name_the_field() {
        for (text, want) in [
            ("colour=red", "unknown field `colour`"),
            ("labels.=x", "unknown field `labels.`"),
            ("cpus", "`cpus` is not FIELD=VALUE"),
            ("cpus=two", "`two` is not a CPU amount"),
        ] {
            let err = SpecOverride::try_from(text).unwrap_err();
            assert!(err.to_string().contains(want), "{text}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn usage_is_counted_per_version_from_the_instances() {
        let mut t = Template::new(name(), spec(1), Utc::now());
        t.add_version(spec(2), Utc::now());
        let of = |n: &str, version: u32| {
            let mut i = Instance::new(
                n,
                CreateInstance::new(n, InstanceSpec::container("busybox")),
                Utc::now(),
            );
            i.template = Some(TemplateOrigin {
                name: name(),
                version,
            });
            i
        };
        let plain = Instance::new(
            "p",
            CreateInstance::new("p", InstanceSpec::container("busybox")),
            Utc::now(),
        );
        let info = TemplateInfo::count(t, &[of("b", 1), of("a", 1), of("c", 2), plain]);
        assert_eq!(info.versions[0].instances, ["a", "b"]);
        assert_eq!(info.versions[0].in_use, 2);
        assert_eq!(info.versions[1].in_use, 1);
    }
}
