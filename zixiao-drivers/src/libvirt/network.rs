//! VMs on networks: each of an instance's [`NetworkAttachment`]s becomes a
//! virtio NIC on the network's bridge (`<interface type='bridge'>`, whose
//! TAP device libvirt creates in its own network namespace when the domain
//! starts and removes when it stops), and a direct kernel boot gets the
//! attachment's `ip=` argument, which the guest's init reads to configure
//! the interface. Each NIC takes its bridge's MTU (`<mtu>`: the overlay's
//! under a VXLAN overlay), which the guest's virtio driver adopts.
//!
//! With the node's [`LinuxNetwork`], each attachment also gets its host
//! entry in the network's DHCP responder (zixiao-net's `dhcp`) when the
//! domain is defined, removed when it is deleted: a guest booted from its
//! disk (no kernel), or with cloud-init data while the responder serves
//! (then without `ip=`, see `lifecycle`), gets its address by DHCP.
//!
//! A bridge missing on the node (or not the network's) is a
//! `FailedPrecondition`: checked before the domain is defined when the
//! driver has the node's [`LinuxNetwork`] (then nothing is left), and read
//! from libvirt's error when the domain starts otherwise. The bridge and
//! TAP names are valid by type ([`BridgeName`], [`InterfaceName`]).
//!
//! [`BridgeName`]: zixiao_core::model::BridgeName
//! [`InterfaceName`]: zixiao_core::model::InterfaceName

use virt::error::{Error as VirtError, ErrorNumber};
use zixiao_core::model::NetworkAttachment;
use zixiao_core::{DriverError, ErrorKind};
use zixiao_net::LinuxNetwork;

use super::error;
use super::xml::Interface;

/// The NICs of `attachments`, after checking the MACs libvirt will be
/// given. Errors: `InvalidArgument` naming the attachment's field.
pub(crate) fn interfaces(attachments: &[NetworkAttachment]) -> Result<Vec<Interface>, DriverError> {
    attachments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            check_mac(&format!("attachments[{i}].mac"), &a.mac)?;
            Ok(Interface {
                bridge: a.bridge.to_string(),
                target: a.host_interface.to_string(),
                mac: a.mac.clone(),
                // Filled in from the node's bridge (see `bridge_mtus`).
                mtu: None,
            })
        })
        .collect()
}

/// The kernel arguments configuring `attachments` in the guest: one `ip=`
/// per attachment with an IPv4 address, each preceded by a space.
pub(crate) fn kernel_args(attachments: &[NetworkAttachment]) -> String {
    attachments
        .iter()
        .filter_map(NetworkAttachment::kernel_ip_arg)
        .map(|arg| format!(" {arg}"))
        .collect()
}

/// Checks that every attachment's bridge exists in `network`'s namespace
/// and is its network's, and returns each one's MTU (what the NIC on it
/// must use, see [`Interface::mtu`]). Errors: `FailedPrecondition` naming
/// the network and the bridge.
pub(crate) async fn bridge_mtus(
    network: &LinuxNetwork,
    attachments: &[NetworkAttachment],
) -> Result<Vec<Option<u32>>, DriverError> {
    let mut mtus = Vec::with_capacity(attachments.len());
    for attachment in attachments {
        let mtu = network
            .bridge_mtu(attachment)
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::FailedPrecondition => DriverError::FailedPrecondition(e.to_string()),
                _ => DriverError::Runtime {
                    operation: format!("look up bridge {}", attachment.bridge),
                    source: Box::new(e),
                },
            })?;
        mtus.push(mtu);
    }
    Ok(mtus)
}

/// Whether [`dhcp_entries`] adds or removes entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entries {
    /// When the domain is defined.
    Add,
    /// When it is deleted.
    Remove,
}

