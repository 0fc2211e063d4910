//! [`CloudInit`]: the first-boot data of a VM (cloud-init's NoCloud data
//! source): user data, optional meta-data and network configuration
//! overrides, and SSH keys. The driver writes it to a small read-only
//! `cidata` disk, which cloud-init in the guest finds by its label.
//!
//! It travels inside the spec, as text, rather than as a host path: a
//! remote caller's files are read on the caller's side and a node never
//! opens a path it was sent. User data may hold secrets (a password hash,
//! a token in a script), so [`CloudInit`]'s `Debug` shows sizes only and
//! nothing in Zixiao logs it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The most bytes of cloud-init data one instance may carry, all parts
/// together: OpenStack Nova's limit for user data, and small enough that
/// specs stay cheap to store and send.
pub const MAX_CLOUD_INIT_BYTES: usize = 64 * 1024;

/// The most SSH keys one instance may carry.
pub const MAX_SSH_KEYS: usize = 32;

/// First-boot data for a VM, as cloud-init's NoCloud data source reads it.
///
/// ```
/// use zixiao_core::model::CloudInit;
///
/// let init = CloudInit {
///     user_data: Some("#cloud-config\nruncmd:\n  - echo hello\n".to_owned()),
///     ssh_authorized_keys: vec!["ssh-ed25519 AAAAC3Nza me@laptop".to_owned()],
///     ..CloudInit::default()
/// };
/// init.validate("spec.cloud_init").unwrap();
/// // Debug never shows the data itself.
/// assert!(!format!("{init:?}").contains("echo hello"));
/// ```
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// The guest's user data (`#cloud-config` YAML, a script, or any
    /// format cloud-init reads), written as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Meta-data to use instead of the one Zixiao writes (which gives
    /// `instance-id` (the instance's id), `local-hostname` (its name) and
    /// the SSH keys). With it, SSH keys belong in it or in the user data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<String>,
    /// Network configuration (cloud-init's version 2 format) to use
    /// instead of the one Zixiao writes from the instance's network
    /// attachments (each NIC by its MAC, with its address and gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<String>,
    /// Public keys let in as the image's default user (`ssh-ed25519 AAAA…
    /// comment`, one key each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
}

impl fmt::Debug for CloudInit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = |part: &Option<String>| part.as_ref().map(|text| Bytes(text.len()));
        f.debug_struct("CloudInit")
            .field("user_data", &size(&self.user_data))
            .field("meta_data", &size(&self.meta_data))
            .field("network_config", &size(&self.network_config))
            .field("ssh_authorized_keys", &self.ssh_authorized_keys.len())
            .finish()
    }
}

/// A size shown in place of data.
struct Bytes(usize);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0)
    }
}

impl CloudInit {
    /// All parts' sizes together, in bytes.
    pub fn size(&self) -> usize {
        [&self.user_data, &self.meta_data, &self.network_config]
            .into_iter()
            .flatten()
            .map(String::len)
            .sum::<usize>()
            + self
                .ssh_authorized_keys
                .iter()
                .map(String::len)
                .sum::<usize>()
    }

    /// Whether it carries nothing at all.
    pub fn is_empty(&self) -> bool {
        self.user_data.is_none()
            && self.meta_data.is_none()
            && self.network_config.is_none()
            && self.ssh_authorized_keys.is_empty()
    }

