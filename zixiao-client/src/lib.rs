//! How a Zixiao frontend gets its [`Client`], in one place, so the CLI and
//! every binding (Python, Node, uniffi) reach a deployment the same way:
//!
//! - [`open`]: the deployment of a state directory: through its daemon's
//!   socket when one runs (`zixiao daemon`, `zixiao server --embedded`),
//!   else the embedded deployment in this process;
//! - [`connect`]: a Zixiao server, over the gRPC implementation of the API,
//!   with TLS and a token ([`ConnectOptions`], or a context of the client
//!   configuration file: [`context_options`]);
//! - `open_with_fake_runtimes` (feature `testing`): the embedded deployment
//!   whose node runs every instance type on zixiao-testing's fake runtime,
//!   for the bindings' own suites.
//!
//! Everything a frontend does after that is one [`Client`] call per
//! command or method; an attached console is shared by several calls as a
//! [`ConsoleSession`]; a pull's options, credentials included, come from
//! [`pull_options`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

pub use zixiao_api::ConnectOptions;
use zixiao_auth::{
    AccessApi, AuditLog, AuthError, AuthStore, ClientConfigFile, ResolvedContext, Retention,
};
use zixiao_core::api::Traced;
use zixiao_core::model::ImageName;
use zixiao_core::{Client, Error, InstanceType, Result, SystemClock};
use zixiao_embedded::zixiao_drivers::DriverConfig;
use zixiao_embedded::{Embedded, EmbeddedConfig};

pub mod console;
mod pull;
#[cfg(feature = "testing")]
pub mod testing;

pub use console::ConsoleSession;
pub use pull::{pull_options, registry_credentials};

/// The stack of every thread a binding polls Zixiao's calls on: a Linux
/// main thread's, where the CLI polls the same calls. A call that
/// converges instances nests deep. In a debug build a node's
/// decommission needed 1.8 MiB when the API's dispatch was one frame of
/// about 1 MiB (it overflowed tokio's 2 MiB workers); with a future per
/// request it needs about 0.8 MiB (the `small_stack` tests of zixiao-core
/// and zixiao-embedded). The gRPC client's call was one poll frame of
/// 659 KiB too; with a future per request it is 7.6 KiB, its largest
/// handler's 24 KiB (disassembled; zixiao-api's `small_stack` test gives
/// its calls 256 KiB). The migrations' frames are large and the stack the
/// deepest calls need was not bisected again, so the margin stays.
pub const CALL_STACK_BYTES: usize = 8 << 20;

/// The multi-thread tokio runtime a binding runs Zixiao's calls on, its
/// threads named `name` with stacks of [`CALL_STACK_BYTES`]. Errors: the
/// runtime's own (no threads could be started).
pub fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(name)
        .thread_stack_size(CALL_STACK_BYTES)
        .enable_all()
        .build()
}

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
    /// How many MiB of each instance's log the node keeps on disk, the
    /// oldest part discarded beyond it (default 16, as the CLI's
    /// `--log-limit-mib`).
    pub log_limit_mib: Option<u64>,
    /// Whether specs may name host files by path (default:
    /// `ZIXIAO_ALLOW_HOST_PATHS`, else on; see
    /// `EmbeddedConfig::allow_host_paths`).
    pub allow_host_paths: Option<bool>,
}

/// Environment variable that turns host paths in specs off (`false`) or on
/// (`true`) for the embedded node when [`OpenOptions::allow_host_paths`]
/// does not say.
pub const ALLOW_HOST_PATHS_ENV: &str = "ZIXIAO_ALLOW_HOST_PATHS";

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
        if let Some(mib) = self.log_limit_mib {
            drivers.log_limit.max_bytes = mib.saturating_mul(1 << 20);
        }
        config.drivers = drivers;
        config.allow_host_paths = match self.allow_host_paths {
            Some(allow) => allow,
            None => allow_host_paths_from_env()?.unwrap_or(true),
        };
        Ok(config)
    }
}

/// What [`ALLOW_HOST_PATHS_ENV`] says: `None` when unset or empty.
/// Errors: `InvalidArgument` naming the variable when it is not a boolean.
pub fn allow_host_paths_from_env() -> Result<Option<bool>> {
    let Some(value) = std::env::var_os(ALLOW_HOST_PATHS_ENV).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match value.to_string_lossy().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(Some(true)),
        "0" | "false" | "no" | "off" => Ok(Some(false)),
        other => Err(Error::invalid(
            ALLOW_HOST_PATHS_ENV,
            format!("`{other}` is not a boolean: give true or false"),
        )),
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
    let embedded = zixiao_embedded::open(config).await?;
    Ok(Client::new(Arc::new(Traced::new(local_access(embedded)))))
}

/// The embedded deployment as its implicit local administrator reaches
/// it: its own `Api` behind the access layer, so users, tokens, projects
/// and the audit log are there too. Its calls are not audited: whoever runs
/// it holds the state directory, store and all.
pub fn local_access(embedded: Embedded) -> AccessApi<Embedded> {
    let clock: Arc<dyn zixiao_core::Clock> = Arc::new(SystemClock);
    let store: Arc<dyn zixiao_core::Store> = embedded.store.clone();
    let accounts = AuthStore::new(store.clone(), clock.clone());
    let log = AuditLog::new(store, clock, "local", Retention::default());
    AccessApi::new(embedded, accounts, Arc::new(log))
}

