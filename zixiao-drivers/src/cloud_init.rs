//! The cloud-init seed of a VM or QEMU microVM: its [`CloudInit`] data
//! written as cloud-init's NoCloud data source expects it, an ISO 9660
//! image labelled `cidata` holding `user-data`, `meta-data` and, when
//! there is one, `network-config`, which the driver attaches read-only
//! (libvirt: a second virtio disk; QEMU: a virtio-mmio block device).
//!
//! The image is made by `genisoimage` (Debian's `genisoimage` package, what
//! OpenStack Nova uses for its config drives): a few small files need no
//! ISO writer of our own. Zixiao writes the meta-data (`instance-id`: the
//! instance's id, so cloud-init runs once per instance and again for a
//! clone; `local-hostname`: its name; the SSH keys) and the network
//! configuration (version 2: each NIC matched by its MAC, with its
//! addresses, IPv4 and IPv6; the first network of each family carries
//! that family's default route through its gateway), each unless
//! the spec gives its own. Where the node's DHCP responder serves the
//! guest's networks ([`Addressing::Dhcp`], see zixiao-net's `dhcp`), the
//! NICs say `dhcp4` instead of their IPv4 addresses: the guest asks, and
//! the responder hands it the same IPAM address and gateway, which also
//! reach a guest whose image ignores the seed's network-config. Without a
//! responder the static addresses stay, or the guest would have none. Both
//! are written as JSON, which YAML reads, so no value needs YAML quoting
//! rules. The files are 0600 and removed once the image exists; nothing
//! here logs their content.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{json, Map, Value};
use zixiao_core::model::CloudInit;
use zixiao_core::{DriverError, Instance};

use crate::errors;

/// The seed image's file name in the instance's directory.
const SEED_FILE: &str = "cidata.iso";

/// The program that writes the image.
const GENISOIMAGE: &str = "genisoimage";

/// Where the seed image of the instance whose directory is `dir` goes:
/// the one name [`write_seed_files`] writes and every runtime attaches.
pub(crate) fn seed_file(dir: &Path) -> PathBuf {
    dir.join(SEED_FILE)
}

/// Where `instance`'s seed image goes, when it has cloud-init data.
#[cfg(feature = "libvirt")]
pub(crate) fn seed_path(dir: &Path, instance: &Instance) -> Option<PathBuf> {
    instance.spec.cloud_init.as_ref().map(|_| seed_file(dir))
}

/// How a guest's NICs get their IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addressing {
    /// Written into the seed's network-config.
    Static,
    /// Asked of the node's DHCP responder, which serves every network of
    /// the guest.
    Dhcp,
}

/// The NoCloud files of a seed, by name, in the order written. Its
/// `Debug` shows names and sizes only: the content may hold secrets.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SeedFiles(pub(crate) Vec<(&'static str, String)>);

impl std::fmt::Debug for SeedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|(name, text)| format!("{name}: {} bytes", text.len())),
            )
            .finish()
    }
}

/// The seed files of `instance`, when it has cloud-init data.
pub(crate) fn seed_of(instance: &Instance, addressing: Addressing) -> Option<SeedFiles> {
    let init = instance.spec.cloud_init.as_ref()?;
    Some(SeedFiles(seed_files(instance, init, addressing)))
}

/// The NoCloud files of `instance`'s `init`, by name, in the order written.
pub(crate) fn seed_files(
    instance: &Instance,
    init: &CloudInit,
    addressing: Addressing,
) -> Vec<(&'static str, String)> {
    let user_data = init
        .user_data
        .clone()
        // cloud-init wants the file; an empty cloud-config changes nothing.
        .unwrap_or_else(|| "#cloud-config\n{}\n".to_owned());
    let meta_data = init.meta_data.clone().unwrap_or_else(|| {
        let mut meta = json!({
            "instance-id": instance.id.as_str(),
            "local-hostname": instance.name,
        });
        if !init.ssh_authorized_keys.is_empty() {
            meta["public-keys"] = json!(init.ssh_authorized_keys);
        }
        format!("{meta:#}\n")
    });
    let mut files = vec![("user-data", user_data), ("meta-data", meta_data)];
    let network_config = init
        .network_config
        .clone()
        .or_else(|| network_config(instance, addressing).map(|config| format!("{config:#}\n")));
    if let Some(config) = network_config {
        files.push(("network-config", config));
    }
    files
}

