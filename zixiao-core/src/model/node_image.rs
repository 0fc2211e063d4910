//! Images a node keeps for its VMs and microVMs (disks, kernels, initrds),
//! their names, and how a spec names the file a VM boots: an image in the
//! node's store ([`NodeFile::Image`]), an OCI artifact in a registry that
//! the node pulls into its store when it lacks it ([`NodeFile::Reference`]),
//! or, for the local administrator only, a host path ([`NodeFile::HostPath`]).

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::InstanceSpec;
use crate::Error;

/// What an image holds, which decides where it lives and what may use it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ImageKind {
    /// An OCI image in the node's container runtime.
    #[default]
    Container,
    /// A VM's disk (qcow2 or raw) in the node's image store.
    Disk,
    /// A kernel (bzImage or ELF) in the node's image store.
    Kernel,
    /// An initial ramdisk (cpio, possibly compressed) in the node's image store.
    Initrd,
}

impl ImageKind {
    /// Every kind, in display order.
    pub const ALL: [ImageKind; 4] = [
        ImageKind::Container,
        ImageKind::Disk,
        ImageKind::Kernel,
        ImageKind::Initrd,
    ];

    /// The lowercase name used on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Container => "container",
            ImageKind::Disk => "disk",
            ImageKind::Kernel => "kernel",
            ImageKind::Initrd => "initrd",
        }
    }

    /// Whether images of this kind live in the node's image store (every
    /// kind but containers, whose images the container runtime keeps).
    pub fn in_node_store(self) -> bool {
        self != ImageKind::Container
    }

    /// The spec field that names an image of this kind, if any.
    pub fn spec_field(self) -> &'static str {
        match self {
            ImageKind::Container | ImageKind::Disk => "spec.image",
            ImageKind::Kernel => "spec.kernel",
            ImageKind::Initrd => "spec.initrd",
        }
    }
}

impl fmt::Display for ImageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ImageKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "container" => Ok(ImageKind::Container),
            "disk" => Ok(ImageKind::Disk),
            "kernel" => Ok(ImageKind::Kernel),
            "initrd" => Ok(ImageKind::Initrd),
            other => Err(Error::invalid(
                "kind",
                format!("unknown image kind `{other}`: expected container, disk, kernel or initrd"),
            )),
        }
    }
}

/// The longest name of an image in a node's store.
pub const MAX_NODE_IMAGE_NAME: usize = 63;

/// The name of an image in a node's store: 1 to 63 characters of ASCII
/// letters, digits, `.`, `_` and `-`, starting with a letter or digit. It
/// never holds a `/`, so it cannot be mistaken for a path.
///
/// ```
/// use zixiao_core::model::NodeImageName;
/// assert!(NodeImageName::try_from("vmlinux-6.1").is_ok());
/// assert!(NodeImageName::try_from("../etc/shadow").is_err());
/// assert!(NodeImageName::try_from(".hidden").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeImageName(String);

impl NodeImageName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl NodeImageName {
    /// The name a pulled artifact takes in the node's store: the last part
    /// of `reference`'s repository, then `-` and its tag, or `-` and the
    /// first 12 hex digits of its digest when pinned, every other character
    /// than letters, digits, `.`, `_` and `-` made `-`, cut to
    /// [`MAX_NODE_IMAGE_NAME`]. `127.0.0.1:5000/vm/debian:12` is
    /// `debian-12`; the same name from two registries is one name, which
    /// the store refuses to give other content.
    ///
    /// ```
    /// use zixiao_core::model::{ImageRef, NodeImageName};
    /// let r = ImageRef::try_from("127.0.0.1:5000/vm/debian:12").unwrap();
    /// assert_eq!(NodeImageName::for_reference(&r).as_str(), "debian-12");
    /// ```
    pub fn for_reference(reference: &super::ImageRef) -> NodeImageName {
        let repository = reference.repository();
        let base = repository.rsplit('/').next().unwrap_or(repository);
        let suffix = match (reference.digest(), reference.tag()) {
            (Some(digest), _) => {
                let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
                format!("sha256-{}", &hex[..hex.len().min(12)])
            }
            (None, Some(tag)) => tag.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        let mut name: String = format!("{base}-{suffix}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_NODE_IMAGE_NAME)
            .collect();
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            name.replace_range(..1, "x");
        }
        NodeImageName(name)
    }
}

impl fmt::Display for NodeImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for NodeImageName {
    type Error = Error;