    /// Checks it, naming fields under `at` (`spec.cloud_init`): at most
    /// [`MAX_CLOUD_INIT_BYTES`] in all, no NUL anywhere, each SSH key one
    /// line that looks like an OpenSSH public key, and keys only with the
    /// meta-data Zixiao writes. Errors: `InvalidArgument`.
    pub fn validate(&self, at: &str) -> Result<(), Error> {
        let size = self.size();
        if size > MAX_CLOUD_INIT_BYTES {
            return Err(Error::invalid(
                at,
                format!("{size} bytes; at most {MAX_CLOUD_INIT_BYTES} (64 KiB) are allowed"),
            ));
        }
        let parts = [
            ("user_data", &self.user_data),
            ("meta_data", &self.meta_data),
            ("network_config", &self.network_config),
        ];
        for (name, part) in parts {
            if part.as_deref().is_some_and(|text| text.contains('\0')) {
                return Err(Error::invalid(format!("{at}.{name}"), "contains NUL"));
            }
        }
        if self.ssh_authorized_keys.len() > MAX_SSH_KEYS {
            return Err(Error::invalid(
                format!("{at}.ssh_authorized_keys"),
                format!(
                    "{} keys; at most {MAX_SSH_KEYS} are allowed",
                    self.ssh_authorized_keys.len()
                ),
            ));
        }
        for (i, key) in self.ssh_authorized_keys.iter().enumerate() {
            check_ssh_key(key)
                .map_err(|why| Error::invalid(format!("{at}.ssh_authorized_keys[{i}]"), why))?;
        }
        if self.meta_data.is_some() && !self.ssh_authorized_keys.is_empty() {
            return Err(Error::invalid(
                format!("{at}.ssh_authorized_keys"),
                "with your own meta_data, put the keys in it (public-keys) or in the user data",
            ));
        }
        Ok(())
    }
}

/// Whether `key` is one OpenSSH public key line: a known key type, base64
/// data, an optional comment, and no line break (a second line would be
/// a second, unchecked entry in `authorized_keys`).
fn check_ssh_key(key: &str) -> Result<(), String> {
    if key.contains(['\n', '\r', '\0']) {
        return Err("one key per entry: no line breaks".to_owned());
    }
    let mut words = key.split_whitespace();
    let (Some(kind), Some(data)) = (words.next(), words.next()) else {
        return Err("not `TYPE BASE64 [COMMENT]`, as in a .pub file".to_owned());
    };
    let known = kind.starts_with("ssh-")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-ssh-")
        || kind.starts_with("sk-ecdsa-sha2-");
    if !known {
        return Err(format!("`{kind}` is not an SSH public key type"));
    }
    let base64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=');
    if !data.chars().all(base64) {
        return Err("the key data is not base64".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm9 me@laptop".to_owned()
    }

    #[test]
    fn bad_data_is_refused_naming_the_field() {
        let cases = [
            (
                CloudInit {
                    user_data: Some("x".repeat(MAX_CLOUD_INIT_BYTES + 1)),
                    ..CloudInit::default()
                },
                "spec.cloud_init",
            ),
            (
                CloudInit {
                    network_config: Some("version: 2\0".to_owned()),
                    ..CloudInit::default()
                },
                "spec.cloud_init.network_config",
            ),
            (
                CloudInit {
                    ssh_authorized_keys: vec![key(), format!("{}\nssh-rsa AAAA evil", key())],
                    ..CloudInit::default()
                },
                "spec.cloud_init.ssh_authorized_keys[1]",
            ),
            (
                CloudInit {
                    ssh_authorized_keys: vec!["password123".to_owned()],
                    ..CloudInit::default()
                },
                "spec.cloud_init.ssh_authorized_keys[0]",
            ),
            (
                CloudInit {
                    meta_data: Some("instance-id: x\n".to_owned()),
                    ssh_authorized_keys: vec![key()],
                    ..CloudInit::default()
                },
                "spec.cloud_init.ssh_authorized_keys",
            ),
        ];
        for (init, field) in cases {
            let error = init.validate("spec.cloud_init").expect_err(field);
            assert_eq!(error.kind(), crate::ErrorKind::InvalidArgument);
            assert!(
                error.to_string().starts_with(&format!("invalid {field}:")),
                "{error}"
            );
        }
    }

    #[test]
    fn debug_shows_sizes_and_never_the_data() {
        let init = CloudInit {
            user_data: Some("#cloud-config\npassword: hunter2\n".to_owned()),
            ssh_authorized_keys: vec![key()],
            ..CloudInit::default()
        };
        init.validate("spec.cloud_init").expect("valid");
        let shown = format!("{init:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("AAAA"),
            "{shown}"
        );
        assert!(shown.contains("<32 bytes>"), "{shown}");
    }
}
