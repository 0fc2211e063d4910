//! Validation of user input. Each check names the field and the reason and
//! returns [`Error::InvalidArgument`]; nothing is touched before it passes.

use std::collections::BTreeMap;
use std::path::Path;

use super::{
    CheckOutcome, Cpus, CreateInstance, InstanceSpec, InstanceType, MicrovmBackend, NodeFile,
    NodeRegistration, Onboarding, OnboardingState, Placement, RuntimeCheck,
};
use crate::scheduler::{LabelOperator, LabelSelector};
use crate::Error;

/// The most CPU cores one instance may ask for.
pub const MAX_CPUS: u32 = 512;
/// Checks an instance's CPU request and cap, naming `{prefix}cpus` or
/// `{prefix}cpu_limit`: a container asks for any amount above zero and
/// may cap it at no less than that; a VM or microVM has whole vCPUs and
/// no separate cap.
pub(crate) fn check_cpus(
    prefix: &str,
    ty: InstanceType,
    cpus: Cpus,
    cpu_limit: Option<Cpus>,
) -> Result<(), Error> {
    let field = format!("{prefix}cpus");
    if cpus == Cpus::ZERO {
        return Err(Error::invalid(
            field,
            "must be more than 0 (a container may ask for as little as 1m)",
        ));
    }
    if cpus > Cpus::cores(MAX_CPUS) {
        return Err(Error::invalid(
            field,
            format!("{cpus} is more than the {MAX_CPUS} one instance may have"),
        ));
    }
    if ty != InstanceType::Container && !cpus.is_whole() {
        return Err(Error::invalid(
            field,
            format!(
                "a {ty} has whole vCPUs; {cpus} is not a whole number (use {})",
                cpus.whole_cores()
            ),
        ));
    }
    if let Some(limit) = cpu_limit {
        let field = format!("{prefix}cpu_limit");
        if ty != InstanceType::Container {
            return Err(Error::invalid(
                field,
                format!("a {ty} runs on exactly its vCPUs; remove the limit"),
            ));
        }
        if limit < cpus {
            return Err(Error::invalid(
                field,
                format!("{limit} is less than the {cpus} the container requests ({prefix}cpus)"),
            ));
        }
        if limit > Cpus::cores(MAX_CPUS) {
            return Err(Error::invalid(
                field,
                format!("{limit} is more than the {MAX_CPUS} one instance may have"),
            ));
        }
    }
    Ok(())
}

/// Checks a container's memory cap against its reservation, naming
/// `{prefix}memory_limit_mib`.
pub(crate) fn check_memory_limit(
    prefix: &str,
    ty: InstanceType,
    memory_mib: u64,
    limit: Option<u64>,
) -> Result<(), Error> {
    let Some(limit) = limit else { return Ok(()) };
    let field = format!("{prefix}memory_limit_mib");
    if ty != InstanceType::Container {
        return Err(Error::invalid(
            field,
            format!("a {ty} has exactly its memory; remove the limit"),
        ));
    }
    if limit < memory_mib {
        return Err(Error::invalid(
            field,
            format!(
                "{limit} MiB is less than the {memory_mib} MiB it reserves ({prefix}memory_mib)"
            ),
        ));
    }
    if limit > MAX_MEMORY_MIB {
        return Err(Error::invalid(
            field,
            format!("{limit} MiB is more than the {MAX_MEMORY_MIB} MiB one instance may have"),
        ));
    }
    Ok(())
}

