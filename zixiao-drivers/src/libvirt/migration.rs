//! Live migration of a running domain to another node's libvirtd: the
//! [`LiveMigrate`] capability of the vm driver.
//!
//! The migration is **peer-to-peer** (`VIR_MIGRATE_PEER2PEER`): the source
//! node's libvirtd opens the target's URI itself and runs the whole
//! protocol (begin, prepare, perform, finish, confirm) with it. So the
//! source node's agent needs no connection of its own to the target, and
//! a migration whose caller dies midway is still finished or rolled back
//! by libvirtd, never left half done. libvirt pauses the source for the
//! last memory copy and resumes the target only once the source has
//! handed over (and kills the source after), so two copies never run; a
//! failure at any step resumes the source.
//!
//! The **disk is copied**, not shared: each node keeps the instance's qcow2
//! overlay under its own state directory, on its own copy of the base
//! image. The target prepares an empty overlay on its base
//! ([`LiveMigrate::prepare_incoming`]), and libvirt copies the overlay's
//! blocks over NBD while the memory is copied (`VIR_MIGRATE_NON_SHARED_INC`:
//! only the overlay, not the base every node has). Shared storage would
//! spare the copy but ask every node for a cluster filesystem; nodes of a
//! Zixiao cluster share nothing. The domain XML sent to the target is the
//! source's (device addresses and all, as libvirt's ABI check wants) with
//! every path under the source's state directory moved under the target's.
//!
//! Published ports move with the instance: the target checks and
//! forwards them when it prepares (refusing a port taken there before
//! anything is made), the source removes its rules once the instance has
//! left, and an aborted preparation removes the target's.
//!
//! A clone (`clone_of`) is refused: its disk may sit on its source's frozen
//! base, which only the source node holds.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use virt::domain::MigrateParameters;
use virt::sys;
use zixiao_core::driver::{is_plain_path_char, LiveMigrate, MigrationReport, MigrationTarget};
use zixiao_core::{DriverError, Instance, RuntimeState};

use super::lifecycle::{create_dir, fresh_overlay, read_state, DRIVER};
use super::{connection, error, LibvirtDriver};
use crate::cloud_init;

/// What a migration is asked of libvirt: live, driven by the source
/// daemon, defined (persistent) on the target and undefined on the source
/// once it runs there, aborted on a disk I/O error rather than carried on.
const MIGRATE_FLAGS: u32 = sys::VIR_MIGRATE_LIVE
    | sys::VIR_MIGRATE_PEER2PEER
    | sys::VIR_MIGRATE_PERSIST_DEST
    | sys::VIR_MIGRATE_UNDEFINE_SOURCE
    | sys::VIR_MIGRATE_ABORT_ON_ERROR;

#[async_trait]
impl LiveMigrate for LibvirtDriver {
    async fn prepare_incoming(&self, instance: &Instance) -> Result<MigrationTarget, DriverError> {
        self.prepare_incoming_domain(instance).await
    }

    async fn migrate_live(
        &self,
        instance: &Instance,
        target: &MigrationTarget,
    ) -> Result<MigrationReport, DriverError> {
        self.migrate_domain(instance, target).await
    }

    async fn abort_incoming(&self, instance: &Instance) -> Result<(), DriverError> {
        self.abort_incoming_domain(instance).await
    }
}

impl LibvirtDriver {
    /// Where peers send instances to this node, checked: the options'
    /// migration URI and address, and the state directory.
    fn incoming_target(&self) -> Result<MigrationTarget, DriverError> {
        let (Some(uri), Some(address)) =
            (&self.options.migration_uri, self.options.migration_address)
        else {
            return Err(DriverError::Unsupported(format!(
                "the libvirt at {} takes no live migrations: this node sets no migration URI \
                 and address (LibvirtOptions::with_migration)",
                self.options.uri
            )));
        };
        MigrationTarget::new(uri, address, &self.options.state_dir)
    }

