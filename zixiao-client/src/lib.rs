//! How a Zixiao frontend gets its [`Client`], in one place, so the CLI and
//! every binding (Python, Node, uniffi) reach a deployment the same way:
//!
//! - [`open`]: the deployment of a state directory: through its daemon's
//!   socket when one runs (`zixiao daemon`, `zixiao server --embedded`),
//!   else the embedded deployment in this process;
//! - [`connect`]: a Zixiao server, over the gRPC implementation of the API;
//! - `open_with_fake_runtimes` (feature `testing`): the embedded deployment
//!   whose node runs every instance type on zixiao-testing's fake runtime,
//!   for the bindings' own suites.
//!
//! Everything a frontend does after that is one [`Client`] call per
//! command or method; an attached console is shared by several calls as a
//! [`ConsoleSession`].

use std::path::PathBuf;
use std::str::FromStr;

use zixiao_core::{Client, Error, InstanceType, Result};
use zixiao_embedded::zixiao_drivers::DriverConfig;
use zixiao_embedded::EmbeddedConfig;

pub mod console;
#[cfg(feature = "testing")]
pub mod testing;

pub use console::ConsoleSession;

/// Where the embedded deployment keeps its state and finds its runtimes;
/// `None` fields take the CLI's defaults.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// The state directory (default: `ZIXIAO_STATE_DIR`, else
    /// `~/.local/share/zixiao`, as the CLI's `--state-dir`).
    pub state_dir: Option<PathBuf>,
    /// containerd's socket (default: `ZIXIAO_CONTAINERD_SOCKET`, else
    /// `/run/containerd/containerd.sock`, as the CLI's `--containerd-socket`).
    pub containerd_socket: Option<PathBuf>,
    /// The containerd namespace the node's containers and images live in
    /// (default `zixiao`, the CLI's).
    pub containerd_namespace: Option<String>,
    /// libvirt's URI (default: `ZIXIAO_LIBVIRT_URI`, else `qemu:///system`).
    pub libvirt_uri: Option<String>,
    /// libvirt's domain type, `kvm` or `qemu` (default: `kvm` where KVM is
    /// hardware-backed).
    pub libvirt_domain_type: Option<String>,
}

impl OpenOptions {
    /// The defaults, over `state_dir` when it is given.
    pub fn new(state_dir: Option<PathBuf>) -> Self {
        OpenOptions {
            state_dir,
            ..OpenOptions::default()
        }
    }

    /// The embedded deployment's configuration: the CLI's defaults and
    /// environment variables, then what these options set.
    /// Errors: `InvalidArgument` (`state_dir`) when no default directory is known.
    pub fn config(self) -> Result<EmbeddedConfig> {
        let state_dir = match self.state_dir {
            Some(dir) => absolute(dir, "state_dir")?,
            None => zixiao_embedded::default_state_dir()?,
        };
        let mut config = EmbeddedConfig::new(&state_dir);
        let mut drivers = DriverConfig::from_env(state_dir.join("runtime"));
        if let Some(socket) = self.containerd_socket {
            drivers = drivers.with_containerd_socket(absolute(socket, "containerd_socket")?);
        }
        if let Some(namespace) = self.containerd_namespace {
            drivers.containerd_namespace = namespace;
        }
        if let Some(uri) = self.libvirt_uri {
            drivers.libvirt_uri = uri;
        }
        if let Some(domain_type) = self.libvirt_domain_type {
            drivers.libvirt_domain_type = Some(domain_type);
        }
        config.drivers = drivers;
        Ok(config)
    }
}

/// The client of a state directory's deployment: its daemon's, when one
/// answers on the directory's socket (every command then goes through it,
/// and restart policies keep working between commands), else the embedded
/// deployment opened in this process (the controller, this machine as its
/// node with the runtimes found here, and what needs the caller's own
/// files). Without a daemon, one process at a time holds a state directory.
///
/// Errors: `Unavailable` (another process holds the directory),
/// `InvalidArgument` (`state_dir`), `Internal`, the store's errors.
pub async fn open(options: OpenOptions) -> Result<Client> {
    let config = options.config()?;
    let socket = zixiao_api::local::socket_path(&config.state_dir);
    if zixiao_api::local::answers(&socket).await {
        return zixiao_api::connect_unix(&socket);
    }
    Ok(zixiao_embedded::open(config).await?.client())
}

/// A client of the Zixiao server at `endpoint` (`host:port` or
/// `http://host:port`), over the gRPC implementation of the API: the same
/// operations as [`open`]'s, carried out by the server. Connects on first
/// use; a server that cannot be reached then is `Unavailable`, naming the
/// address and the operating system's error.
///
/// Errors: `InvalidArgument` (a malformed endpoint).
pub async fn connect(endpoint: &str) -> Result<Client> {
    zixiao_api::connect(endpoint)
}

/// The instance type named `value` (`vm`, `container`, `microvm`), an
/// argument of image requests. Errors: `InvalidArgument` naming `field`.
pub fn instance_type(field: &str, value: &str) -> Result<InstanceType> {
    InstanceType::from_str(value).map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => Error::invalid(field, reason),
        other => other,
    })
}

/// `path` made absolute against the working directory: the runtimes that
/// use it may resolve it elsewhere.
fn absolute(path: PathBuf, field: &str) -> Result<PathBuf> {
    std::path::absolute(&path)
        .map_err(|e| Error::invalid(field, format!("cannot resolve {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_the_defaults_and_paths_become_absolute() {
        let config = OpenOptions {
            state_dir: Some("state".into()),
            containerd_socket: Some("/tmp/c.sock".into()),
            containerd_namespace: Some("mine".into()),
            libvirt_uri: Some("test:///default".into()),
            libvirt_domain_type: Some("qemu".into()),
        }
        .config()
        .expect("config");
        assert!(config.state_dir.is_absolute());
        assert!(config.state_dir.ends_with("state"));
        assert_eq!(config.drivers.state_dir, config.state_dir.join("runtime"));
        assert_eq!(
            config.drivers.containerd_socket,
            PathBuf::from("/tmp/c.sock")
        );
        assert_eq!(config.drivers.containerd_namespace, "mine");
        assert_eq!(config.drivers.libvirt_uri, "test:///default");
    }

    #[test]
    fn a_bad_instance_type_names_the_argument() {
        assert_eq!(
            instance_type("type", "microvm").ok(),
            Some(InstanceType::Microvm)
        );
        let err = instance_type("instance_type", "jail").expect_err("unknown");
        assert!(matches!(&err, Error::InvalidArgument { field, .. } if field == "instance_type"));
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_naming_it() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let endpoint = format!("127.0.0.1:{port}");
        let client = connect(&endpoint).await.expect("connects lazily");
        let err = client.list_nodes().await.expect_err("nobody listens");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::Unavailable);
        assert!(err.chain().contains(&endpoint), "{}", err.chain());
    }
}
