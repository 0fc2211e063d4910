//! Bearer tokens: a user's token for the API, and a join token an agent
//! presents once to get its node certificate.
//!
//! A token is printed once, when issued, as `zx_<id>_<secret>`: `id` is 16
//! hexadecimal digits (64 random bits) under which the token is stored at
//! `/zixiao/auth/tokens/<id>`; `secret` is 64 hexadecimal digits (256
//! random bits from the operating system). The store keeps only the
//! SHA-256 of the secret, so a copy of the store (a backup, an etcd
//! snapshot) lets nobody in. A fast hash is enough here, unlike for
//! passwords: a slow hash (argon2, bcrypt) defends low-entropy secrets
//! against guessing, and 2^256 secrets cannot be guessed at any speed; a
//! fast one also keeps verification from being a way to load the server.
//! The hashes are compared in constant time ([`subtle`]), and the answer to
//! an unknown id is the same as to a wrong secret.
//!
//! A join token is single-use unless made `reusable`: its use is a
//! compare-and-swap on its stored revision, so of two agents racing with
//! one token exactly one wins.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;
use zixiao_core::store::{decode, put_object, Precondition, Revision, StoredObject, Txn};
use zixiao_core::ErrorKind;

use crate::accounts::{lost_race, AuthStore, Role, User};
use crate::error::{AuthError, Rejection};
use crate::identity::{Credential, Identity};
use crate::names::{NodeName, ProjectName, TokenId, UserName};

/// How every printed token starts.
pub const TOKEN_PREFIX: &str = "zx_";

/// How many random bytes a secret has (256 bits).
const SECRET_BYTES: usize = 32;

/// How often a join token's use retries a lost compare-and-swap before
/// giving up with `Conflict` (each retry re-reads, and almost always finds
/// the token used).
const CONSUME_ATTEMPTS: usize = 8;

/// Lowercase hexadecimal digits of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Random bytes from the operating system.
fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| {
        AuthError::FailedPrecondition(format!(
            "the operating system gave no random bytes for a token: {e}"
        ))
    })?;
    Ok(bytes)
}

/// A token as printed (`zx_<id>_<secret>`), handed out once when issued.
/// Its `Debug` shows only the id; the text is wiped from memory on drop.
#[derive(Clone)]
pub struct TokenSecret {
    id: TokenId,
    text: Zeroizing<String>,
}

impl TokenSecret {
    /// The token's id (public).
    pub fn id(&self) -> &TokenId {
        &self.id
    }

    /// The whole token, to print once or to send as a bearer token.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSecret({TOKEN_PREFIX}{}_<redacted>)", self.id)
    }
}

/// The SHA-256 of a token's secret, as stored.
#[derive(Clone, PartialEq, Eq)]
struct SecretHash([u8; 32]);

impl SecretHash {
    fn of(secret: &[u8; SECRET_BYTES]) -> Self {
        SecretHash(Sha256::digest(secret).into())
    }

    /// Equality in time independent of where the hashes differ.
    fn matches(&self, other: &SecretHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for SecretHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for SecretHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        unhex::<32>(&text)
            .map(SecretHash)
            .ok_or_else(|| serde::de::Error::custom("a SHA-256 is 64 hexadecimal digits"))
    }
}

/// A token's id and secret, parsed from what a caller presented.
struct Presented {
    id: TokenId,
    secret: Zeroizing<[u8; SECRET_BYTES]>,
}

impl Presented {
    /// Parses `zx_<16 hex>_<64 hex>`. Errors: [`Rejection::MalformedToken`].
    fn parse(text: &str) -> Result<Self, Rejection> {
        let rest = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(Rejection::MalformedToken)?;
        let (id, secret) = rest.split_once('_').ok_or(Rejection::MalformedToken)?;
        let id = TokenId::try_from(id).map_err(|_| Rejection::MalformedToken)?;
        let secret = unhex::<SECRET_BYTES>(secret).ok_or(Rejection::MalformedToken)?;
        Ok(Presented {
            id,
            secret: Zeroizing::new(secret),
        })
    }
}

