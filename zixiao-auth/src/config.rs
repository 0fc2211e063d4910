//! The client configuration file, in the manner of a kubeconfig: named
//! contexts (an endpoint, the cluster CA, a token, an optional client
//! certificate) and the current one.
//!
//! ```yaml
//! current_context: prod
//! contexts:
//!   - name: prod
//!     endpoint: https://10.0.0.1:7443
//!     ca_file: /etc/zixiao/ca.pem      # or ca_pem: |  -----BEGIN ...
//!     token_file: token                # or token: zx_...
//!     client_cert_file: me.pem         # optional, with client_key_file
//!     client_key_file: me-key.pem
//! ```
//!
//! Relative file paths are relative to the configuration file's
//! directory. The file is found at an explicit path, else at
//! `$ZIXIAO_CONFIG`, else at `~/.config/zixiao/config.yaml` (the user's
//! configuration directory), and always written 0600: it holds tokens.
//! Unknown fields are refused, naming the field.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;
use zixiao_core::ErrorKind;

use crate::files;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "ZIXIAO_CONFIG";

/// Why the configuration could not be read, used or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file (or one it names) could not be read or written.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not valid YAML of the right shape.
    #[error("`{path}`: invalid {field}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where in it (`contexts[0].endpoint`; `.` for the top).
        field: String,
        /// What is wrong.
        #[source]
        source: serde_yaml::Error,
    },
    /// A field's value is refused.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field (`contexts[1].name`).
        field: String,
        /// Why.
        reason: String,
    },
    /// No context of that name.
    #[error("context `{0}` not found")]
    NoContext(String),
    /// A context of that name exists already.
    #[error("context `{0}` already exists")]
    ContextExists(String),
    /// No current context is set.
    #[error("no current context is set; choose one with `use_context`")]
    NoCurrentContext,
    /// Neither a path nor `$ZIXIAO_CONFIG` was given, and the user has no
    /// configuration directory.
    #[error("no configuration file: give a path or set {CONFIG_ENV}")]
    NoConfigDir,
}

impl ConfigError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConfigError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            ConfigError::Io { .. } => ErrorKind::Internal,
            ConfigError::Parse { .. } | ConfigError::Invalid { .. } => ErrorKind::InvalidArgument,
            ConfigError::NoContext(_) => ErrorKind::NotFound,
            ConfigError::ContextExists(_) => ErrorKind::AlreadyExists,
            ConfigError::NoCurrentContext | ConfigError::NoConfigDir => {
                ErrorKind::FailedPrecondition
            }
        }
    }
}

/// One cluster to talk to, and how.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Its name, chosen by the user.
    pub name: String,
    /// The server's address: `https://host:port` (or `http://` on a
    /// loopback address, for a local server without TLS).
    pub endpoint: String,
    /// The cluster CA certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The cluster CA certificate, inline PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The bearer token, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// A client certificate file (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's key file (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("ca_file", &self.ca_file)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .finish()
    }
}

/// Whether the authority of an endpoint (`host:port/...`) is a loopback host.
fn is_loopback(authority: &str) -> bool {
    let authority = authority.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A context's files read: what a client connects with. Its `Debug` shows
/// neither token nor key.
pub struct ResolvedContext {
    /// The context's name.
    pub name: String,
    /// The server's address.
    pub endpoint: String,
    /// The cluster CA certificate, PEM.
    pub ca_pem: Option<String>,
    /// The bearer token.
    pub token: Option<Zeroizing<String>>,
    /// The client certificate and key, PEM.
    pub client_identity: Option<(String, Zeroizing<String>)>,
}

impl fmt::Debug for ResolvedContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedContext")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "client_identity",
                &self.client_identity.as_ref().map(|_| "<cert and key>"),
            )
            .finish()
    }
}

