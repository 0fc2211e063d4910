//! Validated names of the things access control talks about: users,
//! projects, nodes and token ids. Each is built only through `TryFrom`, so
//! a name that reaches a store key, a certificate or an audit record has
//! been checked once, at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused. Its `Display` is the reason alone; whoever
/// knows the field names it (see [`crate::AuthError::InvalidArgument`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidName {
    /// What kind of name it was (`project name`).
    pub what: &'static str,
    /// Why it was refused.
    pub reason: String,
}

/// Checks `value` against: 1 to `max` bytes, each accepted by `allowed`,
/// starting and ending with a lowercase letter or a digit.
fn check(
    what: &'static str,
    value: &str,
    max: usize,
    allowed: fn(char) -> bool,
    alphabet: &str,
) -> Result<(), InvalidName> {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let reason = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.len() > max {
        format!(
            "`{value}` is {} characters long; at most {max} are allowed",
            value.len()
        )
    } else if let Some(c) = value.chars().find(|c| !allowed(*c)) {
        format!(
            "`{value}` contains `{}`; only {alphabet} are allowed",
            c.escape_default()
        )
    } else if !value.starts_with(alnum) || !value.ends_with(alnum) {
        format!("`{value}` must start and end with a lowercase letter or a digit")
    } else {
        return Ok(());
    };
    Err(InvalidName { what, reason })
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $allowed:expr, $alphabet:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;

            fn try_from(value: String) -> Result<Self, InvalidName> {
                check($what, &value, $max, $allowed, $alphabet)?;
                Ok($name(value))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidName;

            fn try_from(value: &str) -> Result<Self, InvalidName> {
                $name::try_from(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

fn dns_label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn user_char(c: char) -> bool {
    dns_label_char(c) || c == '.' || c == '_'
}

fn dns_name_char(c: char) -> bool {
    dns_label_char(c) || c == '.'
}

name_type!(
    /// A project's name: a DNS label (1 to 63 characters of `a-z`, `0-9`
    /// and `-`). The project [`ProjectName::default_project`] exists
    /// without being created.
    ///
    /// ```
    /// use zixiao_auth::ProjectName;
    /// assert!(ProjectName::try_from("web-1").is_ok());
    /// assert!(ProjectName::try_from("Web_1").is_err());
    /// ```
    ProjectName,
    "project name",
    63,
    dns_label_char,
    "lowercase letters, digits and `-`"
);

name_type!(
    /// A user's name: 1 to 63 characters of `a-z`, `0-9`, `-`, `.` and `_`,
    /// starting and ending with a letter or digit. It is part of a user
    /// certificate's identity (`zixiao://user/<name>`).
    ///
    /// ```
    /// use zixiao_auth::UserName;
    /// assert!(UserName::try_from("ci.bot_1").is_ok());
    /// assert!(UserName::try_from("alice/../admin").is_err());
    /// ```
    UserName,
    "user name",
    63,
    user_char,
    "lowercase letters, digits, `-`, `.` and `_`"
);

name_type!(
    /// A node's name, as its certificate names it (`zixiao://node/<name>`):
    /// a lowercase DNS name of up to 253 characters (`worker-1`,
    /// `worker-1.dc1`).
    ///
    /// ```
    /// use zixiao_auth::NodeName;
    /// assert!(NodeName::try_from("worker-1.dc1").is_ok());
    /// assert!(NodeName::try_from("worker 1").is_err());
    /// ```
    NodeName,
    "node name",
    253,
    dns_name_char,
    "lowercase letters, digits, `-` and `.`"
);

impl ProjectName {
    /// The name of the project every deployment has without creating it.
    pub const DEFAULT: &'static str = "default";

    /// The `default` project.
    pub fn default_project() -> Self {
        ProjectName(Self::DEFAULT.to_owned())
    }

    /// Whether this is the `default` project.
    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

/// A token's id: 16 lowercase hexadecimal digits (64 random bits), the
/// public half of a token, under which it is stored and named in audit
/// records. Knowing an id grants nothing.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    /// How many hexadecimal digits an id has.
    pub const LEN: usize = 16;

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of 8 random bytes.
    pub(crate) fn from_bytes(bytes: [u8; 8]) -> Self {
        TokenId(crate::token::hex(&bytes))
    }
}

impl TryFrom<String> for TokenId {
    type Error = InvalidName;

    fn try_from(value: String) -> Result<Self, InvalidName> {
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if value.len() == Self::LEN && value.chars().all(hex) {
            Ok(TokenId(value))
        } else {
            Err(InvalidName {
                what: "token id",
                reason: format!("a token id is {} lowercase hexadecimal digits", Self::LEN),
            })
        }
    }
}

impl TryFrom<&str> for TokenId {
    type Error = InvalidName;

    fn try_from(value: &str) -> Result<Self, InvalidName> {
        TokenId::try_from(value.to_owned())
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> String {
        id.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_what_could_escape_a_key_or_a_uri() {
        for bad in ["", "a/b", "a b", "-a", "a-", "A", "a\u{0}", "..", "a:b"] {
            assert!(ProjectName::try_from(bad).is_err(), "project {bad:?}");
            assert!(UserName::try_from(bad).is_err(), "user {bad:?}");
            assert!(NodeName::try_from(bad).is_err(), "node {bad:?}");
        }
        assert!(ProjectName::try_from("a".repeat(64)).is_err());
        assert!(NodeName::try_from("a".repeat(253)).is_ok());
        assert!(NodeName::try_from("a".repeat(254)).is_err());
        assert!(
            ProjectName::try_from("a.b").is_err(),
            "a DNS label has no dot"
        );
    }

    #[test]
    fn names_deserialize_through_their_checks() {
        let err = serde_json::from_str::<ProjectName>("\"Web\"").unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
        let ok: UserName = serde_json::from_str("\"alice\"").unwrap();
        assert_eq!(ok.as_str(), "alice");
    }

    #[test]
    fn token_ids_are_sixteen_hex_digits() {
        assert!(TokenId::try_from("0123456789abcdef").is_ok());
        assert!(TokenId::try_from("0123456789ABCDEF").is_err());
        assert!(TokenId::try_from("0123456789abcde").is_err());
        assert!(TokenId::try_from("0123456789abcdeg").is_err());
    }
}