/// A single-use join token's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinUse {
    /// The node that joined with it.
    pub node: NodeName,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a token is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TokenKind {
    /// A user's bearer token for the API.
    User {
        /// The role it grants, at most its owner's (and capped by the
        /// owner's current role at each use).
        role: Role,
        /// The projects it is limited to, within its owner's; `None`: all of
        /// its owner's, as they change.
        #[serde(default)]
        projects: Option<BTreeSet<ProjectName>>,
    },
    /// An agent's token to join the cluster (get its node certificate).
    Join {
        /// Whether it may be used more than once.
        reusable: bool,
        /// The use of a single-use token, once used.
        #[serde(default)]
        used: Option<JoinUse>,
    },
}

impl TokenKind {
    /// `user` or `join`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenKind::User { .. } => "user",
            TokenKind::Join { .. } => "join",
        }
    }
}

/// A token as stored: everything but its secret, of which only the
/// SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Its id, the public half of the printed token.
    pub id: TokenId,
    /// What it is for.
    pub kind: TokenKind,
    /// The user it belongs to (for a join token: who made it). It stops
    /// working when that user is deleted.
    pub owner: UserName,
    /// When it stops working (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it was revoked.
    #[serde(default)]
    pub revoked: bool,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// The store revision that created the owner's user record: a user
    /// deleted and made again under the same name does not get the old
    /// user's tokens back.
    owner_incarnation: Revision,
    secret_sha256: SecretHash,
    /// The store revision it was read at.
    #[serde(skip)]
    pub revision: Revision,
}

impl StoredObject for Token {
    const PREFIX: &'static str = "/zixiao/auth/tokens/";
    const KIND: &'static str = "token";

    fn id(&self) -> &str {
        self.id.as_str()
    }

    fn set_revision(&mut self, revision: Revision) {
        self.revision = revision;
    }

    fn revision(&self) -> Revision {
        self.revision
    }
}

impl Token {
    /// Whether it has expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

fn expiry(now: DateTime<Utc>, ttl: Option<Duration>) -> Result<Option<DateTime<Utc>>, AuthError> {
    ttl.map(|ttl| {
        chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|ttl| now.checked_add_signed(ttl))
            .ok_or_else(|| AuthError::invalid("ttl", "too long"))
    })
    .transpose()
}

impl AuthStore {
    /// Issues a user token for `owner` granting `role` (at most the
    /// owner's) in `projects` (within the owner's; `None`: all of the
    /// owner's), expiring after `ttl` if given. The secret is returned once
    /// and never stored. Errors: `NotFound` (the owner), `InvalidArgument`
    /// (more than the owner has), `Conflict` (the owner changed meanwhile),
    /// `Unavailable`.
    pub async fn issue_user_token(
        &self,
        owner: &UserName,
        role: Role,
        projects: Option<BTreeSet<ProjectName>>,
        ttl: Option<Duration>,
    ) -> Result<(Token, TokenSecret), AuthError> {
        let (user, incarnation) = self.owner(owner).await?;
        if role > user.role {
            return Err(AuthError::invalid(
                "role",
                format!("{owner} is a {}; a token cannot grant {role}", user.role),
            ));
        }
        if let (Some(projects), false) = (&projects, user.role == Role::Admin) {
            if let Some(outside) = projects.iter().find(|p| !user.projects.contains(*p)) {
                return Err(AuthError::invalid(
                    "projects",
                    format!("{owner} is not a member of project `{outside}`"),
                ));
            }
        }
        self.issue(&user, incarnation, TokenKind::User { role, projects }, ttl)
            .await
    }

    /// Issues a join token made by `owner` (an admin, checked by the
    /// caller's authorization), single-use unless `reusable`, expiring
    /// after `ttl` if given. Errors: `NotFound` (the owner), `Unavailable`.
    pub async fn issue_join_token(
        &self,
        owner: &UserName,
        reusable: bool,
        ttl: Option<Duration>,
    ) -> Result<(Token, TokenSecret), AuthError> {
        let (user, incarnation) = self.owner(owner).await?;
        let kind = TokenKind::Join {
            reusable,
            used: None,
        };
        self.issue(&user, incarnation, kind, ttl).await
    }