    fn try_from(name: &str) -> Result<Self, Error> {
        let good_start = name.starts_with(|c: char| c.is_ascii_alphanumeric());
        let good_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if name.is_empty() || name.len() > MAX_NODE_IMAGE_NAME || !good_start || !good_chars {
            return Err(Error::invalid(
                "name",
                format!(
                    "`{name}` is not an image name: 1 to {MAX_NODE_IMAGE_NAME} letters, digits, \
                     `.`, `_` or `-`, starting with a letter or digit"
                ),
            ));
        }
        Ok(NodeImageName(name.to_owned()))
    }
}

impl TryFrom<String> for NodeImageName {
    type Error = Error;

    fn try_from(name: String) -> Result<Self, Error> {
        NodeImageName::try_from(name.as_str())
    }
}

impl From<NodeImageName> for String {
    fn from(name: NodeImageName) -> String {
        name.0
    }
}

/// What a spec's disk, kernel or initrd field names: an image in the node's
/// store, an artifact in a registry, or an absolute path on the node (which
/// only the local administrator may give; see [`refuse_host_paths`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFile {
    /// An image in the node's store, by name.
    Image(NodeImageName),
    /// A disk, kernel or initrd OCI artifact in a registry, held in the
    /// node's store under [`NodeImageName::for_reference`] once pulled.
    Reference(super::ImageRef),
    /// An absolute path on the node.
    HostPath(PathBuf),
}

impl NodeFile {
    /// Parses `value` of spec field `field`: an absolute path is a host
    /// path, a bare name an image, a registry reference (see
    /// [`NodeFile::is_reference`]) an artifact; anything else (a relative
    /// path, an empty value) is `InvalidArgument` naming `field`.
    ///
    /// ```
    /// use zixiao_core::model::NodeFile;
    /// use std::path::Path;
    /// assert!(matches!(NodeFile::parse("spec.kernel", Path::new("vmlinux")), Ok(NodeFile::Image(_))));
    /// assert!(matches!(NodeFile::parse("spec.kernel", Path::new("/boot/vmlinuz")), Ok(NodeFile::HostPath(_))));
    /// assert!(matches!(
    ///     NodeFile::parse("spec.kernel", Path::new("127.0.0.1:5000/vm/kernel:6.1")),
    ///     Ok(NodeFile::Reference(_))
    /// ));
    /// assert!(NodeFile::parse("spec.kernel", Path::new("boot/vmlinuz")).is_err());
    /// ```
    pub fn parse(field: &str, value: &Path) -> Result<NodeFile, Error> {
        if value.as_os_str().is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        if value.is_absolute() {
            return Ok(NodeFile::HostPath(value.to_owned()));
        }
        if let Some(text) = value.to_str().filter(|t| NodeFile::is_reference(t)) {
            return super::ImageRef::try_from(text)
                .map(NodeFile::Reference)
                .map_err(|e| {
                    Error::invalid(field, format!("`{text}` is not a registry reference: {e}"))
                });
        }
        let mut components = value.components();
        match (components.next(), components.next(), value.to_str()) {
            (Some(Component::Normal(_)), None, Some(name)) => NodeImageName::try_from(name)
                .map(NodeFile::Image)
                .map_err(|_| {
                    Error::invalid(
                        field,
                        format!(
                            "`{name}` is neither an image name (letters, digits, `.`, `_`, `-`) \
                             nor an absolute path on the node"
                        ),
                    )
                }),
            _ => Err(Error::invalid(
                field,
                format!(
                    "`{}` is neither an image name nor an absolute path on the node",
                    value.display()
                ),
            )),
        }
    }

    /// Whether `text` names a registry artifact rather than a file: as
    /// Docker tells a registry from a path, its first `/`-separated part
    /// is a host (it holds a `.` or a `:`, or is `localhost`, and does not
    /// start with `.`, as `./` and `../` do) and more follows.
    /// `127.0.0.1:5000/vm/debian:12` and `registry.lan/k:1` are
    /// references; `vmlinux`, `boot/vmlinuz` and `./vmlinuz` are not.
    pub fn is_reference(text: &str) -> bool {
        match text.split_once('/') {
            Some((host, rest)) => {
                !rest.is_empty()
                    && !host.starts_with('.')
                    && (host.contains('.') || host.contains(':') || host == "localhost")
            }
            None => false,
        }
    }

    /// The name of the image in the node's store it names, if it names
    /// one: the image's, or the one a pulled artifact takes.
    pub fn image(&self) -> Option<NodeImageName> {
        match self {
            NodeFile::Image(name) => Some(name.clone()),
            NodeFile::Reference(reference) => Some(NodeImageName::for_reference(reference)),
            NodeFile::HostPath(_) => None,
        }
    }
}

/// A field of a spec that names a file on the node: which field, the
/// kind of image it takes, and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecFile<'a> {
    /// The field, as errors name it (`spec.kernel`, `spec.disks[0].image`).
    pub field: String,
    /// The kind of image it takes.
    pub kind: ImageKind,
    /// What the spec gives.
    pub value: &'a Path,
}