/// The version 2 network configuration of `instance`'s attachments, or
/// none when it has none (the image's own default then applies).
fn network_config(instance: &Instance, addressing: Addressing) -> Option<Value> {
    if instance.attachments.is_empty() {
        return None;
    }
    let mut ethernets = Map::new();
    for (i, attachment) in instance.attachments.iter().enumerate() {
        let dhcp = addressing == Addressing::Dhcp;
        // With DHCP, IPv4 comes from the responder (with its gateway).
        let written: Vec<_> = attachment
            .addresses
            .iter()
            .filter(|ip| !(dhcp && ip.address.is_ipv4()))
            .collect();
        let mut nic = json!({
            "match": { "macaddress": attachment.mac },
            "set-name": attachment.interface,
            "addresses": written
                .iter()
                .map(|ip| format!("{}/{}", ip.address, ip.prefix_len))
                .collect::<Vec<_>>(),
        });
        if dhcp && attachment.addresses.iter().any(|ip| ip.address.is_ipv4()) {
            nic["dhcp4"] = json!(true);
        }
        // One default route per family: through the first network's
        // gateway of it (the responder gives IPv4's with DHCP). As a
        // prefix, not `default`: cloud-init before 23.x refuses that word.
        let routes: Vec<Value> = written
            .iter()
            .filter(|ip| {
                let family = ip.address.is_ipv4();
                instance.attachments[..i]
                    .iter()
                    .all(|a| a.addresses.iter().all(|b| b.address.is_ipv4() != family))
            })
            .map(|ip| {
                let everywhere = if ip.gateway.is_ipv4() {
                    "0.0.0.0/0"
                } else {
                    "::/0"
                };
                json!({ "to": everywhere, "via": ip.gateway.to_string() })
            })
            .collect();
        if !routes.is_empty() {
            nic["routes"] = json!(routes);
        }
        ethernets.insert(attachment.interface.clone(), nic);
    }
    Some(json!({ "version": 2, "ethernets": ethernets }))
}

/// Writes `instance`'s seed image into `dir` (replacing an older one), if
/// it has cloud-init data. Errors: `Unsupported` without `genisoimage` on
/// the node; a runtime error when it fails.
#[cfg(feature = "libvirt")]
pub(crate) async fn write_seed(
    dir: &Path,
    instance: &Instance,
    addressing: Addressing,
) -> Result<(), DriverError> {
    match seed_of(instance, addressing) {
        Some(files) => write_seed_files(dir, &files).await,
        None => Ok(()),
    }
}

/// Writes the seed image of `files` into `dir` as [`seed_file`], replacing
/// an older one. Errors: as [`write_seed`].
pub(crate) async fn write_seed_files(dir: &Path, files: &SeedFiles) -> Result<(), DriverError> {
    let seed = seed_file(dir);
    let files = files.0.clone();
    let staging = dir.join("cidata.d");
    let write_files = {
        let staging = staging.clone();
        move || -> std::io::Result<Vec<PathBuf>> {
            let _ = std::fs::remove_dir_all(&staging);
            std::fs::create_dir(&staging)?;
            files
                .iter()
                .map(|(name, content)| {
                    let path = staging.join(name);
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)?
                        .write_all(content.as_bytes())?;
                    Ok(path)
                })
                .collect()
        }
    };
    let written = tokio::task::spawn_blocking(write_files)
        .await
        .map_err(|e| DriverError::Runtime {
            operation: "write the cloud-init files".to_owned(),
            source: Box::new(e),
        })?
        .map_err(|e| errors::io("write the cloud-init files", e));
    let made = match written {
        Ok(paths) => make_image(&seed, &paths).await,
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&staging).await;
    made
}

