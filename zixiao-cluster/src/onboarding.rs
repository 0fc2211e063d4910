//! A joining node's smoke test: before its node takes any work, the agent
//! boots one small instance of each runtime the node offers, directly
//! through the runtime's local driver (not through the scheduler), waits
//! until it runs, deletes it and checks the runtime kept nothing of it. A
//! runtime without a configured smoke workload is only asked about an
//! instance it cannot have (it must answer "missing"), and says so: it
//! never reads as booted. What this finds is the node's [`Onboarding`],
//! which the agent registers and which sets the node's status.
//!
//! A container smoke image the runtime does not hold yet is pulled first,
//! through the driver's `Images` capability (the pull `zixiao image pull`
//! makes), within the smoke timeout: a node joins with nothing imported by
//! hand, and a registry it cannot pull from fails it at step `pull`. A
//! private registry is reached with `onboarding.registry`: a CA file, a
//! docker-style credentials file (0600, read when the agent starts), and
//! registries allowed over plain HTTP.
//!
//! The smoke instances are in no record of the node and in no store: an
//! agent killed in the middle leaves at most one runtime object, which the
//! next start's orphan sweep removes (no server knows its id).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use zixiao_core::driver::{
    Driver, PullOptions, PullProgress, RegistryCa, RegistryCredentials, RuntimeState,
};
use zixiao_core::model::{
    CheckOutcome, ImageRef, Onboarding, OnboardingState, RuntimeCheck, SmokeStep,
};
use zixiao_core::{
    CreateInstance, DriverError, Error, Instance, InstanceSpec, InstanceStatus, InstanceType,
    NodeAgent, Result,
};

/// How long a smoke instance may take to run when nobody says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the runtime is asked whether the smoke instance runs yet.
const POLL: Duration = Duration::from_millis(100);

/// `onboarding:` of `agent.yaml`: what the smoke test boots, as written.
/// [`SmokeTest::try_from`] checks it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnboardingSection {
    /// Mark the node ready without a smoke test (`--skip-smoke-test`):
    /// for labs. The node's onboarding says it was skipped.
    pub skip_smoke_test: bool,
    /// How long each smoke instance may take to run, in milliseconds
    /// (`--smoke-timeout`; default 60000).
    pub timeout_ms: Option<u64>,
    /// The container image to boot on containerd (`--smoke-image`): a
    /// name in the node's image store (`zixiao image import`/`pull`), or a
    /// registry reference, pulled when the runtime does not hold it.
    pub container_image: Option<String>,
    /// The container's command; default: the image's own. A command that
    /// exits 0 at once passes as well as one that keeps running.
    pub container_command: Vec<String>,
    /// The kernel (and initrd) a microVM boots.
    pub microvm: Option<BootSection>,
    /// The kernel (and initrd) a VM boots.
    pub vm: Option<BootSection>,
    /// How the container smoke image's registry is reached, when it is
    /// not anonymous HTTPS with the system roots.
    pub registry: Option<RegistrySection>,
}

/// `onboarding.registry:` the smoke image's registry, as `zixiao image
/// pull` reaches one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// CA certificates (PEM) trusted besides the system roots, for a
    /// registry whose certificate a private CA issued
    /// (`--smoke-registry-ca`).
    pub ca_file: Option<PathBuf>,
    /// A docker-style `config.json` holding the registry's credentials
    /// (`auths.<registry>.auth`, as `docker login` writes it), readable by
    /// its owner only (`--smoke-registry-auth`).
    pub auth_file: Option<PathBuf>,
    /// Registries (`host` or `host:port`) that may be reached over plain
    /// HTTP (`--smoke-insecure-registry`); loopback ones always may.
    pub insecure: Vec<String>,
}

/// A kernel to boot, with its initrd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSection {
    /// The kernel image on this node.
    pub kernel: PathBuf,
    /// Its initrd, if it needs one.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
}

/// A checked smoke test: what to boot of each runtime, and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct SmokeTest {
    skip: bool,
    timeout: Duration,
    /// The instance spec booted for each runtime that has one.
    workloads: std::collections::BTreeMap<InstanceType, InstanceSpec>,
    /// The container smoke image, parsed: what is pulled when the
    /// runtime lacks it.
    container_image: Option<ImageRef>,
    /// How that pull reaches the registry.
    pull: PullOptions,
}