/// Checks a VM's live-resize maximums against its size, naming
/// `{prefix}max_cpus` or `{prefix}max_memory_mib`: VMs only (and
/// microVMs' memory: the vmm backend's balloon), whole vCPUs, at least the
/// size they bound, within what one instance may have.
pub(crate) fn check_maximums(prefix: &str, spec: &InstanceSpec) -> Result<(), Error> {
    let ty = spec.instance_type;
    if let Some(max) = spec.max_cpus {
        let field = format!("{prefix}max_cpus");
        if ty != InstanceType::Vm {
            return Err(Error::invalid(
                field,
                format!("only a vm changes its vCPUs live; a {ty} has no maximum to set"),
            ));
        }
        if !max.is_whole() {
            return Err(Error::invalid(
                field,
                format!("a vm has whole vCPUs; {max} is not a whole number"),
            ));
        }
        if max < spec.cpus {
            return Err(Error::invalid(
                field,
                format!(
                    "{max} is less than the {} vCPUs it runs ({prefix}cpus)",
                    spec.cpus
                ),
            ));
        }
        if max > Cpus::cores(MAX_CPUS) {
            return Err(Error::invalid(
                field,
                format!("{max} is more than the {MAX_CPUS} one instance may have"),
            ));
        }
    }
    if let Some(max) = spec.max_memory_mib {
        let field = format!("{prefix}max_memory_mib");
        if !matches!(ty, InstanceType::Vm | InstanceType::Microvm) {
            return Err(Error::invalid(
                field,
                format!(
                    "only a vm changes its memory live (and a microvm on the vmm backend); \
                     a {ty} has no maximum to set"
                ),
            ));
        }
        if max < spec.memory_mib {
            return Err(Error::invalid(
                field,
                format!(
                    "{max} MiB is less than the {} MiB it runs with ({prefix}memory_mib)",
                    spec.memory_mib
                ),
            ));
        }
        if max > MAX_MEMORY_MIB {
            return Err(Error::invalid(
                field,
                format!("{max} MiB is more than the {MAX_MEMORY_MIB} MiB one instance may have"),
            ));
        }
    }
    Ok(())
}

/// The least memory an instance may ask for, in MiB.
pub const MIN_MEMORY_MIB: u64 = 4;
/// The most memory one instance may ask for, in MiB (16 TiB).
pub const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;
/// The most disk one instance may ask for, in GiB (1 PiB).
pub(crate) const MAX_DISK_GIB: u64 = 1024 * 1024;
pub(super) const MAX_LABELS: usize = 64;
const MAX_COMMAND_BYTES: usize = 128 * 1024;
const MAX_CMDLINE_BYTES: usize = 4096;
/// The most environment variables one instance may set.
const MAX_ENV_VARS: usize = 1024;
/// The most bytes of names and values one instance's environment may hold
/// (Linux's own limit for one argument string is 128 KiB).
const MAX_ENV_BYTES: usize = 128 * 1024;

/// Checks that `value` is a DNS label: 1 to 63 characters of `a-z`, `0-9` and
/// `-`, starting and ending with a letter or digit.
///
/// ```
/// use zixiao_core::model::validate_name;
/// assert!(validate_name("name", "web-1").is_ok());
/// let err = validate_name("name", "Web_1").unwrap_err();
/// assert!(err.to_string().starts_with("invalid name:"));
/// ```
pub fn validate_name(field: &str, value: &str) -> Result<(), Error> {
    let reason = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.len() > 63 {
        format!(
            "`{value}` is {} characters long; at most 63 are allowed",
            value.len()
        )
    } else if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        format!("`{value}` contains `{c}`; only lowercase letters, digits and `-` are allowed")
    } else if value.starts_with('-') || value.ends_with('-') {
        format!("`{value}` must start and end with a letter or a digit")
    } else {
        return Ok(());
    };
    Err(Error::invalid(field, reason))
}

/// Checks a label key: 1 to 253 characters of letters, digits, `-`, `_`, `.` and `/`.
pub fn validate_label_key(field: &str, key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > 253 {
        return Err(Error::invalid(
            field,
            "label keys must be 1 to 253 characters long",
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
    {
        return Err(Error::invalid(
            field,
            format!("label key `{key}` contains `{c}`; only letters, digits, `-`, `_`, `.` and `/` are allowed"),
        ));
    }
    Ok(())
}

pub(super) fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), Error> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_LABELS} labels are allowed"),
        ));
    }
    for (key, value) in labels {
        validate_label_key(&format!("{field}.{key}"), key)?;
        if value.len() > 253 || value.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("{field}.{key}"),
                "label values are at most 253 characters, without control characters",
            ));
        }
    }
    Ok(())
}

fn validate_node_path(field: &str, path: &Path) -> Result<(), Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if !path.is_absolute() {
        return Err(Error::invalid(
            field,
            format!("`{}` must be an absolute path on the node", path.display()),
        ));
    }
    Ok(())
}

