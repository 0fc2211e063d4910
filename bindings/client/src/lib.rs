//! The [`Client`] every Zixiao binding (Python, Node, uniffi) holds, built
//! in one place so the three bindings reach a deployment the same way:
//!
//! - [`open`]: the embedded deployment in this process, over a state
//!   directory, as the `zixiao` CLI opens it without `--endpoint`;
//! - [`connect`]: a Zixiao server, over the gRPC implementation of the API;
//! - `open_with_fake_runtimes` (feature `testing`): the embedded deployment
//!   whose node runs every instance type on zixiao-testing's fake runtime,
//!   for the bindings' own suites.
//!
//! Everything a binding does after that is one [`Client`] call per method;
//! an attached console is shared by several calls as a [`ConsoleSession`].

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
        config.drivers = drivers;
        Ok(config)
    }
}

/// Opens (or creates) the embedded deployment and gives its client: the
/// controller, this machine as its node with the runtimes found here, and
/// what needs the caller's own files (snapshot export and restore, image
/// archives, state backups). One process at a time holds a state directory.
///
/// Errors: `Unavailable` (another process holds the directory),
/// `InvalidArgument` (`state_dir`), `Internal`, the store's errors.
pub async fn open(options: OpenOptions) -> Result<Client> {
    Ok(zixiao_embedded::open(options.config()?).await?.client())
}

/// A client of the Zixiao server at `endpoint`, over the gRPC implementation
/// of the API: the same operations as [`open`]'s, carried out by the server.
///
/// Errors: `Unsupported` until the gRPC client exists. It is wired here and
/// nowhere else: every binding's `connect` calls this.
pub async fn connect(endpoint: &str) -> Result<Client> {
    Err(Error::Unsupported(format!(
        "cannot connect to `{endpoint}`: this build has no client of the server API yet; \
         open the embedded deployment on this machine instead"
    )))
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
    async fn connect_says_what_is_missing() {
        let err = connect("http://127.0.0.1:7400")
            .await
            .expect_err("no client yet");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::Unsupported);
        assert!(err.to_string().contains("127.0.0.1:7400"), "{err}");
    }
}
