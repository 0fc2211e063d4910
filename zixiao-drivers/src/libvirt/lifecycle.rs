//! Lifecycle: define (with the overlay disk), start, graceful shutdown then
//! destroy, reboot and reset, suspend and resume, undefine, and the state
//! read back from libvirt. Every call is idempotent and looks the domain up
//! by its UUID (the instance id) or else by name, checking the instance id
//! in its metadata, so a domain that is not this instance's is never
//! touched. A domain defines before it starts, so a create or start cut
//! off is found again by the next call; when another instance's domain
//! (an orphan of a deleted instance) holds the name, the new domain is
//! named `<prefix><name>-<id>` instead of being blocked.
//!
//! Published ports (zixiao-net's `ports`, shared with the other drivers
//! through `crate::net`) are checked free at create, forwarded to the
//! guest's IPAM address at each start, and removed at stop and delete; an
//! orphan's table goes with the network reconcile, which removes every
//! ports table the store no longer names.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virt::connect::Connect;
use virt::domain::{Domain, DomainPausedReason, DomainState, DomainStateReason};
use virt::enumutil::Enum;
use virt::error::ErrorNumber;
use virt::sys;
use zixiao_core::model::ImageKind;
use zixiao_core::{DriverError, Instance, InstanceStats, InstanceType, RuntimeState};

use super::disks;
use super::network::Entries;
use super::resize::{self, DomainSize};
use super::xml::{self, Boot, Disk, DomainDefinition, METADATA_NAMESPACE};
use super::{error, network, stats, LibvirtDriver, DEFAULT_CMDLINE, KEEP_DISK_LABEL};
use crate::cloud_init::{self, Addressing};
use crate::instance_id::InstanceId;

/// How often a graceful shutdown is checked on.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// How often the power button is pressed again during a graceful shutdown.
const SHUTDOWN_REPEAT: Duration = Duration::from_secs(2);
/// How long a start waits for libvirt to finish starting a domain that
/// an earlier, cut-off call began to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The driver, as published-port errors name it.
pub(crate) const DRIVER: &str = "vm driver";

/// A domain this driver defined, as found on the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedDomain {
    /// The libvirt domain name.
    pub domain: String,
    /// The Zixiao instance id from its metadata.
    pub instance_id: String,
    /// The Zixiao instance name from its metadata.
    pub instance_name: String,
    /// Its state.
    pub state: RuntimeState,
}

/// What the daemon holds of an instance.
enum Lookup {
    /// No domain of the instance, and no domain of its name.
    Missing,
    /// This instance's domain.
    Ours(Domain),
    /// No domain of the instance, but its name is someone else's (another
    /// instance id, or none): the owner.
    Foreign(String),
}

/// Finds instance `instance_id`'s domain: by UUID (the instance id, as
/// domains are defined), else by `name` (domains defined before their UUID
/// was the instance id), checking the prefix and the metadata's id either way.
fn lookup(
    conn: &Connect,
    prefix: &str,
    name: &str,
    instance_id: &str,
) -> Result<Lookup, DriverError> {
    if InstanceId::try_from(instance_id).is_ok() {
        match conn.lookup_domain_by_uuid_string(instance_id) {
            Ok(domain) if is_instance_domain(&domain, prefix, instance_id) => {
                return Ok(Lookup::Ours(domain))
            }
            Ok(_) => {}
            Err(e) if error::is(&e, ErrorNumber::NoDomain) => {}
            Err(e) => return Err(error::failed(format!("look up domain {instance_id}"), e)),
        }
    }
    let domain = match conn.lookup_domain_by_name(name) {
        Ok(domain) => domain,
        Err(e) if error::is(&e, ErrorNumber::NoDomain) => return Ok(Lookup::Missing),
        Err(e) => return Err(error::failed(format!("look up domain {name}"), e)),
    };
    match instance_id_of(&domain) {
        Some(id) if id == instance_id => Ok(Lookup::Ours(domain)),
        Some(id) => Ok(Lookup::Foreign(format!("instance id {id}"))),
        None => Ok(Lookup::Foreign("no Zixiao metadata".to_owned())),
    }
}

/// The instance id and name in a domain's Zixiao metadata.
fn metadata_of(domain: &Domain) -> Option<(String, String)> {
    let element = domain
        .metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(METADATA_NAMESPACE),
            0,
        )
        .ok()?;
    let id = xml::texts(&element, "id").into_iter().next()?;
    let name = xml::texts(&element, "name")
        .into_iter()
        .next()
        .unwrap_or_default();
    Some((id, name))
}

fn instance_id_of(domain: &Domain) -> Option<String> {
    metadata_of(domain).map(|(id, _)| id)
}