    async fn prepare_incoming_domain(
        &self,
        instance: &Instance,
    ) -> Result<MigrationTarget, DriverError> {
        refuse_clone(instance)?;
        let target = self.incoming_target()?;
        // The same checks as a create: the images, kernel and initrd the
        // instance names must be on this node.
        let plan = self.plan(instance)?;
        let name = self.domain_name(instance);
        if self
            .with_domain_if_any(instance, "look up domain", |_, _| Ok(()))
            .await?
            .is_some()
        {
            return Err(DriverError::AlreadyExists(format!(
                "the libvirt at {} holds domain {name} of instance `{}` already",
                self.options.uri, instance.name
            )));
        }
        // Its published ports lead to its address here from the moment it
        // arrives (checked free first: refused before anything is made).
        crate::net::publish_ports(self.network.as_ref(), instance, DRIVER).await?;
        let dir = self.instance_dir(instance)?;
        match plan.overlay {
            Some(overlay) => fresh_overlay(dir.clone(), overlay, &name).await?,
            None => create_dir(&dir)?,
        }
        // The seed as this node would write it at a create: read by the
        // guest at its next boot here.
        cloud_init::write_seed(&dir, instance, plan.addressing).await?;
        Ok(target)
    }

    async fn migrate_domain(
        &self,
        instance: &Instance,
        target: &MigrationTarget,
    ) -> Result<MigrationReport, DriverError> {
        refuse_clone(instance)?;
        let from = plain_dir(&self.options.state_dir)?;
        let to = plain_dir(target.state_dir())?;
        let has_disk = self.overlay_path(instance)?.exists();
        let target_uri = target.uri().to_owned();
        let migration_uri = match target.address() {
            std::net::IpAddr::V4(a) => format!("tcp://{a}"),
            std::net::IpAddr::V6(a) => format!("tcp://[{a}]"),
        };
        let started = Instant::now();
        self.with_domain(instance, "migrate", move |domain, name| {
            if read_state(domain, name)? != RuntimeState::Running {
                return Err(DriverError::FailedPrecondition(format!(
                    "domain {name} is not running: only a running vm migrates live"
                )));
            }
            let xml = |flags| {
                domain
                    .xml_desc(flags | sys::VIR_DOMAIN_XML_MIGRATABLE | sys::VIR_DOMAIN_XML_SECURE)
                    .map(|xml| rebase_paths(&xml, &from, &to))
                    .map_err(|e| error::failed(format!("read the definition of domain {name}"), e))
            };
            let parameters = MigrateParameters {
                uri: Some(migration_uri),
                dest_xml: Some(xml(0)?),
                persist_xml: Some(xml(sys::VIR_DOMAIN_XML_INACTIVE)?),
                ..MigrateParameters::default()
            };
            let flags = if has_disk {
                MIGRATE_FLAGS | sys::VIR_MIGRATE_NON_SHARED_INC
            } else {
                MIGRATE_FLAGS
            };
            tracing::info!(domain = name, target = %target_uri, "migrating live");
            domain
                .migrate_to_uri3(Some(&target_uri), parameters, flags)
                .map_err(|e| error::failed(format!("migrate domain {name} to {target_uri}"), e))
        })
        .await?;
        let total = started.elapsed();
        // Its published ports are the target's now (see `prepare_incoming`).
        if let Err(e) =
            crate::net::unpublish_ports(self.network.as_ref(), &instance.id, &instance.attachments)
                .await
        {
            tracing::warn!(instance = %instance.id, error = %e, "cannot remove a migrated instance's published ports");
        }
        // The instance runs on the target from its own files; these are stale.
        let dir = self.instance_dir(instance)?;
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a migrated instance's files");
            }
        }
        let stats = completed_job(target.uri(), &instance.id).await;
        Ok(MigrationReport {
            total,
            downtime: stats.downtime.map(Duration::from_millis),
            memory_bytes: stats.mem_processed,
            disk_bytes: stats.disk_processed,
            rounds: stats
                .mem_iteration
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        })
    }

    async fn abort_incoming_domain(&self, instance: &Instance) -> Result<(), DriverError> {
        let running = self
            .with_domain_if_any(instance, "look up domain", |domain, name| {
                read_state(domain, name)
            })
            .await?;
        if matches!(running, Some(RuntimeState::Running | RuntimeState::Paused)) {
            // The migration did finish: the instance is this node's now.
            return Ok(());
        }
        crate::net::unpublish_ports(self.network.as_ref(), &instance.id, &instance.attachments)
            .await?;
        let dir = self.instance_dir(instance)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(error::io(format!("remove {}", dir.display()), e))
            }
            _ => Ok(()),
        }
    }
}