impl Context {
    /// Checks the context; `field` is its path in the file
    /// (`contexts[0]`).
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        let invalid = |name: &str, reason: &str| ConfigError::Invalid {
            field: format!("{field}.{name}"),
            reason: reason.to_owned(),
        };
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(invalid("name", "1 to 63 letters, digits, `-`, `_` or `.`"));
        }
        let Some((scheme, rest)) = self.endpoint.split_once("://") else {
            return Err(invalid("endpoint", "needs a scheme: https://host:port"));
        };
        if !matches!(scheme, "https" | "http")
            || rest.is_empty()
            || rest.contains(char::is_whitespace)
        {
            return Err(invalid(
                "endpoint",
                "must be https://host:port (or http:// on a loopback address)",
            ));
        }
        // Without TLS a token crosses the wire in clear: only on this machine.
        if scheme == "http" && !is_loopback(rest) {
            return Err(invalid(
                "endpoint",
                "plain http is only for loopback addresses (127.0.0.1, [::1], localhost); use https",
            ));
        }
        if self.ca_file.is_some() && self.ca_pem.is_some() {
            return Err(invalid("ca_pem", "give ca_file or ca_pem, not both"));
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(invalid("token_file", "give token or token_file, not both"));
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(invalid(
                "client_key_file",
                "client_cert_file and client_key_file go together",
            ));
        }
        Ok(())
    }

    /// Reads the files the context names (relative to `base`, the
    /// configuration file's directory). Errors: `NotFound`, `Internal`.
    pub fn resolve(&self, base: &Path) -> Result<ResolvedContext, ConfigError> {
        let read = |path: &Path| {
            let path = base.join(path);
            fs::read_to_string(&path).map_err(|source| ConfigError::Io {
                action: "read",
                path,
                source,
            })
        };
        let ca_pem = match (&self.ca_pem, &self.ca_file) {
            (Some(pem), _) => Some(pem.clone()),
            (None, Some(file)) => Some(read(file)?),
            (None, None) => None,
        };
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(Zeroizing::new(token.clone())),
            (None, Some(file)) => Some(Zeroizing::new(read(file)?.trim().to_owned())),
            (None, None) => None,
        };
        let client_identity = match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => Some((read(cert)?, Zeroizing::new(read(key)?))),
            _ => None,
        };
        Ok(ResolvedContext {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            ca_pem,
            token,
            client_identity,
        })
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfigFile {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Every context, in the order they were added.
    #[serde(default)]
    pub contexts: Vec<Context>,
}

impl ClientConfigFile {
    /// Where the configuration file is: `explicit` if given, else `env`
    /// (the value of `$ZIXIAO_CONFIG`) if set and not empty, else
    /// `config.yaml` in `zixiao` under the user's configuration directory.
    /// Pure, for tests; [`ClientConfigFile::default_path`] reads the process's
    /// environment.
    pub fn path_from(
        explicit: Option<&Path>,
        env: Option<OsString>,
        config_dir: Option<PathBuf>,
    ) -> Result<PathBuf, ConfigError> {
        if let Some(path) = explicit {
            return Ok(path.to_owned());
        }
        if let Some(path) = env.filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        config_dir
            .map(|dir| dir.join("zixiao").join("config.yaml"))
            .ok_or(ConfigError::NoConfigDir)
    }

    /// [`ClientConfigFile::path_from`] with this process's `$ZIXIAO_CONFIG`
    /// and configuration directory (`~/.config` on Linux, or
    /// `$XDG_CONFIG_HOME`).
    pub fn default_path(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
        ClientConfigFile::path_from(explicit, std::env::var_os(CONFIG_ENV), dirs::config_dir())
    }