/// Whether `domain` is one of this driver's (its name has the driver's
/// prefix) and carries instance `instance_id` in its metadata.
fn is_instance_domain(domain: &Domain, prefix: &str, instance_id: &str) -> bool {
    domain.name().is_ok_and(|n| n.starts_with(prefix))
        && instance_id_of(domain).as_deref() == Some(instance_id)
}

/// Destroys `domain` (named `name`) if it runs, and undefines it with its
/// snapshots' metadata. A domain gone meanwhile is fine.
fn destroy_and_undefine(domain: &Domain, name: &str) -> Result<(), DriverError> {
    if is_active(domain, name)? {
        match domain.destroy() {
            Err(e) if !error::is(&e, ErrorNumber::OperationInvalid) => {
                return Err(error::failed(format!("destroy domain {name}"), e));
            }
            _ => {}
        }
    }
    // Internal snapshots live in the overlay, removed with the instance's
    // files; their metadata goes with the domain. (No NVRAM: domains boot BIOS.)
    let flags = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
    match domain.undefine_flags(flags) {
        Err(e) if !error::is(&e, ErrorNumber::NoDomain) => {
            Err(error::failed(format!("undefine domain {name}"), e))
        }
        _ => Ok(()),
    }
}

/// Whether a paused domain's reason is that libvirt is still starting it.
fn is_starting_up(reason: &Enum<DomainStateReason, i32>) -> bool {
    matches!(
        reason,
        Enum::Known(DomainStateReason::Paused(Enum::Known(
            DomainPausedReason::StartingUp
        )))
    )
}

fn is_active(domain: &Domain, name: &str) -> Result<bool, DriverError> {
    domain
        .is_active()
        .map_err(|e| error::failed(format!("read state of domain {name}"), e))
}

/// The state libvirt reports of a domain, in the runtime-neutral shape.
pub(crate) fn read_state(domain: &Domain, name: &str) -> Result<RuntimeState, DriverError> {
    // `Domain::state` swallows errors; `info` reports them (a vanished domain).
    domain
        .info()
        .map_err(|e| error::failed(format!("read state of domain {name}"), e))?;
    let (state, reason) = domain
        .state()
        .map_err(|e| error::failed(format!("read state of domain {name}"), e))?;
    Ok(runtime_state(state, reason))
}

/// Maps libvirt's state and reason: a domain defined but never run (or
/// reset to a snapshot) is `Created`; one that shut itself down exited
/// with 0, one destroyed with 137 (as if killed), one that crashed or
/// failed with 1.
pub(crate) fn runtime_state(
    state: Enum<DomainState, sys::virDomainState>,
    reason: Enum<DomainStateReason, i32>,
) -> RuntimeState {
    let exited = |code| RuntimeState::Exited {
        code,
        oom_killed: false,
        at: None,
    };
    match state {
        Enum::Known(DomainState::Running | DomainState::Blocked | DomainState::Shutdown) => {
            RuntimeState::Running
        }
        Enum::Known(DomainState::Paused | DomainState::PMSuspended) => RuntimeState::Paused,
        Enum::Known(DomainState::Crashed) => exited(1),
        Enum::Known(DomainState::Shutoff) => match shutoff_reason(reason) {
            Some(sys::VIR_DOMAIN_SHUTOFF_SHUTDOWN) => exited(0),
            Some(sys::VIR_DOMAIN_SHUTOFF_DESTROYED) => exited(137),
            Some(sys::VIR_DOMAIN_SHUTOFF_CRASHED | sys::VIR_DOMAIN_SHUTOFF_FAILED) => exited(1),
            Some(sys::VIR_DOMAIN_SHUTOFF_MIGRATED | sys::VIR_DOMAIN_SHUTOFF_DAEMON) => exited(1),
            _ => RuntimeState::Created,
        },
        Enum::Known(DomainState::NoState) | Enum::Unknown(_) => RuntimeState::Created,
    }
}

fn shutoff_reason(reason: Enum<DomainStateReason, i32>) -> Option<sys::virDomainShutoffReason> {
    match reason {
        Enum::Known(DomainStateReason::Shutoff(Enum::Known(r))) => Some(r as u32),
        Enum::Known(DomainStateReason::Shutoff(Enum::Unknown(r))) => Some(r),
        _ => None,
    }
}

/// What `create` will make, decided before anything is touched.
pub(crate) struct Plan {
    pub(crate) definition: DomainDefinition,
    pub(crate) overlay: Option<OverlayPlan>,
    /// Decided once, so the command line and the seed agree.
    pub(crate) addressing: Addressing,
}