impl InstanceSpec {
    /// Checks the spec, naming the first invalid field (`spec.memory_mib`, ...).
    ///
    /// ```
    /// use zixiao_core::{ErrorKind, InstanceSpec, InstanceType};
    /// let spec = InstanceSpec::empty(InstanceType::Microvm, 1, 64);
    /// let err = spec.validate().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// assert_eq!(err.to_string(), "invalid spec.kernel: a microvm boots a kernel; set one");
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let ty = self.instance_type;
        check_cpus("spec.", ty, self.cpus, self.cpu_limit)?;
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(Error::invalid(
                "spec.memory_mib",
                format!(
                    "{} MiB is less than the minimum of {MIN_MEMORY_MIB} MiB",
                    self.memory_mib
                ),
            ));
        }
        if self.memory_mib > MAX_MEMORY_MIB {
            return Err(Error::invalid(
                "spec.memory_mib",
                format!(
                    "{} MiB is more than the {MAX_MEMORY_MIB} MiB one instance may have",
                    self.memory_mib
                ),
            ));
        }
        check_memory_limit("spec.", ty, self.memory_mib, self.memory_limit_mib)?;
        check_maximums("spec.", self)?;
        if self.disk_gib > MAX_DISK_GIB {
            return Err(Error::invalid(
                "spec.disk_gib",
                format!(
                    "{} GiB is more than the {MAX_DISK_GIB} GiB one instance may have",
                    self.disk_gib
                ),
            ));
        }
        if let Some(image) = &self.image {
            if image.trim().is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::invalid(
                    "spec.image",
                    "must be a non-empty reference without spaces",
                ));
            }
        }
        match ty {
            InstanceType::Container => {
                if self.image.is_none() {
                    return Err(Error::invalid(
                        "spec.image",
                        "a container runs an image; set one",
                    ));
                }
                for (field, set) in [
                    ("spec.kernel", self.kernel.is_some()),
                    ("spec.initrd", self.initrd.is_some()),
                    ("spec.cmdline", self.cmdline.is_some()),
                ] {
                    if set {
                        return Err(Error::invalid(
                            field,
                            "containers share the host kernel; remove it",
                        ));
                    }
                }
            }
            InstanceType::Microvm => {
                if self.kernel.is_none() {
                    return Err(Error::invalid(
                        "spec.kernel",
                        "a microvm boots a kernel; set one",
                    ));
                }
            }
            InstanceType::Vm => {
                if self.image.is_none() && self.kernel.is_none() {
                    return Err(Error::invalid(
                        "spec.image",
                        "a vm boots from a disk image or a kernel; set one of them",
                    ));
                }
                if let Some(image) = &self.image {
                    NodeFile::parse("spec.image", Path::new(image))?;
                }
            }
        }
        if ty != InstanceType::Container {
            if !self.command.is_empty() {
                return Err(Error::invalid(
                    "spec.command",
                    format!("a {ty} runs its own init; pass arguments on spec.cmdline instead"),
                ));
            }
            if !self.env.is_empty() {
                return Err(Error::invalid(
                    "spec.env",
                    format!("a {ty} has no environment to set"),
                ));
            }
        }
        if ty != InstanceType::Microvm && self.backend != MicrovmBackend::Auto {
            return Err(Error::invalid(
                "spec.backend",
                format!("only a microvm chooses its monitor; a {ty} runs on its own runtime"),
            ));
        }
        if self.networks.len() > MAX_NETWORKS {
            return Err(Error::invalid(
                "spec.networks",
                format!("an instance joins at most {MAX_NETWORKS} networks"),
            ));
        }
        for (i, network) in self.networks.iter().enumerate() {
            validate_name(&format!("spec.networks[{i}]"), network)?;
            if self.networks[..i].contains(network) {
                return Err(Error::invalid(
                    format!("spec.networks[{i}]"),
                    format!("joins network `{network}` twice"),
                ));
            }
        }
        validate_publish(self)?;
        if self.snapshot_schedule.is_some() {
            self.check_snapshots()?;
        }
        if self.initrd.is_some() && self.kernel.is_none() {
            return Err(Error::invalid("spec.initrd", "an initrd needs spec.kernel"));
        }
        if let Some(kernel) = &self.kernel {
            NodeFile::parse("spec.kernel", kernel)?;
        }
        if let Some(initrd) = &self.initrd {
            NodeFile::parse("spec.initrd", initrd)?;
        }
        if let Some(dir) = &self.restore_from {
            if ty != InstanceType::Microvm {
                return Err(Error::invalid(
                    "spec.restore_from",
                    format!("only a microvm resumes from a snapshot directory, not a {ty}"),
                ));
            }
            if self.backend == MicrovmBackend::Qemu {
                return Err(Error::invalid(
                    "spec.restore_from",
                    "restoring a snapshot needs the vmm backend, not qemu",
                ));
            }
            validate_node_path("spec.restore_from", dir)?;
        }
        if let Some(cmdline) = &self.cmdline {
            if cmdline.len() > MAX_CMDLINE_BYTES || cmdline.contains('\0') {
                return Err(Error::invalid(
                    "spec.cmdline",
                    format!("must be at most {MAX_CMDLINE_BYTES} bytes without NUL"),
                ));
            }
        }
        if self.command.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES {
            return Err(Error::invalid("spec.command", "is longer than 128 KiB"));
        }
        if self.command.iter().any(|arg| arg.contains('\0')) {
            return Err(Error::invalid(
                "spec.command",
                "arguments must not contain NUL",
            ));
        }
        if self.command.first().is_some_and(String::is_empty) {
            return Err(Error::invalid(
                "spec.command",
                "the program name must not be empty",
            ));
        }
        if self.env.len() > MAX_ENV_VARS {
            return Err(Error::invalid(
                "spec.env",
                format!(
                    "{} variables; at most {MAX_ENV_VARS} are allowed",
                    self.env.len()
                ),
            ));
        }
        let env_bytes: usize = self.env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if env_bytes > MAX_ENV_BYTES {
            return Err(Error::invalid(
                "spec.env",
                format!("{env_bytes} bytes of names and values; at most 128 KiB are allowed"),
            ));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(Error::invalid(
                    format!("spec.env.{key}"),
                    "names must be non-empty without `=`, and neither may contain NUL",
                ));
            }
        }
        if let Some(init) = &self.cloud_init {
            if ty == InstanceType::Container {
                return Err(Error::invalid(
                    "spec.cloud_init",
                    "cloud-init data is for VMs and microVMs; a container does not run cloud-init",
                ));
            }
            init.validate("spec.cloud_init")?;
        }
        super::disk::validate_disks(&self.disks, ty)?;
        super::vsock::validate_vsock(self.vsock.as_ref(), ty)?;
        validate_placement(&self.placement)
    }
}