    /// Parses and checks a configuration; `path` names it in errors.
    /// Errors: `InvalidArgument` naming the field.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ClientConfigFile::default());
        }
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let config: ClientConfigFile =
            serde_path_to_error::deserialize(deserializer).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                field: e.path().to_string(),
                source: e.into_inner(),
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (i, context) in self.contexts.iter().enumerate() {
            context.validate(&format!("contexts[{i}]"))?;
            if self.contexts[..i].iter().any(|c| c.name == context.name) {
                return Err(ConfigError::Invalid {
                    field: format!("contexts[{i}].name"),
                    reason: format!("`{}` is used by an earlier context", context.name),
                });
            }
        }
        if let Some(current) = &self.current_context {
            if !self.contexts.iter().any(|c| &c.name == current) {
                return Err(ConfigError::Invalid {
                    field: "current_context".to_owned(),
                    reason: format!("no context is named `{current}`"),
                });
            }
        }
        Ok(())
    }

    /// Reads the file at `path`; a missing file is an empty configuration.
    /// Errors: `InvalidArgument` naming the field, `Internal`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => ClientConfigFile::parse(&text, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ClientConfigFile::default()),
            Err(source) => Err(ConfigError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the configuration to `path` (mode 0600, its directory made
    /// 0700 if missing), replacing the file whole.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate()?;
        let io = |action, source| ConfigError::Io {
            action,
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            files::create_private_dir(dir).map_err(|e| io("create the directory of", e))?;
        }
        let text = Zeroizing::new(
            serde_yaml::to_string(self).expect("a client configuration always encodes as YAML"),
        );
        files::write_private(path, text.as_bytes(), false).map_err(|e| io("write", e))
    }

    /// Adds `context`; the first one added becomes current. Errors:
    /// `AlreadyExists`, `InvalidArgument`.
    pub fn add_context(&mut self, context: Context) -> Result<(), ConfigError> {
        context.validate("context")?;
        if self.contexts.iter().any(|c| c.name == context.name) {
            return Err(ConfigError::ContextExists(context.name));
        }
        if self.current_context.is_none() {
            self.current_context = Some(context.name.clone());
        }
        self.contexts.push(context);
        Ok(())
    }

    /// Removes context `name` (and unsets it if current). Errors: `NotFound`.
    pub fn remove_context(&mut self, name: &str) -> Result<Context, ConfigError> {
        let i = self
            .contexts
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| ConfigError::NoContext(name.to_owned()))?;
        if self.current_context.as_deref() == Some(name) {
            self.current_context = None;
        }
        Ok(self.contexts.remove(i))
    }

    /// Makes `name` the current context. Errors: `NotFound`.
    pub fn use_context(&mut self, name: &str) -> Result<(), ConfigError> {
        if !self.contexts.iter().any(|c| c.name == name) {
            return Err(ConfigError::NoContext(name.to_owned()));
        }
        self.current_context = Some(name.to_owned());
        Ok(())
    }

    /// Every context's name, with whether it is current.
    pub fn list(&self) -> Vec<(&str, bool)> {
        self.contexts
            .iter()
            .map(|c| {
                let name = c.name.as_str();
                (name, self.current_context.as_deref() == Some(name))
            })
            .collect()
    }

    /// Context `name`, or the current one. Errors: `NotFound`,
    /// `FailedPrecondition` (no current context).
    pub fn context(&self, name: Option<&str>) -> Result<&Context, ConfigError> {
        let name = match name {
            Some(name) => name,
            None => self
                .current_context
                .as_deref()
                .ok_or(ConfigError::NoCurrentContext)?,
        };
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| ConfigError::NoContext(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn context(name: &str) -> Context {
        Context {
            name: name.to_owned(),
            endpoint: "https://10.0.0.1:7443".to_owned(),
            ca_file: Some(PathBuf::from("ca.pem")),
            token: Some("zx_0123456789abcdef_secret".to_owned()),
            ..Context::default()
        }
    }

    #[test]
    fn contexts_are_added_chosen_listed_and_saved_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zixiao/config.yaml");
        let mut config = ClientConfigFile::load(&path).unwrap();
        assert_eq!(
            config,
            ClientConfigFile::default(),
            "a missing file is empty"
        );
        config.add_context(context("prod")).unwrap();
        config.add_context(context("lab")).unwrap();
        assert_eq!(config.list(), vec![("prod", true), ("lab", false)]);
        let err = config.add_context(context("lab")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        config.use_context("lab").unwrap();
        assert_eq!(
            config.use_context("nope").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        config.save(&path).unwrap();

        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let loaded = ClientConfigFile::load(&path).unwrap();
        assert_eq!(loaded, config);
        assert_eq!(loaded.context(None).unwrap().name, "lab");
        assert_eq!(loaded.context(Some("prod")).unwrap().name, "prod");

        let mut loaded = loaded;
        loaded.remove_context("lab").unwrap();
        assert_eq!(
            loaded.context(None).unwrap_err().kind(),
            ErrorKind::FailedPrecondition
        );
    }

    #[test]
    fn errors_name_the_field() {
        let path = Path::new("config.yaml");
        let unknown = "contexts:\n  - name: a\n    endpoint: https://h:1\n    tokn: x\n";
        let err = ClientConfigFile::parse(unknown, path).unwrap_err();
        let ConfigError::Parse { field, source, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(field, "contexts[0].tokn");
        assert!(
            source.to_string().contains("unknown field `tokn`"),
            "{source}"
        );
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);

        let wrong_type = "contexts:\n  - name: a\n    endpoint: [1]\n";
        match ClientConfigFile::parse(wrong_type, path).unwrap_err() {
            ConfigError::Parse { field, .. } => assert_eq!(field, "contexts[0].endpoint"),
            other => panic!("{other:?}"),
        }

        let cases = [
            ("contexts:\n  - name: a\n    endpoint: h:1\n", "contexts[0].endpoint"),
            (
                "contexts:\n  - name: a\n    endpoint: https://h:1\n    ca_file: x\n    ca_pem: y\n",
                "contexts[0].ca_pem",
            ),
            (
                "contexts:\n  - name: a\n    endpoint: https://h:1\n    client_cert_file: x\n",
                "contexts[0].client_key_file",
            ),
            (
                "contexts:\n  - name: a\n    endpoint: https://h:1\n  - name: a\n    endpoint: https://h:2\n",
                "contexts[1].name",
            ),
            (
                "current_context: b\ncontexts:\n  - name: a\n    endpoint: https://h:1\n",
                "current_context",
            ),
            ("contexts:\n  - name: 'a b'\n    endpoint: https://h:1\n", "contexts[0].name"),
            (
                "contexts:\n  - name: a\n    endpoint: http://10.0.0.1:1\n",
                "contexts[0].endpoint",
            ),
        ];
        for (text, want) in cases {
            match ClientConfigFile::parse(text, path).unwrap_err() {
                ConfigError::Invalid { field, .. } => assert_eq!(field, want, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn plain_http_is_for_loopback_only_and_an_empty_file_is_empty() {
        for ok in [
            "http://127.0.0.1:7443",
            "http://[::1]:7443",
            "http://localhost:1/x",
        ] {
            let c = Context {
                endpoint: ok.into(),
                ..context("a")
            };
            assert!(c.validate("c").is_ok(), "{ok}");
        }
        for bad in [
            "http://10.1.1.1:7443",
            "http://127.0.0.1.evil.test:1",
            "http://[fe80::1]:1",
        ] {
            let c = Context {
                endpoint: bad.into(),
                ..context("a")
            };
            assert!(c.validate("c").is_err(), "{bad}");
        }
        let empty = ClientConfigFile::parse("  \n", Path::new("c.yaml")).unwrap();
        assert_eq!(empty, ClientConfigFile::default());
    }

    #[test]
    fn the_file_is_found_by_path_then_environment_then_home() {
        let home = Some(PathBuf::from("/home/u/.config"));
        let explicit = Path::new("/etc/z.yaml");
        assert_eq!(
            ClientConfigFile::path_from(Some(explicit), Some("/env.yaml".into()), home.clone())
                .unwrap(),
            explicit
        );
        assert_eq!(
            ClientConfigFile::path_from(None, Some("/env.yaml".into()), home.clone()).unwrap(),
            Path::new("/env.yaml")
        );
        assert_eq!(
            ClientConfigFile::path_from(None, Some("".into()), home.clone()).unwrap(),
            Path::new("/home/u/.config/zixiao/config.yaml")
        );
        assert_eq!(
            ClientConfigFile::path_from(None, None, None)
                .unwrap_err()
                .kind(),
            ErrorKind::FailedPrecondition
        );
    }

    #[test]
    fn a_context_resolves_its_files_relative_to_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.pem"), "CA").unwrap();
        fs::write(dir.path().join("token"), "zx_from_file\n").unwrap();
        let with_file = Context {
            token: None,
            token_file: Some(PathBuf::from("token")),
            ..context("prod")
        };
        let resolved = with_file.resolve(dir.path()).unwrap();
        assert_eq!(resolved.ca_pem.as_deref(), Some("CA"));
        assert_eq!(
            resolved.token.as_deref().map(String::as_str),
            Some("zx_from_file")
        );
        let missing = Context {
            ca_file: Some(PathBuf::from("nope.pem")),
            ..context("prod")
        };
        assert_eq!(
            missing.resolve(dir.path()).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("ca.pem"), "CA").unwrap();
        let prod = context("prod");
        let mut config = ClientConfigFile::default();
        config.add_context(prod.clone()).unwrap();
        let resolved = prod.resolve(dir.path()).unwrap();
        for debug in [
            format!("{prod:?}"),
            format!("{config:?}"),
            format!("{resolved:?}"),
        ] {
            assert!(!debug.contains("secret"), "{debug}");
            assert!(debug.contains("redacted"), "{debug}");
        }
    }
}