/// The fields of `spec` that name a file on the node, with the kind of
/// image each takes: a VM's disk, a kernel, an initrd, a microVM's disks.
/// A container's image is an OCI reference, not a file, and is left out.
pub fn node_files(spec: &InstanceSpec) -> Vec<SpecFile<'_>> {
    let file = |field: String, kind: ImageKind, value| SpecFile { field, kind, value };
    let mut files = Vec::new();
    if spec.instance_type != super::InstanceType::Container {
        if let Some(image) = &spec.image {
            let kind = ImageKind::Disk;
            files.push(file(
                kind.spec_field().to_owned(),
                kind,
                Path::new(image.as_str()),
            ));
        }
    }
    if let Some(kernel) = &spec.kernel {
        let kind = ImageKind::Kernel;
        files.push(file(kind.spec_field().to_owned(), kind, kernel.as_path()));
    }
    if let Some(initrd) = &spec.initrd {
        let kind = ImageKind::Initrd;
        files.push(file(kind.spec_field().to_owned(), kind, initrd.as_path()));
    }
    for (i, disk) in spec.disks.iter().enumerate() {
        files.push(file(
            super::disk_field(i),
            ImageKind::Disk,
            Path::new(disk.image.as_str()),
        ));
    }
    files
}

/// The images `spec` names that a node can hold, each as the names a node
/// lists it under once it holds it (what [`super::Node::images`]
/// records; any one of them means held): a container's image as given
/// and as its full reference; a disk, kernel or initrd by its store name,
/// or the name its registry reference is pulled under. Host paths are
/// none.
///
/// ```
/// use zixiao_core::model::held_image_names;
/// use zixiao_core::InstanceSpec;
/// let spec = InstanceSpec::container("busybox:1");
/// assert_eq!(held_image_names(&spec), [["busybox:1", "docker.io/library/busybox:1"]]);
/// let mut vm = InstanceSpec::vm("127.0.0.1:5000/vm/debian:12");
/// vm.kernel = Some("/boot/vmlinuz".into());
/// assert_eq!(held_image_names(&vm), [["debian-12"]]);
/// ```
pub fn held_image_names(spec: &InstanceSpec) -> Vec<Vec<String>> {
    let mut images = Vec::new();
    if spec.instance_type == super::InstanceType::Container {
        if let Some(image) = &spec.image {
            let mut names = vec![image.clone()];
            if let Ok(full) = super::ImageRef::try_from(image.as_str()) {
                let full = full.to_string();
                if full != *image {
                    names.push(full);
                }
            }
            images.push(names);
        }
    }
    for SpecFile { field, value, .. } in node_files(spec) {
        match NodeFile::parse(&field, value) {
            Ok(NodeFile::Image(name)) => images.push(vec![name.to_string()]),
            Ok(NodeFile::Reference(reference)) => {
                images.push(vec![NodeImageName::for_reference(&reference).to_string()])
            }
            Ok(NodeFile::HostPath(_)) | Err(_) => {}
        }
    }
    images
}

/// Whether `spec` uses image `name` of `kind` from its node's store, by
/// that name or by a registry reference pulled under it.
pub fn uses_node_image(spec: &InstanceSpec, kind: ImageKind, name: &NodeImageName) -> bool {
    node_files(spec).into_iter().any(|file| {
        file.kind == kind
            && NodeFile::parse(&file.field, file.value)
                .ok()
                .and_then(|file| file.image())
                .as_ref()
                == Some(name)
    })
}

/// Why a host path is refused: the words a refusal gives after "`PATH`
/// is a host path, and".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPathRefusal {
    /// The spec came over the network (the TCP gRPC server, an agent),
    /// where a path would let a remote caller make the node read any file
    /// it can (`/etc/shadow`).
    OverTheNetwork,
    /// The node's own setting (`allow_host_paths` off) refuses them even
    /// from its local administrator.
    NodeSetting,
}

impl HostPathRefusal {
    /// Why, as a refusal says it.
    pub fn reason(self) -> &'static str {
        match self {
            HostPathRefusal::OverTheNetwork => "host paths are refused over the network",
            HostPathRefusal::NodeSetting => {
                "this node takes no host paths (its allow_host_paths setting is off)"
            }
        }
    }

    /// What to do instead of restoring from a snapshot directory.
    pub fn restore_hint(self) -> &'static str {
        match self {
            HostPathRefusal::OverTheNetwork => "restore a snapshot on the node's own socket",
            HostPathRefusal::NodeSetting => {
                "revert an instance to one of its snapshots by name (`zixiao instance snapshot revert`)"
            }
        }
    }
}