/// The most networks one instance may join.
const MAX_NETWORKS: usize = 8;
/// The most ports one instance may publish (each is a few nftables rules
/// on its node).
const MAX_PUBLISHED: usize = 64;

/// Published ports (each already a valid [`PublishedPort`](super::PublishedPort)):
/// they forward to the instance's address on its first network, so they
/// need one; and no two may claim the same host port and protocol on the
/// same address.
fn validate_publish(spec: &InstanceSpec) -> Result<(), Error> {
    if spec.publish.is_empty() {
        return Ok(());
    }
    if spec.networks.is_empty() {
        return Err(Error::invalid(
            "spec.publish",
            "a published port forwards to the instance's address on its first network; \
             join a network (spec.networks, `--network`)",
        ));
    }
    if spec.publish.len() > MAX_PUBLISHED {
        return Err(Error::invalid(
            "spec.publish",
            format!("an instance publishes at most {MAX_PUBLISHED} ports"),
        ));
    }
    for (i, port) in spec.publish.iter().enumerate() {
        if let Some(j) = spec.publish[..i]
            .iter()
            .position(|p| p.conflicts_with(port))
        {
            return Err(Error::invalid(
                format!("spec.publish[{i}]"),
                format!(
                    "`{port}` publishes host port {} again (spec.publish[{j}] is `{}`)",
                    port.host_side(),
                    spec.publish[j]
                ),
            ));
        }
    }
    Ok(())
}
/// The most requirements one label selector may have.
const MAX_REQUIREMENTS: usize = 64;
/// The most groups one instance may be a member of.
const MAX_GROUPS: usize = 16;

pub(super) fn validate_label_value(field: &str, value: &str) -> Result<(), Error> {
    if value.len() > 253 || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "label values are at most 253 characters, without control characters",
        ));
    }
    Ok(())
}

