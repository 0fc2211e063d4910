//! HTTP(S) to registries, token servers and the blob stores registries
//! redirect to: one hyper connection per request, TLS through rustls with
//! the system's roots, redirects followed a few times, and the rule that
//! plain HTTP goes only to loopback hosts and hosts marked insecure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, HOST, LOCATION, USER_AGENT};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use zixiao_core::driver::RegistryCa;
use zixiao_core::model::is_loopback_host;

use crate::error::RegistryError;

/// How long a TCP connect and TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the TLS probe of a plain-allowed registry may take: a plain
/// HTTP server answers a ClientHello at once (with an error or a hang-up),
/// so a silent one is taken for plain HTTP rather than waited on.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a response's head, or the next piece of its body, may take.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The most redirects one request follows (registries redirect blobs to a
/// storage service once).
const MAX_REDIRECTS: usize = 5;

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// An absolute URL, split the way a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) scheme: Scheme,
    /// `host[:port]`.
    pub(crate) authority: String,
    /// The path and query, starting with `/`.
    pub(crate) path: String,
}

impl Url {
    /// Parses `location`, absolute or (when `base` is given) path-absolute.
    pub(crate) fn parse(location: &str, base: Option<&Url>) -> Result<Url, String> {
        let uri: Uri = location
            .parse()
            .map_err(|e| format!("`{location}` is not a URL: {e}"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let (scheme, authority) = match (uri.scheme_str(), uri.authority(), base) {
            (Some("https"), Some(a), _) => (Scheme::Https, a.as_str()),
            (Some("http"), Some(a), _) => (Scheme::Http, a.as_str()),
            (None, None, Some(base)) if location.starts_with('/') => {
                (base.scheme, base.authority.as_str())
            }
            _ => return Err(format!("`{location}` is not an http or https URL")),
        };
        if authority.contains('@') {
            return Err(format!("`{location}` carries credentials in its host"));
        }
        Ok(Url {
            scheme,
            authority: authority.to_owned(),
            path,
        })
    }

    /// The host without the port.
    pub(crate) fn host(&self) -> &str {
        host_of(&self.authority)
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

/// The host of `host[:port]` (an IPv6 literal keeps its brackets).
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// The status of an answer that was not what was asked for, as an error
/// cause.
#[derive(Debug, thiserror::Error)]
#[error("{url} answered {status}")]
pub(crate) struct StatusError {
    pub(crate) url: String,
    pub(crate) status: StatusCode,
}

/// Why the registry's certificate was refused, when that is what ended a
/// handshake.
fn untrusted_certificate(error: &std::io::Error) -> Option<String> {
    let tls = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    match tls {
        rustls::Error::InvalidCertificate(why) => Some(format!("{why:?}")),
        _ => None,
    }
}

/// Something a stream can carry a connection over.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Sends requests; holds the TLS roots and the insecure-registry list.
pub(crate) struct Transport {
    tls: tokio_rustls::TlsConnector,
    insecure: Vec<String>,
    /// The scheme each plain-allowed registry answered on, so the probe
    /// runs once per registry.
    schemes: Mutex<HashMap<String, Scheme>>,
}

impl Transport {
    /// A transport trusting the system's root certificates and `cas`.
    /// Errors: `BadCa` (a certificate of `cas` that does not parse).
    pub(crate) fn new(insecure: &[String], cas: &[RegistryCa]) -> Result<Transport, RegistryError> {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A certificate the parser rejects is one root fewer, not a failure.
            let _ = roots.add(cert);
        }
        // The caller's own CAs, checked again here: a root that cannot be
        // used is the caller's mistake, said at once, not a later
        // "unknown issuer".
        for ca in cas {
            for cert in CertificateDer::pem_slice_iter(ca.as_pem().as_bytes()) {
                let cert = cert.map_err(|e| RegistryError::BadCa(e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| RegistryError::BadCa(e.to_string()))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| RegistryError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Transport {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            insecure: insecure.to_vec(),
            schemes: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `authority` may be reached over plain HTTP: a loopback host,
    /// or one listed as insecure (by `host` or `host:port`).
    pub(crate) fn plain_allowed(&self, authority: &str) -> bool {
        let host = host_of(authority);
        is_loopback_host(host) || self.insecure.iter().any(|i| i == authority || i == host)
    }

    /// The base URL (`scheme://authority`) of the registry at `authority`:
    /// HTTPS, unless plain HTTP is allowed and the registry does not speak
    /// TLS (one handshake tells).
    pub(crate) async fn base(&self, authority: &str) -> Url {
        let url = |scheme| Url {
            scheme,
            authority: authority.to_owned(),
            path: String::new(),
        };
        if !self.plain_allowed(authority) {
            return url(Scheme::Https);
        }
        if let Some(scheme) = self.cached_scheme(authority) {
            return url(scheme);
        }
        let https = url(Scheme::Https);
        let probe = tokio::time::timeout(PROBE_TIMEOUT, self.connect(&https));
        let scheme = match probe.await {
            // A certificate the transport does not trust still comes from
            // a registry that speaks TLS: the request says why it fails.
            Ok(Ok(_)) | Ok(Err(RegistryError::Untrusted { .. })) => Scheme::Https,
            Ok(Err(_)) | Err(_) => Scheme::Http,
        };
        if let Ok(mut schemes) = self.schemes.lock() {
            schemes.insert(authority.to_owned(), scheme);
        }
        url(scheme)
    }

    fn cached_scheme(&self, authority: &str) -> Option<Scheme> {
        self.schemes.lock().ok()?.get(authority).copied()
    }

    async fn connect(&self, url: &Url) -> Result<Box<dyn Io>, RegistryError> {
        let unavailable =
            |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Unavailable {
                registry: url.authority.clone(),
                operation: format!("connect to {url}"),
                source,
            };
        let address = match url.authority.rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => url.authority.clone(),
            _ => match url.scheme {
                Scheme::Http => format!("{}:80", url.authority),
                Scheme::Https => format!("{}:443", url.authority),
            },
        };
        let connecting = async {
            let tcp = TcpStream::connect(&address)
                .await
                .map_err(|e| unavailable(Box::new(e)))?;
            let _ = tcp.set_nodelay(true);
            match url.scheme {
                Scheme::Http => Ok(Box::new(tcp) as Box<dyn Io>),
                Scheme::Https => {
                    let host = url.host().trim_start_matches('[').trim_end_matches(']');
                    let name = ServerName::try_from(host.to_owned())
                        .map_err(|e| unavailable(Box::new(e)))?;
                    let tls =
                        self.tls.connect(name, tcp).await.map_err(
                            |e| match untrusted_certificate(&e) {
                                Some(reason) => RegistryError::Untrusted {
                                    registry: url.authority.clone(),
                                    reason,
                                },
                                None => unavailable(Box::new(e)),
                            },
                        )?;
                    Ok(Box::new(tls) as Box<dyn Io>)
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|e| unavailable(Box::new(e)))?
    }

    /// GETs `url` with `headers`, following redirects. `Authorization` goes
    /// only to the host it was meant for. Errors: `InsecureRefused` (plain
    /// HTTP where it is not allowed), `Unavailable` (connect, send, timeout),
    /// `Corrupt` (a redirect without a usable `Location`).
    pub(crate) async fn get(
        &self,
        url: &Url,
        headers: &[(hyper::header::HeaderName, String)],
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            if current.scheme == Scheme::Http && !self.plain_allowed(&current.authority) {
                return Err(RegistryError::InsecureRefused {
                    host: current.authority.clone(),
                });
            }
            let same_host = current.authority == url.authority;
            let response = self.send(&current, headers, same_host).await?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    RegistryError::corrupt(
                        &url.authority,
                        "redirect",
                        format!("{current} redirected without a Location"),
                    )
                })?;
            current = Url::parse(location, Some(&current))
                .map_err(|reason| RegistryError::corrupt(&url.authority, "redirect", reason))?;
        }
        Err(RegistryError::corrupt(
            &url.authority,
            "redirect",
            format!("{url} redirected more than {MAX_REDIRECTS} times"),
        ))
    }

    async fn send(
        &self,
        url: &Url,
        headers: &[(hyper::header::HeaderName, String)],
        with_authorization: bool,
    ) -> Result<Response<Incoming>, RegistryError> {
        let unavailable = |operation: &str, source: Box<dyn std::error::Error + Send + Sync>| {
            RegistryError::Unavailable {
                registry: url.authority.clone(),
                operation: format!("{operation} {url}"),
                source,
            }
        };
        let stream = self.connect(url).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unavailable("GET", Box::new(e)))?;
        // The connection task ends when the response body is read or dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "registry connection ended with an error");
            }
        });
        let mut request = Request::get(url.path.as_str())
            .header(HOST, url.authority.as_str())
            .header(USER_AGENT, concat!("zixiao/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            if *name == AUTHORIZATION && !with_authorization {
                continue;
            }
            let value = HeaderValue::from_str(value)
                .map_err(|e| unavailable("build a request for", Box::new(e)))?;
            request = request.header(name, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| unavailable("build a request for", Box::new(e)))?;
        tokio::time::timeout(READ_TIMEOUT, sender.send_request(request))
            .await
            .map_err(|e| unavailable("GET", Box::new(e)))?
            .map_err(|e| unavailable("GET", Box::new(e)))
    }
}

/// ring, as zixiao-auth uses it: rustls deprecates ring's provider for
/// lacking post-quantum key exchange (which needs aws-lc-rs, a C build); its
/// classical suites are sound for pulling public content.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The next piece of `body`, or `None` at its end, within [`READ_TIMEOUT`].
pub(crate) async fn next_chunk(
    body: &mut Incoming,
    url: &Url,
) -> Result<Option<Bytes>, RegistryError> {
    let unavailable =
        |source: Box<dyn std::error::Error + Send + Sync>| RegistryError::Unavailable {
            registry: url.authority.clone(),
            operation: format!("read {url}"),
            source,
        };
    loop {
        let frame = tokio::time::timeout(READ_TIMEOUT, body.frame())
            .await
            .map_err(|e| unavailable(Box::new(e)))?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(unavailable(Box::new(e))),
            Some(Ok(frame)) => {
                // Trailers carry no data; skip them.
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Reads all of `response`'s body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    response: Response<Incoming>,
    url: &Url,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let too_large = || {
        RegistryError::corrupt(
            &url.authority,
            what,
            format!("it is larger than {limit} bytes"),
        )
    };
    let declared = response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = next_chunk(&mut body, url).await? {
        if (data.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_against_their_base() {
        let base = Url::parse("http://127.0.0.1:5000/v2/", None).unwrap();
        assert_eq!(base.host(), "127.0.0.1");
        let relative = Url::parse("/v2/a/blobs/x?y=1", Some(&base)).unwrap();
        assert_eq!(
            relative.to_string(),
            "http://127.0.0.1:5000/v2/a/blobs/x?y=1"
        );
        let other = Url::parse("https://s3.example.com/b?sig=1", Some(&base)).unwrap();
        assert_eq!(
            (other.scheme, other.host()),
            (Scheme::Https, "s3.example.com")
        );
        assert!(Url::parse("ftp://x/y", None).is_err());
        assert!(Url::parse("relative/path", Some(&base)).is_err());
        assert!(Url::parse("http://user:pw@host/", None).is_err());
        assert_eq!(host_of("[::1]:5000"), "[::1]");
    }

    #[test]
    fn plain_http_only_to_loopback_and_insecure_hosts() {
        let t = Transport::new(&["10.0.0.5:5000".to_owned(), "reg.lan".to_owned()], &[]).unwrap();
        assert!(t.plain_allowed("127.0.0.1:5000"));
        assert!(t.plain_allowed("localhost"));
        assert!(t.plain_allowed("[::1]:5000"));
        assert!(t.plain_allowed("10.0.0.5:5000"));
        assert!(!t.plain_allowed("10.0.0.5:5001"));
        assert!(t.plain_allowed("reg.lan:8080"));
        assert!(!t.plain_allowed("registry.example.com"));
    }
}