/// A client of the Zixiao server `options` name, over the gRPC
/// implementation of the API: the same operations as [`open`]'s, carried
/// out by the server. `https://` endpoints need the cluster CA
/// (`options.ca_pem`); the token goes with every call. Connects on first
/// use; a server that cannot be reached then is `Unavailable`, naming the
/// address and the operating system's error.
///
/// Errors: `InvalidArgument` naming the field (`endpoint`, `ca_cert`,
/// `token`, `client_cert`).
pub async fn connect(options: ConnectOptions) -> Result<Client> {
    zixiao_api::connect_with(options)
}

/// The connection options of context `context` (`None`: the current one)
/// of the client configuration file at `file` (`None`: `$ZIXIAO_CONFIG`,
/// else `~/.config/zixiao/config.yaml`), its files read. Errors:
/// `NotFound` (no such context), `FailedPrecondition` (no current
/// context), `InvalidArgument` naming the field.
pub fn context_options(file: Option<&Path>, context: Option<&str>) -> Result<ConnectOptions> {
    let path = ClientConfigFile::default_path(file).map_err(AuthError::from)?;
    let config = ClientConfigFile::load(&path).map_err(AuthError::from)?;
    let chosen = config.context(context).map_err(AuthError::from)?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(options_of(chosen.resolve(base).map_err(AuthError::from)?))
}

/// What a binding's `connect` is given: a server (`endpoint`) with a
/// token, the cluster CA and a client certificate as files, or a context
/// of a client configuration file (`config`, `context`; `endpoint` then
/// replaces the context's). Without any of them, the current context of
/// the default configuration file.
#[derive(Debug, Clone, Default)]
pub struct ConnectArgs {
    /// The server: `https://host:port` (or `host:port`).
    pub endpoint: Option<String>,
    /// The bearer token.
    pub token: Option<String>,
    /// The cluster CA certificate file (PEM).
    pub ca_cert: Option<PathBuf>,
    /// A client certificate file (PEM), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// The client certificate's key file (PEM).
    pub client_key: Option<PathBuf>,
    /// A client configuration file (`None` with `context`: the default one).
    pub config: Option<PathBuf>,
    /// A context of it (`None` with `config`: its current one).
    pub context: Option<String>,
}

impl ConnectArgs {
    /// The connection options they name, files read. Errors:
    /// `InvalidArgument` naming the argument, `NotFound` (a file, a context).
    pub fn options(self) -> Result<ConnectOptions> {
        let read = |field: &str, path: &Path| {
            std::fs::read_to_string(path).map_err(|e| {
                Error::invalid(field, format!("cannot read `{}`: {e}", path.display()))
            })
        };
        // Without an endpoint, the configuration file says where.
        let from_file = self.config.is_some() || self.context.is_some() || self.endpoint.is_none();
        let mut options = if from_file {
            context_options(self.config.as_deref(), self.context.as_deref())?
        } else {
            ConnectOptions::default()
        };
        match self.endpoint {
            Some(endpoint) => options.endpoint = endpoint,
            None if options.endpoint.is_empty() => {
                return Err(Error::invalid(
                    "endpoint",
                    "give the server's endpoint, or a configuration file and context",
                ))
            }
            None => {}
        }
        if let Some(token) = self.token {
            options.token = Some(token);
        }
        if let Some(ca) = &self.ca_cert {
            options.ca_pem = Some(read("ca_cert", ca)?);
        }
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                options.client_identity =
                    Some((read("client_cert", cert)?, read("client_key", key)?));
            }
            (None, None) => {}
            _ => {
                return Err(Error::invalid(
                    "client_key",
                    "client_cert and client_key go together",
                ))
            }
        }
        Ok(options)
    }
}

/// Connection options from a context whose files were read.
pub fn options_of(context: ResolvedContext) -> ConnectOptions {
    ConnectOptions {
        endpoint: context.endpoint,
        ca_pem: context.ca_pem,
        token: context.token.map(|t| t.to_string()),
        client_identity: context
            .client_identity
            .map(|(cert, key)| (cert, key.to_string())),
    }
}

/// The instance type named `value` (`vm`, `container`, `microvm`), an
/// argument of image requests. Errors: `InvalidArgument` naming `field`.
pub fn instance_type(field: &str, value: &str) -> Result<InstanceType> {
    InstanceType::from_str(value).map_err(|e| match e {
        Error::InvalidArgument { reason, .. } => Error::invalid(field, reason),
        other => other,
    })
}

/// The image name `value` (`NAME[:TAG]`), as an import stores an archive's
/// image under. Errors: `InvalidArgument` on `field.<part>` (`name.tag`).
pub fn image_name(field: &str, value: &str) -> Result<ImageName> {
    ImageName::try_from(value).map_err(|e| e.on(field))
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
            log_limit_mib: Some(2),
            allow_host_paths: Some(false),
        }
        .config()
        .expect("config");
        assert!(!config.allow_host_paths);
        assert!(config.state_dir.is_absolute());
        assert!(config.state_dir.ends_with("state"));
        assert_eq!(config.drivers.state_dir, config.state_dir.join("runtime"));
        assert_eq!(
            config.drivers.containerd_socket,
            PathBuf::from("/tmp/c.sock")
        );
        assert_eq!(config.drivers.containerd_namespace, "mine");
        assert_eq!(config.drivers.libvirt_uri, "test:///default");
        assert_eq!(config.drivers.log_limit.max_bytes, 2 << 20);
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
        let client = connect(ConnectOptions::new(endpoint.clone()))
            .await
            .expect("connects lazily");
        let err = client.list_nodes().await.expect_err("nobody listens");
        assert_eq!(err.kind(), zixiao_core::ErrorKind::Unavailable);
        assert!(err.chain().contains(&endpoint), "{}", err.chain());
    }
}