fn validate_selector(field: &str, selector: &LabelSelector) -> Result<(), Error> {
    if selector.0.len() > MAX_REQUIREMENTS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_REQUIREMENTS} requirements are allowed"),
        ));
    }
    for (i, r) in selector.0.iter().enumerate() {
        validate_label_key(&format!("{field}[{i}].key"), &r.key)?;
        let values = format!("{field}[{i}].values");
        let count = r.values.len();
        match r.operator {
            LabelOperator::Equals if count != 1 => {
                return Err(Error::invalid(
                    values,
                    format!("`equals` takes exactly one value, not {count}"),
                ));
            }
            LabelOperator::In | LabelOperator::NotIn if count == 0 => {
                return Err(Error::invalid(
                    values,
                    "`in` and `not_in` take at least one value",
                ));
            }
            LabelOperator::Exists | LabelOperator::DoesNotExist if count != 0 => {
                return Err(Error::invalid(
                    values,
                    "`exists` and `does_not_exist` take no values",
                ));
            }
            _ => {}
        }
        if count > MAX_REQUIREMENTS {
            return Err(Error::invalid(
                values,
                format!("at most {MAX_REQUIREMENTS} values are allowed"),
            ));
        }
        for value in &r.values {
            validate_label_value(&values, value)?;
        }
    }
    Ok(())
}

/// Checks the placement constraints, naming the first invalid field
/// (`spec.placement.node_selector[0].key`, ...).
fn validate_placement(placement: &Placement) -> Result<(), Error> {
    for (field, value) in [
        ("spec.placement.region", &placement.region),
        ("spec.placement.zone", &placement.zone),
    ] {
        if let Some(value) = value {
            validate_name(field, value)?;
        }
    }
    validate_selector("spec.placement.node_selector", &placement.node_selector)?;
    for (field, names) in [
        ("spec.placement.required_traits", &placement.required_traits),
        (
            "spec.placement.forbidden_traits",
            &placement.forbidden_traits,
        ),
        ("spec.placement.aggregates", &placement.aggregates),
    ] {
        if names.len() > MAX_REQUIREMENTS {
            return Err(Error::invalid(
                field,
                format!("at most {MAX_REQUIREMENTS} are allowed"),
            ));
        }
        for name in names {
            validate_label_key(field, name)?;
        }
    }
    if let Some(both) = placement
        .required_traits
        .intersection(&placement.forbidden_traits)
        .next()
    {
        return Err(Error::invalid(
            "spec.placement.forbidden_traits",
            format!("`{both}` is also required; no node can both have and lack it"),
        ));
    }
    validate_selector(
        "spec.placement.aggregate_selector",
        &placement.aggregate_selector,
    )?;
    if placement.groups.len() > MAX_GROUPS {
        return Err(Error::invalid(
            "spec.placement.groups",
            format!("at most {MAX_GROUPS} groups are allowed"),
        ));
    }
    for (i, group) in placement.groups.iter().enumerate() {
        let field = format!("spec.placement.groups[{i}].name");
        validate_name(&field, &group.name)?;
        if placement.groups[..i].iter().any(|g| g.name == group.name) {
            return Err(Error::invalid(
                field,
                format!("group `{}` is listed twice", group.name),
            ));
        }
    }
    if let Some(spread) = &placement.spread {
        if let Some(group) = &spread.group {
            validate_name("spec.placement.spread.group", group)?;
        }
        let mut total = 0u32;
        for (zone, percent) in &spread.targets {
            let field = format!("spec.placement.spread.targets.{zone}");
            validate_name(&field, zone)?;
            if *percent > 100 {
                return Err(Error::invalid(
                    field,
                    format!("{percent}% is more than 100%"),
                ));
            }
            total += u32::from(*percent);
        }
        if total > 100 {
            return Err(Error::invalid(
                "spec.placement.spread.targets",
                format!("the targets add up to {total}%; at most 100% is allowed"),
            ));
        }
    }
    Ok(())
}

impl CreateInstance {
    /// Checks the whole request: name, labels and spec.
    ///
    /// ```
    /// use zixiao_core::{CreateInstance, InstanceSpec};
    /// let err = CreateInstance::new("", InstanceSpec::container("busybox"))
    ///     .validate()
    ///     .unwrap_err();
    /// assert_eq!(err.to_string(), "invalid name: must not be empty");
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        validate_name("name", &self.name)?;
        // Instances are addressed by id or name alike: a name that reads as
        // an id would make `get` and `delete` of it reach another instance.
        if uuid::Uuid::try_parse(&self.name).is_ok() {
            return Err(Error::invalid(
                "name",
                format!(
                    "`{}` has the form of an instance id (a UUID), which would make it \
                     ambiguous; choose a name that is not a UUID",
                    self.name
                ),
            ));
        }
        validate_labels("labels", &self.labels)?;
        self.spec.validate()
    }
}