/// The overlay to make.
#[derive(Clone)]
pub(crate) struct OverlayPlan {
    path: PathBuf,
    /// The image it is backed by, if any.
    base: Option<(PathBuf, disks::ImageInfo)>,
    /// Its size in bytes.
    size: u64,
}

impl OverlayPlan {
    /// Where the overlay goes.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The image it is backed by, and what that is, if any.
    pub(crate) fn base(&self) -> Option<(&Path, &disks::ImageInfo)> {
        self.base
            .as_ref()
            .map(|(path, info)| (path.as_path(), info))
    }
}

impl LibvirtDriver {
    /// How `instance`'s guest gets its IPv4 addresses: by DHCP when it has
    /// cloud-init data (which tells it to ask) and the node's responder
    /// serves all its networks; else statically (kernel `ip=` and seed).
    fn addressing(&self, instance: &Instance) -> Addressing {
        let serves = self
            .network
            .as_ref()
            .is_some_and(|host| host.dhcp_serves(&instance.attachments));
        if instance.spec.cloud_init.is_some() && serves {
            Addressing::Dhcp
        } else {
            Addressing::Static
        }
    }

    /// Checks the spec against the files and the host, and decides the
    /// domain definition. Touches nothing.
    pub(crate) fn plan(&self, instance: &Instance) -> Result<Plan, DriverError> {
        let spec = &instance.spec;
        if spec.instance_type != InstanceType::Vm {
            return Err(error::invalid(
                "spec.type",
                format!(
                    "the vm driver runs vm instances, not {}",
                    spec.instance_type
                ),
            ));
        }
        let size = DomainSize::of(spec)?;
        // The maximums too: a live resize may give the guest all of them.
        for (field, asked) in [("spec.cpus", size.vcpus), ("spec.max_cpus", size.max_vcpus)] {
            if asked > self.host.cpus {
                return Err(DriverError::ResourceExhausted(format!(
                    "{field}: {asked} vCPUs asked, the host offers {}",
                    self.host.cpus
                )));
            }
        }
        for (field, asked) in [
            ("spec.memory_mib", size.memory_mib),
            ("spec.max_memory_mib", size.max_memory_mib),
        ] {
            if asked > self.host.memory_mib {
                return Err(DriverError::ResourceExhausted(format!(
                    "{field}: {asked} MiB asked, the host has {} MiB",
                    self.host.memory_mib
                )));
            }
        }
        for (field, value) in [
            ("spec.image", spec.image.as_deref().unwrap_or("")),
            ("spec.cmdline", spec.cmdline.as_deref().unwrap_or("")),
            ("name", instance.name.as_str()),
            ("id", instance.id.as_str()),
        ] {
            if value.contains('\0') {
                return Err(error::invalid(field, "contains a NUL byte"));
            }
        }
        // Image names become the node store's files; the overlay below
        // keeps a disk image from ever being written.
        let image = spec
            .image
            .as_deref()
            .map(|image| {
                self.images
                    .resolve("spec.image", ImageKind::Disk, Path::new(image))
            })
            .transpose()?;
        let kernel = spec
            .kernel
            .as_deref()
            .map(|kernel| {
                self.images
                    .resolve("spec.kernel", ImageKind::Kernel, kernel)
            })
            .transpose()?;
        let initrd = spec
            .initrd
            .as_deref()
            .map(|initrd| {
                self.images
                    .resolve("spec.initrd", ImageKind::Initrd, initrd)
            })
            .transpose()?;
        let interfaces = network::interfaces(&instance.attachments)?;
        let addressing = self.addressing(instance);
        let boot = match &kernel {
            Some(kernel) => {
                require_file("spec.kernel", "kernel", kernel)?;
                if let Some(initrd) = &initrd {
                    require_file("spec.initrd", "initrd", initrd)?;
                }
                let cmdline = spec.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE);
                Boot::Kernel {
                    kernel: kernel.clone(),
                    initrd,
                    cmdline: match addressing {
                        // The guest's init configures each NIC from its `ip=`.
                        Addressing::Static => {
                            cmdline.to_owned() + &network::kernel_args(&instance.attachments)
                        }
                        // Its DHCP client does: an `ip=` would configure
                        // the NIC statically before cloud-init runs.
                        Addressing::Dhcp => cmdline.to_owned(),
                    },
                }
            }
            None => {
                if spec.initrd.is_some() || spec.cmdline.is_some() {
                    return Err(error::invalid(
                        "spec.kernel",
                        "an initrd or a cmdline needs a kernel to boot",
                    ));
                }
                if image.is_none() {
                    return Err(error::invalid(
                        "spec.image",
                        "a vm needs a disk image to boot from, or a kernel",
                    ));
                }
                Boot::Disk
            }
        };
        let asked = size.disk_bytes;
        let dir = self.instance_dir(instance)?;
        let overlay = match &image {
            Some(image) => {
                let info = disks::inspect_base(image)?;
                if asked != 0 && asked < info.virtual_size {
                    return Err(error::invalid(
                        "spec.disk_gib",
                        format!(
                            "{} GiB is smaller than the image {} ({} bytes)",
                            spec.disk_gib,
                            image.display(),
                            info.virtual_size
                        ),
                    ));
                }
                Some(OverlayPlan {
                    path: disks::overlay_path(&dir),
                    size: asked.max(info.virtual_size),
                    base: Some((image.clone(), info)),
                })
            }
            None if asked > 0 => Some(OverlayPlan {
                path: disks::overlay_path(&dir),
                base: None,
                size: asked,
            }),
            None => None,
        };
        let disk = overlay.as_ref().map(|overlay| Disk {
            path: overlay.path.clone(),
            format: "qcow2".to_owned(),
        });
        Ok(Plan {
            addressing,
            definition: DomainDefinition {
                name: self.domain_name(instance),
                domain_type: self.domain_type,
                instance_id: instance.id.clone(),
                instance_name: instance.name.clone(),
                vcpus: size.vcpus,
                max_vcpus: size.max_vcpus,
                memory_mib: size.memory_mib,
                max_memory_mib: size.max_memory_mib,
                boot,
                disk,
                seed: cloud_init::seed_path(&dir, instance),
                interfaces,
                console_log: Some(self.console_log_path(instance)?),
            },
            overlay,
        })
    }

    /// The domain XML `create` would define for `instance`. Errors as `create`.
    pub fn domain_xml(&self, instance: &Instance) -> Result<String, DriverError> {
        Ok(self.plan(instance)?.definition.to_xml())
    }

    pub(crate) async fn create_domain(&self, instance: &Instance) -> Result<(), DriverError> {
        // The id names the instance's directory and its domain's UUID: one
        // that is no UUID is refused before anything is looked up or made.
        let id = InstanceId::try_from(instance.id.as_str())?;
        // Checked free before anything is written; forwarded at each start.
        crate::net::check_ports(self.network.as_ref(), instance, DRIVER).await?;
        let preferred = self.domain_name(instance);
        let alt = format!("{preferred}-{id}");
        let prefix = self.options.name_prefix.clone();
        let id = instance.id.clone();
        let found = {
            let preferred = preferred.clone();
            self.conn
                .run("look up domain", move |conn| {
                    Ok(match lookup(conn, &prefix, &preferred, &id)? {
                        Lookup::Ours(_) => None,
                        Lookup::Missing => Some(Ok(preferred)),
                        // Another instance's domain (an orphan of a deleted
                        // instance, a stale copy of one that moved) keeps
                        // its name, and the orphan sweep decides its fate;
                        // this instance's is named `<name>-<id>` and found
                        // by its UUID.
                        Lookup::Foreign(owner) => match conn.lookup_domain_by_name(&alt) {
                            Err(e) if error::is(&e, ErrorNumber::NoDomain) => Some(Ok(alt)),
                            Err(e) => {
                                return Err(error::failed(format!("look up domain {alt}"), e))
                            }
                            Ok(_) => Some(Err(owner)),
                        },
                    })
                })
                .await?
        };
        let name = match found {
            None => return Ok(()),
            Some(Err(owner)) => return Err(name_clash(&preferred, &owner)),
            Some(Ok(name)) => name,
        };
        let mut plan = self.plan(instance)?;
        plan.definition.name = name.clone();
        if let Some(host) = &self.network {
            let mtus = network::bridge_mtus(host, &instance.attachments).await?;
            for (interface, mtu) in plan.definition.interfaces.iter_mut().zip(mtus) {
                interface.mtu = mtu;
            }
        }
        let dir = self.instance_dir(instance)?;
        let made_dir = !dir.exists();
        let overlay_path = plan.overlay.as_ref().map(|o| o.path.clone());
        // On failure, nothing is left: the directory if this call made it,
        // else the overlay it made in it.
        let cleanup = move |dir: &Path| {
            if made_dir {
                let _ = std::fs::remove_dir_all(dir);
            } else if let Some(overlay) = &overlay_path {
                let _ = std::fs::remove_file(overlay);
            }
        };
        if let (Some(overlay), Some(origin)) = (plan.overlay.clone(), &instance.clone_of) {
            // A clone's disk comes from its source's (see `clones`).
            create_dir(&dir)?;
            if let Err(e) = self.clone_disk(origin, overlay.path, overlay.size).await {
                cleanup(&dir);
                return Err(e);
            }
        } else if let Some(overlay) = plan.overlay.clone() {
            // A cold migration's copy, else a fresh disk.
            let made = match self.take_imported_disk(instance, &overlay).await {
                Ok(true) => Ok(()),
                Ok(false) => fresh_overlay(dir.clone(), overlay, &name).await,
                Err(e) => Err(e),
            };
            if let Err(e) = made {
                cleanup(&dir);
                return Err(e);
            }
        } else {
            create_dir(&dir)?;
        }
        if let Err(e) = cloud_init::write_seed(&dir, instance, plan.addressing).await {
            cleanup(&dir);
            return Err(e);
        }
        if let Some(host) = &self.network {
            if let Err(e) = network::dhcp_entries(host, &instance.attachments, Entries::Add) {
                cleanup(&dir);
                return Err(e);
            }
        }
        let xml = plan.definition.to_xml();
        let defined = {
            let name = name.clone();
            self.conn
                .run("define domain", move |conn| {
                    conn.define_domain_xml_flags(&xml, sys::VIR_DOMAIN_DEFINE_VALIDATE)
                        .map(drop)
                        .map_err(|e| {
                            if error::is(&e, ErrorNumber::DomExist) {
                                name_clash(&name, "another domain")
                            } else {
                                error::failed(format!("define domain {name}"), e)
                            }
                        })
                })
                .await
        };
        if defined.is_err() {
            cleanup(&dir);
            if let Some(host) = &self.network {
                let _ = host.unplug_dhcp(&instance.attachments);
            }
        }
        defined
    }

    /// Starts the domain, or leaves it running. A domain that is not
    /// running boots with the instance's size: an update of its CPUs,
    /// memory or disk (stored while it was stopped, or with a restart) is
    /// written into its definition and overlay first. A domain that libvirt is
    /// still starting (for a call cut off meanwhile: libvirtd finishes the
    /// job of a client that is gone) is waited for; one left paused (a
    /// snapshot or a start cut off) is resumed, since a start is only asked
    /// of an instance that should run.
    pub(crate) async fn start_domain(&self, instance: &Instance) -> Result<(), DriverError> {
        let deadline = Instant::now() + START_TIMEOUT;
        // Before the guest runs (a running one keeps its rules, replaced
        // with the same): refused here when a host port was taken since the
        // create. The DNAT leads to the guest's IPAM address, which its
        // `ip=` or our DHCP responder gives it.
        crate::net::publish_ports(self.network.as_ref(), instance, DRIVER).await?;
        loop {
            let attachments = instance.attachments.clone();
            let size = DomainSize::of(&instance.spec)?;
            let overlay = self.overlay_path(instance)?;
            let starting = self
                .with_domain(instance, "start", move |domain, name| {
                    if !is_active(domain, name)? {
                        resize::grow_overlay(&overlay, size.disk_bytes)?;
                        resize::define_size(domain, name, &size)?;
                        domain.create().map_err(|e| {
                            network::missing_bridge(&e, &attachments)
                                .unwrap_or_else(|| error::failed(format!("start domain {name}"), e))
                        })?;
                        return Ok(false);
                    }
                    match domain.state() {
                        Ok((Enum::Known(DomainState::Paused), reason)) => {
                            if is_starting_up(&reason) {
                                return Ok(true);
                            }
                            domain
                                .resume()
                                .map_err(|e| error::failed(format!("resume domain {name}"), e))?;
                            Ok(false)
                        }
                        _ => Ok(false),
                    }
                })
                .await?;
            if !starting {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Runtime {
                    operation: format!("start domain of instance {}", instance.name),
                    source: format!(
                        "libvirt was still starting it after {} s",
                        START_TIMEOUT.as_secs()
                    )
                    .into(),
                });
            }
            tokio::time::sleep(SHUTDOWN_POLL).await;
        }
    }

    pub(crate) async fn stop_domain(
        &self,
        instance: &Instance,
        grace: Duration,
    ) -> Result<(), DriverError> {
        self.shut_down_domain(instance, grace).await?;
        // A stopped instance holds no rule on its node.
        crate::net::unpublish_instance(self.network.as_ref(), instance).await
    }

    /// Presses the power button, then destroys the domain if it still runs
    /// after `grace`.
    async fn shut_down_domain(
        &self,
        instance: &Instance,
        grace: Duration,
    ) -> Result<(), DriverError> {
        let asked = self
            .with_domain_if_any(instance, "shut down", |domain, name| {
                if !is_active(domain, name)? {
                    return Ok(false);
                }
                let paused = matches!(
                    domain.state().map(|(s, _)| s),
                    Ok(Enum::Known(DomainState::Paused))
                );
                // A paused guest cannot react to the power button.
                Ok(!paused && domain.shutdown().is_ok())
            })
            .await?;
        match asked {
            None | Some(false) => {}
            Some(true) => {
                let started = Instant::now();
                let mut pressed = started;
                while started.elapsed() < grace {
                    if !self.is_running(instance).await? {
                        return Ok(());
                    }
                    // A guest still booting may miss a press (its ACPI
                    // daemon not listening yet): press again now and then.
                    if pressed.elapsed() >= SHUTDOWN_REPEAT {
                        pressed = Instant::now();
                        self.with_domain_if_any(instance, "shut down", |domain, _| {
                            Ok(domain.shutdown().is_ok())
                        })
                        .await?;
                    }
                    tokio::time::sleep(SHUTDOWN_POLL.min(grace)).await;
                }
            }
        }
        self.with_domain_if_any(instance, "destroy", |domain, name| {
            if !is_active(domain, name)? {
                return Ok(());
            }
            match domain.destroy() {
                // It stopped in between.
                Err(e) if error::is(&e, ErrorNumber::OperationInvalid) => Ok(()),
                other => other.map_err(|e| error::failed(format!("destroy domain {name}"), e)),
            }
        })
        .await
        .map(drop)
    }

    async fn is_running(&self, instance: &Instance) -> Result<bool, DriverError> {
        Ok(self
            .with_domain_if_any(instance, "read state", is_active)
            .await?
            .unwrap_or(false))
    }

    pub(crate) async fn delete_domain(&self, instance: &Instance) -> Result<(), DriverError> {
        // An id that is no UUID is refused before anything goes.
        let dir = self.instance_dir(instance)?;
        self.with_domain_if_any(instance, "delete", destroy_and_undefine)
            .await?;
        crate::net::unpublish_ports(self.network.as_ref(), &instance.id, &instance.attachments)
            .await?;
        if let Some(host) = &self.network {
            network::dhcp_entries(host, &instance.attachments, Entries::Remove)?;
        }
        let keep_disk = instance
            .labels
            .get(KEEP_DISK_LABEL)
            .is_some_and(|v| v == "true");
        let console_log = dir.join("console.log");
        tokio::task::spawn_blocking(move || {
            if keep_disk {
                disks::remove_file(&console_log)
            } else {
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(error::io(format!("remove {}", dir.display()), e))
                    }
                    _ => Ok(()),
                }
            }
        })
        .await
        .map_err(|e| DriverError::Runtime {
            operation: "remove the instance's files".to_owned(),
            source: Box::new(e),
        })?
    }

    pub(crate) async fn inspect_domain(
        &self,
        instance: &Instance,
    ) -> Result<RuntimeState, DriverError> {
        let state = self
            .with_domain_if_any(instance, "inspect", |domain, name| {
                Ok((read_state(domain, name)?, name.to_owned()))
            })
            .await?;
        Ok(match state {
            None => RuntimeState::Missing,
            Some((
                RuntimeState::Exited {
                    code, oom_killed, ..
                },
                name,
            )) => RuntimeState::Exited {
                code,
                oom_killed,
                at: self.events.stopped_at(&name),
            },
            Some((state, _)) => state,
        })
    }

    /// Asks the guest to reboot (ACPI), as `virsh reboot` does. Errors:
    /// `NotFound` (no such domain), `FailedPrecondition` (not running),
    /// `Unavailable`, `Internal`.
    pub async fn reboot(&self, instance: &Instance) -> Result<(), DriverError> {
        self.with_domain(instance, "reboot", |domain, name| {
            require_active(domain, name)?;
            domain
                .reboot(0)
                .map_err(|e| error::failed(format!("reboot domain {name}"), e))
        })
        .await
    }

    /// Resets the domain at once, like a hardware reset button. Errors as
    /// [`LibvirtDriver::reboot`].
    pub async fn reset(&self, instance: &Instance) -> Result<(), DriverError> {
        self.with_domain(instance, "reset", |domain, name| {
            require_active(domain, name)?;
            domain
                .reset()
                .map(drop)
                .map_err(|e| error::failed(format!("reset domain {name}"), e))
        })
        .await
    }

    /// Pauses the running domain of instance `id` (found by its UUID) so
    /// its disk can be copied at one moment; whether it was paused by
    /// this call (one paused already, or not running, is left so).
    /// Errors: `Unavailable`, `Internal`.
    pub(crate) async fn pause_for_copy(&self, id: &str) -> Result<bool, DriverError> {
        self.with_domain_of_id(id, "pause for a clone", |domain, name| {
            if read_state(domain, name)? != RuntimeState::Running {
                return Ok(false);
            }
            domain
                .suspend()
                .map(|_| true)
                .map_err(|e| error::failed(format!("suspend domain {name}"), e))
        })
        .await
    }

    /// Resumes the domain of instance `id` that [`Self::pause_for_copy`]
    /// paused. Errors: `Unavailable`, `Internal`.
    pub(crate) async fn resume_after_copy(&self, id: &str) -> Result<(), DriverError> {
        self.with_domain_of_id(id, "resume after a clone", |domain, name| {
            if read_state(domain, name)? != RuntimeState::Paused {
                return Ok(());
            }
            domain
                .resume()
                .map(drop)
                .map_err(|e| error::failed(format!("resume domain {name}"), e))
        })
        .await
    }

    /// Runs `call` on the domain of instance `id`, found by its UUID (the
    /// instance id) with its metadata checked; no domain is `Ok` of the
    /// call not being made (`T::default()`).
    async fn with_domain_of_id<T, F>(
        &self,
        id: &str,
        operation: &str,
        call: F,
    ) -> Result<T, DriverError>
    where
        T: Default + Send + 'static,
        F: FnOnce(&Domain, &str) -> Result<T, DriverError> + Send + 'static,
    {
        let prefix = self.options.name_prefix.clone();
        let id = id.to_owned();
        self.conn
            .run(operation, move |conn| {
                let domain = match conn.lookup_domain_by_uuid_string(&id) {
                    Ok(domain) if is_instance_domain(&domain, &prefix, &id) => domain,
                    Ok(_) => return Ok(T::default()),
                    Err(e) if error::is(&e, ErrorNumber::NoDomain) => return Ok(T::default()),
                    Err(e) => return Err(error::failed(format!("look up domain {id}"), e)),
                };
                let name = domain.name().unwrap_or_else(|_| id.clone());
                call(&domain, &name)
            })
            .await
    }

    pub(crate) async fn suspend(&self, instance: &Instance) -> Result<(), DriverError> {
        self.with_domain(instance, "suspend", |domain, name| {
            match read_state(domain, name)? {
                RuntimeState::Paused => Ok(()),
                RuntimeState::Running => domain
                    .suspend()
                    .map(drop)
                    .map_err(|e| error::failed(format!("suspend domain {name}"), e)),
                _ => Err(DriverError::FailedPrecondition(format!(
                    "domain {name} is not running"
                ))),
            }
        })
        .await
    }

    pub(crate) async fn resume_domain(&self, instance: &Instance) -> Result<(), DriverError> {
        self.with_domain(instance, "resume", |domain, name| {
            match read_state(domain, name)? {
                RuntimeState::Running => Ok(()),
                RuntimeState::Paused => domain
                    .resume()
                    .map(drop)
                    .map_err(|e| error::failed(format!("resume domain {name}"), e)),
                _ => Err(DriverError::FailedPrecondition(format!(
                    "domain {name} is not paused"
                ))),
            }
        })
        .await
    }

    pub(crate) async fn domain_stats(
        &self,
        instance: &Instance,
    ) -> Result<InstanceStats, DriverError> {
        self.with_domain(instance, "read stats", |domain, name| {
            require_active(domain, name)?;
            let raw = stats::domain_stats(domain)
                .map_err(|e| error::failed(format!("read stats of domain {name}"), e))?;
            Ok(stats::to_instance_stats(&raw))
        })
        .await
    }

    /// Every domain with the driver's name prefix and Zixiao metadata, with
    /// its real state: what a restarted controller or node agent finds.
    /// Errors: `Unavailable`, `Internal`.
    pub async fn managed_domains(&self) -> Result<Vec<ManagedDomain>, DriverError> {
        let prefix = self.options.name_prefix.clone();
        self.conn
            .run("list domains", move |conn| {
                let domains = conn
                    .list_all_domains(0)
                    .map_err(|e| error::failed("list domains", e))?;
                let mut found = Vec::new();
                for domain in domains {
                    let Ok(name) = domain.name() else { continue };
                    if !name.starts_with(&prefix) {
                        continue;
                    }
                    let Some((instance_id, instance_name)) = metadata_of(&domain) else {
                        continue;
                    };
                    // A domain undefined in between is skipped.
                    let Ok(state) = read_state(&domain, &name) else {
                        continue;
                    };
                    found.push(ManagedDomain {
                        domain: name,
                        instance_id,
                        instance_name,
                        state,
                    });
                }
                found.sort_by(|a, b| a.domain.cmp(&b.domain));
                Ok(found)
            })
            .await
    }

    /// Runs `call` on the instance's domain. Errors: `NotFound` when there
    /// is none (or only a foreign one of that name).
    pub(crate) async fn with_domain<T, F>(
        &self,
        instance: &Instance,
        operation: &str,
        call: F,
    ) -> Result<T, DriverError>
    where
        T: Send + 'static,
        F: FnOnce(&Domain, &str) -> Result<T, DriverError> + Send + 'static,
    {
        let name = self.domain_name(instance);
        self.with_domain_if_any(instance, operation, call)
            .await?
            .ok_or_else(|| DriverError::NotFound(format!("domain {name}")))
    }

    /// Runs `call` on the instance's domain, with the domain's name, or
    /// returns `None` without one.
    pub(crate) async fn with_domain_if_any<T, F>(
        &self,
        instance: &Instance,
        operation: &str,
        call: F,
    ) -> Result<Option<T>, DriverError>
    where
        T: Send + 'static,
        F: FnOnce(&Domain, &str) -> Result<T, DriverError> + Send + 'static,
    {
        let name = self.domain_name(instance);
        let prefix = self.options.name_prefix.clone();
        let id = instance.id.clone();
        self.conn
            .run(operation, move |conn| {
                match lookup(conn, &prefix, &name, &id)? {
                    Lookup::Ours(domain) => {
                        let actual = domain.name().unwrap_or(name);
                        call(&domain, &actual).map(Some)
                    }
                    Lookup::Missing | Lookup::Foreign(_) => Ok(None),
                }
            })
            .await
    }

    /// Destroys and undefines every domain of the driver (its name prefix)
    /// that carries instance `id` in its metadata, and removes the
    /// instance's files: what `remove_orphan` does. Idempotent.
    pub(crate) async fn remove_instance_domains(&self, id: &InstanceId) -> Result<(), DriverError> {
        let prefix = self.options.name_prefix.clone();
        let wanted = id.to_string();
        self.conn
            .run("remove the domains of an orphan", move |conn| {
                let domains = conn
                    .list_all_domains(0)
                    .map_err(|e| error::failed("list domains", e))?;
                for domain in domains {
                    if is_instance_domain(&domain, &prefix, &wanted) {
                        let name = domain.name().unwrap_or_else(|_| wanted.clone());
                        destroy_and_undefine(&domain, &name)?;
                    }
                }
                Ok(())
            })
            .await?;
        let dir = self.dir_of(id.as_str())?;
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        })
        .await
        .map_err(|e| DriverError::Runtime {
            operation: "remove the instance's files".to_owned(),
            source: Box::new(e),
        })?
    }
}

