//! Only Zixiao's links, ever: the one place that decides whether a link may
//! be changed or removed. A link is this installation's when it has the
//! kind its name promises (a bridge for `zxb…`, a veth for `zxv…`, a TAP for
//! `zxt…`, a VXLAN device for `zxx…`) and its alias (`IFLA_IFALIAS`) is the [`HostMark`] of the
//! network it serves. Anything else under one of our names is refused with
//! `FailedPrecondition` naming it, and left untouched.
//!
//! The kernel ignores an alias in the message that creates a link, so a
//! link is marked right after it is made; if that fails it is removed again.
//! A crash between the two leaves an unmarked link, which the next call
//! refuses by name (remove it by hand): refusing is the price of never
//! taking over a link another installation, or a person, made.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use zixiao_core::model::{BridgeName, HostMark, InstallationId, InterfaceKind, InterfaceName};
use zixiao_core::{Error, Result};

use crate::host::{errno, netlink_error};
use crate::overlay::VxlanName;

/// The kinds of links Zixiao makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    Bridge,
    Veth,
    Tap,
    Vxlan,
}

impl LinkKind {
    fn info_kind(self) -> InfoKind {
        match self {
            LinkKind::Bridge => InfoKind::Bridge,
            LinkKind::Veth => InfoKind::Veth,
            LinkKind::Tap => InfoKind::Tun,
            LinkKind::Vxlan => InfoKind::Vxlan,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            LinkKind::Bridge => "bridge",
            LinkKind::Veth => "veth",
            LinkKind::Tap => "TAP device",
            LinkKind::Vxlan => "VXLAN device",
        }
    }

    /// The kind of link an [`InterfaceName`] names.
    pub(crate) fn of(name: &InterfaceName) -> LinkKind {
        match name.kind() {
            InterfaceKind::Veth => LinkKind::Veth,
            InterfaceKind::Tap => LinkKind::Tap,
        }
    }
}

/// A Zixiao link name of either kind, as read from a listing or a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkName {
    Bridge(BridgeName),
    Interface(InterfaceName),
    Vxlan(VxlanName),
}

impl LinkName {
    /// `name` if it is one of Zixiao's link names.
    pub(crate) fn parse(name: &str) -> Option<LinkName> {
        BridgeName::try_from(name)
            .map(LinkName::Bridge)
            .or_else(|_| InterfaceName::try_from(name).map(LinkName::Interface))
            .ok()
            .or_else(|| VxlanName::parse(name).map(LinkName::Vxlan))
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            LinkName::Bridge(name) => name.as_str(),
            LinkName::Interface(name) => name.as_str(),
            LinkName::Vxlan(name) => name.as_str(),
        }
    }

    pub(crate) fn kind(&self) -> LinkKind {
        match self {
            LinkName::Bridge(_) => LinkKind::Bridge,
            LinkName::Interface(name) => LinkKind::of(name),
            LinkName::Vxlan(_) => LinkKind::Vxlan,
        }
    }
}

/// What a link is, as far as ownership goes.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) index: u32,
    kind: Option<InfoKind>,
    alias: Option<String>,
    /// The bridge it is a port of, if any.
    pub(crate) controller: Option<u32>,
    /// Whether it is administratively up.
    pub(crate) up: bool,
}

impl Link {
    fn from_message(message: &LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            kind: None,
            alias: None,
            controller: None,
            up: message.header.flags.contains(LinkFlags::Up),
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(kind) => Some(kind.clone()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        link
    }

    /// The mark it carries, if any.
    pub(crate) fn mark(&self) -> Option<HostMark> {
        self.alias.as_deref().and_then(HostMark::parse)
    }

    /// Whether it is `installation`'s (any network's) and of `kind`.
    pub(crate) fn is_of(&self, installation: &InstallationId, kind: LinkKind) -> bool {
        self.kind.as_ref() == Some(&kind.info_kind())
            && self
                .mark()
                .is_some_and(|m| m.installation() == installation)
    }

    /// Ok when it is a `kind` marked `mark`; the refusal, naming it, otherwise.
    pub(crate) fn check(&self, name: &str, kind: LinkKind, mark: &HostMark) -> Result<()> {
        let wanted = kind.describe();
        if self.kind.as_ref() != Some(&kind.info_kind()) {
            let found = match &self.kind {
                Some(other) => format!("a link of kind {other:?}"),
                None => "a link of no kind (a physical device or loopback)".to_owned(),
            };
            return Err(Error::FailedPrecondition(format!(
                "link {name} exists on this node and is {found}, not Zixiao's {wanted}: \
                 it is left untouched"
            )));
        }
        match (&self.alias, self.mark()) {
            (Some(_), Some(found)) if found == *mark => Ok(()),
            (_, Some(found)) => Err(Error::FailedPrecondition(format!(
                "{wanted} {name} exists on this node and is marked `{found}`, not `{mark}`: \
                 it belongs to another Zixiao installation or network and is left untouched"
            ))),
            _ => Err(Error::FailedPrecondition(format!(
                "{wanted} {name} exists on this node but carries no Zixiao mark (alias \
                 `{mark}`), so it is not this installation's: it is left untouched \
                 (if a crash left it, remove it by hand: `ip link del {name}`)"
            ))),
        }
    }
}

/// Link `name` as it is now, if it exists.
pub(crate) async fn lookup(handle: &Handle, name: &str) -> Result<Option<Link>> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(message)) => Ok(Some(Link::from_message(&message))),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink_error(&format!("looking up link {name}"), e)),
    }
}

/// The index of link `name` if it exists and is ours (a `kind` marked
/// `mark`), `None` if it does not exist. Errors: `FailedPrecondition`
/// naming a link of that name that is not ours; netlink's.
pub(crate) async fn owned(
    handle: &Handle,
    name: &str,
    kind: LinkKind,
    mark: &HostMark,
) -> Result<Option<u32>> {
    match lookup(handle, name).await? {
        Some(link) => link.check(name, kind, mark).map(|()| Some(link.index)),
        None => Ok(None),
    }
}

/// Marks the link at `index`, which this call's caller just made, as ours;
/// on failure removes it again.
pub(crate) async fn mark_new(
    handle: &Handle,
    index: u32,
    name: &str,
    mark: &HostMark,
) -> Result<()> {
    let marked = handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .alias(mark.to_string())
                .build(),
        )
        .execute()
        .await;
    if let Err(e) = marked {
        let _ = handle.link().del(index).execute().await;
        return Err(netlink_error(&format!("marking {name} as `{mark}`"), e));
    }
    Ok(())
}

/// Removes link `name` if it is ours; a missing link is not an error.
/// Errors: `FailedPrecondition` naming a link of that name that is not ours
/// (left untouched); netlink's.
pub(crate) async fn delete_owned(
    handle: &Handle,
    name: &str,
    kind: LinkKind,
    mark: &HostMark,
) -> Result<()> {
    let Some(index) = owned(handle, name, kind, mark).await? else {
        return Ok(());
    };
    delete_index(handle, index, name).await
}

/// Removes the link at `index` (checked to be ours by the caller).
pub(crate) async fn delete_index(handle: &Handle, index: u32, name: &str) -> Result<()> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(netlink_error(&format!("deleting link {name}"), e)),
    }
}

/// Refuses when link `name` exists, for devices recorded before
/// installation ids (which cannot be told apart from another
/// installation's): `refusal` says what to do. Ok when it is gone.
pub(crate) async fn absent_or(handle: &Handle, name: &str, refusal: Error) -> Result<()> {
    match lookup(handle, name).await? {
        Some(_) => Err(refusal),
        None => Ok(()),
    }
}