    async fn owner(&self, owner: &UserName) -> Result<(User, Revision), AuthError> {
        self.user_with_incarnation(owner)
            .await?
            .ok_or_else(|| AuthError::NotFound {
                what: format!("user `{owner}`"),
            })
    }

    /// Stores a new token of `owner` (as read, at `incarnation`).
    async fn issue(
        &self,
        owner: &User,
        incarnation: Revision,
        kind: TokenKind,
        ttl: Option<Duration>,
    ) -> Result<(Token, TokenSecret), AuthError> {
        let now = self.clock.now();
        let secret = Zeroizing::new(random::<SECRET_BYTES>()?);
        let id = TokenId::from_bytes(random::<8>()?);
        let mut token = Token {
            id: id.clone(),
            kind,
            owner: owner.name.clone(),
            expires_at: expiry(now, ttl)?,
            revoked: false,
            created_at: now,
            owner_incarnation: incarnation,
            secret_sha256: SecretHash::of(&secret),
            revision: 0,
        };
        // The owner must be as it was read: a demotion committed meanwhile
        // fails this issue instead of letting it grant the old role.
        let txn = put_object(Txn::new(), &token).check(
            User::key_for(owner.name.as_str()),
            Precondition::Revision(owner.revision),
        );
        token.revision = self.store.commit(txn).await.map_err(|e| match e.kind() {
            // 64 random bits colliding is a broken random source.
            ErrorKind::AlreadyExists => AuthError::FailedPrecondition(format!(
                "token id {id} exists already; the random source is broken"
            )),
            _ if lost_race(&e) => AuthError::Conflict {
                what: format!("user `{}`", owner.name),
            },
            _ => AuthError::Store(e),
        })?;
        let text = Zeroizing::new(format!("{TOKEN_PREFIX}{id}_{}", hex(&*secret)));
        Ok((token, TokenSecret { id, text }))
    }

    /// Token `id` (without its secret). Errors: `NotFound`, `Unavailable`.
    pub async fn get_token(&self, id: &TokenId) -> Result<Token, AuthError> {
        self.find_token(id)
            .await?
            .ok_or_else(|| AuthError::NotFound {
                what: format!("token {id}"),
            })
    }

    async fn find_token(&self, id: &TokenId) -> Result<Option<Token>, AuthError> {
        match self.store.get(&Token::key_for(id.as_str())).await? {
            Some(kv) => Ok(Some(decode(&kv)?)),
            None => Ok(None),
        }
    }

    /// Every token (without secrets), in id order.
    pub async fn list_tokens(&self) -> Result<Vec<Token>, AuthError> {
        let listing = self.store.list(Token::PREFIX).await?;
        listing
            .items
            .iter()
            .map(|kv| decode(kv).map_err(AuthError::from))
            .collect()
    }

