//! Snapshots: libvirt internal snapshots, stored inside the instance's
//! qcow2 overlay, with the guest's memory when it runs (so a revert
//! resumes it where it was).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use quick_xml::events::BytesText;
use quick_xml::Writer;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::error::ErrorNumber;
use zixiao_core::driver::{SnapshotInfo, Snapshots};
use zixiao_core::model::SnapshotName;
use zixiao_core::{DriverError, Instance};

use super::{error, xml, LibvirtDriver};

fn snapshot_xml(name: &str) -> String {
    let mut writer = Writer::new(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = writer
        .create_element("domainsnapshot")
        .write_inner_content(|w| {
            w.create_element("name")
                .write_text_content(BytesText::new(name))?;
            Ok(())
        });
    String::from_utf8_lossy(&writer.into_inner()).into_owned()
}

fn info(snapshot: &DomainSnapshot) -> Result<SnapshotInfo, virt::error::Error> {
    let name = snapshot.name()?;
    let description = snapshot.xml_desc(0)?;
    let created_at = xml::texts(&description, "creationTime")
        .first()
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0));
    let state = xml::texts(&description, "state")
        .into_iter()
        .next()
        .unwrap_or_default();
    Ok(SnapshotInfo {
        name,
        created_at,
        includes_memory: matches!(state.as_str(), "running" | "paused"),
        current: snapshot.is_current(0).unwrap_or(false),
    })
}

fn find(domain: &Domain, name: &str) -> Result<Option<DomainSnapshot>, DriverError> {
    match Domain::lookup_snapshot_by_name(domain, name, 0) {
        Ok(snapshot) => Ok(Some(snapshot)),
        Err(e) if error::is(&e, ErrorNumber::NoDomainSnapshot) => Ok(None),
        Err(e) => Err(error::failed(format!("look up snapshot {name}"), e)),
    }
}

#[async_trait]
impl Snapshots for LibvirtDriver {
    async fn create(
        &self,
        instance: &Instance,
        name: &SnapshotName,
    ) -> Result<SnapshotInfo, DriverError> {
        let name = name.as_str().to_owned();
        self.with_domain(instance, "snapshot", move |domain, dom| {
            let failed = |e| error::failed(format!("snapshot {name} of domain {dom}"), e);
            if let Some(existing) = find(domain, &name)? {
                return info(&existing).map_err(failed);
            }
            let snapshot = domain
                .create_snapshot_xml(&snapshot_xml(&name), 0)
                .map_err(|e| {
                    if error::is(&e, ErrorNumber::ConfigUnsupported)
                        || error::is(&e, ErrorNumber::OperationUnsupported)
                    {
                        DriverError::FailedPrecondition(format!(
                            "domain {dom} cannot be snapshotted ({}): it needs a qcow2 disk",
                            e.message()
                        ))
                    } else {
                        failed(e)
                    }
                })?;
            info(&snapshot).map_err(failed)
        })
        .await
    }

    async fn list(&self, instance: &Instance) -> Result<Vec<SnapshotInfo>, DriverError> {
        self.with_domain(instance, "list snapshots", |domain, dom| {
            let failed = |e| error::failed(format!("list snapshots of domain {dom}"), e);
            let mut all = domain
                .list_all_snapshots(0)
                .map_err(failed)?
                .iter()
                .map(info)
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            all.sort_by(|a, b| (a.created_at, &a.name).cmp(&(b.created_at, &b.name)));
            Ok(all)
        })
        .await
    }

    async fn revert(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        let name = name.as_str().to_owned();
        self.with_domain(instance, "revert to snapshot", move |domain, dom| {
            let snapshot = find(domain, &name)?
                .ok_or_else(|| DriverError::NotFound(format!("snapshot {name} of domain {dom}")))?;
            snapshot
                .revert(0)
                .map_err(|e| error::failed(format!("revert domain {dom} to snapshot {name}"), e))
        })
        .await
    }

    async fn delete(&self, instance: &Instance, name: &SnapshotName) -> Result<(), DriverError> {
        let name = name.as_str().to_owned();
        self.with_domain(
            instance,
            "delete snapshot",
            move |domain, dom| match find(domain, &name)? {
                None => Ok(()),
                Some(snapshot) => snapshot.delete(0).map_err(|e| {
                    error::failed(format!("delete snapshot {name} of domain {dom}"), e)
                }),
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_xml_escapes_nothing_it_should_not() {
        assert_eq!(
            snapshot_xml("s1"),
            "<domainsnapshot><name>s1</name></domainsnapshot>"
        );
    }
}