/// Refuses a spec that names a host path for a disk, a kernel, an initrd
/// or a snapshot to restore from. Called wherever a spec arrives from the
/// network (the TCP gRPC server, an agent), where a path would let a remote
/// caller make the node read any file it can (`/etc/shadow`); only the
/// local administrator (in process, or on the state directory's socket)
/// may give paths, and only where the node allows it
/// ([`refuse_host_paths_because`] with [`HostPathRefusal::NodeSetting`]).
/// Errors: `InvalidArgument` naming the field.
///
/// ```
/// use zixiao_core::model::refuse_host_paths;
/// use zixiao_core::InstanceSpec;
/// let mut spec = InstanceSpec::microvm("vmlinux");
/// assert!(refuse_host_paths(&spec).is_ok());
/// spec.kernel = Some("/etc/shadow".into());
/// let err = refuse_host_paths(&spec).unwrap_err();
/// assert!(err.to_string().contains("spec.kernel"), "{err}");
/// ```
pub fn refuse_host_paths(spec: &InstanceSpec) -> Result<(), Error> {
    refuse_host_paths_because(spec, HostPathRefusal::OverTheNetwork)
}

/// [`refuse_host_paths`], the refusal giving `why`.
pub fn refuse_host_paths_because(
    spec: &InstanceSpec,
    refusal: HostPathRefusal,
) -> Result<(), Error> {
    let why = refusal.reason();
    for SpecFile { field, kind, value } in node_files(spec) {
        if value.is_absolute() {
            return Err(Error::invalid(
                field,
                format!(
                    "`{}` is a host path, and {why}; \
                     import the file as an image with `zixiao image import --kind {kind}` \
                     and name the image",
                    value.display()
                ),
            ));
        }
    }
    if let Some(dir) = &spec.restore_from {
        return Err(Error::invalid(
            "spec.restore_from",
            format!(
                "`{}` is a host path, and {why}; {}",
                dir.display(),
                refusal.restore_hint()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ImageRef;

    fn name_for(reference: &str) -> String {
        NodeImageName::for_reference(&ImageRef::try_from(reference).unwrap()).to_string()
    }

    #[test]
    fn a_pulled_artifact_is_named_after_its_reference() {
        assert_eq!(name_for("127.0.0.1:5000/vm/debian:12"), "debian-12");
        assert_eq!(name_for("registry.lan/kernel"), "kernel-latest");
        let pinned = format!("registry.lan/vm/disk@sha256:{}", "ab".repeat(32));
        assert_eq!(name_for(&pinned), "disk-sha256-abababababab");
        let long = format!("registry.lan/{}:1", "d".repeat(80));
        let name = name_for(&long);
        assert_eq!(name.len(), MAX_NODE_IMAGE_NAME);
        // Every name made is one the store takes.
        assert!(NodeImageName::try_from(name.as_str()).is_ok());
    }

    #[test]
    fn references_are_told_from_names_and_paths() {
        for reference in [
            "127.0.0.1:5000/vm/debian:12",
            "registry.lan/k:1",
            "localhost/k",
        ] {
            assert!(NodeFile::is_reference(reference), "{reference}");
            assert!(matches!(
                NodeFile::parse("spec.kernel", Path::new(reference)),
                Ok(NodeFile::Reference(_))
            ));
        }
        for other in [
            "vmlinux",
            "boot/vmlinuz",
            "/boot/vmlinuz",
            "host.lan/",
            "./vmlinuz",
            "../boot/vmlinuz",
        ] {
            assert!(!NodeFile::is_reference(other), "{other}");
        }
        let err = NodeFile::parse("spec.image", Path::new("Registry.lan/UPPER:1")).unwrap_err();
        assert!(err.to_string().contains("spec.image"), "{err}");
    }

    #[test]
    fn a_spec_uses_an_image_by_name_or_by_the_reference_it_was_pulled_from() {
        let mut spec = InstanceSpec::microvm("127.0.0.1:5000/vm/vmlinuz:6.1");
        let pulled = NodeImageName::try_from("vmlinuz-6.1").unwrap();
        assert!(uses_node_image(&spec, ImageKind::Kernel, &pulled));
        assert!(!uses_node_image(&spec, ImageKind::Initrd, &pulled));
        spec.kernel = Some("vmlinuz-6.1".into());
        assert!(uses_node_image(&spec, ImageKind::Kernel, &pulled));
        // A reference is no host path: the network may send it.
        spec.kernel = Some("127.0.0.1:5000/vm/vmlinuz:6.1".into());
        assert!(refuse_host_paths(&spec).is_ok());
    }
}