/// Adds or removes `attachments`' DHCP host entries on the node.
/// Errors: `InvalidArgument` (a bad MAC), a runtime error.
pub(crate) fn dhcp_entries(
    network: &LinuxNetwork,
    attachments: &[NetworkAttachment],
    what: Entries,
) -> Result<(), DriverError> {
    let (done, doing) = match what {
        Entries::Add => (network.plug_dhcp(attachments), "add"),
        Entries::Remove => (network.unplug_dhcp(attachments), "remove"),
    };
    done.map_err(|e| match e.kind() {
        ErrorKind::InvalidArgument => error::invalid("attachments", e.to_string()),
        ErrorKind::FailedPrecondition => DriverError::FailedPrecondition(e.to_string()),
        _ => DriverError::Runtime {
            operation: format!("{doing} DHCP host entries"),
            source: Box::new(e),
        },
    })
}

/// The `FailedPrecondition` for a libvirt error that says one of the
/// attachments' bridges does not exist (libvirt reports it as a system
/// error on the bridge when it creates the TAP), if it is one.
pub(crate) fn missing_bridge(
    error: &VirtError,
    attachments: &[NetworkAttachment],
) -> Option<DriverError> {
    if !error::is(error, ErrorNumber::SystemError) {
        return None;
    }
    let message = error.message();
    if !message.contains("No such device") {
        return None;
    }
    attachments
        .iter()
        .find(|a| message.contains(&format!("'{}'", a.bridge)))
        .map(not_set_up)
}

fn not_set_up(attachment: &NetworkAttachment) -> DriverError {
    DriverError::FailedPrecondition(format!(
        "network `{}` is not set up on this node (bridge {} is missing)",
        attachment.network, attachment.bridge
    ))
}

fn check_mac(field: &str, mac: &str) -> Result<(), DriverError> {
    let octets: Vec<Option<u8>> = mac
        .split(':')
        .map(|o| {
            (o.len() == 2)
                .then(|| u8::from_str_radix(o, 16).ok())
                .flatten()
        })
        .collect();
    match octets.as_slice() {
        [Some(first), rest @ ..] if rest.len() == 5 && rest.iter().all(Option::is_some) => {
            if first & 1 == 1 {
                Err(error::invalid(
                    field,
                    format!("`{mac}` is a multicast address; a NIC needs a unicast one"),
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(error::invalid(
            field,
            format!(
                "`{}` is not a MAC address like 02:00:00:00:00:01",
                mac.escape_debug()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zixiao_core::model::IpConfig;
    use zixiao_core::ErrorKind;

    fn attachment(i: usize) -> NetworkAttachment {
        NetworkAttachment {
            network: format!("net{i}").try_into().unwrap(),
            installation: None,
            interface: format!("eth{i}"),
            host_interface: format!("zxt000000000{i}").try_into().unwrap(),
            bridge: format!("zxb0000000{i}").try_into().unwrap(),
            mac: format!("02:00:00:00:00:0{i}"),
            addresses: vec![IpConfig {
                address: format!("10.0.{i}.5").parse().unwrap(),
                prefix_len: 24,
                gateway: format!("10.0.{i}.1").parse().unwrap(),
            }],
        }
    }

    #[test]
    fn each_attachment_is_a_nic_and_an_ip_argument() {
        let attachments = [attachment(0), attachment(1)];
        let nics = interfaces(&attachments).unwrap();
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[1].bridge, "zxb00000001");
        assert_eq!(nics[1].target, "zxt0000000001");
        assert_eq!(nics[1].mac, "02:00:00:00:00:01");
        assert_eq!(
            kernel_args(&attachments),
            " ip=10.0.0.5::10.0.0.1:255.255.255.0::eth0:off ip=10.0.1.5::10.0.1.1:255.255.255.0::eth1:off"
        );
        assert_eq!(kernel_args(&[]), "");
    }

    #[test]
    fn bad_macs_name_the_field() {
        // Bad bridge and TAP names cannot be built (BridgeName, InterfaceName).
        type Spoil = fn(&mut NetworkAttachment);
        let cases: [(Spoil, &str); 2] = [
            (|a| a.mac = "02:00:00:00:00".into(), "attachments[1].mac"),
            (|a| a.mac = "01:00:5e:00:00:01".into(), "attachments[1].mac"),
        ];
        for (spoil, field) in cases {
            let mut attachments = [attachment(0), attachment(1)];
            spoil(&mut attachments[1]);
            let err = interfaces(&attachments).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}