impl Default for SmokeTest {
    /// No workload: every runtime is checked for reachability only.
    fn default() -> Self {
        SmokeTest {
            skip: false,
            timeout: DEFAULT_TIMEOUT,
            workloads: Default::default(),
            container_image: None,
            pull: PullOptions::default(),
        }
    }
}

impl TryFrom<&OnboardingSection> for SmokeTest {
    type Error = Error;

    /// Reads `onboarding.registry`'s files. Errors: `InvalidArgument`
    /// naming the `onboarding.` field.
    fn try_from(section: &OnboardingSection) -> Result<Self> {
        let timeout = match section.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(ms) if (1..=3_600_000).contains(&ms) => Duration::from_millis(ms),
            Some(ms) => {
                return Err(Error::invalid(
                    "onboarding.timeout_ms",
                    format!("{ms} is not between 1 ms and an hour"),
                ))
            }
        };
        let mut workloads = std::collections::BTreeMap::new();
        let mut container_image = None;
        if let Some(image) = &section.container_image {
            container_image = Some(
                ImageRef::try_from(image.as_str())
                    .map_err(|e| Error::invalid("onboarding.container_image", e.to_string()))?,
            );
            let spec = InstanceSpec::container(image.clone())
                .with_command(section.container_command.iter().cloned());
            workloads.insert(
                InstanceType::Container,
                checked(spec, "onboarding.container_image")?,
            );
        } else if !section.container_command.is_empty() {
            return Err(Error::invalid(
                "onboarding.container_command",
                "a command needs an image: set onboarding.container_image",
            ));
        }
        if let Some(boot) = &section.microvm {
            let mut spec = InstanceSpec::microvm(boot.kernel.clone());
            spec.initrd = boot.initrd.clone();
            workloads.insert(InstanceType::Microvm, checked(spec, "onboarding.microvm")?);
        }
        if let Some(boot) = &section.vm {
            let mut spec = InstanceSpec::empty(InstanceType::Vm, 1, 256);
            spec.kernel = Some(boot.kernel.clone());
            spec.initrd = boot.initrd.clone();
            workloads.insert(InstanceType::Vm, checked(spec, "onboarding.vm")?);
        }
        let pull = match (&section.registry, &container_image) {
            (None, _) => PullOptions::default(),
            (Some(registry), Some(image)) => registry.pull_options(image.registry())?,
            (Some(_), None) => {
                return Err(Error::invalid(
                    "onboarding.registry",
                    "it says how to pull the smoke image: set onboarding.container_image",
                ))
            }
        };
        Ok(SmokeTest {
            skip: section.skip_smoke_test,
            timeout,
            workloads,
            container_image,
            pull,
        })
    }
}

impl RegistrySection {
    /// The options of a pull from `registry` (`host[:port]`), its files
    /// read. Errors: `InvalidArgument` naming the `onboarding.registry.`
    /// field: an unreadable or malformed file, credentials readable by
    /// others or holding nothing for `registry`, an insecure registry that
    /// is not `host[:port]`.
    fn pull_options(&self, registry: &str) -> Result<PullOptions> {
        let registry_cas = match &self.ca_file {
            Some(path) => vec![RegistryCa::read(path)
                .map_err(|e| Error::invalid("onboarding.registry.ca_file", e.to_string()))?],
            None => Vec::new(),
        };
        let credentials = self
            .auth_file
            .as_deref()
            .map(|path| credentials_file(path, registry))
            .transpose()?;
        for host in &self.insecure {
            let well_formed = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !well_formed {
                return Err(Error::invalid(
                    "onboarding.registry.insecure",
                    format!("`{host}` is not a registry's host or host:port"),
                ));
            }
        }
        Ok(PullOptions {
            credentials,
            insecure_registries: self.insecure.clone(),
            registry_cas,
            platform: None,
            kind: None,
        })
    }
}