    /// Revokes token `id`: it stops working at once. Idempotent. Errors:
    /// `NotFound`, `Conflict` (kept changing), `Unavailable`.
    pub async fn revoke_token(&self, id: &TokenId) -> Result<Token, AuthError> {
        for _ in 0..CONSUME_ATTEMPTS {
            let mut token = self.get_token(id).await?;
            if token.revoked {
                return Ok(token);
            }
            token.revoked = true;
            match self.store.commit(put_object(Txn::new(), &token)).await {
                Ok(revision) => {
                    token.revision = revision;
                    return Ok(token);
                }
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Conflict {
            what: format!("token {id}"),
        })
    }

    /// Deletes token `id`. Idempotent.
    pub async fn delete_token(&self, id: &TokenId) -> Result<(), AuthError> {
        self.store
            .commit(Txn::new().delete(Token::key_for(id.as_str()), Precondition::None))
            .await?;
        Ok(())
    }

    /// The token `presented` names, if its secret matches and it is in
    /// force (not revoked, not expired, its owner the same user that it
    /// was issued to), with its owner. Errors: `Unauthenticated`,
    /// `Unavailable`.
    async fn verify(&self, presented: &str) -> Result<(Token, User), AuthError> {
        let presented = Presented::parse(presented)?;
        let hash = SecretHash::of(&presented.secret);
        let Some(token) = self.find_token(&presented.id).await? else {
            return Err(Rejection::InvalidToken.into());
        };
        if !token.secret_sha256.matches(&hash) {
            return Err(Rejection::InvalidToken.into());
        }
        if token.revoked {
            return Err(Rejection::Revoked.into());
        }
        if token.expired(self.clock.now()) {
            return Err(Rejection::Expired.into());
        }
        match self.user_with_incarnation(&token.owner).await? {
            Some((user, incarnation)) if incarnation == token.owner_incarnation => {
                Ok((token, user))
            }
            _ => Err(Rejection::UnknownUser(token.owner.to_string()).into()),
        }
    }

    /// The user a bearer token names, with the role and projects in force:
    /// the token's, capped by its owner's now. Errors: `Unauthenticated`
    /// (see [`Rejection`]; a join token is `WrongKind`), `Unavailable`.
    pub async fn authenticate_token(&self, presented: &str) -> Result<Identity, AuthError> {
        let (token, owner) = self.verify(presented).await?;
        let TokenKind::User { role, projects } = &token.kind else {
            return Err(Rejection::WrongKind {
                kind: token.kind.as_str(),
                purpose: "call the API",
            }
            .into());
        };
        let role = (*role).min(owner.role);
        let projects = match (projects, owner.role) {
            (None, _) => owner.projects,
            (Some(projects), Role::Admin) => projects.clone(),
            (Some(projects), _) => projects.intersection(&owner.projects).cloned().collect(),
        };
        Ok(Identity::User {
            name: owner.name,
            role,
            projects,
            via: Credential::Token(token.id),
        })
    }

    /// Uses join token `presented` for `node`: a single-use token is
    /// marked used by `node` in a compare-and-swap, so of concurrent uses
    /// exactly one succeeds; a reusable one is only verified. Returns the
    /// token as it is after the use. Errors: `Unauthenticated` (see
    /// [`Rejection`]; used already: `AlreadyUsed`; a user token:
    /// `WrongKind`), `Conflict`, `Unavailable`.
    pub async fn consume_join_token(
        &self,
        presented: &str,
        node: &NodeName,
    ) -> Result<Token, AuthError> {
        for _ in 0..CONSUME_ATTEMPTS {
            let (mut token, _) = self.verify(presented).await?;
            match &mut token.kind {
                TokenKind::Join { reusable: true, .. } => return Ok(token),
                TokenKind::Join { used: Some(_), .. } => return Err(Rejection::AlreadyUsed.into()),
                TokenKind::Join { used, .. } => {
                    *used = Some(JoinUse {
                        node: node.clone(),
                        at: self.clock.now(),
                    });
                }
                TokenKind::User { .. } => {
                    return Err(Rejection::WrongKind {
                        kind: "user",
                        purpose: "join a node",
                    }
                    .into())
                }
            }
            match self.store.commit(put_object(Txn::new(), &token)).await {
                Ok(revision) => {
                    token.revision = revision;
                    return Ok(token);
                }
                // Someone else changed it first (used or revoked it):
                // re-read and judge again.
                Err(e) if lost_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Conflict {
            what: "the join token".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex::<4>("0001abff"), Some(bytes));
        assert_eq!(unhex::<4>("0001ABFF"), None);
        assert_eq!(unhex::<4>("0001ab"), None);
    }

    #[test]
    fn presented_tokens_parse_only_in_their_one_form() {
        let secret = "ab".repeat(32);
        let good = format!("zx_0123456789abcdef_{secret}");
        assert!(Presented::parse(&good).is_ok());
        for bad in [
            String::new(),
            format!("zy_0123456789abcdef_{secret}"),
            format!("zx_0123456789abcdef{secret}"),
            format!("zx_0123456789abcde_{secret}"),
            format!("zx_0123456789abcdef_{secret}00"),
            format!("zx_0123456789abcdef_{}", "zz".repeat(32)),
            format!("zx_0123456789abcdef_{secret} "),
        ] {
            assert_eq!(
                Presented::parse(&bad).err(),
                Some(Rejection::MalformedToken),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_secret_hash_never_prints() {
        let hash = SecretHash::of(&[7u8; SECRET_BYTES]);
        assert_eq!(format!("{hash:?}"), "<redacted>");
    }
}
