//! Registry authentication: reading a `WWW-Authenticate` challenge, and
//! answering it with basic credentials or a bearer token fetched from the
//! token server the challenge names (the Docker token flow).

use base64::Engine;
use hyper::StatusCode;
use serde::Deserialize;
use zixiao_core::driver::RegistryCredentials;

use crate::error::RegistryError;
use crate::transport::{read_limited, StatusError, Transport, Url};

/// The largest token-server answer read.
const MAX_TOKEN_BYTES: u64 = 1024 * 1024;

/// What a registry's 401 asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=…`: the credentials themselves.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value; `None` for a scheme this client does
/// not answer.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, r)| (v, r))
        };
        match key.as_str() {
            "realm" => realm = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            "scope" => scope = Some(value.to_owned()),
            _ => {}
        }
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
        scope,
    })
}

/// `Basic base64(user:password)`.
pub(crate) fn basic(credentials: &RegistryCredentials) -> String {
    let pair = format!("{}:{}", credentials.username, credentials.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Percent-encodes a query value (everything but the unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The `Authorization` value that answers `challenge` for a pull of
/// `repository` from `registry`. Errors: `Unauthorized` (credentials
/// needed or refused), `InsecureRefused` (a plain-HTTP realm), `Unavailable`.
pub(crate) async fn authorize(
    transport: &Transport,
    registry: &str,
    repository: &str,
    challenge: &Challenge,
    credentials: Option<&RegistryCredentials>,
) -> Result<String, RegistryError> {
    let unauthorized = |reason: String| RegistryError::Unauthorized {
        registry: registry.to_owned(),
        reason,
    };
    let (realm, service, scope) = match challenge {
        Challenge::Basic => {
            return credentials.map(basic).ok_or_else(|| {
                unauthorized("it wants a user name and password and none were given".into())
            })
        }
        Challenge::Bearer {
            realm,
            service,
            scope,
        } => (realm, service, scope),
    };
    let mut url = Url::parse(realm, None)
        .map_err(|reason| RegistryError::corrupt(registry, "authentication challenge", reason))?;
    let scope = scope
        .clone()
        .unwrap_or_else(|| format!("repository:{repository}:pull"));
    let mut query = vec![format!("scope={}", encode(&scope))];
    if let Some(service) = service {
        query.push(format!("service={}", encode(service)));
    }
    url.path
        .push(if url.path.contains('?') { '&' } else { '?' });
    url.path.push_str(&query.join("&"));
    let headers: Vec<_> = credentials
        .map(|c| (hyper::header::AUTHORIZATION, basic(c)))
        .into_iter()
        .collect();
    let response = transport.get(&url, &headers).await?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            return Err(unauthorized(format!(
                "its token server {} refused {}",
                url.authority,
                if credentials.is_some() {
                    "the credentials"
                } else {
                    "an anonymous pull"
                }
            )))
        }
        status => {
            return Err(RegistryError::Unavailable {
                registry: url.authority.clone(),
                operation: "get a token".into(),
                source: Box::new(StatusError {
                    url: url.to_string(),
                    status,
                }),
            })
        }
    }
    let data = read_limited(response, &url, MAX_TOKEN_BYTES, "token").await?;
    let answer: TokenAnswer = serde_json::from_slice(&data)
        .map_err(|e| RegistryError::corrupt(registry, "token", e.to_string()))?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| RegistryError::corrupt(registry, "token", "the answer holds no token"))?;
    Ok(format!("Bearer {token}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn basic_auth_encodes_the_pair() {
        let c = RegistryCredentials {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(basic(&c), "Basic dTpw");
        let secret = RegistryCredentials {
            username: "me".into(),
            password: "s3cret".into(),
        };
        let shown = format!("{secret:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