/// The credentials for `registry` in the docker-style config file at
/// `path`, which only its owner may read: a password file others can read
/// is refused rather than used.
fn credentials_file(path: &Path, registry: &str) -> Result<RegistryCredentials> {
    use std::os::unix::fs::PermissionsExt;
    let invalid = |reason: String| {
        Error::invalid(
            "onboarding.registry.auth_file",
            format!("{}: {reason}", path.display()),
        )
    };
    let mode = std::fs::metadata(path)
        .map_err(|e| invalid(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(invalid(format!(
            "it holds passwords and others may read it (mode {:o}): chmod 600 it",
            mode & 0o777
        )));
    }
    let config = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    zixiao_registry::docker_config::credentials(&config, registry)
        .map_err(|e| invalid(e.to_string()))?
        .ok_or_else(|| invalid(format!("it holds no credentials for `{registry}`")))
}

/// `spec` if it is a valid instance spec, else the reason under `field`.
fn checked(spec: InstanceSpec, field: &str) -> Result<InstanceSpec> {
    spec.validate()
        .map_err(|e| Error::invalid(field, e.to_string()))?;
    Ok(spec)
}

impl SmokeTest {
    /// Whether the operator chose to skip it.
    pub fn is_skipped(&self) -> bool {
        self.skip
    }

    /// The onboarding a node starts with: running, or already skipped.
    pub fn start(&self) -> Onboarding {
        let now = Utc::now();
        if self.skip {
            Onboarding {
                state: OnboardingState::Skipped,
                started_at: now,
                finished_at: Some(now),
                checks: Vec::new(),
            }
        } else {
            Onboarding {
                state: OnboardingState::Running,
                started_at: now,
                finished_at: None,
                checks: Vec::new(),
            }
        }
    }

    /// Runs the smoke test of every runtime in `offered`, in turn, on
    /// `agent`'s drivers, finishing `started`: passed when every runtime
    /// passed, failed (with each runtime's step and error) otherwise.
    pub async fn run(
        &self,
        node: &str,
        agent: &dyn NodeAgent,
        offered: &BTreeSet<InstanceType>,
        started: Onboarding,
    ) -> Onboarding {
        let mut checks = Vec::new();
        for &runtime in offered {
            let began = Instant::now();
            // Every call of a check is bounded together: a smoke image's
            // pull and the wait for the instance to run by the timeout
            // each, the driver's calls (create, start, stop, delete) by
            // twice as much again. A runtime that hangs fails its check
            // rather than keeping the node onboarding (and its clean-up
            // waiting) for ever; whatever it left is swept at the agent's
            // next start.
            let bound = self.timeout.saturating_mul(4);
            let done = match agent.driver(runtime) {
                // A driver that panics fails its runtime's check, not the
                // whole onboarding.
                Ok(driver) => {
                    let checked =
                        AssertUnwindSafe(self.check(node, &*driver, runtime)).catch_unwind();
                    match tokio::time::timeout(bound, checked).await {
                        Ok(Ok(done)) => done,
                        Ok(Err(_)) => Err((SmokeStep::Reach, "the driver panicked".to_owned())),
                        Err(_) => Err((
                            SmokeStep::Run,
                            format!(
                                "the smoke test did not finish within {} ms: a runtime call hung",
                                bound.as_millis()
                            ),
                        )),
                    }
                }
                Err(e) => Err((SmokeStep::Reach, e.to_string())),
            };
            let duration_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
            let check = match done {
                Ok((outcome, detail)) => RuntimeCheck {
                    runtime,
                    outcome,
                    duration_ms,
                    step: None,
                    // It may name a long kernel path: a registration
                    // refuses details beyond the limit.
                    detail: bounded(detail),
                },
                Err((step, error)) => RuntimeCheck {
                    runtime,
                    outcome: CheckOutcome::Failed,
                    duration_ms,
                    step: Some(step),
                    detail: bounded(error),
                },
            };
            tracing::info!(
                node = %node,
                runtime = %runtime,
                outcome = check.outcome.as_str(),
                duration_ms,
                "smoke test: {}",
                check.detail
            );
            checks.push(check);
        }
        let failed = checks.iter().any(|c| c.outcome == CheckOutcome::Failed);
        Onboarding {
            state: if failed {
                OnboardingState::Failed
            } else {
                OnboardingState::Passed
            },
            finished_at: Some(Utc::now()),
            checks,
            ..started
        }
    }

    /// One runtime's check: booted, or only reached when it has no
    /// workload. Errors: the failed step and why.
    async fn check(
        &self,
        node: &str,
        driver: &dyn Driver,
        runtime: InstanceType,
    ) -> std::result::Result<(CheckOutcome, String), (SmokeStep, String)> {
        let spec = self
            .workloads
            .get(&runtime)
            .cloned()
            .unwrap_or_else(|| InstanceSpec::empty(runtime, 1, 128));
        let instance = smoke_instance(node, runtime, spec);
        // A fresh id the runtime cannot know: anything but "missing" means
        // it does not answer truthfully.
        match driver.inspect(&instance).await {
            Ok(RuntimeState::Missing) => {}
            Ok(other) => {
                return Err((
                    SmokeStep::Reach,
                    format!("the runtime reports {other:?} for an instance it cannot hold"),
                ))
            }
            Err(e) => return Err((SmokeStep::Reach, chain(e))),
        }
        if !self.workloads.contains_key(&runtime) {
            return Ok((
                CheckOutcome::Reachable,
                format!(
                    "{} reachable; not booted: no smoke workload configured",
                    driver.name()
                ),
            ));
        }
        let pulled = match (runtime, &self.container_image) {
            (InstanceType::Container, Some(image)) => {
                let written = instance.spec.image.as_deref().unwrap_or_default();
                self.pull_if_missing(driver, image, written).await?
            }
            _ => None,
        };
        let booted = self.boot(driver, &instance).await;
        // Whatever happened, nothing may stay behind; a failed boot that
        // also left something says so.
        let removed = remove(driver, &instance).await;
        let ran_for = match (booted, removed) {
            (Ok(ran_for), Ok(())) => ran_for,
            (Ok(_), Err(failed)) => return Err(failed),
            (Err(failed), Ok(())) => return Err(failed),
            (Err((step, error)), Err((_, left))) => {
                return Err((step, format!("{error}; removing it then: {left}")))
            }
        };
        let booted = format!(
            "{} booted {} (running after {} ms), deleted it, and holds nothing of it",
            driver.name(),
            workload(&instance.spec),
            ran_for.as_millis()
        );
        Ok((
            CheckOutcome::Booted,
            match pulled {
                Some(pulled) => format!("{pulled}; {booted}"),
                None => booted,
            },
        ))
    }

    /// Pulls `image` through `driver`'s `Images` capability unless the
    /// runtime holds it already (as written or by its full name), within
    /// the smoke timeout. Returns what was pulled, for the check's detail,
    /// or `None` when nothing had to be. Errors: step `pull` with the
    /// registry's reason (the options carry no credentials, so none can
    /// show).
    async fn pull_if_missing(
        &self,
        driver: &dyn Driver,
        image: &ImageRef,
        written: &str,
    ) -> std::result::Result<Option<String>, (SmokeStep, String)> {
        // A runtime that keeps no images of ours to pull into: its create
        // says whether it has the image.
        let Ok(images) = driver.require_images() else {
            return Ok(None);
        };
        let held = images
            .list()
            .await
            .map_err(|e| (SmokeStep::Pull, chain(e)))?;
        let full = image.to_string();
        if held.iter().any(|i| i.name == full || i.name == written) {
            return Ok(None);
        }
        let began = Instant::now();
        // Only the manifest's totals are kept: they are known before the
        // first blob, and cost nothing to read.
        let resolved = std::sync::Mutex::new(None);
        let progress = |event: PullProgress| {
            if let PullProgress::Resolved { blobs, bytes, .. } = event {
                if let Ok(mut resolved) = resolved.lock() {
                    *resolved = Some((blobs, bytes));
                }
            }
        };
        let pull = images.pull(image, &self.pull, &progress);
        let info = match tokio::time::timeout(self.timeout, pull).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err((SmokeStep::Pull, chain(e))),
            Err(_) => {
                return Err((
                    SmokeStep::Pull,
                    format!(
                        "pulling `{full}` did not finish within {} ms",
                        self.timeout.as_millis()
                    ),
                ))
            }
        };
        let seconds = began.elapsed().as_secs_f64();
        let totals = resolved.lock().ok().and_then(|r| *r);
        Ok(Some(match totals {
            // The manifest's blobs are its config and its layers.
            Some((blobs, bytes)) => {
                let layers = blobs.saturating_sub(1);
                let plural = if layers == 1 { "" } else { "s" };
                format!(
                    "pulled `{}` ({bytes} bytes, {layers} layer{plural}) in {seconds:.1} s",
                    info.name
                )
            }
            None => format!(
                "pulled `{}` ({} bytes) in {seconds:.1} s",
                info.name, info.size_bytes
            ),
        }))
    }

    /// Creates and starts `instance`, and waits until it runs (or ran and
    /// exited 0). Returns how long that took from the create.
    async fn boot(
        &self,
        driver: &dyn Driver,
        instance: &Instance,
    ) -> std::result::Result<Duration, (SmokeStep, String)> {
        let began = Instant::now();
        driver
            .create(instance)
            .await
            .map_err(|e| (SmokeStep::Create, chain(e)))?;
        driver
            .start(instance)
            .await
            .map_err(|e| (SmokeStep::Start, chain(e)))?;
        let deadline = began + self.timeout;
        loop {
            match driver.inspect(instance).await {
                Ok(RuntimeState::Running) | Ok(RuntimeState::Exited { code: 0, .. }) => {
                    return Ok(began.elapsed())
                }
                Ok(RuntimeState::Exited { code, .. }) => {
                    return Err((SmokeStep::Run, format!("it exited with code {code}")))
                }
                Ok(_) => {}
                Err(e) => return Err((SmokeStep::Run, chain(e))),
            }
            if Instant::now() >= deadline {
                return Err((
                    SmokeStep::Run,
                    format!("it was not running after {} ms", self.timeout.as_millis()),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Stops and deletes `instance`, then checks the runtime says it is gone.
async fn remove(
    driver: &dyn Driver,
    instance: &Instance,
) -> std::result::Result<(), (SmokeStep, String)> {
    let deleted = async {
        driver.stop(instance, Duration::ZERO).await?;
        driver.delete(instance).await
    };
    deleted.await.map_err(|e| (SmokeStep::Delete, chain(e)))?;
    match driver.inspect(instance).await {
        Ok(RuntimeState::Missing) => Ok(()),
        Ok(other) => Err((
            SmokeStep::Gone,
            format!("deleted, the runtime still reports it {other:?}"),
        )),
        Err(e) => Err((SmokeStep::Gone, chain(e))),
    }
}

/// An instance as the controller hands one to a driver, never stored: a
/// fresh id, placed on `node`.
fn smoke_instance(node: &str, runtime: InstanceType, spec: InstanceSpec) -> Instance {
    let name = format!("smoke-test-{runtime}");
    let mut instance = Instance::new(
        uuid::Uuid::new_v4().to_string(),
        CreateInstance::new(name, spec),
        Utc::now(),
    );
    instance.node = Some(node.to_owned());
    instance.status = InstanceStatus::Scheduled;
    instance
}

/// What a smoke instance boots, for its check's detail.
fn workload(spec: &InstanceSpec) -> String {
    match (&spec.image, &spec.kernel) {
        (Some(image), _) => format!("image `{image}`"),
        (None, Some(kernel)) => format!("kernel {}", kernel.display()),
        (None, None) => "nothing".to_owned(),
    }
}

/// `error` with its causes, as one line.
fn chain(error: DriverError) -> String {
    Error::from(error).chain()
}

/// `text` cut to what a check may carry, on a character boundary.
fn bounded(mut text: String) -> String {
    let max = RuntimeCheck::MAX_DETAIL - '…'.len_utf8();
    if text.len() > RuntimeCheck::MAX_DETAIL {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(image: &str) -> OnboardingSection {
        OnboardingSection {
            container_image: Some(image.to_owned()),
            ..OnboardingSection::default()
        }
    }

    /// A self-signed certificate's PEM (the content is not parsed here,
    /// only its blocks).
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn with_registry(registry: RegistrySection) -> OnboardingSection {
        OnboardingSection {
            registry: Some(registry),
            ..section("reg.example.com:5000/busybox:1")
        }
    }

    fn refused(section: &OnboardingSection, field: &str, reason: &str) {
        let error = SmokeTest::try_from(section).expect_err(field);
        assert_eq!(error.kind(), zixiao_core::ErrorKind::InvalidArgument);
        let message = error.to_string();
        assert!(
            message.contains(field) && message.contains(reason),
            "{message}"
        );
    }

    #[test]
    fn a_private_registry_is_reached_with_its_ca_and_owner_only_credentials() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, CERT).expect("write");
        let auth = dir.path().join("config.json");
        // `me:s3cret`, for the smoke image's registry.
        std::fs::write(
            &auth,
            br#"{"auths": {"reg.example.com:5000": {"auth": "bWU6czNjcmV0"}}}"#,
        )
        .expect("write");
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let registry = RegistrySection {
            ca_file: Some(ca.clone()),
            auth_file: Some(auth.clone()),
            insecure: vec!["lab:5000".to_owned()],
        };
        let smoke = SmokeTest::try_from(&with_registry(registry.clone())).expect("valid");
        let credentials = smoke.pull.credentials.as_ref().expect("credentials");
        assert_eq!(
            (credentials.username.as_str(), credentials.password.as_str()),
            ("me", "s3cret")
        );
        assert_eq!(smoke.pull.registry_cas[0].as_pem(), CERT);
        assert_eq!(smoke.pull.insecure_registries, ["lab:5000"]);
        assert!(
            !format!("{smoke:?}").contains("s3cret"),
            "the password is never printed"
        );

        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        refused(
            &with_registry(registry.clone()),
            "onboarding.registry.auth_file",
            "chmod 600",
        );
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let other = OnboardingSection {
            registry: Some(registry.clone()),
            ..section("other.example.com/busybox:1")
        };
        refused(
            &other,
            "onboarding.registry.auth_file",
            "no credentials for `other.example.com`",
        );
        let missing = RegistrySection {
            auth_file: Some(dir.path().join("none.json")),
            ..registry.clone()
        };
        refused(
            &with_registry(missing),
            "onboarding.registry.auth_file",
            "none.json",
        );
        std::fs::write(
            &ca,
            "-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        refused(
            &with_registry(registry.clone()),
            "onboarding.registry.ca_file",
            "PRIVATE KEY",
        );
        std::fs::write(&ca, CERT).expect("write");
        let bad_host = RegistrySection {
            insecure: vec!["http://lab:5000".to_owned()],
            ..registry.clone()
        };
        refused(
            &with_registry(bad_host),
            "onboarding.registry.insecure",
            "http://lab:5000",
        );
        let no_image = OnboardingSection {
            registry: Some(registry),
            ..OnboardingSection::default()
        };
        refused(
            &no_image,
            "onboarding.registry",
            "onboarding.container_image",
        );
    }

    #[test]
    fn a_smoke_image_is_kept_as_the_reference_a_pull_would_fetch() {
        let smoke = SmokeTest::try_from(&section("127.0.0.1:25000/busybox:1")).expect("valid");
        let image = smoke.container_image.expect("an image");
        assert_eq!(image.to_string(), "127.0.0.1:25000/busybox:1");
        assert!(image.is_loopback());
        // A bare name is the full name a pull stores it under.
        let smoke = SmokeTest::try_from(&section("busybox")).expect("valid");
        assert_eq!(
            smoke.container_image.expect("an image").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(SmokeTest::default().container_image, None);
    }

    #[test]
    fn a_smoke_image_that_is_no_reference_is_refused_naming_the_field() {
        for bad in ["Not An Image", "host:99999/app", ""] {
            let error = SmokeTest::try_from(&section(bad)).expect_err(bad);
            assert_eq!(error.kind(), zixiao_core::ErrorKind::InvalidArgument);
            assert!(
                error.to_string().contains("onboarding.container_image"),
                "{bad}: {error}"
            );
        }
    }
}
