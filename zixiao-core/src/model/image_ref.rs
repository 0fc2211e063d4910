//! [`ImageRef`]: a container image reference
//! (`[registry[:port]/]repository[:tag][@sha256:hex]`), parsed once at the
//! edge so that a registry host, a repository path or a digest that reaches
//! a URL or a store key has been checked part by part.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The registry a reference without one names (Docker's convention).
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The tag a reference without a tag or digest names.
pub const DEFAULT_TAG: &str = "latest";

/// The longest repository path (the distribution spec's limit on a name).
const MAX_REPOSITORY: usize = 255;
/// The longest tag (the distribution spec's limit).
const MAX_TAG: usize = 128;
/// The longest registry host and port.
const MAX_REGISTRY: usize = 255;

/// The part of an image reference that is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageRefPart {
    /// The reference as a whole (empty, stray characters).
    Reference,
    /// The registry host or port.
    Registry,
    /// The repository path.
    Repository,
    /// The tag after `:`.
    Tag,
    /// The digest after `@`.
    Digest,
}

impl ImageRefPart {
    /// The part's name, as error messages and field paths use it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageRefPart::Reference => "reference",
            ImageRefPart::Registry => "registry",
            ImageRefPart::Repository => "repository",
            ImageRefPart::Tag => "tag",
            ImageRefPart::Digest => "digest",
        }
    }
}

/// Why a string is not an image reference: the part and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not an image reference: its {} {reason}", part.as_str())]
pub struct InvalidImageRef {
    /// The string that was given.
    pub input: String,
    /// Which part is wrong.
    pub part: ImageRefPart,
    /// Why, such as ``port `99999` is not a number from 1 to 65535``.
    pub reason: String,
}

impl InvalidImageRef {
    /// The class of this error: always `InvalidArgument`.
    pub fn kind(&self) -> crate::ErrorKind {
        crate::ErrorKind::InvalidArgument
    }
}

/// A validated image reference. Built only through `TryFrom<&str>`, so every
/// part is known good: the registry is a host name or IP literal with an
/// optional port, the repository is lowercase path components, the tag and
/// the digest follow the distribution spec (only `sha256` digests).
///
/// ```
/// use zixiao_core::model::ImageRef;
/// let r = ImageRef::try_from("127.0.0.1:5000/busybox:1").unwrap();
/// assert_eq!(r.registry(), "127.0.0.1:5000");
/// assert_eq!(r.repository(), "busybox");
/// assert_eq!(r.tag(), Some("1"));
/// assert_eq!(r.to_string(), "127.0.0.1:5000/busybox:1");
/// assert_eq!(ImageRef::try_from("busybox").unwrap().to_string(), "docker.io/library/busybox:latest");
/// let err = ImageRef::try_from("host:99999/app").unwrap_err();
/// assert!(err.to_string().contains("registry"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// The registry's host and optional port (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The registry's host without the port (an IPv6 literal keeps its brackets).
    pub fn host(&self) -> &str {
        split_port(&self.registry).0
    }

    /// The repository path (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference names one (a reference with neither tag
    /// nor digest names [`DEFAULT_TAG`]).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The manifest digest (`sha256:<64 hex>`), if the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What a registry's manifest URL names: the digest if pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// Whether the registry is this machine (`localhost`, `127.0.0.0/8`,
    /// `::1`): the only hosts plain HTTP is used for without being told.
    pub fn is_loopback(&self) -> bool {
        is_loopback_host(self.host())
    }
}