fn require_active(domain: &Domain, name: &str) -> Result<(), DriverError> {
    if is_active(domain, name)? {
        Ok(())
    } else {
        Err(DriverError::FailedPrecondition(format!(
            "domain {name} is not running"
        )))
    }
}

fn require_file(field: &str, what: &str, path: &Path) -> Result<(), DriverError> {
    if !path.is_absolute() {
        return Err(error::invalid(
            field,
            format!("`{}` is not an absolute path", path.display()),
        ));
    }
    if !path.is_file() {
        return Err(DriverError::NotFound(format!("{what} {}", path.display())));
    }
    Ok(())
}

/// Makes `dir` and a fresh `overlay` in it (for the domain `name`), on
/// the blocking pool. A leftover overlay (a crash between its creation and
/// the domain's definition) is replaced: the instance gets a fresh disk.
pub(crate) async fn fresh_overlay(
    dir: PathBuf,
    overlay: OverlayPlan,
    name: &str,
) -> Result<(), DriverError> {
    tokio::task::spawn_blocking(move || {
        create_dir(&dir)?;
        disks::remove_file(&overlay.path)?;
        disks::create_overlay(
            &overlay.path,
            overlay
                .base
                .as_ref()
                .map(|(path, info)| (path.as_path(), info)),
            overlay.size,
        )
    })
    .await
    .map_err(|e| DriverError::Runtime {
        operation: format!("create the overlay of {name}"),
        source: Box::new(e),
    })?
}

pub(crate) fn create_dir(dir: &Path) -> Result<(), DriverError> {
    use std::os::unix::fs::DirBuilderExt;
    // QEMU runs as its own user and must reach the overlay.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| error::io(format!("create {}", dir.display()), e))
}

fn name_clash(name: &str, owner: &str) -> DriverError {
    DriverError::AlreadyExists(format!(
        "a domain named {name} exists already and is not this instance's ({owner}); \
         remove or rename it, or rename the instance"
    ))
}