/// What the target's libvirt measured of the migration it completed
/// (`virDomainGetJobStats` with `COMPLETED` on the arrived domain), or
/// nothing when it cannot be asked: the figures are a report, not a
/// condition of success.
async fn completed_job(uri: &str, instance_id: &str) -> JobFigures {
    let uri = uri.to_owned();
    let id = instance_id.to_owned();
    let asked = tokio::task::spawn_blocking(move || {
        connection::init_libvirt();
        let conn = virt::connect::Connect::open(Some(&uri)).ok()?;
        // (The connection closes when dropped.)
        conn.lookup_domain_by_uuid_string(&id)
            .and_then(|domain| domain.job_stats(sys::VIR_DOMAIN_JOB_STATS_COMPLETED))
            .ok()
    })
    .await;
    match asked {
        Ok(Some(stats)) => JobFigures {
            downtime: stats.downtime,
            mem_processed: stats.mem_processed,
            disk_processed: stats.disk_processed,
            mem_iteration: stats.mem_iteration,
        },
        _ => JobFigures::default(),
    }
}

/// The figures of a completed migration job the report carries.
#[derive(Default)]
struct JobFigures {
    /// Milliseconds.
    downtime: Option<u64>,
    mem_processed: Option<u64>,
    disk_processed: Option<u64>,
    /// Memory copy passes.
    mem_iteration: Option<u64>,
}

/// Refuses a clone (see the module doc), live or cold. Errors: `Unsupported`.
pub(super) fn refuse_clone(instance: &Instance) -> Result<(), DriverError> {
    match instance.clone_of {
        Some(_) => Err(DriverError::Unsupported(format!(
            "instance `{}` is a clone: its disk may be built on its source's, which only its \
             node holds, so it does not migrate to another node",
            instance.name
        ))),
        None => Ok(()),
    }
}

/// `dir` as text that appears verbatim in libvirt's XML (no escaping), as
/// [`rebase_paths`] needs. Errors: `Unsupported` naming the directory.
fn plain_dir(dir: &Path) -> Result<String, DriverError> {
    match dir.to_str() {
        Some(text) if text.chars().all(is_plain_path_char) => {
            Ok(text.trim_end_matches('/').to_owned())
        }
        _ => Err(DriverError::Unsupported(format!(
            "state directory {} has characters libvirt's XML escapes; live migration needs \
             letters, digits and `/._-+@=,:` only",
            dir.display()
        ))),
    }
}

/// `xml` with every path under directory `from` moved under `to`: every
/// attribute value or element text that starts with `from/`. Both are
/// plain (see [`plain_dir`]), so they appear in libvirt's XML as they are,
/// right after the quote or `>` that opens a value.
fn rebase_paths(xml: &str, from: &str, to: &str) -> String {
    let mut rebased = xml.to_owned();
    for opening in ['\'', '"', '>'] {
        rebased = rebased.replace(&format!("{opening}{from}/"), &format!("{opening}{to}/"));
    }
    rebased
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_the_state_dir_move_and_others_stay() {
        let xml = "<domain><os><kernel>/images/vmlinuz</kernel></os>\
                   <disk><source file='/var/lib/a/libvirt/1/overlay.qcow2'/></disk>\
                   <log file=\"/var/lib/a/libvirt/1/console.log\"/>\
                   <initrd>/var/lib/a/images/initrd</initrd>\
                   <source file='/var/lib/ab/x'/></domain>";
        let rebased = rebase_paths(xml, "/var/lib/a", "/srv/b");
        assert_eq!(
            rebased,
            "<domain><os><kernel>/images/vmlinuz</kernel></os>\
             <disk><source file='/srv/b/libvirt/1/overlay.qcow2'/></disk>\
             <log file=\"/srv/b/libvirt/1/console.log\"/>\
             <initrd>/srv/b/images/initrd</initrd>\
             <source file='/var/lib/ab/x'/></domain>"
        );
    }

    #[test]
    fn a_state_dir_libvirt_would_escape_is_refused() {
        let err = plain_dir(Path::new("/var/lib/a&b")).unwrap_err();
        assert_eq!(err.kind(), zixiao_core::ErrorKind::Unsupported);
        assert_eq!(plain_dir(Path::new("/var/lib/z/")).unwrap(), "/var/lib/z");
    }
}