/// Whether `host` (no port) names this machine: `localhost`, an address in
/// `127.0.0.0/8` or `[::1]`.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host` and `Some(port)` of `host[:port]`, IPv6 literals in brackets.
fn split_port(registry: &str) -> (&str, Option<&str>) {
    if registry.starts_with('[') {
        return match registry.find(']') {
            Some(end) => {
                let (host, rest) = registry.split_at(end + 1);
                (host, rest.strip_prefix(':'))
            }
            None => (registry, None),
        };
    }
    match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl From<ImageRef> for String {
    fn from(reference: ImageRef) -> String {
        reference.to_string()
    }
}

impl TryFrom<String> for ImageRef {
    type Error = InvalidImageRef;

    fn try_from(input: String) -> Result<ImageRef, InvalidImageRef> {
        ImageRef::try_from(input.as_str())
    }
}

impl TryFrom<&str> for ImageRef {
    type Error = InvalidImageRef;

    fn try_from(input: &str) -> Result<ImageRef, InvalidImageRef> {
        let bad = |part: ImageRefPart, reason: String| InvalidImageRef {
            input: input.to_owned(),
            part,
            reason,
        };
        if input.is_empty() {
            return Err(bad(ImageRefPart::Reference, "is empty".into()));
        }
        if let Some(c) = input
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._-/:@[]".contains(*c)))
        {
            return Err(bad(
                ImageRefPart::Reference,
                format!(
                    "has `{}`; only letters, digits and . _ - / : @ [ ] may appear",
                    c.escape_default()
                ),
            ));
        }
        let (name, digest) = match input.split_once('@') {
            Some((name, digest)) => (
                name,
                Some(parse_digest(digest).map_err(|r| bad(ImageRefPart::Digest, r))?),
            ),
            None => (input, None),
        };
        // The registry is the first component when it looks like a host:
        // it has a `.` or a `:` or is `localhost` (Docker's rule).
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (Some(first), rest)
            }
            _ => (None, name),
        };
        // A tag follows the last `:` that is after the last `/`.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(&rest[at + 1..]))
            }
            None => (rest, None),
        };
        let registry = match registry {
            Some(registry) => {
                parse_registry(registry).map_err(|r| bad(ImageRefPart::Registry, r))?;
                registry.to_owned()
            }
            None => DEFAULT_REGISTRY.to_owned(),
        };
        parse_repository(repository).map_err(|r| bad(ImageRefPart::Repository, r))?;
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        let tag = match tag {
            Some(tag) => {
                parse_tag(tag).map_err(|r| bad(ImageRefPart::Tag, r))?;
                Some(tag.to_owned())
            }
            None if digest.is_none() => Some(DEFAULT_TAG.to_owned()),
            None => None,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// The name an image is stored under: an [`ImageRef`] with a tag and no
/// digest (`NAME[:TAG]`, the tag `latest` when left out), as an import
/// gives to an archive that carries no usable name. A digest is refused,
/// because it is the content's, not a name anyone can choose.
///
/// ```
/// use zixiao_core::model::{ImageName, ImageRefPart};
/// let n = ImageName::try_from("127.0.0.1:5000/tools/box").unwrap();
/// assert_eq!(n.to_string(), "127.0.0.1:5000/tools/box:latest");
/// let digest = format!("box@sha256:{}", "0".repeat(64));
/// assert_eq!(ImageName::try_from(digest.as_str()).unwrap_err().part, ImageRefPart::Digest);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageName(ImageRef);

impl ImageName {
    /// The name as a reference (with its tag).
    pub fn reference(&self) -> &ImageRef {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<ImageName> for String {
    fn from(name: ImageName) -> String {
        name.to_string()
    }
}

impl TryFrom<String> for ImageName {
    type Error = InvalidImageRef;

    fn try_from(input: String) -> Result<ImageName, InvalidImageRef> {
        ImageName::try_from(input.as_str())
    }
}

impl TryFrom<&str> for ImageName {
    type Error = InvalidImageRef;

    fn try_from(input: &str) -> Result<ImageName, InvalidImageRef> {
        let reference = ImageRef::try_from(input)?;
        if reference.digest.is_some() {
            return Err(InvalidImageRef {
                input: input.to_owned(),
                part: ImageRefPart::Digest,
                reason: "is not allowed in a name, which is `NAME[:TAG]`".into(),
            });
        }
        Ok(ImageName(reference))
    }
}

fn parse_registry(registry: &str) -> Result<(), String> {
    if registry.len() > MAX_REGISTRY {
        return Err(format!("is longer than {MAX_REGISTRY} characters"));
    }
    let (host, port) = split_port(registry);
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!("port `{port}` is not a number from 1 to 65535"));
        }
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').unwrap_or(inner);
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("`{host}` is not an IPv6 address")),
        };
    }
    if host.is_empty() {
        return Err("host is empty".into());
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "host `{host}` is not a host name (labels of letters, digits and inner -)"
            ));
        }
    }
    Ok(())
}

