//! The options of an image pull, as every frontend builds them: the
//! credentials the caller gives, else those of the user's docker-style
//! config file, read here, on the caller's machine (a server never reads
//! its own user's), the registries that may be reached over plain HTTP,
//! the CA certificates trusted besides the node's roots, and the platform
//! to take from a multi-platform image.

use zixiao_core::driver::{ImagePlatform, PullOptions, RegistryCa, RegistryCredentials};
use zixiao_core::model::ImageKind;
use zixiao_core::{Error, ImageRef, Result};
use zixiao_registry::docker_config;

/// The options to pull `reference`: with `credentials` when given, else
/// with the entry for its registry in the user's docker-style config file
/// (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), else
/// anonymous; trusting `registry_cas` besides the node's roots; taking
/// `platform`'s manifest (the node's own when `None`); wanting an image of
/// `kind` (`container`, `disk`, `kernel`, `initrd`; `None`: whatever the
/// artifact's media types say). Errors: `InvalidArgument` on `kind` (not
/// a kind) or `docker-config` (the file cannot be read or parsed).
pub fn pull_options(
    reference: &ImageRef,
    credentials: Option<RegistryCredentials>,
    insecure_registries: Vec<String>,
    registry_cas: Vec<RegistryCa>,
    platform: Option<ImagePlatform>,
    kind: Option<&str>,
) -> Result<PullOptions> {
    let kind = kind.map(str::parse::<ImageKind>).transpose()?;
    let credentials = match credentials {
        Some(credentials) => Some(credentials),
        None => docker_config_credentials(reference.registry())?,
    };
    Ok(PullOptions {
        credentials,
        insecure_registries,
        registry_cas,
        platform,
        kind,
    })
}

/// The credentials a caller gives as a user name and a password: both or
/// neither. Errors: `InvalidArgument` naming the missing one (`username`,
/// `password`).
pub fn registry_credentials(
    username: Option<String>,
    password: Option<String>,
) -> Result<Option<RegistryCredentials>> {
    match (username, password) {
        (Some(username), Some(password)) => Ok(Some(RegistryCredentials { username, password })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::invalid("password", "a user name needs a password")),
        (None, Some(_)) => Err(Error::invalid("username", "a password needs a user name")),
    }
}

/// The credentials for `registry` in the user's docker-style config file;
/// `None` without a file or an entry.
fn docker_config_credentials(registry: &str) -> Result<Option<RegistryCredentials>> {
    let docker_config = std::env::var_os("DOCKER_CONFIG").map(std::path::PathBuf::from);
    let home = dirs::home_dir();
    let Some(path) = docker_config::path(docker_config.as_deref(), home.as_deref()) else {
        return Ok(None);
    };
    let config = match std::fs::read(&path) {
        Ok(config) => config,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::invalid(
                "docker-config",
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    docker_config::credentials(&config, registry).map_err(|e| {
        let cause = std::error::Error::source(&e).map(|s| format!(": {s}"));
        Error::invalid(
            "docker-config",
            format!("{} ({e}{})", path.display(), cause.unwrap_or_default()),
        )
    })
}
