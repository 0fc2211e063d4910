//! Credentials from a docker-style `config.json` (`$DOCKER_CONFIG/config.json`
//! or `~/.docker/config.json`), as `docker login`, `podman login` and
//! `skopeo login` write them: `auths.<registry>.auth`, base64 of
//! `user:password` (or `username` and `password` fields). Credential
//! helpers (`credsStore`, `credHelpers`) run programs and are not used:
//! a registry only they know gets no credentials from here.
//!
//! ```
//! use zixiao_registry::docker_config;
//! // base64 of `me:s3cret`
//! let config = br#"{"auths": {"https://reg.example.com:5000/v1/": {"auth": "bWU6czNjcmV0"}}}"#;
//! let found = docker_config::credentials(config, "reg.example.com:5000").unwrap().unwrap();
//! assert_eq!((found.username.as_str(), found.password.as_str()), ("me", "s3cret"));
//! assert!(docker_config::credentials(config, "other.example.com").unwrap().is_none());
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use zixiao_core::driver::RegistryCredentials;
use zixiao_core::ErrorKind;

/// The names Docker Hub goes by in `auths` (`docker login` writes the first).
const DOCKER_HUB: [&str; 3] = ["index.docker.io", "registry-1.docker.io", "docker.io"];

/// Why a config file gave no credentials it should have. No variant holds
/// a password or an `auth` value.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    /// The file is not JSON of the expected shape.
    #[error("the docker config file is not valid")]
    Malformed(#[source] serde_json::Error),
    /// An `auth` entry is not base64 of `user:password`.
    #[error("auths.{key}.auth in the docker config file is not base64 of `user:password`")]
    BadAuth {
        /// The `auths` key.
        key: String,
    },
}

impl DockerConfigError {
    /// The class of this error: always `InvalidArgument` (the user's file).
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Where the config file is: `$DOCKER_CONFIG/config.json` when
/// `docker_config` (that variable) is set, else `~/.docker/config.json`
/// under `home`; `None` without either.
pub fn path(docker_config: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    match docker_config {
        Some(dir) => Some(dir.join("config.json")),
        None => home.map(|h| h.join(".docker").join("config.json")),
    }
}

/// The credentials `config` (the file's content) holds for `registry`
/// (`host[:port]` as an image reference names it), matching keys written
/// as a bare host or as a URL (`https://host/v1/`); `None` when it holds
/// none. Errors: `Malformed`, `BadAuth` (for that registry's entry only).
pub fn credentials(
    config: &[u8],
    registry: &str,
) -> Result<Option<RegistryCredentials>, DockerConfigError> {
    let file: ConfigFile = serde_json::from_slice(config).map_err(DockerConfigError::Malformed)?;
    let wanted = aliases(registry);
    let mut keys: Vec<&String> = file
        .auths
        .keys()
        .filter(|k| wanted.contains(&host_of(k)))
        .collect();
    // Several spellings of one registry: the one nearest the name asked for
    // wins, so the answer does not depend on the map's order.
    keys.sort_by_key(|k| (host_of(k) != registry, k.as_str()));
    for key in keys {
        let entry = &file.auths[key];
        if let Some(found) = decode(key, entry)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The names `registry` is known by in `auths`.
fn aliases(registry: &str) -> Vec<&str> {
    if DOCKER_HUB.contains(&registry) {
        DOCKER_HUB.to_vec()
    } else {
        vec![registry]
    }
}

/// `host[:port]` of an `auths` key: a bare host, or a URL with a scheme
/// and a path.
fn host_of(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

fn decode(key: &str, entry: &AuthEntry) -> Result<Option<RegistryCredentials>, DockerConfigError> {
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        if !username.is_empty() && !password.is_empty() {
            return Ok(Some(RegistryCredentials {
                username: username.clone(),
                password: password.clone(),
            }));
        }
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = || DockerConfigError::BadAuth {
        key: key.to_owned(),
    };
    let pair = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let pair = String::from_utf8(pair).map_err(|_| bad())?;
    match pair.split_once(':') {
        Some((username, password)) if !username.is_empty() => Ok(Some(RegistryCredentials {
            username: username.to_owned(),
            password: password.to_owned(),
        })),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(pair: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(pair)
    }

    fn found(config: &str, registry: &str) -> Option<(String, String)> {
        credentials(config.as_bytes(), registry)
            .expect("a valid config")
            .map(|c| (c.username, c.password))
    }

    #[test]
    fn entries_match_by_host_and_port_however_the_key_is_written() {
        let config = format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{}"}},
                "https://reg.example.com/v1/": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "plain.example.com": {{"username": "u", "password": "p:w"}}
            }}, "credsStore": "desktop"}}"#,
            auth("local:pw"),
            auth("me:s3:cret"),
            auth("hub:h")
        );
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        assert_eq!(found(&config, "127.0.0.1:5000"), pair("local", "pw"));
        assert_eq!(found(&config, "127.0.0.1:5001"), None, "another port");
        assert_eq!(found(&config, "reg.example.com"), pair("me", "s3:cret"));
        assert_eq!(found(&config, "docker.io"), pair("hub", "h"));
        assert_eq!(found(&config, "plain.example.com"), pair("u", "p:w"));
        assert_eq!(found(&config, "example.com"), None);
        assert_eq!(found("{}", "docker.io"), None, "no auths at all");
        assert_eq!(
            found(r#"{"auths": {"x.io": {}}}"#, "x.io"),
            None,
            "an empty entry"
        );
    }

    #[test]
    fn a_bad_file_or_entry_is_refused_without_showing_its_secret() {
        let err = credentials(b"{not json", "x.io").expect_err("malformed");
        assert!(matches!(err, DockerConfigError::Malformed(_)), "{err}");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        for value in ["!!!", &auth("no-colon-s3cret"), &auth(":s3cret")] {
            let config = format!(r#"{{"auths": {{"x.io": {{"auth": "{value}"}}}}}}"#);
            let err = credentials(config.as_bytes(), "x.io").expect_err(value);
            let shown = format!("{err} {err:?}");
            assert!(shown.contains("auths.x.io.auth"), "{shown}");
            assert!(
                !shown.contains("s3cret") && !shown.contains(value),
                "{shown}"
            );
        }
        // Another registry's broken entry does not stop this one.
        let config = format!(
            r#"{{"auths": {{"x.io": {{"auth": "!!!"}}, "y.io": {{"auth": "{}"}}}}}}"#,
            auth("a:b")
        );
        assert_eq!(found(&config, "y.io"), Some(("a".into(), "b".into())));
    }

    #[test]
    fn the_file_is_under_docker_config_or_home() {
        let home = Path::new("/home/me");
        assert_eq!(
            path(Some(Path::new("/etc/dc")), Some(home)),
            Some(PathBuf::from("/etc/dc/config.json"))
        );
        assert_eq!(
            path(None, Some(home)),
            Some(PathBuf::from("/home/me/.docker/config.json"))
        );
        assert_eq!(path(None, None), None);
    }
}