fn parse_repository(repository: &str) -> Result<(), String> {
    if repository.is_empty() {
        return Err("is empty".into());
    }
    if repository.len() > MAX_REPOSITORY {
        return Err(format!("is longer than {MAX_REPOSITORY} characters"));
    }
    for component in repository.split('/') {
        if !valid_component(component) {
            return Err(format!(
                "component `{component}` is not lowercase letters and digits joined by . _ __ or -"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the distribution spec's path component.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn parse_tag(tag: &str) -> Result<(), String> {
    let first_ok = tag
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !first_ok {
        return Err(format!("`{tag}` must start with a letter, digit or _"));
    }
    if tag.len() > MAX_TAG {
        return Err(format!("is longer than {MAX_TAG} characters"));
    }
    if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(format!(
            "`{tag}` has characters other than letters, digits and _ . -"
        ));
    }
    Ok(())
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits: the only
/// digests Zixiao accepts, so one may go into a URL or a file name as is.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks a digest and returns it.
fn parse_digest(digest: &str) -> Result<String, String> {
    if is_sha256_digest(digest) {
        Ok(digest.to_owned())
    } else {
        Err(format!(
            "`{digest}` is not `sha256:` and 64 lowercase hex digits"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ImageRef {
        ImageRef::try_from(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn part(s: &str) -> ImageRefPart {
        ImageRef::try_from(s).expect_err(s).part
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names_take_a_tag_and_refuse_a_digest() {
        let name = |s: &str| ImageName::try_from(s).map(|n| n.to_string());
        assert_eq!(name("box").unwrap(), "docker.io/library/box:latest");
        assert_eq!(name("localhost/box:2").unwrap(), "localhost/box:2");
        let pinned = format!("box:1@sha256:{HEX}");
        let err = ImageName::try_from(pinned.as_str()).expect_err("digest");
        assert_eq!(err.part, ImageRefPart::Digest);
        assert!(err.to_string().contains("NAME[:TAG]"), "{err}");
        assert_eq!(
            ImageName::try_from("Box").expect_err("upper case").part,
            ImageRefPart::Repository
        );
    }

    #[test]
    fn references_expand_like_docker() {
        assert_eq!(
            parse("busybox").to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(parse("me/app:v1").to_string(), "docker.io/me/app:v1");
        let r = parse("registry.local:5000/team/app");
        assert_eq!(
            (r.registry(), r.host()),
            ("registry.local:5000", "registry.local")
        );
        assert_eq!(r.repository(), "team/app");
        assert_eq!(r.manifest_reference(), "latest");
        assert_eq!(parse("localhost/app").registry(), "localhost");
        assert_eq!(parse("[::1]:5000/app:1").host(), "[::1]");
    }

    #[test]
    fn a_digest_pins_the_manifest() {
        let r = parse(&format!("127.0.0.1:5000/busybox@sha256:{HEX}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.manifest_reference(), format!("sha256:{HEX}"));
        let both = parse(&format!("127.0.0.1:5000/busybox:1@sha256:{HEX}"));
        assert_eq!(both.tag(), Some("1"));
        assert_eq!(both.manifest_reference(), format!("sha256:{HEX}"));
        assert_eq!(ImageRef::try_from(both.to_string()).unwrap(), both);
    }

    #[test]
    fn each_bad_part_is_named() {
        assert_eq!(part(""), ImageRefPart::Reference);
        assert_eq!(part("busy box"), ImageRefPart::Reference);
        assert_eq!(part("host:0/app"), ImageRefPart::Registry);
        assert_eq!(part("host:port/app"), ImageRefPart::Registry);
        assert_eq!(part("-bad.host/app"), ImageRefPart::Registry);
        assert_eq!(part("host.io/App"), ImageRefPart::Repository);
        assert_eq!(part("host.io//app"), ImageRefPart::Repository);
        assert_eq!(part("host.io/a..b"), ImageRefPart::Repository);
        assert_eq!(part("app:.bad"), ImageRefPart::Tag);
        assert_eq!(part("app:"), ImageRefPart::Tag);
        assert_eq!(part("app@sha256:abc"), ImageRefPart::Digest);
        assert_eq!(part("app@md5:abc"), ImageRefPart::Digest);
        let err = ImageRef::try_from("host:99999/app").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`host:99999/app` is not an image reference: its registry port `99999` is not a number from 1 to 65535"
        );
    }

    #[test]
    fn loopback_is_only_this_machine() {
        assert!(parse("127.0.0.1:5000/a").is_loopback());
        assert!(parse("127.8.0.1/a").is_loopback());
        assert!(parse("localhost:5000/a").is_loopback());
        assert!(parse("[::1]:5000/a").is_loopback());
        assert!(!parse("10.0.0.1:5000/a").is_loopback());
        assert!(!parse("registry.example.com/a").is_loopback());
    }

    #[test]
    fn serde_goes_through_the_parser() {
        let r: ImageRef = serde_json::from_str("\"busybox:1\"").unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            "\"docker.io/library/busybox:1\""
        );
        assert!(serde_json::from_str::<ImageRef>("\"Bad\"").is_err());
    }
}