impl NodeRegistration {
    /// Checks the registration, naming the first invalid field.
    pub fn validate(&self) -> Result<(), Error> {
        validate_name("node.id", &self.id)?;
        validate_name("node.region", &self.region)?;
        validate_name("node.zone", &self.zone)?;
        if self.hostname.is_empty() {
            return Err(Error::invalid("node.hostname", "must not be empty"));
        }
        if self.capacity.cpus < Cpus::cores(1) {
            return Err(Error::invalid("node.capacity.cpus", "must be at least 1"));
        }
        if self.capacity.memory_mib == 0 {
            return Err(Error::invalid(
                "node.capacity.memory_mib",
                "must be at least 1",
            ));
        }
        if self.capacity.instances == 0 {
            return Err(Error::invalid(
                "node.capacity.instances",
                "must be at least 1",
            ));
        }
        validate_labels("node.labels", &self.labels)?;
        for name in &self.traits {
            validate_label_key("node.traits", name)?;
        }
        if let Some(onboarding) = &self.onboarding {
            onboarding.validate("node.onboarding")?;
        }
        Ok(())
    }
}

impl Onboarding {
    /// Checks what an agent reports of its onboarding: at most one check
    /// per runtime, short details, and a state its checks bear out (a
    /// failed check fails it; a passed one has none). Errors:
    /// `InvalidArgument` naming the field under `at`.
    pub fn validate(&self, at: &str) -> Result<(), Error> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, check) in self.checks.iter().enumerate() {
            if !seen.insert(check.runtime) {
                return Err(Error::invalid(
                    format!("{at}.checks[{i}].runtime"),
                    format!("{} is checked twice", check.runtime),
                ));
            }
            if check.detail.len() > RuntimeCheck::MAX_DETAIL {
                return Err(Error::invalid(
                    format!("{at}.checks[{i}].detail"),
                    format!("longer than {} bytes", RuntimeCheck::MAX_DETAIL),
                ));
            }
            if (check.outcome == CheckOutcome::Failed) != check.step.is_some() {
                return Err(Error::invalid(
                    format!("{at}.checks[{i}].step"),
                    "a failed check names its step, and only a failed one",
                ));
            }
        }
        let failed = self
            .checks
            .iter()
            .any(|c| c.outcome == CheckOutcome::Failed);
        let consistent = match self.state {
            OnboardingState::Failed => failed,
            OnboardingState::Passed => !failed,
            OnboardingState::Running | OnboardingState::Skipped => self.checks.is_empty(),
        };
        if !consistent {
            return Err(Error::invalid(
                format!("{at}.state"),
                format!(
                    "{} does not fit its checks (a failed check fails it; running and \
                     skipped have none)",
                    self.state.as_str()
                ),
            ));
        }
        if self.finished_at.is_some() == (self.state == OnboardingState::Running) {
            return Err(Error::invalid(
                format!("{at}.finished_at"),
                "set once it ended, and only then",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::{InstanceSpec, RestartPolicy};
    use crate::ErrorKind;

    fn container() -> CreateInstance {
        CreateInstance::new("web", InstanceSpec::container("busybox"))
    }

    /// Each invalid request fails with `InvalidArgument` naming the field.
    #[test]
    fn invalid_requests_name_the_field() {
        type Breaker = Box<dyn Fn(&mut CreateInstance)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("name", Box::new(|r| r.name = String::new())),
            ("name", Box::new(|r| r.name = "Web_Server".into())),
            ("name", Box::new(|r| r.name = "-web".into())),
            ("name", Box::new(|r| r.name = "a".repeat(64))),
            ("spec.cpus", Box::new(|r| r.spec.cpus = Cpus::ZERO)),
            (
                "spec.cpus",
                Box::new(|r| r.spec.cpus = Cpus::cores(100_000)),
            ),
            ("spec.memory_mib", Box::new(|r| r.spec.memory_mib = 0)),
            (
                "spec.memory_mib",
                Box::new(|r| r.spec.memory_mib = u64::MAX),
            ),
            ("spec.disk_gib", Box::new(|r| r.spec.disk_gib = u64::MAX)),
            (
                "spec.backend",
                Box::new(|r| r.spec.backend = crate::model::MicrovmBackend::Qemu),
            ),
            (
                "spec.networks[0]",
                Box::new(|r| r.spec.networks = vec!["Bad_Net".into()]),
            ),
            (
                "spec.networks[1]",
                Box::new(|r| r.spec.networks = vec!["lan".into(), "lan".into()]),
            ),
            ("spec.image", Box::new(|r| r.spec.image = None)),
            (
                "spec.image",
                Box::new(|r| r.spec.image = Some("bad image".into())),
            ),
            (
                "spec.publish",
                Box::new(|r| r.spec.publish = ports(&["8080:80"])),
            ),
            (
                "spec.publish[1]",
                Box::new(|r| {
                    r.spec.networks = vec!["lan".into()];
                    r.spec.publish = ports(&["8080:80", "8080:81/tcp"]);
                }),
            ),
            (
                "spec.publish[2]",
                Box::new(|r| {
                    r.spec.networks = vec!["lan".into()];
                    r.spec.publish = ports(&["8080:80", "8080:80/udp", "10.0.0.1:8080:81"]);
                }),
            ),
            (
                "spec.publish",
                Box::new(|r| {
                    r.spec.networks = vec!["lan".into()];
                    r.spec.publish = (1..=65).map(|p| ports(&[&format!("{p}:80")])[0]).collect();
                }),
            ),
            (
                "spec.kernel",
                Box::new(|r| r.spec.kernel = Some(PathBuf::from("/boot/vmlinuz"))),
            ),
            (
                "spec.env.",
                Box::new(|r| {
                    r.spec.env.insert(String::new(), "x".into());
                }),
            ),
            (
                "spec.env.A=B",
                Box::new(|r| {
                    r.spec.env.insert("A=B".into(), "x".into());
                }),
            ),
            (
                "spec.command",
                Box::new(|r| r.spec.command = vec![String::new()]),
            ),
            (
                "spec.env",
                Box::new(|r| {
                    r.spec.env = (0..=MAX_ENV_VARS)
                        .map(|i| (format!("V{i}"), String::new()))
                        .collect();
                }),
            ),
            (
                "spec.env",
                Box::new(|r| {
                    r.spec.env.insert("BIG".into(), "x".repeat(MAX_ENV_BYTES));
                }),
            ),
            (
                "labels.bad key",
                Box::new(|r| {
                    r.labels.insert("bad key".into(), "v".into());
                }),
            ),
            (
                "spec.placement.zone",
                Box::new(|r| r.spec.placement.zone = Some("Zone A".into())),
            ),
            (
                "spec.kernel",
                Box::new(|r| {
                    r.spec = InstanceSpec::empty(InstanceType::Microvm, 1, 64);
                }),
            ),
            (
                "spec.kernel",
                Box::new(|r| {
                    r.spec = InstanceSpec::microvm("relative/vmlinux");
                }),
            ),
            (
                "spec.command",
                Box::new(|r| {
                    r.spec = InstanceSpec::microvm("/k").with_command(["sh"]);
                }),
            ),
            (
                "spec.restore_from",
                Box::new(|r| r.spec.restore_from = Some("/snapshots/s1".into())),
            ),
            (
                "spec.restore_from",
                Box::new(|r| {
                    r.spec = InstanceSpec::microvm("/k");
                    r.spec.restore_from = Some("relative/s1".into());
                }),
            ),
            (
                "spec.restore_from",
                Box::new(|r| {
                    r.spec = InstanceSpec::microvm("/k");
                    r.spec.backend = crate::model::MicrovmBackend::Qemu;
                    r.spec.restore_from = Some("/snapshots/s1".into());
                }),
            ),
            (
                "spec.initrd",
                Box::new(|r| {
                    r.spec = InstanceSpec::vm("/disk.qcow2");
                    r.spec.initrd = Some("/initrd".into());
                }),
            ),
            (
                "spec.image",
                Box::new(|r| {
                    r.spec = InstanceSpec::empty(InstanceType::Vm, 1, 512);
                }),
            ),
        ];
        for (field, break_it) in cases {
            let mut request = container();
            break_it(&mut request);
            let err = request.validate().expect_err(field);
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{field}: {err}");
            match &err {
                Error::InvalidArgument { field: got, reason } => {
                    assert_eq!(got, field, "{err}");
                    assert!(!reason.is_empty());
                }
                other => panic!("{field}: unexpected {other:?}"),
            }
        }
    }

    fn ports(texts: &[&str]) -> Vec<crate::model::PublishedPort> {
        texts
            .iter()
            .map(|t| crate::model::PublishedPort::try_from(*t).unwrap())
            .collect()
    }

    #[test]
    fn a_duplicate_published_port_names_the_one_it_repeats() {
        let mut request = container();
        request.spec.networks = vec!["lan".into()];
        request.spec.publish = ports(&["53:53/udp", "8080:80", "10.0.0.1:8080:81"]);
        let err = request.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid spec.publish[2]: `10.0.0.1:8080:81/tcp` publishes host port \
             10.0.0.1:8080/tcp again (spec.publish[1] is `8080:80/tcp`)"
        );
        // Different addresses, or protocols, are different ports.
        request.spec.publish = ports(&["10.0.0.2:8080:80", "10.0.0.1:8080:81", "8080:80/udp"]);
        request.validate().expect("distinct ports");
    }

    #[test]
    fn valid_requests_pass() {
        container().validate().expect("container");
        let mut vm = CreateInstance::new("vm-1", InstanceSpec::vm("/var/lib/images/debian.qcow2"));
        vm.spec.restart = RestartPolicy::Always;
        vm.validate().expect("vm");
        let mut micro = CreateInstance::new("m1", InstanceSpec::microvm("/boot/vmlinux"));
        micro.spec.initrd = Some("/boot/initrd".into());
        micro.spec.cmdline = Some("console=ttyS0".into());
        micro.validate().expect("microvm");
    }

    #[test]
    fn unknown_types_and_policies_are_rejected_with_the_field() {
        let err = "vps".parse::<InstanceType>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid spec.type: unknown instance type `vps`: expected vm, container or microvm"
        );
        let err = "sometimes".parse::<RestartPolicy>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn yaml_with_an_unknown_field_is_rejected() {
        let yaml =
            "name: web\nspec:\n  type: container\n  image: busybox\n  cpus: 1\n  memroy_mib: 64\n";
        let err = serde_yaml::from_str::<CreateInstance>(yaml).unwrap_err();
        assert!(err.to_string().contains("memroy_mib"), "{err}");
    }

    proptest::proptest! {
        /// Validation never panics, and accepts a name exactly when it is a DNS label.
        #[test]
        fn names_are_dns_labels(name in "\\PC{0,70}") {
            let ok = validate_name("name", &name).is_ok();
            let dns = !name.is_empty() && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-') && !name.ends_with('-');
            proptest::prop_assert_eq!(ok, dns);
        }

        /// Any cpu and memory amount either validates or names its field.
        #[test]
        fn sizes_validate_or_name_the_field(cpus in proptest::num::u32::ANY, memory in proptest::num::u64::ANY) {
            let mut request = CreateInstance::new("web", InstanceSpec::container("busybox"));
            request.spec.cpus = Cpus::from_millis(cpus);
            request.spec.memory_mib = memory;
            let in_range = (1..=MAX_CPUS * 1000).contains(&cpus) && (MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory);
            match request.validate() {
                Ok(()) => proptest::prop_assert!(in_range),
                Err(Error::InvalidArgument { field, .. }) => {
                    proptest::prop_assert!(!in_range);
                    proptest::prop_assert!(field == "spec.cpus" || field == "spec.memory_mib");
                }
                Err(other) => proptest::prop_assert!(false, "unexpected {other}"),
            }
        }
    }

    #[test]
    fn a_name_that_reads_as_an_instance_id_is_refused() {
        let request = CreateInstance::new(
            "0d2f5b3e-4c1a-4e8b-9f6d-2a7c1e9b8d40",
            InstanceSpec::container("busybox"),
        );
        let err = request.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().starts_with("invalid name:"), "{err}");
        // Names that merely contain hex and dashes are fine.
        let request = CreateInstance::new("web-0d2f5b3e", InstanceSpec::container("busybox"));
        request.validate().expect("an ordinary name");
    }
}