/// Runs `genisoimage` to write `paths` into the image `seed`.
async fn make_image(seed: &Path, paths: &[PathBuf]) -> Result<(), DriverError> {
    let partial = seed.with_extension("iso.partial");
    let output = tokio::process::Command::new(GENISOIMAGE)
        .args(["-quiet", "-volid", "cidata", "-joliet", "-rock", "-output"])
        .arg(&partial)
        .args(paths)
        .stdin(Stdio::null())
        .output()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DriverError::Unsupported(format!(
                "cloud-init data needs `{GENISOIMAGE}` on the node to write its seed image \
                 (Debian package genisoimage)"
            )))
        }
        Err(e) => return Err(errors::io(format!("run {GENISOIMAGE}"), e)),
    };
    if !output.status.success() {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(DriverError::Runtime {
            operation: format!("run {GENISOIMAGE}"),
            source: Box::new(std::io::Error::other(format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        });
    }
    tokio::fs::rename(&partial, seed)
        .await
        .map_err(|e| errors::io("keep the cloud-init seed image", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::model::{InstanceSpec, IpConfig};

    fn vm(init: CloudInit) -> Instance {
        let mut spec = InstanceSpec::vm("disk1");
        spec.cloud_init = Some(init);
        let request = zixiao_core::CreateInstance {
            name: "web-1".to_owned(),
            labels: Default::default(),
            spec,
        };
        Instance::new(
            zixiao_core::model::InstanceId::from("2b1c6c1e-4f0e-4c1e-9d3f-0a1b2c3d4e5f"),
            request,
            chrono::Utc::now(),
        )
    }

    #[test]
    fn zixiao_writes_the_meta_data_and_the_network_from_the_instance() {
        let mut instance = vm(CloudInit {
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA me \"quoted\"".to_owned()],
            ..CloudInit::default()
        });
        let files = seed_files(
            &instance,
            instance.spec.cloud_init.as_ref().unwrap(),
            Addressing::Static,
        );
        let names: Vec<_> = files.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            ["user-data", "meta-data"],
            "no network: no network-config"
        );
        let meta: Value = serde_json::from_str(&files[1].1).expect("JSON");
        assert_eq!(meta["instance-id"], instance.id.as_str());
        assert_eq!(meta["local-hostname"], "web-1");
        assert_eq!(meta["public-keys"][0], "ssh-ed25519 AAAA me \"quoted\"");
        assert!(files[0].1.starts_with("#cloud-config"));

        let attachment: zixiao_core::model::NetworkAttachment = serde_json::from_value(json!({
            "network": "lan", "interface": "eth0", "host_interface": "zxt0000000001",
            "bridge": "zxb9060dcf0", "mac": "02:00:00:00:00:07",
            "addresses": [IpConfig {
                address: "10.8.0.7".parse().unwrap(), prefix_len: 24,
                gateway: "10.8.0.1".parse().unwrap(),
            }],
        }))
        .expect("attachment");
        instance.attachments = vec![attachment];
        let files = seed_files(
            &instance,
            instance.spec.cloud_init.as_ref().unwrap(),
            Addressing::Static,
        );
        let (name, config) = &files[2];
        assert_eq!(*name, "network-config");
        let config: Value = serde_json::from_str(config).expect("JSON");
        let eth0 = &config["ethernets"]["eth0"];
        assert_eq!(config["version"], 2);
        assert_eq!(eth0["match"]["macaddress"], "02:00:00:00:00:07");
        assert_eq!(eth0["addresses"][0], "10.8.0.7/24");
        assert_eq!(eth0["routes"][0]["via"], "10.8.0.1");
        assert_eq!(eth0["routes"][0]["to"], "0.0.0.0/0");
        assert_eq!(eth0.get("dhcp4"), None);

        // With the node's DHCP responder: the guest asks for its IPv4
        // address and route instead.
        let init = instance.spec.cloud_init.as_ref().unwrap();
        let files = seed_files(&instance, init, Addressing::Dhcp);
        let config: Value = serde_json::from_str(&files[2].1).expect("JSON");
        let eth0 = &config["ethernets"]["eth0"];
        assert_eq!(eth0["match"]["macaddress"], "02:00:00:00:00:07");
        assert_eq!(eth0["dhcp4"], true);
        assert_eq!(eth0["addresses"], json!([]));
        assert_eq!(eth0.get("routes"), None);

        // Dual stack: the IPv6 address is written (no DHCPv6; its /64's
        // advertisements form the same one) with its own default route,
        // on the first network only; a second network's NIC has none.
        let v6 = IpConfig {
            address: "fd00:9e36::7".parse().unwrap(),
            prefix_len: 64,
            gateway: "fd00:9e36::1".parse().unwrap(),
        };
        instance.attachments[0].addresses.push(v6);
        let mut second = instance.attachments[0].clone();
        second.interface = "eth1".to_owned();
        second.mac = "02:00:00:00:00:08".to_owned();
        instance.attachments.push(second);
        for (addressing, v4_route) in [(Addressing::Static, true), (Addressing::Dhcp, false)] {
            let files = seed_files(&instance, init, addressing);
            let config: Value = serde_json::from_str(&files[2].1).expect("JSON");
            let eth0 = &config["ethernets"]["eth0"];
            assert!(
                eth0["addresses"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("fd00:9e36::7/64")),
                "{config:#}"
            );
            let mut want = Vec::new();
            if v4_route {
                want.push(json!({ "to": "0.0.0.0/0", "via": "10.8.0.1" }));
            }
            want.push(json!({ "to": "::/0", "via": "fd00:9e36::1" }));
            assert_eq!(eth0["routes"], json!(want), "{addressing:?}");
            assert_eq!(config["ethernets"]["eth1"].get("routes"), None);
        }
    }

    #[test]
    fn what_the_spec_gives_is_written_as_it_is() {
        let instance = vm(CloudInit {
            user_data: Some("#!/bin/sh\necho hi\n".to_owned()),
            meta_data: Some("instance-id: mine\n".to_owned()),
            network_config: Some("version: 1\n".to_owned()),
            ssh_authorized_keys: Vec::new(),
        });
        let files = seed_files(
            &instance,
            instance.spec.cloud_init.as_ref().unwrap(),
            Addressing::Static,
        );
        assert_eq!(
            files,
            [
                ("user-data", "#!/bin/sh\necho hi\n".to_owned()),
                ("meta-data", "instance-id: mine\n".to_owned()),
                ("network-config", "version: 1\n".to_owned()),
            ]
        );
    }
}
